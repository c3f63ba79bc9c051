//! A read-only view of one flow of a batch the host wrote.

use std::net::{IpAddr, Ipv6Addr};

use porin_wasm_abi::{endpoint, l7, read_u16, read_u32, record, tcp};

/// One flow. Borrowed from the batch; valid during the call.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    batch: &'a [u8],
    at: usize,
}

/// Hubble's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Forwarded,
    Dropped,
    Error,
    Audit,
    Redirected,
    Traced,
    Translated,
}

/// Hubble's traffic direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Unknown,
    Ingress,
    Egress,
}

/// The L4 protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Other(u8),
}

/// TCP flags (bits of `porin_wasm_abi::tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    pub fn syn(self) -> bool {
        self.0 & tcp::SYN != 0
    }
    pub fn ack(self) -> bool {
        self.0 & tcp::ACK != 0
    }
    pub fn fin(self) -> bool {
        self.0 & tcp::FIN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & tcp::RST != 0
    }
}

/// L7 details, when the flow has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7<'a> {
    None,
    Dns {
        query: &'a str,
        rcode: u32,
    },
    Http {
        method: &'a str,
        url: &'a str,
        code: u32,
    },
}

/// One side of a flow.
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    flow: Flow<'a>,
    /// Offset of the endpoint's strings in the record.
    strings: usize,
    ip: usize,
    port: usize,
    identity: usize,
}

impl<'a> Flow<'a> {
    /// The view of the record at `at` in `batch` (used by the runtime and tests).
    #[doc(hidden)]
    pub fn at(batch: &'a [u8], at: usize) -> Self {
        Self { batch, at }
    }

    fn u8(&self, field: usize) -> u8 {
        self.batch.get(self.at + field).copied().unwrap_or(0)
    }
    fn u16(&self, field: usize) -> u16 {
        read_u16(self.batch, self.at + field)
    }
    fn u32(&self, field: usize) -> u32 {
        read_u32(self.batch, self.at + field)
    }
    fn str(&self, field: usize) -> &'a str {
        let off = read_u32(self.batch, self.at + field) as usize;
        let len = read_u32(self.batch, self.at + field + 4) as usize;
        self.batch
            .get(off..off + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Nanoseconds since the Unix epoch.
    pub fn time_ns(&self) -> u64 {
        u64::from(self.u32(record::TIME_NS)) | (u64::from(self.u32(record::TIME_NS + 4)) << 32)
    }
    pub fn verdict(&self) -> Verdict {
        match self.u8(record::VERDICT) {
            1 => Verdict::Forwarded,
            2 => Verdict::Dropped,
            3 => Verdict::Error,
            4 => Verdict::Audit,
            5 => Verdict::Redirected,
            6 => Verdict::Traced,
            7 => Verdict::Translated,
            _ => Verdict::Unknown,
        }
    }
    /// Cilium's drop reason code (e.g. 133 `POLICY_DENIED`), 0 when not dropped.
    pub fn drop_reason(&self) -> u32 {
        self.u32(record::DROP_REASON)
    }
    pub fn direction(&self) -> Direction {
        match self.u8(record::DIRECTION) {
            1 => Direction::Ingress,
            2 => Direction::Egress,
            _ => Direction::Unknown,
        }
    }
    pub fn protocol(&self) -> Protocol {
        match self.u8(record::PROTOCOL) {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            n => Protocol::Other(n),
        }
    }
    pub fn tcp_flags(&self) -> TcpFlags {
        TcpFlags(self.u16(record::TCP_FLAGS))
    }
    /// Whether the flow is a reply; `None` when unknown.
    pub fn is_reply(&self) -> Option<bool> {
        match self.u8(record::IS_REPLY) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
    pub fn source(&self) -> Endpoint<'a> {
        Endpoint {
            flow: *self,
            strings: record::SOURCE,
            ip: record::SOURCE_IP,
            port: record::SOURCE_PORT,
            identity: record::SOURCE_IDENTITY,
        }
    }
    pub fn destination(&self) -> Endpoint<'a> {
        Endpoint {
            flow: *self,
            strings: record::DESTINATION,
            ip: record::DESTINATION_IP,
            port: record::DESTINATION_PORT,
            identity: record::DESTINATION_IDENTITY,
        }
    }
    /// The node that observed the flow.
    pub fn node(&self) -> &'a str {
        self.str(record::NODE)
    }
    pub fn l7(&self) -> L7<'a> {
        match self.u8(record::L7) {
            l7::DNS => L7::Dns {
                query: self.str(record::DNS_QUERY),
                rcode: self.u32(record::DNS_RCODE),
            },
            l7::HTTP => L7::Http {
                method: self.str(record::HTTP_METHOD),
                url: self.str(record::HTTP_URL),
                code: self.u32(record::HTTP_CODE),
            },
            _ => L7::None,
        }
    }
}

impl<'a> Endpoint<'a> {
    pub fn ip(&self) -> Option<IpAddr> {
        let start = self.flow.at + self.ip;
        let octets: [u8; 16] = self.flow.batch.get(start..start + 16)?.try_into().ok()?;
        let v6 = Ipv6Addr::from(octets);
        match self.flow.u8(record::IP_VERSION) {
            4 => v6.to_ipv4_mapped().map(IpAddr::V4),
            6 => Some(IpAddr::V6(v6)),
            _ => None,
        }
    }
    pub fn port(&self) -> u16 {
        self.flow.u16(self.port)
    }
    pub fn identity(&self) -> u32 {
        self.flow.u32(self.identity)
    }
    pub fn namespace(&self) -> &'a str {
        self.flow.str(self.strings + endpoint::NAMESPACE)
    }
    pub fn pod(&self) -> &'a str {
        self.flow.str(self.strings + endpoint::POD)
    }
    pub fn workload(&self) -> &'a str {
        self.flow.str(self.strings + endpoint::WORKLOAD)
    }
    pub fn workload_kind(&self) -> &'a str {
        self.flow.str(self.strings + endpoint::WORKLOAD_KIND)
    }
    /// Labels as Hubble writes them (`k8s:app=web`).
    pub fn labels(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        lines(self.flow.str(self.strings + endpoint::LABELS))
    }
    /// The value of label `key` (`app` finds `k8s:app=web`).
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels().find_map(|l| {
            let (_, kv) = l.split_once(':')?;
            let (k, v) = kv.split_once('=')?;
            (k == key).then_some(v)
        })
    }
    /// DNS names this address was resolved from.
    pub fn names(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        lines(self.flow.str(self.strings + endpoint::NAMES))
    }
}

fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.split('\n').filter(|l| !l.is_empty())
}
