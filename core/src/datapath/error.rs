//! Errors of the datapath manager. Each variant names what failed (program, interface, pin
//! path); program load failures carry the verifier log and print it.

use std::{io, path::PathBuf};

use aya::{
    EbpfError,
    maps::MapError,
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};
use thiserror::Error;

/// Failure of a datapath operation.
#[derive(Debug, Error)]
pub enum DatapathError {
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action} pin path {path}: {source}")]
    PinPath {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing the datapath object (maps pinned under {pin_dir}): {source}")]
    Object {
        pin_dir: PathBuf,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("program {program} is missing from the datapath object")]
    ProgramMissing { program: &'static str },
    /// The verifier log is part of the message: a failing load says exactly why.
    #[error("loading program {program}: {source}\n--- verifier log ---\n{verifier_log}")]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
        verifier_log: String,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {map} is missing from the datapath object")]
    MapMissing { map: &'static str },
    #[error("map {map}: {source}")]
    Map {
        map: String,
        #[source]
        source: Box<MapError>,
    },
    /// Counting a map's entries failed (for `cilium_bpf_map_pressure`).
    #[error("counting the entries of map {map}: {source}")]
    MapCount {
        map: String,
        #[source]
        source: io::Error,
    },
    /// A batched write stopped at element `done` (the ones before it went in).
    #[error("map {map} (max_entries {max_entries}){full}: element {done} of the batch: {source}",
        full = if map_full(source) { " is full" } else { "" })]
    MapBatch {
        map: &'static str,
        max_entries: u32,
        done: usize,
        #[source]
        source: io::Error,
    },
    /// A single-element write the kernel refused (typically a full map).
    #[error("map {map} (max_entries {max_entries}){full}: {source}",
        full = if map_full(source) { " is full" } else { "" })]
    MapWrite {
        map: &'static str,
        max_entries: u32,
        #[source]
        source: io::Error,
    },
    #[error("map porin_lb_maglev{full}: {action}: {source}", full = if map_full(source) { " is full" } else { "" })]
    Maglev {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("attaching {program} to {interface} ({hook}): {source}")]
    Attach {
        program: &'static str,
        interface: String,
        hook: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("reopening pinned link {path}: {source}")]
    LinkReopen {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("pinning link at {path}: {source}")]
    LinkPin {
        path: PathBuf,
        #[source]
        source: Box<PinError>,
    },
    #[error("detaching {hook} of {interface}: {source}")]
    Detach {
        interface: String,
        hook: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("updating the program of pinned link {path}: {source}")]
    LinkUpdate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup2 file system in /proc/self/mounts: socket load balancing needs cgroup v2")]
    NoCgroup2,
    #[error("BPF_PROG_TEST_RUN: {source}")]
    TestRun {
        #[source]
        source: io::Error,
    },
    #[error("event ring buffer: {source}")]
    Events {
        #[source]
        source: io::Error,
    },
}

/// A hash map refuses a new element with E2BIG when it holds `max_entries`.
fn map_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
}

impl DatapathError {
    /// Whether this is a write that failed because the map is full.
    pub fn is_map_full(&self) -> bool {
        matches!(self, Self::MapBatch { source, .. } | Self::MapWrite { source, .. } if map_full(source))
    }

    /// Wraps a program load error, extracting the verifier log when there is one.
    pub(crate) fn program_load(program: &'static str, source: ProgramError) -> Self {
        let verifier_log = match &source {
            ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
            _ => String::from("(none)"),
        };
        Self::ProgramLoad {
            program,
            source: Box::new(source),
            verifier_log,
        }
    }

    pub(crate) fn map(map: impl Into<String>, source: MapError) -> Self {
        Self::Map {
            map: map.into(),
            source: Box::new(source),
        }
    }
}
