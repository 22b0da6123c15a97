//! Identity resolution: the facts of a request, run through the configured
//! chain of backends, first decisive answer wins.

mod backend;
pub mod forwarded;
mod identity;
pub mod plugin_host;

use std::sync::Arc;

pub use backend::{AuthDecision, AuthFacts, Authenticator, BackendError, ReloadOutcome};
pub use identity::Identity;

/// Why a request has no identity.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthFailure {
    /// Credentials were presented and rejected: 401, never a fallback to anonymous.
    #[error("credentials rejected by {backend}: {reason}")]
    Rejected { backend: String, reason: String },
    /// A backend could not decide: fail closed with 503.
    #[error(transparent)]
    Unavailable(#[from] BackendError),
}

/// What the chain concluded, before bearer tokens are looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Identity(Identity),
    /// Lowercase hex SHA-256 of a bearer token, to be resolved by the gateway.
    Token(String),
}

/// The ordered chain of backends.
#[derive(Clone, Default)]
pub struct AuthChain {
    backends: Vec<Arc<dyn Authenticator>>,
    may_block: bool,
}

impl AuthChain {
    pub fn new(backends: Vec<Arc<dyn Authenticator>>) -> Self {
        let may_block = backends.iter().any(|b| b.may_block());
        Self {
            backends,
            may_block,
        }
    }

    /// Whether any backend may wait, so that the chain must not run on a
    /// thread serving requests.
    pub fn may_block(&self) -> bool {
        self.may_block
    }

    pub fn names(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.name().to_owned()).collect()
    }

    /// Ask every backend, in chain order, to reload; one failing does not
    /// keep the others from trying. Requests keep being served meanwhile.
    pub fn reload(&self) -> Vec<(&str, ReloadOutcome)> {
        self.backends
            .iter()
            .map(|b| (b.name(), b.reload()))
            .collect()
    }

    /// Ask each backend in turn. All abstaining means anonymous.
    pub fn resolve(&self, facts: &AuthFacts<'_>) -> Result<Resolved, AuthFailure> {
        for backend in &self.backends {
            match backend.authenticate(facts)? {
                AuthDecision::Allow(identity) => return Ok(Resolved::Identity(identity)),
                AuthDecision::Token(digest) => return Ok(Resolved::Token(digest)),
                AuthDecision::Deny(reason) => {
                    return Err(AuthFailure::Rejected {
                        backend: backend.name().to_owned(),
                        reason,
                    });
                }
                AuthDecision::Abstain => continue,
            }
        }
        Ok(Resolved::Identity(Identity::Anonymous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<AuthDecision, BackendError>);
    impl Authenticator for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn authenticate(&self, _: &AuthFacts<'_>) -> Result<AuthDecision, BackendError> {
            self.1.clone()
        }
    }

    fn chain(items: Vec<Fixed>) -> AuthChain {
        AuthChain::new(
            items
                .into_iter()
                .map(|f| Arc::new(f) as Arc<dyn Authenticator>)
                .collect(),
        )
    }

    #[test]
    fn all_abstain_is_anonymous() {
        let c = chain(vec![
            Fixed("a", Ok(AuthDecision::Abstain)),
            Fixed("b", Ok(AuthDecision::Abstain)),
        ]);
        assert_eq!(
            c.resolve(&AuthFacts::default()).unwrap(),
            Resolved::Identity(Identity::Anonymous)
        );
    }

    #[test]
    fn first_decisive_answer_wins() {
        let c = chain(vec![
            Fixed("a", Ok(AuthDecision::Abstain)),
            Fixed("b", Ok(AuthDecision::Allow(Identity::Host("u1".into())))),
            Fixed("c", Ok(AuthDecision::Deny("no".into()))),
        ]);
        assert_eq!(
            c.resolve(&AuthFacts::default()).unwrap(),
            Resolved::Identity(Identity::Host("u1".into()))
        );
    }

    #[test]
    fn deny_stops_the_chain() {
        let c = chain(vec![
            Fixed("a", Ok(AuthDecision::Deny("expired".into()))),
            Fixed("b", Ok(AuthDecision::Allow(Identity::Host("u1".into())))),
        ]);
        assert!(matches!(
            c.resolve(&AuthFacts::default()),
            Err(AuthFailure::Rejected { .. })
        ));
    }

    #[test]
    fn backend_error_fails_closed() {
        let err = BackendError {
            backend: "a".into(),
            message: "panicked".into(),
        };
        let c = chain(vec![
            Fixed("a", Err(err)),
            Fixed("b", Ok(AuthDecision::Allow(Identity::Host("u1".into())))),
        ]);
        assert!(matches!(
            c.resolve(&AuthFacts::default()),
            Err(AuthFailure::Unavailable(_))
        ));
    }
}
