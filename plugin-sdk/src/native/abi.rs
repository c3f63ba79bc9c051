//! The C ABI between the agent and a native plugin (a shared object).
//!
//! Nothing Rust-specific crosses it: every call takes and gives plain pointers, lengths
//! and integers. Structured data travels as UTF-8 bytes: TOML for the plugin's section,
//! JSON for datapath events ([`crate::DatapathEvent`]), state changes, health and status,
//! and the OpenMetrics text exposition for metrics. Output goes through a [`WriteFn`] the
//! caller provides, so no allocation ever crosses the boundary.
//!
//! A shared object exports two symbols:
//! - [`ABI_VERSION_SYMBOL`]: `uint32_t porin_plugin_abi_version(void)`, read first; the
//!   agent refuses the object when it differs from [`ABI_VERSION`];
//! - [`VTABLE_SYMBOL`]: `const PorinPluginVTable *porin_plugin_vtable(void)`.

use std::ffi::c_void;

/// The version of this ABI. Bumped on any change of [`PluginVTable`], [`HostCallbacks`],
/// the return codes or the JSON documents.
pub const ABI_VERSION: u32 = 1;

/// `uint32_t porin_plugin_abi_version(void)`.
pub const ABI_VERSION_SYMBOL: &[u8] = b"porin_plugin_abi_version";

/// `const PorinPluginVTable *porin_plugin_vtable(void)`.
pub const VTABLE_SYMBOL: &[u8] = b"porin_plugin_vtable";

/// The call succeeded.
pub const OK: i32 = 0;
/// The plugin returned an error; its message was written to the output.
pub const ERROR: i32 = 1;
/// The plugin panicked; the panic message was written to the output. The agent
/// disables the plugin and never calls it again but to destroy it.
pub const PANICKED: i32 = 2;

/// Appends `len` bytes at `data` to the caller's buffer `out`.
pub type WriteFn = unsafe extern "C" fn(out: *mut c_void, data: *const u8, len: usize);

/// Signature of [`ABI_VERSION_SYMBOL`].
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// Signature of [`VTABLE_SYMBOL`].
pub type VTableFn = unsafe extern "C" fn() -> *const PluginVTable;

/// A call with no input but the plugin handle, writing its result (or error) to `out`.
pub type HandleCall =
    unsafe extern "C" fn(handle: *mut c_void, out: *mut c_void, write: WriteFn) -> i32;

/// A call with bytes in, writing its result (or error) to `out`.
pub type BytesCall = unsafe extern "C" fn(
    handle: *mut c_void,
    data: *const u8,
    len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> i32;

/// The plugin's entry points. Every one catches panics (returns [`PANICKED`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PluginVTable {
    /// Builds the plugin; null when its constructor panicked (message written to `out`).
    pub create: unsafe extern "C" fn(out: *mut c_void, write: WriteFn) -> *mut c_void,
    /// Frees what `create` built. The plugin must be stopped.
    pub destroy: unsafe extern "C" fn(handle: *mut c_void),
    /// Writes the plugin's name (`Plugin::name`).
    pub name: HandleCall,
    /// `Plugin::configure` with the section as TOML text.
    pub configure: BytesCall,
    /// `Plugin::start`; `data` is the JSON [`StartInfo`](super::StartInfo), `host` the
    /// callbacks into the agent, valid until `stop` returns.
    pub start: unsafe extern "C" fn(
        handle: *mut c_void,
        data: *const u8,
        len: usize,
        host: *const HostCallbacks,
        out: *mut c_void,
        write: WriteFn,
    ) -> i32,
    /// One datapath event as JSON ([`crate::DatapathEvent`]).
    pub on_event: BytesCall,
    /// `Plugin::reconcile` with the JSON [`StateChange`](super::StateChange).
    pub reconcile: BytesCall,
    /// `Plugin::stop`.
    pub stop: HandleCall,
    /// Writes `Plugin::health` as JSON ([`crate::Health`]).
    pub health: HandleCall,
    /// Writes the plugin's metrics in the OpenMetrics text format (no `# EOF`).
    pub metrics: HandleCall,
    /// Writes `Plugin::status_json` (nothing when it has none).
    pub status: HandleCall,
}

/// What the agent offers a running native plugin.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HostCallbacks {
    /// Opaque agent data, passed back to every callback.
    pub host: *const c_void,
    /// Writes the JSON [`crate::EndpointMeta`] owning the IP address given as text;
    /// returns [`ERROR`] when no endpoint owns it.
    pub resolve_endpoint: unsafe extern "C" fn(
        host: *const c_void,
        ip: *const u8,
        len: usize,
        out: *mut c_void,
        write: WriteFn,
    ) -> i32,
    /// Writes the labels of an identity as a JSON array of strings; [`ERROR`] if unknown.
    pub identity_labels: unsafe extern "C" fn(
        host: *const c_void,
        identity: u32,
        out: *mut c_void,
        write: WriteFn,
    ) -> i32,
}

/// A [`WriteFn`] appending to a `Vec<u8>` passed as `out`.
///
/// # Safety
/// `out` must point to a live `Vec<u8>` and `data` to `len` readable bytes.
pub unsafe extern "C" fn write_to_vec(out: *mut c_void, data: *const u8, len: usize) {
    if out.is_null() || data.is_null() || len == 0 {
        return;
    }
    // SAFETY: the caller passes a live Vec<u8> and `len` readable bytes at `data`.
    let (vec, bytes) = unsafe {
        (
            &mut *out.cast::<Vec<u8>>(),
            std::slice::from_raw_parts(data, len),
        )
    };
    vec.extend_from_slice(bytes);
}
