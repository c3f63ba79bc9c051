//! End to end: `porin connectivity test --kubeconfig` against the fake Kubernetes API
//! server of `core/tests/kube_api` (no real cluster can run here), with this test playing
//! the kubelet: it marks the test pods Ready (after a delay) and gives the Service a
//! ClusterIP.
//!
//! - The run applies the namespace, the four pods (pinned to the two schedulable Ready
//!   nodes) and the echo Service, waits until every pod is Ready, runs the scenarios (the
//!   fake has no exec API, so `kubectl exec` fails and the three pod/Service scenarios
//!   fail naming it; the other 13 are skipped with what they still need), deletes the
//!   namespace, and reports `target: kubernetes` in JSON.
//! - A pod that never becomes Ready fails the run after `--ready-timeout`, naming the pod
//!   and its waiting reason, and the namespace is removed all the same.

#[path = "../../core/tests/kube_api/mod.rs"]
mod kube_api;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use kube_api::{FakeApi, NAMESPACES, PODS, Server};

const NAMESPACE: &str = "porin-connectivity-test";
const NODES: &str = "/api/v1/nodes";
const SERVICES: &str = "/api/v1/services";
/// The fake kubelet's delay before a pod is Ready: the run must wait for it.
const READY_AFTER: Duration = Duration::from_millis(1500);

fn node(name: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "spec": {},
           "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
}

fn kubeconfig(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: tester\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\ncurrent-context: fake\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// What the fake kubelet saw: pod name -> the node it was pinned to.
type Seen = Arc<Mutex<BTreeMap<String, String>>>;

/// Plays kubelet and the Service controller until `stop`: pods of the test namespace
/// become Ready `READY_AFTER` after they appear (except `never_ready`, which stays
/// Pending with ImagePullBackOff); the Service gets a ClusterIP.
async fn kubelet(
    api: FakeApi,
    never_ready: Option<&'static str>,
    seen: Seen,
    stop: Arc<Mutex<bool>>,
) {
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    while !*stop.lock().expect("stop") {
        let pods: Vec<Value> = api
            .state()
            .collections
            .get(PODS)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for (i, pod) in pods.iter().enumerate() {
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if pod["metadata"]["namespace"] != NAMESPACE || !pod["status"].is_null() {
                continue;
            }
            seen.lock().expect("seen").insert(
                name.clone(),
                pod["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let since = *first_seen.entry(name.clone()).or_insert_with(Instant::now);
            if since.elapsed() < READY_AFTER {
                continue;
            }
            let status = if never_ready == Some(name.as_str()) {
                json!({"phase": "Pending", "containerStatuses": [{"name": "echo", "image": "busybox",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"waiting": {"reason": "ImagePullBackOff"}}}]})
            } else {
                json!({"phase": "Running", "podIP": format!("10.244.0.{}", i + 10),
                       "conditions": [{"type": "Ready", "status": "True"}]})
            };
            api.set_status(PODS, NAMESPACE, &name, status);
        }
        if let Some(mut service) = api.get(SERVICES, NAMESPACE, "echo")
            && service["spec"]["clusterIP"].is_null()
        {
            service["spec"]["clusterIP"] = json!("10.96.7.7");
            api.upsert(SERVICES, service, true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Run {
    out: Output,
    took: Duration,
    seen: BTreeMap<String, String>,
    api: FakeApi,
}

fn run(never_ready: Option<&'static str>, extra: &[&str]) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = FakeApi::default();
    for (name, ready) in [("node-a", true), ("node-b", false), ("node-c", true)] {
        api.upsert(NODES, node(name, ready), false);
    }
    let server = runtime.block_on(Server::start(api.clone(), 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), server.port);
    let seen: Seen = Arc::default();
    let stop = Arc::new(Mutex::new(false));
    runtime.spawn(kubelet(
        api.clone(),
        never_ready,
        seen.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_porin"))
        .args(["connectivity", "test", "--kubeconfig"])
        .arg(&config)
        // No relay here: the flow checks are never reached (exec fails first).
        .args(["--hubble-server", "127.0.0.1:1", "-o", "json"])
        .args(extra)
        .output()
        .expect("run porin connectivity test");
    let took = started.elapsed();
    *stop.lock().expect("stop") = true;
    server.stop(&api);
    let seen = seen.lock().expect("seen").clone();
    Run {
        out,
        took,
        seen,
        api,
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn deploys_through_the_api_waits_for_readiness_and_removes_the_namespace() {
    let r = run(None, &[]);
    let stderr = String::from_utf8_lossy(&r.out.stderr);
    println!("{stderr}\ntook {:?}", r.took);
    let report: Value = serde_json::from_slice(&r.out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{stderr}"));
    assert!(
        !r.out.status.success(),
        "the fake has no exec API: {report:#}"
    );

    // Deployed: four pods, the clients and echo servers spread over the two Ready nodes
    // (node-b is NotReady), and the Service.
    let expected: BTreeMap<String, String> = [
        ("client", "node-a"),
        ("client-other", "node-c"),
        ("echo-other-node", "node-c"),
        ("echo-same-node", "node-a"),
    ]
    .iter()
    .map(|(p, n)| ((*p).to_string(), (*n).to_string()))
    .collect();
    assert_eq!(r.seen, expected, "{stderr}");
    assert!(
        r.api.get(SERVICES, NAMESPACE, "echo").is_some(),
        "no echo Service"
    );
    let echo = r
        .api
        .get(PODS, NAMESPACE, "echo-same-node")
        .expect("echo pod");
    assert_eq!(echo["spec"]["containers"][0]["image"], "busybox:1.37");

    // Waited for readiness: the deploy time covers the kubelet's delay.
    let deploy_ms = report["deploy_ms"].as_u64().expect("deploy_ms");
    assert!(
        deploy_ms >= u64::try_from(READY_AFTER.as_millis()).expect("ms"),
        "deployed in {deploy_ms} ms, before the pods were Ready"
    );

    // Scenarios: the three that run on clusters fail on the missing exec API and say so;
    // the others are skipped with what they need.
    assert_eq!(report["target"], "kubernetes");
    assert_eq!(report["porin_version"], env!("CARGO_PKG_VERSION"));
    let nodes: Vec<&str> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| str_of(&n["node"]))
        .collect();
    assert_eq!(nodes, ["node-a", "node-c"]);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 16, "{report:#}");
    for s in scenarios {
        let name = str_of(&s["name"]);
        if name.starts_with("pod-to-") {
            assert_eq!(s["result"], "failed", "{s:#}");
            assert!(
                str_of(&s["message"])
                    .contains("kubectl exec into porin-connectivity-test/client failed"),
                "{s:#}"
            );
        } else {
            assert_eq!(s["result"], "skipped", "{s:#}");
            assert!(
                str_of(&s["message"]).contains("not run with --kubeconfig yet"),
                "{s:#}"
            );
        }
    }
    assert_eq!(report["failed"], 3);
    assert_eq!(report["skipped"], 13);

    // Removed: the namespace was deleted (the API server's namespace controller then
    // deletes its pods and Service).
    assert!(
        r.api.get(NAMESPACES, "", NAMESPACE).is_none(),
        "namespace left behind"
    );
    assert!(r.took < Duration::from_secs(60), "took {:?}", r.took);
}

#[test]
fn a_pod_that_never_becomes_ready_fails_the_run_naming_it_and_is_removed() {
    let r = run(Some("echo-other-node"), &["--ready-timeout", "4"]);
    let stderr = String::from_utf8_lossy(&r.out.stderr);
    println!("{stderr}\ntook {:?}", r.took);
    assert!(!r.out.status.success());
    assert!(
        stderr.contains("not Ready after 4s: echo-other-node (Pending: ImagePullBackOff)"),
        "{stderr}"
    );
    assert!(
        r.api.get(NAMESPACES, "", NAMESPACE).is_none(),
        "namespace left behind after the failed deploy"
    );
    assert!(
        r.took >= Duration::from_secs(4),
        "gave up early: {:?}",
        r.took
    );
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
}
