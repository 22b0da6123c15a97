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
        let config = match unsafe { config_json.as_bytes() } {
            None => "",
            Some(bytes) => match core::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return Err("configuration is not UTF-8".to_owned()),
            },
        };
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
