//! Addresses learned from allowed DNS answers: address -> (names, FQDN identity, expiry),
//! with Cilium's caps. Pure logic (time is passed in), so GC and caps are unit-tested;
//! the DNS proxy applies what it returns to the ipcache.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Limits of the cache (`[plugins.policy] fqdn_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FqdnLimits {
    /// Addresses kept per name (Cilium's `tofqdns-endpoint-max-ip-per-hostname`, 50).
    pub max_ips_per_name: usize,
    /// Addresses kept per endpoint.
    pub max_ips_per_endpoint: usize,
    /// TTLs below this are raised to it (dnsmasq answers local names with TTL 0).
    pub min_ttl: Duration,
}

impl Default for FqdnLimits {
    fn default() -> Self {
        Self {
            max_ips_per_name: 50,
            max_ips_per_endpoint: 1000,
            min_ttl: Duration::from_secs(3600),
        }
    }
}

/// One learned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub identity: u32,
    pub names: BTreeSet<String>,
    pub endpoints: BTreeSet<u32>,
    pub expires: Instant,
}

/// What one answer did to the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LearnOutcome {
    /// New addresses or new identities: to write into the ipcache before the answer goes.
    pub upserts: Vec<(IpAddr, u32)>,
    /// Addresses evicted by the per-name cap: to remove from the ipcache.
    pub removed: Vec<IpAddr>,
    /// How many addresses the caps refused or evicted.
    pub name_cap_hits: u64,
    pub endpoint_cap_hits: u64,
}

/// The cache.
#[derive(Debug, Default)]
pub struct FqdnCache {
    limits: FqdnLimits,
    by_ip: BTreeMap<IpAddr, Learned>,
    by_name: BTreeMap<String, BTreeSet<IpAddr>>,
    by_endpoint: BTreeMap<u32, BTreeSet<IpAddr>>,
}

impl FqdnCache {
    pub fn new(limits: FqdnLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&Learned> {
        self.by_ip.get(ip)
    }

    /// Every learned address (for the ipcache of a restarted agent and `porin` output).
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Learned)> {
        self.by_ip.iter()
    }

    /// Records that `endpoint` learned `ip` for `name` (normalized), selected by
    /// `identity`, valid for `ttl`.
    pub fn learn(
        &mut self,
        endpoint: u32,
        name: &str,
        ip: IpAddr,
        identity: u32,
        ttl: Duration,
        now: Instant,
    ) -> LearnOutcome {
        let expires = now + ttl.max(self.limits.min_ttl);
        self.learn_until(endpoint, name, ip, identity, expires)
    }

    /// Like [`FqdnCache::learn`] with the expiry given (addresses restored from disk keep
    /// the expiry they had), under the same caps.
    pub fn learn_until(
        &mut self,
        endpoint: u32,
        name: &str,
        ip: IpAddr,
        identity: u32,
        expires: Instant,
    ) -> LearnOutcome {
        let mut out = LearnOutcome::default();
        let known_to_endpoint = self
            .by_endpoint
            .get(&endpoint)
            .is_some_and(|s| s.contains(&ip));
        if !known_to_endpoint
            && self.by_endpoint.get(&endpoint).map_or(0, BTreeSet::len)
                >= self.limits.max_ips_per_endpoint
        {
            out.endpoint_cap_hits += 1;
            return out;
        }
        match self.by_ip.get_mut(&ip) {
            Some(l) => {
                l.expires = l.expires.max(expires);
                l.names.insert(name.to_owned());
                l.endpoints.insert(endpoint);
                if l.identity != identity {
                    l.identity = identity;
                    out.upserts.push((ip, identity));
                }
            }
            None => {
                self.by_ip.insert(
                    ip,
                    Learned {
                        identity,
                        names: BTreeSet::from([name.to_owned()]),
                        endpoints: BTreeSet::from([endpoint]),
                        expires,
                    },
                );
                out.upserts.push((ip, identity));
            }
        }
        self.by_endpoint.entry(endpoint).or_default().insert(ip);
        self.by_name.entry(name.to_owned()).or_default().insert(ip);
        // Over the per-name cap: the addresses closest to expiry go first.
        while let Some(ips) = self
            .by_name
            .get(name)
            .filter(|ips| ips.len() > self.limits.max_ips_per_name)
        {
            let oldest = ips
                .iter()
                .filter(|i| **i != ip)
                .min_by_key(|i| self.by_ip.get(i).map(|l| l.expires))
                .copied();
            let Some(victim) = oldest else { break };
            if let Some(ips) = self.by_name.get_mut(name) {
                ips.remove(&victim);
            }
            out.name_cap_hits += 1;
            if self.forget_name(victim, name) {
                out.removed.push(victim);
            }
        }
        out
    }

    /// Drops `name` from `ip`; forgets the address when no name is left. Returns whether
    /// it was forgotten.
    fn forget_name(&mut self, ip: IpAddr, name: &str) -> bool {
        let Some(l) = self.by_ip.get_mut(&ip) else {
            return false;
        };
        l.names.remove(name);
        if !l.names.is_empty() {
            return false;
        }
        self.forget(ip);
        true
    }

    fn forget(&mut self, ip: IpAddr) {
        if let Some(l) = self.by_ip.remove(&ip) {
            for n in &l.names {
                if let Some(set) = self.by_name.get_mut(n) {
                    set.remove(&ip);
                    if set.is_empty() {
                        self.by_name.remove(n);
                    }
                }
            }
            for ep in &l.endpoints {
                if let Some(set) = self.by_endpoint.get_mut(ep) {
                    set.remove(&ip);
                    if set.is_empty() {
                        self.by_endpoint.remove(ep);
                    }
                }
            }
        }
    }

    /// Garbage collection: forgets expired addresses, except those `in_use` (live
    /// conntrack entries), and returns the forgotten ones.
    pub fn expire(&mut self, now: Instant, in_use: &dyn Fn(&IpAddr) -> bool) -> Vec<IpAddr> {
        let expired: Vec<IpAddr> = self
            .by_ip
            .iter()
            .filter(|(ip, l)| l.expires <= now && !in_use(ip))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &expired {
            self.forget(*ip);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, i])
    }

    fn limits(per_name: usize, per_ep: usize) -> FqdnLimits {
        FqdnLimits {
            max_ips_per_name: per_name,
            max_ips_per_endpoint: per_ep,
            min_ttl: Duration::from_secs(0),
        }
    }

    #[test]
    fn learning_reports_new_addresses_once() {
        let mut c = FqdnCache::new(limits(50, 100));
        let now = Instant::now();
        let ttl = Duration::from_secs(30);
        assert_eq!(
            c.learn(1, "a.com", ip(1), 7, ttl, now).upserts,
            vec![(ip(1), 7)]
        );
        assert!(c.learn(1, "a.com", ip(1), 7, ttl, now).upserts.is_empty());
        assert!(c.learn(2, "b.com", ip(1), 7, ttl, now).upserts.is_empty());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn ttl_expiry_keeps_addresses_in_use() {
        let mut c = FqdnCache::new(limits(50, 100));
        let now = Instant::now();
        c.learn(1, "a.com", ip(1), 7, Duration::from_secs(10), now);
        c.learn(1, "a.com", ip(2), 7, Duration::from_secs(10), now);
        c.learn(1, "a.com", ip(3), 7, Duration::from_secs(100), now);
        assert!(
            c.expire(now + Duration::from_secs(5), &|_| false)
                .is_empty()
        );
        let gone = c.expire(now + Duration::from_secs(11), &|i| *i == ip(2));
        assert_eq!(gone, vec![ip(1)]);
        assert!(
            c.get(&ip(2)).is_some(),
            "a live connection keeps its address"
        );
        assert!(c.get(&ip(3)).is_some());
    }

    #[test]
    fn min_ttl_raises_short_ttls() {
        let mut c = FqdnCache::new(FqdnLimits {
            min_ttl: Duration::from_secs(60),
            ..limits(50, 100)
        });
        let now = Instant::now();
        c.learn(1, "a.com", ip(1), 7, Duration::ZERO, now);
        assert!(
            c.expire(now + Duration::from_secs(30), &|_| false)
                .is_empty()
        );
        assert_eq!(
            c.expire(now + Duration::from_secs(61), &|_| false),
            vec![ip(1)]
        );
    }

    #[test]
    fn per_name_cap_evicts_the_oldest_and_counts() {
        let mut c = FqdnCache::new(limits(2, 100));
        let now = Instant::now();
        c.learn(1, "a.com", ip(1), 7, Duration::from_secs(10), now);
        c.learn(1, "a.com", ip(2), 7, Duration::from_secs(20), now);
        let out = c.learn(1, "a.com", ip(3), 7, Duration::from_secs(30), now);
        assert_eq!(out.name_cap_hits, 1);
        assert_eq!(out.removed, vec![ip(1)]);
        assert!(c.get(&ip(1)).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn per_endpoint_cap_refuses_and_counts() {
        let mut c = FqdnCache::new(limits(50, 2));
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        c.learn(1, "a.com", ip(1), 7, ttl, now);
        c.learn(1, "b.com", ip(2), 7, ttl, now);
        let out = c.learn(1, "c.com", ip(3), 7, ttl, now);
        assert_eq!(out.endpoint_cap_hits, 1);
        assert!(out.upserts.is_empty());
        // Another endpoint has its own budget.
        assert_eq!(c.learn(2, "c.com", ip(3), 7, ttl, now).upserts.len(), 1);
    }
}
