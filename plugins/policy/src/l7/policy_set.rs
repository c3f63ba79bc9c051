//! The policies the proxy judges requests by, replaced as a whole when the
//! plugin loads new ones; connections notice the new revision on their next
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::named_ports::NamedPortView;
use crate::Enforcement;
use crate::model::Policy;

/// One revision of the policies in force.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub enforcement: Enforcement,
    /// The pods' named container ports, which `toPorts` port names resolve against.
    pub named_ports: NamedPortView,
}

/// The current [`PolicySet`], shared by the plugin and the proxy.
#[derive(Debug, Default)]
pub struct SharedPolicies {
    current: RwLock<Arc<PolicySet>>,
    revision: AtomicU64,
}

impl SharedPolicies {
    pub fn new(set: PolicySet) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
            revision: AtomicU64::new(1),
        }
    }

    /// Replace the policies; later requests are judged by them.
    pub fn replace(&self, set: PolicySet) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(set);
        self.revision.fetch_add(1, Ordering::Release);
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The policies now and their revision.
    pub fn snapshot(&self) -> (u64, Arc<PolicySet>) {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.revision(), current.clone())
    }
}
