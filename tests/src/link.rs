//! Links through iproute2: veth pairs, bridges, addresses, routes. Every
//! call runs `ip [-n NETNS] ...`, and errors include the command and its
//! stderr.

use std::net::Ipv4Addr;

use crate::cmd::{self, CmdError};
use crate::names::IFNAME_MAX;
use crate::netns::NetNs;

/// Errors about links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(transparent)]
    Command(#[from] CmdError),
}

/// `ip` bound to one network namespace (or to the caller's).
#[derive(Debug, Clone)]
pub struct Ip {
    netns: Option<String>,
}

impl Ip {
    /// `ip` in the caller's namespace. Tests should almost never need this:
    /// the host's links are not ours.
    pub fn current() -> Self {
        Self { netns: None }
    }

    /// `ip -n NAME` for one of our namespaces.
    pub fn netns(ns: &NetNs) -> Self {
        Self::named(ns.name())
    }

    /// `ip -n NAME` by namespace name.
    pub fn named(name: &str) -> Self {
        Self {
            netns: Some(name.to_owned()),
        }
    }

    /// Runs `ip [-n NS] args...`, returning stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, LinkError> {
        Ok(cmd::ip(self.netns.as_deref(), args)?)
    }

    /// Creates a veth pair `name` (here) <-> `peer`, the peer created directly
    /// in `peer_netns` when given (so no name ever appears in a third namespace).
    pub fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_netns: Option<&str>,
    ) -> Result<(), LinkError> {
        check_ifname(name)?;
        check_ifname(peer)?;
        let mut args = vec!["link", "add", name, "type", "veth", "peer", "name", peer];
        if let Some(ns) = peer_netns {
            args.extend(["netns", ns]);
        }
        self.run(&args)?;
        Ok(())
    }

    /// Moves `ifname` into another namespace.
    pub fn set_netns(&self, ifname: &str, target: &str) -> Result<(), LinkError> {
        self.run(&["link", "set", "dev", ifname, "netns", target])?;
        Ok(())
    }

    /// Renames a link (it must be down).
    pub fn rename(&self, ifname: &str, new_name: &str) -> Result<(), LinkError> {
        check_ifname(new_name)?;
        self.run(&["link", "set", "dev", ifname, "name", new_name])?;
        Ok(())
    }

    /// Sets a link up.
    pub fn set_up(&self, ifname: &str) -> Result<(), LinkError> {
        self.run(&["link", "set", "dev", ifname, "up"])?;
        Ok(())
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), LinkError> {
        self.run(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Adds `addr/prefix_len` to a link.
    pub fn add_address(
        &self,
        ifname: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), LinkError> {
        self.run(&[
            "addr",
            "add",
            &format!("{addr}/{prefix_len}"),
            "dev",
            ifname,
        ])?;
        Ok(())
    }

    /// Creates a bridge and sets it up.
    pub fn add_bridge(&self, name: &str) -> Result<(), LinkError> {
        check_ifname(name)?;
        self.run(&["link", "add", name, "type", "bridge"])?;
        self.set_up(name)
    }

    /// Attaches `ifname` to `bridge`.
    pub fn set_master(&self, ifname: &str, bridge: &str) -> Result<(), LinkError> {
        self.run(&["link", "set", "dev", ifname, "master", bridge])?;
        Ok(())
    }

    /// `ip route replace ARGS...` (idempotent).
    pub fn route_replace(&self, args: &[&str]) -> Result<(), LinkError> {
        let mut all = vec!["route", "replace"];
        all.extend_from_slice(args);
        self.run(&all)?;
        Ok(())
    }

    /// Deletes a link (its veth peer goes with it).
    pub fn delete(&self, ifname: &str) -> Result<(), LinkError> {
        self.run(&["link", "del", "dev", ifname])?;
        Ok(())
    }

    /// Whether a link exists.
    pub fn exists(&self, ifname: &str) -> bool {
        self.run(&["link", "show", "dev", ifname]).is_ok()
    }

    /// The link's MAC address.
    pub fn mac(&self, ifname: &str) -> Result<String, LinkError> {
        let out = self.run(&["-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        let mac = words
            .by_ref()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default();
        Ok(mac.to_owned())
    }
}

/// Checks a name against the kernel's rules for interface names.
pub fn check_ifname(name: &str) -> Result<(), LinkError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > IFNAME_MAX {
        Some("longer than 15 bytes (IFNAMSIZ)")
    } else if name.contains('/') || name.contains(':') || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LinkError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("lxc0123456789ab").is_ok());
        assert!(check_ifname("lxc0123456789abc").is_err());
        assert!(check_ifname("a b").is_err());
    }
}
