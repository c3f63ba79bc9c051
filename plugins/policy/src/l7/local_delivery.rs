//! The node routing rule that delivers packets handed to the L7 proxy's socket
//! locally (ingress redirection, `bpf/lib/proxy.h`): packets marked
//! `0x200/0xf00` look up table 2004, whose only route is `local 0.0.0.0/0 dev
//! lo`. Cilium installs the same rule and table for its proxy; without them the
//! node would forward the packet to the pod it is addressed to, and the kernel
//! drops a forwarded packet that carries a socket.
//!
//! TCP early demultiplexing is turned off in the node's namespace
//! (`net.ipv4.tcp_early_demux = 0`): with it, a client's packet entering the node
//! would be matched to the proxy's transparent socket (same addresses) before
//! routing and dropped on its way to the pod, instead of reaching the pod program
//! that hands it to the proxy. The cost is one route lookup per received TCP
//! packet of the node's own sockets.

use std::process::Command;

use thiserror::Error;

/// `ip rule` priority, table and mark of the rule (Cilium's values).
const RULE_PRIORITY: &str = "9";
const TABLE: &str = "2004";
const FWMARK: &str = "0x200/0xf00";

/// Written to turn early demultiplexing off.
const EARLY_DEMUX: &str = "/proc/sys/net/ipv4/tcp_early_demux";

/// The rule, the route or the sysctl could not be installed.
#[derive(Debug, Error)]
pub enum LocalDeliveryError {
    #[error("L7 proxy: `ip {command}` failed: {stderr}")]
    Ip { command: String, stderr: String },
    #[error("L7 proxy: writing 0 to {EARLY_DEMUX}: {0}")]
    EarlyDemux(#[source] std::io::Error),
}

fn ip(args: &[&str]) -> Result<String, LocalDeliveryError> {
    let command = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LocalDeliveryError::Ip {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LocalDeliveryError::Ip {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Installs (or keeps) the rule and the route in the calling process' network
/// namespace (the node's), and turns early demultiplexing off. Idempotent: a restarted agent finds them in place and
/// leaves them, so redirected connections are never without the rule.
pub fn install_local_delivery() -> Result<(), LocalDeliveryError> {
    std::fs::write(EARLY_DEMUX, "0").map_err(LocalDeliveryError::EarlyDemux)?;
    ip(&[
        "-4",
        "route",
        "replace",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        TABLE,
    ])?;
    let present = ip(&["-4", "rule", "show", "priority", RULE_PRIORITY])?;
    if present.contains(&format!("lookup {TABLE}")) {
        return Ok(());
    }
    ip(&[
        "-4",
        "rule",
        "add",
        "fwmark",
        FWMARK,
        "lookup",
        TABLE,
        "priority",
        RULE_PRIORITY,
    ])
    .map(drop)
}
