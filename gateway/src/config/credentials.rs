//! `${CREDENTIALS_DIRECTORY}` at the start of a file path: the directory where
//! systemd puts what the unit's `LoadCredential=` hands the service, so keys
//! readable by root alone need no change of owner or mode.

use std::ffi::OsStr;
use std::path::PathBuf;

const VARIABLE: &str = "${CREDENTIALS_DIRECTORY}";

/// `dir` is the value of `$CREDENTIALS_DIRECTORY`, if set.
pub fn expand(value: &str, dir: Option<&OsStr>) -> Result<PathBuf, String> {
    let Some(rest) = value.strip_prefix(VARIABLE) else {
        return Ok(PathBuf::from(value));
    };
    match dir.filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join(rest.trim_start_matches('/'))),
        None => Err(format!(
            "{value} needs $CREDENTIALS_DIRECTORY, which systemd sets only for a unit with LoadCredential="
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_variable_names_a_file_in_the_credentials_directory() {
        let dir = Some(OsStr::new("/run/credentials/container-gateway.service"));
        assert_eq!(
            expand("${CREDENTIALS_DIRECTORY}/tls.key", dir),
            Ok(PathBuf::from(
                "/run/credentials/container-gateway.service/tls.key"
            ))
        );
    }

    #[test]
    fn other_paths_are_left_alone() {
        let dir = Some(OsStr::new("/run/credentials/x"));
        assert_eq!(
            expand("/etc/pki/tls.key", dir),
            Ok(PathBuf::from("/etc/pki/tls.key"))
        );
        assert_eq!(
            expand("/etc/${CREDENTIALS_DIRECTORY}", dir),
            Ok(PathBuf::from("/etc/${CREDENTIALS_DIRECTORY}"))
        );
        assert_eq!(expand("", None), Ok(PathBuf::new()));
    }

    #[test]
    fn outside_systemd_the_variable_is_an_error_that_says_why() {
        for dir in [None, Some(OsStr::new(""))] {
            let err = expand("${CREDENTIALS_DIRECTORY}/tls.key", dir).unwrap_err();
            assert!(err.contains("LoadCredential="), "{err}");
        }
    }
}
