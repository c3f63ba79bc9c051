//! `panicking`: a native plugin with a bug. It starts fine and panics the first time a
//! Pod changes, so the agent's handling can be seen (and tested): the panic is caught at
//! the ABI boundary, the plugin is disabled and reported failed, everything else runs.

use std::sync::Arc;

use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError, StateChangeSummary};

#[derive(Default)]
struct Panicking {
    running: bool,
}

impl Plugin for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }

    fn configure(&mut self, _section: &toml::Table) -> Result<(), PluginError> {
        Ok(())
    }

    fn start(&mut self, _ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        self.running = true;
        Ok(())
    }

    #[allow(clippy::panic)]
    fn reconcile(&mut self, change: &StateChangeSummary) -> Result<(), PluginError> {
        if change.touches("Pod") {
            panic!("bug in the panicking example: cannot handle a Pod change");
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        self.running = false;
        Ok(())
    }

    fn health(&self) -> Health {
        if self.running {
            Health::Ok
        } else {
            Health::Stopped
        }
    }
}

porin_plugin_sdk::export_native_plugin!(Panicking::default());
