//! Relaying a v2 read to Pulp and its answer to the client: redirects with
//! their Location rebased, successes streamed, errors in registry format.

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use crate::config::PulpConfig;
use crate::http::errors::{self, API_VERSION, API_VERSION_HEADER, Code};
use crate::http::idle_body::{IdleCut, Streamed};
use crate::upstream::UpstreamError;
use crate::upstream::pulp::PulpClient;

/// Request headers a read may carry to Pulp. `Accept` may come as several lines
/// (Go clients); every value is kept.
const FORWARDED_REQUEST: [HeaderName; 5] = [
    header::ACCEPT,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::RANGE,
    header::IF_RANGE,
];

/// Response headers relayed from a Pulp success. `link` pages `tags/list`; the
/// route rewrites it to point at us (and drops it elsewhere).
/// `oci-filters-applied` says a referrers list was filtered by `artifactType`.
const RELAYED_RESPONSE: [&str; 9] = [
    "content-type",
    "docker-content-digest",
    "etag",
    "last-modified",
    "content-range",
    "accept-ranges",
    "cache-control",
    "link",
    "oci-filters-applied",
];

/// Largest Pulp error body relayed.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

fn forwarded_headers(req: &HttpRequest) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in &FORWARDED_REQUEST {
        for value in req.headers().get_all(name) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// Forward a GET or HEAD for `path_and_query` (starting `/v2/`) and relay the
/// answer; `what` names it if its body has to be cut for silence.
pub async fn relay(
    req: &HttpRequest,
    pulp: &PulpClient,
    cfg: &PulpConfig,
    path_and_query: &str,
    what: Streamed<'_>,
) -> HttpResponse {
    relay_with(req, pulp, cfg, path_and_query, forwarded_headers(req), what).await
}

/// [`relay`] for a route whose answer is JSON whatever the client accepts
/// (`tags/list`): Pulp's DRF negotiates on `Accept`, so a client's `text/html`
/// would get Pulp's browsable-API page and a manifest media type a 406.
pub async fn relay_json(
    req: &HttpRequest,
    pulp: &PulpClient,
    cfg: &PulpConfig,
    path_and_query: &str,
    what: Streamed<'_>,
) -> HttpResponse {
    let mut headers: Vec<_> = forwarded_headers(req)
        .into_iter()
        .filter(|(name, _)| name != header::ACCEPT)
        .collect();
    headers.push((header::ACCEPT, HeaderValue::from_static("application/json")));
    relay_with(req, pulp, cfg, path_and_query, headers, what).await
}

async fn relay_with(
    req: &HttpRequest,
    pulp: &PulpClient,
    cfg: &PulpConfig,
    path_and_query: &str,
    headers: Vec<(HeaderName, HeaderValue)>,
    what: Streamed<'_>,
) -> HttpResponse {
    let method = if req.method() == Method::HEAD {
        Method::HEAD
    } else {
        Method::GET
    };
    let head = method == Method::HEAD;
    let upstream = match pulp.forward(method, path_and_query, &headers).await {
        Ok(r) => r,
        Err(e) => return upstream_failure(&e),
    };
    let status = upstream.status();
    if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
        return redirect(status, upstream.headers().get(header::LOCATION), cfg);
    }
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return stream(status, upstream, head, cfg.stream_idle, what);
    }
    error_from_pulp(status, upstream, head, cfg.timeout).await
}

fn with_api_version(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut().insert(
        HeaderName::from_static("docker-distribution-api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    resp
}

fn redirect(status: StatusCode, location: Option<&HeaderValue>, cfg: &PulpConfig) -> HttpResponse {
    let Some(location) = location.and_then(|l| l.to_str().ok()) else {
        return errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "Pulp redirected without a Location",
        );
    };
    let rebased = rebase_location(location, &cfg.endpoint, cfg.client_endpoint.as_deref());
    match HeaderValue::from_str(&rebased) {
        Ok(v) => with_api_version(
            HttpResponse::build(status)
                .insert_header((header::LOCATION, v))
                .finish(),
        ),
        Err(_) => errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "Pulp redirected to an invalid Location",
        ),
    }
}

/// Replace the scheme and authority of Pulp's `Location` with `client_endpoint`
/// (the name clients reach, e.g. a load balancer), keeping path and query. A
/// relative Location is made absolute against whichever endpoint applies.
pub fn rebase_location(
    location: &str,
    pulp_endpoint: &str,
    client_endpoint: Option<&str>,
) -> String {
    let path_and_query = match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => {
            let base = client_endpoint.unwrap_or(pulp_endpoint);
            let sep = if location.starts_with('/') { "" } else { "/" };
            return format!("{base}{sep}{location}");
        }
    };
    match client_endpoint {
        Some(base) => format!("{base}{path_and_query}"),
        None => location.to_owned(),
    }
}

/// Relay a success: its head now, its body as Pulp sends it (cut if Pulp
/// falls silent, see [`IdleCut`]).
fn stream<S>(
    status: StatusCode,
    upstream: awc::ClientResponse<S>,
    head: bool,
    idle: std::time::Duration,
    what: Streamed<'_>,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
        + Unpin
        + 'static,
{
    let mut builder = HttpResponse::build(status);
    for name in RELAYED_RESPONSE {
        for value in upstream.headers().get_all(name) {
            builder.append_header((name, value.clone()));
        }
    }
    builder.insert_header((API_VERSION_HEADER, API_VERSION));
    let length = upstream
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if status == StatusCode::NOT_MODIFIED {
        return builder.finish();
    }
    match (head, length) {
        // HEAD keeps the length Pulp announced; actix writes no body for HEAD.
        (true, Some(len)) => builder.body(SizedStream::new(
            len,
            futures_util::stream::empty::<Result<bytes::Bytes, actix_web::Error>>(),
        )),
        (true, None) => builder.finish(),
        (false, Some(len)) => {
            builder.body(SizedStream::new(len, IdleCut::new(upstream, idle, what)))
        }
        (false, None) => builder.streaming(IdleCut::new(upstream, idle, what)),
    }
}

async fn error_from_pulp<S>(
    status: StatusCode,
    mut upstream: awc::ClientResponse<S>,
    head: bool,
    timeout: std::time::Duration,
) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
        + Unpin
        + 'static,
{
    if status.is_server_error() {
        tracing::warn!(%status, "Pulp error");
        return errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "Pulp failed to answer",
        );
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Pulp refusing us is a gateway problem, never a reason to start the
        // client's token flow.
        tracing::warn!(%status, "Pulp refused the gateway's credentials; check pulp.ssl_cert");
        return errors::respond(
            StatusCode::BAD_GATEWAY,
            Code::UpstreamError,
            "Pulp refused the gateway",
        );
    }
    if head {
        return with_api_version(HttpResponse::build(status).finish());
    }
    // Within pulp.timeout_secs: awc's own timeout ends with the response head,
    // and a Pulp that stalled in an error body held the client as long.
    let body = actix_web::rt::time::timeout(timeout, upstream.body().limit(ERROR_BODY_LIMIT))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let is_registry_error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("errors").is_some_and(serde_json::Value::is_array));
    if is_registry_error {
        with_api_version(
            HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .body(body),
        )
    } else {
        let code = if status == StatusCode::NOT_FOUND {
            Code::NotFound
        } else {
            Code::Unsupported
        };
        errors::respond(status, code, "Pulp refused the request")
    }
}

pub fn upstream_failure(e: &UpstreamError) -> HttpResponse {
    match e {
        UpstreamError::Timeout | UpstreamError::Connect(_) => {
            tracing::warn!(error = %e, "Pulp unavailable");
            errors::unavailable("Pulp is temporarily unavailable", 10)
        }
        other => {
            tracing::warn!(error = %other, "Pulp answer unusable");
            errors::respond(
                StatusCode::BAD_GATEWAY,
                Code::UpstreamError,
                "Pulp answered something unusable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_rebasing() {
        let loc =
            "http://pulp:24816/pulp/container/org/a/blobs/sha256:ab?expires=1&validate_token=x:y";
        assert_eq!(
            rebase_location(loc, "https://pulp", Some("https://lb.example.com")),
            "https://lb.example.com/pulp/container/org/a/blobs/sha256:ab?expires=1&validate_token=x:y"
        );
        assert_eq!(rebase_location(loc, "https://pulp", None), loc);
        assert_eq!(
            rebase_location("/pulp/x", "https://pulp", None),
            "https://pulp/pulp/x"
        );
        assert_eq!(
            rebase_location("/pulp/x", "https://pulp", Some("https://lb")),
            "https://lb/pulp/x"
        );
        assert_eq!(
            rebase_location("https://h", "https://pulp", Some("https://lb")),
            "https://lb/"
        );
    }
}
