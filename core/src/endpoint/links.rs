//! The pod's network interface: a veth pair from the node into the pod's namespace.
//!
//! Layout (the same as Calico's and close to Cilium's): the pod gets its address as a
//! /32 on `eth0` with a default route via the link-local router 169.254.1.1, whose
//! neighbour entry is pinned to the MAC of the node-side veth. The node routes the
//! pod's /32 to the node-side veth, where Porin's programs are attached.
//!
//! With dual stack (`enable_ipv6`) the pod also gets its IPv6 address as a /128 and a
//! default route via fe80::1, pinned the same way; the node routes the /128 to the veth
//! and finds the pod's MAC by neighbour discovery (which the pod programs let through).
//! Without it, IPv6 is disabled on both ends.
//!
//! Interfaces are made with iproute2 (`ip -batch`), whose errors name the failed line.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use thiserror::Error;

/// The link-local address pods use as their default gateway.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Its IPv6 counterpart (dual stack).
pub const POD_GATEWAY_V6: Ipv6Addr = crate::ipam_v6::POD_GATEWAY_V6;

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

/// The pod's addresses: IPv4 always, IPv6 with dual stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddrs {
    pub ipv4: Ipv4Addr,
    pub ipv6: Option<Ipv6Addr>,
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
///
/// Three `ip -batch` runs do it (node side, pod side, node side again), and the rest
/// (sysctls, index and MAC) goes through the kernel directly: a pod's interface costs
/// three processes, not fifteen.
pub fn create_pod_link(
    host: &str,
    netns: &Path,
    pod_ifname: &str,
    addr: PodAddrs,
) -> Result<HostLink, LinkError> {
    if !netns.exists() {
        return Err(LinkError::NoNetns(netns.display().to_string()));
    }
    let peer = format!("tmp{}", &host[3..]);
    let mut made = String::new();
    if link_exists(host) {
        made.push_str(&format!("link del {host}\n"));
    }
    made.push_str(&format!(
        "link add {host} type veth peer name {peer}\nlink set {peer} netns {}\n",
        netns_name_or_path(&netns.display().to_string())
    ));
    ip_batch(None, &made)?;
    let result = wire_pod_side(host, &peer, netns, pod_ifname, addr);
    if result.is_err() {
        // Leave nothing half made behind.
        let _ = ip(&["link", "del", host]);
    }
    result
}

fn wire_pod_side(
    host: &str,
    peer: &str,
    netns: &Path,
    pod_ifname: &str,
    addr: PodAddrs,
) -> Result<HostLink, LinkError> {
    write_host_sysctls(host, addr.ipv6.is_some())?;
    // IPv4-only pods: no link-local addresses, DAD or MLD chatter. Dual-stack pods: no
    // DAD (the address is ours alone), so it is usable at once.
    let (key, value) = match addr.ipv6 {
        None => ("disable_ipv6", "1"),
        Some(_) => ("accept_dad", "0"),
    };
    write_sysctl_in_netns(
        netns,
        format!("/proc/sys/net/ipv6/conf/{peer}/{key}"),
        value,
    )?;
    let link = inspect(host)?;
    let cidr = format!("{}/32", addr.ipv4);
    let gateway = POD_GATEWAY;
    let mac = &link.mac;
    let mut pod_side = format!(
        "link set {peer} name {pod_ifname}\n\
         link set lo up\n\
         addr replace {cidr} dev {pod_ifname}\n\
         link set {pod_ifname} up\n\
         neigh replace {gateway} lladdr {mac} dev {pod_ifname} nud permanent\n\
         route replace {gateway} dev {pod_ifname} scope link\n\
         route replace default via {gateway} dev {pod_ifname}\n"
    );
    let mut node_side = format!("link set {host} up\nroute replace {cidr} dev {host} scope link\n");
    if let Some(v6) = addr.ipv6 {
        let gateway = POD_GATEWAY_V6;
        pod_side.push_str(&format!(
            "addr replace {v6}/128 dev {pod_ifname} nodad\n\
             neigh replace {gateway} lladdr {mac} dev {pod_ifname} nud permanent\n\
             route replace default via {gateway} dev {pod_ifname}\n"
        ));
        node_side.push_str(&format!("route replace {v6}/128 dev {host}\n"));
    }
    ip_batch(Some(netns), &pod_side)?;
    ip_batch(None, &node_side)?;
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
    nix::net::if_::if_nametoindex(ifname).is_ok()
}

/// Index and MAC of a link in this network namespace (asked of the kernel, not of
/// `/sys`, which shows the namespace it was mounted in).
pub fn inspect(ifname: &str) -> Result<HostLink, LinkError> {
    let failed = |what: &'static str, message: String| LinkError::Inspect {
        what,
        ifname: ifname.to_string(),
        message,
    };
    let ifindex =
        nix::net::if_::if_nametoindex(ifname).map_err(|e| failed("ifindex", e.to_string()))?;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| failed("MAC address", e.to_string()))?;
    let mac = addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .ok_or_else(|| failed("MAC address", "no link-layer address".to_string()))?;
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(HostLink {
        ifname: ifname.to_string(),
        ifindex,
        mac,
    })
}

/// Writes a sysctl of another network namespace: from a short-lived thread that joins
/// it (`/proc/sys/net` follows the calling thread's namespace), so no process is spawned.
fn write_sysctl_in_netns(netns: &Path, path: String, value: &'static str) -> Result<(), LinkError> {
    let netns = netns.to_owned();
    let command = format!("write {value} to {path} in {}", netns.display());
    let written = std::thread::spawn(move || -> Result<(), String> {
        let ns = std::fs::File::open(&netns).map_err(|e| e.to_string())?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        std::fs::write(&path, value).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".to_string()));
    written.map_err(|stderr| LinkError::Command { command, stderr })
}

/// The node-side veth must not answer for addresses it does not own and must
/// forward; these are per-interface sysctls of the node's own namespace. With dual stack
/// it keeps IPv6 (its link-local address, without DAD, sources neighbour solicitations).
fn write_host_sysctls(host: &str, ipv6: bool) -> Result<(), LinkError> {
    let v6: &[(&str, &str, &str)] = if ipv6 {
        &[
            ("ipv6", "accept_dad", "0"),
            ("ipv6", "forwarding", "1"),
            ("ipv6", "disable_ipv6", "0"),
        ]
    } else {
        &[("ipv6", "disable_ipv6", "1")]
    };
    for &(family, key, value) in [("ipv4", "rp_filter", "0"), ("ipv4", "forwarding", "1")]
        .iter()
        .chain(v6)
    {
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

/// Runs `commands` (one per line) with `ip -batch -`, in `netns` when given (through
/// `nsenter`, which keeps this process' `/sys` out of it). The first failing line stops
/// the batch; its error names the line.
fn ip_batch(netns: Option<&Path>, commands: &str) -> Result<String, LinkError> {
    let mut args: Vec<String> = Vec::new();
    let program = match netns {
        Some(ns) => {
            args.push(format!("--net={}", ns.display()));
            args.push("ip".to_string());
            "nsenter"
        }
        None => "ip",
    };
    args.extend(["-batch".to_string(), "-".to_string()]);
    run_with_input(program, &args, commands)
}

fn ip(args: &[&str]) -> Result<String, LinkError> {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    run("ip", &owned)
}

fn run(program: &str, args: &[String]) -> Result<String, LinkError> {
    run_with_input(program, args, "")
}

fn run_with_input(program: &str, args: &[String], input: &str) -> Result<String, LinkError> {
    use std::io::Write;
    let command = if input.is_empty() {
        format!("{program} {}", args.join(" "))
    } else {
        format!("{program} {} <<< {:?}", args.join(" "), input.trim_end())
    };
    let spawn_error = |source| LinkError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
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
