//! IPv6 packets with real L4 checksums, and their checked parsing (IPv6 has no header
//! checksum: the addresses count through the L4 pseudo-header).

use std::net::{Ipv6Addr, SocketAddrV6};

use super::packet::{fold, sum16};

const TCP: u8 = 6;

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    sum16(&p, 0)
}

/// Ethernet + IPv6 + TCP (`flags`) or UDP with a valid L4 checksum.
pub fn packet6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
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
    if proto != TCP {
        let len = (l4.len() as u16).to_be_bytes();
        l4[4..6].copy_from_slice(&len);
    }
    let c = fold(sum16(&l4, pseudo6(src, dst, proto, l4.len())));
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut eth = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    eth.extend_from_slice(&[0x60, 0, 0, 0]);
    eth.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    eth.extend_from_slice(&[proto, 64]);
    eth.extend_from_slice(&src.octets());
    eth.extend_from_slice(&dst.octets());
    eth.extend_from_slice(&l4);
    eth
}

/// Source and destination of an IPv6 TCP/UDP packet, with its L4 checksum verified.
pub fn parse_checked6(p: &[u8]) -> (SocketAddrV6, SocketAddrV6) {
    let ip = &p[14..54];
    let octets = |at: usize| -> [u8; 16] { ip[at..at + 16].try_into().expect("16 bytes") };
    let src = Ipv6Addr::from(octets(8));
    let dst = Ipv6Addr::from(octets(24));
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let proto = ip[6];
    let l4 = &p[54..54 + len];
    assert_eq!(
        fold(sum16(l4, pseudo6(src, dst, proto, l4.len()))),
        0,
        "L4 checksum (proto {proto})"
    );
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    (
        SocketAddrV6::new(src, port(0), 0, 0),
        SocketAddrV6::new(dst, port(2), 0, 0),
    )
}

/// An ICMPv6 message's (source, destination, type, code, body after the 4 unused bytes),
/// with its checksum verified.
pub fn parse_icmpv6_checked(p: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, u8, Vec<u8>) {
    assert_eq!(&p[12..14], &[0x86, 0xdd], "an IPv6 frame");
    let ip = &p[14..54];
    assert_eq!(ip[6], 58, "ICMPv6");
    let octets = |at: usize| -> [u8; 16] { ip[at..at + 16].try_into().expect("16 bytes") };
    let src = Ipv6Addr::from(octets(8));
    let dst = Ipv6Addr::from(octets(24));
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let msg = &p[54..54 + len];
    assert_eq!(
        fold(sum16(msg, pseudo6(src, dst, 58, len))),
        0,
        "ICMPv6 checksum"
    );
    (src, dst, msg[0], msg[1], msg[8..].to_vec())
}
