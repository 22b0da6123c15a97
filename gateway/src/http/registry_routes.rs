//! The container registry v2 routes, guarded per client.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::auth::Identity;
use crate::http::errors::{self, API_VERSION, API_VERSION_HEADER, Code};
use crate::http::forward;
use crate::http::idle_body::Streamed;
use crate::http::query;
use crate::registry::names::{tag_characters, valid_digest, valid_name, valid_reference};
use crate::server::identify::{View, identify, view};
use crate::server::shared::{Shared, Upstreams};

/// What a `/v2/...` path asks for, parsed from the raw path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Ping,
    Catalog,
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    /// OCI distribution spec 1.1 `GET /v2/<name>/referrers/<digest>`.
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
    Tags {
        name: &'a str,
    },
    Upload,
    Unknown,
}

impl Route<'_> {
    /// The route's template, for logs and metrics (never the concrete name).
    pub fn template(&self) -> &'static str {
        match self {
            Route::Ping => "/v2/",
            Route::Catalog => "/v2/_catalog",
            Route::Manifest { .. } => "/v2/{name}/manifests/{reference}",
            Route::Blob { .. } => "/v2/{name}/blobs/{digest}",
            Route::Referrers { .. } => "/v2/{name}/referrers/{digest}",
            Route::Tags { .. } => "/v2/{name}/tags/list",
            Route::Upload => "/v2/{name}/blobs/uploads",
            Route::Unknown => "/v2/*",
        }
    }
}

/// Which route template served a request.
#[derive(Clone, Copy, Debug)]
pub struct RouteTemplate(pub &'static str);

/// Split a raw `/v2/...` path. Names and references are not validated here.
pub fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Route::Unknown;
    };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Route::Ping;
    }
    if rest.trim_end_matches('/') == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest
        .strip_suffix("/tags/list")
        .or_else(|| rest.strip_suffix("/tags/list/"))
    {
        return Route::Tags { name };
    }
    if rest.contains("/blobs/uploads") {
        return Route::Upload;
    }
    // A digest has no '/': `a/referrers/manifests/x` is a manifest of `a/referrers`.
    if let Some(i) = rest.rfind("/referrers/") {
        let digest = rest[i + "/referrers/".len()..].trim_end_matches('/');
        if !digest.is_empty() && !digest.contains('/') {
            return Route::Referrers {
                name: &rest[..i],
                digest,
            };
        }
    }
    if let Some(i) = rest.rfind("/manifests/") {
        return Route::Manifest {
            name: &rest[..i],
            reference: rest[i + "/manifests/".len()..].trim_end_matches('/'),
        };
    }
    if let Some(i) = rest.rfind("/blobs/") {
        return Route::Blob {
            name: &rest[..i],
            digest: rest[i + "/blobs/".len()..].trim_end_matches('/'),
        };
    }
    Route::Unknown
}

fn bad(code: Code, message: &str) -> HttpResponse {
    errors::respond(StatusCode::BAD_REQUEST, code, message)
}

/// Entry point for everything under `/v2/` except `/v2/token`.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    up: web::Data<Upstreams>,
) -> HttpResponse {
    let method = req.method().clone();
    let path = req.path().to_owned();
    let read = method == Method::GET || method == Method::HEAD;
    let route = route(&path);
    {
        use actix_web::HttpMessage;
        req.extensions_mut().insert(RouteTemplate(route.template()));
    }
    if !read {
        drain(payload).await;
        return unsupported();
    }
    // Grammar first: nothing malformed reaches central or Pulp.
    let repo = match &route {
        Route::Manifest { name, reference } => {
            if !valid_name(name) {
                return bad(Code::NameInvalid, "invalid repository name");
            }
            if !valid_reference(reference) {
                if tag_characters(reference) {
                    // `.x`, `-x`, an overlong tag: no manifest has that name, and a
                    // pull of a manifest that does not exist is a 404 (spec, and
                    // Pulp). Answered here, whoever asks: it says nothing of the name.
                    return errors::respond(
                        StatusCode::NOT_FOUND,
                        Code::ManifestUnknown,
                        "manifest unknown to registry",
                    );
                }
                return bad(Code::ManifestInvalid, "invalid manifest reference");
            }
            Some(*name)
        }
        Route::Blob { name, digest } | Route::Referrers { name, digest } => {
            if !valid_name(name) {
                return bad(Code::NameInvalid, "invalid repository name");
            }
            if !valid_digest(digest) {
                return bad(Code::DigestInvalid, "invalid digest");
            }
            Some(*name)
        }
        Route::Tags { name } => {
            if !valid_name(name) {
                return bad(Code::NameInvalid, "invalid repository name");
            }
            Some(*name)
        }
        Route::Upload => return unsupported(),
        Route::Unknown => {
            return errors::respond(StatusCode::NOT_FOUND, Code::NotFound, "no such route");
        }
        Route::Ping | Route::Catalog => None,
    };
    let pairs = match query::pairs(req.query_string()) {
        Ok(p) => p,
        Err(e) => return bad(Code::Unsupported, &e.to_string()),
    };

    let identity = match identify(&req, &shared, &up).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let s = &shared.config.server;
    if route == Route::Ping {
        return if identity.is_anonymous() {
            errors::unauthorized(
                &s.public_url,
                &s.public_host,
                None,
                "authentication required",
            )
        } else {
            json(StatusCode::OK, "{}".to_owned())
        };
    }
    let view = match view(&req, identity, &shared, &up).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if route == Route::Catalog {
        return catalog(&view, &pairs, &s.public_url);
    }
    let Some(name) = repo else {
        return errors::respond(StatusCode::NOT_FOUND, Code::NotFound, "no such route");
    };
    if !view.visible(name) {
        // Invisible and nonexistent repositories get the same answer.
        return match view.identity {
            Identity::Anonymous => errors::unauthorized(
                &s.public_url,
                &s.public_host,
                Some(name),
                "authentication required",
            ),
            _ => errors::respond(
                StatusCode::NOT_FOUND,
                Code::NameUnknown,
                "repository name not known to registry",
            ),
        };
    }
    match route {
        Route::Tags { name } => {
            let upstream_query = forwarded_query(&pairs, TAGS_QUERY);
            let target = format!("/v2/{name}/tags/list{upstream_query}");
            let what = streamed("tags", &route, name);
            let mut resp =
                forward::relay_json(&req, &up.pulp, &shared.config.pulp, &target, what).await;
            rewrite_link(&mut resp, &s.public_url, name);
            resp
        }
        Route::Manifest { name, reference } => {
            let target = format!("/v2/{name}/manifests/{reference}");
            let what = streamed("manifest", &route, name);
            relay_content(&req, &shared, &up, &target, what).await
        }
        Route::Blob { name, digest } => {
            let target = format!("/v2/{name}/blobs/{digest}");
            let what = streamed("blob", &route, name);
            relay_content(&req, &shared, &up, &target, what).await
        }
        Route::Referrers { name, digest } => {
            let target = format!(
                "/v2/{name}/referrers/{digest}{}",
                forwarded_query(&pairs, REFERRERS_QUERY)
            );
            let what = streamed("referrers", &route, name);
            let resp = relay_content(&req, &shared, &up, &target, what).await;
            if resp.status() == StatusCode::NOT_FOUND {
                // The repository is known and visible, so a 404 is Pulp without the
                // referrers API (pulp_container 2.30: no such URL). The spec's answer for
                // that is a 404, on which clients fall back to the `sha256-<hex>` tag.
                return errors::respond(
                    StatusCode::NOT_FOUND,
                    Code::Unsupported,
                    "the referrers API is not supported; use the referrers tag schema",
                );
            }
            resp
        }
        _ => errors::respond(StatusCode::NOT_FOUND, Code::NotFound, "no such route"),
    }
}

fn streamed<'a>(kind: &'static str, route: &Route<'_>, name: &'a str) -> Streamed<'a> {
    Streamed {
        kind,
        route: route.template(),
        repository: name,
    }
}

/// A manifest or blob read, for the path rebuilt from its validated parts (a
/// trailing slash the route tolerates does not reach Pulp).
async fn relay_content(
    req: &HttpRequest,
    shared: &Shared,
    up: &Upstreams,
    target: &str,
    what: Streamed<'_>,
) -> HttpResponse {
    let mut resp = forward::relay(req, &up.pulp, &shared.config.pulp, target, what).await;
    // Only tags/list pages; any other Link would name Pulp.
    resp.headers_mut().remove(header::LINK);
    resp
}

/// Most of a refused push body read before answering, and for how long.
const DRAIN_LIMIT: usize = 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Read (and discard) a small request body, so that the refusal reaches an
/// HTTP/2 client (a manifest PUT) instead of a reset of the stream it is still
/// sending on. Big or slow bodies are cut short: the client then sees the reset.
async fn drain(mut payload: web::Payload) {
    use futures_util::StreamExt;
    let read_some = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = payload.next().await {
            read += chunk.len();
            if read > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = actix_web::rt::time::timeout(DRAIN_TIME, read_some).await;
}

fn unsupported() -> HttpResponse {
    let mut r = errors::respond(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::Unsupported,
        "this registry is a read-only mirror",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

fn json(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((API_VERSION_HEADER, API_VERSION))
        .body(body)
}

#[derive(Serialize)]
struct CatalogBody<'a> {
    repositories: Vec<&'a str>,
}

/// `_catalog` from the pushed list: sorted, paginated with `n`/`last` and `Link`.
fn catalog(view: &View, pairs: &[(String, String)], public_url: &str) -> HttpResponse {
    let n = match query::first(pairs, "n") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return bad(
                    Code::PaginationNumberInvalid,
                    "n must be a non-negative integer",
                );
            }
        },
    };
    let last = query::first(pairs, "last").unwrap_or_default();
    let names = view.snapshot.repository_names();
    let visible: Vec<&str> = names
        .iter()
        .map(|n| &**n)
        .filter(|name| *name > last && view.visible(name))
        .collect();
    let (page, more) = match n {
        Some(n) if n < visible.len() => (&visible[..n], true),
        _ => (&visible[..], false),
    };
    let body = serde_json::to_string(&CatalogBody {
        repositories: page.to_vec(),
    })
    .unwrap_or_else(|_| "{}".into());
    let mut resp = json(StatusCode::OK, body);
    if let (true, Some(n), Some(last)) = (more, n, page.last()) {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        if let Ok(v) =
            HeaderValue::from_str(&format!("<{public_url}/v2/_catalog?{q}>; rel=\"next\""))
        {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

/// What of a `tags/list` query goes to Pulp: pagination.
const TAGS_QUERY: &[&str] = &["n", "last"];
/// What of a referrers query goes to Pulp: the spec's one filter.
const REFERRERS_QUERY: &[&str] = &["artifactType"];

/// `?` and the pairs named in `keep`, re-encoded, for Pulp; empty when
/// there are none.
fn forwarded_query(pairs: &[(String, String)], keep: &[&str]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish()
    )
}

/// Pulp's `Link` names Pulp; clients must come back to us.
fn rewrite_link(resp: &mut HttpResponse, public_url: &str, name: &str) {
    let Some(link) = resp
        .headers()
        .get(header::LINK)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return;
    };
    let query = link
        .split_once('?')
        .map(|(_, q)| q.split('>').next().unwrap_or_default())
        .unwrap_or_default();
    let pairs = query::pairs(query).unwrap_or_default();
    let rebuilt = format!(
        "<{public_url}/v2/{name}/tags/list{}>; rel=\"next\"",
        forwarded_query(&pairs, TAGS_QUERY)
    );
    match HeaderValue::from_str(&rebuilt) {
        Ok(v) => {
            resp.headers_mut().insert(header::LINK, v);
        }
        Err(_) => {
            resp.headers_mut().remove(header::LINK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Ping);
        assert_eq!(route("/v2"), Route::Ping);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(
            route("/v2/a/b/manifests/latest"),
            Route::Manifest {
                name: "a/b",
                reference: "latest"
            }
        );
        assert_eq!(
            route("/v2/a/manifests/x/manifests/y"),
            Route::Manifest {
                name: "a/manifests/x",
                reference: "y"
            }
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Route::Blob {
                name: "a",
                digest: "sha256:00"
            }
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            route(&format!("/v2/a/b/referrers/{d}")),
            Route::Referrers {
                name: "a/b",
                digest: &d
            }
        );
        assert_eq!(
            route(&format!("/v2/a/manifests/x/referrers/{d}/")),
            Route::Referrers {
                name: "a/manifests/x",
                digest: &d
            }
        );
        assert_eq!(
            route("/v2/a/referrers/manifests/latest"),
            Route::Manifest {
                name: "a/referrers",
                reference: "latest"
            }
        );
        assert_eq!(
            route("/v2/a/manifests/referrers/"),
            Route::Manifest {
                name: "a",
                reference: "referrers"
            }
        );
        assert_eq!(route("/v2/a/tags/list"), Route::Tags { name: "a" });
        assert_eq!(route("/v2/a/tags/list/"), Route::Tags { name: "a" });
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::Upload);
        assert_eq!(route("/v2/a/b"), Route::Unknown);
        assert_eq!(route("/v3/"), Route::Unknown);
    }

    #[test]
    fn tags_query_keeps_only_pagination() {
        let p = vec![
            ("n".into(), "2".into()),
            ("x".into(), "y".into()),
            ("last".into(), "a b".into()),
        ];
        assert_eq!(forwarded_query(&p, TAGS_QUERY), "?n=2&last=a+b");
        assert_eq!(forwarded_query(&[], TAGS_QUERY), "");
    }

    #[test]
    fn referrers_query_keeps_only_artifact_type() {
        let p = vec![
            ("artifactType".into(), "application/vnd.x+json; v=1".into()),
            ("n".into(), "2".into()),
        ];
        assert_eq!(
            forwarded_query(&p, REFERRERS_QUERY),
            "?artifactType=application%2Fvnd.x%2Bjson%3B+v%3D1"
        );
        assert_eq!(forwarded_query(&[], REFERRERS_QUERY), "");
    }
}
