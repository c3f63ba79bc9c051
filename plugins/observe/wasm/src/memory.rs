//! Reading and writing a guest's memory from host functions.

use wasmtime::{Caller, Extern, Memory};

use crate::host_state::HostState;

/// The caller's exported memory.
pub fn memory_of(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export(porin_wasm_abi::EXPORT_MEMORY) {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the module exports no memory")),
    }
}

/// `len` bytes at `ptr`, or an error naming the range.
pub fn range(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(start..start.saturating_add(len)).ok_or_else(|| {
        wasmtime::format_err!("bytes {start}..+{len} are outside the module's memory")
    })
}

/// The mutable `len` bytes at `ptr`.
pub fn range_mut(data: &mut [u8], ptr: i32, len: usize) -> wasmtime::Result<&mut [u8]> {
    let start = ptr as u32 as usize;
    data.get_mut(start..start.saturating_add(len))
        .ok_or_else(|| {
            wasmtime::format_err!("bytes {start}..+{len} are outside the module's memory")
        })
}
