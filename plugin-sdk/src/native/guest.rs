//! The plugin side of the native ABI: `extern "C"` entry points over a boxed
//! [`Plugin`](crate::Plugin). [`export_native_plugin!`](crate::export_native_plugin) wires
//! them into the two exported symbols.
//!
//! Every entry point catches panics, so a panic never unwinds into the agent. Calls that
//! may use tokio (`start`, `reconcile`, `stop`) run on a short-lived thread inside the
//! plugin's own runtime: the shared object has its own copy of tokio, it cannot use the
//! agent's, and no thread of the agent keeps thread-local state of the plugin (which would
//! keep the object mapped after the agent unloads it).

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use super::abi::{ERROR, HostCallbacks, OK, PANICKED, PluginVTable, WriteFn};
use super::guest_context::{GuestContext, HostHandle};
use super::wire::{StartInfo, StateChange};
use crate::{DatapathEvent, Plugin, PluginContext};

/// Datapath events a plugin's tasks may lag behind before they lose some.
const EVENT_CAPACITY: usize = 4096;

/// How long `stop` waits for the plugin's tasks to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What one call produced.
enum Outcome {
    Done(Vec<u8>),
    Failed(String),
    Panicked(String),
}

/// A loaded plugin and what the shim keeps for it.
pub struct Guest {
    plugin: Box<dyn Plugin>,
    registry: Registry,
    metrics_registered: bool,
    events: broadcast::Sender<Arc<DatapathEvent>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Entry points shared by every plugin; the macro sets `create`.
pub const VTABLE: PluginVTable = PluginVTable {
    create: create_unset,
    destroy,
    name,
    configure,
    start,
    on_event,
    reconcile,
    stop,
    health,
    metrics,
    status,
};

unsafe extern "C" fn create_unset(out: *mut c_void, write: WriteFn) -> *mut c_void {
    // SAFETY: `out`/`write` come from the caller as a pair.
    unsafe { emit(out, write, b"no constructor") };
    std::ptr::null_mut()
}

/// Builds the plugin with `make`; null (and the panic message in `out`) if it panicked.
///
/// # Safety
/// `out` and `write` must be a valid output pair (see [`WriteFn`]).
pub unsafe fn create(
    out: *mut c_void,
    write: WriteFn,
    make: impl FnOnce() -> Box<dyn Plugin>,
) -> *mut c_void {
    match catch_unwind(AssertUnwindSafe(make)) {
        Ok(plugin) => Box::into_raw(Box::new(Guest {
            plugin,
            registry: Registry::default(),
            metrics_registered: false,
            events: broadcast::channel(EVENT_CAPACITY).0,
            runtime: None,
        }))
        .cast(),
        Err(panic) => {
            let text = format!("panicked while being created: {}", panic_text(&*panic));
            // SAFETY: guaranteed by the caller.
            unsafe { emit(out, write, text.as_bytes()) };
            std::ptr::null_mut()
        }
    }
}

unsafe extern "C" fn destroy(handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: `handle` came from `create` and is destroyed once.
    let guest = unsafe { Box::from_raw(handle.cast::<Guest>()) };
    // Dropping a runtime joins its threads: do it off the agent's thread.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        std::thread::scope(|s| {
            let _ = s.spawn(move || drop(guest)).join();
        })
    }));
}

unsafe extern "C" fn name(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32 {
    // SAFETY: the agent passes a handle from `create` and a valid output pair.
    unsafe {
        with_guest(handle, out, write, |g| {
            Outcome::Done(g.plugin.name().as_bytes().to_vec())
        })
    }
}

unsafe extern "C" fn configure(
    handle: *mut c_void,
    data: *const u8,
    len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: as above; `data` holds `len` bytes.
    let input = unsafe { bytes(data, len) };
    // SAFETY: as above.
    unsafe {
        with_guest(handle, out, write, |g| {
            let table = match std::str::from_utf8(input)
                .map_err(|e| e.to_string())
                .and_then(|t| t.parse::<toml::Table>().map_err(|e| e.to_string()))
            {
                Ok(t) => t,
                Err(e) => {
                    return Outcome::Failed(format!("the agent sent an unreadable section: {e}"));
                }
            };
            match g.plugin.configure(&table) {
                Ok(()) => Outcome::Done(Vec::new()),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        })
    }
}

unsafe extern "C" fn start(
    handle: *mut c_void,
    data: *const u8,
    len: usize,
    host: *const HostCallbacks,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: `data` holds `len` bytes; `host` is valid until `stop` returns.
    let (input, host) = unsafe { (bytes(data, len), host.as_ref().copied()) };
    // SAFETY: as above.
    unsafe {
        with_guest(handle, out, write, |g| {
            let info: StartInfo = match serde_json::from_slice(input) {
                Ok(i) => i,
                Err(e) => {
                    return Outcome::Failed(format!("the agent sent unreadable start data: {e}"));
                }
            };
            let Some(host) = host else {
                return Outcome::Failed("the agent passed no callbacks".to_string());
            };
            if !g.metrics_registered {
                g.plugin.register_metrics(&mut g.registry);
                g.metrics_registered = true;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("porin-{}", g.plugin.name()))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return Outcome::Failed(format!("creating the plugin's runtime: {e}")),
            };
            let ctx: Arc<dyn PluginContext> =
                Arc::new(GuestContext::new(info, g.events.clone(), HostHandle(host)));
            let plugin = &mut g.plugin;
            let outcome = on_thread(Some(&runtime), move || plugin.start(ctx));
            if matches!(outcome, Outcome::Done(_)) {
                g.runtime = Some(runtime);
            } else {
                shut_down(runtime);
            }
            outcome
        })
    }
}

unsafe extern "C" fn on_event(
    handle: *mut c_void,
    data: *const u8,
    len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: `data` holds `len` bytes.
    let input = unsafe { bytes(data, len) };
    // SAFETY: as above.
    unsafe {
        with_guest(handle, out, write, |g| {
            match serde_json::from_slice::<DatapathEvent>(input) {
                Ok(event) => {
                    // Nobody subscribed is fine.
                    let _ = g.events.send(Arc::new(event));
                    Outcome::Done(Vec::new())
                }
                Err(e) => Outcome::Failed(format!("unreadable event: {e}")),
            }
        })
    }
}

unsafe extern "C" fn reconcile(
    handle: *mut c_void,
    data: *const u8,
    len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: `data` holds `len` bytes.
    let input = unsafe { bytes(data, len) };
    // SAFETY: as above.
    unsafe {
        with_guest(handle, out, write, |g| {
            let change: StateChange = match serde_json::from_slice(input) {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(format!("unreadable state change: {e}")),
            };
            let summary = change.into();
            let plugin = &mut g.plugin;
            on_thread(g.runtime.as_ref(), move || plugin.reconcile(&summary))
        })
    }
}

unsafe extern "C" fn stop(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32 {
    // SAFETY: the agent passes a handle from `create` and a valid output pair.
    unsafe {
        with_guest(handle, out, write, |g| {
            let plugin = &mut g.plugin;
            let outcome = on_thread(g.runtime.as_ref(), move || plugin.stop());
            if let Some(runtime) = g.runtime.take() {
                shut_down(runtime);
            }
            outcome
        })
    }
}

unsafe extern "C" fn health(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32 {
    // SAFETY: the agent passes a handle from `create` and a valid output pair.
    unsafe {
        with_guest(handle, out, write, |g| {
            match serde_json::to_vec(&g.plugin.health()) {
                Ok(json) => Outcome::Done(json),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        })
    }
}

unsafe extern "C" fn metrics(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32 {
    // SAFETY: the agent passes a handle from `create` and a valid output pair.
    unsafe {
        with_guest(handle, out, write, |g| {
            let mut text = String::new();
            if let Err(e) =
                prometheus_client::encoding::text::encode_registry(&mut text, &g.registry)
            {
                return Outcome::Failed(format!("encoding metrics: {e}"));
            }
            Outcome::Done(text.into_bytes())
        })
    }
}

unsafe extern "C" fn status(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32 {
    // SAFETY: the agent passes a handle from `create` and a valid output pair.
    unsafe {
        with_guest(handle, out, write, |g| match g.plugin.status_json() {
            None => Outcome::Done(Vec::new()),
            Some(v) => match serde_json::to_vec(&v) {
                Ok(json) => Outcome::Done(json),
                Err(e) => Outcome::Failed(e.to_string()),
            },
        })
    }
}

/// Runs `f` on the guest behind `handle`, catching panics, and writes its result.
///
/// # Safety
/// `handle` comes from `create` (or is null); `out`/`write` are a valid output pair.
unsafe fn with_guest(
    handle: *mut c_void,
    out: *mut c_void,
    write: WriteFn,
    f: impl FnOnce(&mut Guest) -> Outcome,
) -> i32 {
    // SAFETY: guaranteed by the caller; the agent never calls one handle concurrently.
    let Some(guest) = (unsafe { handle.cast::<Guest>().as_mut() }) else {
        // SAFETY: guaranteed by the caller.
        unsafe { emit(out, write, b"null plugin handle") };
        return ERROR;
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| f(guest)))
        .unwrap_or_else(|panic| Outcome::Panicked(panic_text(&*panic)));
    let (code, bytes) = match outcome {
        Outcome::Done(b) => (OK, b),
        Outcome::Failed(m) => (ERROR, m.into_bytes()),
        Outcome::Panicked(m) => (PANICKED, m.into_bytes()),
    };
    // SAFETY: guaranteed by the caller.
    unsafe { emit(out, write, &bytes) };
    code
}

/// Runs a lifecycle call on a short-lived thread inside `runtime` (see the module docs).
fn on_thread(
    runtime: Option<&tokio::runtime::Runtime>,
    f: impl FnOnce() -> Result<(), crate::PluginError> + Send,
) -> Outcome {
    let joined = std::thread::scope(|s| {
        s.spawn(move || {
            let _entered = runtime.map(|rt| rt.enter());
            f()
        })
        .join()
    });
    match joined {
        Ok(Ok(())) => Outcome::Done(Vec::new()),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(panic) => Outcome::Panicked(panic_text(&*panic)),
    }
}

/// Ends the plugin's tasks, off the agent's thread.
fn shut_down(runtime: tokio::runtime::Runtime) {
    std::thread::scope(|s| {
        let _ = s
            .spawn(move || runtime.shutdown_timeout(SHUTDOWN_GRACE))
            .join();
    });
}

/// # Safety
/// `data` is null or points to `len` readable bytes that outlive the call.
unsafe fn bytes<'a>(data: *const u8, len: usize) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

/// # Safety
/// `out`/`write` are a valid output pair.
unsafe fn emit(out: *mut c_void, write: WriteFn, bytes: &[u8]) {
    if !bytes.is_empty() {
        // SAFETY: guaranteed by the caller.
        unsafe { write(out, bytes.as_ptr(), bytes.len()) };
    }
}

/// The message of a caught panic (`&str` or `String` payloads), else "unknown panic".
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
