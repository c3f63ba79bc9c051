//! What the host encodes is what the guest SDK reads: every field of the
//! contract through `encode` and `porin_wasm_guest::Flow`, natively.

mod common;

use common::flow;
use hubble_proto::BoolValue;
use hubble_proto::flow::{self as pb, Verdict};
use porin_wasm::encode::{MAX_BATCH, encode};
use porin_wasm_guest::{Direction, Flow, L7, Protocol, Verdict as GuestVerdict};

#[test]
fn every_field_survives_the_encoding() {
    let mut f = flow("shop", "db", 5432, Verdict::Dropped);
    f.drop_reason_desc = pb::DropReason::PolicyDenied as i32;
    f.time = Some(pbjson_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 42,
    });
    f.is_reply = Some(BoolValue { value: true });
    f.destination_names = vec!["db.shop.svc".to_string(), "db".to_string()];
    let mut buf = vec![0u8; 64 * 1024];
    assert_eq!(encode(&[f.clone(), f], &mut buf), 2);
    let first = porin_wasm_abi::read_u32(&buf, porin_wasm_abi::header::RECORDS) as usize;
    let g = Flow::at(&buf, first + porin_wasm_abi::record::SIZE);
    assert_eq!(g.verdict(), GuestVerdict::Dropped);
    assert_eq!(g.drop_reason(), 133);
    assert_eq!(g.time_ns(), 1_700_000_000_000_000_042);
    assert_eq!(g.direction(), Direction::Egress);
    assert_eq!(g.protocol(), Protocol::Tcp);
    assert!(g.tcp_flags().syn() && !g.tcp_flags().ack());
    assert_eq!(g.is_reply(), Some(true));
    assert_eq!(g.node(), "node-1");
    assert_eq!(g.l7(), L7::None);
    let (s, d) = (g.source(), g.destination());
    assert_eq!(s.ip(), "10.200.1.5".parse().ok());
    assert_eq!(d.ip(), "10.200.2.7".parse().ok());
    assert_eq!((s.port(), d.port()), (40000, 5432));
    assert_eq!((s.identity(), d.identity()), (1000, 2000));
    assert_eq!((s.namespace(), s.pod()), ("shop", "shop-pod"));
    assert_eq!((d.workload(), d.workload_kind()), ("db-app", "Deployment"));
    assert_eq!(s.label("app"), Some("web"));
    assert_eq!(s.labels().count(), 2);
    assert_eq!(d.names().collect::<Vec<_>>(), vec!["db.shop.svc", "db"]);
    assert_eq!(s.names().count(), 0);
}

#[test]
fn a_full_buffer_ends_the_batch_early() {
    let flows: Vec<_> = (0..MAX_BATCH + 10)
        .map(|_| flow("a", "b", 80, Verdict::Forwarded))
        .collect();
    let mut big = vec![0u8; 1 << 20];
    assert_eq!(encode(&flows, &mut big), MAX_BATCH);
    let mut small = vec![0u8; 8 * 1024];
    let n = encode(&flows, &mut small);
    assert!(n > 0 && n < 40, "{n}");
    assert_eq!(porin_wasm_abi::read_u32(&small, 0) as usize, n);
}
