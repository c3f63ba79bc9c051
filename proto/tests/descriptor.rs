//! The generated code must keep Cilium's names and field numbers: these constants
//! were read from cilium/cilium `api/v1/{flow,observer,peer}/*.proto`. A change to
//! our .proto files that breaks wire compatibility fails here.

use hubble_proto::{FILE_DESCRIPTOR_SET, flow, observer};
use prost::Message;
use prost_types::FileDescriptorSet;

fn field_number(set: &FileDescriptorSet, message: &str, field: &str) -> Option<i32> {
    let (package, name) = message.split_once('.')?;
    set.file
        .iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == name)?
        .field
        .iter()
        .find(|f| f.name() == field)
        .map(|f| f.number())
}

#[test]
fn field_numbers_are_ciliums() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    for (message, field, number) in [
        ("flow.Flow", "time", 1),
        ("flow.Flow", "uuid", 34),
        ("flow.Flow", "verdict", 2),
        ("flow.Flow", "IP", 5),
        ("flow.Flow", "l4", 6),
        ("flow.Flow", "source", 8),
        ("flow.Flow", "destination", 9),
        ("flow.Flow", "Type", 10),
        ("flow.Flow", "node_name", 11),
        ("flow.Flow", "event_type", 19),
        ("flow.Flow", "traffic_direction", 22),
        ("flow.Flow", "trace_observation_point", 24),
        ("flow.Flow", "drop_reason_desc", 25),
        ("flow.Flow", "is_reply", 26),
        ("flow.Flow", "interface", 28),
        ("flow.Flow", "egress_allowed_by", 21001),
        ("flow.Flow", "ingress_denied_by", 21005),
        ("flow.Flow", "destination_names", 14),
        ("flow.Layer7", "dns", 100),
        ("flow.DNS", "query", 1),
        ("flow.DNS", "ips", 2),
        ("flow.DNS", "ttl", 3),
        ("flow.DNS", "cnames", 4),
        ("flow.DNS", "observation_source", 5),
        ("flow.DNS", "rcode", 6),
        ("flow.DNS", "qtypes", 7),
        ("flow.DNS", "rrtypes", 8),
        ("flow.FlowFilter", "destination_fqdn", 8),
        ("flow.FlowFilter", "dns_query", 18),
        ("flow.Endpoint", "pod_name", 5),
        ("flow.Endpoint", "workloads", 6),
        ("flow.TCPFlags", "ACK", 5),
        ("flow.FlowFilter", "source_pod", 2),
        ("flow.FlowFilter", "destination_label", 11),
        ("flow.FlowFilter", "traffic_direction", 30),
        ("flow.FlowFilter", "node_name", 24),
        ("observer.GetFlowsRequest", "first", 9),
        ("observer.GetFlowsRequest", "whitelist", 6),
        ("observer.GetFlowsRequest", "until", 8),
        ("observer.GetFlowsResponse", "node_name", 1000),
        ("observer.GetFlowsResponse", "lost_events", 3),
        ("observer.ServerStatusResponse", "num_unavailable_nodes", 6),
        ("observer.Node", "seen_flows", 9),
        ("peer.ChangeNotification", "tls", 4),
    ] {
        assert_eq!(
            field_number(&set, message, field),
            Some(number),
            "{message}.{field}"
        );
    }
}

#[test]
fn generated_messages_encode_with_ciliums_tags() {
    let f = flow::Flow {
        drop_reason_desc: flow::DropReason::CtTruncatedOrInvalidHeader as i32,
        trace_observation_point: flow::TraceObservationPoint::ToEndpoint as i32,
        ..Default::default()
    };
    // Field 24 (varint) = 101, field 25 (varint) = 135.
    assert_eq!(
        f.encode_to_vec(),
        vec![0xC0, 0x01, 101, 0xC8, 0x01, 0x87, 0x01]
    );
    let r = observer::GetFlowsResponse {
        node_name: "n".to_string(),
        ..Default::default()
    };
    // Field 1000, length-delimited: tag (1000 << 3 | 2) = 8002.
    assert_eq!(r.encode_to_vec(), vec![0xC2, 0x3E, 1, b'n']);
}

#[test]
fn protojson_uses_proto_field_names_and_enum_names() {
    let f = flow::Flow {
        verdict: flow::Verdict::Dropped as i32,
        drop_reason_desc: flow::DropReason::PolicyDenied as i32,
        ip: Some(flow::Ip {
            source: "10.0.0.1".to_string(),
            ip_version: flow::IpVersion::IPv4 as i32,
            ..Default::default()
        }),
        is_reply: Some(hubble_proto::BoolValue { value: false }),
        ..Default::default()
    };
    let v = serde_json::to_value(&f).expect("json");
    assert_eq!(v["verdict"], "DROPPED");
    assert_eq!(v["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(v["IP"]["ipVersion"], "IPv4");
    assert_eq!(v["is_reply"], false);
    let line = hubble_proto::to_protojson(&observer::GetFlowsResponse {
        time: Some(hubble_proto::Timestamp {
            seconds: 0,
            nanos: 5,
        }),
        ..Default::default()
    })
    .expect("protojson");
    assert_eq!(line, r#"{"time":"1970-01-01T00:00:00.000000005Z"}"#);
    let back: flow::Flow = serde_json::from_value(v).expect("round trip");
    assert_eq!(back, f);
}
