//! Namespace tests for the testbed itself. They need root, iproute2,
//! python3 and curl; a missing one fails the test with a message.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use porin_testbed::{Cluster, Pod, sweep};

fn preflight() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "testbed tests need root (network namespaces, cgroups)"
    );
    for tool in ["ip", "python3", "curl"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        assert!(found, "required tool `{tool}` is not on PATH: install it");
    }
}

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    assert!(out.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(from: &Pod, to: Ipv4Addr) {
    porin_testbed::icmp::ping(&from.netns, to, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("ping {to} from {}: {e}", from.key()));
}

fn http_server(pod: &Pod, ip: Ipv4Addr, dir: &Path) -> porin_testbed::Process {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        "8080",
        "--bind",
        &ip.to_string(),
        "--directory",
    ])
    .arg(dir);
    pod.spawn(cmd, &dir.join(format!("{}.log", pod.name)))
        .expect("spawn http.server")
}

/// curl `http://ip:8080/hello.txt` from `client`, retrying while the server starts.
fn curl(client: &Pod, ip: Ipv4Addr) -> String {
    let url = format!("http://{ip}:8080/hello.txt");
    let start = Instant::now();
    loop {
        match client.run("curl", &["-sS", "--max-time", "2", &url]) {
            Ok(out) => return String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) if start.elapsed() < Duration::from_secs(15) => {
                eprintln!("retrying {url}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("curl {url} from {}: {e}", client.key()),
        }
    }
}

#[test]
fn pods_talk_on_same_node_and_across_nodes_and_drop_cleans_up() {
    preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "hello porin\n").expect("write file");
    let state_file = dir.path().join("state.json");

    let cluster = Cluster::builder()
        .nodes(2)
        .prefix("ptb")
        .state_file(&state_file)
        .build()
        .expect("build cluster");
    let base = cluster.base_name();
    let cgroup_dir = cluster.cgroup().expect("cluster cgroup").path().to_owned();

    let a1 = cluster.add_pod(0, "default", "a1").expect("pod a1");
    let a2 = cluster.add_pod(0, "default", "a2").expect("pod a2");
    let b1 = cluster.add_pod(1, "other", "b1").expect("pod b1");
    let (ip_a1, ip_a2, ip_b1) = (
        Ipv4Addr::new(10, 200, 1, 10),
        Ipv4Addr::new(10, 200, 1, 11),
        Ipv4Addr::new(10, 200, 2, 10),
    );
    cluster.plain_pod_link(&a1, ip_a1).expect("link a1");
    cluster.plain_pod_link(&a2, ip_a2).expect("link a2");
    cluster.plain_pod_link(&b1, ip_b1).expect("link b1");

    ping(&a1, ip_a2);
    ping(&a1, ip_b1);
    ping(&b1, ip_a1);

    let _server_a2 = http_server(&a2, ip_a2, dir.path());
    let server_b1 = http_server(&b1, ip_b1, dir.path());
    assert_eq!(curl(&a1, ip_a2), "hello porin\n");
    assert_eq!(curl(&a1, ip_b1), "hello porin\n");
    assert!(
        b1.cgroup.pids().expect("pids").contains(&server_b1.pid()),
        "server must run in the pod's cgroup"
    );

    let listed = netns_list();
    assert!(listed.contains(&format!("{base}-node-1")), "{listed}");
    assert!(listed.contains(&format!("{base}-default-a1")), "{listed}");

    drop((_server_a2, server_b1));
    drop((a1, a2, b1));
    drop(cluster);
    let listed = netns_list();
    assert!(!listed.contains(&base), "namespaces left behind:\n{listed}");
    assert!(
        !cgroup_dir.exists(),
        "cgroup {} left behind",
        cgroup_dir.display()
    );
}

#[test]
fn sweep_after_crash_removes_everything() {
    preflight();
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");

    let cluster = Cluster::builder()
        .nodes(2)
        .prefix("ptb")
        .external_client(true)
        .state_file(&state_file)
        .build()
        .expect("build cluster");
    let base = cluster.base_name();
    let cgroup_dir = cluster.cgroup().expect("cluster cgroup").path().to_owned();
    let pod = cluster.add_pod(1, "default", "sleeper").expect("pod");
    cluster
        .plain_pod_link(&pod, Ipv4Addr::new(10, 200, 2, 20))
        .expect("link");
    let mut cmd = Command::new("sleep");
    cmd.arg("300");
    let sleeper = pod
        .spawn(cmd, &dir.path().join("sleeper.log"))
        .expect("spawn");
    let pid = sleeper.pid();
    // A second process outside any cgroup we made, known only from the state file.
    let mut loose = Command::new("sleep");
    loose.arg("300");
    let loose = porin_testbed::Process::spawn(
        loose,
        Some(cluster.node(0).expect("node").netns.path()),
        None,
        &dir.path().join("loose.log"),
    )
    .expect("spawn loose");
    let loose_pid = loose.pid();
    cluster
        .state()
        .record_pid(loose_pid, "loose")
        .expect("record pid");

    // Simulated crash: nothing runs its destructor.
    std::mem::forget((sleeper, loose, pod, cluster));
    assert!(netns_list().contains(&base));

    let report = sweep(&state_file).expect("sweep");
    assert!(report.is_clean(), "sweep errors: {:?}", report.errors);
    let listed = netns_list();
    assert!(!listed.contains(&base), "namespaces left behind:\n{listed}");
    assert!(
        !cgroup_dir.exists(),
        "cgroup {} left behind",
        cgroup_dir.display()
    );
    assert!(
        !state_file.exists(),
        "state file must go after a clean sweep"
    );
    for p in [pid, loose_pid] {
        // Killed processes are zombies of this process until reaped.
        let alive = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        assert!(!alive, "pid {p} survived the sweep");
    }
    // A second sweep finds nothing to do.
    assert!(sweep(&state_file).expect("sweep again").is_clean());
}
