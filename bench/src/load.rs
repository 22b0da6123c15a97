//! Request drivers for the identity-heavy measurements: many distinct hosts,
//! each known by the certificate a trusted frontend forwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const CERT_HEADER: &str = "X-RHSM-SSL-Client-Cert";

/// One request per header value, all in flight at once, each on its own
/// connection: (latency, status) per request, in order.
pub fn all_at_once(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
) -> Result<Vec<(Duration, u16)>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let requests = headers.iter().map(|h| one_request(addr, path, h));
        let results = futures_util::future::join_all(requests).await;
        results.into_iter().collect()
    })
}

async fn one_request(addr: SocketAddr, path: &str, cert: &str) -> Result<(Duration, u16), String> {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{CERT_HEADER}: {cert}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {} bytes", answer.len()))?;
    Ok((started.elapsed(), status))
}

/// Every header value once, `concurrency` requests in flight over pooled
/// keep-alive connections: answers counted by status.
pub fn each_once(
    base: &str,
    path: &str,
    headers: Vec<String>,
    concurrency: usize,
) -> Result<BTreeMap<u16, u64>, String> {
    let url = format!("{base}{path}");
    actix_rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().limit(concurrency))
            .timeout(Duration::from_secs(60))
            .finish();
        let mut by_status = BTreeMap::new();
        let mut answers = futures_util::stream::iter(headers)
            .map(|h| {
                let req = client.get(&url).insert_header((CERT_HEADER, h));
                async move {
                    let mut resp = req.send().await.map_err(|e| e.to_string())?;
                    resp.body()
                        .limit(1 << 24)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<u16, String>(resp.status().as_u16())
                }
            })
            .buffer_unordered(concurrency);
        while let Some(answer) = answers.next().await {
            *by_status.entry(answer?).or_insert(0) += 1;
        }
        Ok(by_status)
    })
}

/// The q-th quantile (0..=1) of some latencies.
pub fn quantile(latencies: &mut [Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let i = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[i.min(latencies.len() - 1)]
}
