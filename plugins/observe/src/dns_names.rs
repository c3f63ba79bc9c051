//! Names of the addresses each client learned from DNS, for `source_names` and
//! `destination_names` of L3/L4 flows (as Cilium's Hubble reads its per-endpoint DNS
//! history).
//!
//! The pipeline feeds it the DNS proxy's forwarded answers (DNS L7 response records):
//! every address of an answer is remembered for the client that asked, with the
//! question's name and the CNAME targets (no trailing dots). A flow from that client to
//! the address then carries the names in `destination_names`; a flow back from it in
//! `source_names`. Entries live for the answer's TTL, at least [`MIN_TTL`] (local DNS
//! servers answer with TTL 0, connections outlive that), and at most [`MAX_ENTRIES`]
//! are kept (the oldest go first).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use porin_plugin_sdk::{L7Kind, L7Record, Verdict};

/// Shortest time names are kept (the policy plugin's `fqdn_min_ttl_seconds` default).
pub const MIN_TTL: Duration = Duration::from_secs(3600);
/// Most (client, address) pairs kept.
pub const MAX_ENTRIES: usize = 65_536;

/// The names of one address for one client.
pub type Names = Arc<[String]>;

#[derive(Debug)]
struct Entry {
    names: Names,
    expires: Instant,
    /// When it was (re)learned: its place in the eviction queue.
    learned: Instant,
}

/// (client, address) -> names.
#[derive(Debug, Default)]
pub struct DnsNames {
    entries: HashMap<(IpAddr, IpAddr), Entry>,
    /// Insertion order for eviction; stale keys (relearned since) are skipped.
    order: VecDeque<((IpAddr, IpAddr), Instant)>,
}

impl DnsNames {
    /// Learns the addresses of a forwarded DNS answer; other records are ignored.
    pub fn learn(&mut self, record: &L7Record, now: Instant) {
        let Some(dns) = record.dns.as_ref() else {
            return;
        };
        if record.kind != L7Kind::Response
            || record.verdict != Verdict::Forwarded
            || dns.ips.is_empty()
        {
            return;
        }
        let names: Names = std::iter::once(&dns.query)
            .chain(&dns.cnames)
            .map(|n| n.trim_end_matches('.').to_owned())
            .collect();
        let ttl = Duration::from_secs(u64::from(dns.ttl)).max(MIN_TTL);
        let client = record.src.ip();
        for ip in &dns.ips {
            let key = (client, *ip);
            self.entries.insert(
                key,
                Entry {
                    names: names.clone(),
                    expires: now + ttl,
                    learned: now,
                },
            );
            self.order.push_back((key, now));
        }
        self.evict(now);
    }

    /// The names `client` learned for `addr`.
    pub fn get(&self, client: IpAddr, addr: IpAddr, now: Instant) -> Option<Names> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries
            .get(&(client, addr))
            .filter(|e| e.expires > now)
            .map(|e| e.names.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries at the front of the queue and the oldest over the cap.
    fn evict(&mut self, now: Instant) {
        while let Some((key, learned)) = self.order.front().copied() {
            let current = self.entries.get(&key).map(|e| (e.learned, e.expires));
            match current {
                // Relearned since: this queue slot is stale.
                Some((l, _)) if l != learned => {}
                Some((_, expires)) if expires <= now || self.entries.len() > MAX_ENTRIES => {
                    self.entries.remove(&key);
                }
                None => {}
                Some(_) => break,
            }
            self.order.pop_front();
        }
        // Relearned keys leave stale slots behind a live front: rebuild the queue when
        // they pile up.
        if self.order.len() > 2 * MAX_ENTRIES.max(self.entries.len()) {
            let mut live: Vec<_> = self.entries.iter().map(|(k, e)| (*k, e.learned)).collect();
            live.sort_by_key(|(_, learned)| *learned);
            self.order = live.into();
        }
    }
}

/// L7 records for this crate's tests.
#[cfg(test)]
pub(crate) mod test_records {
    use porin_plugin_sdk::{Direction, DnsRecord, L7Kind, L7Record, Verdict};
    use std::time::SystemTime;

    /// A forwarded answer to `client` for `data.example.com.` (a CNAME to
    /// `bucket.example.com.`) with `ips` and `ttl`, from 10.200.2.3:53.
    pub fn dns_answer(client: &str, ips: &[&str], ttl: u32) -> L7Record {
        L7Record {
            time: SystemTime::now(),
            kind: L7Kind::Response,
            src: format!("{client}:40000").parse().expect("addr"),
            dst: "10.200.2.3:53".parse().expect("addr"),
            src_identity: 0,
            dst_identity: 0,
            direction: Direction::FromEndpoint,
            verdict: Verdict::Forwarded,
            method: String::new(),
            url: String::new(),
            protocol: String::new(),
            code: 0,
            headers: vec![],
            latency_ns: 0,
            trace_id: None,
            dns: Some(DnsRecord {
                query: "data.example.com.".into(),
                cnames: vec!["bucket.example.com.".into()],
                ips: ips.iter().map(|i| i.parse().expect("ip")).collect(),
                ttl,
                ..DnsRecord::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_records::dns_answer as answer;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn names_are_per_client_and_expire() {
        let now = Instant::now();
        let mut names = DnsNames::default();
        names.learn(&answer("10.200.1.5", &["192.0.2.10"], 7200), now);
        let got = names
            .get(ip("10.200.1.5"), ip("192.0.2.10"), now)
            .expect("learned");
        assert_eq!(&*got, ["data.example.com", "bucket.example.com"]);
        assert!(names.get(ip("10.200.1.6"), ip("192.0.2.10"), now).is_none());
        let later = now + Duration::from_secs(7201);
        assert!(
            names
                .get(ip("10.200.1.5"), ip("192.0.2.10"), later)
                .is_none()
        );
        // TTL 0 is raised to the minimum.
        names.learn(&answer("10.200.1.5", &["192.0.2.11"], 0), now);
        assert!(
            names
                .get(ip("10.200.1.5"), ip("192.0.2.11"), now + MIN_TTL / 2)
                .is_some()
        );
    }

    #[test]
    fn refused_and_empty_answers_teach_nothing() {
        let now = Instant::now();
        let mut names = DnsNames::default();
        let mut refused = answer("10.200.1.5", &["192.0.2.10"], 60);
        refused.verdict = Verdict::Dropped;
        names.learn(&refused, now);
        names.learn(&answer("10.200.1.5", &[], 60), now);
        assert!(names.is_empty());
    }

    #[test]
    fn the_oldest_go_over_the_cap() {
        let now = Instant::now();
        let mut names = DnsNames::default();
        for i in 0..(MAX_ENTRIES + 10) {
            let addr = std::net::Ipv4Addr::from(0x0a09_0000 + u32::try_from(i).expect("small"));
            names.learn(&answer("10.200.1.5", &[&addr.to_string()], 60), now);
        }
        assert_eq!(names.len(), MAX_ENTRIES);
        assert!(names.get(ip("10.200.1.5"), ip("10.9.0.0"), now).is_none());
        assert!(names.get(ip("10.200.1.5"), ip("10.9.0.20"), now).is_some());
    }
}
