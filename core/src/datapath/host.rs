//! The node device program: `bpf/host.c` on tcx ingress of the node's external devices
//! (NodePort, see `bpf/lib/nodeport.h`).
//!
//! Its maps are the pod datapath's, reopened by pin name (load the pod datapath first). Like
//! the pod links, each attachment is a bpf_link pinned at
//! `<pin_root>/<node>/links/netdev-<ifname>-ingress`: it outlives the agent, and a restarted
//! agent swaps its freshly loaded program in with `bpf_link_update` (atomic). Needs tcx
//! (Linux >= 6.6) and `bpf_redirect_neigh` (>= 5.10).

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
    },
};
use tracing::{info, warn};

use super::{attach::LinkState, error::DatapathError};

/// The compiled `bpf/host.c`.
static HOST_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/host.o"));

/// The program's ELF symbol.
pub const HOST_PROGRAM: &str = "porin_from_netdev";
/// The entry for an L3 tunnel device (the WireGuard device): NodePort replies that came
/// back through the tunnel.
pub const TUNNEL_PROGRAM: &str = "porin_from_tunnel";
/// NodePort translations, forward (written by the datapath).
pub const MAP_NP_NAT: &str = "porin_np_nat";
/// NodePort translations, reverse (written by the datapath).
pub const MAP_NP_RNAT: &str = "porin_np_rnat";

/// The switches `CFG_NODE_IPV6_0..3` of IPv6 NodePort (`bpf/lib/nodeport6.h`): `ip` as four words in network byte order (as in memory).
pub fn node_ipv6_switches(ip: std::net::Ipv6Addr) -> Vec<(String, u32)> {
    ip.octets()
        .chunks_exact(4)
        .enumerate()
        .map(|(i, w)| {
            (
                format!("CFG_NODE_IPV6_{i}"),
                u32::from_ne_bytes([w[0], w[1], w[2], w[3]]),
            )
        })
        .collect()
}

const PIN_PREFIX: &str = "netdev-";
const PIN_SUFFIX: &str = "-ingress";

/// `<node_dir>/links/netdev-<ifname>-ingress`.
pub fn host_link_pin_path(node_dir: &Path, ifname: &str) -> PathBuf {
    node_dir
        .join("links")
        .join(format!("{PIN_PREFIX}{ifname}{PIN_SUFFIX}"))
}

/// The node device program of one node, loaded, and the devices it is attached to.
pub struct HostDatapath {
    ebpf: Ebpf,
    node_dir: PathBuf,
    links: Vec<(String, FdLink)>,
}

impl std::fmt::Debug for HostDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDatapath")
            .field("node_dir", &self.node_dir)
            .field(
                "devices",
                &self.links.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HostDatapath {
    /// Loads `host.o` with the maps pinned under `<node_dir>/maps` and the load-time
    /// `switches` (`CFG_NODE_IPV4` above all), without attaching it.
    pub fn load(node_dir: &Path, switches: &[(String, u32)]) -> Result<Self, DatapathError> {
        let maps_dir = node_dir.join("maps");
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps_dir);
        for (name, value) in switches {
            // Not must-exist: host.o reads only the switches it needs of the shared set.
            loader.override_global(name.as_str(), value, false);
        }
        let mut ebpf = loader
            .load(HOST_OBJ)
            .map_err(|source| DatapathError::Object {
                pin_dir: maps_dir.clone(),
                source: Box::new(source),
            })?;
        for name in [HOST_PROGRAM, TUNNEL_PROGRAM] {
            program(&mut ebpf, name)?
                .load()
                .map_err(|e| DatapathError::program_load(name, e))?;
        }
        Ok(Self {
            ebpf,
            node_dir: node_dir.to_path_buf(),
            links: Vec::new(),
        })
    }

    /// Attaches to tcx ingress of `ifname`, replacing the program of a link a previous agent
    /// pinned there.
    pub fn attach(&mut self, ifname: &str) -> Result<LinkState, DatapathError> {
        self.attach_program(ifname, HOST_PROGRAM)
    }

    /// Like [`Self::attach`], with the tunnel entry ([`TUNNEL_PROGRAM`]) on an L3 tunnel
    /// device.
    pub fn attach_tunnel(&mut self, ifname: &str) -> Result<LinkState, DatapathError> {
        self.attach_program(ifname, TUNNEL_PROGRAM)
    }

    fn attach_program(
        &mut self,
        ifname: &str,
        name: &'static str,
    ) -> Result<LinkState, DatapathError> {
        // Attaching again (a program set kept by the agent and swapped back in) replaces
        // the link held for `ifname`; the pinned link itself stays attached.
        self.links.retain(|(device, _)| device != ifname);
        let path = host_link_pin_path(&self.node_dir, ifname);
        if path.exists() {
            match self.replace_pinned(&path, ifname, name) {
                Ok(state) => return Ok(state),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "replacing stale device link pin");
                    remove_pin(&path)?;
                }
            }
        }
        let attach_err = |source| DatapathError::Attach {
            program: name,
            interface: ifname.to_owned(),
            hook: "ingress",
            source: Box::new(source),
        };
        let prog = program(&mut self.ebpf, name)?;
        let id = prog
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        let reopen_err = |source| DatapathError::LinkReopen {
            path: path.clone(),
            source: Box::new(source),
        };
        let fd_link = FdLink::try_from(link).map_err(reopen_err)?;
        let link_id = fd_link.info().map_err(reopen_err)?.id();
        let pinned = fd_link
            .pin(&path)
            .map_err(|source| DatapathError::LinkPin {
                path: path.clone(),
                source: Box::new(source),
            })?;
        self.links.push((ifname.to_owned(), FdLink::from(pinned)));
        info!(ifname, link_id, "node device program attached");
        Ok(LinkState::Created { link_id })
    }

    fn replace_pinned(
        &mut self,
        path: &Path,
        ifname: &str,
        name: &'static str,
    ) -> Result<LinkState, DatapathError> {
        let reopen_err = |source| DatapathError::LinkReopen {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let attach_err = |source| DatapathError::Attach {
            program: name,
            interface: ifname.to_owned(),
            hook: "ingress",
            source: Box::new(source),
        };
        let pinned = PinnedLink::from_pin(path).map_err(reopen_err)?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(reopen_err)?;
        let prog = program(&mut self.ebpf, name)?;
        let id = prog.attach_to_link(link).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        let fd_link = FdLink::try_from(link).map_err(reopen_err)?;
        let link_id = fd_link.info().map_err(reopen_err)?.id();
        self.links.push((ifname.to_owned(), fd_link));
        info!(ifname, link_id, "node device program replaced");
        Ok(LinkState::Replaced { link_id })
    }

    /// The program's file descriptor (e.g. for [`super::test_run`]).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, DatapathError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(HOST_PROGRAM)
            .ok_or(DatapathError::ProgramMissing {
                program: HOST_PROGRAM,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                program: HOST_PROGRAM,
                source: Box::new(source),
            })?;
        let fd = prog.fd().map_err(|source| DatapathError::Program {
            program: HOST_PROGRAM,
            source: Box::new(source),
        })?;
        Ok(fd.as_fd())
    }

    /// Removes every device link pin of a node except those of `keep`: with nobody else
    /// holding them, the program detaches from those devices. Missing pins are fine.
    pub fn remove_pins(node_dir: &Path, keep: &[String]) -> Result<(), DatapathError> {
        let dir = node_dir.join("links");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(DatapathError::PinPath {
                    action: "reading",
                    path: dir,
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(dev) = name
                .strip_prefix(PIN_PREFIX)
                .and_then(|n| n.strip_suffix(PIN_SUFFIX))
            else {
                continue;
            };
            if !keep.iter().any(|k| k == dev) {
                remove_pin(&entry.path())?;
                info!(device = dev, "node device program removed");
            }
        }
        Ok(())
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::ProgramMissing { program: name })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        })
}

fn remove_pin(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::PinPath {
            action: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_link_pins_sit_next_to_the_pod_links() {
        assert_eq!(
            host_link_pin_path(Path::new("/sys/fs/bpf/porin/node-1"), "ul0"),
            PathBuf::from("/sys/fs/bpf/porin/node-1/links/netdev-ul0-ingress")
        );
    }
}
