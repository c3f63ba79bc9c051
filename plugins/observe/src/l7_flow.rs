//! L7 records of the policy plugin's HTTP proxy as Hubble flows of type L7.
//!
//! As in Cilium: `Type` L7, event type 129 (access log), the HTTP record with
//! code, method, url, protocol and request headers, the request's trace id in
//! `trace_context`; a response flow goes from the server back to the client
//! (`is_reply`) and carries the latency. A request denied by the HTTP rules
//! is DROPPED (its 403 response too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use hubble_proto::BoolValue;
use hubble_proto::flow::{self as pb, layer4::Protocol, layer7::Record};
use porin_plugin_sdk::{Direction, L7Kind, L7Record, Verdict};

use crate::flow::timestamp;

/// Cilium's monitor message type of proxy access log records.
pub const MESSAGE_TYPE_ACCESS_LOG: i32 = 129;

/// The flow of one record whose client and server are resolved.
pub fn l7_flow(
    record: &L7Record,
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
        uuid: l7_uuid(record),
        verdict: match record.verdict {
            Verdict::Forwarded => pb::Verdict::Forwarded,
            Verdict::Dropped => pb::Verdict::Dropped,
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
            protocol: Some(Protocol::Tcp(pb::Tcp {
                source_port: u32::from(src.port()),
                destination_port: u32::from(dst.port()),
                flags: None,
            })),
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
            record: Some(Record::Http(pb::Http {
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
            })),
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

/// A UUID-shaped id unique per agent for L7 flows.
fn l7_uuid(record: &L7Record) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
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
        }
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
        let req = l7_flow(&record(L7Kind::Request), "node-1", &client, &server);
        assert_eq!(req.r#type, pb::FlowType::L7 as i32);
        assert_eq!(req.verdict, pb::Verdict::Dropped as i32);
        assert_eq!(req.source.as_ref().map(|e| e.identity), Some(1002));
        assert_eq!(
            req.event_type.as_ref().map(|e| e.r#type),
            Some(MESSAGE_TYPE_ACCESS_LOG)
        );
        let resp = l7_flow(&record(L7Kind::Response), "node-1", &client, &server);
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
