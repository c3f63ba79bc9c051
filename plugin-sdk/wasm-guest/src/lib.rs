//! Write Porin flow filters and metrics labellers in Rust.
//!
//! A filter in a few lines (build with `cargo build --target
//! wasm32-unknown-unknown --release`, crate type `cdylib`):
//!
//! ```ignore
//! use porin_wasm_guest::{Flow, Verdict, filter};
//!
//! filter!(fn keep(flow: &Flow) -> bool {
//!     flow.verdict() == Verdict::Dropped
//! });
//! ```
//!
//! With configuration or state, implement [`Filter`] or [`Labeller`] and
//! export it with [`export_filter!`] or [`export_labeller!`]. The SDK hides the
//! core-module encoding of the `porin:flow@0.1.0` contract (`porin-wasm-abi`).

mod flow;
mod host;
#[doc(hidden)]
pub mod runtime;

pub use flow::{Direction, Endpoint, Flow, L7, Protocol, TcpFlags, Verdict};
pub use host::{Level, log};
pub use porin_wasm_abi as abi;

/// A flow filter: `keep` decides for each flow whether it is stored,
/// exported and counted.
pub trait Filter: Sized {
    /// Build the filter from its `config` string (`[[plugins.observe.wasm]]
    /// config`); an error refuses the module with that message.
    fn new(config: &str) -> Result<Self, String>;
    fn keep(&mut self, flow: &Flow<'_>) -> bool;
}

/// A metrics labeller: declares its label names once and gives their values
/// for each flow.
pub trait Labeller: Sized {
    /// The label names, declared when the module loads. Setting any other
    /// name quarantines the module.
    fn labels(&self) -> Vec<String>;
    fn new(config: &str) -> Result<Self, String>;
    /// Set values with `out.set(name, value)`; unset labels stay empty.
    fn label(&mut self, flow: &Flow<'_>, out: &mut LabelSink);
}

/// Where a labeller puts the values for one flow.
pub struct LabelSink {
    flow: i32,
}

impl LabelSink {
    #[doc(hidden)]
    pub fn new(flow: i32) -> Self {
        Self { flow }
    }

    /// Set a declared label for this flow.
    pub fn set(&mut self, name: &str, value: &str) {
        host::set_label(self.flow, name, value);
    }
}

/// Export a filter made of one function: `filter!(fn keep(flow: &Flow) -> bool { ... })`.
#[macro_export]
macro_rules! filter {
    (fn $name:ident($flow:ident: &$flow_type:ty) -> bool $body:block) => {
        struct __PorinFnFilter;
        impl $crate::Filter for __PorinFnFilter {
            fn new(_config: &str) -> Result<Self, String> {
                Ok(Self)
            }
            fn keep(&mut self, $flow: &$flow_type) -> bool {
                $body
            }
        }
        $crate::export_filter!(__PorinFnFilter);
    };
}

/// Export a type implementing [`Filter`] as the module's filter.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        $crate::__porin_exports!($ty, KIND_FILTER, init_filter, porin_filter, run_filter);
    };
}

/// Export a type implementing [`Labeller`] as the module's labeller.
#[macro_export]
macro_rules! export_labeller {
    ($ty:ty) => {
        $crate::__porin_exports!($ty, KIND_LABELLER, init_labeller, porin_label, run_labeller);
    };
}

/// The exports of the contract, for a filter or a labeller.
#[doc(hidden)]
#[macro_export]
macro_rules! __porin_exports {
    ($ty:ty, $kind:ident, $init:ident, $call:ident, $run:ident) => {
        static __PORIN_STATE: $crate::runtime::State<$ty> = $crate::runtime::State::new();

        #[unsafe(no_mangle)]
        pub extern "C" fn porin_flow_0_1() -> i32 {
            $crate::abi::$kind
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn porin_alloc(len: i32) -> i32 {
            $crate::runtime::alloc(len)
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn porin_init(ptr: i32, len: i32) -> i32 {
            $crate::runtime::$init(&__PORIN_STATE, ptr, len)
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn $call(batch: i32) -> i32 {
            $crate::runtime::$run(&__PORIN_STATE, batch)
        }
    };
}
