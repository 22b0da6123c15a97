//! Test plugin speaking the raw ABI by hand, as a C plugin would, and
//! misbehaving the way its configuration says: `{"mode":"<mode>"}`.
//!
//! | mode | answer |
//! |---|---|
//! | `ok` | ALLOW `{"kind":"user","id":"ok"}` |
//! | `echo` | ALLOW a user whose id describes the request it received |
//! | `count` | ALLOW user `live-<n>`, n = buffers handed out and not yet freed |
//! | `deny` / `error` | DENY / ERROR with a message |
//! | `panic` | catches its own panic and returns PANIC |
//! | `bad-utf8` | ALLOW with invalid UTF-8 |
//! | `bad-json` | ALLOW with truncated JSON |
//! | `unknown-kind` | ALLOW `{"kind":"robot",...}` |
//! | `kind-mismatch` | ALLOW with a token document |
//! | `bad-token` | TOKEN with a digest that is not 64 hex digits |
//! | `bad-deny-utf8` | DENY with an invalid UTF-8 reason |
//! | `unknown-status` | status 99 |
//! | `null-with-len` | ALLOW with a null pointer and a non-zero length |
//!
//! Any other configuration fails `init` with an ERROR and a message.

use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, Ordering};

use container_gateway_plugin_abi::{
    ABI_VERSION, CgAuthPluginV1, CgAuthRequest, CgBuf, CgHost, CgStr, status,
};

/// Buffers handed to the host and not yet returned through `free_buf`.
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Echo,
    Count,
    Deny,
    Error,
    Panic,
    BadUtf8,
    BadJson,
    UnknownKind,
    KindMismatch,
    BadToken,
    BadDenyUtf8,
    UnknownStatus,
    NullWithLen,
}

fn parse_mode(config: &str) -> Option<Mode> {
    let start = config.find(r#""mode":""#)? + r#""mode":""#.len();
    let end = start + config[start..].find('"')?;
    Some(match &config[start..end] {
        "ok" => Mode::Ok,
        "echo" => Mode::Echo,
        "count" => Mode::Count,
        "deny" => Mode::Deny,
        "error" => Mode::Error,
        "panic" => Mode::Panic,
        "bad-utf8" => Mode::BadUtf8,
        "bad-json" => Mode::BadJson,
        "unknown-kind" => Mode::UnknownKind,
        "kind-mismatch" => Mode::KindMismatch,
        "bad-token" => Mode::BadToken,
        "bad-deny-utf8" => Mode::BadDenyUtf8,
        "unknown-status" => Mode::UnknownStatus,
        "null-with-len" => Mode::NullWithLen,
        _ => return None,
    })
}

fn buf(bytes: impl Into<Vec<u8>>) -> CgBuf {
    let boxed: Box<[u8]> = bytes.into().into_boxed_slice();
    let len = boxed.len();
    LIVE.fetch_add(1, Ordering::SeqCst);
    CgBuf {
        ptr: Box::into_raw(boxed).cast::<u8>(),
        len,
        cap: len,
    }
}

unsafe extern "C" fn free_buf(buf: CgBuf) {
    if buf.ptr.is_null() {
        return;
    }
    LIVE.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: non-null buffers come from `buf`, a leaked `Box<[u8]>` of `len` bytes.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len)) });
}

unsafe extern "C" fn init(
    _host: *const CgHost,
    config_json: CgStr,
    out_instance: *mut *mut c_void,
    out_error: *mut CgBuf,
) -> u32 {
    // SAFETY: the host lends the configuration for this call.
    let config = unsafe { config_json.as_bytes() }
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("");
    match parse_mode(config) {
        Some(mode) => {
            // SAFETY: the host passes a writable out-pointer.
            unsafe { out_instance.write(Box::into_raw(Box::new(mode)).cast()) };
            status::OK
        }
        None => {
            // SAFETY: the host passes a writable out-pointer.
            unsafe { out_error.write(buf(format!("bad-plugin: no usable mode in {config}"))) };
            status::ERROR
        }
    }
}

fn text(s: CgStr) -> String {
    // SAFETY: the host lends request fields for the duration of the call.
    match unsafe { s.as_bytes() } {
        None => "-".to_owned(),
        Some(b) => String::from_utf8_lossy(b).replace(['"', '\\'], "_"),
    }
}

fn echo(req: &CgAuthRequest) -> String {
    // SAFETY: the host lends `tls_chain_len` entries for the duration of the call.
    let chain: &[CgStr] = if req.tls_chain.is_null() {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(req.tls_chain, req.tls_chain_len) }
    };
    let sizes: Vec<String> = chain.iter().map(|c| c.len.to_string()).collect();
    format!(
        "{} {} peer={} auth={} fwd={} chain=[{}]",
        text(req.method),
        text(req.path),
        text(req.peer),
        text(req.authorization),
        if req.forwarded_cert.ptr.is_null() {
            "-".to_owned()
        } else {
            req.forwarded_cert.len.to_string()
        },
        sizes.join(",")
    )
}

unsafe extern "C" fn authenticate(
    instance: *const c_void,
    request: *const CgAuthRequest,
    out: *mut CgBuf,
) -> u32 {
    // SAFETY: the instance is a `Mode` boxed by `init`.
    let mode = unsafe { *instance.cast::<Mode>() };
    let (code, answer) = match mode {
        Mode::Ok => (status::ALLOW, buf(r#"{"kind":"user","id":"ok"}"#)),
        Mode::Echo => {
            // SAFETY: the host lends the request for the duration of the call.
            let described =
                unsafe { request.as_ref() }.map_or_else(|| "no request".to_owned(), echo);
            (
                status::ALLOW,
                buf(format!(r#"{{"kind":"user","id":"{described}"}}"#)),
            )
        }
        Mode::Count => {
            let live = LIVE.load(Ordering::SeqCst);
            (
                status::ALLOW,
                buf(format!(r#"{{"kind":"user","id":"live-{live}"}}"#)),
            )
        }
        Mode::Deny => (status::DENY, buf("bad-plugin denies as configured")),
        Mode::Error => (status::ERROR, buf("bad-plugin backend is down")),
        Mode::Panic => {
            match quiet_catch_unwind(|| -> u32 { panic!("bad-plugin panics as configured") }) {
                Ok(_) => (status::ERROR, CgBuf::EMPTY),
                Err(_) => (status::PANIC, buf("bad-plugin caught its own panic")),
            }
        }
        Mode::BadUtf8 => (
            status::ALLOW,
            buf(b"{\"kind\":\"user\",\"id\":\"\xff\xfe\"}".to_vec()),
        ),
        Mode::BadJson => (status::ALLOW, buf(r#"{"kind":"user","id":"#)),
        Mode::UnknownKind => (status::ALLOW, buf(r#"{"kind":"robot","id":"r2d2"}"#)),
        Mode::KindMismatch => (
            status::ALLOW,
            buf(format!(
                r#"{{"kind":"token","sha256":"{}"}}"#,
                "0".repeat(64)
            )),
        ),
        Mode::BadToken => (status::TOKEN, buf(r#"{"kind":"token","sha256":"NOT-HEX"}"#)),
        Mode::BadDenyUtf8 => (status::DENY, buf(b"\xff\xfe".to_vec())),
        Mode::UnknownStatus => (99, buf("?")),
        Mode::NullWithLen => (
            status::ALLOW,
            CgBuf {
                ptr: std::ptr::null_mut(),
                len: 5,
                cap: 0,
            },
        ),
    };
    // SAFETY: the host passes a writable out-pointer.
    unsafe { out.write(answer) };
    code
}

/// `catch_unwind` without the default hook's message on stderr (the hook
/// belongs to this library's own copy of `std`).
fn quiet_catch_unwind<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> std::thread::Result<R> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    std::panic::catch_unwind(f)
}

unsafe extern "C" fn destroy(instance: *mut c_void) {
    if !instance.is_null() {
        // SAFETY: the instance is a `Mode` boxed by `init`, destroyed once.
        drop(unsafe { Box::from_raw(instance.cast::<Mode>()) });
    }
}

/// Lies past the table's declared size, so the host must never call it: a
/// plugin built before `reload` was appended has whatever follows its table
/// there. If it is called anyway, the reload fails with this message.
unsafe extern "C" fn reload(
    _instance: *const c_void,
    _config: CgStr,
    out_error: *mut CgBuf,
) -> u32 {
    if !out_error.is_null() {
        // SAFETY: checked non-null; the host passes a writable out-pointer.
        unsafe { out_error.write(buf("bad-plugin: reload read beyond struct_size")) };
    }
    status::ERROR
}

static TABLE: CgAuthPluginV1 = CgAuthPluginV1 {
    abi_version: ABI_VERSION,
    // Declares the first v1 table's size, as a plugin built before `flags`
    // was appended does: the host must load it and read neither flags nor
    // `reload`.
    struct_size: container_gateway_plugin_abi::V1_BASE_SIZE as u32,
    name: c"bad-plugin".as_ptr(),
    init: Some(init),
    authenticate: Some(authenticate),
    free_buf: Some(free_buf),
    destroy: Some(destroy),
    flags: container_gateway_plugin_abi::flags::NON_BLOCKING,
    reload: Some(reload),
};

/// The entry point.
#[unsafe(no_mangle)]
pub extern "C" fn container_gateway_auth_plugin_v1() -> *const CgAuthPluginV1 {
    &TABLE
}
