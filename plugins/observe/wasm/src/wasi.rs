//! The WASI preview 1 functions a module can be granted, implemented by the
//! host: stdout/stderr into the agent's log, clocks, randomness and an empty
//! environment. Files and sockets do not exist for modules.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;
use wasmtime::{Caller, Linker};

use crate::config::WasiCapability;
use crate::host_state::HostState;
use crate::memory::{memory_of, range, range_mut};

/// The WASI import module.
pub const MODULE: &str = "wasi_snapshot_preview1";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_SPIPE: i32 = 70;

/// Which capability grants WASI function `name`; `None` when Porin offers
/// no way to grant it.
pub fn capability_of(name: &str) -> Option<WasiCapability> {
    use WasiCapability::*;
    Some(match name {
        "fd_write" | "fd_close" | "fd_seek" | "fd_fdstat_get" => Stdio,
        "clock_time_get" | "clock_res_get" => Clocks,
        "random_get" => Random,
        "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get" | "proc_exit"
        | "sched_yield" => Environ,
        _ => return None,
    })
}

/// Define the functions of the granted capabilities.
pub fn add_to_linker(
    linker: &mut Linker<HostState>,
    granted: &[WasiCapability],
) -> wasmtime::Result<()> {
    for cap in granted {
        match cap {
            WasiCapability::Stdio => {
                linker.func_wrap(MODULE, "fd_write", fd_write)?;
                linker.func_wrap(MODULE, "fd_close", |_: i32| ERRNO_BADF)?;
                linker.func_wrap(MODULE, "fd_seek", |_: i32, _: i64, _: i32, _: i32| {
                    ERRNO_SPIPE
                })?;
                linker.func_wrap(MODULE, "fd_fdstat_get", fd_fdstat_get)?;
            }
            WasiCapability::Clocks => {
                linker.func_wrap(MODULE, "clock_time_get", clock_time_get)?;
                linker.func_wrap(MODULE, "clock_res_get", clock_res_get)?;
            }
            WasiCapability::Random => {
                linker.func_wrap(MODULE, "random_get", random_get)?;
            }
            WasiCapability::Environ => {
                for name in ["args_sizes_get", "environ_sizes_get"] {
                    linker.func_wrap(MODULE, name, sizes_get_empty)?;
                }
                for name in ["args_get", "environ_get"] {
                    linker.func_wrap(MODULE, name, |_: i32, _: i32| ERRNO_SUCCESS)?;
                }
                linker.func_wrap(MODULE, "sched_yield", || ERRNO_SUCCESS)?;
                linker.func_wrap(MODULE, "proc_exit", |code: i32| -> wasmtime::Result<()> {
                    Err(wasmtime::format_err!("proc_exit({code})"))
                })?;
            }
        };
    }
    Ok(())
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> wasmtime::Result<()> {
    write_bytes(caller, ptr, &value.to_le_bytes())
}

fn write_bytes(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory_of(caller)?;
    range_mut(memory.data_mut(caller), ptr, bytes.len())?.copy_from_slice(bytes);
    Ok(())
}

fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let mut text = Vec::new();
    for i in 0..iovs_len.clamp(0, 64) {
        let iov = range(data, iovs + i * 8, 8)?;
        let ptr = porin_wasm_abi::read_u32(iov, 0) as i32;
        let len = porin_wasm_abi::read_u32(iov, 4) as i32;
        text.extend_from_slice(range(data, ptr, len)?);
    }
    let stream = if fd == 1 { "stdout" } else { "stderr" };
    let line = String::from_utf8_lossy(&text);
    info!(wasm_module = %state.module, stream, "{}", line.trim_end());
    let written = text.len() as u32;
    write_u32(&mut caller, nwritten, written)?;
    Ok(ERRNO_SUCCESS)
}

fn fd_fdstat_get(mut caller: Caller<'_, HostState>, fd: i32, buf: i32) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    // filetype character device (2), no flags, write right only.
    let mut stat = [0u8; 24];
    stat[0] = 2;
    stat[8..16].copy_from_slice(&(1u64 << 6).to_le_bytes());
    write_bytes(&mut caller, buf, &stat)?;
    Ok(ERRNO_SUCCESS)
}

fn clock_time_get(
    mut caller: Caller<'_, HostState>,
    id: i32,
    _precision: i64,
    out: i32,
) -> wasmtime::Result<i32> {
    // Realtime (0) and monotonic (1) both read the wall clock: a module only
    // needs differences and timestamps.
    if !(0..=1).contains(&id) {
        return Ok(ERRNO_INVAL);
    }
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    write_bytes(&mut caller, out, &ns.to_le_bytes())?;
    Ok(ERRNO_SUCCESS)
}

fn clock_res_get(mut caller: Caller<'_, HostState>, _id: i32, out: i32) -> wasmtime::Result<i32> {
    write_bytes(&mut caller, out, &1u64.to_le_bytes())?;
    Ok(ERRNO_SUCCESS)
}

fn random_get(mut caller: Caller<'_, HostState>, buf: i32, len: i32) -> wasmtime::Result<i32> {
    let len = len.clamp(0, 1 << 20) as usize;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| wasmtime::format_err!("random_get: /dev/urandom: {e}"))?;
    write_bytes(&mut caller, buf, &bytes)?;
    Ok(ERRNO_SUCCESS)
}

fn sizes_get_empty(
    mut caller: Caller<'_, HostState>,
    count: i32,
    size: i32,
) -> wasmtime::Result<i32> {
    write_u32(&mut caller, count, 0)?;
    write_u32(&mut caller, size, 0)?;
    Ok(ERRNO_SUCCESS)
}
