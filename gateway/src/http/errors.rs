//! Every error a client sees: registry format, right status, no internals.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use serde::Serialize;

pub const API_VERSION_HEADER: &str = "Docker-Distribution-API-Version";
pub const API_VERSION: &str = "registry/2.0";

/// Registry error codes (OCI distribution spec), plus two of ours for upstream trouble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    NameInvalid,
    NameUnknown,
    ManifestInvalid,
    ManifestUnknown,
    DigestInvalid,
    BlobUnknown,
    Unauthorized,
    Denied,
    Unsupported,
    PaginationNumberInvalid,
    /// Pulp or central answered something unusable.
    UpstreamError,
    /// Pulp or central could not be reached, or we cannot decide right now.
    Unavailable,
    NotFound,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::UpstreamError => "UPSTREAM_ERROR",
            Code::Unavailable => "UNAVAILABLE",
            Code::NotFound => "NOT_FOUND",
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Item<'a>; 1],
}

#[derive(Serialize)]
struct Item<'a> {
    code: &'a str,
    message: &'a str,
}

/// The JSON body `{"errors":[{"code":..,"message":..}]}`.
pub fn body(code: Code, message: &str) -> String {
    serde_json::to_string(&Body {
        errors: [Item {
            code: code.as_str(),
            message,
        }],
    })
    .unwrap_or_else(|_| {
        format!(
            "{{\"errors\":[{{\"code\":\"{}\",\"message\":\"\"}}]}}",
            code.as_str()
        )
    })
}

/// A registry-format error response.
pub fn respond(status: StatusCode, code: Code, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .insert_header((API_VERSION_HEADER, API_VERSION))
        .body(body(code, message))
}

/// 405 naming the methods a route answers (`Allow`).
pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut r = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::Unsupported,
        &format!("this route only answers {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 503 with `Retry-After`, for "cannot decide right now": never fail open.
pub fn unavailable(message: &str, retry_after_secs: u64) -> HttpResponse {
    let mut r = respond(StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, message);
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The Bearer challenge that starts podman's and flatpak's token flow.
pub fn challenge_value(public_url: &str, service: &str, repository: Option<&str>) -> String {
    match repository {
        Some(name) => format!(
            "Bearer realm=\"{public_url}/v2/token\",service=\"{service}\",scope=\"repository:{name}:pull\""
        ),
        None => format!("Bearer realm=\"{public_url}/v2/token\",service=\"{service}\""),
    }
}

/// 401 with the challenge.
pub fn unauthorized(
    public_url: &str,
    service: &str,
    repository: Option<&str>,
    message: &str,
) -> HttpResponse {
    let mut r = respond(StatusCode::UNAUTHORIZED, Code::Unauthorized, message);
    if let Ok(v) = HeaderValue::from_str(&challenge_value(public_url, service, repository)) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_registry_format_and_escaped() {
        let b = body(Code::NameUnknown, "say \"hi\"");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "say \"hi\"");
    }

    #[test]
    fn challenge_names_realm_service_and_scope() {
        assert_eq!(
            challenge_value("https://gw.example.com", "gw.example.com", Some("org/app")),
            "Bearer realm=\"https://gw.example.com/v2/token\",service=\"gw.example.com\",scope=\"repository:org/app:pull\""
        );
    }
}
