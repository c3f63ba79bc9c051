//! Writes the desired policy maps as differences from what was written before.
//!
//! Order: new and changed entries first, then new default-deny flags, then flags that went
//! away, then stale entries. A write that fails is not recorded, so the next sync retries it.

use std::collections::BTreeSet;

use porin_core::datapath::abi::{PolicyEpKey, PolicyKey, PolicyValue};
use porin_core::datapath::{DatapathError, PolicyMaps};

use super::desired::Desired;

/// The writes the programmer needs; [`PolicyMaps`] in the agent, a fake in tests.
pub trait PolicyWriter {
    fn set_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError>;
    fn remove_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError>;
    fn upsert(&mut self, key: PolicyKey, value: PolicyValue) -> Result<(), DatapathError>;
    fn remove(&mut self, key: PolicyKey) -> Result<(), DatapathError>;
}

impl PolicyWriter for PolicyMaps {
    fn set_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError> {
        PolicyMaps::set_default_deny(self, key, true)
    }
    fn remove_default_deny(&mut self, key: PolicyEpKey) -> Result<(), DatapathError> {
        PolicyMaps::remove_default_deny(self, key)
    }
    fn upsert(&mut self, key: PolicyKey, value: PolicyValue) -> Result<(), DatapathError> {
        PolicyMaps::upsert(self, key, value)
    }
    fn remove(&mut self, key: PolicyKey) -> Result<(), DatapathError> {
        PolicyMaps::remove(self, key)
    }
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub writes: usize,
    pub errors: Vec<String>,
}

/// The mirror of the policy maps.
#[derive(Debug, Default)]
pub struct Programmer {
    written: Desired,
}

impl Programmer {
    /// Adopts what a previous agent left in the pinned maps.
    pub fn adopt(denies: Vec<(PolicyEpKey, bool)>, entries: Vec<(PolicyKey, PolicyValue)>) -> Self {
        let written = Desired {
            default_deny: denies.into_iter().filter(|d| d.1).map(|d| d.0).collect(),
            entries: entries.into_iter().collect(),
        };
        Self { written }
    }

    /// Number of entries written.
    pub fn entry_count(&self) -> usize {
        self.written.entries.len()
    }

    /// Brings the maps to `desired`, touching only what differs.
    pub fn sync(&mut self, desired: &Desired, maps: &mut impl PolicyWriter) -> SyncReport {
        let mut report = SyncReport::default();
        let mut errors = Vec::new();
        let mut writes = 0;

        let changed: Vec<(PolicyKey, PolicyValue)> = desired
            .entries
            .iter()
            .filter(|(k, v)| self.written.entries.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, v) in changed {
            writes += 1;
            match maps.upsert(k, v) {
                Ok(()) => {
                    self.written.entries.insert(k, v);
                }
                Err(e) => errors.push(format!("writing policy entry {k:?}: {e}")),
            }
        }
        let new_denies: Vec<PolicyEpKey> = desired
            .default_deny
            .difference(&self.written.default_deny)
            .copied()
            .collect();
        for k in new_denies {
            writes += 1;
            match maps.set_default_deny(k) {
                Ok(()) => {
                    self.written.default_deny.insert(k);
                }
                Err(e) => errors.push(format!("setting default deny {k:?}: {e}")),
            }
        }
        let gone_denies: BTreeSet<PolicyEpKey> = self
            .written
            .default_deny
            .difference(&desired.default_deny)
            .copied()
            .collect();
        for k in gone_denies {
            writes += 1;
            match maps.remove_default_deny(k) {
                Ok(()) => {
                    self.written.default_deny.remove(&k);
                }
                Err(e) => errors.push(format!("removing default deny {k:?}: {e}")),
            }
        }
        let stale: Vec<PolicyKey> = self
            .written
            .entries
            .keys()
            .filter(|k| !desired.entries.contains_key(k))
            .copied()
            .collect();
        for k in stale {
            writes += 1;
            match maps.remove(k) {
                Ok(()) => {
                    self.written.entries.remove(&k);
                }
                Err(e) => errors.push(format!("removing policy entry {k:?}: {e}")),
            }
        }
        report.writes = writes;
        report.errors = errors;
        report
    }
}
