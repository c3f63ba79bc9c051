//! The socket-LB probe the load-balancing tests run in client pods (`lb_socket.rs`,
//! `lb_ipv6.rs`) and from the external client (`nodeport.rs`, `nodeport_ipv6.rs`):
//! `python3 probe.py MODE HOST PORT` prints one line the test parses, with IPv6 addresses
//! in brackets (`[fd00:96::70]:80`).
//!
//! - `tcp`: connect, print getpeername() and the HTTP body;
//! - `udp`: sendto/recvfrom (unconnected) then connect/send/recv/getpeername (connected);
//! - `refused`: connect and print the errno and how long it took.

/// The probe script; write it to a file the pods can read.
pub const PROBE: &str = r#"
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def addr(a):
    return ("[%s]:%d" if fam == socket.AF_INET6 else "%s:%d") % (a[0], a[1])
if mode == "tcp":
    s = socket.create_connection((host, port), timeout=3)
    peer = s.getpeername()
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print("peer=%s body=%s" % (addr(peer), data.split(b"\r\n\r\n", 1)[-1].decode().strip()))
elif mode == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"ping", (host, port))
    data, src = s.recvfrom(2048)
    c = socket.socket(fam, socket.SOCK_DGRAM)
    c.settimeout(3)
    c.connect((host, port))
    c.send(b"pong")
    cdata = c.recv(2048)
    cpeer = c.getpeername()
    print("from=%s data=%s connected_peer=%s connected_data=%s"
          % (addr(src), data.decode(), addr(cpeer), cdata.decode()))
elif mode == "refused":
    s = socket.socket(fam)
    s.settimeout(5)
    t = time.monotonic()
    try:
        s.connect((host, port))
        print("connected")
    except OSError as e:
        print("errno=%d ms=%d" % (e.errno or -1, (time.monotonic() - t) * 1000))
"#;

/// A NodePort (external or LoadBalancer IP) without backends, `host:port`, refuses the
/// external client at once: its connect() fails with ECONNREFUSED in under 0.5 s (no
/// timeout), and `node`'s datapath counts the drop (INGRESS, "Service backend not found"),
/// so the refusal is the device program's, not the node's own stack answering a closed
/// port. The probe script is written to `dir`.
pub fn assert_node_port_refuses_at_once(
    sandbox: &super::TestSandbox,
    dir: &std::path::Path,
    node: &str,
    host: &str,
    port: u16,
) {
    let probe = dir.join("probe.py");
    std::fs::write(&probe, PROBE).expect("probe.py");
    let probe = probe.display().to_string();
    let out = sandbox.exec_external(&["python3", &probe, "refused", host, &port.to_string()]);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let refused = format!("errno={} ms=", libc::ECONNREFUSED);
    let ms: Option<u64> = line.strip_prefix(&refused).and_then(|ms| ms.parse().ok());
    assert!(
        ms.is_some_and(|ms| ms < 500),
        "{host}:{port} without backends: {line} {} (want ECONNREFUSED in < 500 ms)\n\
         agent logs:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    let counted = super::wait_for(std::time::Duration::from_secs(10), || {
        let m = sandbox.metrics(node);
        super::metric_value(
            &m,
            "cilium_drop_count_total",
            &["Service backend not found", "INGRESS"],
        )
        .filter(|v| *v > 0.0)
    });
    assert!(
        counted.is_some(),
        "no INGRESS \"Service backend not found\" drop counted on {node}:\n{}",
        sandbox.metrics(node)
    );
}

/// Socket LB translated at connect(): `client`'s TCP packets leaving its pod
/// (`FROM_ENDPOINT` flows) go to one of `backends` (pod names, their `family` address:
/// `ipv4` or `ipv6`) on port 8080, and none to `vip`.
pub fn assert_client_packets_go_to_backends(
    sandbox: &super::TestSandbox,
    client: &str,
    backends: &[&str],
    family: &str,
    vip: &str,
) {
    use super::str_of;
    let backends: std::collections::BTreeSet<String> = backends
        .iter()
        .map(|p| str_of(&sandbox.endpoint(p)["endpoint"][family]).to_string())
        .collect();
    let flows = sandbox.flows(1000);
    let from_client: Vec<_> = flows
        .iter()
        .filter(|f| {
            str_of(&f["source"]["pod_name"]) == client
                && str_of(&f["trace_observation_point"]) == "FROM_ENDPOINT"
                && !f["l4"]["TCP"].is_null()
        })
        .collect();
    assert!(
        from_client.iter().any(|f| {
            backends.contains(str_of(&f["IP"]["destination"]))
                && f["l4"]["TCP"]["destination_port"] == 8080
        }),
        "no {client} -> backend:8080 flow at the client's from-endpoint: {from_client:#?}"
    );
    assert!(
        !from_client
            .iter()
            .any(|f| str_of(&f["IP"]["destination"]) == vip),
        "a {client} packet left with the VIP {vip} as destination (per-packet DNAT, not socket \
         LB): {from_client:#?}"
    );
}
