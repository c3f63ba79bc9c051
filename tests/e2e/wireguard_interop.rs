//! Interoperability: Porin's userspace WireGuard device (`porin wireguard`, gotatun) and
//! Debian's `wireguard-go`, each in its own network namespace joined by a veth, both
//! configured only with `wg` through their control sockets in /var/run/wireguard.
//!
//! First Porin's side initiates the handshake (ping from its side), then the peers are
//! removed and set again on both sides (no session left) and wireguard-go initiates.
//! Each direction must complete a handshake and carry packets both ways, large ones
//! (near the tunnel MTU) included. Interface names carry a per-process suffix: the
//! control sockets are shared by every namespace on the machine.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_root, porin_bin, wait_for};
use porin_testbed::names::unique_id;
use porin_testbed::{Ip, NetNs};

const PORIN_ADDR: &str = "10.77.1.1";
const GO_ADDR: &str = "10.77.2.1";

/// One side: a namespace with an underlay address and a userspace device.
struct Side {
    ns: NetNs,
    device: String,
    underlay: &'static str,
    port: u16,
    key_file: tempfile::NamedTempFile,
    public_key: String,
    child: Option<Child>,
}

impl Side {
    fn new(ns: NetNs, device: String, underlay: &'static str, port: u16) -> Self {
        let private = wg(&["genkey"], None);
        let public_key = wg(&["pubkey"], Some(&private)).trim().to_string();
        let key_file = tempfile::NamedTempFile::new().expect("key file");
        std::fs::write(key_file.path(), private.trim()).expect("write key");
        Self {
            ns,
            device,
            underlay,
            port,
            key_file,
            public_key,
            child: None,
        }
    }

    fn start(&mut self, mut command: Command) {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(self.ns.spawn(command).expect("start the device"));
        let socket = Path::new("/var/run/wireguard").join(format!("{}.sock", self.device));
        let answered = wait_for(Duration::from_secs(10), || {
            (socket.exists() && self.wg_ok(&["show", &self.device, "public-key"])).then_some(())
        });
        assert!(
            answered.is_some(),
            "{} never answered on {socket:?}",
            self.device
        );
        let key = self.key_file.path().display().to_string();
        let port = self.port.to_string();
        self.run(
            "wg",
            &[
                "set",
                &self.device,
                "private-key",
                &key,
                "listen-port",
                &port,
            ],
        );
        self.run("ip", &["link", "set", &self.device, "mtu", "1420", "up"]);
    }

    /// Route `cidr` through the device to `peer`, with this side's tunnel address.
    fn tunnel_to(&self, peer: &Side, address: &str, cidr: &str) {
        self.run(
            "ip",
            &["addr", "add", &format!("{address}/32"), "dev", &self.device],
        );
        self.run("ip", &["route", "add", cidr, "dev", &self.device]);
        self.set_peer(peer, cidr);
    }

    fn set_peer(&self, peer: &Side, cidr: &str) {
        let endpoint = format!("{}:{}", peer.underlay, peer.port);
        self.run(
            "wg",
            &[
                "set",
                &self.device,
                "peer",
                &peer.public_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                cidr,
            ],
        );
    }

    fn remove_peer(&self, peer: &Side) {
        self.run(
            "wg",
            &["set", &self.device, "peer", &peer.public_key, "remove"],
        );
    }

    /// `wg show DEV dump`'s peer line: (latest handshake, rx bytes, tx bytes).
    fn peer_counters(&self) -> (u64, u64, u64) {
        let dump = self.run("wg", &["show", &self.device, "dump"]);
        let line = dump.lines().nth(1).unwrap_or_else(|| {
            panic!("{}: no peer in the dump:\n{dump}", self.device);
        });
        let field = |i: usize| -> u64 {
            line.split('\t')
                .nth(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("{}: bad dump line {line:?}", self.device))
        };
        (field(4), field(5), field(6))
    }

    fn ping(&self, from: &str, to: &str, size: &str) -> bool {
        self.ns
            .run(
                "ping",
                &[
                    "-c", "3", "-i", "0.2", "-W", "2", "-s", size, "-I", from, to,
                ],
            )
            .is_ok()
    }

    fn wg_ok(&self, args: &[&str]) -> bool {
        self.ns.run("wg", args).is_ok()
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .ns
            .run(program, args)
            .unwrap_or_else(|e| panic!("{program} {args:?} in {}: {e}", self.ns.name()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        // Deleting the link is how both implementations are told to exit.
        let _ = self.ns.ip(&["link", "del", &self.device]);
        if let Some(mut child) = self.child.take() {
            let exited = wait_for(Duration::from_secs(3), || {
                child.try_wait().ok().flatten().map(|_| ())
            });
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.device));
    }
}

fn wg(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run wg");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to wg");
    }
    let out = child.wait_with_output().expect("wg output");
    assert!(out.status.success(), "wg {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both sides' counters after traffic initiated by `initiator` (ping from its tunnel
/// address to the other's, at two sizes).
fn traffic_from(initiator: &Side, from: &str, to: &str, responder: &Side) {
    for size in ["56", "1300"] {
        assert!(
            initiator.ping(from, to, size),
            "{} -> {} ({size} bytes) failed through the tunnel; {}: {:?}; {}: {:?}",
            initiator.device,
            responder.device,
            initiator.device,
            initiator.run("wg", &["show", &initiator.device, "dump"]),
            responder.device,
            responder.run("wg", &["show", &responder.device, "dump"]),
        );
    }
    for side in [initiator, responder] {
        let (handshake, rx, tx) = side.peer_counters();
        assert!(handshake > 0, "{}: no handshake", side.device);
        assert!(
            rx > 0 && tx > 0,
            "{}: rx {rx} tx {tx}: traffic did not flow both ways",
            side.device
        );
    }
}

#[test]
fn porin_and_wireguard_go_handshake_and_carry_traffic_both_ways() {
    assert_root();
    let id = unique_id();
    let ns_porin = NetNs::create(&format!("pwi-porin-{id}")).expect("netns");
    let ns_go = NetNs::create(&format!("pwi-go-{id}")).expect("netns");
    let (veth_porin, veth_go) = (format!("pwiv{id}a"), format!("pwiv{id}b"));
    let underlay = Ip::netns(&ns_porin);
    underlay
        .add_veth(&veth_porin, &veth_go, Some(ns_go.name()))
        .expect("veth");
    for (ns, veth, address) in [
        (&ns_porin, &veth_porin, "192.0.2.1/24"),
        (&ns_go, &veth_go, "192.0.2.2/24"),
    ] {
        ns.ip(&["addr", "add", address, "dev", veth]).expect("addr");
        ns.ip(&["link", "set", veth, "up"]).expect("up");
    }

    let mut porin = Side::new(ns_porin, format!("pwip{id}"), "192.0.2.1", 51820);
    let mut go = Side::new(ns_go, format!("pwig{id}"), "192.0.2.2", 51821);
    let mut porin_cmd = Command::new(porin_bin());
    porin_cmd.args(["wireguard", &porin.device]);
    porin.start(porin_cmd);
    let mut go_cmd = Command::new("wireguard-go");
    go_cmd
        .args(["-f", &go.device])
        .env("WG_PROCESS_FOREGROUND", "1");
    go.start(go_cmd);
    porin.tunnel_to(&go, PORIN_ADDR, "10.77.2.0/24");
    go.tunnel_to(&porin, GO_ADDR, "10.77.1.0/24");

    // Porin initiates.
    traffic_from(&porin, PORIN_ADDR, GO_ADDR, &go);

    // Fresh peers on both sides (no session left), then wireguard-go initiates.
    porin.remove_peer(&go);
    go.remove_peer(&porin);
    porin.set_peer(&go, "10.77.2.0/24");
    go.set_peer(&porin, "10.77.1.0/24");
    assert_eq!(porin.peer_counters(), (0, 0, 0), "the peer was not reset");
    assert_eq!(go.peer_counters(), (0, 0, 0), "the peer was not reset");
    traffic_from(&go, GO_ADDR, PORIN_ADDR, &porin);

    // Deleting the link stops Porin's device and removes its control socket.
    let socket = Path::new("/var/run/wireguard").join(format!("{}.sock", porin.device));
    porin
        .ns
        .ip(&["link", "del", &porin.device])
        .expect("link del");
    let child = porin.child.as_mut().expect("porin child");
    let exited = wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten());
    assert!(
        exited.is_some_and(|s| s.success()),
        "porin wireguard did not exit cleanly after its link was deleted: {exited:?}"
    );
    assert!(!socket.exists(), "{socket:?} left behind");
}
