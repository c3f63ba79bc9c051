//! Native plugins: shared objects implementing the SDK's C ABI
//! (`porin_plugin_sdk::native::abi`), loaded with libloading.
//!
//! [`NativePlugin`] implements the same [`Plugin`](porin_plugin_sdk::Plugin) trait as the
//! built-in plugins, so the manager runs it like any other. A panic inside the object is
//! caught on its side of the boundary; the agent then disables the plugin for good (until
//! it is loaded again) and reports the panic in its health.

mod error;
mod host_calls;
mod library;
mod plugin;
mod unloadable;

pub use error::NativeLoadError;
pub use plugin::NativePlugin;
pub use unloadable::Unloadable;

use porin_plugin_sdk::Plugin;
use tracing::{error, info};

use crate::config::NativePluginConfig;

/// Loads and configures one `[[plugins.native]]` entry. An object that cannot be loaded
/// or configured becomes an [`Unloadable`] carrying the reason, so it is reported in
/// `porin plugins list` and the agent goes on.
pub fn load_configured(entry: &NativePluginConfig) -> Box<dyn Plugin> {
    let mut plugin = match NativePlugin::load(&entry.path) {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "native plugin not loaded");
            return Box::new(Unloadable::new(&entry.path, e.to_string()));
        }
    };
    if let Err(e) = plugin.configure(&entry.settings) {
        let reason = format!("native plugin {}: {e}", entry.path.display());
        error!(%reason, "native plugin not configured");
        return Box::new(Unloadable::new(&entry.path, reason));
    }
    info!(plugin = plugin.name(), path = %entry.path.display(), abi = porin_plugin_sdk::native::ABI_VERSION, "native plugin loaded");
    Box::new(plugin)
}
