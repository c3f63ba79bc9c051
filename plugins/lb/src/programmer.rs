//! Writes desired services into the LB maps as differences, with stable ids.
//!
//! The programmer mirrors what it wrote. A change to one service touches only that
//! service's entries, in an order that never leaves a window without backends: new
//! backends first, then slots, then the service's backend count; when a service shrinks,
//! its count goes down before the extra slots are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

use porin_core::datapath::{DatapathError, LbFrontend, LbMaps};

use crate::desired::DesiredServices;

/// The writes the programmer needs; [`LbMaps`] in the agent, a fake in tests.
pub trait ServiceMaps {
    fn upsert_service(&mut self, fe: LbFrontend, id: u32, count: u32) -> Result<(), DatapathError>;
    fn remove_service(&mut self, fe: LbFrontend) -> Result<(), DatapathError>;
    fn set_slot(
        &mut self,
        service_id: u32,
        slot: u32,
        backend_id: u32,
    ) -> Result<(), DatapathError>;
    fn remove_slot(&mut self, service_id: u32, slot: u32) -> Result<(), DatapathError>;
    fn upsert_backend(&mut self, id: u32, addr: SocketAddrV4) -> Result<(), DatapathError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError>;
}

impl ServiceMaps for LbMaps {
    fn upsert_service(&mut self, fe: LbFrontend, id: u32, count: u32) -> Result<(), DatapathError> {
        LbMaps::upsert_service(self, fe, id, count)
    }
    fn remove_service(&mut self, fe: LbFrontend) -> Result<(), DatapathError> {
        LbMaps::remove_service(self, fe)
    }
    fn set_slot(
        &mut self,
        service_id: u32,
        slot: u32,
        backend_id: u32,
    ) -> Result<(), DatapathError> {
        LbMaps::set_slot(self, service_id, slot, backend_id)
    }
    fn remove_slot(&mut self, service_id: u32, slot: u32) -> Result<(), DatapathError> {
        LbMaps::remove_slot(self, service_id, slot)
    }
    fn upsert_backend(&mut self, id: u32, addr: SocketAddrV4) -> Result<(), DatapathError> {
        LbMaps::upsert_backend(self, id, addr)
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
        LbMaps::remove_backend(self, id)
    }
}

/// A slot whose content is unknown after a failed write: never equal to a real id, so the
/// next sync rewrites it.
const UNKNOWN: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    id: u32,
    /// Backend id per slot, as written.
    slots: Vec<u32>,
    /// The service entry itself may not match (a write failed).
    dirty: bool,
}

/// Lowest free id from 1: ids stay small and a live object keeps its id.
#[derive(Debug, Default)]
struct Ids(BTreeSet<u32>);

impl Ids {
    fn take(&mut self) -> u32 {
        let mut id = 1;
        for used in &self.0 {
            if *used != id {
                break;
            }
            id += 1;
        }
        self.0.insert(id);
        id
    }
    fn release(&mut self, id: u32) {
        self.0.remove(&id);
    }
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Map writes and removals issued.
    pub writes: usize,
    /// Failures, each naming the map operation and the service.
    pub errors: Vec<String>,
}

/// The mirror of the LB maps and the id allocators.
#[derive(Debug, Default)]
pub struct Programmer {
    services: BTreeMap<LbFrontend, Programmed>,
    backends: BTreeMap<SocketAddrV4, u32>,
    service_ids: Ids,
    backend_ids: Ids,
}

impl Programmer {
    /// Adopts what a previous agent left in the pinned maps, so ids stay stable across
    /// restarts and the first sync only writes real differences.
    pub fn adopt(
        services: Vec<(LbFrontend, u32, u32)>,
        slots: Vec<(u32, u32, u32)>,
        backends: Vec<(u32, SocketAddrV4)>,
    ) -> Self {
        let mut p = Self::default();
        for (id, addr) in backends {
            p.backend_ids.0.insert(id);
            p.backends.insert(addr, id);
        }
        let mut by_service: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
        for (service, slot, backend) in slots {
            by_service.entry(service).or_default().insert(slot, backend);
        }
        for (fe, id, count) in services {
            p.service_ids.0.insert(id);
            let found = by_service.remove(&id).unwrap_or_default();
            let len = found.keys().next_back().map_or(0, |s| s + 1).max(count);
            let slots = (0..len)
                .map(|s| found.get(&s).copied().unwrap_or(UNKNOWN))
                .collect();
            p.services.insert(
                fe,
                Programmed {
                    id,
                    slots,
                    dirty: false,
                },
            );
        }
        p
    }

    /// Brings the maps to `desired`, writing only differences.
    pub fn sync(&mut self, desired: &DesiredServices, maps: &mut impl ServiceMaps) -> SyncReport {
        let mut report = SyncReport::default();
        for (fe, backends) in desired {
            self.sync_service(*fe, backends, maps, &mut report);
        }
        let gone: Vec<LbFrontend> = self
            .services
            .keys()
            .filter(|fe| !desired.contains_key(fe))
            .copied()
            .collect();
        for fe in gone {
            self.remove_service(fe, maps, &mut report);
        }
        self.remove_unused_backends(maps, &mut report);
        report
    }

    fn sync_service(
        &mut self,
        fe: LbFrontend,
        backends: &[SocketAddrV4],
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) {
        let mut wanted = Vec::with_capacity(backends.len());
        for addr in backends {
            let id = match self.backends.get(addr) {
                Some(id) => *id,
                None => {
                    let id = self.backend_ids.take();
                    report.writes += 1;
                    if let Err(e) = maps.upsert_backend(id, *addr) {
                        self.backend_ids.release(id);
                        report
                            .errors
                            .push(format!("backend {addr} of service {}: {e}", show(fe)));
                        return; // the service keeps its last good backends
                    }
                    self.backends.insert(*addr, id);
                    id
                }
            };
            wanted.push(id);
        }

        let current = match self.services.get(&fe) {
            Some(p) => p.clone(),
            None => Programmed {
                id: self.service_ids.take(),
                slots: Vec::new(),
                dirty: true,
            },
        };
        if !current.dirty && current.slots == wanted {
            return;
        }
        let id = current.id;
        let result = (|| -> Result<usize, DatapathError> {
            let mut writes = 0;
            for (slot, backend) in wanted.iter().enumerate() {
                if current.slots.get(slot) != Some(backend) {
                    maps.set_slot(id, slot as u32, *backend)?;
                    writes += 1;
                }
            }
            maps.upsert_service(fe, id, wanted.len() as u32)?;
            writes += 1;
            for slot in wanted.len()..current.slots.len() {
                maps.remove_slot(id, slot as u32)?;
                writes += 1;
            }
            Ok(writes)
        })();
        match result {
            Ok(writes) => {
                report.writes += writes;
                self.services.insert(
                    fe,
                    Programmed {
                        id,
                        slots: wanted,
                        dirty: false,
                    },
                );
            }
            Err(e) => {
                report.errors.push(format!("service {}: {e}", show(fe)));
                // Unknown state: every slot that may exist is rewritten or removed next time.
                let len = wanted.len().max(current.slots.len());
                self.services.insert(
                    fe,
                    Programmed {
                        id,
                        slots: vec![UNKNOWN; len],
                        dirty: true,
                    },
                );
            }
        }
    }

    fn remove_service(
        &mut self,
        fe: LbFrontend,
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) {
        let Some(p) = self.services.get(&fe).cloned() else {
            return;
        };
        // The frontend goes first: from then on no packet reads the slots.
        let result = (|| -> Result<usize, DatapathError> {
            maps.remove_service(fe)?;
            for slot in 0..p.slots.len() {
                maps.remove_slot(p.id, slot as u32)?;
            }
            Ok(1 + p.slots.len())
        })();
        match result {
            Ok(writes) => {
                report.writes += writes;
                self.services.remove(&fe);
                self.service_ids.release(p.id);
            }
            Err(e) => report
                .errors
                .push(format!("removing service {}: {e}", show(fe))),
        }
    }

    fn remove_unused_backends(&mut self, maps: &mut impl ServiceMaps, report: &mut SyncReport) {
        let used: BTreeSet<u32> = self
            .services
            .values()
            .flat_map(|p| p.slots.iter().copied())
            .collect();
        let unused: Vec<(SocketAddrV4, u32)> = self
            .backends
            .iter()
            .filter(|(_, id)| !used.contains(id))
            .map(|(a, id)| (*a, *id))
            .collect();
        for (addr, id) in unused {
            report.writes += 1;
            match maps.remove_backend(id) {
                Ok(()) => {
                    self.backends.remove(&addr);
                    self.backend_ids.release(id);
                }
                Err(e) => report.errors.push(format!("removing backend {addr}: {e}")),
            }
        }
    }

    /// Number of frontends programmed.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

fn show(fe: LbFrontend) -> String {
    let proto = match fe.proto {
        6 => "TCP",
        17 => "UDP",
        _ => "?",
    };
    format!("{}/{proto}", fe.addr)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The maps as plain collections, with an optional failure injected.
    #[derive(Default)]
    struct FakeMaps {
        services: BTreeMap<LbFrontend, (u32, u32)>,
        slots: BTreeMap<(u32, u32), u32>,
        backends: BTreeMap<u32, SocketAddrV4>,
        ops: Vec<String>,
        fail_slots: bool,
    }

    fn fail(map: &str) -> DatapathError {
        DatapathError::MapMissing {
            map: if map == "slots" {
                "porin_lb_slots"
            } else {
                "porin_lb_svc"
            },
        }
    }

    impl ServiceMaps for FakeMaps {
        fn upsert_service(
            &mut self,
            fe: LbFrontend,
            id: u32,
            count: u32,
        ) -> Result<(), DatapathError> {
            self.ops.push(format!("svc {id}={count}"));
            self.services.insert(fe, (id, count));
            Ok(())
        }
        fn remove_service(&mut self, fe: LbFrontend) -> Result<(), DatapathError> {
            self.ops.push("svc-".into());
            self.services.remove(&fe);
            Ok(())
        }
        fn set_slot(&mut self, s: u32, slot: u32, b: u32) -> Result<(), DatapathError> {
            if self.fail_slots {
                return Err(fail("slots"));
            }
            self.ops.push(format!("slot {s}.{slot}={b}"));
            self.slots.insert((s, slot), b);
            Ok(())
        }
        fn remove_slot(&mut self, s: u32, slot: u32) -> Result<(), DatapathError> {
            self.ops.push(format!("slot {s}.{slot}-"));
            self.slots.remove(&(s, slot));
            Ok(())
        }
        fn upsert_backend(&mut self, id: u32, addr: SocketAddrV4) -> Result<(), DatapathError> {
            self.ops.push(format!("be {id}={addr}"));
            self.backends.insert(id, addr);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), DatapathError> {
            self.ops.push(format!("be {id}-"));
            self.backends.remove(&id);
            Ok(())
        }
    }

    impl FakeMaps {
        /// What the datapath would resolve for a frontend.
        fn resolve(&self, fe: LbFrontend) -> Vec<SocketAddrV4> {
            let Some((id, count)) = self.services.get(&fe) else {
                return Vec::new();
            };
            (0..*count)
                .map(|s| self.backends[&self.slots[&(*id, s)]])
                .collect()
        }
    }

    fn fe(port: u16) -> LbFrontend {
        LbFrontend {
            addr: SocketAddrV4::new([10, 96, 0, 50].into(), port),
            proto: 6,
        }
    }

    fn sa(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new([10, 200, 1, last].into(), 8080)
    }

    fn desired(items: &[(u16, &[u8])]) -> DesiredServices {
        items
            .iter()
            .map(|(port, backends)| (fe(*port), backends.iter().map(|b| sa(*b)).collect()))
            .collect()
    }

    #[test]
    fn writes_only_differences_and_removes_stale_entries() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        let r = p.sync(&desired(&[(80, &[1, 2]), (81, &[2])]), &mut maps);
        assert!(r.errors.is_empty());
        assert_eq!(maps.resolve(fe(80)), vec![sa(1), sa(2)]);
        assert_eq!(maps.resolve(fe(81)), vec![sa(2)]);
        assert_eq!(maps.backends.len(), 2, "a shared backend is written once");

        maps.ops.clear();
        let r = p.sync(&desired(&[(80, &[1, 2]), (81, &[2])]), &mut maps);
        assert_eq!((r.writes, maps.ops.len()), (0, 0), "nothing changed");

        // One service shrinks, the other goes: only their entries are touched.
        let r = p.sync(&desired(&[(80, &[2])]), &mut maps);
        assert!(r.errors.is_empty());
        assert_eq!(maps.resolve(fe(80)), vec![sa(2)]);
        assert!(!maps.services.contains_key(&fe(81)));
        assert_eq!(maps.slots.len(), 1, "stale slots removed: {:?}", maps.slots);
        assert_eq!(
            maps.backends.values().copied().collect::<Vec<_>>(),
            vec![sa(2)]
        );
    }

    #[test]
    fn never_a_window_without_backends() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        p.sync(&desired(&[(80, &[1, 2, 3])]), &mut maps);
        maps.ops.clear();
        p.sync(&desired(&[(80, &[4])]), &mut maps);
        // New backend, then its slot, then the count, then the old slots and backends.
        assert_eq!(
            maps.ops,
            vec![
                "be 4=10.200.1.4:8080",
                "slot 1.0=4",
                "svc 1=1",
                "slot 1.1-",
                "slot 1.2-",
                "be 1-",
                "be 2-",
                "be 3-"
            ]
        );
    }

    #[test]
    fn ids_are_stable_and_adopted_after_a_restart() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        p.sync(&desired(&[(80, &[1]), (81, &[2])]), &mut maps);
        let id81 = maps.services[&fe(81)].0;
        p.sync(&desired(&[(81, &[2])]), &mut maps);
        assert_eq!(
            maps.services[&fe(81)].0,
            id81,
            "a live service keeps its id"
        );

        // A new agent adopts the maps: its first sync writes nothing.
        let mut adopted = Programmer::adopt(
            maps.services
                .iter()
                .map(|(f, (i, c))| (*f, *i, *c))
                .collect(),
            maps.slots.iter().map(|((s, l), b)| (*s, *l, *b)).collect(),
            maps.backends.iter().map(|(i, a)| (*i, *a)).collect(),
        );
        maps.ops.clear();
        let r = adopted.sync(&desired(&[(81, &[2])]), &mut maps);
        assert_eq!((r.writes, maps.ops.clone()), (0, Vec::<String>::new()));
    }

    #[test]
    fn a_failed_write_is_reported_and_retried() {
        let mut maps = FakeMaps {
            fail_slots: true,
            ..FakeMaps::default()
        };
        let mut p = Programmer::default();
        let r = p.sync(&desired(&[(80, &[1])]), &mut maps);
        assert_eq!(r.errors.len(), 1);
        assert!(
            r.errors[0].contains("10.96.0.50:80/TCP") && r.errors[0].contains("porin_lb_slots"),
            "{:?}",
            r.errors
        );
        maps.fail_slots = false;
        let r = p.sync(&desired(&[(80, &[1])]), &mut maps);
        assert!(r.errors.is_empty());
        assert_eq!(maps.resolve(fe(80)), vec![sa(1)]);
    }
}
