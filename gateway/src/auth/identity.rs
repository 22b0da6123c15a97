//! Who a request is from, as far as entitlements are concerned.

use std::fmt;
use std::sync::Arc;

/// Every client request resolves to exactly one identity (contract §2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A registered host, by its Candlepin consumer UUID (the certificate's CN).
    Host(Arc<str>),
    /// A user who got a bearer token through `/v2/token`.
    User(Arc<str>),
    /// Nothing presented, or a legacy anonymous token literal.
    Anonymous,
}

impl Identity {
    /// The kind, for logs and metrics labels (never carries a repository name).
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Host(_) => "host",
            Identity::User(_) => "user",
            Identity::Anonymous => "anonymous",
        }
    }

    /// The identifier within the kind (empty for anonymous).
    pub fn id(&self) -> &str {
        match self {
            Identity::Host(id) | Identity::User(id) => id,
            Identity::Anonymous => "",
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            other => write!(f, "{}:{}", other.kind(), other.id()),
        }
    }
}
