//! `auth::plugin_host::decode_answer`: what an auth plugin hands back across
//! the C ABI, a status code and the bytes of its output buffer. The first
//! input byte chooses the status (and whether the buffer was unreadable, as
//! for a null pointer with a length), the rest is the buffer.
//!
//! The answer is compared with a model written from the ABI's documentation
//! (plugins/abi/README.md, "Identity documents"): a compact JSON object with
//! `kind` and `id` or `sha256`, unknown keys ignored, anything else failing
//! closed. Only `ABSTAIN` lets the chain go on; an identifier is never empty,
//! overlong or carrying control characters; a token is 64 lowercase hex.

use container_gateway::auth::plugin_host::decode_answer;
use container_gateway::auth::{AuthDecision, Identity};
use gateway_plugin_abi::status;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

pub fn run(data: &[u8]) {
    let [head, out @ ..] = data else {
        return;
    };
    let mut code = u32::from(head & 0x07);
    if head & 0x80 != 0 {
        code |= u32::from(*head) << 8;
    }
    let bytes: Result<&[u8], &str> = if head & 0x08 != 0 {
        Err("null buffer with a non-zero length")
    } else {
        Ok(out)
    };
    let answer = decode_answer(code, bytes);

    match &answer {
        Ok(AuthDecision::Abstain) => assert_eq!(code, status::ABSTAIN),
        Ok(AuthDecision::Allow(identity)) => {
            assert_eq!(code, status::ALLOW);
            if let Identity::Host(id) | Identity::User(id) = identity {
                assert!(!id.is_empty() && id.len() <= 1024, "{id:?}");
                assert!(!id.chars().any(char::is_control), "{id:?}");
            }
        }
        Ok(AuthDecision::Token(digest)) => {
            assert_eq!(code, status::TOKEN);
            assert_eq!(digest.len(), 64);
            assert!(
                digest
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        Ok(AuthDecision::Deny(reason)) => {
            assert_eq!(code, status::DENY);
            assert!(!reason.is_empty());
        }
        Err(message) => assert!(!message.is_empty()),
    }
    if code == status::ABSTAIN {
        assert_eq!(answer, Ok(AuthDecision::Abstain));
    }

    let expected = model(code, bytes);
    assert_eq!(
        answer.as_ref().ok(),
        expected.as_ref(),
        "code {code}, output {:?}: gateway {answer:?}",
        String::from_utf8_lossy(out)
    );
}

/// The decision the ABI documentation describes, or `None` for "fails closed".
fn model(code: u32, bytes: Result<&[u8], &str>) -> Option<AuthDecision> {
    match code {
        status::ABSTAIN => return Some(AuthDecision::Abstain),
        status::ALLOW | status::TOKEN | status::DENY => {}
        _ => return None,
    }
    let text = std::str::from_utf8(bytes.ok()?).ok()?;
    if code == status::DENY {
        let reason = if text.is_empty() { "denied" } else { text };
        return Some(AuthDecision::Deny(reason.to_owned()));
    }
    let Members(members) = serde_json::from_str(text).ok()?;
    // A known key given twice is ambiguous; unknown keys are ignored.
    let field = |key: &str| -> Result<Option<String>, ()> {
        let mut found = members.iter().filter(|(k, _)| k == key);
        let value = found.next();
        if found.next().is_some() {
            return Err(());
        }
        match value {
            None => Ok(None),
            Some((_, raw)) => serde_json::from_str::<Option<String>>(raw.get()).map_err(|_| ()),
        }
    };
    let kind = field("kind").ok()??;
    let id = field("id").ok()?;
    let sha256 = field("sha256").ok()?;
    let valid_id = |id: Option<String>| {
        id.filter(|id| !id.is_empty() && id.len() <= 1024 && !id.chars().any(char::is_control))
            .map(|id| id.into())
    };
    match (code, kind.as_str()) {
        (status::ALLOW, "host") => Some(AuthDecision::Allow(Identity::Host(valid_id(id)?))),
        (status::ALLOW, "user") => Some(AuthDecision::Allow(Identity::User(valid_id(id)?))),
        (status::ALLOW, "anonymous") => Some(AuthDecision::Allow(Identity::Anonymous)),
        (status::TOKEN, "token") => {
            let digest = sha256?;
            let hex = digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            (digest.len() == 64 && hex).then_some(AuthDecision::Token(digest))
        }
        _ => None,
    }
}

/// A JSON object's members in order, duplicates kept, values unparsed.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}
