//! Typed handles on the policy maps (`bpf/lib/maps.h`, `porin_policy*`), for the policy
//! plugin: per endpoint and direction a default-deny flag, and allow/deny entries keyed by
//! {endpoint, direction, peer identity, protocol, port} (0 = any). Opened from the pins.

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, MapError};

use super::abi::{PolicyEpKey, PolicyEpValue, PolicyKey, PolicyValue};
use super::error::DatapathError;
use super::maps::open_pinned;

/// Default deny per endpoint and direction.
pub const MAP_POLICY_EP: &str = "porin_policy_ep";
/// Allow/deny entries.
pub const MAP_POLICY: &str = "porin_policy";

/// Read and write access to the two policy maps.
pub struct PolicyMaps {
    endpoints: HashMap<MapData, PolicyEpKey, PolicyEpValue>,
    entries: HashMap<MapData, PolicyKey, PolicyValue>,
}

fn ignore_missing(r: Result<(), MapError>, map: &'static str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(DatapathError::map(map, e)),
    }
}

impl PolicyMaps {
    /// Opens both pinned maps; `pin_path` maps a map name to its pin.
    pub fn open(pin_path: impl Fn(&str) -> PathBuf) -> Result<Self, DatapathError> {
        let open = |name: &'static str| open_pinned(Path::new(&pin_path(name)));
        Ok(Self {
            endpoints: HashMap::try_from(open(MAP_POLICY_EP)?)
                .map_err(|e| DatapathError::map(MAP_POLICY_EP, e))?,
            entries: HashMap::try_from(open(MAP_POLICY)?)
                .map_err(|e| DatapathError::map(MAP_POLICY, e))?,
        })
    }

    /// Sets the default-deny flag of one endpoint direction.
    pub fn set_default_deny(&mut self, key: PolicyEpKey, deny: bool) -> Result<(), DatapathError> {
        let value = PolicyEpValue {
            default_deny: u8::from(deny),
            pad: [0; 3],
        };
        self.endpoints
            .insert(key, value, 0)
            .map_err(|e| DatapathError::map(MAP_POLICY_EP, e))
    }

    /// Forgets an endpoint direction (no default deny).
    pub fn remove_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError> {
        ignore_missing(self.endpoints.remove(&key), MAP_POLICY_EP)
    }

    /// Creates or replaces an entry.
    pub fn upsert(&mut self, key: PolicyKey, value: PolicyValue) -> Result<(), DatapathError> {
        self.entries
            .insert(key, value, 0)
            .map_err(|e| DatapathError::map(MAP_POLICY, e))
    }

    /// Removes an entry.
    pub fn remove(&mut self, key: PolicyKey) -> Result<(), DatapathError> {
        ignore_missing(self.entries.remove(&key), MAP_POLICY)
    }

    /// Every default-deny flag (what a restarted agent finds).
    pub fn default_denies(&self) -> Result<Vec<(PolicyEpKey, bool)>, DatapathError> {
        self.endpoints
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| DatapathError::map(MAP_POLICY_EP, e))?;
                Ok((k, v.default_deny != 0))
            })
            .collect()
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>, DatapathError> {
        self.entries
            .iter()
            .map(|item| item.map_err(|e| DatapathError::map(MAP_POLICY, e)))
            .collect()
    }
}
