//! L7 records of the policy plugin's HTTP and DNS proxies as Hubble flows of type L7.
//!
//! As in Cilium: `Type` L7, event type 129 (access log), the HTTP record with
//! code, method, url, protocol and request headers, the request's trace id in
//! `trace_context`; a response flow goes from the server back to the client
//! (`is_reply`) and carries the latency. A request denied by the HTTP rules
//! is DROPPED (its 403 response too). DNS records (`l7.dns`: query, qtypes; for
//! responses ips, ttl, cnames, rcode, rrtypes; `observation_source` "proxy") ride
//! on UDP or TCP; a query refused by the DNS rules is DROPPED (its REFUSED too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use hubble_proto::BoolValue;
use hubble_proto::flow::{self as pb, layer4::Protocol, layer7::Record};
use porin_plugin_sdk::{Direction, DnsRecord, L7Kind, L7Record, Verdict};

use crate::flow::timestamp;

/// Cilium's monitor message type of proxy access log records.
pub const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// The next sequence number of an L7 flow (part of its UUID).
pub fn next_l7_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The flow of one record whose client and server are resolved; `seq` is the
/// record's [`next_l7_seq`].
pub fn l7_flow(
    record: &L7Record,
    seq: u64,
    node: &str,
    client: &pb::Endpoint,
    server: &pb::Endpoint,
) -> pb::Flow {
    let response = record.kind == L7Kind::Response;
    let (src, dst, source, destination) = if response {
        (record.dst, record.src, server, client)
    } else {
        (record.src, record.dst, client, server)
    };
    let with_identity = |ep: &pb::Endpoint, identity: u32| {
        let mut ep = ep.clone();
        if identity > 2 {
            ep.identity = identity;
        }
        ep
    };
    let (client_identity, server_identity) = (record.src_identity, record.dst_identity);
    let (src_identity, dst_identity) = if response {
        (server_identity, client_identity)
    } else {
        (client_identity, server_identity)
    };
    pb::Flow {
        time: Some(timestamp(record.time)),
        uuid: l7_uuid(record, seq),
        verdict: match record.verdict {
            Verdict::Forwarded => pb::Verdict::Forwarded,
            Verdict::Dropped => pb::Verdict::Dropped,
            Verdict::Audit => pb::Verdict::Audit,
        } as i32,
        ip: Some(pb::Ip {
            source: src.ip().to_string(),
            destination: dst.ip().to_string(),
            ip_version: if src.is_ipv4() {
                pb::IpVersion::IPv4
            } else {
                pb::IpVersion::IPv6
            } as i32,
            encrypted: false,
        }),
        l4: Some(pb::Layer4 {
            protocol: Some(match &record.dns {
                Some(dns) if !dns.tcp => Protocol::Udp(pb::Udp {
                    source_port: u32::from(src.port()),
                    destination_port: u32::from(dst.port()),
                }),
                _ => Protocol::Tcp(pb::Tcp {
                    source_port: u32::from(src.port()),
                    destination_port: u32::from(dst.port()),
                    flags: None,
                }),
            }),
        }),
        source: Some(with_identity(source, src_identity)),
        destination: Some(with_identity(destination, dst_identity)),
        r#type: pb::FlowType::L7 as i32,
        node_name: node.to_owned(),
        l7: Some(pb::Layer7 {
            r#type: if response {
                pb::L7FlowType::Response
            } else {
                pb::L7FlowType::Request
            } as i32,
            latency_ns: record.latency_ns,
            record: Some(match &record.dns {
                Some(dns) => Record::Dns(dns_record(dns)),
                None => Record::Http(pb::Http {
                    code: u32::from(record.code),
                    method: record.method.clone(),
                    url: record.url.clone(),
                    protocol: record.protocol.clone(),
                    headers: record
                        .headers
                        .iter()
                        .map(|(key, value)| pb::HttpHeader {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                }),
            }),
        }),
        event_type: Some(pb::CiliumEventType {
            r#type: MESSAGE_TYPE_ACCESS_LOG,
            sub_type: 0,
        }),
        traffic_direction: match record.direction {
            Direction::ToEndpoint => pb::TrafficDirection::Ingress,
            Direction::FromEndpoint => pb::TrafficDirection::Egress,
        } as i32,
        is_reply: Some(BoolValue { value: response }),
        trace_context: record.trace_id.as_ref().map(|id| pb::TraceContext {
            parent: Some(pb::TraceParent {
                trace_id: id.clone(),
            }),
        }),
        ..pb::Flow::default()
    }
}

/// Hubble's DNS record; every record comes from the DNS proxy.
fn dns_record(dns: &DnsRecord) -> pb::Dns {
    pb::Dns {
        query: dns.query.clone(),
        ips: dns.ips.iter().map(ToString::to_string).collect(),
        ttl: dns.ttl,
        cnames: dns.cnames.clone(),
        observation_source: "proxy".to_owned(),
        rcode: u32::from(dns.rcode),
        qtypes: dns.qtypes.clone(),
        rrtypes: dns.rrtypes.clone(),
    }
}

/// A UUID-shaped id unique per agent for L7 flows.
fn l7_uuid(record: &L7Record, seq: u64) -> String {
    let nanos = record
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        nanos >> 32,
        (nanos >> 16) & 0xffff,
        nanos & 0xfff,
        seq & 0xfff,
        (seq >> 12 ^ u64::from(record.src.port())) & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn record(kind: L7Kind) -> L7Record {
        L7Record {
            time: SystemTime::now(),
            kind,
            src: "10.200.1.7:40000".parse().expect("addr"),
            dst: "10.200.1.9:8080".parse().expect("addr"),
            src_identity: 1002,
            dst_identity: 1001,
            direction: Direction::ToEndpoint,
            verdict: Verdict::Dropped,
            method: "POST".into(),
            url: "http://admin:8080/metrics".into(),
            protocol: "HTTP/1.1".into(),
            code: if kind == L7Kind::Response { 403 } else { 0 },
            headers: vec![("host".into(), "admin:8080".into())],
            latency_ns: 1000,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            dns: None,
        }
    }

    #[test]
    fn dns_answers_ride_on_udp_with_their_record() {
        let mut r = record(L7Kind::Response);
        r.verdict = Verdict::Forwarded;
        r.direction = Direction::FromEndpoint;
        r.dst = "10.200.2.3:53".parse().expect("addr");
        r.dns = Some(DnsRecord {
            query: "api.example.com.".into(),
            qtypes: vec!["A".into()],
            ips: vec!["192.0.2.10".parse().expect("ip")],
            ttl: 30,
            cnames: vec!["edge.example.net.".into()],
            rcode: 0,
            rrtypes: vec!["CNAME".into(), "A".into()],
            tcp: false,
        });
        let f = l7_flow(
            &r,
            0,
            "node-1",
            &pb::Endpoint::default(),
            &pb::Endpoint::default(),
        );
        assert_eq!(f.traffic_direction, pb::TrafficDirection::Egress as i32);
        let Some(Protocol::Udp(udp)) = f.l4.and_then(|l| l.protocol) else {
            panic!("not UDP");
        };
        assert_eq!((udp.source_port, udp.destination_port), (53, 40000));
        let Some(Record::Dns(dns)) = f.l7.and_then(|l| l.record) else {
            panic!("no dns record");
        };
        assert_eq!(dns.ips, vec!["192.0.2.10"]);
        assert_eq!(dns.observation_source, "proxy");
        assert_eq!(dns.rrtypes, vec!["CNAME", "A"]);
    }

    #[test]
    fn requests_go_client_to_server_and_responses_back() {
        let client = pb::Endpoint {
            pod_name: "prometheus".into(),
            ..Default::default()
        };
        let server = pb::Endpoint {
            pod_name: "admin".into(),
            ..Default::default()
        };
        let req = l7_flow(&record(L7Kind::Request), 0, "node-1", &client, &server);
        assert_eq!(req.r#type, pb::FlowType::L7 as i32);
        assert_eq!(req.verdict, pb::Verdict::Dropped as i32);
        assert_eq!(req.source.as_ref().map(|e| e.identity), Some(1002));
        assert_eq!(
            req.event_type.as_ref().map(|e| e.r#type),
            Some(MESSAGE_TYPE_ACCESS_LOG)
        );
        let resp = l7_flow(&record(L7Kind::Response), 1, "node-1", &client, &server);
        assert_eq!(
            resp.source.as_ref().map(|e| e.pod_name.as_str()),
            Some("admin")
        );
        assert_eq!(
            resp.ip.as_ref().map(|i| i.source.as_str()),
            Some("10.200.1.9")
        );
        let l7 = resp.l7.expect("l7");
        assert_eq!(l7.latency_ns, 1000);
        let Some(Record::Http(http)) = l7.record else {
            panic!("no http record");
        };
        assert_eq!((http.code, http.method.as_str()), (403, "POST"));
        assert_eq!(
            resp.trace_context
                .and_then(|t| t.parent)
                .map(|p| p.trace_id)
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_ne!(req.uuid, "");
    }
}
