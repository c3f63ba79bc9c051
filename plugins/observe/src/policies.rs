//! The policies flows name (`*_allowed_by`, `*_denied_by`): a datapath event carries the
//! deciding policy map entry's id, resolved here at event time from the policy plugin's
//! table (through the context), shared (`Arc`) between the flows naming the same policy,
//! and kept for a while after the policy left the table, so the last flows a deleted
//! policy decided (still queued, or in the kernel's ring) keep naming it, like deleted pods.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use hubble_proto::flow as pb;
use porin_plugin_sdk::PolicyInfo;

use crate::endpoints::CacheSettings;
use crate::flow::Enricher;

/// Hubble's `Policy` of the policy plugin's description.
pub fn policy_of(info: PolicyInfo) -> pb::Policy {
    pb::Policy {
        name: info.name,
        namespace: info.namespace,
        labels: info.labels,
        revision: info.revision,
        kind: info.kind,
    }
}

#[derive(Debug)]
struct Cached {
    policy: Option<Arc<pb::Policy>>,
    /// When the table was last asked.
    checked: Instant,
    /// When the table last had the id.
    seen: Instant,
}

/// Policies by id.
#[derive(Debug, Default)]
pub struct PolicyCache {
    settings: CacheSettings,
    by_id: HashMap<u32, Cached>,
}

impl PolicyCache {
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            by_id: HashMap::new(),
        }
    }

    /// The policy `id` stands for now, or stood for less than `keep_deleted` ago.
    pub fn resolve(
        &mut self,
        id: u32,
        now: Instant,
        ctx: &dyn Enricher,
    ) -> Option<Arc<pb::Policy>> {
        if let Some(c) = self.by_id.get(&id)
            && now.saturating_duration_since(c.checked) < self.settings.refresh
        {
            return c.policy.clone();
        }
        let cached = match ctx.policy(id) {
            Some(info) => {
                let fresh = policy_of(info);
                let policy = match self.by_id.get(&id).and_then(|c| c.policy.clone()) {
                    Some(old) if *old == fresh => old,
                    _ => Arc::new(fresh),
                };
                Cached {
                    policy: Some(policy),
                    checked: now,
                    seen: now,
                }
            }
            None => match self.by_id.remove(&id) {
                Some(old)
                    if old.policy.is_some()
                        && now.saturating_duration_since(old.seen) < self.settings.keep_deleted =>
                {
                    Cached {
                        checked: now,
                        ..old
                    }
                }
                _ => Cached {
                    policy: None,
                    checked: now,
                    seen: now,
                },
            },
        };
        let policy = cached.policy.clone();
        if self.by_id.len() >= self.settings.max_entries {
            let keep = self.settings.keep_deleted;
            self.by_id
                .retain(|_, c| now.saturating_duration_since(c.seen) < keep);
        }
        self.by_id.insert(id, cached);
        policy
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::IpAddr;
    use std::time::Duration;

    use porin_plugin_sdk::{EndpointMeta, PolicyTable};

    use super::*;

    struct Table(RefCell<PolicyTable>);
    impl Enricher for Table {
        fn node_name(&self) -> &str {
            "node-1"
        }
        fn endpoint(&self, _ip: IpAddr) -> Option<EndpointMeta> {
            None
        }
        fn identity_labels(&self, _identity: u32) -> Option<Vec<String>> {
            None
        }
        fn policy(&self, id: u32) -> Option<PolicyInfo> {
            self.0.borrow().get(&id).cloned()
        }
    }

    #[test]
    fn a_deleted_policy_still_names_its_flows_for_a_while() {
        let info = PolicyInfo::new("CiliumNetworkPolicy", Some("payments"), "allow-db", 2);
        let table = Table(RefCell::new(PolicyTable::from([(7, info)])));
        let mut cache = PolicyCache::new(CacheSettings::default());
        let t0 = Instant::now();
        let p = cache.resolve(7, t0, &table).expect("known");
        assert_eq!(
            (p.name.as_str(), p.kind.as_str()),
            ("allow-db", "CiliumNetworkPolicy")
        );
        assert!(cache.resolve(8, t0, &table).is_none());
        table.0.borrow_mut().clear();
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            cache.resolve(7, later, &table).map(|p| p.name.clone()),
            Some("allow-db".to_string())
        );
        let gone = t0 + CacheSettings::default().keep_deleted + Duration::from_secs(1);
        assert!(cache.resolve(7, gone, &table).is_none());
    }
}
