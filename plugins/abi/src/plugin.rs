//! The safe Rust side of the ABI: what a plugin author implements and sees.

use core::ffi::{CStr, c_void};
use core::fmt;
use core::mem::{offset_of, size_of};

use crate::{CgAuthRequest, CgHost, CgStr, has_field, level};

/// An authentication backend, exported with [`crate::export_auth_plugin!`].
///
/// One value is created per configured instance and shared by every request:
/// `authenticate` is called concurrently from many threads. A panic in either
/// method is caught at the boundary and reported to the host as
/// [`crate::status::PANIC`]; the instance stays in service for later requests.
pub trait AuthPlugin: Sized + Send + Sync + 'static {
    /// The plugin's name, for the host's diagnostics.
    const NAME: &'static CStr;

    /// Build an instance from its configuration, a JSON object (the host puts
    /// the admin's `[plugins.settings.<name>]` table there, plus `client_ca`).
    /// An `Err` refuses to start the gateway, with the message shown to the
    /// admin.
    fn init(config_json: &str, log: Logger) -> Result<Self, String>;

    /// Whether `authenticate` never waits (see [`crate::flags::NON_BLOCKING`]).
    /// Leave it `false` if a call can touch the network, the disk or a lock
    /// another thread may hold for long: a wrong `true` stalls every request
    /// the gateway's thread is serving.
    const NON_BLOCKING: bool = false;

    /// Decide one request.
    fn authenticate(&self, request: &Request<'_>) -> Decision;

    /// Whether the plugin implements [`AuthPlugin::reload`]. Only then does
    /// its table carry a `reload` function; otherwise the host reports that
    /// the plugin does not reload, and it keeps what `init` loaded.
    const RELOADS: bool = false;

    /// Re-read what `init` loaded from outside the configuration (files), on
    /// the gateway's SIGHUP; `config_json` is the same document `init` got.
    /// Called through `&self` while `authenticate` runs on other threads:
    /// switch to the new state atomically, and on `Err` keep the old one
    /// whole (see [`crate::CgAuthPluginV1::reload`] for the whole contract).
    /// Never called concurrently with itself. Only used when
    /// [`AuthPlugin::RELOADS`] is `true`.
    fn reload(&self, config_json: &str) -> Result<(), String> {
        let _ = config_json;
        Err("RELOADS is set but reload() is not implemented".to_owned())
    }
}

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A registered host, by its consumer UUID.
    Host(String),
    /// A user, by login.
    User(String),
    /// Explicitly nobody (stops the chain, unlike [`Decision::Abstain`]).
    Anonymous,
}

/// A plugin's answer for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request is from this identity.
    Allow(Identity),
    /// A bearer token for the gateway to resolve: lowercase hex SHA-256 of
    /// the token (64 characters).
    Token(String),
    /// Credentials were presented and are not acceptable (401). The reason is
    /// for the logs; it never reaches the client.
    Deny(String),
    /// Not this plugin's business.
    Abstain,
    /// The plugin cannot decide (a dependency is down, ...): the request fails
    /// closed with 503.
    Error(String),
}

/// A borrowed view of one request. Text fields the host did not send, or sent
/// as invalid UTF-8 (which the gateway never does), read as `None`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    tls_chain: &'a [CgStr],
    forwarded_cert: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    path: Option<&'a [u8]>,
    peer: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// Build a request from Rust data, e.g. to call a plugin's logic directly
    /// in tests or benchmarks. `tls_chain` is borrowed as [`CgStr`]s, see
    /// [`CgStr::from_bytes`].
    pub fn new(
        tls_chain: &'a [CgStr],
        forwarded_cert: Option<&'a [u8]>,
        authorization: Option<&'a str>,
        method: &'a str,
        path: &'a str,
        peer: Option<&'a str>,
    ) -> Self {
        Request {
            tls_chain,
            forwarded_cert,
            authorization: authorization.map(str::as_bytes),
            method: Some(method.as_bytes()),
            path: Some(path.as_bytes()),
            peer: peer.map(str::as_bytes),
        }
    }

    /// # Safety
    /// `raw` must be null or point to a [`CgAuthRequest`] whose first
    /// `struct_size` bytes are initialised and which, with everything it
    /// points to, stays valid and unchanged for `'a`.
    pub unsafe fn from_raw(raw: *const CgAuthRequest) -> Option<Self> {
        // SAFETY: the caller guarantees `raw` is null or valid for 'a.
        let req = unsafe { raw.as_ref() }?;
        let size = req.struct_size;
        let field = |offset: usize, value: CgStr| {
            if has_field(size, offset, size_of::<CgStr>()) {
                // SAFETY: the field is within the host's struct, and the host
                // guarantees what it points to is valid for 'a.
                unsafe { value.as_bytes() }
            } else {
                None
            }
        };
        let chain_known = has_field(
            size,
            offset_of!(CgAuthRequest, tls_chain_len),
            size_of::<usize>(),
        );
        let tls_chain = if chain_known && !req.tls_chain.is_null() && req.tls_chain_len > 0 {
            // SAFETY: non-null, and the host guarantees `tls_chain_len`
            // initialised entries valid for 'a.
            unsafe { core::slice::from_raw_parts(req.tls_chain, req.tls_chain_len) }
        } else {
            &[]
        };
        Some(Request {
            tls_chain,
            forwarded_cert: field(
                offset_of!(CgAuthRequest, forwarded_cert),
                req.forwarded_cert,
            ),
            authorization: field(offset_of!(CgAuthRequest, authorization), req.authorization),
            method: field(offset_of!(CgAuthRequest, method), req.method),
            path: field(offset_of!(CgAuthRequest, path), req.path),
            peer: field(offset_of!(CgAuthRequest, peer), req.peer),
        })
    }

    /// The TLS peer's certificates (DER), leaf first. Possession of the leaf's
    /// key was proven in the handshake; the chain is not verified.
    pub fn tls_chain(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + Clone + 'a {
        self.tls_chain.iter().map(|s| {
            // SAFETY: the entries were checked valid for 'a when `self` was built
            // (`from_raw`'s contract, or borrowed Rust slices in `new`).
            unsafe { s.as_bytes() }.unwrap_or(&[])
        })
    }

    /// The TLS leaf certificate (DER), if the client sent one.
    pub fn tls_leaf(&self) -> Option<&'a [u8]> {
        self.tls_chain().next()
    }

    /// A certificate (DER) a trusted frontend forwarded.
    pub fn forwarded_cert(&self) -> Option<&'a [u8]> {
        self.forwarded_cert
    }

    /// The raw `Authorization` header value.
    pub fn authorization(&self) -> Option<&'a str> {
        text(self.authorization)
    }

    pub fn method(&self) -> Option<&'a str> {
        text(self.method)
    }

    pub fn path(&self) -> Option<&'a str> {
        text(self.path)
    }

    /// The TCP peer as `ip:port` text.
    pub fn peer(&self) -> Option<&'a str> {
        text(self.peer)
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("tls_chain_len", &self.tls_chain.len())
            .field("forwarded_cert", &self.forwarded_cert.map(<[u8]>::len))
            .field("authorization", &self.authorization.map(|_| "<redacted>"))
            .field("method", &self.method())
            .field("path", &self.path())
            .field("peer", &self.peer())
            .finish()
    }
}

fn text(bytes: Option<&[u8]>) -> Option<&str> {
    bytes.and_then(|b| core::str::from_utf8(b).ok())
}

/// Log levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// The [`crate::level`] code.
    pub const fn code(self) -> u32 {
        match self {
            Level::Error => level::ERROR,
            Level::Warn => level::WARN,
            Level::Info => level::INFO,
            Level::Debug => level::DEBUG,
            Level::Trace => level::TRACE,
        }
    }
}

/// Logs through the host. Cheap to clone, usable from any thread, for the life
/// of the process. A logger built without a host ([`Logger::disabled`])
/// discards everything.
#[derive(Clone, Copy)]
pub struct Logger {
    context: *const c_void,
    log: Option<unsafe extern "C" fn(*const c_void, u32, CgStr)>,
    enabled: Option<unsafe extern "C" fn(*const c_void, u32) -> u32>,
}

// SAFETY: the host guarantees its callbacks are thread-safe and that `context`
// is valid for the life of the process (see `CgHost`).
unsafe impl Send for Logger {}
// SAFETY: as above; a `Logger` is immutable.
unsafe impl Sync for Logger {}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("connected", &self.log.is_some())
            .finish()
    }
}

impl Logger {
    /// A logger that discards everything.
    pub const fn disabled() -> Self {
        Logger {
            context: core::ptr::null(),
            log: None,
            enabled: None,
        }
    }

    /// # Safety
    /// `host` must be null or point to a [`CgHost`] that satisfies its
    /// documented contract (valid and thread-safe for the life of the process).
    pub unsafe fn from_host(host: *const CgHost) -> Self {
        // SAFETY: the caller guarantees `host` is null or valid.
        let Some(h) = (unsafe { host.as_ref() }) else {
            return Logger::disabled();
        };
        let fn_size = size_of::<Option<unsafe extern "C" fn()>>();
        let log = if has_field(h.struct_size, offset_of!(CgHost, log), fn_size) {
            h.log
        } else {
            None
        };
        let enabled = if has_field(h.struct_size, offset_of!(CgHost, log_enabled), fn_size) {
            h.log_enabled
        } else {
            None
        };
        Logger {
            context: h.context,
            log,
            enabled,
        }
    }

    /// Whether a message at `level` would be recorded.
    pub fn enabled(&self, level: Level) -> bool {
        match (self.log, self.enabled) {
            (None, _) => false,
            (Some(_), None) => true,
            // SAFETY: the host's callback with the host's context, per `CgHost`.
            (Some(_), Some(enabled)) => unsafe { enabled(self.context, level.code()) != 0 },
        }
    }

    pub fn log(&self, level: Level, message: &str) {
        if let Some(log) = self.log {
            // SAFETY: the host's callback with the host's context; `message`
            // outlives the call.
            unsafe {
                log(
                    self.context,
                    level.code(),
                    CgStr::from_bytes(message.as_bytes()),
                )
            }
        }
    }

    /// Format and log only if the level is enabled: `log.log_fmt(Level::Debug, format_args!(...))`.
    pub fn log_fmt(&self, level: Level, args: fmt::Arguments<'_>) {
        if !self.enabled(level) {
            return;
        }
        match args.as_str() {
            Some(s) => self.log(level, s),
            None => self.log(level, &args.to_string()),
        }
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn debug(&self, message: &str) {
        if self.enabled(Level::Debug) {
            self.log(Level::Debug, message);
        }
    }

    pub fn trace(&self, message: &str) {
        if self.enabled(Level::Trace) {
            self.log(Level::Trace, message);
        }
    }
}
