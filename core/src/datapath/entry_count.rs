//! How many entries a pinned map holds, counted from userspace for
//! `cilium_bpf_map_pressure`: the kernel exposes no element count for a map
//! (`BPF_OBJ_GET_INFO_BY_FD` gives only `max_entries`).
//!
//! Hash and LRU hash maps are read with `BPF_MAP_LOOKUP_BATCH` (Linux >= 5.6), which aya
//! 0.14 does not expose: thousands of entries per syscall, so half a million entries cost
//! a few dozen syscalls. Other types (LPM tries have no batch operations) and kernels
//! without batches are walked with `BPF_MAP_GET_NEXT_KEY`, one syscall per entry.
//! A map changes while it is counted: the figure is a snapshot, as Cilium's is.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use aya::maps::{MapData, MapType};

use super::batch::{BatchAttr, bpf, chunk_len, fd_u32};
use super::error::DatapathError;

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries per lookup batch: bounded so one call never holds a bucket walk for long and
/// the buffers stay around a megabyte.
const CHUNK: usize = 8192;

/// The kernel's `ENOTSUPP` (not in libc): the map type has no batch operations.
const ENOTSUPP: i32 = 524;

/// How full one map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFill {
    pub entries: u32,
    pub max_entries: u32,
}

impl MapFill {
    /// `entries / max_entries`, the ratio `cilium_bpf_map_pressure` reports (at most 1).
    pub fn ratio(&self) -> f64 {
        (f64::from(self.entries) / f64::from(self.max_entries.max(1))).min(1.0)
    }
}

/// The `map_elem` member of `union bpf_attr`, as `BPF_MAP_GET_NEXT_KEY` reads it.
#[repr(C)]
#[derive(Default)]
struct NextKeyAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// Counts the entries of the map pinned at `path` (`map` names it in errors). `None` when
/// nothing is pinned there (the program that declares it is not loaded).
pub fn pinned_map_fill(map: &str, path: &Path) -> Result<Option<MapFill>, DatapathError> {
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(path).map_err(|e| DatapathError::map(map, e))?;
    map_fill(map, &data).map(Some)
}

/// Counts the entries of an open map (`map` names it in errors).
pub fn map_fill(map: &str, data: &MapData) -> Result<MapFill, DatapathError> {
    let info = data.info().map_err(|e| DatapathError::map(map, e))?;
    let max_entries = info.max_entries();
    let key_size = info.key_size() as usize;
    let value_size = info.value_size() as usize;
    let batched = matches!(info.map_type(), Ok(MapType::Hash | MapType::LruHash));
    let fd = data.fd().as_fd();
    let counted = if batched {
        match count_batched(fd, key_size, value_size, max_entries) {
            Err(e) if batches_unsupported(&e) => count_by_keys(fd, key_size, max_entries),
            other => other,
        }
    } else {
        count_by_keys(fd, key_size, max_entries)
    };
    let entries = counted.map_err(|source| DatapathError::MapCount {
        map: map.to_string(),
        source,
    })?;
    Ok(MapFill {
        entries,
        max_entries,
    })
}

fn batches_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// Reads the whole map with `BPF_MAP_LOOKUP_BATCH`, [`CHUNK`] entries at a time, and
/// counts what came back (the keys and values themselves are dropped).
fn count_batched(
    fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
) -> io::Result<u32> {
    let mut chunk = CHUNK.min(max_entries.max(1) as usize);
    let mut keys = vec![0u8; chunk * key_size];
    let mut values = vec![0u8; chunk * value_size];
    // Hash maps resume at a bucket index (a u32); 8 bytes leave room to spare.
    let mut resume = 0u64;
    let mut next = 0u64;
    let mut started = false;
    let mut total = 0u64;
    loop {
        let mut attr = BatchAttr {
            in_batch: if started {
                std::ptr::from_ref(&resume) as u64
            } else {
                0
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk_len(chunk),
            map_fd: fd_u32(fd),
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold `chunk` keys and values of the map's sizes and
        // `resume`/`next` the 4-byte bucket index hash maps use as their batch token; all
        // outlive the call. The kernel writes at most `chunk` entries, the token and
        // `attr.count`.
        let rc = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        total += u64::from(attr.count);
        if rc < 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                // The walk reached the end (the last entries came with this call).
                Some(libc::ENOENT) => break,
                // One bucket holds more entries than the buffers: retry with larger ones.
                Some(libc::ENOSPC) if attr.count == 0 && chunk < max_entries as usize => {
                    chunk = (chunk * 2).min(max_entries as usize);
                    keys.resize(chunk * key_size, 0);
                    values.resize(chunk * value_size, 0);
                    continue;
                }
                _ => return Err(error),
            }
        }
        resume = next;
        started = true;
    }
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

/// Walks the keys with `BPF_MAP_GET_NEXT_KEY`. A key deleted under the walk makes a hash
/// map restart from its first key, so the walk is capped and the count never exceeds
/// `max_entries`.
fn count_by_keys(fd: BorrowedFd<'_>, key_size: usize, max_entries: u32) -> io::Result<u32> {
    let mut current = vec![0u8; key_size.max(1)];
    let mut next = vec![0u8; key_size.max(1)];
    let cap = u64::from(max_entries) * 2 + 16;
    let mut count = 0u64;
    let mut started = false;
    while count < cap {
        let mut attr = NextKeyAttr {
            map_fd: fd_u32(fd),
            key: if started { current.as_ptr() as u64 } else { 0 },
            next_key: next.as_mut_ptr() as u64,
            ..NextKeyAttr::default()
        };
        // SAFETY: `current` and `next` are `key_size` bytes, alive across the call; the
        // kernel reads `current` and writes one key into `next`.
        let rc = unsafe { bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(error);
        }
        count += 1;
        std::mem::swap(&mut current, &mut next);
        started = true;
    }
    Ok(u32::try_from(count.min(u64::from(max_entries))).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_key_attr_matches_the_kernel_layout() {
        // union bpf_attr's map_elem member: u32 fd (+ padding), 3 u64 = 32 bytes.
        assert_eq!(std::mem::size_of::<NextKeyAttr>(), 32);
    }

    #[test]
    fn ratio_is_bounded_and_survives_a_zero_size() {
        let fill = |entries, max_entries| MapFill {
            entries,
            max_entries,
        };
        assert_eq!(fill(16, 64).ratio(), 0.25);
        assert_eq!(fill(70, 64).ratio(), 1.0);
        assert_eq!(fill(0, 0).ratio(), 0.0);
    }
}
