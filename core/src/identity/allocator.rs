//! Identity allocation that every agent computes identically, without talking to
//! each other or to an API server.
//!
//! # Why a hash with deterministic probing
//!
//! In local mode there is no API server to hold `CiliumIdentity` objects, and
//! agents must still agree: node A tags a packet with the source pod's identity
//! and node B enforces policy on that number. So an identity is a pure function
//! of the labels: `256 + fnv1a64(canonical labels) mod (2^24 - 256)`, the 24-bit
//! space Cilium uses for cluster identities. FNV-1a is fixed by this file, so it is
//! stable across versions, platforms and processes (unlike std's `DefaultHasher`).
//!
//! Two label sets can hash to the same slot. Collisions are resolved by linear
//! probing over the label sets the allocator knows, taken in canonical (sorted)
//! order: the smallest label set keeps its home slot, the next takes the next free
//! one. Agents that know the same label sets (they all read the same manifests or
//! published state) therefore compute the same mapping. The price is that when a
//! colliding set appears or disappears, the sets after it may move; the allocator
//! reports such moves (see [`IdentityAllocator::take_moved`]) so callers can
//! regenerate the ipcache and policy. With 24 bits, collisions are rare (about
//! 3% for 1,000 label sets in a cluster, a handful of moves).

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;
use tracing::warn;

use super::{Labels, MIN_CLUSTER_IDENTITY, ReservedIdentity};

/// Largest cluster identity (24 bits).
pub const MAX_IDENTITY: u32 = (1 << 24) - 1;

const SPACE: u64 = (MAX_IDENTITY - MIN_CLUSTER_IDENTITY + 1) as u64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity {id} is not allocated")]
    NotAllocated { id: u32 },
    #[error("cannot allocate an identity for an empty label set")]
    EmptyLabels,
    #[error("identity space exhausted ({count} label sets)")]
    Exhausted { count: usize },
}

/// Reference-counted identities for label sets.
#[derive(Debug, Default)]
pub struct IdentityAllocator {
    /// Known label sets in canonical order, with their reference counts.
    refs: BTreeMap<Labels, u64>,
    by_labels: HashMap<Labels, u32>,
    by_id: BTreeMap<u32, Labels>,
    moved: Vec<(Labels, u32, u32)>,
}

/// The home slot of a label set.
pub fn home_identity(labels: &Labels) -> u32 {
    let hash = fnv1a64(labels.to_string().as_bytes());
    // SPACE < 2^24, so the remainder fits in u32.
    MIN_CLUSTER_IDENTITY + u32::try_from(hash % SPACE).unwrap_or(0)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl IdentityAllocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take a reference on the identity of `labels`. Reserved label sets
    /// (`reserved:host`, ...) return their fixed number and are not counted.
    pub fn allocate(&mut self, labels: &Labels) -> Result<u32, IdentityError> {
        if labels.is_empty() {
            return Err(IdentityError::EmptyLabels);
        }
        if let Some(r) = ReservedIdentity::from_labels(labels) {
            return Ok(r.id());
        }
        if let Some(count) = self.refs.get_mut(labels) {
            *count += 1;
        } else {
            if self.refs.len() as u64 >= SPACE {
                return Err(IdentityError::Exhausted {
                    count: self.refs.len(),
                });
            }
            self.refs.insert(labels.clone(), 1);
            self.recompute();
        }
        self.by_labels
            .get(labels)
            .copied()
            .ok_or(IdentityError::NotAllocated { id: 0 })
    }

    /// Drop a reference; the identity is freed when none remain. Reserved
    /// identities are ignored.
    pub fn release(&mut self, id: u32) -> Result<(), IdentityError> {
        if ReservedIdentity::from_id(id).is_some() {
            return Ok(());
        }
        let labels = self
            .by_id
            .get(&id)
            .cloned()
            .ok_or(IdentityError::NotAllocated { id })?;
        let gone = match self.refs.get_mut(&labels) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => true,
            None => return Err(IdentityError::NotAllocated { id }),
        };
        if gone {
            self.refs.remove(&labels);
            self.recompute();
        }
        Ok(())
    }

    /// The labels behind `id`, reserved identities included.
    pub fn lookup(&self, id: u32) -> Option<Labels> {
        ReservedIdentity::from_id(id)
            .map(ReservedIdentity::labels)
            .or_else(|| self.by_id.get(&id).cloned())
    }

    /// The identity of `labels`, if allocated (or reserved).
    pub fn identity_of(&self, labels: &Labels) -> Option<u32> {
        ReservedIdentity::from_labels(labels)
            .map(ReservedIdentity::id)
            .or_else(|| self.by_labels.get(labels).copied())
    }

    /// Allocated identities in numeric order, with their reference counts.
    pub fn list(&self) -> Vec<(u32, Labels, u64)> {
        self.by_id
            .iter()
            .map(|(id, labels)| {
                (
                    *id,
                    labels.clone(),
                    self.refs.get(labels).copied().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Label sets whose identity changed because of a collision since the last
    /// call: `(labels, old, new)`.
    pub fn take_moved(&mut self) -> Vec<(Labels, u32, u32)> {
        std::mem::take(&mut self.moved)
    }

    /// Assign every known label set, in canonical order, its home slot or the next
    /// free one.
    fn recompute(&mut self) {
        let mut by_id = BTreeMap::new();
        let mut by_labels = HashMap::with_capacity(self.refs.len());
        for labels in self.refs.keys() {
            let mut id = home_identity(labels);
            while by_id.contains_key(&id) {
                id = if id == MAX_IDENTITY {
                    MIN_CLUSTER_IDENTITY
                } else {
                    id + 1
                };
            }
            if let Some(old) = self.by_labels.get(labels)
                && *old != id
            {
                warn!(labels = %labels, old, new = id, "identity moved after a hash collision");
                self.moved.push((labels.clone(), *old, id));
            }
            by_id.insert(id, labels.clone());
            by_labels.insert(labels.clone(), id);
        }
        self.by_id = by_id;
        self.by_labels = by_labels;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Labels {
        Labels::parse_list(s).expect("valid labels")
    }

    /// Two label sets with the same home slot, found by search.
    fn colliding_pair() -> (Labels, Labels) {
        let mut seen: HashMap<u32, Labels> = HashMap::new();
        for i in 0u32.. {
            let l = labels(&format!("k8s:app=a{i}"));
            let home = home_identity(&l);
            if let Some(other) = seen.insert(home, l.clone()) {
                return (other, l);
            }
        }
        unreachable!("the identity space is finite")
    }

    #[test]
    fn identity_is_a_function_of_labels() {
        let web = labels("k8s:app=web,k8s:io.kubernetes.pod.namespace=prod");
        let mut a = IdentityAllocator::new();
        let mut b = IdentityAllocator::new();
        let id = a.allocate(&web).expect("allocate");
        b.allocate(&labels("k8s:app=other")).expect("allocate");
        assert_eq!(b.allocate(&web).expect("allocate"), id);
        assert!((MIN_CLUSTER_IDENTITY..=MAX_IDENTITY).contains(&id));
        assert_eq!(id, home_identity(&web));
        assert_eq!(a.lookup(id), Some(web.clone()));
        assert_eq!(a.identity_of(&web), Some(id));
    }

    #[test]
    fn reserved_labels_keep_their_numbers() {
        let mut a = IdentityAllocator::new();
        assert_eq!(a.allocate(&labels("reserved:world")).expect("reserved"), 2);
        assert_eq!(a.lookup(1), Some(labels("reserved:host")));
        assert!(a.list().is_empty());
        assert_eq!(a.release(2), Ok(()));
    }

    #[test]
    fn reference_counts() {
        let mut a = IdentityAllocator::new();
        let l = labels("k8s:app=web");
        let id = a.allocate(&l).expect("allocate");
        assert_eq!(a.allocate(&l).expect("allocate"), id);
        assert_eq!(a.list(), vec![(id, l.clone(), 2)]);
        a.release(id).expect("release");
        assert_eq!(a.lookup(id), Some(l));
        a.release(id).expect("release");
        assert_eq!(a.lookup(id), None);
        assert_eq!(a.release(id), Err(IdentityError::NotAllocated { id }));
        assert_eq!(a.allocate(&Labels::new()), Err(IdentityError::EmptyLabels));
    }

    #[test]
    fn collisions_resolve_identically_in_any_order() {
        let (x, y) = colliding_pair();
        let (first, second) = if x < y { (x, y) } else { (y, x) };
        let home = home_identity(&first);

        let mut a = IdentityAllocator::new();
        let a1 = a.allocate(&first).expect("allocate");
        let a2 = a.allocate(&second).expect("allocate");
        let mut b = IdentityAllocator::new();
        let b2 = b.allocate(&second).expect("allocate");
        assert_eq!(b2, home, "alone, the later set takes its home slot");
        let b1 = b.allocate(&first).expect("allocate");
        assert_eq!((a1, a2), (b1, b2 + 1), "same mapping whatever the order");
        assert_eq!(a1, home);
        assert_eq!(b.take_moved(), vec![(second.clone(), home, home + 1)]);
        assert!(a.take_moved().is_empty());

        // Releasing the first moves the second back home, on every agent.
        a.release(a1).expect("release");
        assert_eq!(a.identity_of(&second), Some(home));
    }
}
