//! ExternalIPs and LoadBalancer ingress IPs (`status.loadBalancer.ingress[].ip`) are served
//! like NodePort by the node device program to a client outside the cluster: the external
//! namespace routes each address to a node (as a router or a load balancer would), and
//! through that node the client reaches both the local backend (DNAT) and the remote one
//! (DNAT + SNAT to the node). The NodePort NAT maps those translations fill show in
//! `cilium_bpf_map_pressure` on both nodes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestSandbox, metric_value};

const EXTERNAL_IP: &str = "203.0.113.10";
const INGRESS_IP: &str = "203.0.113.20";
const NODE_1: &str = "192.168.200.1";
const NODE_2: &str = "192.168.200.2";

fn manifests(www: &std::path::Path) -> String {
    format!(
        r#"{cast}apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.70
  externalIPs: ["{EXTERNAL_IP}"]
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: http
      nodePort: 30085
status:
  loadBalancer:
    ingress:
      - ip: "{INGRESS_IP}"
"#,
        cast = common::shop_with_web_backends(www),
    )
}

fn external(sandbox: &TestSandbox, cmd: &[&str]) -> std::process::Output {
    let mut all = vec!["sandbox", "exec", "--external", "--"];
    all.extend_from_slice(cmd);
    sandbox.porin(&all)
}

fn get(sandbox: &TestSandbox, ip: &str) -> Option<String> {
    let url = format!("http://{ip}/");
    let out = external(sandbox, &["curl", "-sS", "-m", "2", &url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn external_and_load_balancer_ips_reach_both_backends_from_outside() {
    let www = common::document_roots(&["web-1", "web-2"]);
    let sandbox = TestSandbox::up_with(
        &[("00-shop.yaml", &manifests(www.path()))],
        Some("[agent]\nmap_pressure_interval_seconds = 1\n\n[plugins.lb]\nenabled = true\n"),
    );
    for (ip, node) in [(EXTERNAL_IP, NODE_1), (INGRESS_IP, NODE_2)] {
        let out = external(
            &sandbox,
            &["ip", "route", "add", &format!("{ip}/32"), "via", node],
        );
        assert!(
            out.status.success(),
            "route {ip} via {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for ip in [EXTERNAL_IP, INGRESS_IP] {
        let warm = common::warm_up(Duration::from_secs(20), 2, || get(&sandbox, ip));
        assert_eq!(
            warm.len(),
            2,
            "{ip}: not both backends answered the external client ({warm:?})\nagent logs:\n{}",
            sandbox.agent_logs()
        );
        let seen: BTreeSet<String> = (0..24)
            .map(|i| get(&sandbox, ip).unwrap_or_else(|| panic!("request {i} to {ip} failed")))
            .collect();
        assert_eq!(
            seen,
            BTreeSet::from(["web-1".to_string(), "web-2".to_string()]),
            "through {ip}: the local and the remote backend"
        );
    }

    // Each address went through its own node: both nodes' NodePort NAT maps hold
    // translations, which the sampler (every second here) reports.
    for node in ["node-1", "node-2"] {
        let filled = common::wait_for(Duration::from_secs(15), || {
            let metrics = sandbox.metrics(node);
            let all = ["porin_np_nat", "porin_np_rnat", "porin_ct"].map(|map| {
                metric_value(
                    &metrics,
                    "cilium_bpf_map_pressure",
                    &[&format!("map_name=\"{map}\"")],
                )
                .unwrap_or(0.0)
            });
            all.iter().all(|p| *p > 0.0).then_some(all)
        });
        assert!(
            filled.is_some(),
            "{node}: NodePort NAT or conntrack pressure stayed at 0 or missing:\n{}\nagent logs:\n{}",
            sandbox.metrics(node),
            sandbox.agent_logs()
        );
    }

    let kinds = common::service_kinds(&sandbox, "node-1");
    for want in [
        (format!("{EXTERNAL_IP}:80"), "ExternalIP"),
        (format!("{INGRESS_IP}:80"), "LoadBalancer"),
        ("0.0.0.0:30085".to_string(), "NodePort"),
        ("10.96.0.70:80".to_string(), "ClusterIP"),
    ] {
        assert!(
            kinds.contains(&(want.0.clone(), want.1.to_string())),
            "{want:?} not in {kinds:?}"
        );
    }
    sandbox.down_and_check();
}
