//! Socket-level load balancing: `bpf/sock.c` on the node's cgroup v2.
//!
//! The four `cgroup/*4` programs translate service addresses at connect(), sendmsg(),
//! recvmsg() and getpeername() for every process in the cgroup and its descendants (the
//! node's pods). Their maps are the pod datapath's, reopened by pin name, plus
//! `porin_lb_sknat` (socket reverse translations).
//!
//! Like the tcx links of pods, each cgroup attachment is a bpf_link pinned at
//! `<pin_root>/<node>/links/cgroup-<hook>`: it outlives the agent, and a restarted agent swaps
//! its freshly loaded program in with `bpf_link_update` (atomic: no connect() runs without a
//! program). Needs Linux >= 5.7 (cgroup links) and >= 5.19 (`bpf_set_retval`, which refuses
//! connections to services without backends).

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use tracing::{info, warn};

use super::{attach::LinkState, error::DatapathError};

/// The compiled `bpf/sock.c`.
static SOCK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.o"));

/// The socket reverse-translation map: {cookie, backend} -> frontend.
pub const MAP_LB_SKNAT: &str = "porin_lb_sknat";
/// Its IPv6 counterpart.
pub const MAP_LB_SKNAT6: &str = "porin_lb_sknat6";

/// The programs of `bpf/sock.c`: (ELF symbol, pin suffix).
const PROGRAMS: [(&str, &str); 8] = [
    ("porin_sock_connect4", "connect4"),
    ("porin_sock_sendmsg4", "sendmsg4"),
    ("porin_sock_recvmsg4", "recvmsg4"),
    ("porin_sock_getpeername4", "getpeername4"),
    // IPv6 ClusterIPs (dual stack): they only act on frontends in porin_lb_svc6, which
    // stays empty without IPv6 services.
    ("porin_sock_connect6", "connect6"),
    ("porin_sock_sendmsg6", "sendmsg6"),
    ("porin_sock_recvmsg6", "recvmsg6"),
    ("porin_sock_getpeername6", "getpeername6"),
];

/// `BPF_LINK_UPDATE` of `enum bpf_cmd`.
const BPF_LINK_UPDATE: libc::c_long = 29;
/// `BPF_OBJ_GET` of `enum bpf_cmd`.
const BPF_OBJ_GET: libc::c_long = 7;

/// The socket programs of one node, loaded and attached to its cgroup.
pub struct SocketLb {
    _ebpf: Ebpf,
    links: Vec<FdLink>,
    cgroup: PathBuf,
}

impl std::fmt::Debug for SocketLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketLb")
            .field("cgroup", &self.cgroup)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

/// `<node_dir>/links/cgroup-<hook>`.
pub fn socket_link_pin_path(node_dir: &Path, hook: &str) -> PathBuf {
    node_dir.join("links").join(format!("cgroup-{hook}"))
}

impl SocketLb {
    /// Loads `sock.o` with the maps pinned under `<node_dir>/maps` (the pod datapath must be
    /// loaded first, so the shared maps exist) and attaches its programs to `cgroup`, replacing
    /// the programs of links a previous agent pinned. `switches` are the load-time globals
    /// of the shared set (`CFG_LB_MAGLEV` and `CFG_LB_MAGLEV_M` are the ones `sock.o` reads).
    pub fn attach(
        node_dir: &Path,
        cgroup: &Path,
        switches: &[(String, u32)],
    ) -> Result<(Self, Vec<LinkState>), DatapathError> {
        let maps_dir = node_dir.join("maps");
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps_dir);
        for (name, value) in switches {
            // Not must-exist: sock.o reads only the switches it needs of the shared set.
            loader.override_global(name.as_str(), value, false);
        }
        let mut ebpf = loader
            .load(SOCK_OBJ)
            .map_err(|source| DatapathError::Object {
                pin_dir: maps_dir.clone(),
                source: Box::new(source),
            })?;
        let cgroup_file = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut links = Vec::with_capacity(PROGRAMS.len());
        let mut states = Vec::with_capacity(PROGRAMS.len());
        for (name, hook) in PROGRAMS {
            let prog = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| DatapathError::program_load(name, e))?;
            let path = socket_link_pin_path(node_dir, hook);
            let (link, state) = attach_one(prog, name, hook, &path, cgroup, &cgroup_file)?;
            links.push(link);
            states.push(state);
        }
        info!(cgroup = %cgroup.display(), ?states, "socket load balancing attached");
        Ok((
            Self {
                _ebpf: ebpf,
                links,
                cgroup: cgroup.to_path_buf(),
            },
            states,
        ))
    }

    /// Removes the pinned socket links of a node: with nobody else holding them, the programs
    /// detach from the cgroup. Used when socket LB is turned off; missing pins are fine.
    pub fn remove_pins(node_dir: &Path) -> Result<(), DatapathError> {
        for (_, hook) in PROGRAMS {
            let path = socket_link_pin_path(node_dir, hook);
            match std::fs::remove_file(&path) {
                Ok(()) => info!(path = %path.display(), "socket LB link removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DatapathError::PinPath {
                        action: "removing",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::ProgramMissing { program: name })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        })
}

fn attach_one(
    prog: &mut CgroupSockAddr,
    name: &'static str,
    hook: &'static str,
    path: &Path,
    cgroup: &Path,
    cgroup_file: &File,
) -> Result<(FdLink, LinkState), DatapathError> {
    if path.exists() {
        match replace_pinned(prog, name, path) {
            Ok(done) => return Ok(done),
            Err(e) => {
                // A stale pin (another cgroup's, a detached link): start over.
                warn!(path = %path.display(), error = %e, "replacing stale socket link pin");
                std::fs::remove_file(path).map_err(|source| DatapathError::PinPath {
                    action: "removing",
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
    }
    let attach_err = |source| DatapathError::Attach {
        program: name,
        interface: cgroup.display().to_string(),
        hook,
        source: Box::new(source),
    };
    // A cgroup bpf_link always coexists with other programs (BPF_F_ALLOW_MULTI is implied);
    // the link API takes no flags, which is what `Single` passes.
    let id = prog
        .attach(cgroup_file, CgroupAttachMode::Single)
        .map_err(attach_err)?;
    let link = prog.take_link(id).map_err(attach_err)?;
    let reopen_err = |source| DatapathError::LinkReopen {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let fd_link = FdLink::try_from(link).map_err(reopen_err)?;
    let link_id = fd_link.info().map_err(reopen_err)?.id();
    let pinned = fd_link.pin(path).map_err(|source| DatapathError::LinkPin {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok((FdLink::from(pinned), LinkState::Created { link_id }))
}

/// Reopens a pinned cgroup link and swaps `prog` in with `BPF_LINK_UPDATE`.
fn replace_pinned(
    prog: &CgroupSockAddr,
    name: &'static str,
    path: &Path,
) -> Result<(FdLink, LinkState), DatapathError> {
    let reopen_err = |source| DatapathError::LinkReopen {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let fd_link = FdLink::from(PinnedLink::from_pin(path).map_err(reopen_err)?);
    let prog_fd = prog.fd().map_err(|source| DatapathError::Program {
        program: name,
        source: Box::new(source),
    })?;
    let update_err = |source| DatapathError::LinkUpdate {
        path: path.to_path_buf(),
        source,
    };
    // aya's FdLink hides its fd: open the pin once more for the update.
    let link_fd = obj_get(path).map_err(update_err)?;
    link_update(link_fd.as_raw_fd(), prog_fd.as_fd().as_raw_fd()).map_err(update_err)?;
    let link_id = fd_link.info().map_err(reopen_err)?.id();
    Ok((fd_link, LinkState::Replaced { link_id }))
}

/// `union bpf_attr`'s `obj_get` member.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    /// Explicit, so it is zero: the kernel rejects non-zero bytes past the last field.
    pad: u32,
}

/// `bpf(BPF_OBJ_GET)`: a new fd on a pinned object.
fn obj_get(path: &Path) -> Result<OwnedFd, std::io::Error> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    // SAFETY: attr is a fully initialised prefix of bpf_attr of the size we pass; pathname
    // points to a NUL-terminated string alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjGetAttr,
            size_of::<ObjGetAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `union bpf_attr`'s `link_update` member.
#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `bpf(BPF_LINK_UPDATE)`: aya only exposes it for tcx/XDP links.
fn link_update(link_fd: i32, prog_fd: i32) -> Result<(), std::io::Error> {
    let bad = |_| std::io::Error::from_raw_os_error(libc::EBADF);
    let mut attr = LinkUpdateAttr {
        link_fd: u32::try_from(link_fd).map_err(bad)?,
        new_prog_fd: u32::try_from(prog_fd).map_err(bad)?,
        ..LinkUpdateAttr::default()
    };
    // SAFETY: attr is a fully initialised prefix of bpf_attr of the size we pass; the kernel
    // only reads it during the call, and both fds are open for its duration.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &mut attr as *mut LinkUpdateAttr,
            size_of::<LinkUpdateAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The cgroup2 mount point, from `/proc/self/mounts` (e.g. `/sys/fs/cgroup` or
/// `/sys/fs/cgroup/unified` on hybrid hosts): the default attach point of socket LB.
pub fn cgroup2_root() -> Result<PathBuf, DatapathError> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").map_err(|source| DatapathError::Cgroup {
            path: PathBuf::from("/proc/self/mounts"),
            source,
        })?;
    parse_cgroup2_root(&mounts).ok_or(DatapathError::NoCgroup2)
}

fn parse_cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            parse_cgroup2_root(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_cgroup2_root("sysfs /sys sysfs rw 0 0\n"), None);
    }

    #[test]
    fn link_pins_sit_next_to_the_tcx_links() {
        assert_eq!(
            socket_link_pin_path(Path::new("/sys/fs/bpf/porin/node-1"), "connect4"),
            PathBuf::from("/sys/fs/bpf/porin/node-1/links/cgroup-connect4")
        );
    }
}
