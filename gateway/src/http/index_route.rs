//! `GET /index/static` and `/index/dynamic`: Pulp's Flatpak index, filtered per client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::http::errors::{self, Code};
use crate::http::query;
use crate::server::identify::{identify, view};
use crate::server::index_cache::FetchError;
use crate::server::shared::{Shared, Upstreams};
use crate::upstream::UpstreamError;

const GZIP_SUFFIX: &str = "-gz";

pub async fn index(
    req: HttpRequest,
    shared: web::Data<Shared>,
    up: web::Data<Upstreams>,
) -> HttpResponse {
    let kind = if req.path().trim_end_matches('/').ends_with("/dynamic") {
        "dynamic"
    } else {
        "static"
    };
    let pairs = match query::pairs(req.query_string()) {
        Ok(p) => p,
        Err(e) => {
            return errors::respond(StatusCode::BAD_REQUEST, Code::Unsupported, &e.to_string());
        }
    };
    let canonical = query::canonical(pairs);
    let identity = match identify(&req, &shared, &up).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let view = match view(&req, identity, &shared, &up).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };

    let cfg = &shared.config;
    let cache_key = format!("{kind}?{canonical}");
    let upstream = shared
        .index
        .upstream(
            &cache_key,
            cfg.pulp.index_ttl,
            cfg.cache.stale_if_error,
            || fetch(&up, kind, &canonical),
        )
        .await;
    let upstream = match upstream {
        Ok(u) => u,
        Err(e) => return fetch_failure(&e),
    };
    let registry_url = format!("{}/", cfg.server.public_url);
    let body = shared
        .index
        .filtered(
            &upstream,
            view.snapshot.clone(),
            view.granted().cloned(),
            registry_url,
        )
        .await;
    if let crate::auth::Identity::Host(uuid) = &view.identity {
        shared
            .index
            .note_missing_runtimes(uuid, upstream.version, body.apps_missing_runtime);
    }

    let gzip = accepts_gzip(&req);
    let etag = if gzip {
        with_suffix(&body.filtered.etag)
    } else {
        body.filtered.etag.clone()
    };
    let mut resp = if if_none_match(&req, &body.filtered.etag) {
        HttpResponse::NotModified().finish()
    } else if gzip {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(body.gzipped().await)
    } else {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(body.filtered.body.clone())
    };
    let h = resp.headers_mut();
    // The body depends on who asks: shared caches must not keep it, and flatpak
    // must revalidate instead of trusting its copy for 30 minutes.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// Pulp's index: status and whole body (within `pulp.timeout_secs` and
/// `pulp.max_index_mb`, see `PulpClient::index`).
async fn fetch(
    up: &Upstreams,
    kind: &str,
    canonical: &str,
) -> Result<(u16, bytes::Bytes), FetchError> {
    let r = up
        .pulp
        .index(kind, canonical)
        .await
        .map_err(FetchError::Upstream)?;
    Ok((r.status.as_u16(), r.body))
}

fn with_suffix(etag: &str) -> String {
    match etag.strip_suffix('"') {
        Some(open) => format!("{open}{GZIP_SUFFIX}\""),
        None => format!("{etag}{GZIP_SUFFIX}"),
    }
}

/// Whether `If-None-Match` names this body (in either of its encodings).
fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|candidate| {
                let c = candidate.trim();
                let c = c.strip_prefix("W/").unwrap_or(c).trim_matches('"');
                c == "*" || c == bare || c.strip_suffix(GZIP_SUFFIX) == Some(bare)
            })
        })
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or_default().trim();
                let refused = parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                coding.eq_ignore_ascii_case("gzip") && !refused
            })
        })
}

fn fetch_failure(e: &FetchError) -> HttpResponse {
    match e {
        FetchError::Upstream(UpstreamError::Timeout | UpstreamError::Connect(_)) => {
            tracing::warn!(error = ?e, "Pulp index unavailable");
            errors::unavailable("the Flatpak index is temporarily unavailable", 10)
        }
        FetchError::Upstream(other) => {
            tracing::warn!(error = %other, "Pulp index unusable");
            errors::respond(
                StatusCode::BAD_GATEWAY,
                Code::UpstreamError,
                "Pulp answered an unusable index",
            )
        }
        // Pulp refusing the gateway's own credentials is the gateway's problem:
        // relayed, a 401 would send the client after a token that cannot help.
        FetchError::Status {
            status: 401 | 403, ..
        } => {
            tracing::warn!(error = ?e, "Pulp refused the gateway's credentials; check pulp.ssl_cert");
            errors::respond(
                StatusCode::BAD_GATEWAY,
                Code::UpstreamError,
                "Pulp refused the gateway",
            )
        }
        FetchError::Status { status, detail } if (400..500).contains(status) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            let code = if status == StatusCode::NOT_FOUND {
                Code::NotFound
            } else {
                Code::Unsupported
            };
            let message = if detail.is_empty() {
                "Pulp refused the index query"
            } else {
                detail.as_str()
            };
            errors::respond(status, code, message)
        }
        FetchError::Status { status, .. } => {
            tracing::warn!(status, "Pulp index error");
            errors::respond(
                StatusCode::BAD_GATEWAY,
                Code::UpstreamError,
                "Pulp failed to produce the index",
            )
        }
        FetchError::Malformed(why) => {
            tracing::warn!(error = %why, "Pulp index is not a valid index");
            errors::respond(
                StatusCode::BAD_GATEWAY,
                Code::UpstreamError,
                "Pulp answered an unusable index",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn gzip_negotiation() {
        let r = TestRequest::default()
            .insert_header(("Accept-Encoding", "deflate, gzip"))
            .to_http_request();
        assert!(accepts_gzip(&r));
        let r = TestRequest::default()
            .insert_header(("Accept-Encoding", "gzip;q=0"))
            .to_http_request();
        assert!(!accepts_gzip(&r));
        let r = TestRequest::default().to_http_request();
        assert!(!accepts_gzip(&r));
    }

    #[test]
    fn etag_matching_covers_both_encodings() {
        let etag = "\"abc\"";
        for inm in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc-gz\"", "*"] {
            let r = TestRequest::default()
                .insert_header(("If-None-Match", inm))
                .to_http_request();
            assert!(if_none_match(&r, etag), "{inm}");
        }
        let r = TestRequest::default()
            .insert_header(("If-None-Match", "\"abd\""))
            .to_http_request();
        assert!(!if_none_match(&r, etag));
        assert_eq!(with_suffix(etag), "\"abc-gz\"");
    }
}
