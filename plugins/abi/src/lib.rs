//! The C ABI between container-gateway and its authentication plugins.
//!
//! A plugin is a shared object exporting one symbol, [`ENTRY_SYMBOL`]
//! (`container_gateway_auth_plugin_v1`), a function returning a pointer to a
//! static [`CgAuthPluginV1`] table. Only `#[repr(C)]` structs, raw pointers,
//! `extern "C"` function pointers and integers cross the boundary, so a plugin
//! may be written in any language and built by any compiler; `README.md`
//! describes the same ABI in C.
//!
//! Rust plugins do not need to touch the raw types: implement [`AuthPlugin`]
//! and call [`export_auth_plugin!`], which emits the entry symbol and keeps
//! every panic on the plugin's side of the boundary.
//!
//! ```no_run
//! use container_gateway_plugin_abi::{AuthPlugin, Decision, Identity, Logger, Request};
//!
//! struct Everyone;
//!
//! impl AuthPlugin for Everyone {
//!     const NAME: &'static std::ffi::CStr = c"everyone";
//!     fn init(_config_json: &str, _log: Logger) -> Result<Self, String> {
//!         Ok(Everyone)
//!     }
//!     fn authenticate(&self, _request: &Request<'_>) -> Decision {
//!         Decision::Allow(Identity::User("everyone".into()))
//!     }
//! }
//!
//! container_gateway_plugin_abi::export_auth_plugin!(Everyone);
//! ```
//!
//! # Ownership, in one place
//!
//! | data | allocated by | valid until | released by |
//! |---|---|---|---|
//! | [`CgHost`] and its `context` | host | the end of the process | nobody |
//! | `config_json` passed to `init` or `reload` | host | the call returns | host |
//! | [`CgAuthRequest`] and everything it points to | host | `authenticate` returns | host |
//! | `*out` / `*out_error` buffers ([`CgBuf`]) | plugin | the host hands it to `free_buf` | plugin's `free_buf`, called by the host exactly once |
//! | the instance returned by `init` | plugin | `destroy` | plugin's `destroy`, called by the host at most once |
//! | [`CgAuthPluginV1`] and its `name` | plugin (static) | the end of the process | nobody: the host never unloads a plugin |

#![deny(unsafe_op_in_unsafe_fn)]

use core::ffi::{CStr, c_char, c_void};

mod export;
mod json;
mod plugin;

pub use plugin::{AuthPlugin, Decision, Identity, Level, Logger, Request};

#[doc(hidden)]
pub mod __export {
    pub use crate::export::vtable;
}

/// The major version of this ABI. It is also part of [`ENTRY_SYMBOL`]: a
/// plugin built for another major version is not even found.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin exports, of type [`EntryFn`].
pub const ENTRY_SYMBOL: &CStr = c"container_gateway_auth_plugin_v1";

/// The type of [`ENTRY_SYMBOL`]. It returns a pointer to a static table (or
/// null if the plugin cannot provide one); calling it has no other effect.
pub type EntryFn = unsafe extern "C" fn() -> *const CgAuthPluginV1;

/// Status codes returned by `init`, `authenticate` and `reload`. Zero is deliberately not
/// a status, so a zeroed or forgotten return value reads as garbage, never as
/// a decision.
pub mod status {
    /// `authenticate`: the request is from the identity in `*out` (a JSON
    /// document of kind `host`, `user` or `anonymous`). The chain stops.
    pub const ALLOW: u32 = 1;
    /// `authenticate`: a bearer token for the gateway to resolve; `*out` is
    /// `{"kind":"token","sha256":"<64 lowercase hex>"}`. The chain stops.
    pub const TOKEN: u32 = 2;
    /// `authenticate`: credentials were presented and are not acceptable
    /// (HTTP 401); `*out` may hold a UTF-8 reason for the logs. The chain stops.
    pub const DENY: u32 = 3;
    /// `authenticate`: not this plugin's business; the next one is asked.
    /// `*out` should stay empty.
    pub const ABSTAIN: u32 = 4;
    /// `init`, `authenticate` or `reload` failed; the out buffer may hold a
    /// UTF-8 message. A failed request fails closed (HTTP 503); a failed
    /// reload leaves the instance as it was.
    pub const ERROR: u32 = 5;
    /// Like [`ERROR`], reporting that the plugin caught a panic (or crash of
    /// its own runtime) instead of letting it cross the boundary.
    pub const PANIC: u32 = 6;
    /// `init` succeeded and `*out_instance` is set; or `reload` succeeded
    /// and the new state is in service.
    pub const OK: u32 = 7;

    /// A readable name for logs.
    pub fn name(status: u32) -> &'static str {
        match status {
            ALLOW => "ALLOW",
            TOKEN => "TOKEN",
            DENY => "DENY",
            ABSTAIN => "ABSTAIN",
            ERROR => "ERROR",
            PANIC => "PANIC",
            OK => "OK",
            _ => "unknown",
        }
    }
}

/// Log levels for [`CgHost::log`], most severe first (the numbering of
/// `tracing::Level` and syslog-like loggers).
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// A borrowed byte string. `ptr == NULL` means "absent", which is different
/// from present and empty (`ptr != NULL, len == 0`). Text is UTF-8, without a
/// terminating NUL. Valid only for the duration of the call it is passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl CgStr {
    pub const ABSENT: CgStr = CgStr {
        ptr: core::ptr::null(),
        len: 0,
    };

    /// Borrow a Rust slice. The result must not outlive `bytes`.
    pub const fn from_bytes(bytes: &[u8]) -> CgStr {
        CgStr {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// `None` becomes [`CgStr::ABSENT`].
    pub fn from_opt(bytes: Option<&[u8]>) -> CgStr {
        bytes.map_or(CgStr::ABSENT, CgStr::from_bytes)
    }

    /// # Safety
    /// `ptr` must be null or point to `len` readable bytes that stay valid and
    /// unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else if self.len == 0 {
            Some(&[])
        } else {
            // SAFETY: non-null, and the caller guarantees `len` readable bytes for 'a.
            Some(unsafe { core::slice::from_raw_parts(self.ptr, self.len) })
        }
    }
}

/// A buffer the plugin allocated and hands to the host. The host reads
/// `len` bytes at `ptr`, never writes, and passes the struct back unchanged to
/// the plugin's `free_buf` exactly once (also for a null `ptr`, which
/// `free_buf` must accept). `cap` is the plugin's own: the host never
/// interprets it (Rust plugins keep the allocation capacity there).
#[repr(C)]
#[derive(Debug)]
pub struct CgBuf {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl CgBuf {
    pub const EMPTY: CgBuf = CgBuf {
        ptr: core::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
}

/// Services the host offers a plugin. The struct, its `context` and its
/// functions stay valid for the life of the process, so a plugin may keep the
/// pointer it got in `init`. Both functions are thread-safe and may be called
/// from inside or outside `init`/`authenticate`.
///
/// Plugins log through `log` because a Rust plugin links its own copy of
/// `tracing` (and of every other global), invisible to the host's subscriber.
#[repr(C)]
#[derive(Debug)]
pub struct CgHost {
    /// `size_of::<CgHost>()` as the host knows it: fields past it are absent.
    pub struct_size: u32,
    /// Opaque, for the host: pass it back to the functions below.
    pub context: *const c_void,
    /// Log `msg` (UTF-8, borrowed for the call) at `level` (see [`level`]).
    pub log: Option<unsafe extern "C" fn(context: *const c_void, level: u32, msg: CgStr)>,
    /// Non-zero if a message at `level` would be recorded: check it before
    /// formatting an expensive message.
    pub log_enabled: Option<unsafe extern "C" fn(context: *const c_void, level: u32) -> u32>,
}

/// One request, as the host saw it. Everything is borrowed for the duration of
/// `authenticate`. Fields may be appended in later minor versions: a plugin
/// reads a field only if it lies entirely within `struct_size`.
#[repr(C)]
#[derive(Debug)]
pub struct CgAuthRequest {
    /// `size_of::<CgAuthRequest>()` as the host knows it.
    pub struct_size: u32,
    /// The TLS peer's certificates as presented, DER, leaf first: an array of
    /// `tls_chain_len` [`CgStr`] (`NULL` when empty). Possession of the leaf's
    /// private key was proven in the handshake; the chain is NOT verified.
    pub tls_chain: *const CgStr,
    pub tls_chain_len: usize,
    /// A certificate (DER) forwarded by a trusted frontend, or absent.
    pub forwarded_cert: CgStr,
    /// The raw `Authorization` header value, or absent.
    pub authorization: CgStr,
    /// HTTP method, e.g. `GET`.
    pub method: CgStr,
    /// Request path, without the query.
    pub path: CgStr,
    /// The TCP peer as text (`192.0.2.1:55012`, `[2001:db8::1]:55012`), or absent.
    pub peer: CgStr,
}

/// The table behind [`ENTRY_SYMBOL`], version 1. A plugin sets `abi_version`
/// to [`ABI_VERSION`] and `struct_size` to the size it was built with; the
/// host refuses another version or a size below [`V1_BASE_SIZE`], reads an
/// appended field only when it lies within `struct_size` (a plugin built
/// before it was appended gets its zero value), and ignores fields past the
/// size it knows (so the table can grow by appending).
///
/// Threading: `authenticate` may be called concurrently, from many threads, on
/// one instance, also while `reload` runs on it (see
/// [`CgAuthPluginV1::reload`]). `init` and `destroy` are never concurrent with
/// anything on the same instance.
#[repr(C)]
#[derive(Debug)]
pub struct CgAuthPluginV1 {
    pub abi_version: u32,
    pub struct_size: u32,
    /// NUL-terminated UTF-8, static. Informational: the host names a plugin
    /// after its configuration entry.
    pub name: *const c_char,
    /// Create an instance from the configuration (a JSON object, borrowed for
    /// the call). On success return [`status::OK`] and store the instance in
    /// `*out_instance` (may be null for a stateless plugin); on failure return
    /// [`status::ERROR`] or [`status::PANIC`] with a UTF-8 message in
    /// `*out_error`. The host initialises both outputs to null before the call
    /// and keeps `host` valid for the life of the process.
    pub init: Option<
        unsafe extern "C" fn(
            host: *const CgHost,
            config_json: CgStr,
            out_instance: *mut *mut c_void,
            out_error: *mut CgBuf,
        ) -> u32,
    >,
    /// Decide one request; return a [`status`] code and fill `*out` as that
    /// code describes. The host initialises `*out` to [`CgBuf::EMPTY`] and
    /// frees whatever it holds afterwards, whatever the status.
    pub authenticate: Option<
        unsafe extern "C" fn(
            instance: *const c_void,
            request: *const CgAuthRequest,
            out: *mut CgBuf,
        ) -> u32,
    >,
    /// Release a buffer this plugin produced. Must accept a null `ptr`.
    pub free_buf: Option<unsafe extern "C" fn(buf: CgBuf)>,
    /// Release an instance once the host no longer needs it: after every
    /// `authenticate` call on it has returned. Not called at process exit, and
    /// never followed by unloading the library.
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Appended in 1.1: [`flags`] bits. Unknown bits are ignored.
    pub flags: u64,
    /// Appended in 1.2, optional: re-read what the instance loaded from
    /// outside its configuration (CA bundles, key files, ...), on SIGHUP.
    /// Null, or a table too small to hold it, means the plugin does not
    /// reload and keeps what `init` loaded.
    ///
    /// `config_json` is the document `init` got, byte for byte, borrowed for
    /// the call. Return [`status::OK`] once the new state is in service, or
    /// [`status::ERROR`] / [`status::PANIC`] with a UTF-8 message in
    /// `*out_error`, having kept the previous state whole: a failed reload
    /// must leave the instance serving exactly as before. The host
    /// initialises `*out_error` to [`CgBuf::EMPTY`] and frees whatever it
    /// holds afterwards, whatever the status.
    ///
    /// Threading: `authenticate` calls on the same instance may be in flight
    /// on other threads while `reload` runs, and new ones may start. The
    /// plugin switches from the old to the new state atomically (each
    /// `authenticate` sees one or the other, whole, and every call that
    /// starts after `reload` returned sees the new one) and, if it declares
    /// [`flags::NON_BLOCKING`], does its I/O without holding anything
    /// `authenticate` waits for. The host never runs two `reload` calls on one
    /// instance at once, nor `reload` concurrently with `init` or `destroy` of
    /// it. It calls `reload` on a thread that serves no requests, so the call
    /// may block on files; the gateway does not time it out, and a further
    /// reload waits for it.
    pub reload: Option<
        unsafe extern "C" fn(
            instance: *const c_void,
            config_json: CgStr,
            out_error: *mut CgBuf,
        ) -> u32,
    >,
}

/// The size of the first version-1 table, before any appended field: the
/// smallest `struct_size` a host accepts.
pub const V1_BASE_SIZE: usize = core::mem::offset_of!(CgAuthPluginV1, flags);

/// The size of a 1.1 table (with `flags`, before `reload` was appended).
pub const V1_1_SIZE: usize = core::mem::offset_of!(CgAuthPluginV1, reload);

/// Bits of [`CgAuthPluginV1::flags`].
pub mod flags {
    /// `authenticate` never waits: no I/O, no sleeping, no lock held for
    /// long by another thread; only bounded computation on what the request
    /// carries and what `init` prepared. The host may then call it on the
    /// thread serving the request instead of handing it to a pool for calls
    /// that may block, which costs two thread switches per request, and
    /// cannot enforce `plugins.call_timeout_ms` on it.
    pub const NON_BLOCKING: u64 = 1 << 0;
}

// SAFETY: the table is immutable after construction, `name` points to static
// read-only data, and the functions are thread-safe by the contract above, so
// sharing a `&CgAuthPluginV1` between threads cannot cause a data race.
unsafe impl Sync for CgAuthPluginV1 {}
// SAFETY: `context` is immutable and valid for the process; the host promises
// its callbacks are thread-safe.
unsafe impl Sync for CgHost {}
// SAFETY: as for `Sync` above; nothing in a `CgHost` is tied to a thread.
unsafe impl Send for CgHost {}

/// Whether the field at `offset` with `size` bytes lies within `struct_size`.
#[inline]
pub const fn has_field(struct_size: u32, offset: usize, size: usize) -> bool {
    offset + size <= struct_size as usize
}

// The layouts the README documents in C, for the 64-bit targets the gateway
// ships on. A change here is an ABI break.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<CgStr>() == 16);
    assert!(size_of::<CgBuf>() == 24);
    assert!(size_of::<CgHost>() == 32);
    assert!(offset_of!(CgHost, log) == 16);
    assert!(offset_of!(CgHost, log_enabled) == 24);
    assert!(size_of::<CgAuthRequest>() == 104);
    assert!(offset_of!(CgAuthRequest, tls_chain) == 8);
    assert!(offset_of!(CgAuthRequest, tls_chain_len) == 16);
    assert!(offset_of!(CgAuthRequest, forwarded_cert) == 24);
    assert!(offset_of!(CgAuthRequest, authorization) == 40);
    assert!(offset_of!(CgAuthRequest, method) == 56);
    assert!(offset_of!(CgAuthRequest, path) == 72);
    assert!(offset_of!(CgAuthRequest, peer) == 88);
    assert!(size_of::<CgAuthPluginV1>() == 64);
    assert!(V1_BASE_SIZE == 48);
    assert!(V1_1_SIZE == 56);
    assert!(offset_of!(CgAuthPluginV1, flags) == 48);
    assert!(offset_of!(CgAuthPluginV1, reload) == 56);
    assert!(offset_of!(CgAuthPluginV1, name) == 8);
    assert!(offset_of!(CgAuthPluginV1, init) == 16);
    assert!(offset_of!(CgAuthPluginV1, authenticate) == 24);
    assert!(offset_of!(CgAuthPluginV1, free_buf) == 32);
    assert!(offset_of!(CgAuthPluginV1, destroy) == 40);
};
