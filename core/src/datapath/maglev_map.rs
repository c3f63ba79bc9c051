//! The Maglev lookup tables (`porin_lb_maglev`, `bpf/lib/maps.h`): a hash of maps from
//! service id to an inner array of one element holding the service's table of M backend
//! ids.
//!
//! Why this shape: a table costs M * 4 bytes (64 KiB at Cilium's default M = 16381) and
//! only services with backends have one, so memory follows the services in use; a flat
//! `{service id, slot}` hash would cost ~17x more per slot, and a flat array would
//! preallocate M entries for every possible service. Replacing a table is atomic: a new
//! inner map is filled, then swapped in with one update of the outer map.
//!
//! aya 0.14 reuses a pinned map without checking its shape and has no way to change the
//! inner map's value size, so the agent creates the outer map itself before loading the
//! programs ([`ensure_maglev_map`]): the verifier checks `table[hash % M]` against the
//! value size of the template this map was created with.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tracing::info;

use super::batch;
use super::error::DatapathError;

/// Service id -> Maglev table.
pub const MAP_LB_MAGLEV: &str = "porin_lb_maglev";

/// Default M, Cilium's `--bpf-lb-maglev-table-size` default (and `bpf/lib/config.h`'s).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 16381;

/// The load-time switch carrying M.
pub const MAGLEV_TABLE_SIZE_SWITCH: &str = "CFG_LB_MAGLEV_M";

/// Default `max_entries` of the outer map (services with a table): as many services as
/// `porin_lb_svc` holds by default. `[plugins.lb] map_max_maglev` sets it.
pub const DEFAULT_MAGLEV_MAX_ENTRIES: u32 = 262_144;

// `enum bpf_cmd` and `enum bpf_map_type` values (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;
const BPF_F_NO_PREALLOC: u32 = 1;

/// `union bpf_attr`, large enough for every command used here (the kernel accepts a
/// shorter attr as long as the unused tail is zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32_at(mut self, offset: usize, value: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u64_at(mut self, offset: usize, value: u64) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn name_at(mut self, offset: usize, name: &str) -> Self {
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        self.0[offset..offset + n].copy_from_slice(&bytes[..n]);
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr of 128 bytes whose pointer fields
    // point at buffers that outlive the call, sized as the command expects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this new file descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// The bytes of a table: M backend ids in native order.
fn table_bytes(table: &[u32]) -> Vec<u8> {
    table.iter().flat_map(|id| id.to_ne_bytes()).collect()
}

/// One inner map: an array of one element, the table (`m` ids).
fn create_inner(m: u32) -> std::io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32_at(0, BPF_MAP_TYPE_ARRAY)
        .u32_at(4, 4)
        .u32_at(8, m * 4)
        .u32_at(12, 1)
        .name_at(28, "porin_maglev_in");
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

fn update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let mut attr = Attr::new()
        .u32_at(0, fd_u32(map))
        .u64_at(8, key.as_ptr() as u64)
        .u64_at(16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

fn lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> std::io::Result<()> {
    let mut attr = Attr::new()
        .u32_at(0, fd_u32(map))
        .u64_at(8, key.as_ptr() as u64)
        .u64_at(16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| ())
}

fn delete_one(map: BorrowedFd<'_>, key: &[u8]) -> std::io::Result<()> {
    let mut attr = Attr::new()
        .u32_at(0, fd_u32(map))
        .u64_at(8, key.as_ptr() as u64);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

fn next_key(map: BorrowedFd<'_>, key: Option<u32>) -> std::io::Result<Option<u32>> {
    let current = key.unwrap_or(0).to_ne_bytes();
    let mut next = [0u8; 4];
    let mut attr = Attr::new()
        .u32_at(0, fd_u32(map))
        .u64_at(16, next.as_mut_ptr() as u64);
    if key.is_some() {
        attr = attr.u64_at(8, current.as_ptr() as u64);
    }
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(Some(u32::from_ne_bytes(next))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn create_outer(m: u32, max_entries: u32) -> std::io::Result<OwnedFd> {
    let template = create_inner(m)?;
    let mut attr = Attr::new()
        .u32_at(0, BPF_MAP_TYPE_HASH_OF_MAPS)
        .u32_at(4, 4)
        .u32_at(8, 4)
        .u32_at(12, max_entries)
        .u32_at(16, BPF_F_NO_PREALLOC)
        .u32_at(20, fd_u32(template.as_fd()))
        .name_at(28, MAP_LB_MAGLEV);
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

fn pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("pin path holds a NUL byte"))?;
    let mut attr = Attr::new()
        .u64_at(0, c_path.as_ptr() as u64)
        .u32_at(8, fd_u32(fd));
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

fn open_pin(path: &Path) -> Result<OwnedFd, DatapathError> {
    Ok(open_pin_with_size(path)?.0)
}

/// The pinned map's fd and `max_entries`.
fn open_pin_with_size(path: &Path) -> Result<(OwnedFd, u32), DatapathError> {
    let data =
        aya::maps::MapData::from_pin(path).map_err(|e| DatapathError::map(MAP_LB_MAGLEV, e))?;
    let max_entries = data
        .info()
        .map_err(|e| DatapathError::map(MAP_LB_MAGLEV, e))?
        .max_entries();
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DatapathError::Maglev {
            action: "duplicating the map fd",
            source,
        })?;
    Ok((fd, max_entries))
}

/// Does `outer` take inner maps of `m` entries? The kernel refuses an inner map whose
/// value size differs from the template's (EINVAL), which is the only way to read it.
fn takes_tables_of(outer: BorrowedFd<'_>, m: u32) -> std::io::Result<bool> {
    let probe = create_inner(m)?;
    // Key 0 is never a service id (ids start at 1).
    let key = 0u32.to_ne_bytes();
    let value = (probe.as_raw_fd() as u32).to_ne_bytes();
    match update(outer, &key, &value) {
        Ok(()) => {
            delete_one(outer, &key)?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes sure `<maps_dir>/porin_lb_maglev` exists and holds tables of `m` entries, before
/// the programs are loaded (they reuse the pin). A map of another M (the configuration
/// changed) is unpinned and created anew: its tables are rebuilt by the lb plugin, which
/// finds it empty. A new map holds up to `max_entries` tables (a pinned one of another
/// size is left to `resize_pinned_maps`). Returns whether a map was (re)created.
pub fn ensure_maglev_map(maps_dir: &Path, m: u32, max_entries: u32) -> Result<bool, DatapathError> {
    let err = |action: &'static str| {
        move |source: std::io::Error| DatapathError::Maglev { action, source }
    };
    let path = maps_dir.join(MAP_LB_MAGLEV);
    if path.exists() {
        let outer = open_pin(&path)?;
        if takes_tables_of(outer.as_fd(), m).map_err(err("probing the table size"))? {
            return Ok(false);
        }
        info!(
            map = MAP_LB_MAGLEV,
            table_size = m,
            "the pinned Maglev map holds tables of another size: recreating it (tables are rebuilt)"
        );
        std::fs::remove_file(&path).map_err(err("unpinning the old map"))?;
    }
    let outer = create_outer(m, max_entries).map_err(err("creating the map"))?;
    match pin(outer.as_fd(), &path) {
        Ok(()) => Ok(true),
        // Another loader pinned one meanwhile: it is the one the programs use.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(err("pinning the map")(e)),
    }
}

/// Read and write access to the Maglev tables.
pub struct MaglevMaps {
    outer: OwnedFd,
    table_size: u32,
    max_entries: u32,
}

impl MaglevMaps {
    /// Opens the pinned outer map, whose tables hold `table_size` entries.
    pub fn open(pin: &Path, table_size: u32) -> Result<Self, DatapathError> {
        let (outer, max_entries) = open_pin_with_size(pin)?;
        Ok(Self {
            outer,
            table_size,
            max_entries,
        })
    }

    /// `max_entries` of the outer map: how many services can have a table.
    pub fn capacity(&self) -> u32 {
        self.max_entries
    }

    /// M: entries per table.
    pub fn table_size(&self) -> u32 {
        self.table_size
    }

    /// Installs (or atomically replaces) the tables of services: (service id, table of M
    /// backend ids). Each table is a new inner map; all of them go into the outer map in
    /// one batch, because the kernel waits for an RCU grace period after every write to
    /// a map of maps (one write per table cost ~16 ms each under load). On failure, the
    /// elements before `done` of the [`DatapathError::MapBatch`] are installed.
    pub fn set_many(&mut self, items: &[(u32, &[u32])]) -> Result<(), DatapathError> {
        let batch_error = |done: usize, source: std::io::Error| DatapathError::MapBatch {
            map: MAP_LB_MAGLEV,
            max_entries: self.max_entries,
            done,
            source,
        };
        let mut inner = Vec::with_capacity(items.len());
        let mut failure = None;
        for (i, (_, table)) in items.iter().enumerate() {
            match self.filled_table(table) {
                Ok(fd) => inner.push(fd),
                Err(source) => {
                    failure = Some(batch_error(i, source));
                    break;
                }
            }
        }
        let keys: Vec<u32> = items.iter().take(inner.len()).map(|(id, _)| *id).collect();
        let fds: Vec<u32> = inner.iter().map(|fd| fd.as_raw_fd() as u32).collect();
        batch::update(self.outer.as_fd(), &keys, &fds).map_err(|f| batch_error(f.done, f.error))?;
        // `inner` closes here: the outer map holds the tables now.
        failure.map_or(Ok(()), Err)
    }

    /// A new inner map holding `table`.
    fn filled_table(&self, table: &[u32]) -> std::io::Result<OwnedFd> {
        if table.len() != self.table_size as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "table of {} entries for maps of {}",
                    table.len(),
                    self.table_size
                ),
            ));
        }
        let inner = create_inner(self.table_size)?;
        update(inner.as_fd(), &0u32.to_ne_bytes(), &table_bytes(table))?;
        Ok(inner)
    }

    /// Installs (or atomically replaces) the table of one service.
    pub fn set(&mut self, service_id: u32, table: &[u32]) -> Result<(), DatapathError> {
        self.set_many(&[(service_id, table)])
    }

    /// Removes the tables of services, in one batch (missing ones are skipped).
    pub fn remove_many(&mut self, service_ids: &[u32]) -> Result<(), DatapathError> {
        batch::delete(self.outer.as_fd(), service_ids).map_err(|f| DatapathError::MapBatch {
            map: MAP_LB_MAGLEV,
            max_entries: self.max_entries,
            done: f.done,
            source: f.error,
        })
    }

    /// Removes the table of a service (a missing one is not an error).
    pub fn remove(&mut self, service_id: u32) -> Result<(), DatapathError> {
        self.remove_many(&[service_id])
    }

    /// The service ids that have a table.
    pub fn service_ids(&self) -> Result<Vec<u32>, DatapathError> {
        let mut ids = Vec::new();
        let mut key = None;
        while let Some(next) =
            next_key(self.outer.as_fd(), key).map_err(|source| DatapathError::Maglev {
                action: "listing tables",
                source,
            })?
        {
            ids.push(next);
            key = Some(next);
        }
        Ok(ids)
    }

    /// The table of a service, if it has one.
    pub fn table(&self, service_id: u32) -> Result<Option<Vec<u32>>, DatapathError> {
        let err = |action: &'static str| {
            move |source: std::io::Error| DatapathError::Maglev { action, source }
        };
        let mut id = [0u8; 4];
        match lookup(self.outer.as_fd(), &service_id.to_ne_bytes(), &mut id) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(err("looking a table up")(e)),
        }
        let mut attr = Attr::new().u32_at(0, u32::from_ne_bytes(id));
        let inner = bpf_fd(BPF_MAP_GET_FD_BY_ID, &mut attr).map_err(err("opening a table"))?;
        let mut bytes = vec![0u8; self.table_size as usize * 4];
        lookup(inner.as_fd(), &0u32.to_ne_bytes(), &mut bytes).map_err(err("reading a table"))?;
        Ok(Some(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}
