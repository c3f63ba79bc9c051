//! Typed handles on the IPv6 load-balancing maps (`bpf/lib/maps.h`: `porin_lb_svc6`,
//! `porin_lb_slots6`, `porin_lb_backends6`, and the session affinity map
//! `porin_lb_affin6`), for the lb plugin's IPv6 ClusterIPs (dual stack). One element per write: IPv6 services are few next to IPv4 ones, so these maps
//! are not batched like `LbMaps`.

use std::net::SocketAddrV6;
use std::path::Path;

use aya::maps::{HashMap, MapData, MapError};
use aya::sys::SyscallError;

use super::abi::{LbAffinity6Key, LbBackend6, LbSlotKey, LbSvc6Key, LbSvcValue};
use super::error::DatapathError;
use super::lb_affinity::AffinityMap;
use super::maps::open_pinned;

/// IPv6 frontends: {VIP, port, protocol} -> {service id, backend count, flags}.
pub const MAP_LB6_SERVICES: &str = "porin_lb_svc6";
/// IPv6 backend slots: {service id, slot} -> backend id.
pub const MAP_LB6_SLOTS: &str = "porin_lb_slots6";
/// IPv6 backends: id -> address.
pub const MAP_LB6_BACKENDS: &str = "porin_lb_backends6";
/// `sessionAffinity: ClientIP` of IPv6 frontends: {client, service id} -> {backend id, last
/// use} (written by the datapath, pruned by the lb plugin).
pub const MAP_LB6_AFFINITY: &str = "porin_lb_affin6";

/// `max_entries` of the IPv6 service, slot and backend maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lb6Capacity {
    pub services: u32,
    pub slots: u32,
    pub backends: u32,
}

/// An IPv6 service frontend: ClusterIP, port and `IPPROTO_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lb6Frontend {
    pub addr: SocketAddrV6,
    pub proto: u8,
}

/// Read and write access to the IPv6 service, slot and backend maps.
pub struct Lb6Maps {
    services: HashMap<MapData, LbSvc6Key, LbSvcValue>,
    slots: HashMap<MapData, LbSlotKey, u32>,
    backends: HashMap<MapData, u32, LbBackend6>,
    /// `porin_lb_affin6`: the plugin prunes it, tests read and write it.
    pub affinity: AffinityMap<LbAffinity6Key>,
    capacity: Lb6Capacity,
}

fn ignore_missing(r: Result<(), MapError>, map: &'static str) -> Result<(), DatapathError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(DatapathError::map(map, e)),
    }
}

fn svc_key(fe: Lb6Frontend) -> LbSvc6Key {
    LbSvc6Key {
        vip: fe.addr.ip().octets(),
        port: fe.addr.port(),
        proto: fe.proto,
        pad: 0,
    }
}

/// A refused write: with the map's size, so a full map says so.
fn write_error(map: &'static str, max_entries: u32, e: MapError) -> DatapathError {
    match e {
        MapError::SyscallError(SyscallError { io_error, .. }) => DatapathError::MapWrite {
            map,
            max_entries,
            source: io_error,
        },
        e => DatapathError::map(map, e),
    }
}

fn frontend_of(k: &LbSvc6Key) -> Lb6Frontend {
    Lb6Frontend {
        addr: SocketAddrV6::new(k.vip.into(), k.port, 0, 0),
        proto: k.proto,
    }
}

impl Lb6Maps {
    /// Opens the three pinned maps; `pin_path` maps a map name to its pin.
    pub fn open(pin_path: impl Fn(&str) -> std::path::PathBuf) -> Result<Self, DatapathError> {
        let open = |name: &'static str| -> Result<aya::maps::Map, DatapathError> {
            open_pinned(Path::new(&pin_path(name)))
        };
        let max = |name: &'static str| -> Result<u32, DatapathError> {
            Ok(MapData::from_pin(pin_path(name))
                .and_then(|m| m.info())
                .map_err(|e| DatapathError::map(name, e))?
                .max_entries())
        };
        let capacity = Lb6Capacity {
            services: max(MAP_LB6_SERVICES)?,
            slots: max(MAP_LB6_SLOTS)?,
            backends: max(MAP_LB6_BACKENDS)?,
        };
        Ok(Self {
            capacity,
            affinity: AffinityMap::new(open(MAP_LB6_AFFINITY)?, MAP_LB6_AFFINITY)?,
            services: HashMap::try_from(open(MAP_LB6_SERVICES)?)
                .map_err(|e| DatapathError::map(MAP_LB6_SERVICES, e))?,
            slots: HashMap::try_from(open(MAP_LB6_SLOTS)?)
                .map_err(|e| DatapathError::map(MAP_LB6_SLOTS, e))?,
            backends: HashMap::try_from(open(MAP_LB6_BACKENDS)?)
                .map_err(|e| DatapathError::map(MAP_LB6_BACKENDS, e))?,
        })
    }

    /// `max_entries` of the service, slot and backend maps.
    pub fn capacity(&self) -> Lb6Capacity {
        self.capacity
    }

    /// Creates or updates a frontend with its service id and backend count.
    pub fn write_service(
        &mut self,
        fe: Lb6Frontend,
        service_id: u32,
        backend_count: u32,
    ) -> Result<(), DatapathError> {
        self.write_service_flags(fe, service_id, backend_count, 0)
    }

    /// [`Lb6Maps::write_service`] with `porin_lb_svc_value.flags` (session affinity).
    pub fn write_service_flags(
        &mut self,
        fe: Lb6Frontend,
        service_id: u32,
        backend_count: u32,
        flags: u32,
    ) -> Result<(), DatapathError> {
        let value = LbSvcValue {
            service_id,
            backend_count,
            flags,
        };
        self.services
            .insert(svc_key(fe), value, 0)
            .map_err(|e| write_error(MAP_LB6_SERVICES, self.capacity.services, e))
    }

    pub fn remove_service(&mut self, fe: Lb6Frontend) -> Result<(), DatapathError> {
        ignore_missing(self.services.remove(&svc_key(fe)), MAP_LB6_SERVICES)
    }

    pub fn write_slot(
        &mut self,
        service_id: u32,
        slot: u32,
        backend_id: u32,
    ) -> Result<(), DatapathError> {
        self.slots
            .insert(LbSlotKey { service_id, slot }, backend_id, 0)
            .map_err(|e| write_error(MAP_LB6_SLOTS, self.capacity.slots, e))
    }

    pub fn remove_slot(&mut self, service_id: u32, slot: u32) -> Result<(), DatapathError> {
        ignore_missing(
            self.slots.remove(&LbSlotKey { service_id, slot }),
            MAP_LB6_SLOTS,
        )
    }

    pub fn write_backend(&mut self, id: u32, addr: SocketAddrV6) -> Result<(), DatapathError> {
        let value = LbBackend6 {
            addr: addr.ip().octets(),
            port: addr.port(),
            pad: [0; 2],
        };
        self.backends
            .insert(id, value, 0)
            .map_err(|e| write_error(MAP_LB6_BACKENDS, self.capacity.backends, e))
    }

    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.backends.remove(&id), MAP_LB6_BACKENDS)
    }

    /// The frontends in the map with (service id, backend count): what a previous agent
    /// programmed.
    pub fn services(&self) -> Vec<(Lb6Frontend, u32, u32)> {
        self.services
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (frontend_of(&k), v.service_id, v.backend_count))
            .collect()
    }

    /// The `porin_lb_svc_value.flags` of every frontend.
    pub fn service_flags(&self) -> Vec<(Lb6Frontend, u32)> {
        self.services
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (frontend_of(&k), v.flags))
            .collect()
    }

    /// ((service id, slot), backend id) of every slot.
    pub fn slots(&self) -> Vec<((u32, u32), u32)> {
        self.slots
            .iter()
            .filter_map(Result::ok)
            .map(|(k, id)| ((k.service_id, k.slot), id))
            .collect()
    }

    /// (id, address) of every backend.
    pub fn backends(&self) -> Vec<(u32, SocketAddrV6)> {
        self.backends
            .iter()
            .filter_map(Result::ok)
            .map(|(id, b)| (id, SocketAddrV6::new(b.addr.into(), b.port, 0, 0)))
            .collect()
    }
}
