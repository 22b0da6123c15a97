//! Facts about the connection a request arrived on, captured once per connection.

use std::any::Any;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

/// The certificate chain the TLS client presented (DER, end-entity first).
#[derive(Clone, Debug)]
pub struct PeerChain(pub Arc<Vec<Vec<u8>>>);

/// Whether the connection is TLS (and so whether `PeerChain` can be trusted to
/// come from the handshake) or plain HTTP from a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Plain,
}

/// Connection hook (`on_connect_ext` of every listener).
pub fn capture(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tls) = conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>() {
        let (_, session) = tls.get_ref();
        if let Some(certs) = session.peer_certificates() {
            ext.insert(PeerChain(Arc::new(
                certs.iter().map(|c| c.as_ref().to_vec()).collect(),
            )));
        }
        ext.insert(Transport::Tls);
    } else {
        ext.insert(Transport::Plain);
    }
}
