//! End to end with a real container runtime: a private containerd runs three
//! busybox containers with `ctr run --cni`, which calls `porin-cni`, which asks the
//! node's agent (sandbox node, local datastore) for each pod's interface. The
//! containers get addresses and the identities of their Pod objects, reach each
//! other and a ClusterIP service (lb plugin), a NetworkPolicy is enforced on their
//! traffic, and removing them (CNI DEL through `ctr`) leaves no endpoint behind.

mod cni_support;
mod common;

use std::process::Output;
use std::time::Duration;

use cni_support::containerd::PrivateContainerd;
use cni_support::{cni_bin, endpoints, node};
use common::{TestSandbox, wait_for};
use serde_json::{Value, json};

const VIP: &str = "10.96.0.60";

/// The service in front of the web container and the policy guarding the db.
const CLUSTER: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.60
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 8080, protocol: TCP}]
"#;

fn pod_yaml(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: node-1\n  containers: [{{name: c, image: busybox}}]\n---\n"
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTP GET from container `from` to `host:port` with busybox `nc` (busybox-static's
/// `wget` crashes in Debian 12): the body, or None when no answer came.
fn fetch(ctrd: &PrivateContainerd, from: &str, host: &str, port: &str) -> Option<String> {
    let out = http_get(ctrd, from, host, port);
    let reply = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && reply.starts_with("HTTP/1.1 200")).then(|| {
        reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

fn http_get(ctrd: &PrivateContainerd, from: &str, host: &str, port: &str) -> Output {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/nc -w 2 {host} {port}");
    ctrd.exec(from, &["/bin/sh", "-c", &script])
}

/// Wait until `from` gets `want` from `host:port` (Some) or no answer (None).
fn expect_fetch(ctrd: &PrivateContainerd, from: &str, host: &str, port: &str, want: Option<&str>) {
    let seen = wait_for(Duration::from_secs(20), || {
        let got = fetch(ctrd, from, host, port);
        (got.as_deref() == want).then_some(())
    });
    if seen.is_none() {
        let out = http_get(ctrd, from, host, port);
        panic!(
            "{from} -> {host}:{port}: wanted {want:?}, last got {} ({})",
            text(&out),
            out.status
        );
    }
}

#[test]
fn containerd_runs_three_containers_on_porin() {
    let sandbox = TestSandbox::up_with_nodes(
        &[("00-shop.yaml", CLUSTER)],
        Some(
            "[plugins.lb]\nenabled = true\nsocket_lb = false\n\n[plugins.policy]\nenabled = true\n",
        ),
        1,
    );
    let (socket, _) = node(&sandbox, "node-1");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "porin",
        "plugins": [{"type": "porin-cni", "agentSocket": socket, "defaultNamespace": "shop"}],
    });
    let mut ctrd = PrivateContainerd::start(std::path::Path::new(cni_bin()), &conflist);

    // Pod objects for the containers (ctr passes no K8S_POD_NAME: the pod name is
    // the container id ctr hands to CNI), written before the containers start.
    let apps = ["web", "client", "db"];
    let pods: String = apps
        .iter()
        .map(|app| pod_yaml(&ctrd.cni_container_id(app), app))
        .collect();
    std::fs::write(common::manifest_path(&sandbox, "10-pods.yaml"), pods).expect("pods");

    for app in apps {
        let rootfs = ctrd.rootfs(app, app);
        let command: &[&str] = if app == "client" {
            &["/bin/sleep", "3600"]
        } else {
            &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
        };
        if let Err(e) = ctrd.run(app, &rootfs, command) {
            panic!(
                "{e}\ncontainerd:\n{}\nagents:\n{}",
                ctrd.log(),
                sandbox.agent_logs()
            );
        }
    }

    // Each container has an address on eth0, and its endpoint the Pod's labels.
    let by_app = wait_for(Duration::from_secs(15), || {
        let list = endpoints(&sandbox, &socket);
        let ready: Vec<Value> = apps
            .iter()
            .filter_map(|app| {
                let pod = ctrd.cni_container_id(app);
                list.iter()
                    .find(|e| {
                        e["pod"] == pod.as_str()
                            && e["state"] == "ready"
                            && e["labels"].to_string().contains(&format!("app={app}"))
                    })
                    .cloned()
            })
            .collect();
        (ready.len() == apps.len()).then_some(ready)
    })
    .unwrap_or_else(|| {
        panic!(
            "endpoints never became ready with their labels: {:?}",
            endpoints(&sandbox, &socket)
        )
    });
    let ip_of = |i: usize| by_app[i]["ipv4"].as_str().unwrap_or_default().to_string();
    let (web_ip, db_ip) = (ip_of(0), ip_of(2));
    for (i, app) in apps.iter().enumerate() {
        let out = ctrd.exec(app, &["/bin/ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            text(&out).contains(&format!("inet {}/32", ip_of(i))),
            "{app} has no address on eth0: {}",
            text(&out)
        );
    }

    // Containers reach each other, and the ClusterIP service in front of web.
    expect_fetch(&ctrd, "client", &web_ip, "8080", Some("web"));
    expect_fetch(&ctrd, "client", VIP, "80", Some("web"));

    // The policy: web may reach db, client may not.
    expect_fetch(&ctrd, "web", &db_ip, "8080", Some("db"));
    expect_fetch(&ctrd, "client", &db_ip, "8080", None);
    let flows = sandbox.flows(200);
    assert!(
        flows.iter().any(|f| f["verdict"] == "DROPPED"
            && f["destination"]["pod_name"] == ctrd.cni_container_id("db").as_str()),
        "no dropped flow to db in the flow log"
    );

    // Stopping the containers makes `ctr` run CNI DEL: no endpoint is left.
    for app in apps {
        assert!(
            ctrd.remove(app),
            "ctr run {app} did not finish after its task was killed"
        );
    }
    let left = endpoints(&sandbox, &socket);
    assert!(
        left.is_empty(),
        "endpoints left after ctr removed the containers: {left:?}"
    );
    drop(ctrd);
    sandbox.down_and_check();
}
