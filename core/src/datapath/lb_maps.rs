//! Typed handles on the load-balancing maps (`bpf/lib/maps.h`, `porin_lb_*`), for the lb
//! plugin. Opened from the pins like the other handles, so the plugin holds them without ever
//! touching the loaded object.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use aya::maps::{HashMap, MapData, MapError};

use super::abi::{LbBackend, LbSlotKey, LbSvcKey, LbSvcValue};
use super::error::DatapathError;
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
}

fn svc_key(fe: LbFrontend) -> LbSvcKey {
    LbSvcKey {
        // Network byte order in memory: the octets as they are on the wire.
        vip: u32::from_ne_bytes(fe.addr.ip().octets()),
        port: fe.addr.port(),
        proto: fe.proto,
        pad: 0,
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
        Ok(Self {
            services: HashMap::try_from(open(MAP_LB_SERVICES)?)
                .map_err(|e| DatapathError::map(MAP_LB_SERVICES, e))?,
            slots: HashMap::try_from(open(MAP_LB_SLOTS)?)
                .map_err(|e| DatapathError::map(MAP_LB_SLOTS, e))?,
            backends: HashMap::try_from(open(MAP_LB_BACKENDS)?)
                .map_err(|e| DatapathError::map(MAP_LB_BACKENDS, e))?,
        })
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
        let value = LbBackend {
            addr: u32::from_ne_bytes(addr.ip().octets()),
            port: addr.port(),
            pad: [0; 2],
        };
        self.backends
            .insert(id, value, 0)
            .map_err(|e| DatapathError::map(MAP_LB_BACKENDS, e))
    }

    /// Removes a backend.
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.backends.remove(&id), MAP_LB_BACKENDS)
    }

    /// Every frontend with (service id, backend count): what a restarted agent finds.
    pub fn services(&self) -> Result<Vec<(LbFrontend, u32, u32)>, DatapathError> {
        self.services
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| DatapathError::map(MAP_LB_SERVICES, e))?;
                let fe = LbFrontend {
                    addr: SocketAddrV4::new(addr_of(k.vip), k.port),
                    proto: k.proto,
                };
                Ok((fe, v.service_id, v.backend_count))
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
