//! The TLS listener's HTTP/2 limits (`server.http2_*`), over real TLS
//! sockets against a started gateway: a header list over the limit is refused
//! (431 on its stream when it is a little over, the connection closed with
//! GOAWAY when it is far over) while one under it is served; a client that
//! opens more streams than the server announced has the extra ones refused
//! (`RST_STREAM REFUSED_STREAM`) and the connection serves on; a configured
//! value is what the server announces and enforces; and twenty 8 MiB header
//! lists leave the process's memory flat.

mod http2;

use std::sync::Mutex;

use gateway_tests::fake_pulp::{FakeRepo, Image};
use gateway_tests::harness::{GatewayBuilder, TestEnv};
use http2::{Answer, Client, END_HEADERS, END_STREAM, Frame, HEADERS, RST_STREAM, Raw};

const PUBLIC: &str = "org/public/runtime";
const MIB: u64 = 1024 * 1024;

/// The gateway runs in this process: its memory figures are the process's,
/// so the tests of this suite run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn env(gateway: impl FnOnce(GatewayBuilder) -> GatewayBuilder + 'static) -> TestEnv {
    TestEnv::builder()
        .pulp(|p| {
            p.repo(
                FakeRepo::new(PUBLIC)
                    .image("latest", Image::flatpak_runtime("org.test.Platform", "1")),
            )
        })
        .central(|c| c.public(&[PUBLIC]))
        .repositories(&[(PUBLIC, false)])
        .gateway(gateway)
        .start()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn authority(env: &TestEnv) -> String {
    env.gateway.tls_addr().to_string()
}

fn rss_bytes() -> u64 {
    gateway_tests::harness::rss_kib(std::process::id()).map_or(0, |(kb, _)| kb * 1024)
}

/// A value that makes the request's header list (RFC 9113 size: name +
/// value + 32 per field, pseudo-headers included) about `kib` KiB.
fn filler(kib: usize) -> String {
    "a".repeat(kib * 1024 - 200)
}

/// The gateway still answers HTTP/2 and HTTP/1.1 on its TLS listener.
fn assert_alive(env: &TestEnv, after: &str) {
    let answer = block_on(async {
        let client = Client::connect(env.gateway.tls_addr(), &env.ca_pem()).await;
        client.get(&authority(env), "/v2/_catalog", &[]).await
    });
    assert!(
        matches!(answer, Answer::Status(200)),
        "after {after}: h2 {answer:?}"
    );
    let r = env.curl().get("/v2/_catalog");
    assert_eq!(r.status, 200, "after {after}: HTTP/1.1 {}", r.text());
}

/// Raw requests on `streams`, written at once; for each stream, the frame that
/// ended it (a head with END_STREAM, the DATA that ended it, or a reset).
fn raw_gets(raw: &mut Raw, authority: &str, streams: &[u32]) -> Vec<(u32, Frame, bool)> {
    let mut out = Vec::new();
    for &id in streams {
        out.extend(http2::frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &http2::request_block(authority, "/v2/_catalog"),
        ));
    }
    raw.write(&out).expect("requests written");
    // Per stream: its first head (or reset), and whether it has ended.
    let mut seen: Vec<(u32, Option<Frame>, bool)> =
        streams.iter().map(|&id| (id, None, false)).collect();
    let frames = raw.read_until(|f| {
        if let Some(entry) = seen.iter_mut().find(|(id, _, _)| *id == f.stream) {
            if entry.1.is_none() && (f.kind == HEADERS || f.kind == RST_STREAM) {
                entry.1 = Some(f.clone());
            }
            if f.kind == RST_STREAM || f.flags & END_STREAM != 0 {
                entry.2 = true;
            }
        }
        seen.iter().all(|(_, _, done)| *done)
    });
    assert!(
        seen.iter().all(|(_, _, done)| *done),
        "every stream ended: {seen:?} after {frames:?}"
    );
    seen.into_iter()
        .map(|(id, first, done)| (id, first.expect("a first frame"), done))
        .collect()
}

#[test]
fn header_lists_over_the_limit_are_refused_and_under_it_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = env(|g| g);
    let authority = authority(&env);
    let (answers, still) = block_on(async {
        let client = Client::connect(env.gateway.tls_addr(), &env.ca_pem()).await;
        let mut answers = Vec::new();
        for kib in [1, 32, 60, 66, 100] {
            let value = filler(kib);
            let answer = client
                .get(&authority, "/v2/_catalog", &[("x-filler", &value)])
                .await;
            answers.push((kib, answer));
        }
        // The same connection still serves after the refusals.
        let still = client.get(&authority, "/v2/_catalog", &[]).await;
        (answers, still)
    });
    println!("h2 header list (default limit 64 KiB): {answers:?}, then {still:?}");
    for (kib, answer) in &answers {
        if *kib <= 60 {
            assert!(
                matches!(answer, Answer::Status(200)),
                "{kib} KiB is under the limit: {answer:?}"
            );
        } else {
            assert!(
                matches!(answer, Answer::Status(431)),
                "{kib} KiB is over the limit: {answer:?}"
            );
        }
    }
    assert!(matches!(still, Answer::Status(200)), "{still:?}");

    // Far over the limit: the server gives up on the block before its end
    // (here 8 frames of a 1 MiB list, the rest never sent, so that the
    // server has read everything when it closes and its GOAWAY arrives) and
    // closes the connection with GOAWAY instead of buffering it.
    let (mut raw, _) = Raw::connect(env.gateway.tls_addr(), &env.ca_pem());
    raw.get_with_big_header(
        1,
        &authority,
        "/v2/_catalog",
        "x-filler",
        MIB as usize,
        Some(8),
    )
    .expect("the first 128 KiB of the block written");
    let frames = raw.read_until(|f| f.kind == http2::GOAWAY);
    let goaway = frames.iter().find(|f| f.kind == http2::GOAWAY);
    println!(
        "h2 1 MiB header list, first 8 frames: GOAWAY {:?}",
        goaway.map(|f| f.error_code())
    );
    assert_eq!(
        goaway.and_then(Frame::error_code),
        Some(http2::ENHANCE_YOUR_CALM),
        "{frames:?}"
    );
    assert!(
        !frames.iter().any(|f| f.kind == HEADERS),
        "no response to the unfinished block: {frames:?}"
    );
    assert!(raw.read_frame().is_none(), "the connection is closed");
    assert_alive(&env, "oversized header lists");
}

#[test]
fn streams_beyond_the_limit_are_refused_and_the_connection_serves_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = env(|g| {
        g.set("server.http2_max_concurrent_streams", 4)
            .set("server.http2_max_header_list_kb", 8)
    });
    let authority = authority(&env);

    // What the server announces is what was configured.
    let (mut raw, settings) = Raw::connect(env.gateway.tls_addr(), &env.ca_pem());
    let announced = settings.settings();
    assert!(
        announced.contains(&(http2::SETTINGS_MAX_CONCURRENT_STREAMS, 4)),
        "{announced:?}"
    );
    assert!(
        announced.contains(&(http2::SETTINGS_MAX_HEADER_LIST_SIZE, 8 * 1024)),
        "{announced:?}"
    );

    // Five streams opened at once: the fifth is refused, the others served.
    let ended = raw_gets(&mut raw, &authority, &[1, 3, 5, 7, 9]);
    println!("h2 five streams against a limit of four: {ended:?}");
    for (id, first, _) in &ended {
        if *id == 9 {
            assert_eq!(first.kind, RST_STREAM, "stream {id}: {first:?}");
            assert_eq!(first.error_code(), Some(http2::REFUSED_STREAM), "{first:?}");
        } else {
            assert!(first.is_status_200(), "stream {id}: {first:?}");
        }
    }
    // The connection serves on.
    let ended = raw_gets(&mut raw, &authority, &[11]);
    assert!(ended[0].1.is_status_200(), "{ended:?}");

    // A client that keeps to the announced limit gets all its requests
    // answered over one connection, however many it sends at once. (The
    // first answer proves the server's SETTINGS arrived: `h2` assumes no
    // limit until then, and would have its extra streams refused.)
    let (answers, big, small) = block_on(async {
        let client = Client::connect(env.gateway.tls_addr(), &env.ca_pem()).await;
        let first = client.get(&authority, "/v2/_catalog", &[]).await;
        assert!(matches!(first, Answer::Status(200)), "{first:?}");
        let requests = (0..12).map(|_| client.get(&authority, "/v2/_catalog", &[]));
        let answers = futures_util::future::join_all(requests).await;
        // The configured header list limit (8 KiB), not the default (64 KiB).
        let big = client
            .get(&authority, "/v2/_catalog", &[("x-filler", &filler(12))])
            .await;
        let small = client
            .get(&authority, "/v2/_catalog", &[("x-filler", &filler(4))])
            .await;
        (answers, big, small)
    });
    assert!(
        answers.iter().all(|a| matches!(a, Answer::Status(200))),
        "{answers:?}"
    );
    assert!(matches!(big, Answer::Status(431)), "12 KiB: {big:?}");
    assert!(matches!(small, Answer::Status(200)), "4 KiB: {small:?}");
    assert_alive(&env, "too many streams");
}

#[test]
fn twenty_8_mib_header_lists_over_http2_leave_memory_flat() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = env(|g| g);
    let authority = authority(&env);
    let size = 8 * MIB as usize;
    // Each is refused without an answer: GOAWAY and the connection closed.
    // The server closes with the rest of the block unread, so the client's
    // TCP stack may see a reset first and drop the GOAWAY: then only the
    // close is seen.
    let send = |what: &str| {
        let (mut raw, _) = Raw::connect(env.gateway.tls_addr(), &env.ca_pem());
        let _ = raw.get_with_big_header(1, &authority, "/v2/_catalog", "x-filler", size, None);
        let frames = raw.read_until(|f| f.kind == http2::GOAWAY);
        assert!(
            !frames.iter().any(|f| f.kind == HEADERS),
            "{what}: no answer to an 8 MiB header list: {frames:?}"
        );
        let goaway = frames.iter().find(|f| f.kind == http2::GOAWAY);
        if let Some(goaway) = goaway {
            assert_ne!(goaway.error_code(), Some(0), "{what}: {goaway:?}");
        }
        goaway.and_then(Frame::error_code)
    };
    // Warm up: worker threads, TLS, the first connection's buffers.
    send("warm-up");
    assert_alive(&env, "warm-up");
    let before = rss_bytes();
    let mut codes = Vec::new();
    for i in 0..20 {
        codes.push(send(&format!("request {i}")));
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "h2 20 x 8 MiB header lists: GOAWAY codes (None: closed, GOAWAY not read) {codes:?}; resident memory {} -> {} KiB (+{} KiB)",
        before / 1024,
        after / 1024,
        grown / 1024
    );
    assert!(grown < 16 * MIB, "memory grew by {} KiB", grown / 1024);
    assert_alive(&env, "20 x 8 MiB header lists");
}
