//! Pruning `sessionAffinity: ClientIP` entries, for both families' affinity maps
//! (`porin_lb_affin` with [`LbAffinityKey`](super::abi::LbAffinityKey) and
//! `porin_lb_affin6` with [`LbAffinity6Key`](super::abi::LbAffinity6Key)): the datapath
//! writes them, the lb plugin removes those of a backend that left an affinity service.

use aya::maps::{HashMap, MapData, MapError};

use super::abi::LbAffinityValue;
use super::error::DatapathError;

/// Removes the entries `stale(service id, backend id)` selects; `service_of` reads a
/// key's service id. Walks the map. Returns how many entries went.
pub(crate) fn prune_affinity<K: aya::Pod>(
    map: &mut HashMap<MapData, K, LbAffinityValue>,
    name: &'static str,
    service_of: impl Fn(&K) -> u32,
    stale: impl Fn(u32, u32) -> bool,
) -> Result<usize, DatapathError> {
    let doomed: Vec<K> = map
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| stale(service_of(k), v.backend_id))
        .map(|(k, _)| k)
        .collect();
    for key in &doomed {
        match map.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(DatapathError::map(name, e)),
        }
    }
    Ok(doomed.len())
}
