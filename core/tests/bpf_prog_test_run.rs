//! BPF_PROG_TEST_RUN tests of `bpf/pod.c`: hand-built packets through both programs.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and bpffs; fails with a clear message otherwise.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use porin_core::datapath::{
    Datapath, DatapathConfig, EndpointInfo, EventReader, PodProgram,
    abi::{CtKey, Direction, DropReason, EventType, FlowEvent, Verdict, encode_addr},
    remove_node_pins, test_run,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

// ---- a tiny packet builder -------------------------------------------------------------

mod pkt {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        p.extend_from_slice(&ethertype.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// IPv4 header (IHL 5 unless `options` is given) + payload.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag_off: u16, l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&frag_off.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(l4);
        eth(0x0800, &h)
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(
            &u16::try_from(payload.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(payload);
        eth(0x86dd, &h)
    }

    pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }

    pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(
            &u16::try_from(8 + data.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }

    /// ICMP / ICMPv6 echo (request or reply depending on `typ`).
    pub fn echo(typ: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut e = vec![typ, 0, 0, 0];
        e.extend_from_slice(&id.to_be_bytes());
        e.extend_from_slice(&seq.to_be_bytes());
        e.extend_from_slice(b"porin-ping");
        e
    }

    pub fn arp() -> Vec<u8> {
        eth(
            0x0806,
            &[
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0,
                2,
            ],
        )
    }
}

// ---- fixture -------------------------------------------------------------------------

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A datapath loaded under a pin root unique to this test, removed on drop.
struct Fixture {
    dp: Datapath,
    events: EventReader,
    pin_root: PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "bpf_prog_test_run tests must run as root (they load eBPF programs)"
        );
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/porin-test-{}-{n}", std::process::id()));
        let config = DatapathConfig {
            node_name: "node-1".into(),
            pin_root: pin_root.clone(),
            switches: vec![("CFG_NODE_ID".into(), 42)],
        };
        let dp = Datapath::load(&config).unwrap_or_else(|e| panic!("loading the datapath: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let events = {
            let _guard = rt.enter();
            dp.event_reader().expect("event reader")
        };
        Self {
            dp,
            events,
            pin_root,
            _rt: rt,
        }
    }

    fn run(&self, program: PodProgram, packet: &[u8]) -> u32 {
        let fd = self.dp.program_fd(program).expect("program fd");
        test_run(fd, packet).expect("BPF_PROG_TEST_RUN").retval
    }

    fn drain(&mut self) -> Vec<FlowEvent> {
        std::iter::from_fn(|| self.events.try_next()).collect()
    }

    fn counter(&self, reason: u8, dir: Direction) -> (u64, u64) {
        self.dp
            .counters()
            .expect("counters")
            .into_iter()
            .find(|c| c.reason == reason && c.direction == Some(dir))
            .map_or((0, 0), |c| (c.packets, c.bytes))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = remove_node_pins(&self.pin_root, "node-1");
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

fn ct_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> CtKey {
    let (family, saddr) = encode_addr(src);
    let (_, daddr) = encode_addr(dst);
    CtKey {
        saddr,
        daddr,
        sport,
        dport,
        family,
        l4_proto: proto,
        pad: [0; 2],
    }
}

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

// ---- tests ---------------------------------------------------------------------------

#[test]
fn tcp_handshake_tracks_connection_and_aggregates_events() {
    let mut f = Fixture::new();
    f.dp.ipcache()
        .expect("ipcache")
        .upsert("10.0.0.0/24".parse().expect("cidr"), 1000, 0)
        .expect("ipcache upsert");
    f.dp.endpoints()
        .expect("endpoints")
        .upsert(
            IpAddr::V4(POD),
            EndpointInfo {
                endpoint_id: 7,
                ifindex: 3,
                identity: 1000,
            },
        )
        .expect("endpoint upsert");

    let syn = pkt::ipv4(POD, PEER, TCP, 0, &pkt::tcp(40000, 80, SYN));
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);

    let ct = f.dp.conntrack().expect("conntrack");
    let key = ct_key(POD.into(), PEER.into(), 40000, 80, TCP);
    let entry = ct
        .get(&key)
        .expect("ct get")
        .expect("conntrack entry created by SYN");
    assert_eq!(entry.packets, [1, 0]);
    assert_eq!(entry.bytes[0], syn.len() as u64);
    assert_eq!(entry.tcp_flags_seen[0], u32::from(SYN));

    let events = f.drain();
    assert_eq!(
        events.len(),
        1,
        "one event for the new connection: {events:?}"
    );
    let ev = &events[0];
    assert_eq!(ev.event_type, EventType::NewConnection);
    assert_eq!(ev.verdict, Verdict::Forwarded);
    assert_eq!(ev.direction, Direction::Egress);
    assert_eq!(ev.src, Some(IpAddr::V4(POD)));
    assert_eq!(ev.dst, Some(IpAddr::V4(PEER)));
    assert_eq!((ev.src_port, ev.dst_port, ev.l4_proto), (40000, 80, TCP));
    assert_eq!(ev.tcp_flags, SYN);
    assert_eq!((ev.src_identity, ev.dst_identity), (1000, 1000));
    assert_eq!(ev.endpoint_id, 7);
    assert_eq!(ev.node_id, 42, "CFG_NODE_ID switch");
    assert!(!ev.is_reply);
    assert_eq!(ev.pkt_len as usize, syn.len());

    // SYN-ACK entering the pod: the reply direction of the same entry.
    let synack = pkt::ipv4(PEER, POD, TCP, 0, &pkt::tcp(80, 40000, SYN | ACK));
    assert_eq!(f.run(PodProgram::ToPod, &synack), TC_ACT_OK);
    let entry = ct.get(&key).expect("ct get").expect("entry");
    assert_eq!(entry.packets, [1, 1]);
    assert!(
        ct.get(&ct_key(PEER.into(), POD.into(), 80, 40000, TCP))
            .expect("ct get")
            .is_none(),
        "a reply must not create its own entry"
    );
    let events = f.drain();
    assert_eq!(
        events.len(),
        1,
        "first SYN in the reply direction: {events:?}"
    );
    assert_eq!(events[0].event_type, EventType::TcpFlags);
    assert!(events[0].is_reply);
    assert_eq!(events[0].direction, Direction::Ingress);
    assert_eq!(
        events[0].endpoint_id, 7,
        "destination is the local endpoint"
    );

    // Plain ACKs: counted, no events.
    let ack = pkt::ipv4(POD, PEER, TCP, 0, &pkt::tcp(40000, 80, ACK));
    for _ in 0..3 {
        assert_eq!(f.run(PodProgram::FromPod, &ack), TC_ACT_OK);
    }
    assert!(f.drain().is_empty(), "no event per packet");
    assert_eq!(ct.get(&key).expect("ct").expect("entry").packets, [4, 1]);

    assert_eq!(f.counter(0, Direction::Egress).0, 4);
    assert_eq!(f.counter(0, Direction::Ingress), (1, synack.len() as u64));
}

#[test]
fn udp_and_icmp_echo() {
    let mut f = Fixture::new();
    let world = Ipv4Addr::new(1, 1, 1, 1);

    let q = pkt::ipv4(POD, world, UDP, 0, &pkt::udp(5000, 53, b"query"));
    assert_eq!(f.run(PodProgram::FromPod, &q), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::FromPod, &q), TC_ACT_OK);
    let r = pkt::ipv4(world, POD, UDP, 0, &pkt::udp(53, 5000, b"answer"));
    assert_eq!(f.run(PodProgram::ToPod, &r), TC_ACT_OK);
    let events = f.drain();
    assert_eq!(events.len(), 1, "one event per connection: {events:?}");
    assert_eq!(events[0].event_type, EventType::NewConnection);
    assert_eq!((events[0].src_port, events[0].dst_port), (5000, 53));
    assert_eq!(
        events[0].dst_identity, 2,
        "missing from the ipcache = world"
    );
    let ct = f.dp.conntrack().expect("conntrack");
    let e = ct
        .get(&ct_key(POD.into(), world.into(), 5000, 53, UDP))
        .expect("ct")
        .expect("udp entry");
    assert_eq!(e.packets, [2, 1]);

    // ICMP echo: the identifier ties request and reply together.
    let req = pkt::ipv4(POD, PEER, ICMP, 0, &pkt::echo(8, 0x1234, 1));
    let rep = pkt::ipv4(PEER, POD, ICMP, 0, &pkt::echo(0, 0x1234, 1));
    assert_eq!(f.run(PodProgram::FromPod, &req), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &rep), TC_ACT_OK);
    let events = f.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].l4_proto, events[0].icmp_type), (ICMP, 8));
    let e = ct
        .get(&ct_key(POD.into(), PEER.into(), 0x1234, 0, ICMP))
        .expect("ct")
        .expect("icmp entry");
    assert_eq!(e.packets, [1, 1], "echo reply matched the reversed tuple");
}

#[test]
fn ipv6_tcp_and_icmpv6() {
    let mut f = Fixture::new();
    let a: Ipv6Addr = "fd00::1".parse().expect("v6");
    let b: Ipv6Addr = "fd00::2".parse().expect("v6");

    let syn = pkt::ipv6(a, b, TCP, &pkt::tcp(40001, 443, SYN));
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);
    let synack = pkt::ipv6(b, a, TCP, &pkt::tcp(443, 40001, SYN | ACK));
    assert_eq!(f.run(PodProgram::ToPod, &synack), TC_ACT_OK);
    let events = f.drain();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].event_type, EventType::NewConnection);
    assert_eq!(events[0].src, Some(IpAddr::V6(a)));
    assert_eq!(events[0].dst, Some(IpAddr::V6(b)));
    assert_eq!((events[0].src_port, events[0].dst_port), (40001, 443));
    assert!(events[1].is_reply);
    let ct = f.dp.conntrack().expect("conntrack");
    let e = ct
        .get(&ct_key(a.into(), b.into(), 40001, 443, TCP))
        .expect("ct")
        .expect("v6 tcp entry");
    assert_eq!(e.packets, [1, 1]);

    // ICMPv6 echo behind a hop-by-hop extension header.
    let mut hbh = vec![ICMPV6, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&pkt::echo(128, 77, 1));
    let req = pkt::ipv6(a, b, 0, &hbh);
    assert_eq!(f.run(PodProgram::FromPod, &req), TC_ACT_OK);
    let events = f.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].l4_proto, events[0].icmp_type), (ICMPV6, 128));
    assert_eq!(events[0].src_port, 77);
}

#[test]
fn malformed_packets_are_dropped_with_cilium_reasons() {
    let mut f = Fixture::new();

    // Truncated IPv4 header: IHL 15 announces 60 bytes of header (40 of options) but the
    // packet ends after 28. (BPF_PROG_TEST_RUN itself refuses an IPv4 frame shorter than
    // Ethernet + 20 bytes with EINVAL, so the cut has to be in the options.)
    let good = pkt::ipv4(POD, PEER, UDP, 0, &pkt::udp(1, 2, b""));
    let mut truncated = good.clone();
    truncated[14] = 0x4f;
    assert_eq!(f.run(PodProgram::FromPod, &truncated), TC_ACT_SHOT);

    // IHL 3 (< 5).
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    assert_eq!(f.run(PodProgram::FromPod, &bad_ihl), TC_ACT_SHOT);

    // Truncated TCP header: 8 of 20 bytes.
    let tcp = pkt::tcp(1000, 80, SYN);
    let short_tcp = pkt::ipv4(POD, PEER, TCP, 0, &tcp[..8]);
    assert_eq!(f.run(PodProgram::ToPod, &short_tcp), TC_ACT_SHOT);

    let events = f.drain();
    assert_eq!(events.len(), 3, "one event per drop: {events:?}");
    for ev in &events {
        assert_eq!(ev.event_type, EventType::Drop);
        assert_eq!(ev.verdict, Verdict::Dropped);
    }
    assert_eq!(
        events[0].drop_reason,
        Some(DropReason::InvalidPacketDropped)
    );
    assert_eq!(
        events[0].src, None,
        "L3 header rejected before addresses are read"
    );
    assert_eq!(
        events[1].drop_reason,
        Some(DropReason::InvalidPacketDropped)
    );
    assert_eq!(
        events[2].drop_reason,
        Some(DropReason::CtTruncatedOrInvalidHeader)
    );
    assert_eq!(events[2].drop_reason.map(DropReason::code), Some(135));
    assert_eq!(events[2].src, Some(IpAddr::V4(POD)));
    assert_eq!(events[2].direction, Direction::Ingress);

    assert_eq!(f.counter(134, Direction::Egress).0, 2);
    assert_eq!(f.counter(135, Direction::Ingress).0, 1);
    assert_eq!(f.counter(0, Direction::Egress).0, 0);
    assert!(
        f.dp.conntrack()
            .expect("ct")
            .entries()
            .expect("entries")
            .is_empty(),
        "drops create no conntrack entry"
    );
}

#[test]
fn arp_and_later_fragments_pass() {
    let mut f = Fixture::new();
    assert_eq!(f.run(PodProgram::FromPod, &pkt::arp()), TC_ACT_OK);
    assert_eq!(f.run(PodProgram::ToPod, &pkt::arp()), TC_ACT_OK);
    assert!(f.drain().is_empty(), "ARP passes untouched");
    assert!(
        f.dp.counters().expect("counters").is_empty(),
        "ARP is not counted"
    );

    // A later IPv4 fragment (offset 185 * 8) has no L4 header: tracked without ports.
    let frag = pkt::ipv4(POD, PEER, UDP, 185, b"just payload bytes");
    assert_eq!(f.run(PodProgram::FromPod, &frag), TC_ACT_OK);
    let ct = f.dp.conntrack().expect("ct");
    assert!(
        ct.get(&ct_key(POD.into(), PEER.into(), 0, 0, UDP))
            .expect("ct")
            .is_some(),
        "fragment tracked by addresses and protocol"
    );
}

#[test]
fn full_ring_buffer_is_counted_not_silent() {
    let f = Fixture::new();
    // Every drop emits an event; nobody reads: the 1 MiB ring fills up after ~12k events.
    let mut bad_ihl = pkt::ipv4(POD, PEER, UDP, 0, &pkt::udp(1, 2, b""));
    bad_ihl[14] = 0x43;
    for _ in 0..14_000 {
        assert_eq!(f.run(PodProgram::FromPod, &bad_ihl), TC_ACT_SHOT);
    }
    let (lost, _) = f.counter(
        porin_core::datapath::abi::REASON_EVENT_LOST,
        Direction::Egress,
    );
    let (dropped, _) = f.counter(134, Direction::Egress);
    assert_eq!(dropped, 14_000, "every drop counted");
    assert!(
        lost > 0,
        "events lost to a full ring buffer must be counted"
    );
}

#[test]
fn async_reader_yields_events() {
    let f = Fixture::new();
    let syn = pkt::ipv4(POD, PEER, TCP, 0, &pkt::tcp(41000, 8080, SYN));
    assert_eq!(f.run(PodProgram::FromPod, &syn), TC_ACT_OK);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut reader = f.dp.event_reader().expect("reader");
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), reader.next())
            .await
            .expect("an event within 5s")
            .expect("read event");
        assert_eq!(ev.event_type, EventType::NewConnection);
        assert_eq!(ev.dst_port, 8080);

        // Events produced after the reader started waiting wake it up.
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let task = reader.spawn(tx);
        let fin = pkt::ipv4(POD, PEER, TCP, 0, &pkt::tcp(41000, 8080, 0x01 | ACK));
        assert_eq!(f.run(PodProgram::FromPod, &fin), TC_ACT_OK);
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("FIN event within 5s")
            .expect("channel open");
        assert_eq!(ev.event_type, EventType::TcpFlags);
        assert_eq!(ev.tcp_flags & 0x01, 0x01);
        task.abort();
    });
}

#[test]
fn unknown_switch_is_a_load_error() {
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/porin-test-{}-switch",
        std::process::id()
    ));
    let config = DatapathConfig {
        node_name: "node-1".into(),
        pin_root: pin_root.clone(),
        switches: vec![("CFG_NO_SUCH_SWITCH".into(), 1)],
    };
    let err = Datapath::load(&config).expect_err("unknown switch must fail");
    let _ = std::fs::remove_dir_all(&pin_root);
    assert!(
        err.to_string().contains("datapath object"),
        "error names what failed: {err}"
    );
}
