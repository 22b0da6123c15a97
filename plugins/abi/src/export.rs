//! The `extern "C"` functions behind [`crate::export_auth_plugin!`]: they turn
//! the raw ABI into calls on an [`AuthPlugin`] and make sure no panic unwinds
//! into the host (since Rust 1.81 that would abort the whole gateway).

use core::ffi::c_void;
use core::mem::{ManuallyDrop, size_of};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::{
    ABI_VERSION, AuthPlugin, CgAuthPluginV1, CgAuthRequest, CgBuf, CgHost, CgStr, Decision, Logger,
    Request, json, status,
};

/// The table for `P`, placed in a `static` by the macro.
pub const fn vtable<P: AuthPlugin>() -> CgAuthPluginV1 {
    CgAuthPluginV1 {
        abi_version: ABI_VERSION,
        struct_size: size_of::<CgAuthPluginV1>() as u32,
        name: P::NAME.as_ptr(),
        init: Some(init::<P>),
        authenticate: Some(authenticate::<P>),
        free_buf: Some(free_buf),
        destroy: Some(destroy::<P>),
        flags: if P::NON_BLOCKING {
            crate::flags::NON_BLOCKING
        } else {
            0
        },
        reload: if P::RELOADS { Some(reload::<P>) } else { None },
    }
}

/// Emit the entry symbol for a type implementing [`AuthPlugin`].
///
/// Use it once, in a crate built with `crate-type = ["cdylib"]` (plus `"rlib"`
/// if tests or benchmarks call the plugin's logic directly). Every exported
/// function catches panics; the workspace must keep `panic = "unwind"`.
///
/// The symbol has one fixed name, and rustc keeps every `#[no_mangle]` symbol
/// of each rlib a binary uses: one binary can use the rlib of at most one
/// plugin crate (two fail to link with "duplicate symbol"). Tests that need
/// several plugins load their shared objects instead.
#[macro_export]
macro_rules! export_auth_plugin {
    ($plugin:ty) => {
        /// The plugin's entry point, see the `container_gateway_plugin_abi` crate.
        #[unsafe(no_mangle)]
        pub extern "C" fn container_gateway_auth_plugin_v1() -> *const $crate::CgAuthPluginV1 {
            static VTABLE: $crate::CgAuthPluginV1 = $crate::__export::vtable::<$plugin>();
            ::std::panic::catch_unwind(|| &VTABLE as *const $crate::CgAuthPluginV1)
                .unwrap_or(::core::ptr::null())
        }
    };
}

thread_local! {
    /// Set while plugin code runs under `guarded`, so the hook knows a panic
    /// will be caught and reported instead of printed.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// The last caught panic's message and location.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The default hook prints to stderr; a caught panic is reported through the
/// status and out buffer instead, with its location, which the payload alone
/// lacks. Panics outside plugin calls still reach the previous hook. The hook
/// belongs to the plugin's own copy of `std`, not the host's.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CALL.try_with(Cell::get).unwrap_or(false) {
                let message = payload_text(info.payload());
                let text = match info.location() {
                    Some(l) => format!("{message} (at {}:{}:{})", l.file(), l.line(), l.column()),
                    None => message,
                };
                let _ = LAST_PANIC.try_with(|p| p.try_borrow_mut().map(|mut p| *p = Some(text)));
            } else {
                previous(info);
            }
        }));
    });
}

/// Run plugin code, turning a panic into its message.
fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    let outer = IN_CALL.try_with(|c| c.replace(true)).unwrap_or(false);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let _ = IN_CALL.try_with(|c| c.set(outer));
    result.map_err(|payload| {
        let captured = LAST_PANIC
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()))
            .ok()
            .flatten();
        let text = captured.unwrap_or_else(|| payload_text(&*payload));
        drop_payload(payload);
        text
    })
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A payload's destructor may itself panic; that must not escape either.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

fn into_buf(bytes: Vec<u8>) -> CgBuf {
    if bytes.capacity() == 0 {
        return CgBuf::EMPTY;
    }
    let mut bytes = ManuallyDrop::new(bytes);
    CgBuf {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
        cap: bytes.capacity(),
    }
}

fn encode(decision: Decision) -> (u32, Vec<u8>) {
    match decision {
        Decision::Allow(identity) => (status::ALLOW, json::identity(&identity)),
        Decision::Token(sha256) => (status::TOKEN, json::token(&sha256)),
        Decision::Deny(reason) => (status::DENY, reason.into_bytes()),
        Decision::Abstain => (status::ABSTAIN, Vec::new()),
        Decision::Error(message) => (status::ERROR, message.into_bytes()),
    }
}

unsafe extern "C" fn init<P: AuthPlugin>(
    host: *const CgHost,
    config_json: CgStr,
    out_instance: *mut *mut c_void,
    out_error: *mut CgBuf,
) -> u32 {
    if out_instance.is_null() || out_error.is_null() {
        return status::ERROR;
    }
    let result = guarded(|| {
        // SAFETY: the host passes a `CgHost` valid for the process, or null.
        let log = unsafe { Logger::from_host(host) };
        // SAFETY: the host keeps `config_json` valid for the duration of this call.
        let config = unsafe { config_text(config_json) }?;
        P::init(config, log).map(|plugin| Box::into_raw(Box::new(plugin)))
    });
    let (code, instance, message) = match result {
        Ok(Ok(instance)) => (status::OK, instance.cast::<c_void>(), String::new()),
        Ok(Err(message)) => (status::ERROR, core::ptr::null_mut(), message),
        Err(panic) => (
            status::PANIC,
            core::ptr::null_mut(),
            format!("init panicked: {panic}"),
        ),
    };
    // SAFETY: both pointers were checked non-null and the host provides them
    // writable for the call.
    unsafe {
        out_instance.write(instance);
        out_error.write(into_buf(message.into_bytes()));
    }
    code
}

/// The configuration document as text; absent reads as empty.
///
/// # Safety
/// `config_json` must satisfy [`CgStr::as_bytes`] for `'a`.
unsafe fn config_text<'a>(config_json: CgStr) -> Result<&'a str, String> {
    // SAFETY: forwarded from the caller.
    match unsafe { config_json.as_bytes() } {
        None => Ok(""),
        Some(bytes) => {
            core::str::from_utf8(bytes).map_err(|_| "configuration is not UTF-8".to_owned())
        }
    }
}

unsafe extern "C" fn reload<P: AuthPlugin>(
    instance: *const c_void,
    config_json: CgStr,
    out_error: *mut CgBuf,
) -> u32 {
    if out_error.is_null() {
        return status::ERROR;
    }
    let result = guarded(|| {
        if instance.is_null() {
            return Err("instance is null".to_owned());
        }
        // SAFETY: a non-null instance is one `init::<P>` returned and `destroy`
        // has not released (host contract); `P: Sync` allows shared use while
        // `authenticate` runs on other threads.
        let plugin = unsafe { &*instance.cast::<P>() };
        // SAFETY: the host keeps `config_json` valid for the duration of this call.
        let config = unsafe { config_text(config_json) }?;
        plugin.reload(config)
    });
    let (code, message) = match result {
        Ok(Ok(())) => (status::OK, String::new()),
        Ok(Err(message)) => (status::ERROR, message),
        Err(panic) => (status::PANIC, format!("reload panicked: {panic}")),
    };
    // SAFETY: checked non-null; the host provides it writable for the call.
    unsafe { out_error.write(into_buf(message.into_bytes())) };
    code
}

unsafe extern "C" fn authenticate<P: AuthPlugin>(
    instance: *const c_void,
    request: *const CgAuthRequest,
    out: *mut CgBuf,
) -> u32 {
    if out.is_null() {
        return status::ERROR;
    }
    let result = guarded(|| {
        if instance.is_null() {
            return (status::ERROR, b"instance is null".to_vec());
        }
        // SAFETY: a non-null instance is one `init::<P>` returned and `destroy`
        // has not released (host contract); `P: Sync` allows shared use.
        let plugin = unsafe { &*instance.cast::<P>() };
        // SAFETY: the host keeps the request valid for the duration of this call.
        match unsafe { Request::from_raw(request) } {
            Some(request) => encode(plugin.authenticate(&request)),
            None => (status::ERROR, b"request is null".to_vec()),
        }
    });
    let (code, bytes) = match result {
        Ok(answer) => answer,
        Err(panic) => (
            status::PANIC,
            format!("authenticate panicked: {panic}").into_bytes(),
        ),
    };
    // SAFETY: checked non-null; the host provides it writable for the call.
    unsafe { out.write(into_buf(bytes)) };
    code
}

unsafe extern "C" fn free_buf(buf: CgBuf) {
    if buf.ptr.is_null() || buf.len > buf.cap {
        // Not something this plugin handed out: leaking beats freeing garbage.
        return;
    }
    let _ = guarded(|| {
        // SAFETY: a non-null buffer comes from `into_buf`, which leaked a
        // `Vec<u8>` with exactly this pointer, length and capacity, and the
        // host returns each buffer once.
        drop(unsafe { Vec::from_raw_parts(buf.ptr, buf.len, buf.cap) });
    });
}

unsafe extern "C" fn destroy<P: AuthPlugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    let _ = guarded(|| {
        // SAFETY: the instance was created by `Box::into_raw` in `init::<P>`,
        // and the host destroys it once, after all calls on it returned.
        drop(unsafe { Box::from_raw(instance.cast::<P>()) });
    });
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::{Identity, V1_1_SIZE, V1_BASE_SIZE, has_field};

    /// Does not reload: the default.
    struct Still;

    impl AuthPlugin for Still {
        const NAME: &'static core::ffi::CStr = c"still";
        fn init(_: &str, _: Logger) -> Result<Self, String> {
            Ok(Still)
        }
        fn authenticate(&self, _: &Request<'_>) -> Decision {
            Decision::Abstain
        }
    }

    /// Reloads as the configuration says: `ok`, `fail` or `panic`.
    struct Reloader {
        reloads: AtomicU32,
        seen: Mutex<Vec<String>>,
    }

    impl AuthPlugin for Reloader {
        const NAME: &'static core::ffi::CStr = c"reloader";
        const RELOADS: bool = true;
        fn init(_: &str, _: Logger) -> Result<Self, String> {
            Ok(Reloader {
                reloads: AtomicU32::new(0),
                seen: Mutex::new(Vec::new()),
            })
        }
        fn authenticate(&self, _: &Request<'_>) -> Decision {
            let n = self.reloads.load(Ordering::SeqCst);
            Decision::Allow(Identity::User(format!("after-{n}")))
        }
        fn reload(&self, config_json: &str) -> Result<(), String> {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(config_json.to_owned());
            if config_json.contains("panic") {
                panic!("asked to panic in reload");
            }
            if config_json.contains("fail") {
                return Err("the bundle is gone".to_owned());
            }
            self.reloads.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Says it reloads but forgot the method.
    struct Forgetful;

    impl AuthPlugin for Forgetful {
        const NAME: &'static core::ffi::CStr = c"forgetful";
        const RELOADS: bool = true;
        fn init(_: &str, _: Logger) -> Result<Self, String> {
            Ok(Forgetful)
        }
        fn authenticate(&self, _: &Request<'_>) -> Decision {
            Decision::Abstain
        }
    }

    fn instance(table: &CgAuthPluginV1) -> *mut c_void {
        let mut instance = core::ptr::null_mut();
        let mut error = CgBuf::EMPTY;
        let init = table.init.expect("init");
        // SAFETY: a null host is allowed; both out-pointers are valid.
        let code = unsafe {
            init(
                core::ptr::null(),
                CgStr::from_bytes(b"{}"),
                &mut instance,
                &mut error,
            )
        };
        assert_eq!(code, status::OK);
        assert!(!instance.is_null());
        instance
    }

    /// Call `reload` as a host does: (status, message).
    fn reload_through(
        table: &CgAuthPluginV1,
        instance: *const c_void,
        config: &str,
    ) -> (u32, String) {
        let reload = table.reload.expect("a reload function");
        let mut error = CgBuf::EMPTY;
        // SAFETY: the instance came from this table's `init`; the config
        // outlives the call; `error` is initialised.
        let code = unsafe { reload(instance, CgStr::from_bytes(config.as_bytes()), &mut error) };
        let message = if error.ptr.is_null() {
            String::new()
        } else {
            // SAFETY: the plugin hands over `len` bytes at `ptr` until `free_buf`.
            let bytes = unsafe { core::slice::from_raw_parts(error.ptr, error.len) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        // SAFETY: the buffer came from this plugin and is returned once.
        unsafe { table.free_buf.expect("free_buf")(error) };
        (code, message)
    }

    fn user(table: &CgAuthPluginV1, instance: *const c_void) -> String {
        let request = CgAuthRequest {
            struct_size: size_of::<CgAuthRequest>() as u32,
            tls_chain: core::ptr::null(),
            tls_chain_len: 0,
            forwarded_cert: CgStr::ABSENT,
            authorization: CgStr::ABSENT,
            method: CgStr::from_bytes(b"GET"),
            path: CgStr::from_bytes(b"/v2/"),
            peer: CgStr::ABSENT,
        };
        let mut out = CgBuf::EMPTY;
        // SAFETY: as in `reload_through`, for a request that outlives the call.
        let code =
            unsafe { table.authenticate.expect("authenticate")(instance, &request, &mut out) };
        assert_eq!(code, status::ALLOW);
        // SAFETY: as in `reload_through`.
        let text =
            String::from_utf8_lossy(unsafe { core::slice::from_raw_parts(out.ptr, out.len) })
                .into_owned();
        // SAFETY: as in `reload_through`.
        unsafe { table.free_buf.expect("free_buf")(out) };
        text
    }

    #[test]
    fn a_plugin_that_does_not_reload_has_no_reload_function() {
        let table = vtable::<Still>();
        assert!(table.reload.is_none());
        assert_eq!(table.struct_size as usize, size_of::<CgAuthPluginV1>());
    }

    #[test]
    fn a_host_reads_reload_only_from_a_table_large_enough() {
        let fn_size = size_of::<Option<unsafe extern "C" fn()>>();
        let at = offset_of!(CgAuthPluginV1, reload);
        for (size, holds) in [
            (V1_BASE_SIZE, false),
            (V1_1_SIZE, false),
            (size_of::<CgAuthPluginV1>(), true),
        ] {
            assert_eq!(has_field(size as u32, at, fn_size), holds, "{size}");
        }
    }

    #[test]
    fn reload_gets_the_configuration_and_reports_success() {
        let table = vtable::<Reloader>();
        let instance = instance(&table);
        assert_eq!(user(&table, instance), r#"{"kind":"user","id":"after-0"}"#);
        assert_eq!(
            reload_through(&table, instance, r#"{"x":"ok"}"#),
            (status::OK, String::new())
        );
        assert_eq!(user(&table, instance), r#"{"kind":"user","id":"after-1"}"#);
        // SAFETY: the instance came from `init::<Reloader>` and is used no more.
        let plugin = unsafe { &*instance.cast::<Reloader>() };
        assert_eq!(
            *plugin.seen.lock().unwrap_or_else(|e| e.into_inner()),
            vec![r#"{"x":"ok"}"#.to_owned()]
        );
        // SAFETY: destroyed once, nothing in flight.
        unsafe { table.destroy.expect("destroy")(instance) };
    }

    #[test]
    fn a_failed_reload_is_an_error_with_the_plugins_message() {
        let table = vtable::<Reloader>();
        let instance = instance(&table);
        assert_eq!(
            reload_through(&table, instance, r#"{"x":"fail"}"#),
            (status::ERROR, "the bundle is gone".to_owned())
        );
        assert_eq!(user(&table, instance), r#"{"kind":"user","id":"after-0"}"#);
        // SAFETY: destroyed once, nothing in flight.
        unsafe { table.destroy.expect("destroy")(instance) };
    }

    #[test]
    fn a_panicking_reload_is_caught_and_the_instance_keeps_serving() {
        let table = vtable::<Reloader>();
        let instance = instance(&table);
        let (code, message) = reload_through(&table, instance, r#"{"x":"panic"}"#);
        assert_eq!(code, status::PANIC);
        assert!(
            message.starts_with("reload panicked: asked to panic in reload (at "),
            "{message}"
        );
        assert_eq!(user(&table, instance), r#"{"kind":"user","id":"after-0"}"#);
        assert_eq!(
            reload_through(&table, instance, "{}"),
            (status::OK, String::new())
        );
        // SAFETY: destroyed once, nothing in flight.
        unsafe { table.destroy.expect("destroy")(instance) };
    }

    #[test]
    fn reload_refuses_bad_arguments_without_touching_the_instance() {
        let table = vtable::<Reloader>();
        let reload = table.reload.expect("a reload function");
        // SAFETY: a null out-pointer is checked before anything else.
        let code = unsafe { reload(core::ptr::null(), CgStr::ABSENT, core::ptr::null_mut()) };
        assert_eq!(code, status::ERROR);
        assert_eq!(
            reload_through(&table, core::ptr::null(), "{}"),
            (status::ERROR, "instance is null".to_owned())
        );
        let instance = instance(&table);
        let invalid = [0xffu8, 0xfe];
        let mut error = CgBuf::EMPTY;
        // SAFETY: as in `reload_through`.
        let code = unsafe { reload(instance, CgStr::from_bytes(&invalid), &mut error) };
        assert_eq!(code, status::ERROR);
        // SAFETY: the buffer came from this plugin and is returned once.
        unsafe { table.free_buf.expect("free_buf")(error) };
        assert_eq!(user(&table, instance), r#"{"kind":"user","id":"after-0"}"#);
        // SAFETY: destroyed once, nothing in flight.
        unsafe { table.destroy.expect("destroy")(instance) };
    }

    #[test]
    fn reloads_without_an_implementation_say_so() {
        let table = vtable::<Forgetful>();
        let instance = instance(&table);
        let (code, message) = reload_through(&table, instance, "{}");
        assert_eq!(code, status::ERROR);
        assert!(message.contains("reload() is not implemented"), "{message}");
        // SAFETY: destroyed once, nothing in flight.
        unsafe { table.destroy.expect("destroy")(instance) };
    }
}
