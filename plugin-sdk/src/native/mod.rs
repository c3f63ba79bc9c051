//! Native plugins: a Rust [`Plugin`](crate::Plugin) built as a shared object (`cdylib`)
//! and loaded by the agent from `[[plugins.native]] path = ...`.
//!
//! The author writes the same trait as the built-in plugins and exports it with
//! [`export_native_plugin!`](crate::export_native_plugin):
//!
//! ```ignore
//! struct Exporter { /* ... */ }
//! impl porin_plugin_sdk::Plugin for Exporter { /* ... */ }
//! porin_plugin_sdk::export_native_plugin!(Exporter::default());
//! ```
//!
//! The boundary is a small C ABI ([`abi`]), versioned by [`abi::ABI_VERSION`]: the agent
//! reads the exported version before anything else and refuses an object built against
//! another one. Panics are caught at the boundary; the agent then disables the plugin.
//! See `docs/plugins.md`.

pub mod abi;
pub mod guest;
mod guest_context;
pub mod wire;

pub use abi::ABI_VERSION;
pub use wire::{StartInfo, StateChange};

/// Exports a [`Plugin`](crate::Plugin) through the native ABI. `$make` is an expression
/// building the plugin (called once per load). Use it once, at the root of a `cdylib`.
#[macro_export]
macro_rules! export_native_plugin {
    ($make:expr) => {
        /// The native ABI version this object was built against.
        #[unsafe(no_mangle)]
        pub extern "C" fn porin_plugin_abi_version() -> u32 {
            $crate::native::abi::ABI_VERSION
        }

        unsafe extern "C" fn __porin_native_create(
            out: *mut ::std::ffi::c_void,
            write: $crate::native::abi::WriteFn,
        ) -> *mut ::std::ffi::c_void {
            // SAFETY: the agent passes a valid output pair.
            unsafe {
                $crate::native::guest::create(out, write, || {
                    let plugin: ::std::boxed::Box<dyn $crate::Plugin> =
                        ::std::boxed::Box::new($make);
                    plugin
                })
            }
        }

        static __PORIN_NATIVE_VTABLE: $crate::native::abi::PluginVTable =
            $crate::native::abi::PluginVTable {
                create: __porin_native_create,
                ..$crate::native::guest::VTABLE
            };

        /// The plugin's entry points.
        #[unsafe(no_mangle)]
        pub extern "C" fn porin_plugin_vtable() -> *const $crate::native::abi::PluginVTable {
            &__PORIN_NATIVE_VTABLE
        }
    };
}
