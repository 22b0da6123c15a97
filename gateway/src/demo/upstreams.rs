//! In-process stand-ins for Pulp and central, speaking their wire formats.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use super::sample::Sample;

/// Serve `sample` the way pulp_container does under `/pulpcore_registry`.
pub fn pulp(sample: Arc<Sample>) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let origin = format!("http://{addr}");
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(sample.clone()))
            .app_data(web::Data::new(origin.clone()))
            .route("/pulpcore_registry/index/{kind}", web::get().to(index))
            .route("/pulpcore_registry/v2/{tail:.*}", web::route().to(v2))
            .route("/pulp/container/{tail:.*}", web::get().to(content))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((addr, server))
}

async fn index(
    req: HttpRequest,
    sample: web::Data<Sample>,
    origin: web::Data<String>,
) -> HttpResponse {
    let has_ref_filter = form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "label:org.flatpak.ref:exists" && v == "1");
    if !has_ref_filter {
        return HttpResponse::BadRequest()
            .json(serde_json::json!({"detail": "Missing label:org.flatpak.ref:exists=1."}));
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(sample.index(origin.as_str()))
}

async fn v2(
    req: HttpRequest,
    sample: web::Data<Sample>,
    origin: web::Data<String>,
) -> HttpResponse {
    let path = req.path().trim_start_matches("/pulpcore_registry/v2/");
    if let Some((repository, reference)) = path.rsplit_once("/manifests/") {
        return match sample.manifest(repository, reference) {
            Some(image) => HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json"))
                .insert_header(("Docker-Content-Digest", image.manifest_digest.as_str()))
                .body(image.manifest.clone()),
            None => HttpResponse::NotFound()
                .json(serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})),
        };
    }
    if let Some((repository, digest)) = path.rsplit_once("/blobs/") {
        if sample.blobs.contains_key(digest) {
            return HttpResponse::Found()
                .insert_header((
                    header::LOCATION,
                    format!(
                        "{}/pulp/container/{repository}/blobs/{digest}?expires=0",
                        origin.as_str()
                    ),
                ))
                .finish();
        }
        return HttpResponse::NotFound().json(
            serde_json::json!({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}),
        );
    }
    HttpResponse::NotFound().finish()
}

async fn content(req: HttpRequest, sample: web::Data<Sample>) -> HttpResponse {
    let digest = req.path().rsplit('/').next().unwrap_or_default();
    match sample.blobs.get(digest) {
        Some(blob) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
            .insert_header(("Docker-Content-Digest", digest))
            .body(blob.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// Katello's `GET /v2/_catalog`, answering per `HostUUID`.
pub fn central(
    hosts: HashMap<String, Vec<&'static str>>,
    public: Vec<&'static str>,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let hosts = Arc::new(hosts);
    let public = Arc::new(public);
    let server = HttpServer::new(move || {
        let hosts = hosts.clone();
        let public = public.clone();
        App::new().route(
            "/v2/_catalog",
            web::get().to(move |req: HttpRequest| {
                let hosts = hosts.clone();
                let public = public.clone();
                async move {
                    let uuid = req
                        .headers()
                        .get("HostUUID")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let mut repositories: Vec<&str> = public.to_vec();
                    if let Some(own) = hosts.get(uuid) {
                        repositories.extend(own.iter().copied());
                    }
                    repositories.sort_unstable();
                    HttpResponse::Ok().json(serde_json::json!({ "repositories": repositories }))
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((addr, server))
}
