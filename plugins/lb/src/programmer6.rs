//! Writes the IPv6 frontends (dual stack) into `porin_lb_svc6`, `porin_lb_slots6` and
//! `porin_lb_backends6`, one element at a time, in the order that never leaves a window
//! where a frontend points at a missing slot or backend (as the IPv4 programmer does):
//! new backends, then slots, then the frontend's count; a shrinking frontend's count goes
//! down before its extra slots go; a removed frontend goes before its slots; a backend
//! goes once no slot points at it. A restarted agent adopts what the previous one
//! programmed ([`Programmer6::adopt`]), so ids stay and its first pass writes only
//! differences.
//!
//! Service ids start at [`LB6_SERVICE_ID_BASE`] (IPv4 ones from 1), so IPv6 Maglev tables
//! can share `porin_lb_maglev`. A frontend's `porin_lb_svc_value.flags` carry its
//! `sessionAffinity: ClientIP` timeout ([`Programmer6::sync_semantics`]); when a backend
//! leaves an affinity frontend, or the frontend goes, the clients bound to it are dropped
//! from `porin_lb_affin6` (as the IPv4 programmer does), so a reused id never inherits them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV6;

use porin_core::datapath::abi::{LB_F_AFFINITY, LB6_SERVICE_ID_BASE};
use porin_core::datapath::{DatapathError, Lb6Frontend, Lb6Maps, MaglevMaps};

use crate::desired6::DesiredServices6;
use crate::maglev::backend_table;
use crate::programmer::{AffinityPrune, affinity_flags, prune_selects, show_frontend};

/// IPv6 frontend -> the `sessionAffinity: ClientIP` timeout of its Service, in seconds.
pub type Affinity6 = BTreeMap<Lb6Frontend, u32>;

/// The IPv6 frontends as programmed.
#[derive(Debug, Default)]
pub struct Programmer6 {
    /// Frontend -> (service id, backend id of each slot).
    services: BTreeMap<Lb6Frontend, (u32, Vec<u32>)>,
    /// Backend -> (id, how many slots point at it).
    backends: BTreeMap<SocketAddrV6, (u32, usize)>,
    service_ids: BTreeSet<u32>,
    backend_ids: BTreeSet<u32>,
    /// `porin_lb_svc_value.flags` as written, per frontend (absent: 0).
    flags: BTreeMap<Lb6Frontend, u32>,
    /// Maglev table size M when the algorithm is Maglev.
    maglev: Option<u32>,
    /// Service ids with a Maglev table in `porin_lb_maglev`.
    tables: BTreeSet<u32>,
}

/// What a frontend should be: its backends and `porin_lb_svc_value.flags`.
#[derive(Clone, Copy)]
struct Wanted<'a> {
    backends: &'a [SocketAddrV6],
    flags: u32,
}

/// Lowest id >= `first` not in `used`; marks it used.
fn allocate(used: &mut BTreeSet<u32>, first: u32) -> u32 {
    let mut id = first;
    for &taken in used.range(first..) {
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
        self.sync_semantics(desired, &Affinity6::new(), maps, None)
    }

    /// Maglev: frontends with backends get a lookup table of `table_size` entries in
    /// `porin_lb_maglev` (shared with IPv4 services: the ids differ), written before the
    /// frontend's count so a new connection never meets a table of missing backends.
    pub fn with_maglev(mut self, table_size: Option<u32>) -> Self {
        self.maglev = table_size;
        self
    }

    /// Adopts the Maglev tables a previous agent left (service ids in `porin_lb_maglev`;
    /// IPv4 ones are ignored by range).
    pub fn adopt_tables(&mut self, service_ids: &BTreeSet<u32>) {
        self.tables = service_ids
            .range(LB6_SERVICE_ID_BASE..)
            .filter(|id| self.service_ids.contains(id))
            .copied()
            .collect();
    }

    /// [`Programmer6::sync`] with the session affinity of the frontends in `affinity` and,
    /// with Maglev on, their tables in `tables`.
    pub fn sync_semantics(
        &mut self,
        desired: &DesiredServices6,
        affinity: &Affinity6,
        maps: &mut Lb6Maps,
        mut tables: Option<&mut MaglevMaps>,
    ) -> Vec<(Lb6Frontend, String)> {
        let mut failed = Vec::new();
        let mut prune = AffinityPrune::new();
        let gone: Vec<Lb6Frontend> = self
            .services
            .keys()
            .filter(|fe| !desired.contains_key(fe))
            .copied()
            .collect();
        for fe in gone {
            if let Err(e) = self.remove(fe, maps, tables.as_deref_mut(), &mut prune) {
                failed.push((fe, e.to_string()));
            }
        }
        for (fe, backends) in desired {
            let flags = affinity_flags(affinity.get(fe).copied());
            let current = self.services.get(fe).map(|(_, slots)| self.addrs_of(slots));
            if current.as_ref() == Some(backends) && self.flags_of(*fe) == flags {
                continue;
            }
            let wanted = Wanted { backends, flags };
            if let Err(e) = self.program(*fe, wanted, maps, tables.as_deref_mut(), &mut prune) {
                // Names the frontend; a full map's error names the map and its size.
                failed.push((
                    *fe,
                    format!("service {}: {e}", show_frontend(fe.addr, fe.proto)),
                ));
            }
        }
        if !prune.is_empty()
            && let Err(e) = maps.affinity.prune(|s, b| prune_selects(&prune, s, b))
        {
            tracing::warn!(error = %e, "pruning IPv6 session affinity");
        }
        self.release_backends(maps);
        failed
    }

    fn flags_of(&self, fe: Lb6Frontend) -> u32 {
        self.flags.get(&fe).copied().unwrap_or(0)
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
        let flags: BTreeMap<Lb6Frontend, u32> = maps.service_flags().into_iter().collect();
        for (fe, service_id, count) in maps.services() {
            if service_id < LB6_SERVICE_ID_BASE {
                // An id of an agent from before the IPv6 id range: reprogrammed, so its
                // Maglev table cannot collide with an IPv4 service's.
                let _ = maps.remove_service(fe);
                continue;
            }
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
            if let Some(f) = flags.get(&fe).filter(|f| **f != 0) {
                p.flags.insert(fe, *f);
            }
        }
        for key in slots.keys().filter(|k| !counted.contains(k)) {
            let _ = maps.remove_slot(key.0, key.1);
        }
        p
    }

    /// Entries the mirror holds: (frontends, slots, backends), for map pressure.
    pub fn entry_counts(&self) -> (usize, usize, usize) {
        let slots = self.services.values().map(|(_, s)| s.len()).sum();
        (self.services.len(), slots, self.backends.len())
    }

    /// Maglev tables installed, for map pressure.
    pub fn table_count(&self) -> usize {
        self.tables.len()
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
        Wanted { backends, flags }: Wanted<'_>,
        maps: &mut Lb6Maps,
        mut tables: Option<&mut MaglevMaps>,
        prune: &mut AffinityPrune,
    ) -> Result<(), String> {
        let mut slots = Vec::with_capacity(backends.len());
        for addr in backends {
            let id = match self.backends.get(addr) {
                Some((id, _)) => *id,
                None => {
                    let id = allocate(&mut self.backend_ids, 1);
                    if let Err(e) = maps.write_backend(id, *addr) {
                        self.backend_ids.remove(&id);
                        return Err(e.to_string());
                    }
                    self.backends.insert(*addr, (id, 0));
                    id
                }
            };
            slots.push(id);
        }
        let (service_id, old_slots) = match self.services.get(&fe) {
            Some((id, old)) => (*id, old.clone()),
            None => (
                allocate(&mut self.service_ids, LB6_SERVICE_ID_BASE),
                Vec::new(),
            ),
        };
        let wanted = Wanted { backends, flags };
        let written = self.write_entries(
            fe,
            service_id,
            (&slots, &old_slots),
            wanted,
            maps,
            tables.as_deref_mut(),
        );
        if let Err(e) = written {
            if !self.services.contains_key(&fe) {
                // A new frontend that did not fit leaves nothing behind: its slots and
                // table go, its id is free again.
                for slot in 0..slots.len() {
                    let _ = maps.remove_slot(service_id, slot_index(slot));
                }
                if self.tables.remove(&service_id)
                    && let Some(tables) = tables.as_deref_mut()
                {
                    let _ = tables.remove(service_id);
                }
                self.service_ids.remove(&service_id);
            }
            return Err(e);
        }
        let table = self.maglev.filter(|_| !backends.is_empty());
        if self.flags_of(fe) & LB_F_AFFINITY != 0 {
            let left: BTreeSet<u32> = old_slots
                .iter()
                .filter(|id| !slots.contains(id))
                .copied()
                .collect();
            if !left.is_empty() {
                prune.insert(service_id, Some(left));
            }
        }
        if flags == 0 {
            self.flags.remove(&fe);
        } else {
            self.flags.insert(fe, flags);
        }
        for slot in slots.len()..old_slots.len() {
            maps.remove_slot(service_id, slot_index(slot))
                .map_err(|e| e.to_string())?;
        }
        if table.is_none() && self.tables.remove(&service_id) {
            // Harmless if it stays: a frontend without backends refuses before the lookup.
            if let Some(tables) = tables {
                let _ = tables.remove(service_id);
            }
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

    /// The slots that changed, the Maglev table, then the frontend's count and flags.
    fn write_entries(
        &mut self,
        fe: Lb6Frontend,
        service_id: u32,
        (slots, old_slots): (&[u32], &[u32]),
        Wanted { backends, flags }: Wanted<'_>,
        maps: &mut Lb6Maps,
        tables: Option<&mut MaglevMaps>,
    ) -> Result<(), String> {
        for (slot, id) in slots.iter().enumerate() {
            if old_slots.get(slot) != Some(id) {
                maps.write_slot(service_id, slot_index(slot), *id)
                    .map_err(|e| e.to_string())?;
            }
        }
        let table = self.maglev.filter(|_| !backends.is_empty());
        if let (Some(m), Some(tables)) = (table, tables) {
            // Before the count: new connections find a table of backends that exist.
            let t = backend_table(backends, slots, m)
                .map_err(|e| format!("computing its Maglev table: {e}"))?;
            tables
                .set(service_id, &t)
                .map_err(|e| format!("writing its Maglev table: {e}"))?;
            self.tables.insert(service_id);
        }
        maps.write_service_flags(fe, service_id, slot_index(slots.len()), flags)
            .map_err(|e| e.to_string())
    }

    fn remove(
        &mut self,
        fe: Lb6Frontend,
        maps: &mut Lb6Maps,
        tables: Option<&mut MaglevMaps>,
        prune: &mut AffinityPrune,
    ) -> Result<(), DatapathError> {
        let Some((service_id, slots)) = self.services.get(&fe).cloned() else {
            return Ok(());
        };
        maps.remove_service(fe)?;
        if self.tables.contains(&service_id)
            && let Some(tables) = tables
        {
            // A frontend taking the id next must not inherit the table.
            tables.remove(service_id)?;
            self.tables.remove(&service_id);
        }
        if self
            .flags
            .remove(&fe)
            .is_some_and(|f| f & LB_F_AFFINITY != 0)
        {
            // Its id may serve another frontend next: no client may keep a backend.
            prune.insert(service_id, None);
        }
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
