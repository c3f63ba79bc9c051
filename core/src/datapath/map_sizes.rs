//! Map sizes from the configuration: switches named `max_entries:<map>`
//! ([`porin_plugin_sdk::MAX_ENTRIES_PREFIX`]) give a map's `max_entries`.
//!
//! aya applies a size only when it creates a map; a pinned map is reused whatever its
//! size. So at agent start, before loading, [`resize_pinned_maps`] unpins every map whose
//! pinned size differs from the configured one; the load then creates it anew with the
//! configured size, and the plugin that writes it finds it empty and reprograms it.

use std::path::Path;

use aya::maps::MapData;
use porin_plugin_sdk::MAX_ENTRIES_PREFIX;
use tracing::info;

use super::error::DatapathError;

/// The map sizes among `switches`: (map name, max_entries).
pub fn map_sizes(switches: &[(String, u32)]) -> impl Iterator<Item = (&str, u32)> {
    switches
        .iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(MAX_ENTRIES_PREFIX)?, *value)))
}

/// Whether a switch name sizes a map (`max_entries:<map>`).
pub fn is_map_size(name: &str) -> bool {
    name.starts_with(MAX_ENTRIES_PREFIX)
}

/// The load-time globals among `switches` (everything but map sizes).
pub fn globals(switches: &[(String, u32)]) -> impl Iterator<Item = (&str, u32)> {
    switches
        .iter()
        .filter(|(name, _)| !is_map_size(name))
        .map(|(name, value)| (name.as_str(), *value))
}

/// One map recreated because its configured size changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    pub map: String,
    pub from: u32,
    pub to: u32,
}

/// Unpins the maps under `maps_dir` whose `max_entries` differs from the size `switches`
/// configure for them, so that the next load creates them with the configured size.
/// Programs already attached keep the old maps until they are replaced. Returns what it
/// unpinned (each is logged).
pub fn resize_pinned_maps(
    maps_dir: &Path,
    switches: &[(String, u32)],
) -> Result<Vec<Resized>, DatapathError> {
    let mut resized = Vec::new();
    for (map, size) in map_sizes(switches) {
        let path = maps_dir.join(map);
        if !path.exists() {
            continue;
        }
        let data = MapData::from_pin(&path).map_err(|e| DatapathError::map(map, e))?;
        let from = data
            .info()
            .map_err(|e| DatapathError::map(map, e))?
            .max_entries();
        if from == size {
            continue;
        }
        std::fs::remove_file(&path).map_err(|source| DatapathError::PinPath {
            action: "removing (to resize)",
            path: path.clone(),
            source,
        })?;
        info!(
            map,
            from,
            to = size,
            "map size changed in the configuration: recreating the map (its entries are rebuilt)"
        );
        resized.push(Resized {
            map: map.to_string(),
            from,
            to: size,
        });
    }
    Ok(resized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_globals_are_told_apart() {
        let switches = vec![
            ("CFG_ENABLE_LB".to_string(), 1),
            ("max_entries:porin_lb_svc".to_string(), 1024),
        ];
        assert_eq!(
            map_sizes(&switches).collect::<Vec<_>>(),
            vec![("porin_lb_svc", 1024)]
        );
        assert_eq!(
            globals(&switches).collect::<Vec<_>>(),
            vec![("CFG_ENABLE_LB", 1)]
        );
    }
}
