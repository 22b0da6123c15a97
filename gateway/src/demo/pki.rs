//! Certificates for the demo: a CA standing in for katello-default-ca, the
//! gateway's server certificate and two host certificates (CN = consumer UUID).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Files {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub struct HostFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct DemoPki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl DemoPki {
    pub fn new() -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "container-gateway demo CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(Self {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    fn leaf(&self, params: CertificateParams) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    pub fn write_server(&self, dir: &Path) -> std::io::Result<Files> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(std::io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = self.leaf(params).map_err(std::io::Error::other)?;
        let files = Files {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        };
        std::fs::write(&files.ca, self.ca.pem())?;
        std::fs::write(&files.server_cert, cert)?;
        std::fs::write(&files.server_key, key)?;
        Ok(files)
    }

    pub fn write_host(&self, dir: &Path, name: &str, uuid: &str) -> std::io::Result<HostFiles> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(std::io::Error::other)?;
        params.distinguished_name.push(DnType::CommonName, uuid);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Demo_Org");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let (cert, key) = self.leaf(params).map_err(std::io::Error::other)?;
        let files = HostFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert)?;
        std::fs::write(&files.key, key)?;
        Ok(files)
    }
}
