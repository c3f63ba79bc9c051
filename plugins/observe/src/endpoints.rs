//! Endpoint metadata for the flow pipeline: resolved from the state store at
//! event time, shared (`Arc`) between the flows that name the same endpoint, and
//! kept for a while after the endpoint is gone, so the last flows of a deleted
//! pod (its FIN, RST and drops, or events still queued when it went) still name
//! it. Hubble does the same with its cache of deleted pods.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubble_proto::flow::Endpoint;

use crate::flow::{Enricher, endpoint_of, identity_endpoint};

/// How long answers are trusted and how long deleted endpoints are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// An address is looked up again in the state store after this long.
    pub refresh: Duration,
    /// An endpoint that disappeared from the state store still resolves for this
    /// long after it was last seen there.
    pub keep_deleted: Duration,
    /// Above this many addresses, entries not confirmed within `keep_deleted`
    /// are dropped.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_millis(500),
            keep_deleted: Duration::from_secs(60),
            max_entries: 65_536,
        }
    }
}

#[derive(Debug)]
struct Cached {
    /// `None`: no endpoint owns the address (it resolves by identity).
    endpoint: Option<Arc<Endpoint>>,
    /// When the state store was last asked.
    checked: Instant,
    /// When the state store last had the endpoint.
    seen: Instant,
}

/// Endpoints by address, and identity-only endpoints by identity.
#[derive(Debug, Default)]
pub struct EndpointCache {
    settings: CacheSettings,
    by_ip: HashMap<IpAddr, Cached>,
    by_identity: HashMap<u32, (Arc<Endpoint>, Instant)>,
}

impl EndpointCache {
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The endpoint that owns `ip` (or owned it until less than `keep_deleted`
    /// ago), else the identity's endpoint.
    pub fn resolve(
        &mut self,
        ip: IpAddr,
        identity: u32,
        now: Instant,
        ctx: &dyn Enricher,
    ) -> Arc<Endpoint> {
        if let Some(c) = self.by_ip.get(&ip)
            && now.saturating_duration_since(c.checked) < self.settings.refresh
        {
            if let Some(ep) = &c.endpoint {
                return ep.clone();
            }
            return self.by_identity(identity, now, ctx);
        }
        let found = match ctx.endpoint(ip) {
            Some(meta) => {
                let fresh = endpoint_of(meta);
                let endpoint = match self.by_ip.get(&ip).and_then(|c| c.endpoint.clone()) {
                    Some(old) if *old == fresh => old,
                    _ => Arc::new(fresh),
                };
                Cached {
                    endpoint: Some(endpoint),
                    checked: now,
                    seen: now,
                }
            }
            None => match self.by_ip.remove(&ip) {
                // Gone from the store, but recently: keep naming it.
                Some(old)
                    if old.endpoint.is_some()
                        && now.saturating_duration_since(old.seen) < self.settings.keep_deleted =>
                {
                    Cached {
                        checked: now,
                        ..old
                    }
                }
                _ => Cached {
                    endpoint: None,
                    checked: now,
                    seen: now,
                },
            },
        };
        let endpoint = found.endpoint.clone();
        self.insert(ip, found, now);
        match endpoint {
            Some(ep) => ep,
            None => self.by_identity(identity, now, ctx),
        }
    }

    fn insert(&mut self, ip: IpAddr, cached: Cached, now: Instant) {
        if self.by_ip.len() >= self.settings.max_entries {
            let keep = self.settings.keep_deleted;
            self.by_ip
                .retain(|_, c| now.saturating_duration_since(c.checked) < keep);
            if self.by_ip.len() >= self.settings.max_entries {
                self.by_ip.clear();
            }
        }
        self.by_ip.insert(ip, cached);
    }

    fn by_identity(&mut self, identity: u32, now: Instant, ctx: &dyn Enricher) -> Arc<Endpoint> {
        if let Some((ep, checked)) = self.by_identity.get(&identity)
            && now.saturating_duration_since(*checked) < self.settings.refresh
        {
            return ep.clone();
        }
        let labels = ctx.identity_labels(identity).unwrap_or_default();
        let ep = Arc::new(identity_endpoint(identity, labels));
        if self.by_identity.len() >= self.settings.max_entries {
            self.by_identity.clear();
        }
        self.by_identity.insert(identity, (ep.clone(), now));
        ep
    }

    /// How many addresses are cached.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use porin_plugin_sdk::EndpointMeta;

    use super::*;

    /// A state store whose pods can be deleted, counting lookups.
    #[derive(Default)]
    struct Store {
        pods: RefCell<BTreeMap<IpAddr, EndpointMeta>>,
        lookups: RefCell<u32>,
    }

    impl Enricher for Store {
        fn node_name(&self) -> &str {
            "node-1"
        }
        fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
            *self.lookups.borrow_mut() += 1;
            self.pods.borrow().get(&ip).cloned()
        }
        fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
            (identity == 2).then(|| vec!["reserved:world".to_string()])
        }
    }

    fn pod(name: &str) -> EndpointMeta {
        EndpointMeta {
            id: 3,
            namespace: "shop".to_string(),
            pod_name: name.to_string(),
            identity: 4242,
            labels: vec!["k8s:app=web".to_string()],
            node_name: "node-1".to_string(),
            workload: None,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_deleted_pod_resolves_until_keep_deleted_passes() {
        let store = Store::default();
        let web = ip("10.200.1.5");
        store.pods.borrow_mut().insert(web, pod("web"));
        let settings = CacheSettings {
            refresh: Duration::from_millis(100),
            keep_deleted: Duration::from_secs(2),
            max_entries: 16,
        };
        let mut cache = EndpointCache::new(settings);
        let t0 = Instant::now();
        let first = cache.resolve(web, 0, t0, &store);
        assert_eq!(first.pod_name, "web");

        // The pod is deleted; events of its last moments are processed later.
        store.pods.borrow_mut().clear();
        let later = cache.resolve(web, 0, t0 + Duration::from_secs(1), &store);
        assert_eq!(later.pod_name, "web", "a pod deleted 1s ago still resolves");
        assert!(
            Arc::ptr_eq(&first, &later),
            "the metadata is shared, not copied"
        );
        let still = cache.resolve(web, 0, t0 + Duration::from_millis(1900), &store);
        assert_eq!(still.pod_name, "web");

        // After keep_deleted it is an address like any other: identity only.
        let gone = cache.resolve(web, 2, t0 + Duration::from_secs(3), &store);
        assert_eq!(gone.pod_name, "");
        assert_eq!(gone.labels, vec!["reserved:world"]);
    }

    #[test]
    fn answers_are_reused_within_refresh_and_replaced_after() {
        let store = Store::default();
        let addr = ip("10.200.1.9");
        store.pods.borrow_mut().insert(addr, pod("old"));
        let mut cache = EndpointCache::new(CacheSettings {
            refresh: Duration::from_millis(100),
            ..CacheSettings::default()
        });
        let t0 = Instant::now();
        for ms in [0, 10, 50, 99] {
            cache.resolve(addr, 0, t0 + Duration::from_millis(ms), &store);
        }
        assert_eq!(*store.lookups.borrow(), 1, "one lookup per refresh period");
        // The address now belongs to another pod: the new one wins at once.
        store.pods.borrow_mut().insert(addr, pod("new"));
        let now = cache.resolve(addr, 0, t0 + Duration::from_millis(150), &store);
        assert_eq!(now.pod_name, "new");
        // An unknown address is not looked up on every event either.
        let world = ip("1.1.1.1");
        let before = *store.lookups.borrow();
        for ms in [200, 210, 220] {
            let ep = cache.resolve(world, 2, t0 + Duration::from_millis(ms), &store);
            assert_eq!(ep.identity, 2);
        }
        assert_eq!(*store.lookups.borrow(), before + 1);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let store = Store::default();
        let mut cache = EndpointCache::new(CacheSettings {
            max_entries: 8,
            ..CacheSettings::default()
        });
        let t0 = Instant::now();
        for n in 0..100u8 {
            cache.resolve(IpAddr::from([10, 0, 0, n]), 2, t0, &store);
        }
        assert!(cache.len() <= 8, "{}", cache.len());
    }
}
