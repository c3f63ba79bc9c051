//! A real agent (`porin agent`, datastore = "kubernetes") watching the fake
//! list/watch API server: its resident memory is measured once it serves an
//! empty cluster, then 1,000 pods and 10,000 services (each with an
//! EndpointSlice of two backends) arrive through the watch, and the memory is
//! measured again once every service is in its load balancer. Both run in a
//! network namespace of their own (the fake API server on a thread that
//! entered it), so nothing touches the host's network.
//!
//! Prints one JSON line: `{"bench":"kube_scale","pods":1000,"services":10000,
//! "empty_rss_mib":..,"sync_s":..,"rss_mib":..,"hwm_mib":..}` (docs/benchmarks.md).

#[path = "../../core/tests/kube_api/mod.rs"]
mod kube_api;
mod kube_support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use kube_api::{FakeApi, NAMESPACES, PODS};

const POD_COUNT: usize = 1_000;
const SERVICE_COUNT: usize = 10_000;
const REMOTE_NODES: usize = 50;
/// Generous: the agent must not balloon with cluster size.
const RSS_LIMIT_MIB: u64 = 1024;
const SYNC_TIMEOUT: Duration = Duration::from_secs(180);

fn pod_ip(i: usize) -> String {
    format!("10.200.{}.{}", i / 250, i % 250 + 1)
}

/// Adds the cluster; `notify` sends every object to open watches.
fn populate(api: &FakeApi, notify: bool) {
    api.upsert(
        NAMESPACES,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scale", "labels": {"team": "load"}}}),
        notify,
    );
    for n in 0..REMOTE_NODES {
        api.upsert(
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("remote-{n}")},
                   "spec": {"podCIDR": format!("10.200.{n}.0/24")},
                   "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.1.{}", n + 1)}]}}),
            notify,
        );
    }
    for i in 0..POD_COUNT {
        api.upsert(
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("pod-{i}"), "namespace": "scale",
                                "labels": {"app": format!("app-{}", i % 100), "tier": "backend"}},
                   "spec": {"nodeName": format!("remote-{}", i % REMOTE_NODES), "containers": [{"name": "c"}]},
                   "status": {"phase": "Running", "podIP": pod_ip(i), "podIPs": [{"ip": pod_ip(i)}]}}),
            notify,
        );
    }
    for s in 0..SERVICE_COUNT {
        let name = format!("svc-{s}");
        api.upsert(
            "/api/v1/services",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": "scale"},
                   "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", s / 250, s % 250 + 1),
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
            notify,
        );
        let backends: Vec<Value> = [s % POD_COUNT, (s + 1) % POD_COUNT]
            .iter()
            .map(|&p| json!({"addresses": [pod_ip(p)], "conditions": {"ready": true},
                             "targetRef": {"kind": "Pod", "namespace": "scale", "name": format!("pod-{p}")}}))
            .collect();
        api.upsert(
            "/apis/discovery.k8s.io/v1/endpointslices",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("{name}-1"), "namespace": "scale",
                                "labels": {"kubernetes.io/service-name": name}},
                   "addressType": "IPv4", "endpoints": backends,
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
            notify,
        );
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_memory_with_1000_pods_and_10000_services() {
    let api = FakeApi::default();
    let running = kube_support::start("porin-scale", "scale-node", api.clone()).await;
    let pid = running.agent.0.id();
    let client = &running.client;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let empty_rss_mib = status_kib(pid, "VmRSS:") / 1024;
    // The agent wrote its own CiliumNode (and only its own objects).
    let own = api
        .get("/apis/cilium.io/v2/ciliumnodes", "", "scale-node")
        .expect("the agent publishes its CiliumNode");
    assert_eq!(own["spec"]["ipam"]["podCIDRs"][0], "10.250.0.0/24", "{own}");
    assert_eq!(own["spec"]["addresses"][0]["ip"], "127.0.0.1", "{own}");
    let written: Vec<String> = api.state().collections.keys().cloned().collect();
    assert_eq!(
        written,
        ["/api/v1/nodes", "/apis/cilium.io/v2/ciliumnodes"],
        "an agent with no pods writes its Node and CiliumNode only"
    );

    // The whole cluster arrives through the watch.
    let started = Instant::now();
    populate(&api, true);
    let mut served = 0;
    while started.elapsed() < SYNC_TIMEOUT {
        if let Ok(status) = client.plugin_status("lb").await {
            // Served: in the maps with both backends and no programming error.
            served = status["services"].as_array().map_or(0, |services| {
                services
                    .iter()
                    .filter(|s| {
                        s.get("error").is_none()
                            && s["backends"].as_array().is_some_and(|b| b.len() == 2)
                    })
                    .count()
            });
            if served >= SERVICE_COUNT {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sync_s = started.elapsed().as_secs_f64();
    let log_text = running.log();
    assert!(
        served >= SERVICE_COUNT,
        "the agent served {served} of {SERVICE_COUNT} services after {sync_s:.0} s; log:\n{}",
        log_text
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Let the datastore and plugins settle, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_mib = status_kib(pid, "VmRSS:") / 1024;
    let hwm_mib = status_kib(pid, "VmHWM:") / 1024;
    println!(
        "{}",
        json!({"bench": "kube_scale", "pods": POD_COUNT, "services": SERVICE_COUNT, "empty_rss_mib": empty_rss_mib,
               "sync_s": (sync_s * 10.0).round() / 10.0, "rss_mib": rss_mib, "hwm_mib": hwm_mib})
    );
    assert!(
        rss_mib < RSS_LIMIT_MIB,
        "agent RSS {rss_mib} MiB with {SERVICE_COUNT} services"
    );

    drop(running);
}
