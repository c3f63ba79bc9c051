//! The pod's network interface: a veth pair from the node into the pod's namespace.
//!
//! Layout (the same as Calico's and close to Cilium's): the pod gets its address as a
//! /32 on `eth0` with a default route via the link-local router 169.254.1.1, whose
//! neighbour entry is pinned to the MAC of the node-side veth. The node routes the
//! pod's /32 to the node-side veth, where Porin's programs are attached.
//!
//! Interfaces are made with iproute2 (`ip`), whose errors name the failed command.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use thiserror::Error;

/// The link-local address pods use as their default gateway.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A failed step while wiring a pod's interface.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source} (is iproute2 installed? `make deps`)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {0} does not exist")]
    NoNetns(String),
    #[error("cannot read {what} of {ifname}: {message}")]
    Inspect {
        what: &'static str,
        ifname: String,
        message: String,
    },
}

/// The node side of a pod's veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub ifname: String,
    pub ifindex: u32,
    pub mac: String,
}

/// Node-side interface name for a pod: `lxc` + 11 hex digits of a hash of the pod's
/// key, so it is stable across agent restarts and fits IFNAMSIZ.
pub fn host_ifname(namespace: &str, pod: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain([b'/']).chain(pod.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("lxc{:011x}", hash & 0xfff_ffff_ffff)
}

/// Create the veth pair, move one end into `netns` as `pod_ifname` with `ip`/32,
/// and route `ip` to the node-side end. Idempotent: an existing pair is replaced.
pub fn create_pod_link(
    host: &str,
    netns: &Path,
    pod_ifname: &str,
    addr: Ipv4Addr,
) -> Result<HostLink, LinkError> {
    if !netns.exists() {
        return Err(LinkError::NoNetns(netns.display().to_string()));
    }
    let netns_arg = netns.display().to_string();
    if link_exists(host) {
        ip(&["link", "del", host])?;
    }
    let peer = format!("tmp{}", &host[3..]);
    ip(&["link", "add", host, "type", "veth", "peer", "name", &peer])?;
    let result = wire_pod_side(host, &peer, &netns_arg, pod_ifname, addr);
    if result.is_err() {
        // Leave nothing half made behind.
        let _ = ip(&["link", "del", host]);
    }
    result
}

fn wire_pod_side(
    host: &str,
    peer: &str,
    netns: &str,
    pod_ifname: &str,
    addr: Ipv4Addr,
) -> Result<HostLink, LinkError> {
    let pid_free_netns = netns_name_or_path(netns);
    ip(&["link", "set", peer, "netns", &pid_free_netns])?;
    write_host_sysctls(host)?;
    // Pods are IPv4-only for now: no link-local addresses, DAD or MLD chatter.
    run(
        "nsenter",
        &[
            format!("--net={netns}"),
            "sysctl".to_string(),
            "-qw".to_string(),
            format!("net.ipv6.conf.{peer}.disable_ipv6=1"),
        ],
    )?;
    ip(&["link", "set", host, "up"])?;
    let link = inspect(host)?;

    let cidr = format!("{addr}/32");
    let gateway = POD_GATEWAY.to_string();
    in_netns(netns, &["link", "set", peer, "name", pod_ifname])?;
    in_netns(netns, &["link", "set", "lo", "up"])?;
    in_netns(netns, &["addr", "replace", &cidr, "dev", pod_ifname])?;
    in_netns(netns, &["link", "set", pod_ifname, "up"])?;
    in_netns(
        netns,
        &[
            "neigh",
            "replace",
            &gateway,
            "lladdr",
            &link.mac,
            "dev",
            pod_ifname,
            "nud",
            "permanent",
        ],
    )?;
    in_netns(
        netns,
        &[
            "route", "replace", &gateway, "dev", pod_ifname, "scope", "link",
        ],
    )?;
    in_netns(
        netns,
        &[
            "route", "replace", "default", "via", &gateway, "dev", pod_ifname,
        ],
    )?;
    ip(&["route", "replace", &cidr, "dev", host, "scope", "link"])?;
    Ok(link)
}

/// Remove the pod's veth (both ends go) and its route. Missing links are fine.
pub fn delete_pod_link(host: &str) -> Result<(), LinkError> {
    if link_exists(host) {
        ip(&["link", "del", host])?;
    }
    Ok(())
}

/// Whether `ifname` exists in this network namespace.
pub fn link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Index and MAC of a link in this network namespace.
pub fn inspect(ifname: &str) -> Result<HostLink, LinkError> {
    let out = ip(&["-j", "link", "show", "dev", ifname])?;
    let parsed: serde_json::Value = serde_json::from_str(&out).map_err(|e| LinkError::Inspect {
        what: "link",
        ifname: ifname.to_string(),
        message: e.to_string(),
    })?;
    let entry = parsed.get(0).ok_or_else(|| LinkError::Inspect {
        what: "link",
        ifname: ifname.to_string(),
        message: "empty answer".to_string(),
    })?;
    let ifindex = entry
        .get("ifindex")
        .and_then(serde_json::Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| LinkError::Inspect {
            what: "ifindex",
            ifname: ifname.to_string(),
            message: out.clone(),
        })?;
    let mac = entry
        .get("address")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| LinkError::Inspect {
            what: "MAC address",
            ifname: ifname.to_string(),
            message: out.clone(),
        })?
        .to_string();
    Ok(HostLink {
        ifname: ifname.to_string(),
        ifindex,
        mac,
    })
}

/// The node-side veth must not answer for addresses it does not own and must
/// forward; these are per-interface sysctls of the node's own namespace.
fn write_host_sysctls(host: &str) -> Result<(), LinkError> {
    for (family, key, value) in [
        ("ipv4", "rp_filter", "0"),
        ("ipv4", "forwarding", "1"),
        ("ipv6", "disable_ipv6", "1"),
    ] {
        let path = format!("/proc/sys/net/{family}/conf/{host}/{key}");
        std::fs::write(&path, value).map_err(|e| LinkError::Command {
            command: format!("write {value} to {path}"),
            stderr: e.to_string(),
        })?;
    }
    Ok(())
}

/// `ip link set X netns` takes a name under /run/netns or a pid; for other paths
/// (e.g. a container runtime's) it also accepts the path itself on recent iproute2.
fn netns_name_or_path(netns: &str) -> String {
    for dir in ["/run/netns/", "/var/run/netns/"] {
        if let Some(name) = netns.strip_prefix(dir) {
            return name.to_string();
        }
    }
    netns.to_string()
}

fn in_netns(netns: &str, args: &[&str]) -> Result<String, LinkError> {
    let mut full = vec!["--net=".to_string() + netns, "ip".to_string()];
    full.extend(args.iter().map(|a| (*a).to_string()));
    run("nsenter", &full)
}

fn ip(args: &[&str]) -> Result<String, LinkError> {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    run("ip", &owned)
}

fn run(program: &str, args: &[String]) -> Result<String, LinkError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LinkError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LinkError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_and_fits_ifnamsiz() {
        let a = host_ifname("payments", "payments-api");
        assert_eq!(a, host_ifname("payments", "payments-api"));
        assert_ne!(a, host_ifname("payments", "postgres"));
        assert!(a.len() <= 15, "{a} is longer than IFNAMSIZ-1");
        assert!(a.starts_with("lxc"));
    }

    #[test]
    fn netns_paths_become_names() {
        assert_eq!(netns_name_or_path("/run/netns/pod-a"), "pod-a");
        assert_eq!(netns_name_or_path("/var/run/netns/cni-1"), "cni-1");
        assert_eq!(netns_name_or_path("/proc/42/ns/net"), "/proc/42/ns/net");
    }
}
