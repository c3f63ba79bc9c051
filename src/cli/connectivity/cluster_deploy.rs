//! `--kubeconfig`: the test workloads deployed into a Kubernetes cluster through its API
//! (server-side apply), a wait until every pod is Ready, commands run in the pods with
//! `kubectl exec`, and the namespace deleted at the end.
//!
//! What is deployed is the sandbox's pods and the echo Service, minus what needs the
//! sandbox (the DNS server, the NodePort Services, the world stand-in): two clients and
//! two echo servers pinned (`spec.nodeName`) to the first two schedulable Ready nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use super::workloads::{ECHO_PORT, NAMESPACE, SERVICE_PORT};

/// The field manager of every object the test applies.
const FIELD_MANAGER: &str = "porin-connectivity-test";
/// How often readiness and deletion are polled.
const POLL: Duration = Duration::from_millis(500);

/// How to reach and use the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub kubeconfig: PathBuf,
    /// The clients' image: needs `curl` and `sleep`.
    pub client_image: String,
    /// The echo servers' image: needs `sh` and `busybox httpd`.
    pub echo_image: String,
    /// How long the pods may take to become Ready.
    pub ready_timeout: Duration,
}

/// The test workloads in a cluster.
pub struct TestCluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    /// The two nodes used: [the clients' and same-node echo's, the other echo's].
    pub nodes: [String; 2],
    /// Pod name -> its IP, once Ready.
    pub pod_ips: BTreeMap<String, String>,
    /// The echo Service's ClusterIP.
    pub service_ip: String,
}

/// A test pod: its name, the index of its node in [`TestCluster::nodes`], its labels.
type PodSpec = (&'static str, usize, &'static [(&'static str, &'static str)]);

/// The pods.
fn pod_specs() -> [PodSpec; 4] {
    [
        ("client", 0, &[("app", "client")]),
        ("client-other", 1, &[("app", "client-other")]),
        (
            "echo-same-node",
            0,
            &[("app", "echo"), ("side", "same-node")],
        ),
        (
            "echo-other-node",
            1,
            &[("app", "echo"), ("side", "other-node")],
        ),
    ]
}

/// The names of the pods the test deploys.
pub fn pod_names() -> Vec<&'static str> {
    pod_specs().iter().map(|(name, _, _)| *name).collect()
}

/// The objects applied, in order: the namespace, the pods on `nodes`, the echo Service.
pub fn objects(nodes: &[String; 2], client_image: &str, echo_image: &str) -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
    })];
    for (name, node, labels) in pod_specs() {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let container = if name.starts_with("echo") {
            // The index page is the pod's name, as on the sandbox; plus the L7 pages.
            let script = format!(
                "mkdir -p /www && echo {name} > /www/index.html && echo allowed > /www/allowed.txt \
                 && echo private > /www/private.txt && exec busybox httpd -f -p {ECHO_PORT} -h /www"
            );
            json!({
                "name": "echo", "image": echo_image,
                "command": ["sh", "-c", script],
                "ports": [{"containerPort": ECHO_PORT, "name": "http"}],
                "readinessProbe": {"tcpSocket": {"port": ECHO_PORT}, "periodSeconds": 1},
            })
        } else {
            json!({"name": "client", "image": client_image, "command": ["sleep", "infinity"]})
        };
        out.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "nodeName": nodes[node],
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
            },
        }));
    }
    out.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": NAMESPACE},
        "spec": {
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": ECHO_PORT}],
        },
    }));
    out
}

/// The first two schedulable nodes whose Ready condition is True, by name.
pub fn pick_nodes(nodes: &[Node]) -> Result<[String; 2]> {
    let mut ready: Vec<String> = nodes
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    ready.sort();
    match ready.as_slice() {
        [a, b, ..] => Ok([a.clone(), b.clone()]),
        _ => bail!(
            "the connectivity test needs two schedulable Ready nodes; the cluster has {} ({})",
            ready.len(),
            ready.join(", ")
        ),
    }
}

/// Why a pod is not Ready yet, or None when it is (Ready condition True, with an IP).
pub fn not_ready(pod: &Pod) -> Option<String> {
    let Some(status) = pod.status.as_ref() else {
        return Some("no status yet".to_string());
    };
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready && status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
        return None;
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect::<Vec<_>>();
    let phase = status
        .phase
        .clone()
        .unwrap_or_else(|| "Unknown".to_string());
    Some(if waiting.is_empty() {
        phase
    } else {
        format!("{phase}: {}", waiting.join(", "))
    })
}

impl TestCluster {
    /// Connects with `settings.kubeconfig`, applies the objects and waits for the pods.
    /// On a failure after the namespace was applied, the namespace is deleted.
    pub async fn deploy(settings: &ClusterSettings) -> Result<Self> {
        let client = connect(&settings.kubeconfig).await?;
        let nodes: Api<Node> = Api::all(client.clone());
        let listed = nodes
            .list(&ListParams::default())
            .await
            .context("listing the cluster's nodes")?;
        let picked = pick_nodes(&listed.items)?;
        let mut cluster = TestCluster {
            client,
            kubeconfig: settings.kubeconfig.clone(),
            nodes: picked,
            pod_ips: BTreeMap::new(),
            service_ip: String::new(),
        };
        let outcome = cluster.apply_and_wait(settings).await;
        if let Err(e) = outcome {
            let problems = cluster.down().await;
            let mut message = format!("{e:#}");
            for p in problems {
                message.push_str(&format!("; cleanup: {p}"));
            }
            bail!(message);
        }
        Ok(cluster)
    }

    async fn apply_and_wait(&mut self, settings: &ClusterSettings) -> Result<()> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for object in objects(&self.nodes, &settings.client_image, &settings.echo_image) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let applied = match kind {
                "Namespace" => Api::<Namespace>::all(self.client.clone())
                    .patch(name, &params, &Patch::Apply(&object))
                    .await
                    .map(|_| ()),
                "Pod" => Api::<Pod>::namespaced(self.client.clone(), NAMESPACE)
                    .patch(name, &params, &Patch::Apply(&object))
                    .await
                    .map(|_| ()),
                _ => Api::<Service>::namespaced(self.client.clone(), NAMESPACE)
                    .patch(name, &params, &Patch::Apply(&object))
                    .await
                    .map(|_| ()),
            };
            applied.with_context(|| format!("applying {kind} {NAMESPACE}/{name}"))?;
        }
        self.pod_ips = self.wait_ready(settings.ready_timeout).await?;
        let service = Api::<Service>::namespaced(self.client.clone(), NAMESPACE)
            .get("echo")
            .await
            .context("reading Service echo")?;
        self.service_ip = service
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .with_context(|| format!("Service {NAMESPACE}/echo has no ClusterIP"))?;
        Ok(())
    }

    /// Polls the namespace's pods until all are Ready; returns their IPs.
    async fn wait_ready(&self, timeout: Duration) -> Result<BTreeMap<String, String>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let deadline = Instant::now() + timeout;
        loop {
            let listed = pods
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing the pods of {NAMESPACE}"))?;
            let mut waiting = Vec::new();
            let mut ips = BTreeMap::new();
            for name in pod_names() {
                match listed
                    .items
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name))
                {
                    None => waiting.push(format!("{name} (not found)")),
                    Some(pod) => match not_ready(pod) {
                        Some(why) => waiting.push(format!("{name} ({why})")),
                        None => {
                            let ip = pod
                                .status
                                .as_ref()
                                .and_then(|s| s.pod_ip.clone())
                                .unwrap_or_default();
                            ips.insert(name.to_string(), ip);
                        }
                    },
                }
            }
            if waiting.is_empty() {
                return Ok(ips);
            }
            if Instant::now() > deadline {
                bail!(
                    "pods of {NAMESPACE} not Ready after {}s: {} (see `kubectl -n {NAMESPACE} describe pods`)",
                    timeout.as_secs(),
                    waiting.join(", ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes the namespace (and so everything in it) and waits, up to a minute, until
    /// it is gone. Returns the problems met.
    pub async fn down(&self) -> Vec<String> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        match namespaces.delete(NAMESPACE, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Vec::new(),
            Err(e) => return vec![format!("deleting namespace {NAMESPACE}: {e}")],
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match namespaces.get_opt(NAMESPACE).await {
                Ok(None) => return Vec::new(),
                Ok(Some(_)) if Instant::now() > deadline => {
                    return vec![format!("namespace {NAMESPACE} still terminating after 60s")];
                }
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Err(e) => return vec![format!("reading namespace {NAMESPACE}: {e}")],
            }
        }
    }

    /// Runs `args` in `pod` with `kubectl exec` (the Kubernetes exec API).
    pub fn exec(&self, pod: &str, args: &[&str]) -> Result<Output> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["exec", "-n", NAMESPACE, pod, "--"])
            .args(args)
            .output()
            .context("running kubectl (needed for --kubeconfig: it runs the checks in the pods)")?;
        Ok(out)
    }
}

/// A client for the kubeconfig's current context.
async fn connect(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("--kubeconfig {}: not a readable kubeconfig", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("--kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).with_context(|| format!("--kubeconfig {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, unschedulable: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .expect("node")
    }

    #[test]
    fn two_schedulable_ready_nodes_are_picked_by_name() {
        let nodes = vec![
            node("c", "True", false),
            node("a", "False", false),
            node("b", "True", true),
            node("d", "True", false),
        ];
        assert_eq!(
            pick_nodes(&nodes).expect("two"),
            ["c".to_string(), "d".to_string()]
        );
        let e = pick_nodes(&nodes[..3]).expect_err("one");
        assert!(e.to_string().contains("two schedulable Ready nodes"), "{e}");
    }

    #[test]
    fn objects_spread_the_pods_over_both_nodes() {
        let nodes = ["n1".to_string(), "n2".to_string()];
        let objects = objects(&nodes, "curl-image", "echo-image");
        assert_eq!(objects[0]["kind"], "Namespace");
        assert_eq!(
            objects.last().map(|o| o["kind"].clone()),
            Some(json!("Service"))
        );
        let node_of = |name: &str| {
            objects
                .iter()
                .find(|o| o["metadata"]["name"] == name)
                .map(|o| o["spec"]["nodeName"].clone())
        };
        assert_eq!(node_of("client"), Some(json!("n1")));
        assert_eq!(node_of("echo-same-node"), Some(json!("n1")));
        assert_eq!(node_of("echo-other-node"), Some(json!("n2")));
        assert_eq!(node_of("client-other"), Some(json!("n2")));
        let echo = objects
            .iter()
            .find(|o| o["metadata"]["name"] == "echo-other-node")
            .expect("echo");
        assert_eq!(echo["spec"]["containers"][0]["image"], "echo-image");
        assert!(
            str_of(&echo["spec"]["containers"][0]["command"][2]).contains("echo echo-other-node")
        );
        for o in &objects[1..] {
            assert_eq!(o["metadata"]["namespace"], NAMESPACE);
        }
    }

    fn str_of(v: &Value) -> &str {
        v.as_str().unwrap_or_default()
    }

    #[test]
    fn readiness_needs_the_condition_and_an_ip() {
        let pod = |status: Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status}))
                .expect("pod")
        };
        assert_eq!(
            not_ready(&pod(json!({"phase": "Pending", "containerStatuses": [
                {"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}))),
            Some("Pending: ImagePullBackOff".to_string())
        );
        assert!(
            not_ready(&pod(json!({"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "False"}]})))
            .is_some()
        );
        assert_eq!(
            not_ready(&pod(json!({"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}]}))),
            None
        );
    }
}
