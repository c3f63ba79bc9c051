//! IPv6 pod addresses (dual stack, `[agent] enable_ipv6`).
//!
//! A pod's IPv6 address is derived from its IPv4 one: the host part of the IPv4
//! address within the IPv4 pod CIDR, placed in the IPv6 pod CIDR
//! (10.200.1.5 in 10.200.1.0/24 -> fd00:10:1::5 in fd00:10:1::/64). One allocation
//! (and one record on disk) serves both families, a restarted agent finds the same
//! address, and the configuration check guarantees the IPv6 CIDR has room for every
//! IPv4 host part.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The IPv6 address that goes with `v4` (an address of `v4_cidr`) in `v6_cidr`.
pub fn ipv6_of(v4: Ipv4Addr, v4_cidr: Ipv4Net, v6_cidr: Ipv6Net) -> Ipv6Addr {
    let host = u32::from(v4) & !u32::from(v4_cidr.netmask());
    Ipv6Addr::from(u128::from(v6_cidr.network()) | u128::from(host))
}

/// The link-local address pods use as their IPv6 default gateway (the node side
/// of the veth answers for it through a permanent neighbour entry in the pod).
pub const POD_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_carries_over() {
        let v4: Ipv4Net = "10.200.1.0/24".parse().expect("v4");
        let v6: Ipv6Net = "fd00:10:1::/64".parse().expect("v6");
        assert_eq!(
            ipv6_of(Ipv4Addr::new(10, 200, 1, 5), v4, v6),
            "fd00:10:1::5".parse::<Ipv6Addr>().expect("addr")
        );
        assert_eq!(
            ipv6_of(Ipv4Addr::new(10, 200, 1, 254), v4, v6),
            "fd00:10:1::fe".parse::<Ipv6Addr>().expect("addr")
        );
        let wide: Ipv4Net = "10.0.0.0/16".parse().expect("v4");
        assert_eq!(
            ipv6_of(Ipv4Addr::new(10, 0, 3, 7), wide, v6),
            "fd00:10:1::307".parse::<Ipv6Addr>().expect("addr")
        );
    }
}
