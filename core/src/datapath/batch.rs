//! Batched map writes: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux >= 5.6
//! for hash maps), which aya 0.14 does not expose. Programming 100,000 services one
//! element per syscall costs half a million syscalls; a batch writes thousands of
//! elements per call.
//!
//! A batch stops at the first element the kernel refuses and reports how many went in
//! before it, so the caller can name the element that did not fit (a full map) instead
//! of losing it silently.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Elements per syscall: bounded so one call never holds the CPU for long.
const CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(super) struct BatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// A batch that stopped: `done` elements went in, element `done` failed with `error`.
#[derive(Debug)]
pub struct BatchFailure {
    pub done: usize,
    pub error: std::io::Error,
}

/// Writes `keys[i] -> values[i]` (BPF_ANY). `K` and `V` must be the map's key and value
/// layouts exactly (the `#[repr(C)]` mirrors of `bpf/lib/common.h`).
pub fn update<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchFailure> {
    if keys.len() != values.len() {
        return Err(BatchFailure {
            done: 0,
            error: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "batch update: as many keys as values",
            ),
        });
    }
    let mut done = 0;
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: chunk_len(k.len()),
            map_fd: fd_u32(map),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes `k.len()` keys and values laid out as the map expects,
        // alive across the call; the kernel only reads them and writes `attr.count`.
        let rc = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            return Err(BatchFailure {
                done: done + attr.count as usize,
                error,
            });
        }
        done += k.len();
    }
    Ok(())
}

/// Deletes `keys`; keys that are already gone are skipped (removal is idempotent).
pub fn delete<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchFailure> {
    let mut start = 0;
    while start < keys.len() {
        let end = keys.len().min(start + CHUNK);
        let chunk = &keys[start..end];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk_len(chunk.len()),
            map_fd: fd_u32(map),
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes `chunk.len()` keys laid out as the map expects, alive
        // across the call; the kernel only reads them and writes `attr.count`.
        let rc = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) };
        if rc == 0 {
            start = end;
            continue;
        }
        let error = std::io::Error::last_os_error();
        let done = start + attr.count as usize;
        if error.raw_os_error() == Some(libc::ENOENT) {
            start = done + 1; // that key was not there: nothing to delete
            continue;
        }
        return Err(BatchFailure { done, error });
    }
    Ok(())
}

pub(super) fn chunk_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

pub(super) fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// The `bpf()` syscall with `attr`, a `#[repr(C)]` mirror of one member of `union bpf_attr`.
///
/// # Safety
/// `attr` must be laid out as the kernel expects for `cmd` and describe valid buffers.
pub(super) unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> libc::c_long {
    // SAFETY: the caller guarantees the layout and the buffers; the size is the struct's own.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_matches_the_kernel_layout() {
        // union bpf_attr's batch member: 4 u64, 2 u32, 2 u64 = 56 bytes.
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
    }
}
