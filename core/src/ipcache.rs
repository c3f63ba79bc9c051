//! Userspace ipcache: which identity stands behind an IP prefix.
//!
//! Core keeps the desired state here and pushes it to the datapath's LPM map
//! through an [`IpcacheSink`], writing only what changed since the last sync.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use thiserror::Error;
use tracing::debug;

/// Who said a prefix has an identity. When two sources claim the same prefix,
/// the higher one (later in this list) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A CIDR selected by a policy (`toCIDR`).
    CidrPolicy,
    /// An address an allowed DNS answer gave for a `toFQDNs` selector (/32 or /128).
    Fqdn,
    /// A pod on another node.
    RemoteEndpoint,
    /// A node's address.
    Node,
    /// A pod on this node.
    LocalEndpoint,
}

/// One ipcache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub identity: u32,
    pub source: Source,
}

/// An error from the datapath side, boxed so any map implementation fits.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where the ipcache is written: the BPF LPM map in the datapath, a fake in tests.
pub trait IpcacheSink {
    fn upsert(&mut self, prefix: IpNet, identity: u32) -> Result<(), SinkError>;
    fn remove(&mut self, prefix: IpNet) -> Result<(), SinkError>;
}

#[derive(Debug, Error)]
pub enum IpcacheError {
    /// Writing to the sink failed; the next sync retries what is left.
    #[error("ipcache sync: {op} {prefix}: {source}")]
    Sink {
        op: &'static str,
        prefix: IpNet,
        #[source]
        source: SinkError,
    },
}

/// What a sync wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub upserted: usize,
    pub removed: usize,
}

/// The userspace ipcache.
#[derive(Debug, Default)]
pub struct Ipcache {
    entries: BTreeMap<IpNet, Entry>,
    /// What the sink holds after the last (partial) sync.
    synced: BTreeMap<IpNet, u32>,
}

impl Ipcache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the identity of `prefix` (host bits are cleared). Returns `false`, and
    /// changes nothing, if a higher-precedence source already holds the prefix.
    pub fn upsert(&mut self, prefix: IpNet, identity: u32, source: Source) -> bool {
        let prefix = prefix.trunc();
        match self.entries.get(&prefix) {
            Some(existing) if existing.source > source => false,
            _ => {
                self.entries.insert(prefix, Entry { identity, source });
                true
            }
        }
    }

    /// Remove `prefix` if `source` holds it. Returns whether it was removed.
    pub fn remove(&mut self, prefix: IpNet, source: Source) -> bool {
        let prefix = prefix.trunc();
        if self
            .entries
            .get(&prefix)
            .is_some_and(|e| e.source == source)
        {
            self.entries.remove(&prefix);
            true
        } else {
            false
        }
    }

    /// Makes `wanted` exactly the prefixes `source` holds: its other prefixes go, the
    /// wanted ones are (re)claimed where no higher-precedence source holds them. Returns
    /// how many of `wanted` a higher source holds instead.
    pub fn replace_source(&mut self, source: Source, wanted: &BTreeMap<IpNet, u32>) -> usize {
        let stale: Vec<IpNet> = self
            .entries
            .iter()
            .filter(|(p, e)| e.source == source && !wanted.contains_key(p))
            .map(|(p, _)| *p)
            .collect();
        for prefix in stale {
            self.entries.remove(&prefix);
        }
        wanted
            .iter()
            .filter(|(prefix, identity)| !self.upsert(**prefix, **identity, source))
            .count()
    }

    /// Exact entry for a prefix.
    pub fn get(&self, prefix: IpNet) -> Option<Entry> {
        self.entries.get(&prefix.trunc()).copied()
    }

    /// Longest-prefix match, as the datapath's LPM map does.
    pub fn lookup(&self, ip: IpAddr) -> Option<(IpNet, Entry)> {
        let max = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (0..=max).rev().find_map(|len| {
            let prefix = IpNet::new(ip, len).ok()?.trunc();
            self.entries.get(&prefix).map(|e| (prefix, *e))
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = (IpNet, Entry)> + '_ {
        self.entries.iter().map(|(p, e)| (*p, *e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forget what the sink holds, so the next sync rewrites everything (after the
    /// map was recreated).
    pub fn mark_unsynced(&mut self) {
        self.synced.clear();
    }

    /// Write the differences since the last sync: removals first, so a map near
    /// its capacity has room for the new entries.
    pub fn sync(&mut self, sink: &mut dyn IpcacheSink) -> Result<SyncStats, IpcacheError> {
        let mut stats = SyncStats::default();
        let stale: Vec<IpNet> = self
            .synced
            .keys()
            .filter(|p| !self.entries.contains_key(p))
            .copied()
            .collect();
        for prefix in stale {
            sink.remove(prefix).map_err(|source| IpcacheError::Sink {
                op: "remove",
                prefix,
                source,
            })?;
            self.synced.remove(&prefix);
            stats.removed += 1;
        }
        for (prefix, entry) in &self.entries {
            if self.synced.get(prefix) == Some(&entry.identity) {
                continue;
            }
            sink.upsert(*prefix, entry.identity)
                .map_err(|source| IpcacheError::Sink {
                    op: "upsert",
                    prefix: *prefix,
                    source,
                })?;
            self.synced.insert(*prefix, entry.identity);
            stats.upserted += 1;
        }
        debug!(
            upserted = stats.upserted,
            removed = stats.removed,
            "ipcache synced"
        );
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct FakeMap {
        map: BTreeMap<IpNet, u32>,
        writes: Vec<String>,
        fail_on: Option<IpNet>,
    }

    impl IpcacheSink for FakeMap {
        fn upsert(&mut self, prefix: IpNet, identity: u32) -> Result<(), SinkError> {
            if self.fail_on == Some(prefix) {
                return Err("map full".into());
            }
            self.writes.push(format!("+{prefix}={identity}"));
            self.map.insert(prefix, identity);
            Ok(())
        }
        fn remove(&mut self, prefix: IpNet) -> Result<(), SinkError> {
            self.writes.push(format!("-{prefix}"));
            self.map.remove(&prefix);
            Ok(())
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn longest_prefix_wins() {
        let mut c = Ipcache::new();
        c.upsert(net("0.0.0.0/0"), 2, Source::CidrPolicy);
        c.upsert(net("10.0.0.0/8"), 16_777_217, Source::CidrPolicy);
        c.upsert(net("10.244.1.5/32"), 4242, Source::LocalEndpoint);
        c.upsert(net("fd00::5/128"), 4243, Source::RemoteEndpoint);
        let id = |ip: &str| c.lookup(ip.parse().expect("ip")).map(|(_, e)| e.identity);
        assert_eq!(id("10.244.1.5"), Some(4242));
        assert_eq!(id("10.244.1.6"), Some(16_777_217));
        assert_eq!(id("8.8.8.8"), Some(2));
        assert_eq!(id("fd00::5"), Some(4243));
        assert_eq!(id("fd00::6"), None);
    }

    #[test]
    fn source_precedence() {
        let mut c = Ipcache::new();
        let p = net("10.0.0.5/32");
        assert!(c.upsert(p, 300, Source::LocalEndpoint));
        assert!(!c.upsert(p, 400, Source::CidrPolicy));
        assert!(!c.remove(p, Source::CidrPolicy));
        assert_eq!(c.get(p).map(|e| e.identity), Some(300));
        assert!(c.remove(p, Source::LocalEndpoint));
        assert!(c.is_empty());
    }

    #[test]
    fn replace_source_keeps_other_sources() {
        let mut c = Ipcache::new();
        c.upsert(net("10.0.0.5/32"), 300, Source::LocalEndpoint);
        c.upsert(net("192.168.0.0/16"), 16_777_218, Source::CidrPolicy);
        let wanted = BTreeMap::from([
            (net("10.0.0.0/8"), 16_777_217),
            (net("10.0.0.5/32"), 16_777_219),
        ]);
        assert_eq!(c.replace_source(Source::CidrPolicy, &wanted), 1);
        assert_eq!(c.get(net("192.168.0.0/16")), None);
        assert_eq!(c.get(net("10.0.0.5/32")).map(|e| e.identity), Some(300));
        let id = |ip: &str| c.lookup(ip.parse().expect("ip")).map(|(_, e)| e.identity);
        assert_eq!(id("10.1.2.3"), Some(16_777_217));
        assert_eq!(id("10.0.0.5"), Some(300));
        assert_eq!(c.replace_source(Source::CidrPolicy, &BTreeMap::new()), 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn sync_writes_only_differences() {
        let mut c = Ipcache::new();
        let mut sink = FakeMap::default();
        c.upsert(net("10.0.0.1/32"), 300, Source::LocalEndpoint);
        c.upsert(net("10.0.0.2/32"), 301, Source::LocalEndpoint);
        let stats = c.sync(&mut sink).expect("sync");
        assert_eq!(
            stats,
            SyncStats {
                upserted: 2,
                removed: 0
            }
        );
        assert_eq!(c.sync(&mut sink).expect("sync"), SyncStats::default());

        sink.writes.clear();
        c.upsert(net("10.0.0.1/32"), 305, Source::LocalEndpoint);
        c.remove(net("10.0.0.2/32"), Source::LocalEndpoint);
        c.upsert(net("10.0.0.3/32"), 302, Source::RemoteEndpoint);
        c.sync(&mut sink).expect("sync");
        assert_eq!(
            sink.writes,
            vec!["-10.0.0.2/32", "+10.0.0.1/32=305", "+10.0.0.3/32=302"]
        );
        assert_eq!(sink.map.len(), 2);
    }

    #[test]
    fn failed_sync_is_retried() {
        let mut c = Ipcache::new();
        let mut sink = FakeMap {
            fail_on: Some(net("10.0.0.2/32")),
            ..FakeMap::default()
        };
        c.upsert(net("10.0.0.1/32"), 300, Source::LocalEndpoint);
        c.upsert(net("10.0.0.2/32"), 301, Source::LocalEndpoint);
        let err = c.sync(&mut sink).expect_err("sink fails");
        assert_eq!(
            err.to_string(),
            "ipcache sync: upsert 10.0.0.2/32: map full"
        );
        sink.fail_on = None;
        assert_eq!(
            c.sync(&mut sink).expect("sync"),
            SyncStats {
                upserted: 1,
                removed: 0
            }
        );
        c.mark_unsynced();
        assert_eq!(c.sync(&mut sink).expect("sync").upserted, 2);
    }
}
