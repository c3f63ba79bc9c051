//! EndpointSlices drive a Service's backends, and a change reaches the datapath
//! incrementally: a backend removed from its slice stops receiving new connections while
//! a connection it already has finishes on it. Run with socket LB (the default) and with
//! per-packet LB (`socket_lb = false`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestSandbox, manifest_path, porin_bin, str_of, wait_for};

const VIP: &str = "10.96.0.81";

/// Connects to the VIP, says so, waits for the file `argv[2]` to exist, then sends one
/// request on that connection and prints the body of the answer.
const HELD_CONNECTION: &str = r#"
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
print("connected", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
s.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode().split("\r\n\r\n", 1)[-1], flush=True)
"#;

fn manifests(www: &std::path::Path) -> String {
    format!(
        r#"{cast}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: {VIP}
  ports:
    - name: http
      port: 80
      targetPort: 8080
"#,
        cast = common::shop_with_web_backends(www),
    )
}

/// The Service's one EndpointSlice with the given backend addresses.
fn slice(addresses: &[&str]) -> String {
    let endpoints: String = addresses
        .iter()
        .map(|a| format!("  - addresses: [\"{a}\"]\n    conditions:\n      ready: true\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\n  \
         namespace: shop\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\n\
         ports:\n  - name: http\n    port: 8080\n    protocol: TCP\nendpoints:\n{endpoints}"
    )
}

/// Writes the slice atomically (the datastore must never read half a file).
fn write_slice(sandbox: &TestSandbox, addresses: &[&str]) {
    let tmp = manifest_path(sandbox, ".slice.tmp");
    std::fs::write(&tmp, slice(addresses)).expect("write slice");
    std::fs::rename(&tmp, manifest_path(sandbox, "10-slice.yaml")).expect("rename slice");
}

fn answer(sandbox: &TestSandbox) -> Option<String> {
    common::curl_body(sandbox, "shop/client", &format!("http://{VIP}/"))
}

fn removed_backend_finishes_its_connection(agent_config: &str) {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some(agent_config),
    );
    let ip = |pod: &str| str_of(&sandbox.endpoint(pod)["endpoint"]["ipv4"]).to_string();
    let (web1, web2) = (ip("shop/web-1"), ip("shop/web-2"));
    write_slice(&sandbox, &[&web1]);
    let first = wait_for(Duration::from_secs(20), || answer(&sandbox));
    assert_eq!(
        first.as_deref(),
        Some("web-1"),
        "the slice's only backend never answered\nagent logs:\n{}",
        sandbox.agent_logs()
    );

    // A connection to web-1, held open.
    let go = tempfile::NamedTempFile::new().expect("go file");
    let go_path = go.path().to_path_buf();
    drop(go); // the script waits for it to exist again
    let mut held = Command::new(porin_bin())
        .args(["sandbox", "exec", "shop/client", "--", "python3", "-c"])
        .args([HELD_CONNECTION, VIP, go_path.to_str().expect("utf-8 path")])
        .env("PORIN_SANDBOX_DIR", sandbox.state_dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the held connection");
    let mut lines = BufReader::new(held.stdout.take().expect("stdout")).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("connected")
    );

    // web-1 leaves the slice, web-2 joins: new connections only reach web-2.
    write_slice(&sandbox, &[&web2]);
    let switched = wait_for(Duration::from_secs(20), || {
        (answer(&sandbox).as_deref() == Some("web-2")).then_some(())
    });
    assert!(switched.is_some(), "new connections never reached web-2");
    for i in 0..20 {
        assert_eq!(
            answer(&sandbox).as_deref(),
            Some("web-2"),
            "connection {i} after the update"
        );
    }
    let listed = sandbox.porin_json(&["service", "list", "--node", "node-1"]);
    assert!(
        listed.to_string().contains(&format!("{web2}:8080"))
            && !listed.to_string().contains(&format!("{web1}:8080")),
        "service list after the update: {listed}"
    );

    // The held connection finishes on web-1.
    std::fs::write(&go_path, "go").expect("go");
    let body = lines.next().and_then(Result::ok);
    let status = held.wait().expect("held connection exits");
    let _ = std::fs::remove_file(&go_path);
    assert!(status.success(), "the held connection failed");
    assert_eq!(
        body.as_deref(),
        Some("web-1"),
        "the established connection was moved"
    );
    sandbox.down_and_check();
}

#[test]
fn socket_lb_a_removed_backend_finishes_its_connection() {
    removed_backend_finishes_its_connection("[plugins.lb]\nenabled = true\n");
}

#[test]
fn per_packet_a_removed_backend_finishes_its_connection() {
    removed_backend_finishes_its_connection("[plugins.lb]\nenabled = true\nsocket_lb = false\n");
}
