//! Attaching the pod programs to a pod's host-side veth, surviving agent restarts.
//!
//! With tcx (Linux >= 6.6) each attachment is a bpf_link pinned at
//! `<pin_root>/<node>/links/<ifname>-ingress|egress`. A pinned link outlives the agent, so
//! traffic keeps being processed while it is down; a restarted agent reopens the pin and swaps
//! its freshly loaded program in with `bpf_link_update` (atomic: no packet sees no program).
//!
//! Older kernels fall back to clsact + netlink filters, which cannot be pinned: the filter is
//! left in place when the `Datapath` is dropped, but a restart attaches a new one next to it.
//!
//! Attachment happens in the calling thread's network namespace.

use std::{mem::ManuallyDrop, path::Path};

use aya::{
    programs::{
        LinkOrder,
        links::{FdLink, Link as _, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcAttachType},
    },
    util::KernelVersion,
};
use tracing::{info, warn};

use super::{
    error::DatapathError,
    loader::{Datapath, PodProgram, classifier},
};

/// How one hook of an endpoint was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// A new tcx link was created and pinned.
    Created { link_id: u32 },
    /// An already pinned tcx link was reopened and its program replaced atomically.
    Replaced { link_id: u32 },
    /// Legacy clsact + netlink filter (kernel < 6.6).
    Netlink,
}

/// The result of [`Datapath::attach_endpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachReport {
    /// `porin_from_pod` on tcx ingress.
    pub from_pod: LinkState,
    /// `porin_to_pod` on tcx egress.
    pub to_pod: LinkState,
}

pub(crate) enum HookLink {
    Tcx(FdLink),
    /// Never detached on drop: the filter must survive the agent.
    Netlink(ManuallyDrop<SchedClassifierLink>),
}

pub(crate) struct EndpointLinks {
    from_pod: HookLink,
    to_pod: HookLink,
}

/// The tc hook and pin suffix of a program.
const fn hook(program: PodProgram) -> (TcAttachType, &'static str) {
    match program {
        PodProgram::FromPod => (TcAttachType::Ingress, "ingress"),
        PodProgram::ToPod => (TcAttachType::Egress, "egress"),
    }
}

fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

impl Datapath {
    /// Attaches both pod programs to `ifname` (the host side of a pod's veth), reusing pinned
    /// links left by a previous agent.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<AttachReport, DatapathError> {
        let tcx = tcx_supported();
        let mut attach = |program| {
            if tcx {
                self.attach_tcx(program, ifname)
            } else {
                self.attach_netlink(program, ifname)
            }
        };
        let (from_link, from_pod) = attach(PodProgram::FromPod)?;
        let (to_link, to_pod) = attach(PodProgram::ToPod)?;
        self.links.insert(
            ifname.to_owned(),
            EndpointLinks {
                from_pod: from_link,
                to_pod: to_link,
            },
        );
        info!(ifname, ?from_pod, ?to_pod, "endpoint attached");
        Ok(AttachReport { from_pod, to_pod })
    }

    /// Detaches both programs from `ifname` and removes the link pins.
    pub fn detach_endpoint(&mut self, ifname: &str) -> Result<(), DatapathError> {
        let held = self.links.remove(ifname);
        for program in PodProgram::ALL {
            let (_, name) = hook(program);
            let path = self.link_pin_path(ifname, name);
            remove_link_pin(&path)?;
        }
        if let Some(EndpointLinks { from_pod, to_pod }) = held {
            for (link, program) in [(from_pod, PodProgram::FromPod), (to_pod, PodProgram::ToPod)] {
                match link {
                    // Closing the last fd of an unpinned tcx link detaches it.
                    HookLink::Tcx(fd_link) => drop(fd_link),
                    HookLink::Netlink(link) => {
                        ManuallyDrop::into_inner(link).detach().map_err(|source| {
                            DatapathError::Detach {
                                interface: ifname.to_owned(),
                                hook: hook(program).1,
                                source: Box::new(source),
                            }
                        })?
                    }
                }
            }
        }
        info!(ifname, "endpoint detached");
        Ok(())
    }

    fn attach_tcx(
        &mut self,
        program: PodProgram,
        ifname: &str,
    ) -> Result<(HookLink, LinkState), DatapathError> {
        let (attach_type, name) = hook(program);
        let path = self.link_pin_path(ifname, name);
        if path.exists() {
            match self.replace_pinned(program, &path, ifname) {
                Ok(done) => return Ok(done),
                // A stale pin (interface gone, wrong link type): start over.
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "replacing stale link pin");
                    remove_link_pin(&path)?;
                }
            }
        }

        let attach_err = |source| DatapathError::Attach {
            program: program.name(),
            interface: ifname.to_owned(),
            hook: name,
            source: Box::new(source),
        };
        let prog = classifier(&mut self.ebpf, program)?;
        let id = prog
            .attach_with_options(
                ifname,
                attach_type,
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
        Ok((
            HookLink::Tcx(FdLink::from(pinned)),
            LinkState::Created { link_id },
        ))
    }

    /// Reopens a pinned tcx link and swaps our program in with `bpf_link_update`.
    fn replace_pinned(
        &mut self,
        program: PodProgram,
        path: &Path,
        ifname: &str,
    ) -> Result<(HookLink, LinkState), DatapathError> {
        let reopen_err = |source| DatapathError::LinkReopen {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let attach_err = |source| DatapathError::Attach {
            program: program.name(),
            interface: ifname.to_owned(),
            hook: hook(program).1,
            source: Box::new(source),
        };
        let pinned = PinnedLink::from_pin(path).map_err(reopen_err)?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(reopen_err)?;
        let prog = classifier(&mut self.ebpf, program)?;
        let id = prog.attach_to_link(link).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        let fd_link = FdLink::try_from(link).map_err(reopen_err)?;
        let link_id = fd_link.info().map_err(reopen_err)?.id();
        Ok((HookLink::Tcx(fd_link), LinkState::Replaced { link_id }))
    }

    fn attach_netlink(
        &mut self,
        program: PodProgram,
        ifname: &str,
    ) -> Result<(HookLink, LinkState), DatapathError> {
        let (attach_type, name) = hook(program);
        // Fails with EEXIST when the qdisc is already there, which is what we want.
        if let Err(e) = tc::qdisc_add_clsact(ifname) {
            tracing::debug!(ifname, error = %e, "clsact qdisc not added");
        }
        let attach_err = |source| DatapathError::Attach {
            program: program.name(),
            interface: ifname.to_owned(),
            hook: name,
            source: Box::new(source),
        };
        let prog = classifier(&mut self.ebpf, program)?;
        let id = prog
            .attach_with_options(
                ifname,
                attach_type,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        Ok((
            HookLink::Netlink(ManuallyDrop::new(link)),
            LinkState::Netlink,
        ))
    }
}

fn remove_link_pin(path: &Path) -> Result<(), DatapathError> {
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

impl Datapath {
    /// How many interfaces have Porin's programs attached by this agent.
    pub fn attached_interfaces(&self) -> usize {
        self.links.len()
    }
}
