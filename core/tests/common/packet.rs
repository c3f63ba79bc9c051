//! IPv4 packets with real checksums, and their checked parsing, for BPF_PROG_TEST_RUN tests.

use std::net::{Ipv4Addr, SocketAddrV4};

const TCP: u8 = 6;
const UDP: u8 = 17;

pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    acc
}

pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

/// Ethernet + IPv4 + L4 with valid IP and L4 checksums.
pub fn packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let csum_at = if proto == TCP {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        16
    } else {
        l4.extend_from_slice(&[0, 13, 0, 0]);
        6
    };
    l4.extend_from_slice(b"hello");
    if proto == UDP {
        let len = (l4.len() as u16).to_be_bytes();
        l4[4..6].copy_from_slice(&len);
    }
    let c = fold(sum16(&l4, pseudo(src, dst, proto, l4.len())));
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());

    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);

    let mut eth = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    eth.extend_from_slice(&ip);
    eth
}

/// What a test needs to know about an IPv4 packet, with its checksums verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub proto: u8,
}

pub fn parse_checked(p: &[u8]) -> Parsed {
    let ip = &p[14..34];
    assert_eq!(fold(sum16(ip, 0)), 0, "IPv4 header checksum");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &p[34..14 + total];
    let proto = ip[9];
    let acc = if proto == 1 {
        0
    } else {
        pseudo(src, dst, proto, l4.len())
    };
    assert_eq!(fold(sum16(l4, acc)), 0, "L4 checksum (proto {proto})");
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    Parsed {
        src: SocketAddrV4::new(src, if proto == 1 { 0 } else { port(0) }),
        dst: SocketAddrV4::new(dst, if proto == 1 { 0 } else { port(2) }),
        proto,
    }
}

/// `p` (an IPv4 TCP packet from [`packet`]) with acknowledgment number `ack`, its TCP
/// checksum redone.
pub fn with_tcp_ack(mut p: Vec<u8>, ack: u32) -> Vec<u8> {
    p[42..46].copy_from_slice(&ack.to_be_bytes());
    p[50..52].fill(0);
    let src = Ipv4Addr::new(p[26], p[27], p[28], p[29]);
    let dst = Ipv4Addr::new(p[30], p[31], p[32], p[33]);
    let c = fold(sum16(&p[34..], pseudo(src, dst, TCP, p.len() - 34)));
    p[50..52].copy_from_slice(&c.to_be_bytes());
    p
}

/// `p` (from [`packet`]) with four bytes of IPv4 options (NOPs): a 24-byte header, its
/// length and checksum redone (the L4 checksum does not cover options).
pub fn with_ip_options(p: &[u8]) -> Vec<u8> {
    let mut out = p[..34].to_vec();
    out.extend_from_slice(&[1, 1, 1, 1]);
    out.extend_from_slice(&p[34..]);
    out[14] = 0x46;
    let total = u16::from_be_bytes([out[16], out[17]]) + 4;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[24..26].fill(0);
    let c = fold(sum16(&out[14..38], 0));
    out[24..26].copy_from_slice(&c.to_be_bytes());
    out
}
