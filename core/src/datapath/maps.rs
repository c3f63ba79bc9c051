//! Typed handles on the pinned maps, for the rest of the agent and for plugins.
//!
//! Handles are opened from the pins, so they are independent of the `Datapath` value (owned,
//! `Send`) and keep working across an agent's reload of the programs.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use aya::maps::{
    HashMap, Map, MapData, PerCpuHashMap,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;

use super::{
    abi::{
        CtEntry, CtKey, Direction, EndpointKey, EndpointValue, IpcacheKeyData, IpcacheValue,
        MetricsKey, MetricsValue, encode_addr,
    },
    error::DatapathError,
    loader::Datapath,
};

/// Pinned map names (see `bpf/lib/maps.h`).
pub const MAP_CT: &str = "porin_ct";
pub const MAP_METRICS: &str = "porin_metrics";
pub const MAP_EVENTS: &str = "porin_events";
pub const MAP_IPCACHE: &str = "porin_ipcache";
pub const MAP_ENDPOINTS: &str = "porin_endpoints";

/// Bits of `family` + padding that precede the address in the ipcache LPM key.
const IPCACHE_PREFIX_BITS: u32 = 32;

/// One counter of the metrics map, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterSample {
    /// 0 = forwarded, 1 = event lost (ring buffer full), 130.. = Cilium drop reason.
    pub reason: u8,
    pub direction: Option<Direction>,
    pub packets: u64,
    pub bytes: u64,
}

/// What the endpoints map knows about a local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub endpoint_id: u32,
    pub ifindex: u32,
    pub identity: u32,
}

/// The ipcache: IP prefix -> security identity.
pub struct IpCache {
    map: LpmTrie<MapData, IpcacheKeyData, IpcacheValue>,
}

/// The local endpoints: address -> endpoint.
pub struct Endpoints {
    map: HashMap<MapData, EndpointKey, EndpointValue>,
}

/// Read access to connection tracking (tests and debugging).
pub struct Conntrack {
    map: HashMap<MapData, CtKey, CtEntry>,
}

pub(crate) fn open_pinned(path: &Path) -> Result<Map, DatapathError> {
    let name = path.display().to_string();
    let data = MapData::from_pin(path).map_err(|e| DatapathError::map(name.clone(), e))?;
    Map::from_map_data(data).map_err(|e| DatapathError::map(name, e))
}

fn ipcache_key(prefix: IpNet) -> Key<IpcacheKeyData> {
    let (family, addr) = encode_addr(prefix.network());
    Key::new(
        IPCACHE_PREFIX_BITS + u32::from(prefix.prefix_len()),
        IpcacheKeyData {
            family,
            pad: [0; 3],
            addr,
        },
    )
}

fn endpoint_key(addr: IpAddr) -> EndpointKey {
    let (family, addr) = encode_addr(addr);
    EndpointKey {
        family,
        pad: [0; 3],
        addr,
    }
}

impl IpCache {
    /// Opens the pinned ipcache map.
    pub fn open(path: &Path) -> Result<Self, DatapathError> {
        let map = LpmTrie::try_from(open_pinned(path)?)
            .map_err(|e| DatapathError::map(MAP_IPCACHE, e))?;
        Ok(Self { map })
    }

    /// Maps `prefix` to `identity` (replacing any previous value).
    pub fn upsert(&mut self, prefix: IpNet, identity: u32, flags: u8) -> Result<(), DatapathError> {
        let value = IpcacheValue {
            identity,
            flags,
            pad: [0; 3],
        };
        self.map
            .insert(&ipcache_key(prefix.trunc()), value, 0)
            .map_err(|e| DatapathError::map(MAP_IPCACHE, e))
    }

    /// Removes `prefix`.
    pub fn remove(&mut self, prefix: IpNet) -> Result<(), DatapathError> {
        self.map
            .remove(&ipcache_key(prefix.trunc()))
            .map_err(|e| DatapathError::map(MAP_IPCACHE, e))
    }

    /// The identity of the longest prefix containing `addr`, if any.
    pub fn lookup(&self, addr: IpAddr) -> Result<Option<u32>, DatapathError> {
        match self.map.get(&ipcache_key(IpNet::from(addr)), 0) {
            Ok(v) => Ok(Some(v.identity)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_IPCACHE, e)),
        }
    }
}

impl Endpoints {
    /// Opens the pinned endpoints map.
    pub fn open(path: &Path) -> Result<Self, DatapathError> {
        let map = HashMap::try_from(open_pinned(path)?)
            .map_err(|e| DatapathError::map(MAP_ENDPOINTS, e))?;
        Ok(Self { map })
    }

    /// Records a local endpoint address.
    pub fn upsert(&mut self, addr: IpAddr, info: EndpointInfo) -> Result<(), DatapathError> {
        let value = EndpointValue {
            endpoint_id: info.endpoint_id,
            ifindex: info.ifindex,
            identity: info.identity,
        };
        self.map
            .insert(endpoint_key(addr), value, 0)
            .map_err(|e| DatapathError::map(MAP_ENDPOINTS, e))
    }

    /// Forgets a local endpoint address.
    pub fn remove(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        self.map
            .remove(&endpoint_key(addr))
            .map_err(|e| DatapathError::map(MAP_ENDPOINTS, e))
    }
}

impl Conntrack {
    /// Opens the pinned conntrack map.
    pub fn open(path: &Path) -> Result<Self, DatapathError> {
        let map =
            HashMap::try_from(open_pinned(path)?).map_err(|e| DatapathError::map(MAP_CT, e))?;
        Ok(Self { map })
    }

    /// The entry created for exactly this tuple, if any.
    pub fn get(&self, key: &CtKey) -> Result<Option<CtEntry>, DatapathError> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DatapathError::map(MAP_CT, e)),
        }
    }

    /// Every entry (a snapshot; the map changes under our feet).
    pub fn entries(&self) -> Result<Vec<(CtKey, CtEntry)>, DatapathError> {
        self.map
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| DatapathError::map(MAP_CT, e))
    }
}

impl Datapath {
    /// A handle on the ipcache.
    pub fn ipcache(&self) -> Result<IpCache, DatapathError> {
        IpCache::open(&self.map_pin_path(MAP_IPCACHE))
    }

    /// A handle on the endpoints map.
    pub fn endpoints(&self) -> Result<Endpoints, DatapathError> {
        Endpoints::open(&self.map_pin_path(MAP_ENDPOINTS))
    }

    /// A handle on connection tracking.
    pub fn conntrack(&self) -> Result<Conntrack, DatapathError> {
        Conntrack::open(&self.map_pin_path(MAP_CT))
    }

    /// Every packet/byte counter, summed over CPUs, sorted by (reason, direction).
    pub fn counters(&self) -> Result<Vec<CounterSample>, DatapathError> {
        let map = self
            .ebpf
            .map(MAP_METRICS)
            .ok_or(DatapathError::MapMissing { map: MAP_METRICS })?;
        let map: PerCpuHashMap<&MapData, MetricsKey, MetricsValue> =
            PerCpuHashMap::try_from(map).map_err(|e| DatapathError::map(MAP_METRICS, e))?;
        let mut sums: BTreeMap<(u8, u8), (u64, u64)> = BTreeMap::new();
        for item in map.iter() {
            let (key, values) = item.map_err(|e| DatapathError::map(MAP_METRICS, e))?;
            let sum = sums.entry((key.reason, key.direction)).or_default();
            for v in values.iter() {
                sum.0 += v.packets;
                sum.1 += v.bytes;
            }
        }
        Ok(sums
            .into_iter()
            .map(|((reason, direction), (packets, bytes))| CounterSample {
                reason,
                direction: Direction::from_raw(direction),
                packets,
                bytes,
            })
            .collect())
    }
}
