//! HTTP/2 clients for the listener-limit suite: the `h2` crate over
//! tokio-rustls for ordinary requests (it decodes the answers), and a raw
//! frame writer/reader over blocking rustls for what `h2` refuses to send
//! (more streams than the server allows) or would buffer whole (an 8 MiB
//! header list, written here 16 KiB at a time).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// A client TLS configuration that trusts `ca_pem` and offers only `h2`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

// ---------------------------------------------------------------------------
// The h2 crate
// ---------------------------------------------------------------------------

/// What one request over `h2` came to.
#[derive(Debug)]
pub enum Answer {
    Status(u16),
    /// The stream or the connection was reset (`RST_STREAM` or `GOAWAY`).
    Reset(h2::Reason),
    /// Any other failure (connection closed, I/O error).
    Failed(String),
}

/// An HTTP/2 connection made by the `h2` crate, its driver spawned on the
/// runtime the caller is in.
pub struct Client {
    send: h2::client::SendRequest<Bytes>,
    /// Drives the connection; detached, it ends with the runtime.
    _driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem));
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN chose h2"
        );
        let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
        Client {
            send,
            _driver: tokio::spawn(connection),
        }
    }

    /// `GET path` with `headers`: the answer's status (its body read), or how
    /// it failed.
    pub async fn get(&self, authority: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = http::Request::get(format!("https://{authority}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).expect("request");
        let mut send = match self.send.clone().ready().await {
            Ok(send) => send,
            Err(e) => return failure(e),
        };
        let response = match send.send_request(request, true) {
            Ok((response, _)) => response,
            Err(e) => return failure(e),
        };
        let response = match response.await {
            Ok(response) => response,
            Err(e) => return failure(e),
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Err(e) => return failure(e),
            }
        }
        Answer::Status(status)
    }
}

fn failure(e: h2::Error) -> Answer {
    match e.reason() {
        Some(reason) => Answer::Reset(reason),
        None => Answer::Failed(e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
/// The largest frame a peer may send before the server raises it (it does not).
pub const MAX_FRAME: usize = 16_384;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM`, or of a `GOAWAY`.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The (identifier, value) pairs of a `SETTINGS` frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }

    /// A response head whose first field is the static `:status: 200`
    /// (HPACK index 8), as h2 encodes it.
    pub fn is_status_200(&self) -> bool {
        self.kind == HEADERS && self.payload.first() == Some(&0x88)
    }
}

/// One raw HTTP/2 connection over blocking rustls.
pub struct Raw {
    conn: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// HPACK string literal, not Huffman-coded.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The HPACK block of `GET https://authority/path` (static-table method and
/// scheme, literal path and authority, never indexed).
pub fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x87]; // :method GET, :scheme https
    hpack_int(&mut out, 0, 4, 4); // :path, literal without indexing
    hpack_str(&mut out, path.as_bytes());
    hpack_int(&mut out, 0, 4, 1); // :authority
    hpack_str(&mut out, authority.as_bytes());
    out
}

/// A literal header field without indexing, new name.
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0);
    hpack_str(out, name.as_bytes());
    hpack_str(out, value);
}

impl Raw {
    /// Connect, send the preface and an empty SETTINGS, read the server's
    /// SETTINGS (returned) and acknowledge it.
    pub fn connect(addr: SocketAddr, ca_pem: &str) -> (Raw, Frame) {
        let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(20)));
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(client_config(ca_pem), name).expect("TLS client");
        let mut raw = Raw {
            conn: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        raw.write(&hello).expect("preface");
        assert_eq!(
            raw.conn.conn.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN chose h2"
        );
        let settings = loop {
            let f = raw.read_frame().expect("the server's SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                break f;
            }
        };
        raw.write(&frame(SETTINGS, ACK, 0, &[]))
            .expect("SETTINGS ACK");
        (raw, settings)
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.write_all(bytes)?;
        self.conn.flush()
    }

    /// The next frame, or `None` once the connection is closed (or broken).
    pub fn read_frame(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    });
                }
            }
            match self.conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until `done` says so (the matching frame included) or the
    /// connection ends.
    pub fn read_until(&mut self, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.read_frame() {
            let stop = done(&f);
            frames.push(f);
            if stop {
                break;
            }
        }
        frames
    }

    /// `GET path` on `stream` carrying a header named `name` whose value is
    /// `size` bytes, written as HEADERS and CONTINUATION frames of at most
    /// 16 KiB each, generated as they go (the client never holds the list).
    /// Stops writing at the first error (the server may close early), or
    /// after `max_frames` frames, the block unfinished.
    pub fn get_with_big_header(
        &mut self,
        stream: u32,
        authority: &str,
        path: &str,
        name: &str,
        size: usize,
        max_frames: Option<usize>,
    ) -> std::io::Result<()> {
        let mut block = request_block(authority, path);
        block.push(0);
        hpack_str(&mut block, name.as_bytes());
        hpack_int(&mut block, 0, 7, size);
        // The value follows: `size` bytes of 'a'.
        let mut left = size;
        let filler = [b'a'; MAX_FRAME];
        let mut first = true;
        let mut frames = 0;
        loop {
            if max_frames.is_some_and(|max| frames == max) {
                return Ok(());
            }
            frames += 1;
            let room = MAX_FRAME - block.len();
            let take = room.min(left);
            block.extend_from_slice(&filler[..take]);
            left -= take;
            let last = left == 0;
            let kind = if first { HEADERS } else { CONTINUATION };
            let flags = if first { END_STREAM } else { 0 } | if last { END_HEADERS } else { 0 };
            self.write(&frame(kind, flags, stream, &block))?;
            block.clear();
            first = false;
            if last {
                return Ok(());
            }
        }
    }
}
