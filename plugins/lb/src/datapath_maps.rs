//! The pinned maps the lb plugin writes: the service, slot and backend maps
//! ([`LbMaps`]) and the Maglev tables ([`MaglevMaps`]), behind the programmer's
//! [`ServiceMaps`].

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use porin_core::datapath::abi::LbSvcValue;
use porin_core::datapath::{DatapathError, LbFrontend, LbMaps, MAP_LB_MAGLEV, MaglevMaps};

use crate::programmer::{AffinityPrune, Programmer, ServiceMaps, prune_selects};

/// Every map the programmer writes.
pub struct DatapathMaps {
    pub lb: LbMaps,
    pub maglev: MaglevMaps,
}

impl DatapathMaps {
    /// Opens the pinned maps; `pin_path` maps a map name to its pin. `table_size` is M,
    /// the size the agent created the Maglev map with (`CFG_LB_MAGLEV_M`).
    pub fn open(
        pin_path: impl Fn(&str) -> PathBuf,
        table_size: u32,
    ) -> Result<Self, DatapathError> {
        let lb = LbMaps::open(&pin_path)?;
        let maglev = MaglevMaps::open(&pin_path(MAP_LB_MAGLEV), table_size)?;
        Ok(Self { lb, maglev })
    }

    /// A programmer that adopts what a previous agent left in the maps, so ids stay
    /// stable across restarts and the first sync writes only real differences.
    pub fn adopt(&self) -> Result<Programmer, DatapathError> {
        let mut programmer = Programmer::adopt(
            self.lb.service_values()?,
            self.lb.slots()?,
            self.lb.backends()?,
        );
        let tables: BTreeSet<u32> = self.maglev.service_ids()?.into_iter().collect();
        programmer.adopt_tables(&tables);
        Ok(programmer)
    }
}

impl ServiceMaps for DatapathMaps {
    fn write_services(
        &mut self,
        items: &[(LbFrontend, u32, u32, u32)],
    ) -> Result<(), DatapathError> {
        let values: Vec<(LbFrontend, LbSvcValue)> = items
            .iter()
            .map(|(fe, service_id, backend_count, flags)| {
                let value = LbSvcValue {
                    service_id: *service_id,
                    backend_count: *backend_count,
                    flags: *flags,
                };
                (*fe, value)
            })
            .collect();
        self.lb.write_service_values(&values)
    }
    fn remove_services(&mut self, items: &[LbFrontend]) -> Result<(), DatapathError> {
        self.lb.remove_services(items)
    }
    fn write_slots(&mut self, items: &[(u32, u32, u32)]) -> Result<(), DatapathError> {
        self.lb.write_slots(items)
    }
    fn remove_slots(&mut self, items: &[(u32, u32)]) -> Result<(), DatapathError> {
        self.lb.remove_slots(items)
    }
    fn write_backends(&mut self, items: &[(u32, SocketAddrV4)]) -> Result<(), DatapathError> {
        self.lb.write_backends(items)
    }
    fn remove_backends(&mut self, ids: &[u32]) -> Result<(), DatapathError> {
        self.lb.remove_backends(ids)
    }
    fn prune_affinity(&mut self, prune: &AffinityPrune) -> Result<usize, DatapathError> {
        self.lb
            .prune_affinity(|service, backend| prune_selects(prune, service, backend))
    }
    fn write_tables(&mut self, items: &[(u32, &[u32])]) -> Result<(), DatapathError> {
        self.maglev.set_many(items)
    }
    fn remove_tables(&mut self, service_ids: &[u32]) -> Result<(), DatapathError> {
        self.maglev.remove_many(service_ids)
    }
}
