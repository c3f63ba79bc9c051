//! DNS L7 records for the flow pipeline, as Cilium's proxy logs them: a request when a
//! query is decided (FORWARDED, or DROPPED for a refused name) and a response when its
//! answer goes back (the upstream's, or the proxy's REFUSED/SERVFAIL), with the
//! question, the answer's addresses, CNAMEs, lowest TTL, record types and rcode.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Instant, SystemTime};

use hickory_proto::rr::RecordType;
use porin_plugin_sdk::{Direction, DnsRecord, L7Kind, L7Record, Verdict};

use super::message::Answer;
use super::upstream::Pending;
use crate::proxy::Transport;

/// The parts of a query every record of it repeats.
pub struct Exchange<'a> {
    pub client: SocketAddr,
    pub upstream: SocketAddrV4,
    pub upstream_identity: u32,
    pub name: &'a str,
    pub qtype: RecordType,
    pub transport: Transport,
}

impl<'a> From<&'a Pending> for Exchange<'a> {
    fn from(p: &'a Pending) -> Self {
        Self {
            client: p.client,
            upstream: p.upstream,
            upstream_identity: p.upstream_identity,
            name: &p.query.name,
            qtype: p.query.qtype,
            transport: p.transport,
        }
    }
}

impl Exchange<'_> {
    fn record(&self, kind: L7Kind, verdict: Verdict, dns: DnsRecord) -> L7Record {
        L7Record {
            time: SystemTime::now(),
            kind,
            src: self.client,
            dst: SocketAddr::V4(self.upstream),
            // The client's identity is resolved from its address by the pipeline.
            src_identity: 0,
            dst_identity: self.upstream_identity,
            direction: Direction::FromEndpoint,
            verdict,
            method: String::new(),
            url: String::new(),
            protocol: String::new(),
            code: 0,
            headers: Vec::new(),
            latency_ns: 0,
            trace_id: None,
            dns: Some(dns),
        }
    }

    fn question(&self) -> DnsRecord {
        DnsRecord {
            query: format!("{}.", self.name),
            qtypes: vec![self.qtype.to_string()],
            tcp: self.transport == Transport::Tcp,
            ..DnsRecord::default()
        }
    }

    /// The query, forwarded or refused.
    pub fn request(&self, verdict: Verdict) -> L7Record {
        self.record(L7Kind::Request, verdict, self.question())
    }

    /// A reply the proxy made itself (REFUSED, SERVFAIL) with `rcode`.
    pub fn own_reply(&self, verdict: Verdict, rcode: u16, sent: Instant) -> L7Record {
        let mut dns = self.question();
        dns.rcode = rcode;
        let mut r = self.record(L7Kind::Response, verdict, dns);
        r.latency_ns = elapsed_ns(sent);
        r
    }

    /// The upstream's answer (already read), released to the client.
    pub fn answer(&self, answer: &Answer, sent: Instant) -> L7Record {
        let mut dns = self.question();
        dns.rcode = answer.rcode;
        dns.ips = answer.addresses.iter().map(|(ip, _)| *ip).collect();
        dns.ttl = answer.ttl;
        dns.cnames = answer.cnames.iter().map(|c| format!("{c}.")).collect();
        dns.rrtypes = answer.rrtypes.iter().map(ToString::to_string).collect();
        let mut r = self.record(L7Kind::Response, Verdict::Forwarded, dns);
        r.latency_ns = elapsed_ns(sent);
        r
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("name")
    }

    fn exchange(name: &str) -> Exchange<'_> {
        Exchange {
            client: "10.200.1.5:40000".parse().expect("addr"),
            upstream: "10.200.2.9:53".parse().expect("addr"),
            upstream_identity: 4242,
            name,
            qtype: RecordType::A,
            transport: Transport::Udp,
        }
    }

    #[test]
    fn answers_carry_the_chain_its_addresses_and_lowest_ttl() {
        let mut m = Message::new();
        m.set_message_type(MessageType::Response);
        m.add_query(Query::query(name("data.example.com."), RecordType::A));
        m.add_answer(Record::from_rdata(
            name("data.example.com."),
            300,
            RData::CNAME(CNAME(name("Bucket.Example.com."))),
        ));
        m.add_answer(Record::from_rdata(
            name("bucket.example.com."),
            60,
            RData::A(A::new(192, 0, 2, 10)),
        ));
        m.add_answer(Record::from_rdata(
            name("other.org."),
            5,
            RData::A(A::new(192, 0, 2, 66)),
        ));
        let ex = exchange("data.example.com");
        let a = crate::dns::message::answer_of(&m, "data.example.com").expect("answer");
        let r = ex.answer(&a, Instant::now());
        assert_eq!(r.kind, L7Kind::Response);
        assert_eq!(r.verdict, Verdict::Forwarded);
        let dns = r.dns.expect("dns");
        assert_eq!(dns.query, "data.example.com.");
        assert_eq!(dns.qtypes, vec!["A"]);
        assert_eq!(dns.cnames, vec!["bucket.example.com."]);
        assert_eq!(dns.ips, vec![std::net::IpAddr::from([192, 0, 2, 10])]);
        assert_eq!(dns.rrtypes, vec!["CNAME", "A"]);
        assert_eq!((dns.ttl, dns.rcode), (60, 0));
    }

    #[test]
    fn refused_queries_are_dropped_requests_and_responses() {
        let ex = exchange("evil.example.com");
        let req = ex.request(Verdict::Dropped);
        assert_eq!((req.kind, req.verdict), (L7Kind::Request, Verdict::Dropped));
        assert_eq!(req.dst_identity, 4242);
        let resp = ex.own_reply(
            Verdict::Dropped,
            u16::from(ResponseCode::Refused),
            Instant::now(),
        );
        assert_eq!(resp.dns.map(|d| d.rcode), Some(5));
    }
}
