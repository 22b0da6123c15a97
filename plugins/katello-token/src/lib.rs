//! container-gateway authentication plugin for bearer tokens.
//!
//! Users (and hosts set up with `podman login`) exchange a username and password
//! for a bearer token at the central Katello server, through the gateway's
//! `/v2/token`. This plugin recognises `Authorization: Bearer <token>` and hands
//! the gateway the token's SHA-256; the gateway resolves it against the tokens it
//! stored, or asks central about one it has never seen. The legacy literal
//! tokens `unauthenticated` and `unauthorized` mean anonymous. Anything else
//! (no header, Basic credentials, another scheme) is not this plugin's business.
//!
//! It takes no settings.

use std::ffi::CStr;

use gateway_plugin_abi::{AuthPlugin, Decision, Identity, Logger, Request};
use sha2::{Digest, Sha256};

pub struct KatelloToken;

/// Tokens Katello or older gateways handed to anonymous clients.
const ANONYMOUS_TOKENS: [&str; 2] = ["unauthenticated", "unauthorized"];

impl KatelloToken {
    /// The decision for one `Authorization` header value.
    pub fn decide(authorization: Option<&str>) -> Decision {
        let Some(value) = authorization else {
            return Decision::Abstain;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return Decision::Abstain;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Decision::Abstain;
        }
        let token = token.trim();
        if token.is_empty() {
            return Decision::Deny("empty bearer token".into());
        }
        if ANONYMOUS_TOKENS.contains(&token) {
            return Decision::Allow(Identity::Anonymous);
        }
        Decision::Token(hex::encode(Sha256::digest(token.as_bytes())))
    }
}

impl AuthPlugin for KatelloToken {
    const NAME: &'static CStr = c"katello-token";
    // One SHA-256 of the header; resolving the token is the gateway's work.
    const NON_BLOCKING: bool = true;

    fn init(_config_json: &str, _log: Logger) -> Result<Self, String> {
        Ok(KatelloToken)
    }

    fn authenticate(&self, request: &Request<'_>) -> Decision {
        Self::decide(request.authorization())
    }
}

gateway_plugin_abi::export_auth_plugin!(KatelloToken);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_become_digests() {
        let d = KatelloToken::decide(Some("Bearer abc"));
        assert_eq!(
            d,
            Decision::Token(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            )
        );
        assert_eq!(KatelloToken::decide(Some("bearer  abc ")), d);
    }

    #[test]
    fn legacy_literals_are_anonymous() {
        assert_eq!(
            KatelloToken::decide(Some("Bearer unauthenticated")),
            Decision::Allow(Identity::Anonymous)
        );
        assert_eq!(
            KatelloToken::decide(Some("Bearer unauthorized")),
            Decision::Allow(Identity::Anonymous)
        );
    }

    #[test]
    fn other_schemes_abstain() {
        assert_eq!(KatelloToken::decide(None), Decision::Abstain);
        assert_eq!(
            KatelloToken::decide(Some("Basic dXNlcjpwYXNz")),
            Decision::Abstain
        );
        assert_eq!(KatelloToken::decide(Some("garbage")), Decision::Abstain);
        assert!(matches!(
            KatelloToken::decide(Some("Bearer ")),
            Decision::Abstain | Decision::Deny(_)
        ));
    }
}
