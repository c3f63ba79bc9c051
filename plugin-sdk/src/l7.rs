//! L7 records: what the policy plugin's HTTP and DNS proxies saw, handed to the
//! observe plugin (through the context) to become Hubble flows of type L7.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Direction, Verdict};

/// Request or response (Hubble's `L7FlowType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum L7Kind {
    Request,
    Response,
}

/// One HTTP request or response seen by the L7 proxy, or (with `dns`) one DNS query
/// or answer seen by the DNS proxy (the HTTP fields are then empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Record {
    pub time: SystemTime,
    pub kind: L7Kind,
    /// The client's address.
    pub src: SocketAddr,
    /// The original destination (the server the client connected to).
    pub dst: SocketAddr,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// `ToEndpoint` when the destination's ingress rules sent the request to
    /// the proxy (Hubble's INGRESS, reporter `server`), `FromEndpoint` for the
    /// source's egress rules (EGRESS, reporter `client`).
    pub direction: Direction,
    /// `Dropped` when the request was denied by the HTTP rules (answered 403).
    pub verdict: Verdict,
    pub method: String,
    /// `http://host/path?query`.
    pub url: String,
    /// `HTTP/1.1`.
    pub protocol: String,
    /// Status code (responses only; 0 on requests).
    pub code: u16,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Request to response (responses only).
    pub latency_ns: u64,
    /// The trace id of a W3C `traceparent` request header.
    pub trace_id: Option<String>,
    /// A DNS query (request) or answer (response) instead of HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRecord>,
}

/// What the DNS proxy saw (Hubble's `flow.DNS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The question's name, lower case, with its trailing dot (`api.example.com.`).
    pub query: String,
    /// The question's type (`A`, `AAAA`, ...).
    pub qtypes: Vec<String>,
    /// Answers: the addresses of the question's CNAME chain.
    pub ips: Vec<std::net::IpAddr>,
    /// Answers: the lowest TTL of the chain's records.
    pub ttl: u32,
    /// Answers: the CNAME targets of the chain, with trailing dots.
    pub cnames: Vec<String>,
    /// Answers: the response code (0 NOERROR, 3 NXDOMAIN, 5 REFUSED, ...).
    pub rcode: u16,
    /// Answers: the types of the answer records (`CNAME`, `A`, ...).
    pub rrtypes: Vec<String>,
    /// Over TCP (else UDP).
    pub tcp: bool,
}
