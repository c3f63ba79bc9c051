//! The host functions (`porin` import module). Outside WebAssembly (the SDK's
//! own tests) they do nothing.

/// Log levels of [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "porin")]
    unsafe extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: usize);
        pub fn declare_label(ptr: *const u8, len: usize) -> i32;
        pub fn set_label(
            flow: i32,
            name: *const u8,
            name_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> i32;
    }
}

/// Write a line to the agent's log, tagged with the module's name.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads `len` bytes at `ptr` from this module's memory.
    unsafe {
        imports::log(level as i32, message.as_ptr(), message.len())
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

pub(crate) fn declare_label(name: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: as in `log`.
    return unsafe { imports::declare_label(name.as_ptr(), name.len()) } == 0;
    #[cfg(not(target_arch = "wasm32"))]
    return !name.is_empty();
}

pub(crate) fn set_label(flow: i32, name: &str, value: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: as in `log`. An error makes the host quarantine the module.
    unsafe {
        imports::set_label(flow, name.as_ptr(), name.len(), value.as_ptr(), value.len());
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (flow, name, value);
}
