//! The agent's side of `HostCallbacks`: lookups a native plugin makes through its context.

use std::ffi::c_void;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use porin_plugin_sdk::PluginContext;
use porin_plugin_sdk::native::abi::{ERROR, HostCallbacks, OK, WriteFn};

/// What the callbacks reach; boxed and kept alive until the plugin is destroyed.
pub struct HostData {
    pub ctx: Arc<dyn PluginContext>,
}

impl HostData {
    /// The callback table pointing at `self`, which must not move while the plugin may
    /// call back (the agent keeps it boxed until the plugin is destroyed).
    pub fn callbacks(&self) -> HostCallbacks {
        HostCallbacks {
            host: std::ptr::from_ref(self).cast(),
            resolve_endpoint,
            identity_labels,
        }
    }
}

unsafe extern "C" fn resolve_endpoint(
    host: *const c_void,
    ip: *const u8,
    len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: `host` is the boxed HostData of `callbacks`; `ip` holds `len` bytes.
    let (data, ip) = unsafe {
        (
            host.cast::<HostData>().as_ref(),
            std::slice::from_raw_parts(ip, if ip.is_null() { 0 } else { len }),
        )
    };
    let Some(data) = data else { return ERROR };
    let found = catch_unwind(AssertUnwindSafe(|| {
        let ip: IpAddr = std::str::from_utf8(ip).ok()?.parse().ok()?;
        serde_json::to_vec(&data.ctx.resolve_endpoint(ip)?).ok()
    }));
    // SAFETY: `out`/`write` come from the plugin as a pair.
    unsafe { answer(found.ok().flatten(), out, write) }
}

unsafe extern "C" fn identity_labels(
    host: *const c_void,
    identity: u32,
    out: *mut c_void,
    write: WriteFn,
) -> i32 {
    // SAFETY: `host` is the boxed HostData of `callbacks`.
    let Some(data) = (unsafe { host.cast::<HostData>().as_ref() }) else {
        return ERROR;
    };
    let found = catch_unwind(AssertUnwindSafe(|| {
        serde_json::to_vec(&data.ctx.identity_labels(identity)?).ok()
    }));
    // SAFETY: as above.
    unsafe { answer(found.ok().flatten(), out, write) }
}

/// # Safety
/// `out`/`write` are a valid output pair.
unsafe fn answer(json: Option<Vec<u8>>, out: *mut c_void, write: WriteFn) -> i32 {
    match json {
        Some(json) => {
            // SAFETY: guaranteed by the caller.
            unsafe { write(out, json.as_ptr(), json.len()) };
            OK
        }
        None => ERROR,
    }
}
