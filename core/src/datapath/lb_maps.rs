//! Typed handles on the load-balancing maps (`bpf/lib/maps.h`, `porin_lb_*`), for the lb
//! plugin. Opened from the pins like the other handles, so the plugin holds them without ever
//! touching the loaded object.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{HashMap, MapData, MapError};

use super::abi::{LbAffinityKey, LbAffinityValue, LbBackend, LbSlotKey, LbSvcKey, LbSvcValue};
use super::batch::{self, BatchFailure};
use super::error::DatapathError;
use super::lb_affinity::AffinityMap;
use super::maps::open_pinned;

/// Frontends: {VIP, port, protocol} -> {service id, backend count}.
pub const MAP_LB_SERVICES: &str = "porin_lb_svc";
/// Backend slots: {service id, slot} -> backend id.
pub const MAP_LB_SLOTS: &str = "porin_lb_slots";
/// Backends: id -> address.
pub const MAP_LB_BACKENDS: &str = "porin_lb_backends";
/// Translated connections, forward (written by the datapath).
pub const MAP_LB_NAT: &str = "porin_lb_nat";
/// Translated connections, reverse (written by the datapath).
pub const MAP_LB_RNAT: &str = "porin_lb_rnat";
/// `sessionAffinity: ClientIP`: {client, service id} -> {backend id, last use} (written by
/// the datapath, pruned by the lb plugin when a backend leaves an affinity service).
pub const MAP_LB_AFFINITY: &str = "porin_lb_affin";

/// A service frontend: ClusterIP, port and `IPPROTO_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbFrontend {
    pub addr: SocketAddrV4,
    pub proto: u8,
}

/// Read and write access to the service, slot and backend maps.
pub struct LbMaps {
    services: HashMap<MapData, LbSvcKey, LbSvcValue>,
    slots: HashMap<MapData, LbSlotKey, u32>,
    backends: HashMap<MapData, u32, LbBackend>,
    affinity: AffinityMap<LbAffinityKey>,
    /// The same three maps, for batched writes (aya has no batch operations).
    raw: [MapData; 3],
    capacity: LbCapacity,
}

/// `max_entries` of the three maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbCapacity {
    pub services: u32,
    pub slots: u32,
    pub backends: u32,
}

const RAW_SERVICES: usize = 0;
const RAW_SLOTS: usize = 1;
const RAW_BACKENDS: usize = 2;

fn svc_key(fe: LbFrontend) -> LbSvcKey {
    LbSvcKey {
        // Network byte order in memory: the octets as they are on the wire.
        vip: u32::from_ne_bytes(fe.addr.ip().octets()),
        port: fe.addr.port(),
        proto: fe.proto,
        pad: 0,
    }
}

fn backend_value(addr: SocketAddrV4) -> LbBackend {
    LbBackend {
        addr: u32::from_ne_bytes(addr.ip().octets()),
        port: addr.port(),
        pad: [0; 2],
    }
}

fn addr_of(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

/// Removing what is already gone is not an error: removal is idempotent.
fn ignore_missing(r: Result<(), MapError>, map: &'static str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(DatapathError::map(map, e)),
    }
}

impl LbMaps {
    /// Opens the three pinned maps; `pin_path` maps a map name to its pin.
    pub fn open(pin_path: impl Fn(&str) -> std::path::PathBuf) -> Result<Self, DatapathError> {
        let open = |name: &'static str| -> Result<aya::maps::Map, DatapathError> {
            open_pinned(Path::new(&pin_path(name)))
        };
        let raw = |name: &'static str| -> Result<MapData, DatapathError> {
            MapData::from_pin(pin_path(name)).map_err(|e| DatapathError::map(name, e))
        };
        let raw = [
            raw(MAP_LB_SERVICES)?,
            raw(MAP_LB_SLOTS)?,
            raw(MAP_LB_BACKENDS)?,
        ];
        let max = |i: usize, name: &'static str| -> Result<u32, DatapathError> {
            Ok(raw[i]
                .info()
                .map_err(|e| DatapathError::map(name, e))?
                .max_entries())
        };
        let capacity = LbCapacity {
            services: max(RAW_SERVICES, MAP_LB_SERVICES)?,
            slots: max(RAW_SLOTS, MAP_LB_SLOTS)?,
            backends: max(RAW_BACKENDS, MAP_LB_BACKENDS)?,
        };
        Ok(Self {
            raw,
            capacity,
            services: HashMap::try_from(open(MAP_LB_SERVICES)?)
                .map_err(|e| DatapathError::map(MAP_LB_SERVICES, e))?,
            slots: HashMap::try_from(open(MAP_LB_SLOTS)?)
                .map_err(|e| DatapathError::map(MAP_LB_SLOTS, e))?,
            backends: HashMap::try_from(open(MAP_LB_BACKENDS)?)
                .map_err(|e| DatapathError::map(MAP_LB_BACKENDS, e))?,
            affinity: AffinityMap::new(open(MAP_LB_AFFINITY)?, MAP_LB_AFFINITY)?,
        })
    }

    /// `max_entries` of the service, slot and backend maps.
    pub fn capacity(&self) -> LbCapacity {
        self.capacity
    }

    /// Creates or updates frontends: (frontend, service id, backend count), in one
    /// batch. On failure nothing after the failed element was written; the error says
    /// which element (`DatapathError::MapBatch::done`).
    pub fn write_services(
        &mut self,
        items: &[(LbFrontend, u32, u32)],
    ) -> Result<(), DatapathError> {
        let with_flags: Vec<(LbFrontend, LbSvcValue)> = items
            .iter()
            .map(|(fe, service_id, backend_count)| {
                let value = LbSvcValue {
                    service_id: *service_id,
                    backend_count: *backend_count,
                    flags: 0,
                };
                (*fe, value)
            })
            .collect();
        self.write_service_values(&with_flags)
    }

    /// Like [`Self::write_services`] with the whole value (flags: `abi::LB_F_*` and the
    /// affinity timeout).
    pub fn write_service_values(
        &mut self,
        items: &[(LbFrontend, LbSvcValue)],
    ) -> Result<(), DatapathError> {
        let keys: Vec<LbSvcKey> = items.iter().map(|(fe, _)| svc_key(*fe)).collect();
        let values: Vec<LbSvcValue> = items.iter().map(|(_, v)| *v).collect();
        self.batch_update(RAW_SERVICES, MAP_LB_SERVICES, &keys, &values)
    }

    /// Every affinity entry (what the datapath recorded).
    pub fn affinity(&self) -> Result<Vec<(LbAffinityKey, LbAffinityValue)>, DatapathError> {
        self.affinity.entries()
    }

    /// Writes one affinity entry (tests, and a restored state).
    pub fn set_affinity(
        &mut self,
        key: LbAffinityKey,
        value: LbAffinityValue,
    ) -> Result<(), DatapathError> {
        self.affinity.set(key, value)
    }

    /// Removes the affinity entries `stale(service id, backend id)` selects (a backend that
    /// left an affinity service, a service that went). Walks the map: only called when an
    /// affinity service lost backends. Returns how many entries went.
    pub fn prune_affinity(
        &mut self,
        stale: impl Fn(u32, u32) -> bool,
    ) -> Result<usize, DatapathError> {
        self.affinity.prune(stale)
    }

    /// Points slots at backends: (service id, slot, backend id), in one batch.
    pub fn write_slots(&mut self, items: &[(u32, u32, u32)]) -> Result<(), DatapathError> {
        let keys: Vec<LbSlotKey> = items
            .iter()
            .map(|(service_id, slot, _)| LbSlotKey {
                service_id: *service_id,
                slot: *slot,
            })
            .collect();
        let values: Vec<u32> = items.iter().map(|(_, _, backend)| *backend).collect();
        self.batch_update(RAW_SLOTS, MAP_LB_SLOTS, &keys, &values)
    }

    /// Creates or updates backends: (id, address), in one batch.
    pub fn write_backends(&mut self, items: &[(u32, SocketAddrV4)]) -> Result<(), DatapathError> {
        let keys: Vec<u32> = items.iter().map(|(id, _)| *id).collect();
        let values: Vec<LbBackend> = items.iter().map(|(_, a)| backend_value(*a)).collect();
        self.batch_update(RAW_BACKENDS, MAP_LB_BACKENDS, &keys, &values)
    }

    /// Removes frontends (missing ones are skipped).
    pub fn remove_services(&mut self, items: &[LbFrontend]) -> Result<(), DatapathError> {
        let keys: Vec<LbSvcKey> = items.iter().map(|fe| svc_key(*fe)).collect();
        self.batch_delete(RAW_SERVICES, MAP_LB_SERVICES, &keys)
    }

    /// Removes slots: (service id, slot).
    pub fn remove_slots(&mut self, items: &[(u32, u32)]) -> Result<(), DatapathError> {
        let keys: Vec<LbSlotKey> = items
            .iter()
            .map(|(service_id, slot)| LbSlotKey {
                service_id: *service_id,
                slot: *slot,
            })
            .collect();
        self.batch_delete(RAW_SLOTS, MAP_LB_SLOTS, &keys)
    }

    /// Removes backends by id.
    pub fn remove_backends(&mut self, ids: &[u32]) -> Result<(), DatapathError> {
        self.batch_delete(RAW_BACKENDS, MAP_LB_BACKENDS, ids)
    }

    fn batch_update<K: aya::Pod, V: aya::Pod>(
        &self,
        raw: usize,
        map: &'static str,
        keys: &[K],
        values: &[V],
    ) -> Result<(), DatapathError> {
        batch::update(self.raw[raw].fd().as_fd(), keys, values)
            .map_err(|failure| self.batch_error(raw, map, failure))
    }

    fn batch_delete<K: aya::Pod>(
        &self,
        raw: usize,
        map: &'static str,
        keys: &[K],
    ) -> Result<(), DatapathError> {
        batch::delete(self.raw[raw].fd().as_fd(), keys)
            .map_err(|failure| self.batch_error(raw, map, failure))
    }

    fn batch_error(&self, raw: usize, map: &'static str, failure: BatchFailure) -> DatapathError {
        let max_entries = match raw {
            RAW_SERVICES => self.capacity.services,
            RAW_SLOTS => self.capacity.slots,
            _ => self.capacity.backends,
        };
        DatapathError::MapBatch {
            map,
            max_entries,
            done: failure.done,
            source: failure.error,
        }
    }

    /// Creates or updates a frontend.
    pub fn upsert_service(
        &mut self,
        fe: LbFrontend,
        service_id: u32,
        backend_count: u32,
    ) -> Result<(), DatapathError> {
        let value = LbSvcValue {
            service_id,
            backend_count,
            flags: 0,
        };
        self.services
            .insert(svc_key(fe), value, 0)
            .map_err(|e| DatapathError::map(MAP_LB_SERVICES, e))
    }

    /// Removes a frontend.
    pub fn remove_service(&mut self, fe: LbFrontend) -> Result<(), DatapathError> {
        ignore_missing(self.services.remove(&svc_key(fe)), MAP_LB_SERVICES)
    }

    /// Points slot `slot` of a service at a backend.
    pub fn set_slot(
        &mut self,
        service_id: u32,
        slot: u32,
        backend_id: u32,
    ) -> Result<(), DatapathError> {
        self.slots
            .insert(LbSlotKey { service_id, slot }, backend_id, 0)
            .map_err(|e| DatapathError::map(MAP_LB_SLOTS, e))
    }

    /// Removes a slot.
    pub fn remove_slot(&mut self, service_id: u32, slot: u32) -> Result<(), DatapathError> {
        ignore_missing(
            self.slots.remove(&LbSlotKey { service_id, slot }),
            MAP_LB_SLOTS,
        )
    }

    /// Creates or updates a backend.
    pub fn upsert_backend(&mut self, id: u32, addr: SocketAddrV4) -> Result<(), DatapathError> {
        self.backends
            .insert(id, backend_value(addr), 0)
            .map_err(|e| DatapathError::map(MAP_LB_BACKENDS, e))
    }

    /// Removes a backend.
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.backends.remove(&id), MAP_LB_BACKENDS)
    }

    /// Every frontend with (service id, backend count): what a restarted agent finds.
    pub fn services(&self) -> Result<Vec<(LbFrontend, u32, u32)>, DatapathError> {
        Ok(self
            .service_values()?
            .into_iter()
            .map(|(fe, id, count, _)| (fe, id, count))
            .collect())
    }

    /// Every frontend with (service id, backend count, flags).
    pub fn service_values(&self) -> Result<Vec<(LbFrontend, u32, u32, u32)>, DatapathError> {
        self.services
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| DatapathError::map(MAP_LB_SERVICES, e))?;
                let fe = LbFrontend {
                    addr: SocketAddrV4::new(addr_of(k.vip), k.port),
                    proto: k.proto,
                };
                Ok((fe, v.service_id, v.backend_count, v.flags))
            })
            .collect()
    }

    /// Every slot as (service id, slot, backend id).
    pub fn slots(&self) -> Result<Vec<(u32, u32, u32)>, DatapathError> {
        self.slots
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| DatapathError::map(MAP_LB_SLOTS, e))?;
                Ok((k.service_id, k.slot, v))
            })
            .collect()
    }

    /// Every backend as (id, address).
    pub fn backends(&self) -> Result<Vec<(u32, SocketAddrV4)>, DatapathError> {
        self.backends
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| DatapathError::map(MAP_LB_BACKENDS, e))?;
                Ok((k, SocketAddrV4::new(addr_of(v.addr), v.port)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_key_is_in_wire_order() {
        let key = svc_key(LbFrontend {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 50), 80),
            proto: 6,
        });
        assert_eq!(key.vip.to_ne_bytes(), [10, 96, 0, 50]);
        assert_eq!((key.port, key.proto), (80, 6));
        assert_eq!(addr_of(key.vip), Ipv4Addr::new(10, 96, 0, 50));
    }
}
