//! The watchable state store: merged objects of every datastore source.
//!
//! Each source (a manifest directory, one watched kind of the API server, the
//! runtime directory of published objects) owns a set of objects. The store
//! merges them into one [`Snapshot`]; if two sources hold the same key the
//! source whose id sorts first wins. Every real difference is announced once
//! on the broadcast channel and bumps the generation counter.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};

use super::objects::{Kind, Object, ObjectKey};
use super::snapshot::Snapshot;

/// Capacity of the change channel; a receiver that lags further gets
/// `RecvError::Lagged` and should re-read [`StateStore::snapshot`].
const CHANGE_CHANNEL_CAPACITY: usize = 4096;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change of the merged state.
#[derive(Clone, Debug)]
pub struct StateChange {
    pub kind: Kind,
    pub key: ObjectKey,
    pub change: ChangeKind,
    /// The new object, or the removed one for `Deleted`.
    pub object: Object,
    /// Generation of the store after this change.
    pub generation: u64,
}

/// How bad a reported problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was skipped but the rest is in force (e.g. an unknown kind).
    Warning,
    /// Something could not be loaded; its last good state stays in force.
    Error,
}

/// A problem a datastore reports, e.g. a broken manifest, for `porin status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub source: String,
    pub severity: Severity,
    pub message: String,
}

/// The state store. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changes: broadcast::Sender<StateChange>,
    generation: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    sources: BTreeMap<String, BTreeMap<ObjectKey, Object>>,
    snapshot: Arc<Snapshot>,
    issues: BTreeMap<String, Vec<Issue>>,
}

impl Default for StateStore {
    fn default() -> Self {
        Self::new()
    }
}

impl StateStore {
    /// An empty store at generation 0.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let (generation, _) = watch::channel(0);
        StateStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes,
                generation,
            }),
        }
    }

    /// The current merged state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.lock().snapshot.clone()
    }

    /// Changes from now on, one per object and real difference.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.inner.changes.subscribe()
    }

    /// The generation counter, for tasks that only need "something changed".
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Waits until `condition` holds for a snapshot and returns that snapshot.
    pub async fn wait_for(&self, mut condition: impl FnMut(&Snapshot) -> bool) -> Arc<Snapshot> {
        let mut generation = self.watch_generation();
        loop {
            generation.borrow_and_update();
            let snapshot = self.snapshot();
            if condition(&snapshot) {
                return snapshot;
            }
            if generation.changed().await.is_err() {
                // Unreachable while `self` holds the sender; keep the answer honest.
                return self.snapshot();
            }
        }
    }

    /// Replaces everything `source` owns with `objects` in one step. Only the
    /// objects that really differ are announced.
    pub fn replace_source(&self, source: &str, objects: impl IntoIterator<Item = Object>) {
        let new: BTreeMap<ObjectKey, Object> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let mut state = self.lock();
        let old = state.sources.insert(source.to_owned(), new);
        let old = old.unwrap_or_default();
        let mut touched: BTreeSet<ObjectKey> = BTreeSet::new();
        if let Some(new) = state.sources.get(source) {
            touched.extend(
                old.iter()
                    .filter(|(k, o)| new.get(*k) != Some(*o))
                    .map(|(k, _)| k.clone()),
            );
            touched.extend(
                new.iter()
                    .filter(|(k, o)| old.get(*k) != Some(*o))
                    .map(|(k, _)| k.clone()),
            );
        }
        debug!(source, changed = touched.len(), "source replaced");
        self.recompute(&mut state, touched);
    }

    /// Removes a source and all its objects.
    pub fn remove_source(&self, source: &str) {
        let mut state = self.lock();
        let Some(old) = state.sources.remove(source) else {
            return;
        };
        state.issues.remove(source);
        self.recompute(&mut state, old.into_keys().collect());
    }

    /// Adds or updates one object of `source` (a watch event).
    pub fn apply(&self, source: &str, object: Object) {
        let key = object.key();
        let mut state = self.lock();
        let objects = state.sources.entry(source.to_owned()).or_default();
        if objects.get(&key) == Some(&object) {
            return;
        }
        objects.insert(key.clone(), object);
        self.recompute(&mut state, BTreeSet::from([key]));
    }

    /// Removes one object of `source` (a watch event).
    pub fn delete(&self, source: &str, key: &ObjectKey) {
        let mut state = self.lock();
        let removed = state
            .sources
            .get_mut(source)
            .and_then(|objects| objects.remove(key));
        if removed.is_some() {
            self.recompute(&mut state, BTreeSet::from([key.clone()]));
        }
    }

    /// Replaces the problems `source` reports (empty clears them).
    pub fn set_issues(&self, source: &str, issues: Vec<Issue>) {
        let mut state = self.lock();
        if issues.is_empty() {
            state.issues.remove(source);
        } else {
            state.issues.insert(source.to_owned(), issues);
        }
    }

    /// Every problem currently reported by any source.
    pub fn issues(&self) -> Vec<Issue> {
        self.lock().issues.values().flatten().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps behind
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Recomputes the merged value of `keys` and announces what differs.
    fn recompute(&self, state: &mut State, keys: BTreeSet<ObjectKey>) {
        let mut changes = Vec::new();
        for key in keys {
            let mut holders = state
                .sources
                .iter()
                .filter_map(|(id, objects)| objects.get(&key).map(|o| (id, o)));
            let winner = holders.next().map(|(_, o)| o.clone());
            if let Some((other, _)) = holders.next() {
                warn!(%key, shadowed_source = %other, "object defined by several sources; the first source wins");
            }
            let current = state.snapshot.objects.get(&key);
            let change = match (current, &winner) {
                (None, None) => None,
                (None, Some(new)) => Some((ChangeKind::Added, new.clone())),
                (Some(old), None) => Some((ChangeKind::Deleted, old.clone())),
                (Some(old), Some(new)) if old != new => Some((ChangeKind::Modified, new.clone())),
                (Some(_), Some(_)) => None,
            };
            let Some((change, object)) = change else {
                continue;
            };
            let snapshot = Arc::make_mut(&mut state.snapshot);
            match &winner {
                Some(new) => snapshot.objects.insert(key.clone(), new.clone()),
                None => snapshot.objects.remove(&key),
            };
            changes.push((key, change, object));
        }
        if changes.is_empty() {
            return;
        }
        let snapshot = Arc::make_mut(&mut state.snapshot);
        snapshot.generation += 1;
        let generation = snapshot.generation;
        for (key, change, object) in changes {
            debug!(%key, ?change, generation, "state changed");
            // No receivers is fine: nobody is listening yet.
            let _ = self.inner.changes.send(StateChange {
                kind: key.kind,
                key,
                change,
                object,
                generation,
            });
        }
        self.inner.generation.send_replace(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(ns: &str, name: &str, label: &str) -> Object {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([("app".to_owned(), label.to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
        .into()
    }

    fn ns(name: &str) -> Object {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
        .into()
    }

    fn drain(rx: &mut broadcast::Receiver<StateChange>) -> Vec<(String, ChangeKind)> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push((c.key.to_string(), c.change));
        }
        out
    }

    #[test]
    fn replace_source_emits_only_differences() {
        let store = StateStore::new();
        let mut rx = store.subscribe();
        store.replace_source("a", [ns("x"), pod("x", "p1", "v1"), pod("x", "p2", "v1")]);
        assert_eq!(drain(&mut rx).len(), 3);
        assert_eq!(store.snapshot().generation(), 1);

        store.replace_source("a", [ns("x"), pod("x", "p1", "v2"), pod("x", "p3", "v1")]);
        assert_eq!(
            drain(&mut rx),
            vec![
                ("Pod x/p1".to_owned(), ChangeKind::Modified),
                ("Pod x/p2".to_owned(), ChangeKind::Deleted),
                ("Pod x/p3".to_owned(), ChangeKind::Added),
            ]
        );
        store.replace_source("a", [ns("x"), pod("x", "p1", "v2"), pod("x", "p3", "v1")]);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(store.snapshot().generation(), 2);
        let snap = store.snapshot();
        assert_eq!(snap.pods().count(), 2);
        assert!(snap.pod("x", "p3").is_some());
        assert!(snap.namespace("x").is_some());
    }

    #[test]
    fn sources_merge_and_first_source_wins() {
        let store = StateStore::new();
        store.replace_source("b", [pod("x", "p", "from-b")]);
        store.replace_source("a", [pod("x", "p", "from-a")]);
        let label = |s: &Snapshot| {
            s.pod("x", "p")
                .and_then(|p| p.metadata.labels.as_ref())
                .and_then(|l| l.get("app").cloned())
        };
        assert_eq!(label(&store.snapshot()).as_deref(), Some("from-a"));
        store.remove_source("a");
        assert_eq!(label(&store.snapshot()).as_deref(), Some("from-b"));
        store.delete("b", &ObjectKey::namespaced(Kind::Pod, "x", "p"));
        assert!(store.snapshot().is_empty());
    }

    #[test]
    fn snapshots_are_immutable() {
        let store = StateStore::new();
        store.apply("a", ns("x"));
        let before = store.snapshot();
        store.apply("a", ns("y"));
        assert_eq!(before.len(), 1);
        assert_eq!(store.snapshot().len(), 2);
    }

    #[tokio::test]
    async fn wait_for_wakes_on_change() {
        let store = StateStore::new();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for(|s| s.namespace("late").is_some()).await })
        };
        tokio::task::yield_now().await;
        store.apply("a", ns("late"));
        let snap = waiter.await.expect("join");
        assert!(snap.namespace("late").is_some());
    }
}
