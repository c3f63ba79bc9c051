//! Writes desired services into the LB maps as differences, with stable ids.
//!
//! The programmer mirrors what it wrote. A change to one service touches only that
//! service's entries, in an order that never leaves a window without backends: new
//! backends first, then slots, then the service's backend count; when a service shrinks,
//! its count goes down before the extra slots are removed, and backends go last, once
//! no slot points at them. Each of these steps is one batched write per map
//! (`BPF_MAP_UPDATE_BATCH`), so programming 100,000 services costs a few dozen
//! syscalls, not half a million.
//!
//! A write the kernel refuses (typically a full map) stops its batch at that element:
//! the services before it are programmed, the one that failed and the rest keep their
//! last good state, and the error names the map and the first service that did not fit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddrV4;

use porin_core::datapath::abi::{LB_AFFINITY_TIMEOUT_SHIFT, LB_F_AFFINITY};
use porin_core::datapath::{DatapathError, LbFrontend};

use crate::desired::{DesiredServices, FrontendSpec};
use crate::maglev::backend_table;

/// Affinity entries to drop: per service id, the backend ids that left it (None: every
/// entry of the service, which went).
pub type AffinityPrune = BTreeMap<u32, Option<BTreeSet<u32>>>;

/// The batched writes the programmer needs; [`LbMaps`] in the agent, a fake in tests.
/// A failed batch reports how many elements went in before the failure
/// ([`DatapathError::MapBatch`]'s `done`); any other error means none did.
pub trait ServiceMaps {
    /// (frontend, service id, backend count, flags).
    fn write_services(
        &mut self,
        items: &[(LbFrontend, u32, u32, u32)],
    ) -> Result<(), DatapathError>;
    fn remove_services(&mut self, items: &[LbFrontend]) -> Result<(), DatapathError>;
    /// (service id, slot, backend id).
    fn write_slots(&mut self, items: &[(u32, u32, u32)]) -> Result<(), DatapathError>;
    /// (service id, slot).
    fn remove_slots(&mut self, items: &[(u32, u32)]) -> Result<(), DatapathError>;
    fn write_backends(&mut self, items: &[(u32, SocketAddrV4)]) -> Result<(), DatapathError>;
    fn remove_backends(&mut self, ids: &[u32]) -> Result<(), DatapathError>;
    /// Drops the affinity entries `prune` names; returns how many went.
    fn prune_affinity(&mut self, prune: &AffinityPrune) -> Result<usize, DatapathError>;
    /// Installs or atomically replaces Maglev tables: (service id, M backend ids), in one
    /// batch (a failure reports how many went in, like the other batches).
    fn write_tables(&mut self, items: &[(u32, &[u32])]) -> Result<(), DatapathError>;
    /// Removes the Maglev tables of services (missing ones are skipped).
    fn remove_tables(&mut self, service_ids: &[u32]) -> Result<(), DatapathError>;
}

/// `porin_lb_svc_value.flags` of a frontend: `sessionAffinity: ClientIP` and its timeout.
pub fn service_flags(spec: &FrontendSpec) -> u32 {
    affinity_flags(spec.affinity_timeout)
}

/// `porin_lb_svc_value.flags` for a `sessionAffinity: ClientIP` timeout (None: no
/// affinity), for both families' frontends.
pub fn affinity_flags(timeout: Option<u32>) -> u32 {
    match timeout {
        Some(timeout) => LB_F_AFFINITY | (timeout.min(0xff_ffff) << LB_AFFINITY_TIMEOUT_SHIFT),
        None => 0,
    }
}

/// Whether `prune` selects the affinity entry of (service id, backend id).
pub fn prune_selects(prune: &AffinityPrune, service: u32, backend: u32) -> bool {
    match prune.get(&service) {
        Some(None) => true,
        Some(Some(left)) => left.contains(&backend),
        None => false,
    }
}

/// How many elements of a failed batch went in.
fn written_before(error: &DatapathError) -> usize {
    match error {
        DatapathError::MapBatch { done, .. } => *done,
        _ => 0,
    }
}

/// Maglev tables computed and written per batch (each is M x 4 bytes: 64 KiB at the
/// default M, so a chunk holds 16 MiB).
const TABLE_CHUNK: usize = 256;

/// A slot whose content is unknown after a failed write: never equal to a real id, so the
/// next sync rewrites it.
const UNKNOWN: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    id: u32,
    /// Backend id per slot, as written.
    slots: Vec<u32>,
    /// `porin_lb_svc_value.flags` as written.
    flags: u32,
    /// The service entry itself may not match (a write failed).
    dirty: bool,
    /// A Maglev table of `slots` is installed.
    table: bool,
}

/// Lowest free id from 1: ids stay small and a live object keeps its id. O(log n).
#[derive(Debug, Default)]
struct Ids {
    /// Every id up to `high` is taken except those in `free`.
    high: u32,
    free: BTreeSet<u32>,
}

impl Ids {
    fn take(&mut self) -> u32 {
        if let Some(id) = self.free.pop_first() {
            return id;
        }
        self.high += 1;
        self.high
    }

    fn release(&mut self, id: u32) {
        if id == 0 || id > self.high {
            return;
        }
        self.free.insert(id);
        // Keep `high` tight so `free` only holds real gaps.
        while self.high > 0 && self.free.remove(&self.high) {
            self.high -= 1;
        }
    }

    /// Ids found in the maps (a restarted agent's adoption).
    fn adopt(ids: impl IntoIterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = ids.into_iter().filter(|id| *id != 0).collect();
        let high = used.last().copied().unwrap_or(0);
        let free = (1..high).filter(|id| !used.contains(id)).collect();
        Self { high, free }
    }
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Map elements written and removed.
    pub writes: usize,
    /// Failures, each naming the map and the service.
    pub errors: Vec<String>,
    /// Frontends that could not be programmed, with the reason (shown by
    /// `porin service list`); they keep their last good state and are retried.
    pub failed: BTreeMap<LbFrontend, String>,
}

/// A change with its position in the sync (writes keep that order).
type Indexed = (usize, Change);

/// One service whose entries change in this sync.
struct Change {
    fe: LbFrontend,
    id: u32,
    wanted: Vec<u32>,
    flags: u32,
    /// The addresses of `wanted`, in the same order (the Maglev table hashes them).
    addrs: Vec<SocketAddrV4>,
    /// Whether the service gets a Maglev table.
    table: bool,
    old: Option<Programmed>,
}

/// The mirror of the LB maps and the id allocators.
#[derive(Debug, Default)]
pub struct Programmer {
    services: BTreeMap<LbFrontend, Programmed>,
    backends: BTreeMap<SocketAddrV4, u32>,
    /// How many slots point at each backend id (a backend goes when this reaches 0).
    backend_refs: HashMap<u32, usize>,
    service_ids: Ids,
    backend_ids: Ids,
    /// Maglev table size M when the algorithm is Maglev: every service with backends
    /// gets a table.
    maglev: Option<u32>,
}

impl Programmer {
    /// Adopts what a previous agent left in the pinned maps, so ids stay stable across
    /// restarts and the first sync only writes real differences.
    pub fn adopt(
        services: Vec<(LbFrontend, u32, u32, u32)>,
        slots: Vec<(u32, u32, u32)>,
        backends: Vec<(u32, SocketAddrV4)>,
    ) -> Self {
        let mut p = Self {
            backend_ids: Ids::adopt(backends.iter().map(|(id, _)| *id)),
            service_ids: Ids::adopt(services.iter().map(|(_, id, _, _)| *id)),
            ..Self::default()
        };
        for (id, addr) in backends {
            p.backends.insert(addr, id);
        }
        let mut by_service: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
        for (service, slot, backend) in slots {
            by_service.entry(service).or_default().insert(slot, backend);
        }
        for (fe, id, count, flags) in services {
            let found = by_service.remove(&id).unwrap_or_default();
            let len = found.keys().next_back().map_or(0, |s| s + 1).max(count);
            let slots = (0..len)
                .map(|s| found.get(&s).copied().unwrap_or(UNKNOWN))
                .collect();
            p.set(
                fe,
                Programmed {
                    id,
                    slots,
                    flags,
                    dirty: false,
                    table: false,
                },
            );
        }
        p
    }

    /// Maglev: services with backends get a lookup table of `table_size` entries
    /// (`None`: random selection, tables are removed).
    pub fn with_maglev(mut self, table_size: Option<u32>) -> Self {
        self.maglev = table_size;
        self
    }

    /// Adopts the Maglev tables found in the map (by service id): a service whose slots
    /// are unchanged keeps its table, since a table only depends on its backends and M.
    pub fn adopt_tables(&mut self, service_ids: &BTreeSet<u32>) {
        for p in self.services.values_mut() {
            p.table = service_ids.contains(&p.id);
        }
    }

    /// Brings the maps to `desired`, writing only differences.
    pub fn sync(&mut self, desired: &DesiredServices, maps: &mut impl ServiceMaps) -> SyncReport {
        let gone: Vec<LbFrontend> = self
            .services
            .keys()
            .filter(|fe| !desired.contains_key(fe))
            .copied()
            .collect();
        let wanted: Vec<(LbFrontend, &FrontendSpec)> =
            desired.iter().map(|(fe, spec)| (*fe, spec)).collect();
        self.apply(&wanted, &gone, maps)
    }

    /// Like [`Self::sync`] for the frontends in `scope` only (those of the objects that
    /// changed): the cost of an update does not grow with the number of services.
    pub fn sync_scope(
        &mut self,
        desired: &DesiredServices,
        scope: &BTreeSet<LbFrontend>,
        maps: &mut impl ServiceMaps,
    ) -> SyncReport {
        let gone: Vec<LbFrontend> = scope
            .iter()
            .filter(|fe| !desired.contains_key(fe) && self.services.contains_key(fe))
            .copied()
            .collect();
        let wanted: Vec<(LbFrontend, &FrontendSpec)> = scope
            .iter()
            .filter_map(|fe| desired.get(fe).map(|spec| (*fe, spec)))
            .collect();
        self.apply(&wanted, &gone, maps)
    }

    fn apply(
        &mut self,
        wanted: &[(LbFrontend, &FrontendSpec)],
        gone: &[LbFrontend],
        maps: &mut impl ServiceMaps,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        let mut released = BTreeSet::new();
        let mut prune = AffinityPrune::new();
        // Services that are gone go first: they make room for new ones in full maps.
        let gone_slots = self.remove_services(gone, maps, &mut report, &mut released, &mut prune);
        self.remove_slots(&gone_slots, maps, &mut report);
        let (changes, new_backends) = self.plan(wanted);
        let changes = self.write_backends(changes, &new_backends, maps, &mut report);
        let changes = self.write_slots(changes, maps, &mut report);
        let changes = self.write_tables(changes, maps, &mut report);
        let shrunk = self.write_services(changes, maps, &mut report, &mut released, &mut prune);
        self.remove_slots(&shrunk, maps, &mut report);
        // Clients bound to a backend that left (or to a service that went) choose again.
        if !prune.is_empty() {
            match maps.prune_affinity(&prune) {
                Ok(n) => report.writes += n,
                Err(e) => report.errors.push(format!("pruning session affinity: {e}")),
            }
        }
        released.extend(new_backends.iter().map(|(id, _)| *id));
        self.remove_unused_backends(&released, maps, &mut report);
        report
    }

    /// The services whose entries differ, and the backends to create (with new ids).
    fn plan(
        &mut self,
        wanted: &[(LbFrontend, &FrontendSpec)],
    ) -> (Vec<Change>, Vec<(u32, SocketAddrV4)>) {
        let mut changes = Vec::new();
        let mut new_backends = Vec::new();
        for (fe, spec) in wanted {
            let fe = *fe;
            let flags = service_flags(spec);
            let mut wanted = Vec::with_capacity(spec.backends.len());
            let table = self.maglev.is_some() && !spec.backends.is_empty();
            for addr in &spec.backends {
                let id = match self.backends.get(addr) {
                    Some(id) => *id,
                    None => {
                        let id = self.backend_ids.take();
                        self.backends.insert(*addr, id);
                        new_backends.push((id, *addr));
                        id
                    }
                };
                wanted.push(id);
            }
            let old = self.services.get(&fe);
            if old.is_some_and(|p| {
                !p.dirty && p.slots == wanted && p.flags == flags && p.table == table
            }) {
                continue;
            }
            let id = old.map_or_else(|| self.service_ids.take(), |p| p.id);
            changes.push(Change {
                fe,
                id,
                wanted,
                flags,
                addrs: spec.backends.clone(),
                table,
                old: old.cloned(),
            });
        }
        (changes, new_backends)
    }

    /// New backends first. Services that need a backend that could not be written keep
    /// their last good state.
    fn write_backends(
        &mut self,
        changes: Vec<Change>,
        new_backends: &[(u32, SocketAddrV4)],
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) -> Vec<Change> {
        if new_backends.is_empty() {
            return changes;
        }
        let Err(e) = maps.write_backends(new_backends) else {
            report.writes += new_backends.len();
            return changes;
        };
        let done = written_before(&e).min(new_backends.len());
        report.writes += done;
        let failed: BTreeMap<u32, SocketAddrV4> = new_backends[done..].iter().copied().collect();
        for (id, addr) in &failed {
            self.backends.remove(addr);
            self.backend_ids.release(*id);
        }
        let (blocked, ok): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| c.wanted.iter().any(|id| failed.contains_key(id)));
        for c in &blocked {
            let addr = c.wanted.iter().find_map(|id| failed.get(id));
            let message = match addr {
                Some(addr) => format!("backend {addr} was not written: {e}"),
                None => e.to_string(),
            };
            self.fail(c, message, report);
        }
        ok
    }

    /// Slots of the changed services. A service whose slots failed keeps its frontend
    /// as it was (its slots are now unknown and rewritten next time).
    fn write_slots(
        &mut self,
        changes: Vec<Change>,
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) -> Vec<Change> {
        let mut items = Vec::new();
        let mut owner = Vec::new();
        for (index, c) in changes.iter().enumerate() {
            let old = c.old.as_ref().map_or(&[][..], |p| &p.slots[..]);
            for (slot, backend) in c.wanted.iter().enumerate() {
                if old.get(slot) != Some(backend) {
                    items.push((c.id, slot as u32, *backend));
                    owner.push(index);
                }
            }
        }
        if items.is_empty() {
            return changes;
        }
        let Err(e) = maps.write_slots(&items) else {
            report.writes += items.len();
            return changes;
        };
        let done = written_before(&e);
        report.writes += done;
        // Services up to the one owning the failed element are fine.
        let first_failed = owner.get(done).copied().unwrap_or(0);
        let mut changes = changes;
        let failed = changes.split_off(first_failed);
        for c in &failed {
            self.fail(c, format!("writing its backend slots: {e}"), report);
            self.forget_slots(c);
        }
        changes
    }

    /// After a failed slot or table write: the service's slots are unknown, so the next
    /// sync rewrites them (its frontend entry was not touched).
    fn forget_slots(&mut self, c: &Change) {
        if let Some(p) = self.services.get(&c.fe).cloned() {
            let len = c.wanted.len().max(p.slots.len());
            self.set(
                c.fe,
                Programmed {
                    slots: vec![UNKNOWN; len],
                    dirty: true,
                    ..p
                },
            );
        }
    }

    /// Maglev tables of the changed services, once their backends and slots exist. A
    /// service whose table could not be written keeps its frontend as it was (and is
    /// retried); one that no longer needs a table loses it.
    fn write_tables(
        &mut self,
        changes: Vec<Change>,
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) -> Vec<Change> {
        // Tables no longer wanted (no backends left, or Maglev off).
        let unwanted: Vec<u32> = changes
            .iter()
            .filter(|c| !c.table && c.old.as_ref().is_some_and(|p| p.table))
            .map(|c| c.id)
            .collect();
        if !unwanted.is_empty() {
            match maps.remove_tables(&unwanted) {
                Ok(()) => report.writes += unwanted.len(),
                // Harmless: a table whose backends are gone falls back to slots.
                Err(e) => report.errors.push(format!("removing Maglev tables: {e}")),
            }
        }
        // Kept in their order: the first service that does not fit later is the one named.
        let (wanted, mut ok): (Vec<Indexed>, Vec<Indexed>) =
            changes.into_iter().enumerate().partition(|(_, c)| c.table);
        let m = self.maglev.unwrap_or(0);
        let mut rest = wanted.into_iter().peekable();
        while rest.peek().is_some() {
            // Tables are computed and written a chunk at a time: 256 tables of 64 KiB.
            let mut chunk: Vec<(Indexed, Vec<u32>)> = Vec::with_capacity(TABLE_CHUNK);
            for (i, c) in rest.by_ref().take(TABLE_CHUNK) {
                match backend_table(&c.addrs, &c.wanted, m) {
                    Ok(table) => chunk.push(((i, c), table)),
                    Err(e) => {
                        self.fail(&c, format!("computing its Maglev table: {e}"), report);
                        self.forget_slots(&c);
                    }
                }
            }
            let items: Vec<(u32, &[u32])> = chunk
                .iter()
                .map(|((_, c), t)| (c.id, t.as_slice()))
                .collect();
            let result = maps.write_tables(&items);
            let done = match &result {
                Ok(()) => chunk.len(),
                Err(e) => written_before(e).min(chunk.len()),
            };
            report.writes += done;
            let mut chunk = chunk.into_iter().map(|(c, _)| c);
            ok.extend(chunk.by_ref().take(done));
            if let Err(e) = result {
                // The map refused element `done` (typically full): that service and the
                // rest keep their last good state and are retried on the next change.
                let failed: Vec<Indexed> = chunk.chain(rest.by_ref()).collect();
                for (_, c) in &failed {
                    self.fail(c, format!("writing its Maglev table: {e}"), report);
                    self.forget_slots(c);
                }
            }
        }
        ok.sort_by_key(|(i, _)| *i);
        ok.into_iter().map(|(_, c)| c).collect()
    }

    /// The frontends (id and backend count), once their slots exist. Returns the slots
    /// that shrunk services no longer use.
    fn write_services(
        &mut self,
        changes: Vec<Change>,
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
        released: &mut BTreeSet<u32>,
        prune: &mut AffinityPrune,
    ) -> Vec<(u32, u32)> {
        let items: Vec<(LbFrontend, u32, u32, u32)> = changes
            .iter()
            .map(|c| (c.fe, c.id, c.wanted.len() as u32, c.flags))
            .collect();
        if items.is_empty() {
            return Vec::new();
        }
        let done = match maps.write_services(&items) {
            Ok(()) => items.len(),
            Err(e) => {
                let done = written_before(&e).min(items.len());
                let rest = changes.len() - done;
                if let Some(c) = changes.get(done) {
                    let more = if rest > 1 {
                        format!(" (and {} more services)", rest - 1)
                    } else {
                        String::new()
                    };
                    report
                        .errors
                        .push(format!("service {} did not fit{more}: {e}", show(c.fe)));
                }
                for c in &changes[done..] {
                    report.failed.insert(c.fe, e.to_string());
                    // The slots went in; the frontend entry is retried next time.
                    let old_len = c.old.as_ref().map_or(0, |p| p.slots.len());
                    let mut slots = c.wanted.clone();
                    slots.resize(slots.len().max(old_len), UNKNOWN);
                    self.set(
                        c.fe,
                        Programmed {
                            id: c.id,
                            slots,
                            flags: c.flags,
                            dirty: true,
                            table: c.table,
                        },
                    );
                }
                done
            }
        };
        report.writes += done;
        let mut shrunk = Vec::new();
        for c in changes.into_iter().take(done) {
            let old_len = c.old.as_ref().map_or(0, |p| p.slots.len());
            shrunk.extend((c.wanted.len()..old_len).map(|slot| (c.id, slot as u32)));
            if let Some(old) = &c.old {
                released.extend(old.slots.iter().copied());
                if old.flags & LB_F_AFFINITY != 0 {
                    let left: BTreeSet<u32> = old
                        .slots
                        .iter()
                        .filter(|id| !c.wanted.contains(id))
                        .copied()
                        .collect();
                    if !left.is_empty() {
                        prune.insert(c.id, Some(left));
                    }
                }
            }
            self.set(
                c.fe,
                Programmed {
                    id: c.id,
                    slots: c.wanted,
                    flags: c.flags,
                    dirty: false,
                    table: c.table,
                },
            );
        }
        shrunk
    }

    /// Frontends that are gone; returns their slots (removed next: from now on no packet
    /// reads them).
    fn remove_services(
        &mut self,
        gone: &[LbFrontend],
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
        released: &mut BTreeSet<u32>,
        prune: &mut AffinityPrune,
    ) -> Vec<(u32, u32)> {
        if gone.is_empty() {
            return Vec::new();
        }
        let done = match maps.remove_services(gone) {
            Ok(()) => gone.len(),
            Err(e) => {
                let done = written_before(&e).min(gone.len());
                if let Some(fe) = gone.get(done) {
                    report
                        .errors
                        .push(format!("removing service {}: {e}", show(*fe)));
                }
                done
            }
        };
        report.writes += done;
        let mut stale = Vec::new();
        for fe in &gone[..done] {
            if let Some(p) = self.unset(*fe) {
                stale.extend((0..p.slots.len()).map(|slot| (p.id, slot as u32)));
                released.extend(p.slots.iter().copied());
                if p.flags & LB_F_AFFINITY != 0 {
                    // Its id may serve another service next: no client may keep a backend.
                    prune.insert(p.id, None);
                }
                // Nor its table: a new service taking the id must not inherit it.
                if p.table {
                    match maps.remove_tables(&[p.id]) {
                        Ok(()) => report.writes += 1,
                        Err(e) => {
                            report
                                .errors
                                .push(format!("removing the Maglev table of {}: {e}", show(*fe)));
                            continue;
                        }
                    }
                }
                self.service_ids.release(p.id);
            }
        }
        stale
    }

    fn remove_slots(
        &mut self,
        stale: &[(u32, u32)],
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) {
        if stale.is_empty() {
            return;
        }
        match maps.remove_slots(stale) {
            Ok(()) => report.writes += stale.len(),
            // Harmless leftovers: beyond the backend count nothing reads them, and a new
            // service taking the id overwrites them.
            Err(e) => report.errors.push(format!("removing stale slots: {e}")),
        }
    }

    /// Backends no slot points at any more, among `candidates`.
    fn remove_unused_backends(
        &mut self,
        candidates: &BTreeSet<u32>,
        maps: &mut impl ServiceMaps,
        report: &mut SyncReport,
    ) {
        let unused: Vec<u32> = candidates
            .iter()
            .filter(|id| **id != UNKNOWN && self.backend_refs.get(id).copied().unwrap_or(0) == 0)
            .copied()
            .collect();
        let unused_set: BTreeSet<u32> = unused.iter().copied().collect();
        let unused_addrs: Vec<SocketAddrV4> = self
            .backends
            .iter()
            .filter(|(_, id)| unused_set.contains(id))
            .map(|(addr, _)| *addr)
            .collect();
        if unused.is_empty() {
            return;
        }
        match maps.remove_backends(&unused) {
            Ok(()) => {
                report.writes += unused.len();
                for addr in unused_addrs {
                    self.backends.remove(&addr);
                }
                for id in unused {
                    self.backend_refs.remove(&id);
                    self.backend_ids.release(id);
                }
            }
            Err(e) => report.errors.push(format!("removing unused backends: {e}")),
        }
    }

    /// Records a failed change; a service that never made it releases its new id.
    fn fail(&mut self, c: &Change, message: String, report: &mut SyncReport) {
        report
            .errors
            .push(format!("service {}: {message}", show(c.fe)));
        report.failed.insert(c.fe, message);
        if c.old.is_none() && !self.services.contains_key(&c.fe) {
            self.service_ids.release(c.id);
        }
    }

    /// Mirrors `p` for `fe`, keeping the backend reference counts.
    fn set(&mut self, fe: LbFrontend, p: Programmed) {
        for id in p.slots.iter().filter(|id| **id != UNKNOWN) {
            *self.backend_refs.entry(*id).or_default() += 1;
        }
        if let Some(old) = self.services.insert(fe, p) {
            self.release_refs(&old);
        }
    }

    fn unset(&mut self, fe: LbFrontend) -> Option<Programmed> {
        let old = self.services.remove(&fe)?;
        self.release_refs(&old);
        Some(old)
    }

    fn release_refs(&mut self, p: &Programmed) {
        for id in p.slots.iter().filter(|id| **id != UNKNOWN) {
            if let Some(n) = self.backend_refs.get_mut(id) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Number of frontends programmed.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Maglev tables installed, for map pressure.
    pub fn table_count(&self) -> usize {
        self.services.values().filter(|p| p.table).count()
    }

    /// Entries the mirror holds: (frontends, slots, backends), for map pressure.
    pub fn entry_counts(&self) -> (usize, usize, usize) {
        let slots = self.services.values().map(|p| p.slots.len()).sum();
        (self.services.len(), slots, self.backends.len())
    }
}

fn show(fe: LbFrontend) -> String {
    show_frontend(fe.addr, fe.proto)
}

/// `addr/PROTO` of a frontend of either family, as errors name it.
pub(crate) fn show_frontend(addr: impl std::fmt::Display, proto: u8) -> String {
    let proto = match proto {
        6 => "TCP",
        17 => "UDP",
        _ => "?",
    };
    format!("{addr}/{proto}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The maps as plain collections, with an optional failure injected.
    #[derive(Default)]
    struct FakeMaps {
        services: BTreeMap<LbFrontend, (u32, u32)>,
        flags: BTreeMap<LbFrontend, u32>,
        pruned: Vec<AffinityPrune>,
        slots: BTreeMap<(u32, u32), u32>,
        backends: BTreeMap<u32, SocketAddrV4>,
        ops: Vec<String>,
        fail_slots: bool,
        /// max_entries of the service map (None: unlimited).
        service_capacity: Option<usize>,
        tables: BTreeMap<u32, Vec<u32>>,
        fail_tables: bool,
    }

    fn full(map: &'static str, done: usize) -> DatapathError {
        DatapathError::MapBatch {
            map,
            max_entries: 2,
            done,
            source: std::io::Error::from_raw_os_error(libc_e2big()),
        }
    }

    /// E2BIG, what a full hash map answers.
    fn libc_e2big() -> i32 {
        7
    }

    impl ServiceMaps for FakeMaps {
        fn write_services(
            &mut self,
            items: &[(LbFrontend, u32, u32, u32)],
        ) -> Result<(), DatapathError> {
            for (done, (fe, id, count, flags)) in items.iter().enumerate() {
                let fits = self.services.contains_key(fe)
                    || self
                        .service_capacity
                        .is_none_or(|cap| self.services.len() < cap);
                if !fits {
                    return Err(full("porin_lb_svc", done));
                }
                self.ops.push(format!("svc {id}={count}"));
                self.services.insert(*fe, (*id, *count));
                self.flags.insert(*fe, *flags);
            }
            Ok(())
        }
        fn remove_services(&mut self, items: &[LbFrontend]) -> Result<(), DatapathError> {
            for fe in items {
                self.ops.push("svc-".into());
                self.services.remove(fe);
            }
            Ok(())
        }
        fn write_slots(&mut self, items: &[(u32, u32, u32)]) -> Result<(), DatapathError> {
            if self.fail_slots && !items.is_empty() {
                return Err(full("porin_lb_slots", 0));
            }
            for (s, slot, b) in items {
                self.ops.push(format!("slot {s}.{slot}={b}"));
                self.slots.insert((*s, *slot), *b);
            }
            Ok(())
        }
        fn remove_slots(&mut self, items: &[(u32, u32)]) -> Result<(), DatapathError> {
            for (s, slot) in items {
                self.ops.push(format!("slot {s}.{slot}-"));
                self.slots.remove(&(*s, *slot));
            }
            Ok(())
        }
        fn write_backends(&mut self, items: &[(u32, SocketAddrV4)]) -> Result<(), DatapathError> {
            for (id, addr) in items {
                self.ops.push(format!("be {id}={addr}"));
                self.backends.insert(*id, *addr);
            }
            Ok(())
        }
        fn remove_backends(&mut self, ids: &[u32]) -> Result<(), DatapathError> {
            for id in ids {
                self.ops.push(format!("be {id}-"));
                self.backends.remove(id);
            }
            Ok(())
        }
        fn prune_affinity(&mut self, prune: &AffinityPrune) -> Result<usize, DatapathError> {
            self.ops.push("affinity-".into());
            self.pruned.push(prune.clone());
            Ok(0)
        }
        fn write_tables(&mut self, items: &[(u32, &[u32])]) -> Result<(), DatapathError> {
            if self.fail_tables && !items.is_empty() {
                return Err(full("porin_lb_maglev", 0));
            }
            for (service_id, table) in items {
                self.ops.push(format!("table {service_id}"));
                self.tables.insert(*service_id, table.to_vec());
            }
            Ok(())
        }
        fn remove_tables(&mut self, service_ids: &[u32]) -> Result<(), DatapathError> {
            for service_id in service_ids {
                self.ops.push(format!("table {service_id}-"));
                self.tables.remove(service_id);
            }
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
            .map(|(port, backends)| {
                let spec = FrontendSpec {
                    backends: backends.iter().map(|b| sa(*b)).collect(),
                    ..FrontendSpec::default()
                };
                (fe(*port), spec)
            })
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
                .map(|(f, (i, c))| (*f, *i, *c, maps.flags[f]))
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
        assert!(r.failed.contains_key(&fe(80)), "{:?}", r.failed);
        maps.fail_slots = false;
        let r = p.sync(&desired(&[(80, &[1])]), &mut maps);
        assert!(r.errors.is_empty());
        assert_eq!(maps.resolve(fe(80)), vec![sa(1)]);
    }

    #[test]
    fn a_full_service_map_names_the_service_that_did_not_fit() {
        let mut maps = FakeMaps {
            service_capacity: Some(2),
            ..FakeMaps::default()
        };
        let mut p = Programmer::default();
        let r = p.sync(&desired(&[(80, &[1]), (81, &[1]), (82, &[2])]), &mut maps);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(
            r.errors[0].contains("service 10.96.0.50:82/TCP did not fit")
                && r.errors[0].contains("porin_lb_svc")
                && r.errors[0].contains("is full"),
            "{:?}",
            r.errors
        );
        assert_eq!(r.failed.keys().copied().collect::<Vec<_>>(), vec![fe(82)]);
        assert_eq!(maps.resolve(fe(80)), vec![sa(1)], "the others are served");
        assert_eq!(maps.resolve(fe(81)), vec![sa(1)]);

        // Room again (another service went): the one that did not fit is programmed.
        let r = p.sync(&desired(&[(80, &[1]), (82, &[2])]), &mut maps);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(maps.resolve(fe(82)), vec![sa(2)]);
    }

    #[test]
    fn ids_stay_lowest_free_and_cheap() {
        let mut ids = Ids::default();
        assert_eq!((ids.take(), ids.take(), ids.take()), (1, 2, 3));
        ids.release(2);
        assert_eq!(ids.take(), 2, "the lowest free id is reused");
        ids.release(3);
        assert_eq!(ids.take(), 3);
        let adopted = Ids::adopt([1, 4]);
        assert_eq!(adopted.free.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
        let mut many = Ids::default();
        for _ in 0..200_000 {
            many.take();
        }
        assert_eq!(many.take(), 200_001);
    }

    #[test]
    fn one_change_among_many_writes_only_its_entries() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        let many: Vec<(u16, &[u8])> = (1000..3000)
            .map(|port| (port, &[1u8, 2, 3, 4][..]))
            .collect();
        let r = p.sync(&desired(&many), &mut maps);
        assert!(r.errors.is_empty());
        assert_eq!(r.writes, 4 + 2000 * 4 + 2000);
        maps.ops.clear();
        let mut changed = many.clone();
        changed[1500] = (changed[1500].0, &[1, 2, 3]);
        let r = p.sync(&desired(&changed), &mut maps);
        // The count goes down, then the extra slot goes; the backend stays (others use it).
        assert_eq!(maps.ops, vec!["svc 1501=3", "slot 1501.3-"], "{r:?}");
    }

    #[test]
    fn a_scoped_sync_touches_only_its_frontends() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        p.sync(
            &desired(&[(80, &[1, 2]), (81, &[2]), (82, &[3])]),
            &mut maps,
        );
        maps.ops.clear();
        // 80 shrinks, 82 goes; 81 changed too but is out of scope, so it is not looked at.
        let now = desired(&[(80, &[1]), (81, &[1])]);
        let scope = BTreeSet::from([fe(80), fe(82)]);
        let r = p.sync_scope(&now, &scope, &mut maps);
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!(maps.resolve(fe(80)), vec![sa(1)]);
        assert!(!maps.services.contains_key(&fe(82)));
        assert_eq!(maps.resolve(fe(81)), vec![sa(2)], "out of scope: untouched");
        assert_eq!(
            maps.ops,
            vec!["svc-", "slot 3.0-", "svc 1=1", "slot 1.1-", "be 3-"],
            "{r:?}"
        );
    }

    #[test]
    fn affinity_is_a_flag_and_a_backend_leaving_drops_its_clients() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        let mut d = desired(&[(80, &[1, 2, 3])]);
        d.get_mut(&fe(80)).expect("frontend").affinity_timeout = Some(60);
        p.sync(&d, &mut maps);
        assert_eq!(maps.flags[&fe(80)], LB_F_AFFINITY | (60 << 8));
        assert!(maps.pruned.is_empty(), "nothing left yet");

        // Backend 2 leaves: only its clients are unbound.
        let mut d = desired(&[(80, &[1, 3])]);
        d.get_mut(&fe(80)).expect("frontend").affinity_timeout = Some(60);
        let r = p.sync(&d, &mut maps);
        assert!(r.errors.is_empty(), "{r:?}");
        let id = maps.services[&fe(80)].0;
        let left = maps.backends.len(); // backend 2's id was released: find it by elimination
        assert_eq!(left, 2);
        assert_eq!(maps.pruned.len(), 1);
        let pruned = &maps.pruned[0];
        let gone = pruned[&id].as_ref().expect("only some backends");
        assert_eq!(gone.len(), 1);
        assert!(!maps.backends.contains_key(gone.iter().next().expect("one")));

        // Affinity switched off: the flag goes, a rewrite of the same backends.
        maps.ops.clear();
        p.sync(&desired(&[(80, &[1, 3])]), &mut maps);
        assert_eq!(maps.flags[&fe(80)], 0);
        assert_eq!(maps.ops, vec!["svc 1=2"]);

        // A service without affinity going does not walk the affinity map; one with it does.
        let mut d = desired(&[(80, &[1, 3]), (81, &[1])]);
        d.get_mut(&fe(81)).expect("frontend").affinity_timeout = Some(5);
        p.sync(&d, &mut maps);
        let id81 = maps.services[&fe(81)].0;
        maps.pruned.clear();
        p.sync(&desired(&[(80, &[1, 3])]), &mut maps);
        assert_eq!(maps.pruned, vec![AffinityPrune::from([(id81, None)])]);
    }
    #[test]
    fn maglev_tables_follow_the_backends() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default().with_maglev(Some(251));
        p.sync(&desired(&[(80, &[1, 2, 3]), (81, &[])]), &mut maps);
        let id = maps.services[&fe(80)].0;
        let table = maps.tables[&id].clone();
        assert_eq!(table.len(), 251);
        assert_eq!(maps.tables.len(), 1, "no table without backends");
        let order: Vec<&String> = maps.ops.iter().filter(|o| !o.starts_with("be ")).collect();
        assert_eq!(
            order,
            vec![
                "slot 1.0=1",
                "slot 1.1=2",
                "slot 1.2=3",
                "table 1",
                "svc 1=3",
                "svc 2=0"
            ],
            "the table goes in after the slots and before the count"
        );

        // Unchanged: nothing written. One backend leaves: only its slots move.
        maps.ops.clear();
        p.sync(&desired(&[(80, &[1, 2, 3]), (81, &[])]), &mut maps);
        assert!(maps.ops.is_empty(), "{:?}", maps.ops);
        p.sync(&desired(&[(80, &[1, 3]), (81, &[])]), &mut maps);
        let after = &maps.tables[&id];
        let gone = table.iter().filter(|b| !after.contains(b)).count();
        let moved = (0..251)
            .filter(|s| table[*s] != after[*s] && after.contains(&table[*s]))
            .count();
        assert!(
            gone > 0 && moved < 25,
            "gone {gone}, surviving moved {moved}"
        );

        // Backends all gone: the table goes; the service goes: its table went already.
        p.sync(&desired(&[(80, &[]), (81, &[])]), &mut maps);
        assert!(maps.tables.is_empty());
        p.sync(&desired(&[(80, &[4])]), &mut maps);
        assert_eq!(maps.tables.len(), 1);
        maps.ops.clear();
        p.sync(&desired(&[]), &mut maps);
        assert!(maps.tables.is_empty());
        assert!(maps.ops.contains(&"table 1-".to_string()), "{:?}", maps.ops);
    }

    #[test]
    fn a_failed_table_names_the_service_and_is_retried() {
        let mut maps = FakeMaps {
            fail_tables: true,
            ..FakeMaps::default()
        };
        let mut p = Programmer::default().with_maglev(Some(251));
        let r = p.sync(&desired(&[(80, &[1])]), &mut maps);
        assert!(
            r.errors.iter().any(|e| e.contains("10.96.0.50:80/TCP")
                && e.contains("Maglev table")
                && e.contains("porin_lb_maglev")),
            "{:?}",
            r.errors
        );
        assert!(r.failed.contains_key(&fe(80)));
        assert!(!maps.services.contains_key(&fe(80)), "not served half-done");
        maps.fail_tables = false;
        let r = p.sync(&desired(&[(80, &[1])]), &mut maps);
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!(maps.tables.len(), 1);
        assert_eq!(maps.resolve(fe(80)), vec![sa(1)]);
    }

    #[test]
    fn switching_the_algorithm_adds_or_removes_tables_and_adoption_keeps_them() {
        let mut maps = FakeMaps::default();
        let mut p = Programmer::default();
        p.sync(&desired(&[(80, &[1, 2])]), &mut maps);
        assert!(maps.tables.is_empty(), "random: no tables");

        // A restarted agent with Maglev on adopts the maps and adds the tables.
        let adopt = |maps: &FakeMaps| {
            Programmer::adopt(
                maps.services
                    .iter()
                    .map(|(f, (i, c))| (*f, *i, *c, maps.flags[f]))
                    .collect(),
                maps.slots.iter().map(|((s, l), b)| (*s, *l, *b)).collect(),
                maps.backends.iter().map(|(i, a)| (*i, *a)).collect(),
            )
        };
        let mut p = adopt(&maps).with_maglev(Some(251));
        maps.ops.clear();
        p.sync(&desired(&[(80, &[1, 2])]), &mut maps);
        assert_eq!(maps.ops, vec!["table 1", "svc 1=2"]);

        // Adopted with its table: nothing to write.
        let mut p = adopt(&maps).with_maglev(Some(251));
        p.adopt_tables(&maps.tables.keys().copied().collect());
        maps.ops.clear();
        p.sync(&desired(&[(80, &[1, 2])]), &mut maps);
        assert!(maps.ops.is_empty(), "{:?}", maps.ops);

        // Maglev off again: the table goes.
        let mut p = adopt(&maps);
        p.adopt_tables(&maps.tables.keys().copied().collect());
        p.sync(&desired(&[(80, &[1, 2])]), &mut maps);
        assert!(maps.tables.is_empty());
    }
}
