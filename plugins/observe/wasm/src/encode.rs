//! Hubble flows into the batch encoding of `porin-wasm-abi`, written straight
//! into the module's batch buffer.

use std::net::IpAddr;

use hubble_proto::flow::{Endpoint, Flow, layer4::Protocol};
use porin_wasm_abi::{endpoint, header, l7, record, tcp};

/// Most flows in one call.
pub const MAX_BATCH: usize = 256;

/// The layout of a batch of `planned` flows: where the results go and where
/// strings start.
fn layout(planned: usize) -> (usize, usize) {
    let results = header::SIZE + planned * record::SIZE;
    let strings = (results + planned).next_multiple_of(8);
    (results, strings)
}

/// Encode as many of `flows` (at most [`MAX_BATCH`]) as fit into `out`; returns
/// how many. The header's count says the same; results follow the records.
pub fn encode(flows: &[Flow], out: &mut [u8]) -> usize {
    // Records take at most half the buffer; strings get the rest.
    let fit = (out.len() / 2).saturating_sub(header::SIZE) / (record::SIZE + 1);
    let planned = flows.len().min(MAX_BATCH).min(fit);
    if planned == 0 {
        return 0;
    }
    let (results, strings) = layout(planned);
    let mut w = Writer {
        out,
        cursor: strings,
    };
    let mut count = 0;
    for flow in &flows[..planned] {
        let at = header::SIZE + count * record::SIZE;
        if w.record(flow, at).is_none() {
            break;
        }
        count += 1;
    }
    let length = w.cursor as u32;
    put_u32(w.out, header::COUNT, count as u32);
    put_u32(w.out, header::RECORD_SIZE, record::SIZE as u32);
    put_u32(w.out, header::RECORDS, header::SIZE as u32);
    put_u32(w.out, header::RESULTS, results as u32);
    put_u32(w.out, header::LENGTH, length);
    count
}

/// The results area of an encoded batch.
pub fn results_offset(out: &[u8]) -> usize {
    porin_wasm_abi::read_u32(out, header::RESULTS) as usize
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

struct Writer<'a> {
    out: &'a mut [u8],
    cursor: usize,
}

impl Writer<'_> {
    /// Write one record at `at`; `None` when its strings do not fit.
    fn record(&mut self, flow: &Flow, at: usize) -> Option<()> {
        let r = &mut self.out[at..at + record::SIZE];
        r.fill(0);
        let time = flow.time.as_ref().map_or(0, |t| {
            (t.seconds.max(0) as u64).saturating_mul(1_000_000_000) + t.nanos.max(0) as u64
        });
        r[record::TIME_NS..record::TIME_NS + 8].copy_from_slice(&time.to_le_bytes());
        let reason = match flow.drop_reason_desc {
            0 => flow.drop_reason,
            d => d as u32,
        };
        r[record::DROP_REASON..record::DROP_REASON + 4].copy_from_slice(&reason.to_le_bytes());
        r[record::VERDICT] = flow.verdict.clamp(0, 255) as u8;
        r[record::DIRECTION] = flow.traffic_direction.clamp(0, 255) as u8;
        r[record::IS_REPLY] = flow.is_reply.map_or(0, |b| if b.value { 2 } else { 1 });
        r[record::L7] = l7::NONE;
        if let Some(ip) = &flow.ip {
            let (src, dst) = (
                ip.source.parse::<IpAddr>(),
                ip.destination.parse::<IpAddr>(),
            );
            let version = match (&src, &dst) {
                (Ok(IpAddr::V6(_)), _) | (_, Ok(IpAddr::V6(_))) => 6,
                (Ok(_), _) | (_, Ok(_)) => 4,
                _ => 0,
            };
            r[record::IP_VERSION] = version;
            for (addr, field) in [(src, record::SOURCE_IP), (dst, record::DESTINATION_IP)] {
                if let Ok(a) = addr {
                    let octets = match a {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                        IpAddr::V6(v6) => v6.octets(),
                    };
                    r[field..field + 16].copy_from_slice(&octets);
                }
            }
        }
        let (proto, sport, dport, flags) = l4(flow);
        r[record::PROTOCOL] = proto;
        r[record::SOURCE_PORT..record::SOURCE_PORT + 2].copy_from_slice(&sport.to_le_bytes());
        r[record::DESTINATION_PORT..record::DESTINATION_PORT + 2]
            .copy_from_slice(&dport.to_le_bytes());
        r[record::TCP_FLAGS..record::TCP_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        for (ep, names, id_at, strings) in [
            (
                flow.source.as_ref(),
                &flow.source_names,
                record::SOURCE_IDENTITY,
                record::SOURCE,
            ),
            (
                flow.destination.as_ref(),
                &flow.destination_names,
                record::DESTINATION_IDENTITY,
                record::DESTINATION,
            ),
        ] {
            let identity = ep.map_or(0, |e| e.identity);
            self.out[at + id_at..at + id_at + 4].copy_from_slice(&identity.to_le_bytes());
            self.endpoint(ep, names, at + strings)?;
        }
        self.string(at + record::NODE, flow.node_name.as_bytes())
    }

    fn endpoint(&mut self, ep: Option<&Endpoint>, names: &[String], at: usize) -> Option<()> {
        if let Some(e) = ep {
            self.string(at + endpoint::NAMESPACE, e.namespace.as_bytes())?;
            self.string(at + endpoint::POD, e.pod_name.as_bytes())?;
            if let Some(w) = e.workloads.first() {
                self.string(at + endpoint::WORKLOAD, w.name.as_bytes())?;
                self.string(at + endpoint::WORKLOAD_KIND, w.kind.as_bytes())?;
            }
            self.lines(at + endpoint::LABELS, &e.labels)?;
        }
        self.lines(at + endpoint::NAMES, names)
    }

    /// Append `bytes` to the strings and point the field at `field` to them.
    fn string(&mut self, field: usize, bytes: &[u8]) -> Option<()> {
        let start = self.cursor;
        let end = start.checked_add(bytes.len())?;
        self.out.get_mut(start..end)?.copy_from_slice(bytes);
        self.cursor = end;
        self.point(field, start, bytes.len());
        Some(())
    }

    /// A list, one item per line.
    fn lines(&mut self, field: usize, items: &[String]) -> Option<()> {
        let start = self.cursor;
        for (i, item) in items.iter().enumerate() {
            let sep = usize::from(i > 0);
            let end = self.cursor.checked_add(item.len() + sep)?;
            let dst = self.out.get_mut(self.cursor..end)?;
            if sep == 1 {
                dst[0] = b'\n';
            }
            dst[sep..].copy_from_slice(item.as_bytes());
            self.cursor = end;
        }
        self.point(field, start, self.cursor - start);
        Some(())
    }

    fn point(&mut self, field: usize, start: usize, len: usize) {
        put_u32(self.out, field, start as u32);
        put_u32(self.out, field + 4, len as u32);
    }
}

/// Protocol number, ports and TCP flag bits.
fn l4(flow: &Flow) -> (u8, u16, u16, u16) {
    let port = |p: u32| p.min(u32::from(u16::MAX)) as u16;
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => {
            let f = t.flags.unwrap_or_default();
            let bits = [
                (f.fin, tcp::FIN),
                (f.syn, tcp::SYN),
                (f.rst, tcp::RST),
                (f.psh, tcp::PSH),
                (f.ack, tcp::ACK),
                (f.urg, tcp::URG),
                (f.ece, tcp::ECE),
                (f.cwr, tcp::CWR),
                (f.ns, tcp::NS),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |acc, (_, bit)| acc | bit);
            (6, port(t.source_port), port(t.destination_port), bits)
        }
        Some(Protocol::Udp(u)) => (17, port(u.source_port), port(u.destination_port), 0),
        Some(Protocol::Sctp(s)) => (132, port(s.source_port), port(s.destination_port), 0),
        Some(Protocol::IcmPv4(_)) => (1, 0, 0, 0),
        Some(Protocol::IcmPv6(_)) => (58, 0, 0, 0),
        _ => (0, 0, 0, 0),
    }
}
