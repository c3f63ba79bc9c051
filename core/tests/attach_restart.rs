//! Namespace test: attach to a real veth, survive an agent "crash", reattach atomically.
//!
//! Layout (names carry the test's pid, the host's interfaces are never touched):
//!   netns `porin-n<pid>` (the node): `ph<pid>` 10.99.0.1/24  <-veth->  netns `porin-p<pid>`
//!   (the pod): `pp<pid>` 10.99.0.2/24.
//! The datapath is loaded and attached on a thread that entered the node netns (setns), as
//! the agent does. Traffic is UDP datagrams (no ping on the CI image): each one crosses the
//! veth whether or not something listens.

use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use aya::programs::{SchedClassifier, tc::TcAttachType};
use nix::sched::{CloneFlags, setns};
use porin_core::datapath::{
    Datapath, DatapathConfig, LinkState, PodProgram, abi::Direction, remove_node_pins,
};

const NODE: &str = "node-a";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?} (is iproute2 installed?): {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth; deleted on drop.
struct Topology {
    node_ns: String,
    pod_ns: String,
    host_if: String,
}

impl Topology {
    fn new() -> Self {
        let pid = std::process::id();
        let t = Self {
            node_ns: format!("porin-n{pid}"),
            pod_ns: format!("porin-p{pid}"),
            host_if: format!("ph{pid}"),
        };
        let pod_if = format!("pp{pid}");
        ip(&["netns", "add", &t.node_ns]);
        ip(&["netns", "add", &t.pod_ns]);
        ip(&[
            "-n", &t.node_ns, "link", "add", &t.host_if, "type", "veth", "peer", "name", &pod_if,
            "netns", &t.pod_ns,
        ]);
        ip(&[
            "-n",
            &t.node_ns,
            "addr",
            "add",
            "10.99.0.1/24",
            "dev",
            &t.host_if,
        ]);
        ip(&[
            "-n",
            &t.pod_ns,
            "addr",
            "add",
            "10.99.0.2/24",
            "dev",
            &pod_if,
        ]);
        for (ns, dev) in [(&t.node_ns, &t.host_if), (&t.pod_ns, &pod_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        t
    }

    fn ns_path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.node_ns, &self.pod_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn enter_netns(name: &str) {
    let path = Topology::ns_path(name);
    let f = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {name}: {e}"));
}

/// Sends `n` datagrams from the given netns to `dst` (from a thread that enters it).
fn send_udp(netns: &str, dst: &str, n: usize) {
    let netns = netns.to_owned();
    let dst: SocketAddr = dst.parse().expect("socket address");
    thread::spawn(move || {
        enter_netns(&netns);
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..n {
            // The first one may wait in the neighbour queue for ARP: still delivered.
            let _ = sock.send_to(b"porin", dst);
            thread::sleep(Duration::from_millis(20));
        }
    })
    .join()
    .expect("sender thread");
    thread::sleep(Duration::from_millis(200));
}

fn forwarded(dp: &Datapath, dir: Direction) -> u64 {
    dp.counters()
        .expect("counters")
        .into_iter()
        .filter(|c| c.reason == 0 && c.direction == Some(dir))
        .map(|c| c.packets)
        .sum()
}

fn traffic(t: &Topology) {
    send_udp(&t.pod_ns, "10.99.0.1:9", 5); // from the pod
    send_udp(&t.node_ns, "10.99.0.2:9", 5); // to the pod
}

#[test]
fn links_survive_agent_restart_and_are_replaced_atomically() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "attach_restart needs root (netns, veth, eBPF)"
    );
    let topo = Topology::new();
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/porin-test-{}-attach",
        std::process::id()
    ));
    let config = DatapathConfig {
        node_name: NODE.into(),
        pin_root: pin_root.clone(),
        switches: vec![],
    };

    let result = thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&topo.node_ns);
            scenario(&topo, &config)
        })
        .join()
    });
    let _ = remove_node_pins(&pin_root, NODE);
    let _ = std::fs::remove_dir_all(&pin_root);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn scenario(topo: &Topology, config: &DatapathConfig) {
    let ifname = topo.host_if.as_str();

    // 1. First agent: attach, traffic flows through both programs.
    let mut dp = Datapath::load(config).unwrap_or_else(|e| panic!("load: {e}"));
    let report = dp
        .attach_endpoint(ifname)
        .unwrap_or_else(|e| panic!("attach: {e}"));
    let (LinkState::Created { link_id: from_id }, LinkState::Created { link_id: to_id }) =
        (report.from_pod, report.to_pod)
    else {
        panic!("expected new tcx links on a fresh node, got {report:?}");
    };
    traffic(topo);
    let egress1 = forwarded(&dp, Direction::Egress);
    let ingress1 = forwarded(&dp, Direction::Ingress);
    assert!(egress1 >= 5, "from-pod packets counted: {egress1}");
    assert!(ingress1 >= 5, "to-pod packets counted: {ingress1}");

    // 2. The agent dies: links stay pinned and programs stay attached.
    drop(dp);
    let ingress_pin = config
        .pin_root
        .join(NODE)
        .join("links")
        .join(format!("{ifname}-ingress"));
    assert!(ingress_pin.exists(), "link pin survives the agent");
    traffic(topo);

    // 3. A new agent reuses the pinned maps: the counters kept counting while it was down.
    let mut dp = Datapath::load(config).unwrap_or_else(|e| panic!("reload: {e}"));
    let egress2 = forwarded(&dp, Direction::Egress);
    let ingress2 = forwarded(&dp, Direction::Ingress);
    assert!(
        egress2 >= egress1 + 5,
        "programs kept running: {egress1} -> {egress2}"
    );
    assert!(
        ingress2 >= ingress1 + 5,
        "programs kept running: {ingress1} -> {ingress2}"
    );

    // 4. Attaching again reopens the same links and swaps the programs in place.
    let report = dp
        .attach_endpoint(ifname)
        .unwrap_or_else(|e| panic!("reattach: {e}"));
    assert_eq!(
        report.from_pod,
        LinkState::Replaced { link_id: from_id },
        "same ingress link reused"
    );
    assert_eq!(
        report.to_pod,
        LinkState::Replaced { link_id: to_id },
        "same egress link reused"
    );
    // Exactly our new programs are on the hooks: replaced, not added next to the old ones.
    for (attach_type, program) in [
        (TcAttachType::Ingress, PodProgram::FromPod),
        (TcAttachType::Egress, PodProgram::ToPod),
    ] {
        let (_, progs) = SchedClassifier::query_tcx(ifname, attach_type)
            .unwrap_or_else(|e| panic!("query tcx {attach_type:?}: {e}"));
        let ids: Vec<u32> = progs.iter().map(|p| p.id()).collect();
        let ours = dp.program_id(program).expect("program id");
        assert_eq!(ids, vec![ours], "{attach_type:?} runs only the new program");
    }
    traffic(topo);
    let egress3 = forwarded(&dp, Direction::Egress);
    assert!(
        egress3 >= egress2 + 5,
        "new programs count into the same map: {egress2} -> {egress3}"
    );

    // 5. Detach: nothing pinned remains for the interface and traffic is no longer counted.
    dp.detach_endpoint(ifname)
        .unwrap_or_else(|e| panic!("detach: {e}"));
    let links_dir = config.pin_root.join(NODE).join("links");
    let left: Vec<_> = std::fs::read_dir(&links_dir)
        .expect("links dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .expect("read links dir");
    assert!(left.is_empty(), "link pins left after detach: {left:?}");
    traffic(topo);
    assert_eq!(
        forwarded(&dp, Direction::Egress),
        egress3,
        "detached: no more counting"
    );

    drop(dp);
    remove_node_pins(&config.pin_root, NODE).unwrap_or_else(|e| panic!("remove pins: {e}"));
    assert!(!config.pin_root.join(NODE).exists(), "node pins removed");
}
