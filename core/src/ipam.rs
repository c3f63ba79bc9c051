//! Host-scope IPAM: pod addresses from this node's IPv4 pod CIDR.
//!
//! The network address, the broadcast address and the first host address (the
//! node's router IP, on the host side of every pod's default route) are never
//! handed out. After an agent restart, endpoints re-register their addresses with
//! [`Ipam::restore`] before new allocations are served.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use thiserror::Error;
use tracing::debug;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("pod CIDR {cidr} is exhausted ({capacity} addresses in use)")]
    Exhausted { cidr: Ipv4Net, capacity: usize },
    #[error("{ip} is not allocatable from pod CIDR {cidr}")]
    OutOfRange { ip: Ipv4Addr, cidr: Ipv4Net },
    #[error("{ip} is already allocated to {owner}")]
    InUse { ip: Ipv4Addr, owner: String },
    #[error("{ip} is not allocated")]
    NotAllocated { ip: Ipv4Addr },
    #[error("pod CIDR {cidr} is too small (at most /30)")]
    TooSmall { cidr: Ipv4Net },
}

/// Allocator of pod IPs for one node.
#[derive(Debug, Clone)]
pub struct Ipam {
    cidr: Ipv4Net,
    /// First and last allocatable addresses, as integers.
    first: u32,
    last: u32,
    allocated: BTreeMap<u32, String>,
    /// Where the next search starts: addresses are reused as late as possible, so
    /// a restarted pod seldom gets the address of one that just went away.
    next: u32,
}

impl Ipam {
    pub fn new(cidr: Ipv4Net) -> Result<Self, IpamError> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(IpamError::TooSmall { cidr });
        }
        let network = u32::from(cidr.network());
        let broadcast = u32::from(cidr.broadcast());
        let first = network + 2;
        Ok(Self {
            cidr,
            first,
            last: broadcast - 1,
            allocated: BTreeMap::new(),
            next: first,
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The node's router IP: the first host address of the CIDR.
    pub fn router_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.first - 1)
    }

    /// How many addresses can be handed out in total.
    pub fn capacity(&self) -> usize {
        (self.last - self.first + 1) as usize
    }

    pub fn in_use(&self) -> usize {
        self.allocated.len()
    }

    /// Hand out a free address to `owner` (e.g. `namespace/pod`).
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if self.allocated.len() >= self.capacity() {
            return Err(IpamError::Exhausted {
                cidr: self.cidr,
                capacity: self.capacity(),
            });
        }
        let mut candidate = self.next;
        loop {
            if !self.allocated.contains_key(&candidate) {
                break;
            }
            candidate = if candidate >= self.last {
                self.first
            } else {
                candidate + 1
            };
        }
        self.allocated.insert(candidate, owner.to_string());
        self.next = if candidate >= self.last {
            self.first
        } else {
            candidate + 1
        };
        let ip = Ipv4Addr::from(candidate);
        debug!(%ip, owner, "allocated pod IP");
        Ok(ip)
    }

    /// Give `ip` back.
    pub fn release(&mut self, ip: Ipv4Addr) -> Result<String, IpamError> {
        self.allocated
            .remove(&u32::from(ip))
            .ok_or(IpamError::NotAllocated { ip })
    }

    /// Re-register an address after a restart. Restoring the same owner twice is
    /// fine; another owner is an error.
    pub fn restore(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        let n = u32::from(ip);
        if n < self.first || n > self.last {
            return Err(IpamError::OutOfRange {
                ip,
                cidr: self.cidr,
            });
        }
        match self.allocated.get(&n) {
            Some(existing) if existing != owner => Err(IpamError::InUse {
                ip,
                owner: existing.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                self.allocated.insert(n, owner.to_string());
                Ok(())
            }
        }
    }

    /// The owner of `ip`, if allocated.
    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.allocated.get(&u32::from(ip)).map(String::as_str)
    }

    /// Allocated addresses and their owners, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = (Ipv4Addr, &str)> {
        self.allocated
            .iter()
            .map(|(ip, owner)| (Ipv4Addr::from(*ip), owner.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(cidr: &str) -> Ipam {
        Ipam::new(cidr.parse().expect("cidr")).expect("ipam")
    }

    #[test]
    fn skips_network_router_and_broadcast() {
        let mut ipam = ipam("10.0.0.0/29");
        assert_eq!(ipam.router_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ipam.capacity(), 5);
        let ips: Vec<_> = (0..5)
            .map(|i| ipam.allocate(&format!("pod-{i}")).expect("free"))
            .collect();
        assert_eq!(ips.first(), Some(&Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(ips.last(), Some(&Ipv4Addr::new(10, 0, 0, 6)));
        let err = ipam.allocate("one-too-many").expect_err("full");
        assert_eq!(
            err.to_string(),
            "pod CIDR 10.0.0.0/29 is exhausted (5 addresses in use)"
        );
    }

    #[test]
    fn release_and_reuse() {
        let mut ipam = ipam("10.0.0.0/30");
        let ip = ipam.allocate("a").expect("free");
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 2));
        assert!(ipam.allocate("b").is_err());
        assert_eq!(ipam.release(ip), Ok("a".to_string()));
        assert_eq!(ipam.release(ip), Err(IpamError::NotAllocated { ip }));
        assert_eq!(ipam.allocate("b"), Ok(ip));
    }

    #[test]
    fn restore_after_restart() {
        let mut ipam = ipam("10.244.1.0/24");
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        ipam.restore(ip, "ns/web").expect("restore");
        ipam.restore(ip, "ns/web").expect("idempotent");
        assert!(matches!(
            ipam.restore(ip, "ns/db"),
            Err(IpamError::InUse { .. })
        ));
        for bad in [
            [10, 244, 1, 0],
            [10, 244, 1, 1],
            [10, 244, 1, 255],
            [10, 0, 0, 9],
        ] {
            assert!(matches!(
                ipam.restore(Ipv4Addr::from(bad), "x"),
                Err(IpamError::OutOfRange { .. })
            ));
        }
        assert_eq!(ipam.owner(ip), Some("ns/web"));
        let fresh: Vec<_> = (0..10).map(|_| ipam.allocate("p").expect("free")).collect();
        assert!(!fresh.contains(&ip));
        assert_eq!(ipam.in_use(), 11);
    }

    #[test]
    fn tiny_cidr_rejected() {
        assert!(matches!(
            Ipam::new("10.0.0.0/31".parse().expect("cidr")),
            Err(IpamError::TooSmall { .. })
        ));
    }
}
