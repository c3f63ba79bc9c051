//! What the DNS proxy's tasks share: the allow-lists and FQDN selectors in force (swapped
//! by the plugin on every policy change), the learned addresses, the counters, and the
//! ways out to the datapath (original destinations, ipcache writes).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use porin_plugin_sdk::{CidrIdentity, PluginContext};
use tracing::{info, warn};

use super::message::Rejection;
use super::pattern::NamePattern;
use super::rules::DnsPolicy;
use crate::fqdn::FqdnCache;
use crate::fqdn::persist::{self, FqdnSnapshot};
use crate::proxy::OriginalDestinations;

/// The policy side of the proxy.
#[derive(Debug, Clone, Default)]
pub struct DnsView {
    pub policy: DnsPolicy,
    /// `toFQDNs` selectors and their identities.
    pub selectors: Vec<(NamePattern, u32)>,
}

impl DnsView {
    /// The identity of the first selector matching any of `names`.
    pub fn identity_for<'a>(
        &self,
        names: impl Iterator<Item = &'a String> + Clone,
    ) -> Option<(u32, &'a String)> {
        self.selectors
            .iter()
            .find_map(|(p, id)| names.clone().find(|n| p.matches(n)).map(|n| (*id, n)))
    }
}

/// Counters of the proxy (exported in the plugin's status and metrics).
#[derive(Debug, Default)]
pub struct DnsCounters {
    pub queries: AtomicU64,
    pub forwarded: AtomicU64,
    pub learned: AtomicU64,
    pub name_cap_hits: AtomicU64,
    pub endpoint_cap_hits: AtomicU64,
    pub ipcache_errors: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
}

impl DnsCounters {
    pub fn reject(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|r| *r == why) {
            self.rejections[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rejections(&self, why: Rejection) -> u64 {
        Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.rejections[i].load(Ordering::Relaxed))
    }

    /// Everything, for `porin plugins list` / status JSON.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (name, c) in [
            ("queries", &self.queries),
            ("forwarded", &self.forwarded),
            ("learned_addresses", &self.learned),
            ("fqdn_name_cap_hits", &self.name_cap_hits),
            ("fqdn_endpoint_cap_hits", &self.endpoint_cap_hits),
            ("ipcache_errors", &self.ipcache_errors),
        ] {
            out.insert(name.to_owned(), c.load(Ordering::Relaxed));
        }
        for r in Rejection::ALL {
            out.insert(format!("rejected_{}", r.as_str()), self.rejections(r));
        }
        out
    }
}

/// Shared by every task of the proxy.
pub struct DnsShared {
    pub view: RwLock<Arc<DnsView>>,
    pub cache: Mutex<FqdnCache>,
    pub counters: DnsCounters,
    pub ctx: Arc<dyn PluginContext>,
    pub destinations: OriginalDestinations,
    /// How long an upstream has to answer.
    pub upstream_timeout: Duration,
    /// Where the learned addresses are kept across restarts (`None`: nowhere).
    pub persist_path: Option<PathBuf>,
    /// The cache changed since it was last saved.
    pub dirty: AtomicBool,
}

impl DnsShared {
    pub fn view(&self) -> Arc<DnsView> {
        self.view
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Hands a DNS L7 record to the flow pipeline (nothing happens without one).
    pub fn publish(&self, record: porin_plugin_sdk::L7Record) {
        self.ctx.publish_l7(record);
    }

    pub fn set_view(&self, view: DnsView) {
        let mut slot = self.view.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(view);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, FqdnCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns the addresses of an allowed answer; returns once the new ones are in the
    /// ipcache (so the pod's first connection finds them).
    pub fn learn(
        &self,
        endpoint: u32,
        names: &std::collections::BTreeSet<String>,
        addresses: &[(IpAddr, Duration)],
    ) {
        let view = self.view();
        let Some((identity, name)) = view.identity_for(names.iter()) else {
            return;
        };
        let now = Instant::now();
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        // Expiries move too: the file keeps them.
        self.dirty.store(true, Ordering::Relaxed);
        {
            let mut cache = self.cache();
            for (ip, ttl) in addresses {
                let out = cache.learn(endpoint, name, *ip, identity, *ttl, now);
                self.counters
                    .name_cap_hits
                    .fetch_add(out.name_cap_hits, Ordering::Relaxed);
                self.counters
                    .endpoint_cap_hits
                    .fetch_add(out.endpoint_cap_hits, Ordering::Relaxed);
                upserts.extend(out.upserts);
                removed.extend(out.removed);
            }
        }
        if !removed.is_empty()
            && let Err(e) = self.ctx.remove_fqdn_addresses(&removed)
        {
            self.counters.ipcache_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "removing FQDN addresses over the per-name cap");
        }
        if upserts.is_empty() {
            return;
        }
        self.counters
            .learned
            .fetch_add(upserts.len() as u64, Ordering::Relaxed);
        let entries = host_entries(&upserts);
        if let Err(e) = self.ctx.upsert_fqdn_addresses(&entries) {
            self.counters.ipcache_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, name = %name, "writing FQDN addresses into the ipcache");
        }
    }

    /// Garbage collection: expired addresses without live connections leave the ipcache.
    pub fn expire(&self, in_use: &dyn Fn(&IpAddr) -> bool) -> usize {
        let gone = self.cache().expire(Instant::now(), in_use);
        if !gone.is_empty() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        if !gone.is_empty()
            && let Err(e) = self.ctx.remove_fqdn_addresses(&gone)
        {
            self.counters.ipcache_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "removing expired FQDN addresses");
        }
        gone.len()
    }
}

impl DnsShared {
    /// Writes the learned addresses to the state file when they changed since the last
    /// save. A failure is logged (with the file) and retried at the next change.
    pub fn save_if_dirty(&self) {
        let Some(path) = &self.persist_path else {
            return;
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let snapshot = FqdnSnapshot::of(&self.cache(), Instant::now(), SystemTime::now());
        if let Err(e) = persist::save(path, &snapshot) {
            self.dirty.store(true, Ordering::Relaxed);
            warn!(error = %e, "saving the learned FQDN addresses");
        }
    }

    /// Restores the addresses a previous agent saved whose names a `toFQDNs` selector of
    /// the current view still matches, with the expiry they had, into the cache and the
    /// ipcache. A file that cannot be read is logged with its path and ignored. Returns how
    /// many addresses came back.
    pub fn restore_saved(&self) -> usize {
        let Some(path) = &self.persist_path else {
            return 0;
        };
        let snapshot = match persist::load(path) {
            Ok(Some(s)) => s,
            Ok(None) => return 0,
            Err(e) => {
                warn!(error = %e, "ignoring the saved FQDN addresses");
                return 0;
            }
        };
        let view = self.view();
        let now = Instant::now();
        let mut upserts = Vec::new();
        {
            let mut cache = self.cache();
            for r in snapshot.live(now, SystemTime::now()) {
                let Some((identity, _)) = view.identity_for(std::iter::once(&r.name)) else {
                    continue;
                };
                for endpoint in &r.endpoints {
                    let out = cache.learn_until(*endpoint, &r.name, r.ip, identity, r.expires);
                    upserts.extend(out.upserts);
                }
            }
        }
        let entries = host_entries(&upserts);
        if let Err(e) = self.ctx.upsert_fqdn_addresses(&entries) {
            self.counters.ipcache_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, file = %path.display(), "writing restored FQDN addresses into the ipcache");
        }
        let restored = self.cache().len();
        info!(file = %path.display(), restored, "learned FQDN addresses restored");
        restored
    }
}

/// Ipcache entries of single addresses (/32, /128).
fn host_entries(upserts: &[(IpAddr, u32)]) -> Vec<CidrIdentity> {
    upserts
        .iter()
        .map(|(ip, identity)| CidrIdentity {
            addr: *ip,
            prefix_len: if ip.is_ipv4() { 32 } else { 128 },
            identity: *identity,
        })
        .collect()
}
