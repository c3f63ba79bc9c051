//! Why a module was refused or quarantined.

use std::path::PathBuf;

use thiserror::Error;

/// The `reason` label of `porin_wasm_module_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The file cannot be read or is not valid WebAssembly.
    Load,
    /// Exports missing or with the wrong signature, or the wrong kind.
    Contract,
    /// Built for another `porin:flow` version.
    Version,
    /// Imports WASI it was not granted, or WASI Porin does not offer.
    Wasi,
    /// Imports something else the host does not have.
    Import,
    /// Its `init` refused the configuration or failed.
    Init,
    /// Trapped during a call.
    Trap,
    /// Overran its deadline.
    Deadline,
    /// Grew past its memory cap.
    Memory,
    /// A labeller set a label it did not declare, or declared a bad one.
    Label,
    /// A labeller's value was replaced by `other` (the cardinality cap).
    Cardinality,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Contract => "contract",
            Self::Version => "version",
            Self::Wasi => "wasi",
            Self::Import => "import",
            Self::Init => "init",
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Label => "label",
            Self::Cardinality => "cardinality",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A module that could not be loaded (or reloaded).
#[derive(Debug, Clone, Error)]
#[error("wasm module `{module}` ({path}): {reason}: {message}")]
pub struct LoadError {
    pub module: String,
    pub path: PathBuf,
    pub reason: Reason,
    pub message: String,
}

/// A call that failed; the module is quarantined.
#[derive(Debug, Clone, Error)]
#[error("{reason}: {message}")]
pub struct CallError {
    pub reason: Reason,
    pub message: String,
}
