//! Writes the IPv6 frontends (dual stack) into `porin_lb_svc6`, `porin_lb_slots6` and
//! `porin_lb_backends6`, one element at a time, in the order that never leaves a window
//! where a frontend points at a missing slot or backend (as the IPv4 programmer does):
//! new backends, then slots, then the frontend's count; a shrinking frontend's count goes
//! down before its extra slots go; a removed frontend goes before its slots; a backend
//! goes once no slot points at it. A restarted agent adopts what the previous one
//! programmed ([`Programmer6::adopt`]), so ids stay and its first pass writes only
//! differences.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV6;

use porin_core::datapath::{DatapathError, Lb6Frontend, Lb6Maps};

use crate::desired6::DesiredServices6;

/// The IPv6 frontends as programmed.
#[derive(Debug, Default)]
pub struct Programmer6 {
    /// Frontend -> (service id, backend id of each slot).
    services: BTreeMap<Lb6Frontend, (u32, Vec<u32>)>,
    /// Backend -> (id, how many slots point at it).
    backends: BTreeMap<SocketAddrV6, (u32, usize)>,
    service_ids: BTreeSet<u32>,
    backend_ids: BTreeSet<u32>,
}

/// Lowest id >= 1 not in `used`; marks it used.
fn allocate(used: &mut BTreeSet<u32>) -> u32 {
    let mut id = 1;
    for &taken in used.iter() {
        if taken != id {
            break;
        }
        id += 1;
    }
    used.insert(id);
    id
}

impl Programmer6 {
    /// Brings the maps to `desired`. Returns the frontends that could not be programmed,
    /// with the reason (they keep their last good state and are retried on the next sync).
    pub fn sync(
        &mut self,
        desired: &DesiredServices6,
        maps: &mut Lb6Maps,
    ) -> Vec<(Lb6Frontend, String)> {
        let mut failed = Vec::new();
        let gone: Vec<Lb6Frontend> = self
            .services
            .keys()
            .filter(|fe| !desired.contains_key(fe))
            .copied()
            .collect();
        for fe in gone {
            if let Err(e) = self.remove(fe, maps) {
                failed.push((fe, e.to_string()));
            }
        }
        for (fe, backends) in desired {
            let current = self.services.get(fe).map(|(_, slots)| self.addrs_of(slots));
            if current.as_ref() == Some(backends) {
                continue;
            }
            if let Err(e) = self.program(*fe, backends, maps) {
                failed.push((*fe, e.to_string()));
            }
        }
        self.release_backends(maps);
        failed
    }

    /// The state a previous agent left in the maps: its frontends with their slots and
    /// backends. Slots no frontend counts are removed; backends no slot points at go on
    /// the first sync.
    pub fn adopt(maps: &mut Lb6Maps) -> Self {
        let mut p = Self::default();
        let slots: BTreeMap<(u32, u32), u32> = maps.slots().into_iter().collect();
        for (id, addr) in maps.backends() {
            p.backends.insert(addr, (id, 0));
            p.backend_ids.insert(id);
        }
        let mut counted = BTreeSet::new();
        for (fe, service_id, count) in maps.services() {
            let ids: Option<Vec<u32>> = (0..count)
                .map(|slot| slots.get(&(service_id, slot)).copied())
                .collect();
            let Some(ids) = ids else {
                // A frontend with a missing slot is reprogrammed from scratch.
                let _ = maps.remove_service(fe);
                continue;
            };
            for id in &ids {
                p.reference(*id, 1);
            }
            counted.extend((0..count).map(|slot| (service_id, slot)));
            p.service_ids.insert(service_id);
            p.services.insert(fe, (service_id, ids));
        }
        for key in slots.keys().filter(|k| !counted.contains(k)) {
            let _ = maps.remove_slot(key.0, key.1);
        }
        p
    }

    /// How many IPv6 frontends are programmed.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    fn addrs_of(&self, slots: &[u32]) -> Vec<SocketAddrV6> {
        let by_id: BTreeMap<u32, SocketAddrV6> =
            self.backends.iter().map(|(a, (id, _))| (*id, *a)).collect();
        slots
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect()
    }

    fn program(
        &mut self,
        fe: Lb6Frontend,
        backends: &[SocketAddrV6],
        maps: &mut Lb6Maps,
    ) -> Result<(), DatapathError> {
        let mut slots = Vec::with_capacity(backends.len());
        for addr in backends {
            let id = match self.backends.get(addr) {
                Some((id, _)) => *id,
                None => {
                    let id = allocate(&mut self.backend_ids);
                    if let Err(e) = maps.write_backend(id, *addr) {
                        self.backend_ids.remove(&id);
                        return Err(e);
                    }
                    self.backends.insert(*addr, (id, 0));
                    id
                }
            };
            slots.push(id);
        }
        let (service_id, old_slots) = match self.services.get(&fe) {
            Some((id, old)) => (*id, old.clone()),
            None => (allocate(&mut self.service_ids), Vec::new()),
        };
        for (slot, id) in slots.iter().enumerate() {
            if old_slots.get(slot) != Some(id) {
                maps.write_slot(service_id, slot_index(slot), *id)?;
            }
        }
        maps.write_service(fe, service_id, slot_index(slots.len()))?;
        for slot in slots.len()..old_slots.len() {
            maps.remove_slot(service_id, slot_index(slot))?;
        }
        for id in &slots {
            self.reference(*id, 1);
        }
        for id in &old_slots {
            self.reference(*id, -1);
        }
        self.services.insert(fe, (service_id, slots));
        Ok(())
    }

    fn remove(&mut self, fe: Lb6Frontend, maps: &mut Lb6Maps) -> Result<(), DatapathError> {
        let Some((service_id, slots)) = self.services.get(&fe).cloned() else {
            return Ok(());
        };
        maps.remove_service(fe)?;
        for slot in 0..slots.len() {
            maps.remove_slot(service_id, slot_index(slot))?;
        }
        for id in &slots {
            self.reference(*id, -1);
        }
        self.services.remove(&fe);
        self.service_ids.remove(&service_id);
        Ok(())
    }

    fn reference(&mut self, id: u32, delta: isize) {
        if let Some((_, refs)) = self.backends.values_mut().find(|(b, _)| *b == id) {
            *refs = refs.saturating_add_signed(delta);
        }
    }

    fn release_backends(&mut self, maps: &mut Lb6Maps) {
        let unused: Vec<(SocketAddrV6, u32)> = self
            .backends
            .iter()
            .filter(|(_, (_, refs))| *refs == 0)
            .map(|(a, (id, _))| (*a, *id))
            .collect();
        for (addr, id) in unused {
            match maps.remove_backend(id) {
                Ok(()) => {
                    self.backends.remove(&addr);
                    self.backend_ids.remove(&id);
                }
                Err(e) => tracing::warn!(backend = %addr, error = %e, "removing an IPv6 backend"),
            }
        }
    }
}

fn slot_index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}
