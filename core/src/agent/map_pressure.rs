//! The periodic map pressure sampler: every `[agent] map_pressure_interval_seconds` it
//! counts the maps nobody mirrors and sets `cilium_bpf_map_pressure` (see
//! [`crate::metrics::PressurePlan`] for which maps and why).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::run::{Agent, lock};
use crate::api::MapInfo;
use crate::metrics::{MapSample, PRESSURE_MAPS, PressurePlan, count_maps};

/// Starts the sampler on the agent's runtime (nothing when the interval is 0). The
/// counting runs in `spawn_blocking`: it is syscalls, and the plugins' lock is taken
/// there too.
pub(crate) fn spawn_map_pressure_sampler(agent: Arc<Agent>, shutdown: CancellationToken) {
    let seconds = agent.config.map_pressure_interval_seconds;
    if seconds == 0 {
        info!("map pressure sampling off (map_pressure_interval_seconds = 0)");
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(seconds));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let agent = agent.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || agent.sample_map_pressure()).await {
                warn!(error = %e, "map pressure sampling pass did not finish");
            }
        }
    });
}

impl Agent {
    /// One sampling pass. A plugin turned off while the maps are counted keeps no
    /// series: the plan is taken again before the counts are applied.
    pub(crate) fn sample_map_pressure(&self) {
        let maps_dir = self.config.pin_dir().join("maps");
        let plan = self.map_pressure_plan();
        for map in &plan.forget {
            self.metrics.remove_map_pressure(map);
        }
        let started = std::time::Instant::now();
        let mut samples = crate::metrics::count_maps(&maps_dir, &plan.sample);
        debug!(
            maps = samples.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "map pressure sampled"
        );
        let now = self.map_pressure_plan();
        samples.retain(|(map, _)| now.sample.contains(map));
        self.metrics.apply_map_samples(&samples);
    }

    /// Drops the pressure series of the maps of `plugin` (it was turned off).
    pub(crate) fn forget_map_pressure_of(&self, plugin: &str) {
        for m in crate::metrics::PRESSURE_MAPS {
            if m.owner == Some(plugin) {
                self.metrics.remove_map_pressure(m.name);
            }
        }
    }

    /// Every pinned map of the datapath with its entries counted now (`porin map list`);
    /// maps that are not pinned (their program is not loaded) are left out.
    pub(crate) fn map_list(&self) -> Vec<MapInfo> {
        let maps_dir = self.config.pin_dir().join("maps");
        let names: Vec<&'static str> = PRESSURE_MAPS.iter().map(|m| m.name).collect();
        count_maps(&maps_dir, &names)
            .into_iter()
            .zip(PRESSURE_MAPS)
            .filter_map(|((name, sample), map)| {
                let owner = map.owner.unwrap_or("core").to_owned();
                let info = |entries, max_entries, pressure, error| MapInfo {
                    name: name.to_owned(),
                    owner: owner.clone(),
                    entries,
                    max_entries,
                    pressure,
                    error,
                };
                match sample {
                    MapSample::Fill(fill) => {
                        Some(info(fill.entries, fill.max_entries, fill.ratio(), None))
                    }
                    MapSample::Absent => None,
                    MapSample::Failed(e) => Some(info(0, 0, 0.0, Some(e.to_string()))),
                }
            })
            .collect()
    }

    fn map_pressure_plan(&self) -> PressurePlan {
        let plugins = lock(&self.plugins);
        PressurePlan::for_enabled(|name| plugins.is_enabled(name) == Some(true))
    }
}
