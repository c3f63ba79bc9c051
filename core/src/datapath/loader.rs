//! Loading the pod datapath object with its maps pinned per node.

use std::{
    collections::HashMap,
    os::fd::{AsFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader, programs::SchedClassifier};
use tracing::{debug, info};

use super::{
    attach::EndpointLinks,
    error::DatapathError,
    maglev_map::{
        DEFAULT_MAGLEV_MAX_ENTRIES, DEFAULT_MAGLEV_TABLE_SIZE, MAGLEV_TABLE_SIZE_SWITCH,
        MAP_LB_MAGLEV, ensure_maglev_map,
    },
    map_sizes::{globals, is_map_size, map_sizes},
    pins,
};

/// The compiled `bpf/pod.c`.
static POD_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pod.o"));

/// Default pin root; a node's objects live under `<pin_root>/<node>/`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/porin";

/// The programs of `bpf/pod.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodProgram {
    /// tcx ingress of the host-side veth: packets leaving the pod.
    FromPod,
    /// tcx egress of the host-side veth: packets entering the pod.
    ToPod,
}

impl PodProgram {
    /// Both programs.
    pub const ALL: [Self; 2] = [Self::FromPod, Self::ToPod];

    /// The ELF symbol name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "porin_from_pod",
            Self::ToPod => "porin_to_pod",
        }
    }
}

/// How to load the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// This node's name: its pins live under `<pin_root>/<node_name>/`.
    pub node_name: String,
    /// Root of all Porin pins, on a bpffs. Default `/sys/fs/bpf/porin`.
    pub pin_root: PathBuf,
    /// Load-time switches: `volatile const` globals of the C programs (`CFG_*`), set with
    /// `EbpfLoader::override_global`. A name the object does not define is a load error.
    /// Names `max_entries:<map>` size that map instead (see `map_sizes`).
    pub switches: Vec<(String, u32)>,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            node_name: String::from("node"),
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            switches: Vec::new(),
        }
    }
}

/// The loaded pod datapath of one node: programs, pinned maps, and the links it attached.
///
/// Dropping it closes file descriptors only: maps and tcx links stay pinned, so traffic keeps
/// flowing until a new agent reopens them (see `attach_endpoint`).
pub struct Datapath {
    pub(crate) ebpf: Ebpf,
    pub(crate) node_dir: PathBuf,
    pub(crate) links: HashMap<String, EndpointLinks>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("node_dir", &self.node_dir)
            .field("endpoints", &self.links.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads `pod.o`, pinning its maps at `<pin_root>/<node>/maps` (maps already pinned there
    /// are reused, so their content survives restarts), and loads both programs into the kernel.
    pub fn load(config: &DatapathConfig) -> Result<Self, DatapathError> {
        if config.pin_root.starts_with(pins::BPFFS_ROOT) {
            pins::ensure_bpffs()?;
        }
        let node_dir = pins::node_pin_dir(&config.pin_root, &config.node_name);
        let maps_dir = node_dir.join("maps");
        for dir in [&maps_dir, &node_dir.join("links")] {
            std::fs::create_dir_all(dir).map_err(|source| DatapathError::PinPath {
                action: "creating",
                path: dir.clone(),
                source,
            })?;
        }

        // The Maglev map is created here, not by aya: its tables' size follows the config.
        let maglev_m = globals(&config.switches)
            .find(|(name, _)| *name == MAGLEV_TABLE_SIZE_SWITCH)
            .map_or(DEFAULT_MAGLEV_TABLE_SIZE, |(_, m)| m);
        let maglev_max = map_sizes(&config.switches)
            .find(|(name, _)| *name == MAP_LB_MAGLEV)
            .map_or(DEFAULT_MAGLEV_MAX_ENTRIES, |(_, max)| max);
        ensure_maglev_map(&maps_dir, maglev_m, maglev_max)?;

        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(&maps_dir);
        for (name, value) in &config.switches {
            if !is_map_size(name) {
                loader.override_global(name.as_str(), value, true);
            }
        }
        // Sizes apply to maps this load creates; `resize_pinned_maps` (agent start) makes
        // sure a pinned map of another size is not reused.
        for (name, size) in map_sizes(&config.switches) {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader
            .load(POD_OBJ)
            .map_err(|source| DatapathError::Object {
                pin_dir: maps_dir.clone(),
                source: Box::new(source),
            })?;

        for program in PodProgram::ALL {
            let prog = classifier(&mut ebpf, program)?;
            prog.load()
                .map_err(|e| DatapathError::program_load(program.name(), e))?;
            debug!(program = program.name(), "loaded");
        }
        info!(node_dir = %node_dir.display(), "datapath loaded");
        Ok(Self {
            ebpf,
            node_dir,
            links: HashMap::new(),
        })
    }

    /// `<pin_root>/<node>`.
    pub fn node_pin_dir(&self) -> &Path {
        &self.node_dir
    }

    /// Where the map `name` (e.g. `porin_ipcache`) is pinned.
    pub fn map_pin_path(&self, name: &str) -> PathBuf {
        self.node_dir.join("maps").join(name)
    }

    /// Where the link of `ifname` for `hook` (`ingress` or `egress`) is pinned.
    pub fn link_pin_path(&self, ifname: &str, hook: &str) -> PathBuf {
        self.node_dir.join("links").join(format!("{ifname}-{hook}"))
    }

    /// The kernel id of a loaded program (what `bpftool prog` and tcx queries show).
    pub fn program_id(&self, program: PodProgram) -> Result<u32, DatapathError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program.name())
            .ok_or(DatapathError::ProgramMissing {
                program: program.name(),
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                program: program.name(),
                source: Box::new(source),
            })?;
        let info = prog.info().map_err(|source| DatapathError::Program {
            program: program.name(),
            source: Box::new(source),
        })?;
        Ok(info.id())
    }

    /// The file descriptor of a loaded program (e.g. for [`super::test_run`]).
    pub fn program_fd(&self, program: PodProgram) -> Result<BorrowedFd<'_>, DatapathError> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(program.name())
            .ok_or(DatapathError::ProgramMissing {
                program: program.name(),
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                program: program.name(),
                source: Box::new(source),
            })?;
        let fd = prog.fd().map_err(|source| DatapathError::Program {
            program: program.name(),
            source: Box::new(source),
        })?;
        Ok(fd.as_fd())
    }
}

pub(crate) fn classifier(
    ebpf: &mut Ebpf,
    program: PodProgram,
) -> Result<&mut SchedClassifier, DatapathError> {
    ebpf.program_mut(program.name())
        .ok_or(DatapathError::ProgramMissing {
            program: program.name(),
        })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: program.name(),
            source: Box::new(source),
        })
}
