//! The `sessionAffinity: ClientIP` maps of both families: `porin_lb_affin`
//! ([`LbAffinityKey`]) and `porin_lb_affin6` ([`LbAffinity6Key`]). The datapath writes the
//! entries; the lb plugin removes those of a backend that left an affinity service.

use aya::maps::{HashMap, MapData, MapError};

use super::abi::{LbAffinity6Key, LbAffinityKey, LbAffinityValue};
use super::error::DatapathError;

/// A key of an affinity map: a client of one service.
pub trait AffinityKey: aya::Pod {
    fn service_id(&self) -> u32;
}

impl AffinityKey for LbAffinityKey {
    fn service_id(&self) -> u32 {
        self.service_id
    }
}

impl AffinityKey for LbAffinity6Key {
    fn service_id(&self) -> u32 {
        self.service_id
    }
}

/// One family's affinity map.
pub struct AffinityMap<K> {
    map: HashMap<MapData, K, LbAffinityValue>,
    name: &'static str,
}

impl<K: AffinityKey> AffinityMap<K> {
    pub(crate) fn new(map: aya::maps::Map, name: &'static str) -> Result<Self, DatapathError> {
        let map = HashMap::try_from(map).map_err(|e| DatapathError::map(name, e))?;
        Ok(Self { map, name })
    }

    /// Every entry (what the datapath recorded).
    pub fn entries(&self) -> Result<Vec<(K, LbAffinityValue)>, DatapathError> {
        self.map
            .iter()
            .map(|item| item.map_err(|e| DatapathError::map(self.name, e)))
            .collect()
    }

    /// Writes one entry (tests, and a restored state).
    pub fn set(&mut self, key: K, value: LbAffinityValue) -> Result<(), DatapathError> {
        self.map
            .insert(key, value, 0)
            .map_err(|e| DatapathError::map(self.name, e))
    }

    /// Removes the entries `stale(service id, backend id)` selects (a backend that left an
    /// affinity service, a service that went). Walks the map: only called when an affinity
    /// service lost backends. Returns how many entries went.
    pub fn prune(&mut self, stale: impl Fn(u32, u32) -> bool) -> Result<usize, DatapathError> {
        let doomed: Vec<K> = self
            .map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| stale(k.service_id(), v.backend_id))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            match self.map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(DatapathError::map(self.name, e)),
            }
        }
        Ok(doomed.len())
    }
}
