//! The exporter as a Porin [`Plugin`].

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use porin_plugin_sdk::{Health, Plugin, PluginContext, PluginError};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::record::FlowRecord;
use crate::settings::{NAME, Settings};

#[derive(Default)]
pub struct FlowExporter {
    settings: Settings,
    written: Counter,
    lost: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
    error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Plugin for FlowExporter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configure(&mut self, section: &toml::Table) -> Result<(), PluginError> {
        self.settings = Settings::parse(section)?;
        Ok(())
    }

    fn register_metrics(&mut self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "porin_flow_exporter_flows_written",
            "Flows the flow-exporter plugin wrote to its file",
            self.written.clone(),
        );
    }

    fn start(&mut self, ctx: Arc<dyn PluginContext>) -> Result<(), PluginError> {
        let start_error = |message: String| PluginError::Start {
            plugin: NAME.to_string(),
            message,
        };
        let path = self
            .settings
            .output
            .clone()
            .ok_or_else(|| start_error("not configured".to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| start_error(format!("opening {}: {e}", path.display())))?;
        let mut events = ctx.subscribe_events();
        let settings = self.settings.clone();
        let written = self.written.clone();
        let lost = self.lost.clone();
        let error = self.error.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if !settings.selects(&event) {
                    continue;
                }
                let record = FlowRecord::new(&event, ctx.as_ref());
                let mut line = match serde_json::to_vec(&record) {
                    Ok(l) => l,
                    Err(_) => continue,
                };
                // One write per line: agents of several nodes may append to one file.
                line.push(b'\n');
                let outcome = file.write_all(&line);
                if let Ok(mut last) = error.lock() {
                    *last = outcome
                        .err()
                        .map(|e| format!("writing {}: {e}", path.display()));
                }
                written.inc();
            }
        }));
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PluginError> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Ok(())
    }

    fn health(&self) -> Health {
        if self.task.is_none() {
            return Health::Stopped;
        }
        match self.error.lock().ok().and_then(|e| e.clone()) {
            Some(message) => Health::Degraded(message),
            None => Health::Ok,
        }
    }

    fn status_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "output": self.settings.output,
            "written": self.written.get(),
            "lost": self.lost.load(Ordering::Relaxed),
        }))
    }
}
