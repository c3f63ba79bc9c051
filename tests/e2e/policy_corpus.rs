//! End to end: the corpus's datapath sample (`tests/policy-corpus/sandbox-sample.yaml`)
//! through the real datapath, in one sandbox: a pod per corpus endpoint (same namespace
//! and labels), then for each scenario its policies are written to the manifests and
//! every flow is tried with a TCP connect. Allowed: the peer's kernel answers (a RST on
//! a port where nothing listens, curl error 7). Dropped: no answer (curl error 28), and
//! Hubble shows the drop with the expected reason (`POLICY_DENIED` 133 for default deny,
//! `POLICY_DENY` 181 for a deny rule). Every failing scenario is reported by name.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestSandbox, manifest_path, pod_yaml, str_of, wait_for};
use porin_policy::corpus::{CorpusFile, Expected, Flow, FlowPeer, Scenario, load_file};
use serde_json::Value;

const SAMPLE: &str = "tests/policy-corpus/sandbox-sample.yaml";
/// How long a scenario's flows may take to reach their expected verdicts.
const SETTLE: Duration = Duration::from_secs(15);

/// Namespaces with their labels and a pod per endpoint, spread over the two nodes.
fn manifests(file: &CorpusFile) -> String {
    let mut out = String::new();
    for (ns, labels) in &file.namespaces {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        out.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{{}}}}}\n---\n",
            labels.join(", ")
        ));
    }
    for (i, (name, spec)) in file.endpoints.iter().enumerate() {
        let node = if i % 2 == 0 { "node-1" } else { "node-2" };
        let mut pod = pod_yaml(&spec.namespace, name, "x", node, None);
        let labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        pod = pod.replace(
            "labels: {app: x}",
            &format!("labels: {{{}}}", labels.join(", ")),
        );
        if !spec.named_ports.is_empty() {
            let ports: Vec<String> = spec
                .named_ports
                .iter()
                .map(|(name, port)| format!("{{name: {name}, containerPort: {port}}}"))
                .collect();
            pod = pod.replace(
                "command: [\"sleep\", \"infinity\"]}",
                &format!(
                    "command: [\"sleep\", \"infinity\"], ports: [{}]}}",
                    ports.join(", ")
                ),
            );
        }
        out.push_str(&pod);
    }
    out
}

/// Whether a TCP connection from `src` to `ip:port` was answered (allowed) or dropped;
/// `None` for anything else (the pod is not ready yet).
fn connects(sandbox: &TestSandbox, src: &str, ip: &str, port: u16) -> Option<bool> {
    let url = format!("http://{ip}:{port}/");
    let out = sandbox.exec(
        src,
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--connect-timeout",
            "1",
            &url,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("curl: (7)") {
        Some(true)
    } else if stderr.contains("curl: (28)") {
        Some(false)
    } else {
        None
    }
}

fn policy_drops(sandbox: &TestSandbox, since: Duration) -> Vec<Value> {
    let since = format!("{}s", since.as_secs() + 2);
    let out = sandbox.porin(&[
        "observe",
        "-o",
        "json",
        "--since",
        &since,
        "--verdict",
        "DROPPED",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["flow"].clone())
        .collect()
}

struct Run<'a> {
    sandbox: &'a TestSandbox,
    /// endpoint name -> (namespace/pod, IPv4)
    pods: BTreeMap<String, (String, String)>,
}

impl Run<'_> {
    fn endpoint(&self, peer: &FlowPeer) -> Result<&(String, String), String> {
        match peer {
            FlowPeer::Endpoint(name) => self
                .pods
                .get(name)
                .ok_or_else(|| format!("no pod for endpoint {name}")),
            other => Err(format!("{other:?} cannot run in the sandbox sample")),
        }
    }

    /// The observed outcome of each flow (`true`: connected), tried in parallel.
    fn observe(&self, flows: &[Flow]) -> Result<Vec<Option<bool>>, String> {
        let targets = flows
            .iter()
            .map(|f| {
                Ok((
                    &self.endpoint(&f.src)?.0,
                    &self.endpoint(&f.dst)?.1,
                    f.port.0,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(src, ip, port)| s.spawn(move || connects(self.sandbox, src, ip, *port)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect()
        }))
    }

    /// Runs one scenario; `Err` describes every flow that did not behave.
    fn scenario(&self, scenario: &Scenario) -> Result<(), String> {
        let flows = scenario
            .flows
            .iter()
            .map(|l| Flow::parse(l))
            .collect::<Result<Vec<_>, String>>()?;
        std::fs::write(
            manifest_path(self.sandbox, "50-policy.yaml"),
            &scenario.policies,
        )
        .map_err(|e| format!("writing the policy: {e}"))?;
        let started = Instant::now();
        let want: Vec<Option<bool>> = flows
            .iter()
            .map(|f| Some(f.expected == Expected::Allowed))
            .collect();
        let mut seen = Vec::new();
        while started.elapsed() < SETTLE {
            seen = self.observe(&flows)?;
            if seen == want {
                break;
            }
        }
        if seen != want {
            let bad: Vec<String> = flows
                .iter()
                .zip(&seen)
                .filter(|(f, s)| **s != Some(f.expected == Expected::Allowed))
                .map(|(f, s)| format!("`{}` observed {s:?} (Some(true) = connected)", f.line))
                .collect();
            return Err(bad.join("; "));
        }
        self.check_drop_reasons(&flows, started)
    }

    /// Every dropped flow shows up in Hubble with the expected reason.
    fn check_drop_reasons(&self, flows: &[Flow], started: Instant) -> Result<(), String> {
        for flow in flows.iter().filter(|f| f.expected != Expected::Allowed) {
            let reason = if flow.expected == Expected::Deny {
                "POLICY_DENY"
            } else {
                "POLICY_DENIED"
            };
            let (src, _) = self.endpoint(&flow.src)?;
            let (dst, _) = self.endpoint(&flow.dst)?;
            let pod = |key: &str| key.split_once('/').map_or("", |(_, p)| p).to_owned();
            let (src, dst) = (pod(src), pod(dst));
            let found = wait_for(Duration::from_secs(5), || {
                policy_drops(self.sandbox, started.elapsed())
                    .into_iter()
                    .find(|f| {
                        f["drop_reason_desc"] == reason
                            && f["source"]["pod_name"] == src.as_str()
                            && f["destination"]["pod_name"] == dst.as_str()
                            && f["l4"]["TCP"]["destination_port"] == u64::from(flow.port.0)
                    })
            });
            if found.is_none() {
                return Err(format!("`{}`: no {reason} drop in Hubble", flow.line));
            }
        }
        Ok(())
    }
}

#[test]
fn corpus_sample_through_the_datapath() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let file = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        file.scenarios.len() >= 20,
        "the datapath sample needs at least 20 scenarios"
    );
    let sandbox = TestSandbox::up_with(
        &[("10-pods.yaml", &manifests(&file))],
        Some("[plugins.policy]\nenabled = true\n"),
    );
    let pods = file
        .endpoints
        .iter()
        .map(|(name, spec)| {
            let key = format!("{}/{name}", spec.namespace);
            let ip = str_of(&sandbox.endpoint(&key)["endpoint"]["ipv4"]).to_string();
            (name.clone(), (key, ip))
        })
        .collect();
    let run = Run {
        sandbox: &sandbox,
        pods,
    };
    let mut failures = Vec::new();
    for scenario in &file.scenarios {
        if let Err(e) = run.scenario(scenario) {
            failures.push(format!("{}: {e}", scenario.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sample scenarios failed in the datapath:\n{}\nagent logs:\n{}",
        failures.len(),
        file.scenarios.len(),
        failures.join("\n"),
        sandbox.agent_logs()
    );
    sandbox.down_and_check();
}
