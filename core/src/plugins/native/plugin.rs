//! [`NativePlugin`]: a loaded shared object behind the `Plugin` trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use porin_plugin_sdk::native::abi::HostCallbacks;
use porin_plugin_sdk::native::{StartInfo, StateChange};
use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError, StateChangeSummary};
use tokio::sync::broadcast;
use tracing::{error, warn};

use super::error::NativeLoadError;
use super::host_calls::HostData;
use super::library::{CallError, Loaded};

/// A native plugin. Its name is the one the object reports (`Plugin::name`).
pub struct NativePlugin {
    name: &'static str,
    loaded: Arc<Loaded>,
    /// Forwards datapath events to the plugin while it runs.
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// Kept until the plugin is destroyed: the plugin may call back until then.
    host: Option<Box<HostData>>,
}

impl NativePlugin {
    /// Loads the object at `path`: ABI version first, then the plugin's name.
    pub fn load(path: &Path) -> Result<Self, NativeLoadError> {
        let loaded = Loaded::open(path)?;
        let name_fn = loaded.vtable().name;
        let name = loaded
            .call(move |h, out, write| {
                // SAFETY: a live handle and output pair from `call`.
                unsafe { name_fn(h, out, write) }
            })
            .map_err(|e| NativeLoadError::Create {
                path: path.to_path_buf(),
                message: format!("reading its name: {}", describe(&e)),
            })?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NativeLoadError::Create {
                path: path.to_path_buf(),
                message: format!("invalid plugin name `{name}` (letters, digits, `-`, `_`)"),
            });
        }
        Ok(Self {
            // One small string per load, for the trait's `&'static str`.
            name: Box::leak(name.into_boxed_str()),
            loaded: Arc::new(loaded),
            forwarder: None,
            host: None,
        })
    }

    /// The shared object this plugin came from.
    pub fn path(&self) -> &PathBuf {
        &self.loaded.path
    }

    /// The plugin's metrics in the OpenMetrics text format (without `# EOF`).
    pub fn metrics_text(&self) -> Option<String> {
        let metrics = self.loaded.vtable().metrics;
        self.loaded
            .call(move |h, out, write| {
                // SAFETY: a live handle and output pair from `call`.
                unsafe { metrics(h, out, write) }
            })
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn bytes_call(
        &self,
        pick: fn(
            &porin_plugin_sdk::native::abi::PluginVTable,
        ) -> porin_plugin_sdk::native::abi::BytesCall,
        input: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let f = pick(self.loaded.vtable());
        let input = input.to_vec();
        self.loaded.call(move |h, out, write| {
            // SAFETY: a live handle, `input` for the call, and an output pair.
            unsafe { f(h, input.as_ptr(), input.len(), out, write) }
        })
    }

    fn handle_call(
        &self,
        pick: fn(
            &porin_plugin_sdk::native::abi::PluginVTable,
        ) -> porin_plugin_sdk::native::abi::HandleCall,
    ) -> Result<Vec<u8>, CallError> {
        let f = pick(self.loaded.vtable());
        self.loaded.call(move |h, out, write| {
            // SAFETY: a live handle and an output pair.
            unsafe { f(h, out, write) }
        })
    }

    /// After a panic: end the plugin's tasks (best effort) and stop forwarding.
    fn disable_after_panic(&mut self, message: &str) {
        error!(plugin = self.name, path = %self.loaded.path.display(), panic = %message,
            "native plugin panicked; it is disabled");
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
    }

    fn error(&mut self, e: CallError, make: impl FnOnce(String) -> PluginError) -> PluginError {
        if let CallError::Panicked(message) = &e {
            let message = message.clone();
            self.disable_after_panic(&message);
        }
        make(describe(&e))
    }
}

/// The callback table, sent to the plugin thread. Its data (the boxed `HostData`) lives
/// until the plugin is destroyed, and the callbacks are thread-safe.
struct SendCallbacks(HostCallbacks);

// SAFETY: see above.
unsafe impl Send for SendCallbacks {}

impl Drop for NativePlugin {
    fn drop(&mut self) {
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
        // The aborted forwarder lets go of the object soon; wait for it (bounded), so the
        // object is unloaded when the plugin is dropped, not at some later event.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while Arc::strong_count(&self.loaded) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

fn describe(e: &CallError) -> String {
    match e {
        CallError::Failed(m) => m.clone(),
        CallError::Panicked(m) => format!("panicked: {m}"),
    }
}

impl Plugin for NativePlugin {
    fn name(&self) -> &'static str {
        self.name
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        let text = toml::to_string(section).unwrap_or_default();
        let name = self.name.to_string();
        match self.bytes_call(|v| v.configure, text.as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e, |message| {
                // The plugin's own errors already carry `plugins.<name>: `.
                let prefix = format!("plugins.{name}: ");
                PluginError::Config {
                    plugin: name.clone(),
                    key: None,
                    message: message
                        .strip_prefix(&prefix)
                        .map(str::to_string)
                        .unwrap_or(message),
                }
            })),
        }
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let info = StartInfo {
            node_name: ctx.node_name().to_string(),
            state_dir: ctx.state_dir(),
            run_dir: ctx.run_dir(),
            map_dir: ctx.map_pin_path(""),
        };
        let json = serde_json::to_vec(&info).unwrap_or_default();
        let host = Box::new(HostData { ctx: ctx.clone() });
        let callbacks = SendCallbacks(host.callbacks());
        let start = self.loaded.vtable().start;
        let result = self.loaded.call(move |h, out, write| {
            let callbacks = callbacks;
            // SAFETY: a live handle; `json` and `callbacks` outlive the call, and the boxed
            // host data behind the callbacks lives until the plugin is destroyed.
            unsafe {
                start(
                    h,
                    json.as_ptr(),
                    json.len(),
                    &raw const callbacks.0,
                    out,
                    write,
                )
            }
        });
        // The plugin may keep calling back: keep the data until drop, even on failure.
        self.host = Some(host);
        let name = self.name.to_string();
        result.map_err(|e| {
            self.error(e, |message| PluginError::Start {
                plugin: name,
                message,
            })
        })?;
        self.forwarder = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(forward_events(
                self.name,
                ctx.subscribe_events(),
                self.loaded.clone(),
            ))
        });
        if self.forwarder.is_none() {
            warn!(
                plugin = self.name,
                "no tokio runtime: the plugin gets no datapath events"
            );
        }
        Ok(())
    }

    fn reconcile(&mut self, change: &StateChangeSummary) -> Result<(), PluginError> {
        let json = serde_json::to_vec(&StateChange::from(change)).unwrap_or_default();
        let name = self.name.to_string();
        match self.bytes_call(|v| v.reconcile, &json) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e, |message| PluginError::Reconcile {
                plugin: name,
                message,
            })),
        }
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
        let name = self.name.to_string();
        match self.handle_call(|v| v.stop) {
            Ok(_) => Ok(()),
            // A plugin disabled by a panic is not called again: nothing more to stop.
            Err(CallError::Panicked(_)) => Ok(()),
            Err(e) => Err(self.error(e, |message| PluginError::Stop {
                plugin: name,
                message,
            })),
        }
    }

    fn health(&self) -> Health {
        if let Some(message) = self.loaded.panicked() {
            return Health::Failed(format!("panicked: {message}"));
        }
        match self.handle_call(|v| v.health) {
            Ok(json) => serde_json::from_slice(&json)
                .unwrap_or_else(|e| Health::Degraded(format!("unreadable health: {e}"))),
            Err(e) => Health::Failed(describe(&e)),
        }
    }

    fn status_json(&self) -> Option<serde_json::Value> {
        let mut status = serde_json::Map::new();
        status.insert("path".into(), self.loaded.path.display().to_string().into());
        status.insert(
            "abi_version".into(),
            porin_plugin_sdk::native::ABI_VERSION.into(),
        );
        if let Ok(json) = self.handle_call(|v| v.status)
            && let Ok(own) = serde_json::from_slice::<serde_json::Value>(&json)
        {
            status.insert("plugin".into(), own);
        }
        if let Some(text) = self.metrics_text() {
            status.insert("metrics".into(), text.into());
        }
        Some(serde_json::Value::Object(status))
    }
}

/// Sends every datapath event to the plugin as JSON until it stops or panics.
async fn forward_events(
    name: &'static str,
    mut events: broadcast::Receiver<Arc<porin_plugin_sdk::DatapathEvent>>,
    loaded: Arc<Loaded>,
) {
    let on_event = loaded.vtable().on_event;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    plugin = name,
                    lost = n,
                    "native plugin is behind; events dropped"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Ok(json) = serde_json::to_vec(&*event) else {
            continue;
        };
        let result = loaded.call(move |h, out, write| {
            // SAFETY: a live handle, `json` for the call, and an output pair.
            unsafe { on_event(h, json.as_ptr(), json.len(), out, write) }
        });
        if let Err(CallError::Panicked(message)) = result {
            error!(plugin = name, panic = %message, "native plugin panicked on an event; it is disabled");
            return;
        }
    }
}
