//! Loading authentication backends from shared objects (contract §7).
//!
//! Each name in `plugins.chain` is a file in `plugins.dir` exporting the C ABI
//! of the `container-gateway-plugin-abi` crate. Loading checks the file's
//! permissions, binds every symbol up front, checks the ABI version and table
//! size, then calls the plugin's `init`. A loaded library is never unloaded:
//! Rust thread-local destructors pin it, and unloading buys nothing in a
//! process that must restart to change plugins anyway.
//!
//! At run time the plugin is just an [`Authenticator`]: requests are marshalled
//! into the C structs on the stack, and anything odd the plugin hands back
//! (a panic, a status or document it should not produce, invalid UTF-8) is a
//! [`BackendError`], so the request fails closed and the process lives.
//!
//! On SIGHUP a plugin whose table has a `reload` function gets it called with
//! the configuration `init` got, while requests keep going through
//! `authenticate` (the ABI's threading contract); reloads of one instance are
//! serialised here.

use std::borrow::Cow;
use std::ffi::{CStr, c_void};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use gateway_plugin_abi::{
    ABI_VERSION, CgAuthPluginV1, CgAuthRequest, CgBuf, CgHost, CgStr, ENTRY_SYMBOL, EntryFn,
    V1_BASE_SIZE, flags, level, status,
};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use serde::Deserialize;
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Value};
use tracing::level_filters::LevelFilter;
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

use super::{AuthDecision, AuthFacts, Authenticator, BackendError, Identity, ReloadOutcome};
use crate::config::{PluginsConfig, Problem, Problems};

/// Longest output accepted from a plugin; identity documents are tiny, and a
/// reason longer than this is truncated for the logs.
const MAX_OUTPUT: usize = 64 * 1024;
/// Longest identifier (host UUID, login) accepted in an identity document.
const MAX_ID_LEN: usize = 1024;
/// Longest log line accepted from a plugin.
const MAX_LOG_LINE: usize = 8 * 1024;
/// Certificates per request marshalled without a heap allocation.
const INLINE_CHAIN: usize = 4;

unsafe extern "C" {
    /// POSIX `geteuid(2)`: cannot fail and touches no memory.
    safe fn geteuid() -> u32;
}

/// Load, check and initialise every plugin of `cfg.chain`, in order.
///
/// `client_ca` (`server.client_ca`) is passed to every plugin as the
/// `client_ca` key of its configuration, unless `[plugins.settings.<name>]`
/// sets it. Every problem is reported, not just the first.
pub fn load_chain(
    cfg: &PluginsConfig,
    client_ca: &Path,
) -> Result<Vec<Arc<dyn Authenticator>>, Problems> {
    let mut chain: Vec<Arc<dyn Authenticator>> = Vec::with_capacity(cfg.chain.len());
    let mut problems = Vec::new();
    for name in &cfg.chain {
        match load_one(cfg, name, client_ca) {
            Ok(plugin) => chain.push(Arc::new(plugin)),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(chain)
    } else {
        Err(Problems(problems))
    }
}

fn chain_problem(name: &str, path: &Path, message: impl std::fmt::Display) -> Problem {
    Problem {
        key: "plugins.chain".to_owned(),
        message: format!("plugin {name} ({}): {message}", path.display()),
    }
}

fn load_one(cfg: &PluginsConfig, name: &str, client_ca: &Path) -> Result<PluginBackend, Problem> {
    let path = cfg.library_path(name);
    let config_json = plugin_config(cfg, name, client_ca).map_err(|message| Problem {
        key: format!("plugins.settings.{name}"),
        message: format!("plugin {name} ({}): {message}", path.display()),
    })?;
    check_permissions(&cfg.dir, &path, cfg.require_root_owner)
        .map_err(|m| chain_problem(name, &path, m))?;

    // SAFETY: loading runs the library's initialisers. The file passed the
    // ownership and permission checks above, which is the trust decision the
    // admin made by listing it in plugins.chain; RTLD_NOW makes missing
    // symbols fail here rather than on a request.
    let library = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| chain_problem(name, &path, format!("cannot load: {e}")))?;
    // Never unloaded, whatever happens next (see the module docs).
    let library: &'static Library = Box::leak(Box::new(library));

    let symbol = ENTRY_SYMBOL.to_string_lossy();
    // SAFETY: the symbol's type is fixed by the ABI for this name.
    let entry: EntryFn = match unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.to_bytes_with_nul()) } {
        Ok(f) => *f,
        Err(_) => {
            return Err(chain_problem(
                name,
                &path,
                format!(
                    "does not export {symbol}: not a container-gateway auth plugin, or built for another ABI major version"
                ),
            ));
        }
    };
    // SAFETY: calling the entry point has no precondition; it returns a
    // pointer to a static table or null.
    let table = unsafe { entry() };
    if table.is_null() {
        return Err(chain_problem(
            name,
            &path,
            format!("{symbol}() returned no table"),
        ));
    }
    // SAFETY: every version of the table starts with these two u32 fields, so
    // reading them is in bounds whatever the plugin's version.
    let (abi_version, struct_size) = unsafe {
        (
            std::ptr::addr_of!((*table).abi_version).read(),
            std::ptr::addr_of!((*table).struct_size).read(),
        )
    };
    if abi_version != ABI_VERSION {
        return Err(chain_problem(
            name,
            &path,
            format!("ABI version mismatch: expected {ABI_VERSION}, found {abi_version}"),
        ));
    }
    if (struct_size as usize) < V1_BASE_SIZE {
        return Err(chain_problem(
            name,
            &path,
            format!(
                "plugin table too small: expected at least {V1_BASE_SIZE} bytes, found {struct_size}"
            ),
        ));
    }
    let table = read_table(table, struct_size);
    let (Some(init), Some(authenticate), Some(free_buf), Some(destroy)) = (
        table.init,
        table.authenticate,
        table.free_buf,
        table.destroy,
    ) else {
        return Err(chain_problem(
            name,
            &path,
            "plugin table has a null function pointer",
        ));
    };

    let host = host_for(name);
    let mut instance: *mut c_void = std::ptr::null_mut();
    let mut error = CgBuf::EMPTY;
    // SAFETY: `host` lives for the process, the configuration outlives the
    // call, and both out-pointers are valid and initialised as the ABI requires.
    let code = unsafe {
        init(
            host,
            CgStr::from_bytes(config_json.as_bytes()),
            &mut instance,
            &mut error,
        )
    };
    let error = OwnedBuf {
        buf: error,
        free: free_buf,
    };
    match code {
        status::OK => {
            let declared = if table.name.is_null() {
                Cow::Borrowed("?")
            } else {
                // SAFETY: the ABI makes a non-null `name` a static NUL-terminated string.
                unsafe { CStr::from_ptr(table.name) }.to_string_lossy()
            };
            let reloads = table.reload.is_some();
            tracing::info!(plugin = name, declared = %declared, path = %path.display(), reloads, "auth plugin loaded");
            Ok(PluginBackend {
                name: name.to_owned(),
                non_blocking: table.flags & flags::NON_BLOCKING != 0,
                instance,
                authenticate,
                free_buf,
                destroy,
                reload: table.reload,
                config_json,
                reloading: Mutex::new(()),
            })
        }
        status::ERROR | status::PANIC => {
            let message = error.lossy();
            let what = if code == status::PANIC {
                "init panicked"
            } else {
                "init failed"
            };
            Err(Problem {
                key: format!("plugins.settings.{name}"),
                message: format!("plugin {name} ({}): {what}: {message}", path.display()),
            })
        }
        other => Err(chain_problem(
            name,
            &path,
            format!("init returned unexpected status {other}"),
        )),
    }
}

/// The plugin's configuration: its settings table, plus `client_ca`.
fn plugin_config(cfg: &PluginsConfig, name: &str, client_ca: &Path) -> Result<String, String> {
    let mut object = match cfg.settings.get(name) {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(map)) => map.clone(),
        Some(_) => return Err("settings must be a table".to_owned()),
    };
    if !object.contains_key("client_ca") {
        let ca = client_ca
            .to_str()
            .ok_or("server.client_ca is not a UTF-8 path")?;
        object.insert(
            "client_ca".to_owned(),
            serde_json::Value::String(ca.to_owned()),
        );
    }
    serde_json::to_string(&object).map_err(|e| format!("cannot encode settings: {e}"))
}

/// Loading runs the file's code with the gateway's privileges: refuse a file,
/// or a directory leading to it, that someone else could have written.
fn check_permissions(dir: &Path, path: &Path, require_root_owner: bool) -> Result<(), String> {
    let euid = geteuid();
    let check = |p: &Path, what: &str| -> Result<std::fs::Metadata, String> {
        let meta =
            std::fs::metadata(p).map_err(|e| format!("cannot stat {what} {}: {e}", p.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "{what} {} is group- or world-writable (mode {:04o}); refusing to load code from it",
                p.display(),
                mode & 0o7777
            ));
        }
        if require_root_owner && meta.uid() != 0 && meta.uid() != euid {
            return Err(format!(
                "{what} {} is owned by uid {}, not root or the gateway's user (uid {euid})",
                p.display(),
                meta.uid()
            ));
        }
        Ok(meta)
    };
    check(dir, "plugin directory")?;
    let meta = check(path, "file")?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    // A symlink can lead elsewhere: the directory really holding the file matters too.
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    if let Some(parent) = real.parent() {
        check(parent, "directory")?;
    }
    Ok(())
}

/// A peer address as text, on the stack. IPv4 (the usual case, and the one
/// trusted frontends use) is written by hand: `std`'s formatting machinery
/// costs more than the rest of a plugin call.
struct PeerText {
    buf: [u8; 64],
    len: usize,
}

impl Default for PeerText {
    fn default() -> Self {
        PeerText {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl PeerText {
    fn push(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn push_decimal(&mut self, mut value: u32) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    fn format(&mut self, peer: std::net::SocketAddr) -> &[u8] {
        self.len = 0;
        match peer {
            std::net::SocketAddr::V4(v4) => {
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b".");
                    }
                    self.push_decimal(u32::from(octet));
                }
                self.push(b":");
                self.push_decimal(u32::from(v4.port()));
            }
            std::net::SocketAddr::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
                // 64 bytes hold the longest form, "[ipv6%scope]:port" (58).
                self.len = match write!(cursor, "{v6}") {
                    Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
                    Err(_) => 0,
                };
            }
        }
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// A plugin's output buffer, returned to the plugin on drop.
struct OwnedBuf {
    buf: CgBuf,
    free: unsafe extern "C" fn(CgBuf),
}

impl OwnedBuf {
    /// The bytes, or why they cannot be read.
    fn bytes(&self) -> Result<&[u8], &'static str> {
        match (self.buf.ptr.is_null(), self.buf.len) {
            (true, 0) => Ok(&[]),
            (true, _) => Err("null buffer with a non-zero length"),
            (false, len) if len > MAX_OUTPUT => Err("output larger than 64 KiB"),
            // SAFETY: the plugin hands over `len` readable bytes at `ptr`,
            // valid until we pass the buffer to its `free_buf` in `drop`.
            (false, len) => Ok(unsafe { std::slice::from_raw_parts(self.buf.ptr, len) }),
        }
    }

    fn lossy(&self) -> String {
        lossy(self.bytes())
    }
}

/// A plugin's message for the logs, whatever its bytes.
fn lossy(bytes: Result<&[u8], &str>) -> String {
    match bytes {
        Ok([]) => "(no message)".to_owned(),
        Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Err(e) => format!("(unreadable message: {e})"),
    }
}

impl Drop for OwnedBuf {
    fn drop(&mut self) {
        if !self.buf.ptr.is_null() {
            let buf = CgBuf {
                ptr: self.buf.ptr,
                len: self.buf.len,
                cap: self.buf.cap,
            };
            // SAFETY: the buffer came from this plugin and is returned once.
            unsafe { (self.free)(buf) };
        }
    }
}

/// The plugin's table as this host knows it: the bytes the plugin declares,
/// and zero for fields appended after it was built (every field's zero is
/// valid: null pointers, `None` functions, no flags).
fn read_table(table: *const CgAuthPluginV1, struct_size: u32) -> CgAuthPluginV1 {
    let len = (struct_size as usize).min(std::mem::size_of::<CgAuthPluginV1>());
    let mut copy = std::mem::MaybeUninit::<CgAuthPluginV1>::zeroed();
    // SAFETY: the plugin declares `struct_size` readable bytes at `table`,
    // static for the life of the never-unloaded library, and `len` bytes fit
    // in `copy`; the regions cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(table.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), len)
    };
    // SAFETY: every byte is either the plugin's (a v1 table's fields at their
    // ABI offsets) or zero, which is a valid value for each field.
    unsafe { copy.assume_init() }
}

/// The plugin's `reload`, see [`CgAuthPluginV1::reload`].
type ReloadFn = unsafe extern "C" fn(*const c_void, CgStr, *mut CgBuf) -> u32;

/// One initialised plugin instance.
struct PluginBackend {
    name: String,
    /// The plugin declared `flags::NON_BLOCKING`.
    non_blocking: bool,
    instance: *mut c_void,
    authenticate: unsafe extern "C" fn(*const c_void, *const CgAuthRequest, *mut CgBuf) -> u32,
    free_buf: unsafe extern "C" fn(CgBuf),
    destroy: unsafe extern "C" fn(*mut c_void),
    /// `None`: the table has no `reload` (null, or built before it existed).
    reload: Option<ReloadFn>,
    /// What `init` got; `reload` gets the same bytes.
    config_json: String,
    /// Held for the duration of a `reload` call: the ABI promises a plugin
    /// never sees two at once on one instance.
    reloading: Mutex<()>,
}

// SAFETY: the ABI requires `authenticate` to be callable concurrently from any
// thread on one instance; the function pointers point into a library that is
// never unloaded.
unsafe impl Send for PluginBackend {}
// SAFETY: as above; `PluginBackend` itself is immutable.
unsafe impl Sync for PluginBackend {}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no call on this instance is in flight, and
        // the instance is destroyed exactly once, as the ABI requires.
        unsafe { (self.destroy)(self.instance) };
    }
}

impl PluginBackend {
    fn error(&self, message: impl Into<String>) -> BackendError {
        BackendError {
            backend: self.name.clone(),
            message: message.into(),
        }
    }

    fn call(&self, facts: &AuthFacts<'_>, chain: &[CgStr]) -> Result<AuthDecision, BackendError> {
        let mut peer_text = PeerText::default();
        let peer = facts.peer.map(|p| peer_text.format(p));
        let request = CgAuthRequest {
            struct_size: std::mem::size_of::<CgAuthRequest>() as u32,
            tls_chain: if chain.is_empty() {
                std::ptr::null()
            } else {
                chain.as_ptr()
            },
            tls_chain_len: chain.len(),
            forwarded_cert: CgStr::from_opt(facts.forwarded_cert),
            authorization: CgStr::from_opt(facts.authorization.map(str::as_bytes)),
            method: CgStr::from_bytes(facts.method.as_bytes()),
            path: CgStr::from_bytes(facts.path.as_bytes()),
            peer: CgStr::from_opt(peer),
        };
        let mut out = CgBuf::EMPTY;
        // SAFETY: the instance came from this plugin's `init`; the request and
        // everything it borrows outlive the call; `out` is initialised.
        let code = unsafe { (self.authenticate)(self.instance, &request, &mut out) };
        let out = OwnedBuf {
            buf: out,
            free: self.free_buf,
        };
        self.decode(code, &out)
    }

    fn decode(&self, code: u32, out: &OwnedBuf) -> Result<AuthDecision, BackendError> {
        decode_answer(code, out.bytes()).map_err(|message| self.error(message))
    }
}

/// Decode what `reload` returned: its status code and the bytes of its
/// message buffer. Anything but `OK` means the plugin kept its old state.
fn decode_reload(code: u32, message: Result<&[u8], &str>) -> ReloadOutcome {
    match code {
        status::OK => ReloadOutcome::Reloaded,
        status::ERROR => ReloadOutcome::Failed(lossy(message)),
        status::PANIC => ReloadOutcome::Failed(format!("plugin panicked: {}", lossy(message))),
        other => ReloadOutcome::Failed(format!("reload returned unexpected status {other}")),
    }
}

/// Decode what `authenticate` returned: its status code and the bytes of its
/// output buffer (or why they could not be read). `Err` holds the reason the
/// answer is unusable, for the logs; the request then fails closed.
pub fn decode_answer(code: u32, out: Result<&[u8], &str>) -> Result<AuthDecision, String> {
    match code {
        status::ABSTAIN => Ok(AuthDecision::Abstain),
        status::ALLOW | status::TOKEN => {
            let bytes = out.map_err(str::to_owned)?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| "identity document is not UTF-8".to_owned())?;
            // serde would also fill the document from an array, by position.
            if !text
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{')
            {
                return Err("identity document is not a JSON object".to_owned());
            }
            let doc: IdentityDoc<'_> = serde_json::from_str(text)
                .map_err(|e| format!("malformed identity document: {e}"))?;
            identity(code, doc)
        }
        status::DENY => {
            let bytes = out.map_err(str::to_owned)?;
            let reason =
                std::str::from_utf8(bytes).map_err(|_| "deny reason is not UTF-8".to_owned())?;
            Ok(AuthDecision::Deny(if reason.is_empty() {
                "denied".to_owned()
            } else {
                reason.to_owned()
            }))
        }
        status::ERROR => Err(format!("plugin error: {}", lossy(out))),
        status::PANIC => Err(format!("plugin panicked: {}", lossy(out))),
        other => Err(format!("plugin returned unknown status {other}")),
    }
}

fn identity(code: u32, doc: IdentityDoc<'_>) -> Result<AuthDecision, String> {
    let id = |value: Option<Cow<'_, str>>, key: &str| -> Result<Arc<str>, String> {
        let value = value.ok_or_else(|| format!("{} document without \"{key}\"", doc.kind))?;
        if value.is_empty() || value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
            return Err(format!("{} document with an invalid \"{key}\"", doc.kind));
        }
        Ok(Arc::from(value.as_ref()))
    };
    match (code, doc.kind.as_ref()) {
        (status::ALLOW, "host") => Ok(AuthDecision::Allow(Identity::Host(id(
            doc.id.clone(),
            "id",
        )?))),
        (status::ALLOW, "user") => Ok(AuthDecision::Allow(Identity::User(id(
            doc.id.clone(),
            "id",
        )?))),
        (status::ALLOW, "anonymous") => Ok(AuthDecision::Allow(Identity::Anonymous)),
        (status::TOKEN, "token") => {
            let digest = doc.sha256.as_deref().unwrap_or_default();
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err("token document: \"sha256\" must be 64 lowercase hex digits".to_owned());
            }
            Ok(AuthDecision::Token(digest.to_owned()))
        }
        (_, kind) => Err(format!(
            "status {} with a document of kind {kind:?}",
            status::name(code)
        )),
    }
}

/// `{"kind":"host","id":"..."}`, `{"kind":"user","id":"..."}`,
/// `{"kind":"anonymous"}`, `{"kind":"token","sha256":"..."}`. Unknown keys
/// are ignored so plugins can add some.
#[derive(Deserialize)]
struct IdentityDoc<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sha256: Option<Cow<'a, str>>,
}

impl Authenticator for PluginBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn may_block(&self) -> bool {
        !self.non_blocking
    }

    fn reload(&self) -> ReloadOutcome {
        let Some(reload) = self.reload else {
            return ReloadOutcome::Unsupported;
        };
        // Nothing is guarded but the call itself, so a poisoned lock is fine.
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut message = CgBuf::EMPTY;
        // SAFETY: the instance came from this plugin's `init` and is not
        // destroyed while `&self` lives; `authenticate` calls may run
        // meanwhile, which the ABI allows; no other `reload` runs (the lock);
        // the configuration outlives the call; `message` is initialised.
        let code = unsafe {
            reload(
                self.instance,
                CgStr::from_bytes(self.config_json.as_bytes()),
                &mut message,
            )
        };
        let message = OwnedBuf {
            buf: message,
            free: self.free_buf,
        };
        decode_reload(code, message.bytes())
    }

    fn authenticate(&self, facts: &AuthFacts<'_>) -> Result<AuthDecision, BackendError> {
        let n = facts.tls_chain.len();
        if n <= INLINE_CHAIN {
            let mut inline = [CgStr::ABSENT; INLINE_CHAIN];
            for (slot, der) in inline.iter_mut().zip(facts.tls_chain) {
                *slot = CgStr::from_bytes(der);
            }
            self.call(facts, &inline[..n])
        } else {
            let chain: Vec<CgStr> = facts
                .tls_chain
                .iter()
                .map(|der| CgStr::from_bytes(der))
                .collect();
            self.call(facts, &chain)
        }
    }
}

// ---------------------------------------------------------------------------
// Logging on behalf of plugins.
//
// A plugin links its own `tracing`, invisible to the gateway's subscriber, so
// it logs through `CgHost::log`. Events are emitted with target
// `plugin::<name>` so filters such as `plugin::rhsm-cert=debug` work. Targets
// of `tracing` callsites are static, so each plugin gets one leaked callsite
// per level, built at load time: the way `tracing`'s own macros build theirs,
// through `Identifier`, which every `tracing` 0.1 release relies on.

struct PluginCallsite {
    metadata: OnceLock<Metadata<'static>>,
    interest: AtomicU8,
}

const INTEREST_NEVER: u8 = 0;
const INTEREST_SOMETIMES: u8 = 1;
const INTEREST_ALWAYS: u8 = 2;

/// Shown if a subscriber asks before the metadata is set (it cannot: it is
/// set before registration).
static PLACEHOLDER_CALLSITE: PluginCallsite = PluginCallsite {
    metadata: OnceLock::new(),
    interest: AtomicU8::new(INTEREST_NEVER),
};
static PLACEHOLDER_METADATA: Metadata<'static> = Metadata::new(
    "plugin log",
    "plugin",
    Level::TRACE,
    None,
    None,
    None,
    FieldSet::new(&["message"], Identifier(&PLACEHOLDER_CALLSITE)),
    Kind::EVENT,
);

impl Callsite for PluginCallsite {
    fn set_interest(&self, interest: Interest) {
        let value = if interest.is_never() {
            INTEREST_NEVER
        } else if interest.is_always() {
            INTEREST_ALWAYS
        } else {
            INTEREST_SOMETIMES
        };
        self.interest.store(value, Ordering::Relaxed);
    }

    fn metadata(&self) -> &Metadata<'_> {
        self.metadata.get().unwrap_or(&PLACEHOLDER_METADATA)
    }
}

/// A callsite, its metadata, and its one field (`message`).
type LevelCallsite = (
    &'static PluginCallsite,
    &'static Metadata<'static>,
    Option<Field>,
);

struct LogContext {
    /// ERROR, WARN, INFO, DEBUG, TRACE.
    callsites: [LevelCallsite; 5],
}

impl LogContext {
    fn level(&self, code: u32) -> &LevelCallsite {
        let index = match code {
            0..=level::ERROR => 0,
            level::WARN => 1,
            level::INFO => 2,
            level::DEBUG => 3,
            _ => 4,
        };
        &self.callsites[index]
    }

    fn enabled(&self, code: u32) -> bool {
        let (callsite, metadata, _) = self.level(code);
        if *metadata.level() > LevelFilter::current() {
            return false;
        }
        match callsite.interest.load(Ordering::Relaxed) {
            INTEREST_NEVER => false,
            INTEREST_ALWAYS => true,
            _ => tracing::dispatcher::get_default(|d| d.enabled(metadata)),
        }
    }

    fn log(&self, code: u32, message: &str) {
        if !self.enabled(code) {
            return;
        }
        let (_, metadata, Some(field)) = self.level(code) else {
            return;
        };
        let values = [(field, Some(&message as &dyn Value))];
        Event::dispatch(metadata, &metadata.fields().value_set(&values));
    }
}

fn make_callsite(target: &'static str, level: Level) -> LevelCallsite {
    let callsite: &'static PluginCallsite = Box::leak(Box::new(PluginCallsite {
        metadata: OnceLock::new(),
        interest: AtomicU8::new(INTEREST_SOMETIMES),
    }));
    let metadata = callsite.metadata.get_or_init(|| {
        Metadata::new(
            "plugin log",
            target,
            level,
            None,
            None,
            Some(target),
            FieldSet::new(&["message"], Identifier(callsite)),
            Kind::EVENT,
        )
    });
    tracing::callsite::register(callsite);
    (callsite, metadata, metadata.fields().field("message"))
}

/// The `CgHost` for one plugin, leaked: the ABI promises it for the life of
/// the process.
fn host_for(name: &str) -> &'static CgHost {
    let target: &'static str = Box::leak(format!("plugin::{name}").into_boxed_str());
    let context: &'static LogContext = Box::leak(Box::new(LogContext {
        callsites: [
            make_callsite(target, Level::ERROR),
            make_callsite(target, Level::WARN),
            make_callsite(target, Level::INFO),
            make_callsite(target, Level::DEBUG),
            make_callsite(target, Level::TRACE),
        ],
    }));
    Box::leak(Box::new(CgHost {
        struct_size: std::mem::size_of::<CgHost>() as u32,
        context: (context as *const LogContext).cast(),
        log: Some(host_log),
        log_enabled: Some(host_log_enabled),
    }))
}

unsafe extern "C" fn host_log(context: *const c_void, level: u32, message: CgStr) {
    // SAFETY: plugins pass back the context from `host_for`, a leaked `LogContext`.
    let Some(context) = (unsafe { context.cast::<LogContext>().as_ref() }) else {
        return;
    };
    // SAFETY: the plugin lends the message for the duration of this call.
    let Some(bytes) = (unsafe { message.as_bytes() }) else {
        return;
    };
    let bytes = &bytes[..bytes.len().min(MAX_LOG_LINE)];
    let text = String::from_utf8_lossy(bytes);
    // A panicking subscriber must not unwind into the plugin's frames.
    let _ = catch_unwind(AssertUnwindSafe(|| context.log(level, &text)));
}

unsafe extern "C" fn host_log_enabled(context: *const c_void, level: u32) -> u32 {
    // SAFETY: plugins pass back the context from `host_for`, a leaked `LogContext`.
    let Some(context) = (unsafe { context.cast::<LogContext>().as_ref() }) else {
        return 0;
    };
    catch_unwind(AssertUnwindSafe(|| u32::from(context.enabled(level)))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_matches_display() {
        for peer in [
            "0.0.0.0:0",
            "127.0.0.1:8443",
            "192.0.2.255:65535",
            "10.20.30.40:5",
            "[::1]:443",
            "[2001:db8::1]:55012",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
        ] {
            let addr: std::net::SocketAddr = peer.parse().expect("address");
            let mut text = PeerText::default();
            assert_eq!(text.format(addr), addr.to_string().as_bytes(), "{peer}");
        }
    }

    #[test]
    fn identity_documents_are_objects() {
        assert_eq!(
            decode_answer(status::ALLOW, Ok(br#" {"kind":"host","id":"u1"}"#)),
            Ok(AuthDecision::Allow(Identity::Host("u1".into())))
        );
        assert!(decode_answer(status::ALLOW, Ok(br#"["host","u1"]"#)).is_err());
        let token = format!(r#"["token",null,"{}"]"#, "a".repeat(64));
        assert!(decode_answer(status::TOKEN, Ok(token.as_bytes())).is_err());
    }

    #[test]
    fn plugin_config_adds_client_ca_unless_set() {
        let mut cfg = PluginsConfig {
            dir: "/nonexistent".into(),
            chain: vec!["p".into()],
            require_root_owner: true,
            call_timeout: std::time::Duration::from_secs(1),
            settings: Default::default(),
        };
        let ca = Path::new("/etc/rhsm/ca/katello-default-ca.pem");
        assert_eq!(
            plugin_config(&cfg, "p", ca).as_deref(),
            Ok(r#"{"client_ca":"/etc/rhsm/ca/katello-default-ca.pem"}"#)
        );
        cfg.settings.insert(
            "p".into(),
            serde_json::json!({"client_ca": "/mine.pem", "x": 1}),
        );
        assert_eq!(
            plugin_config(&cfg, "p", ca).as_deref(),
            Ok(r#"{"client_ca":"/mine.pem","x":1}"#)
        );
        cfg.settings.insert("p".into(), serde_json::json!([1]));
        assert!(plugin_config(&cfg, "p", ca).is_err());
    }

    /// `reload` as the host sees it, with the plugin side written here.
    mod reload {
        use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize};

        use super::*;

        /// Buffers handed out by `test_reload` and not yet freed.
        static LIVE: AtomicIsize = AtomicIsize::new(0);
        /// `serial` reloads running right now, and whether two ever overlapped.
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static OVERLAPPED: AtomicBool = AtomicBool::new(false);

        fn buf(text: &str) -> CgBuf {
            let boxed: Box<[u8]> = text.as_bytes().into();
            let len = boxed.len();
            LIVE.fetch_add(1, Ordering::SeqCst);
            CgBuf {
                ptr: Box::into_raw(boxed).cast::<u8>(),
                len,
                cap: len,
            }
        }

        unsafe extern "C" fn test_free(buf: CgBuf) {
            if !buf.ptr.is_null() {
                LIVE.fetch_sub(1, Ordering::SeqCst);
                // SAFETY: non-null buffers come from `buf`, a leaked `Box<[u8]>`.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len))
                });
            }
        }

        unsafe extern "C" fn test_authenticate(
            _: *const c_void,
            _: *const CgAuthRequest,
            _: *mut CgBuf,
        ) -> u32 {
            status::ABSTAIN
        }

        unsafe extern "C" fn test_destroy(_: *mut c_void) {}

        /// Answers as its configuration says; `echo:` hands the configuration
        /// back as the error message.
        unsafe extern "C" fn test_reload(_: *const c_void, config: CgStr, out: *mut CgBuf) -> u32 {
            // SAFETY: the host lends the configuration for the call.
            let config = unsafe { config.as_bytes() }.unwrap_or_default();
            let config = std::str::from_utf8(config).unwrap_or("");
            let (code, message) = match config {
                "ok" => (status::OK, None),
                "error" => (status::ERROR, Some("the bundle is gone")),
                "panic" => (status::PANIC, Some("boom")),
                "silent-error" => (status::ERROR, None),
                "weird" => (42, Some("what")),
                "serial" => {
                    if RUNNING.fetch_add(1, Ordering::SeqCst) > 0 {
                        OVERLAPPED.store(true, Ordering::SeqCst);
                    }
                    for _ in 0..50 {
                        std::thread::yield_now();
                    }
                    RUNNING.fetch_sub(1, Ordering::SeqCst);
                    (status::OK, None)
                }
                echo => (status::ERROR, Some(echo)),
            };
            if let Some(message) = message {
                // SAFETY: the host passes a writable out-pointer.
                unsafe { out.write(buf(message)) };
            }
            code
        }

        fn backend(config: &str, reload: Option<ReloadFn>) -> PluginBackend {
            PluginBackend {
                name: "test".to_owned(),
                non_blocking: true,
                instance: std::ptr::null_mut(),
                authenticate: test_authenticate,
                free_buf: test_free,
                destroy: test_destroy,
                reload,
                config_json: config.to_owned(),
                reloading: Mutex::new(()),
            }
        }

        #[test]
        fn the_table_holds_reload_only_if_its_size_does() {
            let full = CgAuthPluginV1 {
                abi_version: ABI_VERSION,
                struct_size: std::mem::size_of::<CgAuthPluginV1>() as u32,
                name: std::ptr::null(),
                init: None,
                authenticate: Some(test_authenticate),
                free_buf: Some(test_free),
                destroy: Some(test_destroy),
                flags: flags::NON_BLOCKING,
                reload: Some(test_reload),
            };
            let base = read_table(&full, V1_BASE_SIZE as u32);
            assert_eq!(base.flags, 0);
            assert!(base.reload.is_none());
            assert!(base.destroy.is_some());
            let with_flags = read_table(&full, gateway_plugin_abi::V1_1_SIZE as u32);
            assert_eq!(with_flags.flags, flags::NON_BLOCKING);
            assert!(with_flags.reload.is_none());
            assert!(read_table(&full, full.struct_size).reload.is_some());
            // A table from a later minor version: the fields known here.
            assert!(read_table(&full, 4096).reload.is_some());
        }

        #[test]
        fn outcomes_of_reload_and_every_buffer_freed() {
            assert_eq!(backend("ok", None).reload(), ReloadOutcome::Unsupported);
            let outcome = |config: &str| backend(config, Some(test_reload)).reload();
            assert_eq!(outcome("ok"), ReloadOutcome::Reloaded);
            assert_eq!(
                outcome("error"),
                ReloadOutcome::Failed("the bundle is gone".to_owned())
            );
            assert_eq!(
                outcome("panic"),
                ReloadOutcome::Failed("plugin panicked: boom".to_owned())
            );
            assert_eq!(
                outcome("silent-error"),
                ReloadOutcome::Failed("(no message)".to_owned())
            );
            assert_eq!(
                outcome("weird"),
                ReloadOutcome::Failed("reload returned unexpected status 42".to_owned())
            );
            // The very configuration `init` got.
            let config = r#"{"client_ca":"/etc/rhsm/ca/katello-default-ca.pem","x":1}"#;
            assert_eq!(outcome(config), ReloadOutcome::Failed(config.to_owned()));
            assert_eq!(LIVE.load(Ordering::SeqCst), 0);
        }

        #[test]
        fn reloads_of_one_instance_never_overlap() {
            let backend = backend("serial", Some(test_reload));
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..50 {
                            assert_eq!(backend.reload(), ReloadOutcome::Reloaded);
                        }
                    });
                }
            });
            assert!(!OVERLAPPED.load(Ordering::SeqCst));
        }
    }
}
