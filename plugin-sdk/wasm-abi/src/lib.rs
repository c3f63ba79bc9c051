//! The core-module ABI of `porin:flow@0.1.0` (see `wit/porin-flow.wit` and
//! `docs/wasm.md`): export and import names, the batch header and the flow
//! record layout. The host (`porin-wasm`) writes batches with these offsets and
//! the guest SDK (`porin-wasm-guest`) reads them; the C header
//! (`plugin-sdk/wasm-guest/c/porin_flow.h`) repeats them and a test checks it.
//!
//! Everything is little-endian. String fields are `(offset, length)` pairs of
//! `u32`, the offset relative to the start of the batch.

#![no_std]

/// The contract's semantic version.
pub const VERSION: (u32, u32, u32) = (0, 1, 0);

/// The versioned export every module has: `() -> i32`, returning its kind
/// ([`KIND_FILTER`] or [`KIND_LABELLER`]). A module built for another
/// contract version exports `porin_flow_<major>_<minor>` instead.
pub const EXPORT_VERSION: &str = "porin_flow_0_1";
/// Prefix of the versioned export, to name a module's version when it differs.
pub const EXPORT_VERSION_PREFIX: &str = "porin_flow_";
/// `(len: i32) -> i32`: the guest allocates the host's batch buffer.
pub const EXPORT_ALLOC: &str = "porin_alloc";
/// `(config_ptr: i32, config_len: i32) -> i32`: 0 when the module is ready.
pub const EXPORT_INIT: &str = "porin_init";
/// `(batch_ptr: i32) -> i32` for filters: one result byte per flow.
pub const EXPORT_FILTER: &str = "porin_filter";
/// `(batch_ptr: i32) -> i32` for labellers: labels through [`IMPORT_SET_LABEL`].
pub const EXPORT_LABEL: &str = "porin_label";
/// The guest's memory.
pub const EXPORT_MEMORY: &str = "memory";

/// The import module of the host functions.
pub const IMPORT_MODULE: &str = "porin";
/// `(level: i32, ptr: i32, len: i32)`: a log line (0 error .. 4 trace).
pub const IMPORT_LOG: &str = "log";
/// `(name_ptr: i32, name_len: i32) -> i32`: during `porin_init`, a labeller
/// declares one label name.
pub const IMPORT_DECLARE_LABEL: &str = "declare_label";
/// `(flow: i32, name_ptr, name_len, value_ptr, value_len) -> i32`: during
/// `porin_label`, the value of a declared label for flow number `flow`.
pub const IMPORT_SET_LABEL: &str = "set_label";

/// Kinds returned by the versioned export.
pub const KIND_FILTER: i32 = 1;
pub const KIND_LABELLER: i32 = 2;

/// Batch header, at the batch pointer.
pub mod header {
    /// `u32`: flows in the batch.
    pub const COUNT: usize = 0;
    /// `u32`: bytes per record ([`super::record::SIZE`]).
    pub const RECORD_SIZE: usize = 4;
    /// `u32`: offset of the first record.
    pub const RECORDS: usize = 8;
    /// `u32`: offset of the results (filters: one byte per flow, 1 keeps).
    pub const RESULTS: usize = 12;
    /// `u32`: length of the whole batch (header, records, results, strings).
    pub const LENGTH: usize = 16;
    /// Header size; records follow.
    pub const SIZE: usize = 24;
}

/// One flow record. Enumerations carry Hubble's numbers (`flow.proto`).
pub mod record {
    /// `u64`: nanoseconds since the Unix epoch.
    pub const TIME_NS: usize = 0;
    /// `u32`: drop reason (Cilium's code), 0 when not dropped.
    pub const DROP_REASON: usize = 8;
    /// `u8`: `Verdict` (1 forwarded, 2 dropped, ...).
    pub const VERDICT: usize = 12;
    /// `u8`: `TrafficDirection` (1 ingress, 2 egress).
    pub const DIRECTION: usize = 13;
    /// `u8`: 4, 6 or 0.
    pub const IP_VERSION: usize = 14;
    /// `u8`: IANA protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6), 0 unknown.
    pub const PROTOCOL: usize = 15;
    /// `u16` each.
    pub const SOURCE_PORT: usize = 16;
    pub const DESTINATION_PORT: usize = 18;
    /// `u16`: [`super::tcp`] bits.
    pub const TCP_FLAGS: usize = 20;
    /// `u8`: 0 unknown, 1 request, 2 reply.
    pub const IS_REPLY: usize = 22;
    /// `u8`: [`super::l7`] kind.
    pub const L7: usize = 23;
    /// 16 bytes each; IPv4 as `::ffff:a.b.c.d`.
    pub const SOURCE_IP: usize = 24;
    pub const DESTINATION_IP: usize = 40;
    /// `u32` each: security identities.
    pub const SOURCE_IDENTITY: usize = 56;
    pub const DESTINATION_IDENTITY: usize = 60;
    /// `u32`: DNS rcode when `L7` is DNS.
    pub const DNS_RCODE: usize = 64;
    /// `u32`: HTTP status code when `L7` is HTTP (0 for a request).
    pub const HTTP_CODE: usize = 68;
    /// String fields, 8 bytes each (`u32` offset, `u32` length).
    pub const SOURCE: usize = 72;
    pub const DESTINATION: usize = 120;
    pub const NODE: usize = 168;
    pub const DNS_QUERY: usize = 176;
    pub const HTTP_METHOD: usize = 184;
    pub const HTTP_URL: usize = 192;
    /// Record size.
    pub const SIZE: usize = 200;
}

/// String fields of an endpoint, relative to [`record::SOURCE`] or
/// [`record::DESTINATION`]. Lists (`LABELS`, `NAMES`) are joined with `\n`.
pub mod endpoint {
    pub const NAMESPACE: usize = 0;
    pub const POD: usize = 8;
    pub const WORKLOAD: usize = 16;
    pub const WORKLOAD_KIND: usize = 24;
    /// Labels as Hubble writes them (`k8s:app=web`), one per line.
    pub const LABELS: usize = 32;
    /// DNS names the address was resolved from, one per line.
    pub const NAMES: usize = 40;
    pub const SIZE: usize = 48;
}

/// TCP flag bits.
pub mod tcp {
    pub const FIN: u16 = 1;
    pub const SYN: u16 = 2;
    pub const RST: u16 = 4;
    pub const PSH: u16 = 8;
    pub const ACK: u16 = 16;
    pub const URG: u16 = 32;
    pub const ECE: u16 = 64;
    pub const CWR: u16 = 128;
    pub const NS: u16 = 256;
}

/// L7 kinds.
pub mod l7 {
    pub const NONE: u8 = 0;
    pub const DNS: u8 = 1;
    pub const HTTP: u8 = 2;
}

/// Hubble's verdicts and directions used by the SDKs.
pub mod verdict {
    pub const FORWARDED: u8 = 1;
    pub const DROPPED: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const AUDIT: u8 = 4;
    pub const REDIRECTED: u8 = 5;
    pub const TRACED: u8 = 6;
    pub const TRANSLATED: u8 = 7;
}

pub mod direction {
    pub const UNKNOWN: u8 = 0;
    pub const INGRESS: u8 = 1;
    pub const EGRESS: u8 = 2;
}

/// Most labels one labeller may declare.
pub const MAX_LABELS: usize = 8;
/// Longest label value the host accepts, in bytes.
pub const MAX_LABEL_VALUE: usize = 128;

/// Read a little-endian `u32` at `at` (a helper both sides use).
pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// Read a little-endian `u16` at `at`.
pub fn read_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = buf.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_overlap_and_fit_the_record() {
        let mut fields = [
            (record::TIME_NS, 8),
            (record::DROP_REASON, 4),
            (record::VERDICT, 1),
            (record::DIRECTION, 1),
            (record::IP_VERSION, 1),
            (record::PROTOCOL, 1),
            (record::SOURCE_PORT, 2),
            (record::DESTINATION_PORT, 2),
            (record::TCP_FLAGS, 2),
            (record::IS_REPLY, 1),
            (record::L7, 1),
            (record::SOURCE_IP, 16),
            (record::DESTINATION_IP, 16),
            (record::SOURCE_IDENTITY, 4),
            (record::DESTINATION_IDENTITY, 4),
            (record::DNS_RCODE, 4),
            (record::HTTP_CODE, 4),
            (record::SOURCE, endpoint::SIZE),
            (record::DESTINATION, endpoint::SIZE),
            (record::NODE, 8),
            (record::DNS_QUERY, 8),
            (record::HTTP_METHOD, 8),
            (record::HTTP_URL, 8),
        ];
        fields.sort();
        let mut end = 0;
        for (at, len) in fields {
            assert_eq!(at, end, "gap or overlap at {at}");
            end = at + len;
        }
        assert_eq!(end, record::SIZE);
        assert_eq!(record::SIZE % 8, 0);
    }

    #[test]
    fn little_endian_reads() {
        let buf = [1, 2, 3, 4];
        assert_eq!(read_u32(&buf, 0), 0x0403_0201);
        assert_eq!(read_u16(&buf, 2), 0x0403);
        assert_eq!(read_u32(&buf, 2), 0, "out of bounds reads zero");
    }
}
