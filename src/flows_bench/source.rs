//! Synthetic datapath events: ring-buffer records laid out exactly as the pod
//! programs write them (`struct porin_flow_event`, core's `RawFlowEvent`), for a
//! mix of new connections, TCP flag changes and drops between 64 pods of two
//! nodes and the outside world.

use std::net::Ipv4Addr;

use porin_core::datapath::abi::{FlowEvent, RawFlowEvent, encode_addr};
use porin_plugin_sdk::DatapathEvent;

/// How many distinct records the source cycles through.
const RECORDS: usize = 4096;
/// Pods per node in the synthetic cluster.
pub const PODS_PER_NODE: u8 = 32;

/// The address of pod `n` of node `node` (1 or 2).
pub fn pod_ip(node: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, node, 10 + n)
}

/// Records to decode, as bytes.
pub struct Source {
    records: Vec<[u8; size_of::<RawFlowEvent>()]>,
    next: usize,
}

impl Source {
    pub fn new() -> Self {
        let records = (0..RECORDS).map(|i| encode(&record(i))).collect();
        Self { records, next: 0 }
    }

    /// The next record's bytes.
    pub fn next_bytes(&mut self) -> &[u8] {
        let r = &self.records[self.next];
        self.next = (self.next + 1) % self.records.len();
        r
    }

    /// The next record decoded as core decodes ring-buffer records.
    pub fn next_event(&mut self) -> DatapathEvent {
        decode(self.next_bytes())
    }
}

/// Core's decoding of one record: bytes to the typed event plugins receive.
pub fn decode(bytes: &[u8]) -> DatapathEvent {
    match FlowEvent::decode(bytes) {
        Ok(e) => porin_core::agent::to_sdk_event(&e),
        Err(e) => panic!("a synthetic record does not decode: {e}"),
    }
}

fn record(i: usize) -> RawFlowEvent {
    let n = u8::try_from(i % usize::from(PODS_PER_NODE)).unwrap_or(0);
    let peer = u8::try_from((i / 7) % usize::from(PODS_PER_NODE)).unwrap_or(0);
    let src = pod_ip(1, n);
    // One flow in sixteen goes to the world, the rest to a pod on the other node.
    let dst = if i.is_multiple_of(16) {
        Ipv4Addr::new(93, 184, 216, u8::try_from(i % 200).unwrap_or(1))
    } else {
        pod_ip(2, peer)
    };
    let (kind, verdict, reason, flags) = match i % 10 {
        0 => (3, 2, 133, 0x02),   // drop: POLICY_DENIED
        1..=3 => (2, 1, 0, 0x11), // FIN, ACK
        _ => (1, 1, 0, 0x02),     // new connection: SYN
    };
    let (family, saddr) = encode_addr(src.into());
    let (_, daddr) = encode_addr(dst.into());
    RawFlowEvent {
        ktime_ns: 1_000_000_000 + i as u64 * 1_000,
        r#type: kind,
        verdict,
        drop_reason: reason,
        direction: 1 + u8::from(i.is_multiple_of(2)),
        family,
        l4_proto: 6,
        tcp_flags: flags,
        sport: 30_000 + u16::try_from(i % 30_000).unwrap_or(0),
        dport: 8080,
        ifindex: 10 + u32::from(n),
        src_identity: 0,
        dst_identity: if i.is_multiple_of(16) { 2 } else { 0 },
        endpoint_id: 100 + u32::from(n),
        pkt_len: 60,
        saddr,
        daddr,
        ..RawFlowEvent::default()
    }
}

fn encode(raw: &RawFlowEvent) -> [u8; size_of::<RawFlowEvent>()] {
    let mut out = [0u8; size_of::<RawFlowEvent>()];
    // SAFETY: RawFlowEvent is repr(C) plain data without implicit padding (its
    // layout is checked against the C header in core's tests); we copy exactly
    // its size from a valid reference into a buffer of that size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(raw).cast::<u8>(),
            out.as_mut_ptr(),
            out.len(),
        );
    }
    out
}
