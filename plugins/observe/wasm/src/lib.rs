//! porin-wasm: the WebAssembly host of the flow pipeline. User modules
//! implementing `porin:flow@0.1.0` (filters and metrics labellers) run in
//! wasmtime: one engine, each module compiled once with its own store, no
//! WASI unless granted, a deadline per call (epochs), a memory cap, CPU
//! accounting, quarantine on failure and reload when the file changes.
//! See `docs/wasm.md`.

pub mod cardinality;
pub mod config;
pub mod cpu;
pub mod encode;
pub mod engine;
pub mod error;
mod host_funcs;
mod host_state;
pub mod instance;
mod linker;
mod memory;
pub mod metrics;
pub mod module;
pub mod modules;
mod wasi;

pub use config::{FailMode, WasiCapability, WasmKind, WasmModuleConfig};
pub use error::{CallError, LoadError, Reason};
pub use metrics::WasmMetrics;
pub use module::{ModuleStatus, WasmModule};
pub use modules::{DEFAULT_WATCH_INTERVAL, WasmModules, Watcher};
