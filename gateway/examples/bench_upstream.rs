//! A stand-in Pulp for load runs: serves a synthetic Flatpak index (labels of
//! 1-3 KB per image, as Pulp copies them from image configs) at
//! `/pulpcore_registry/index/static`, and writes a gateway state file in which
//! every repository is public, so that any client sees the whole index.
//!
//! `bench_upstream <repos> <state-dir>`; prints `listening <addr>` once bound.

use std::io::Write;

use actix_web::{App, HttpResponse, HttpServer, web};
use container_gateway::index::synth;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let repos: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let state_dir = args.next().unwrap_or_else(|| ".".into());
    let body = web::Bytes::from(synth::index(&synth::Spec::new(repos)));
    let names: serde_json::Map<String, serde_json::Value> = (0..repos)
        .map(|i| (synth::repo_name(i), serde_json::Value::Bool(false)))
        .collect();
    let state = serde_json::json!({"version": 1, "repositories": names});
    std::fs::write(
        format!("{state_dir}/state.json"),
        serde_json::to_vec(&state)?,
    )?;
    std::fs::write(format!("{state_dir}/index.json"), &body)?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let body = body.clone();
            App::new().route(
                "/pulpcore_registry/index/{kind}",
                web::get().to(move || {
                    let body = body.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")?;
        let addr = server.addrs()[0];
        println!("listening {addr}");
        std::io::stdout().flush()?;
        server.run().await
    })
}
