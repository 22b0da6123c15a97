//! A central Katello answering `GET /v2/_catalog` for `HostUUID: <uuid>`
//! (contract §3) with that host's repositories: `per_host` names of a pool,
//! spread by a hash of the UUID, so 100,000 hosts need no table. Counts calls
//! and can answer after a delay, as a loaded Katello would.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

pub struct Central {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Answering {
    pool: Vec<String>,
    per_host: usize,
    delay: Duration,
    calls: Arc<AtomicU64>,
}

impl Answering {
    fn grant(&self, uuid: &str) -> Vec<&str> {
        let mut h = BuildHasherDefault::<DefaultHasher>::default().hash_one(uuid);
        let mut picked: Vec<&str> = (0..self.per_host.min(self.pool.len()))
            .map(|_| {
                h = h
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                self.pool[(h >> 33) as usize % self.pool.len()].as_str()
            })
            .collect();
        picked.sort_unstable();
        picked.dedup();
        picked
    }
}

async fn catalog(req: HttpRequest, state: web::Data<Answering>) -> HttpResponse {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let Some(uuid) = req.headers().get("HostUUID").and_then(|v| v.to_str().ok()) else {
        return HttpResponse::Unauthorized().finish();
    };
    HttpResponse::Ok().json(serde_json::json!({ "repositories": state.grant(uuid) }))
}

impl Central {
    pub fn start(pool: Vec<String>, per_host: usize, delay: Duration) -> Result<Central, String> {
        let calls = Arc::new(AtomicU64::new(0));
        let state = web::Data::new(Answering {
            pool,
            per_host,
            delay,
            calls: calls.clone(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let started = system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .route("/v2/_catalog", web::get().to(catalog))
                })
                .workers(1)
                .backlog(4096)
                .max_connections(100_000)
                .bind("127.0.0.1:0")?;
                let addr = server.addrs()[0];
                let server = server.run();
                Ok::<_, std::io::Error>((addr, server))
            });
            match started {
                Ok((addr, server)) => {
                    let _ = tx.send(Ok((addr, server.handle())));
                    let _ = system.block_on(server);
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
        let (addr, handle) = rx.recv().map_err(|_| "central thread ended".to_owned())??;
        Ok(Central {
            addr,
            calls,
            handle,
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ =
            std::thread::spawn(move || actix_rt::System::new().block_on(handle.stop(false))).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
