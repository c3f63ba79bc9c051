//! `porin connectivity test --kubeconfig`: the run against a Kubernetes cluster. The
//! workloads go in through the API (`cluster_deploy.rs`); the scenarios that need only
//! pods and a Service run with `kubectl exec` and are confirmed by the flows of Hubble
//! Relay (`--hubble-server`); the others are skipped with what they still need.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use porin_observe::HubbleAddress;
use porin_observe::hubble_proto::flow::Verdict;

use super::checks::Check;
use super::cluster_deploy::{ClusterSettings, TestCluster};
use super::flows::{self, FlowExpectation};
use super::report::{NodeInfo, Report, Timing};
use super::scenarios::{self, Outcome, ScenarioResult, TRAFFIC_WAIT};
use super::traffic::{self, CURL, HttpResult};
use super::workloads::{ECHO_PORT, SERVICE_PORT};

/// Why a scenario does not run against a cluster yet (None: it runs).
pub fn not_on_clusters(name: &str) -> Option<&'static str> {
    let group = name.split('/').next().unwrap_or_default();
    match group {
        "pod-to-pod" | "pod-to-service" => None,
        "node-port" => Some(
            "not run with --kubeconfig yet: needs a client outside the cluster and a NodePort \
             Service",
        ),
        "encryption" => Some(
            "not run with --kubeconfig yet: needs a packet capture on a node (a privileged \
             host-network pod)",
        ),
        "policy" | "l7" => Some(
            "not run with --kubeconfig yet: applies and removes CiliumNetworkPolicies per phase",
        ),
        _ => {
            Some("not run with --kubeconfig yet: needs the test's DNS server and a world stand-in")
        }
    }
}

/// What to run against the cluster.
pub struct ClusterRun<'a> {
    pub settings: ClusterSettings,
    pub patterns: &'a [String],
    /// Hubble Relay (or one agent's Hubble API), `host:port` or a socket path.
    pub hubble_server: String,
}

/// Deploys, runs, cleans up; returns the report (cleanup happens whatever the outcome).
pub fn run(plan: &ClusterRun<'_>, runtime: &tokio::runtime::Runtime) -> Result<Report> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "deploying the test workloads with --kubeconfig {}...",
        plan.settings.kubeconfig.display()
    );
    let cluster = runtime
        .block_on(TestCluster::deploy(&plan.settings))
        .context("deploying the test workloads")?;
    let deploy_ms = elapsed_ms(started);
    eprintln!(
        "deployed in {:.1}s on nodes {} and {}; flows from {}",
        deploy_ms as f64 / 1000.0,
        cluster.nodes[0],
        cluster.nodes[1],
        plan.hubble_server
    );
    let servers = vec![(
        plan.hubble_server.clone(),
        HubbleAddress::parse(&plan.hubble_server),
    )];
    let scenarios_started = Instant::now();
    let chosen: Vec<_> = scenarios::catalogue()
        .into_iter()
        .filter(|s| scenarios::selected(s.name, plan.patterns))
        .collect();
    let total = chosen.len();
    let mut results = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        let begun = Instant::now();
        let mut result = ScenarioResult {
            name: s.name.to_string(),
            plugin: s.plugin.map(str::to_string),
            expected: s.expected.to_string(),
            observed: "-".to_string(),
            result: Outcome::Skipped,
            message: None,
            flow: None,
            duration_ms: 0,
        };
        match not_on_clusters(s.name) {
            Some(why) => result.message = Some(why.to_string()),
            None => {
                let check = check(&cluster, &servers, runtime, s.name);
                result.observed = check.observed;
                result.flow = check.flow;
                match check.result {
                    Ok(()) => result.result = Outcome::Passed,
                    Err(message) => {
                        result.result = Outcome::Failed;
                        result.message = Some(message);
                    }
                }
            }
        }
        result.duration_ms = elapsed_ms(begun);
        eprintln!("{}", super::report::progress_line(i + 1, total, &result));
        results.push(result);
    }
    let scenarios_ms = elapsed_ms(scenarios_started);
    let cleanup_started = Instant::now();
    for problem in runtime.block_on(cluster.down()) {
        eprintln!("cleanup: {problem}");
    }
    let cleanup_ms = elapsed_ms(cleanup_started);
    let nodes = cluster
        .nodes
        .iter()
        .map(|node| NodeInfo {
            node: node.clone(),
            version: "unknown (not read from a cluster yet)".to_string(),
            plugins: serde_json::Value::Null,
            config: serde_json::Value::Null,
        })
        .collect();
    let timing = Timing {
        started_at,
        deploy_ms,
        scenarios_ms,
        cleanup_ms,
        total_ms: elapsed_ms(started),
    };
    let report = Report::new("kubernetes", timing, nodes, results);
    Ok(report)
}

/// One of the scenarios [`not_on_clusters`] lets through: `client` fetches the echo page
/// of a pod (or the Service) with curl in the pod, and Hubble must report it FORWARDED.
fn check(
    cluster: &TestCluster,
    servers: &[(String, HubbleAddress)],
    runtime: &tokio::runtime::Runtime,
    name: &str,
) -> Check {
    let ip_of = |pod: &str| cluster.pod_ips.get(pod).cloned().unwrap_or_default();
    let client_ip = ip_of("client");
    let (url, destination, port) = match name {
        "pod-to-pod/same-node" => {
            let ip = ip_of("echo-same-node");
            (format!("http://{ip}:{ECHO_PORT}/"), Some(ip), ECHO_PORT)
        }
        "pod-to-pod/other-node" => {
            let ip = ip_of("echo-other-node");
            (format!("http://{ip}:{ECHO_PORT}/"), Some(ip), ECHO_PORT)
        }
        // Socket LB shows client -> backend; either backend will do.
        _ => (
            format!("http://{}:{SERVICE_PORT}/", cluster.service_ip),
            None,
            ECHO_PORT,
        ),
    };
    let since = SystemTime::now() - Duration::from_millis(500);
    let answer = match http_until_200(cluster, &url) {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    let observed = answer.observed();
    if answer.code != 200 {
        return Check::fail(
            observed.clone(),
            format!(
                "GET {url} from {}/client: {observed}",
                super::workloads::NAMESPACE
            ),
        );
    }
    let expected = FlowExpectation {
        source_ip: Some(client_ip.clone()),
        destination_ip: destination,
        destination_port: Some(port),
        verdict: Some(Verdict::Forwarded),
        ..FlowExpectation::default()
    };
    match runtime.block_on(flows::expect_from(servers, since, &expected, &client_ip)) {
        Ok(flow) => Check {
            observed: format!("{observed}, {}", expected.describe()),
            result: Ok(()),
            flow: Some(flows::describe(&flow)),
        },
        Err(message) => Check::fail(
            observed,
            format!("the traffic worked but the flows do not confirm it: {message}"),
        ),
    }
}

/// curl in `client` until it answers 200 or [`TRAFFIC_WAIT`] passes. A failing
/// `kubectl exec` (not curl's own failure: exit status 28 is a timeout) is an error.
fn http_until_200(cluster: &TestCluster, url: &str) -> Result<HttpResult> {
    let deadline = Instant::now() + TRAFFIC_WAIT;
    loop {
        let mut args: Vec<&str> = CURL.to_vec();
        args.push(url);
        let out = cluster.exec("client", &args)?;
        let result = traffic::http_result(&out);
        if result.code == 0 && !result.error.starts_with("curl:") {
            // kubectl's last line is its verdict; the ones before are client-go's logs.
            let why = result.error.lines().last().unwrap_or("no output");
            anyhow::bail!(
                "kubectl exec into {}/client failed: {why}",
                super::workloads::NAMESPACE
            );
        }
        if result.code == 200 || Instant::now() > deadline {
            return Ok(result);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_and_service_scenarios_run_on_clusters() {
        let running: Vec<&str> = scenarios::catalogue()
            .iter()
            .map(|s| s.name)
            .filter(|n| not_on_clusters(n).is_none())
            .collect();
        assert_eq!(
            running,
            [
                "pod-to-pod/same-node",
                "pod-to-pod/other-node",
                "pod-to-service/cluster-ip"
            ]
        );
        assert!(not_on_clusters("dns/through-proxy").is_some_and(|w| w.contains("DNS server")));
    }
}
