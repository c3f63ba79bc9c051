//! The datapath's Maglev flow hashes, mirrored (`bpf/lib/lb_pick.h`, `lb.h`, `lb6.h`): a
//! test predicts from them which table slot a connection lands on.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `lb_hash_word` (Murmur3's block step).
pub fn hash_word(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// `lb_hash_final` (Murmur3's finalizer).
pub fn hash_final(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `lb_hash_addr6`: an IPv6 address as four words, as in memory.
pub fn hash_addr6(mut h: u32, addr: Ipv6Addr) -> u32 {
    for w in addr.octets().chunks_exact(4) {
        h = hash_word(h, u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    h
}

/// The ports and protocol words both tuple hashes end with, then the finalizer.
fn ports_and_proto(h: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let h = hash_word(h, (u32::from(sport) << 16) | u32::from(dport));
    hash_final(hash_word(h, u32::from(proto)))
}

/// `lb_tuple_hash` of `bpf/lib/lb.h`.
pub fn tuple_hash(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> u32 {
    let h = hash_word(0, u32::from_ne_bytes(src.octets()));
    let h = hash_word(h, u32::from_ne_bytes(dst.octets()));
    ports_and_proto(h, sport, dport, proto)
}

/// `lb6_tuple_hash` of `bpf/lib/lb6.h`.
pub fn tuple_hash6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, proto: u8) -> u32 {
    let h = hash_addr6(hash_addr6(0, src), dst);
    ports_and_proto(h, sport, dport, proto)
}
