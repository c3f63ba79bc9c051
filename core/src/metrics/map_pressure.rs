//! `cilium_bpf_map_pressure{map_name}` of every map of the datapath: which maps report,
//! from where, and the sampling pass that counts the ones nobody mirrors.
//!
//! The lb plugin reports its service, slot, backend and Maglev maps from its userspace
//! mirror at every sync (no map walk). Every other map is filled by the programs (LRU
//! conntrack and NAT maps) or written without a mirror that knows its size (ipcache,
//! endpoints, policy), so core counts its entries periodically (`[agent]
//! map_pressure_interval_seconds`) and sets entries / max_entries. The maps of a plugin
//! that is off lose their series, mirrored ones included: their entries no longer
//! describe anything the datapath uses.

use std::path::Path;

use tracing::{debug, warn};

use super::AgentMetrics;
use crate::datapath::{
    DatapathError, MAP_CT, MAP_ENCRYPT, MAP_ENDPOINTS, MAP_IPCACHE, MAP_LB_AFFINITY,
    MAP_LB_BACKENDS, MAP_LB_MAGLEV, MAP_LB_NAT, MAP_LB_RNAT, MAP_LB_SERVICES, MAP_LB_SKNAT,
    MAP_LB_SKNAT6, MAP_LB_SLOTS, MAP_LB6_AFFINITY, MAP_LB6_BACKENDS, MAP_LB6_SERVICES,
    MAP_LB6_SLOTS, MAP_METRICS, MAP_NP_NAT, MAP_NP_RNAT, MAP_POLICY, MAP_POLICY_EP,
    MAP_PROXY_REDIR, MapFill, pinned_map_fill,
};
use PressureSource::{Mirror, Sampled};

/// Where a map's pressure figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureSource {
    /// Counted by core's periodic sampling pass.
    Sampled,
    /// Reported by the owning plugin from its userspace mirror; never sampled, so the
    /// two figures do not overwrite each other.
    Mirror,
}

/// One map with a pressure series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureMap {
    pub name: &'static str,
    /// The plugin whose feature uses the map (`None`: core, always on).
    pub owner: Option<&'static str>,
    pub source: PressureSource,
}

const fn map(
    name: &'static str,
    owner: Option<&'static str>,
    source: PressureSource,
) -> PressureMap {
    PressureMap {
        name,
        owner,
        source,
    }
}

const LB: Option<&str> = Some("lb");
const POLICY: Option<&str> = Some("policy");
const ENCRYPTION: Option<&str> = Some("encryption");

/// Every map of `bpf/` with a pressure series (all but the `porin_events` ring buffer).
pub const PRESSURE_MAPS: &[PressureMap] = &[
    // Core: conntrack, identities, local endpoints, datapath counters.
    map(MAP_CT, None, Sampled),
    map(MAP_IPCACHE, None, Sampled),
    map(MAP_ENDPOINTS, None, Sampled),
    map(MAP_METRICS, None, Sampled),
    // lb: what the programs fill (per-packet NAT, NodePort NAT, affinity, socket LB
    // reverse translations) is sampled...
    map(MAP_LB_NAT, LB, Sampled),
    map(MAP_LB_RNAT, LB, Sampled),
    map("porin_lb_nat6", LB, Sampled),
    map("porin_lb_rnat6", LB, Sampled),
    map(MAP_NP_NAT, LB, Sampled),
    map(MAP_NP_RNAT, LB, Sampled),
    map("porin_np_nat6", LB, Sampled),
    map("porin_np_rnat6", LB, Sampled),
    map(MAP_LB_AFFINITY, LB, Sampled),
    map(MAP_LB6_AFFINITY, LB, Sampled),
    map(MAP_LB_SKNAT, LB, Sampled),
    map(MAP_LB_SKNAT6, LB, Sampled),
    // ...what the plugin writes comes from its mirror.
    map(MAP_LB_SERVICES, LB, Mirror),
    map(MAP_LB_SLOTS, LB, Mirror),
    map(MAP_LB_BACKENDS, LB, Mirror),
    map(MAP_LB_MAGLEV, LB, Mirror),
    map(MAP_LB6_SERVICES, LB, Mirror),
    map(MAP_LB6_SLOTS, LB, Mirror),
    map(MAP_LB6_BACKENDS, LB, Mirror),
    // policy: enforcement entries and the L7 proxy's redirections.
    map(MAP_POLICY, POLICY, Sampled),
    map(MAP_POLICY_EP, POLICY, Sampled),
    map(MAP_PROXY_REDIR, POLICY, Sampled),
    // encryption: remote pod CIDRs to the WireGuard device.
    map(MAP_ENCRYPT, ENCRYPTION, Sampled),
];

/// What one sampling pass does: the maps it counts and the maps whose series go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PressurePlan {
    pub sample: Vec<&'static str>,
    pub forget: Vec<&'static str>,
}

impl PressurePlan {
    /// The plan when `enabled(plugin)` tells which plugins are on: sampled maps of core
    /// and of enabled plugins are counted; every map of a plugin that is off is forgotten.
    pub fn for_enabled(enabled: impl Fn(&str) -> bool) -> Self {
        let mut plan = Self::default();
        for m in PRESSURE_MAPS {
            match (m.owner.is_none_or(&enabled), m.source) {
                (true, Sampled) => plan.sample.push(m.name),
                (true, Mirror) => {}
                (false, _) => plan.forget.push(m.name),
            }
        }
        plan
    }

    /// The plan with every plugin on.
    pub fn all() -> Self {
        Self::for_enabled(|_| true)
    }
}

/// What counting one map gave.
#[derive(Debug)]
pub enum MapSample {
    Fill(MapFill),
    /// Not pinned: the program that declares it is not loaded (e.g. socket LB off).
    Absent,
    Failed(DatapathError),
}

/// Counts each of `maps` pinned under `maps_dir` (blocking: a few syscalls per
/// thousand entries of a hash map, one per entry of an LPM trie).
pub fn count_maps(maps_dir: &Path, maps: &[&'static str]) -> Vec<(&'static str, MapSample)> {
    maps.iter()
        .map(|&name| {
            let sample = match pinned_map_fill(name, &maps_dir.join(name)) {
                Ok(Some(fill)) => MapSample::Fill(fill),
                Ok(None) => MapSample::Absent,
                Err(e) => MapSample::Failed(e),
            };
            (name, sample)
        })
        .collect()
}

impl AgentMetrics {
    /// Drops the pressure series of `map` (its feature is off).
    pub fn remove_map_pressure(&self, map: &str) {
        self.map_pressure.remove(&super::MapLabels {
            map_name: map.to_string(),
        });
    }

    /// Applies counted samples: a fill sets the ratio, an absent map loses its series,
    /// a failure is logged with the map's name and the last value stays.
    pub fn apply_map_samples(&self, samples: &[(&'static str, MapSample)]) {
        for (map, sample) in samples {
            match sample {
                MapSample::Fill(fill) => self.set_map_pressure(map, fill.ratio()),
                MapSample::Absent => {
                    debug!(map, "map not pinned: no pressure series");
                    self.remove_map_pressure(map);
                }
                MapSample::Failed(e) => {
                    warn!(map, error = %e, "map pressure: counting the map failed, keeping the last value");
                }
            }
        }
    }

    /// One blocking sampling pass over the maps pinned under `maps_dir`: forgets
    /// `plan.forget`, counts `plan.sample` and applies the result.
    pub fn sample_map_pressure(&self, maps_dir: &Path, plan: &PressurePlan) {
        for map in &plan.forget {
            self.remove_map_pressure(map);
        }
        self.apply_map_samples(&count_maps(maps_dir, &plan.sample));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::collections::BTreeSet;

    /// Every map declared in `bpf/` (`} name SEC(".maps")`).
    fn declared_maps() -> BTreeSet<String> {
        let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bpf");
        let mut names = BTreeSet::new();
        for dir in [bpf.clone(), bpf.join("lib")] {
            for entry in std::fs::read_dir(&dir).expect("bpf sources") {
                let text =
                    std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
                for line in text.lines() {
                    if let Some(rest) = line.strip_prefix("} ")
                        && let Some(name) = rest.strip_suffix(" SEC(\".maps\");")
                    {
                        names.insert(name.to_string());
                    }
                }
            }
        }
        names
    }

    #[test]
    fn every_datapath_map_but_the_ring_buffer_has_a_pressure_series() {
        let declared = declared_maps();
        assert!(declared.contains(MAP_CT), "parsing bpf/: {declared:?}");
        let listed: BTreeSet<String> = PRESSURE_MAPS.iter().map(|m| m.name.to_string()).collect();
        let missing: Vec<_> = declared
            .iter()
            .filter(|m| !listed.contains(*m) && *m != "porin_events")
            .collect();
        assert!(missing.is_empty(), "maps without pressure: {missing:?}");
        let unknown: Vec<_> = listed.difference(&declared).collect();
        assert!(unknown.is_empty(), "not declared in bpf/: {unknown:?}");
    }

    #[test]
    fn mirrored_maps_are_not_sampled_and_a_disabled_plugin_is_forgotten() {
        let all = PressurePlan::all();
        assert!(all.forget.is_empty());
        for m in [MAP_CT, MAP_LB_NAT, MAP_NP_NAT, MAP_POLICY, MAP_PROXY_REDIR] {
            assert!(all.sample.contains(&m), "{m} sampled");
        }
        for m in [
            MAP_LB_SERVICES,
            MAP_LB_SLOTS,
            MAP_LB_BACKENDS,
            MAP_LB_MAGLEV,
        ] {
            assert!(!all.sample.contains(&m), "{m} comes from the lb mirror");
        }
        let no_lb = PressurePlan::for_enabled(|p| p != "lb");
        for m in [MAP_LB_NAT, MAP_NP_NAT, MAP_LB_SERVICES, MAP_LB_MAGLEV] {
            assert!(
                no_lb.forget.contains(&m) && !no_lb.sample.contains(&m),
                "{m}"
            );
        }
        assert!(no_lb.sample.contains(&MAP_CT) && no_lb.sample.contains(&MAP_POLICY));
    }

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn a_map_that_cannot_be_read_keeps_its_last_value_and_an_absent_one_goes() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry, "dev");
        m.set_map_pressure(MAP_CT, 0.5);
        m.set_map_pressure(MAP_LB_SKNAT, 0.25);
        m.set_map_pressure(MAP_LB_NAT, 0.125);
        let dir = tempfile::tempdir().expect("tempdir");
        // Not a bpffs pin: opening it fails.
        std::fs::write(dir.path().join(MAP_CT), b"not a map").expect("write");
        m.sample_map_pressure(
            dir.path(),
            &PressurePlan {
                sample: vec![MAP_CT, MAP_LB_SKNAT],
                forget: vec![MAP_LB_NAT],
            },
        );
        let text = scrape(&registry);
        assert!(
            text.contains("cilium_bpf_map_pressure{map_name=\"porin_ct\"} 0.5"),
            "{text}"
        );
        assert!(!text.contains("porin_lb_sknat"), "{text}");
        assert!(!text.contains("porin_lb_nat"), "{text}");
    }
}
