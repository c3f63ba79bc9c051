use hubble_proto::BoolValue;
use hubble_proto::flow::{
    CiliumEventType, Ip, Layer4, TrafficDirection, Udp, Verdict, layer4::Protocol,
};

use super::*;

fn flow(src_pod: &str, dst_pod: &str, verdict: Verdict) -> Flow {
    Flow {
        verdict: verdict as i32,
        ip: Some(Ip {
            source: "10.200.1.5".to_string(),
            destination: "10.200.2.7".to_string(),
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(Protocol::Udp(Udp {
                source_port: 41234,
                destination_port: 53,
            })),
        }),
        source: Some(Endpoint {
            namespace: "shop".to_string(),
            pod_name: src_pod.to_string(),
            labels: vec!["k8s:app=client".to_string()],
            identity: 1234,
            ..Endpoint::default()
        }),
        destination: Some(Endpoint {
            namespace: "kube-system".to_string(),
            pod_name: dst_pod.to_string(),
            labels: vec!["k8s:app=dns".to_string(), "k8s:tier=infra".to_string()],
            identity: 5678,
            ..Endpoint::default()
        }),
        node_name: "node-1".to_string(),
        traffic_direction: TrafficDirection::Egress as i32,
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 5,
        }),
        is_reply: Some(BoolValue { value: false }),
        ..Flow::default()
    }
}

#[test]
fn each_field_matches_and_misses() {
    let f = flow("client-a", "coredns-1", Verdict::Forwarded);
    let hit_and_miss: Vec<(FlowFilter, FlowFilter)> = vec![
        (
            FlowFilter {
                source_pod: vec!["shop/client".into()],
                ..Default::default()
            },
            FlowFilter {
                source_pod: vec!["tools/client".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                destination_pod: vec!["coredns".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_pod: vec!["client".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                source_pod: vec!["shop/".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_pod: vec!["shop/".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                source_ip: vec!["10.200.0.0/16".into()],
                ..Default::default()
            },
            FlowFilter {
                source_ip: vec!["10.200.2.7".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                destination_ip: vec!["10.200.2.7".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_ip: vec!["10.201.0.0/16".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                source_label: vec!["app=client".into()],
                ..Default::default()
            },
            FlowFilter {
                source_label: vec!["k8s:app=dns".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                destination_label: vec!["k8s:app=dns,tier".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_label: vec!["app=dns,!tier".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                verdict: vec![Verdict::Forwarded as i32],
                ..Default::default()
            },
            FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 5,
                }],
                ..Default::default()
            },
            FlowFilter {
                event_type: vec![EventTypeFilter {
                    r#type: 4,
                    match_sub_type: true,
                    sub_type: 0,
                }],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                protocol: vec!["UDP".into()],
                ..Default::default()
            },
            FlowFilter {
                protocol: vec!["tcp".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                source_port: vec!["41234".into()],
                ..Default::default()
            },
            FlowFilter {
                source_port: vec!["53".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                destination_port: vec!["53".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_port: vec!["80".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                node_name: vec!["node-*".into()],
                ..Default::default()
            },
            FlowFilter {
                node_name: vec!["node-2".into()],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                traffic_direction: vec![TrafficDirection::Egress as i32],
                ..Default::default()
            },
            FlowFilter {
                traffic_direction: vec![TrafficDirection::Ingress as i32],
                ..Default::default()
            },
        ),
        (
            FlowFilter {
                reply: vec![false],
                ..Default::default()
            },
            FlowFilter {
                reply: vec![true],
                ..Default::default()
            },
        ),
    ];
    for (hit, miss) in hit_and_miss {
        assert!(matches(&hit, &f), "should match: {hit:?}");
        assert!(!matches(&miss, &f), "should not match: {miss:?}");
    }
}

#[test]
fn fields_and_values_combine_like_hubble() {
    let f = flow("client-a", "coredns-1", Verdict::Dropped);
    // Values OR'ed.
    let either = FlowFilter {
        verdict: vec![Verdict::Forwarded as i32, Verdict::Dropped as i32],
        ..Default::default()
    };
    assert!(matches(&either, &f));
    // Fields AND'ed.
    let both = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        protocol: vec!["tcp".into()],
        ..Default::default()
    };
    assert!(!matches(&both, &f));
    // Whitelist filters OR'ed, blacklist subtracted.
    let drops = FlowFilter {
        verdict: vec![Verdict::Dropped as i32],
        ..Default::default()
    };
    let tcp = FlowFilter {
        protocol: vec!["tcp".into()],
        ..Default::default()
    };
    let dns = FlowFilter {
        destination_port: vec!["53".into()],
        ..Default::default()
    };
    assert!(keeps(&[tcp.clone(), drops.clone()], &[], &f));
    assert!(!keeps(std::slice::from_ref(&tcp), &[], &f));
    assert!(!keeps(&[drops], std::slice::from_ref(&dns), &f));
    assert!(!keeps(&[], &[dns], &f));
    assert!(keeps(&[], &[tcp], &f));
}

#[test]
fn protocol_dns_and_http_select_l7_records() {
    use hubble_proto::flow::{Dns, Http, Layer7, layer7::Record};
    let mut dns = flow("client", "dns", Verdict::Forwarded);
    dns.l7 = Some(Layer7 {
        record: Some(Record::Dns(Dns::default())),
        ..Layer7::default()
    });
    let mut http = flow("client", "web", Verdict::Forwarded);
    http.l7 = Some(Layer7 {
        record: Some(Record::Http(Http::default())),
        ..Layer7::default()
    });
    let plain = flow("client", "dns", Verdict::Forwarded);
    let only = |p: &str| FlowFilter {
        protocol: vec![p.to_string()],
        ..FlowFilter::default()
    };
    assert!(matches(&only("dns"), &dns));
    assert!(matches(&only("DNS"), &dns));
    assert!(!matches(&only("dns"), &http));
    assert!(!matches(&only("dns"), &plain));
    assert!(matches(&only("http"), &http));
    assert!(matches(&only("udp"), &dns), "the L4 protocol still matches");
}

#[test]
fn fqdn_filters_match_the_names_of_each_side() {
    let mut f = flow("client", "", Verdict::Forwarded);
    f.destination_names = vec!["bucket.s3.us-east-1.amazonaws.com".to_string()];
    let to = |p: &str| FlowFilter {
        destination_fqdn: vec![p.to_string()],
        ..FlowFilter::default()
    };
    let from = |p: &str| FlowFilter {
        source_fqdn: vec![p.to_string()],
        ..FlowFilter::default()
    };
    assert!(matches(&to("bucket.s3.us-east-1.amazonaws.com"), &f));
    assert!(matches(&to("Bucket.S3.us-east-1.amazonaws.com."), &f));
    assert!(matches(&to("*.amazonaws.com"), &f));
    assert!(!matches(&to("*.example.com"), &f));
    assert!(!matches(&from("*.amazonaws.com"), &f));
    assert!(!matches(
        &to("*"),
        &flow("client", "dns", Verdict::Forwarded)
    ));
}
