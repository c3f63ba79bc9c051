//! Policy hints of `porin relay --ui`: the policies of `--ui-policy` (files, or
//! directories of manifests) traced with `porin policy trace`'s code. The files
//! are read again on every question, so the answer follows edits; a file that
//! stops parsing keeps its last good policies and the answer says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use porin_observe::ui::{PolicyHint, PolicyHintQuery, PolicyHints};
use porin_policy::Enforcement;
use porin_policy::compute::{Decision, L4, Peer, Trace, Verdict, trace};
use porin_policy::model::{Label, Labels, NAMESPACE_LABELS, Policy, Protocol};
use porin_policy::parse::{Location, parse_document};
use serde::Deserialize;

/// The kinds `--ui-policy` reads from a manifest; other documents are skipped.
const POLICY_KINDS: [&str; 3] = [
    "NetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumClusterwideNetworkPolicy",
];

/// Policies and namespace labels read from files.
#[derive(Debug, Default, Clone)]
struct Sources {
    policies: Vec<Policy>,
    /// Namespace name -> its labels, from `Namespace` documents.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// Hints from policy files and directories.
#[derive(Debug)]
pub struct PolicyFileHints {
    paths: Vec<PathBuf>,
    enforcement: Enforcement,
    /// Per file, its last good contents.
    last_good: Mutex<BTreeMap<PathBuf, Sources>>,
}

impl PolicyFileHints {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            enforcement: Enforcement::Default,
            last_good: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every file's policies (its last good ones when it is broken now) and the
    /// problems found.
    fn load(&self) -> (Sources, Vec<String>) {
        let mut warnings = Vec::new();
        let mut files = Vec::new();
        for path in &self.paths {
            match manifest_files(path) {
                Ok(mut f) => files.append(&mut f),
                Err(e) => warnings.push(format!("{}: {e}", path.display())),
            }
        }
        let mut last_good = self
            .last_good
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last_good.retain(|p, _| files.contains(p));
        let mut all = Sources::default();
        for file in files {
            match read_file(&file) {
                Ok(sources) => {
                    last_good.insert(file.clone(), sources);
                }
                Err(problem) => {
                    warnings.push(format!("{problem} (its last good policies are used)"))
                }
            }
            if let Some(s) = last_good.get(&file) {
                all.policies.extend(s.policies.iter().cloned());
                all.namespaces
                    .extend(s.namespaces.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        (all, warnings)
    }
}

impl PolicyHints for PolicyFileHints {
    fn explain(&self, query: &PolicyHintQuery) -> Result<PolicyHint, String> {
        let (sources, warnings) = self.load();
        let src = peer("src", &query.src, &sources)?;
        let dst = peer("dst", &query.dst, &sources)?;
        let port = if query.port == 0 {
            None
        } else {
            let protocol = Protocol::parse(&query.protocol.to_ascii_uppercase())
                .filter(|p| *p != Protocol::Any)
                .ok_or_else(|| {
                    format!("protocol {:?}: expected TCP, UDP or SCTP", query.protocol)
                })?;
            Some((query.port, protocol))
        };
        let l4 = L4 {
            port,
            named_ports: BTreeMap::new(),
            cluster_named_ports: BTreeMap::new(),
        };
        let result = trace(&sources.policies, self.enforcement, &src, &dst, &l4);
        Ok(PolicyHint {
            verdict: verdict_name(result.verdict).to_owned(),
            summary: summary(&result),
            trace: serde_json::to_value(&result).map_err(|e| e.to_string())?,
            warnings,
        })
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "ALLOWED",
        Verdict::Denied => "DENIED",
    }
}

/// One line: the side that denied, and by which policy or default deny.
fn summary(t: &Trace) -> String {
    let side = |name: &str, d: &Decision| {
        let rules: Vec<String> = d
            .matched
            .iter()
            .map(|m| format!("{} by {} {}", m.action, m.policy, m.rule))
            .collect();
        if rules.is_empty() {
            format!("{name}: {}", d.reason)
        } else {
            format!("{name}: {} ({})", d.reason, rules.join("; "))
        }
    };
    match t.verdict {
        Verdict::Allowed => format!(
            "allowed now by the policies given ({}; {})",
            side("egress", &t.egress),
            side("ingress", &t.ingress)
        ),
        Verdict::Denied => {
            let mut parts = Vec::new();
            if t.egress.verdict == Verdict::Denied {
                parts.push(side("denied at the source's egress", &t.egress));
            }
            if t.ingress.verdict == Verdict::Denied {
                parts.push(side("denied at the destination's ingress", &t.ingress));
            }
            parts.join("; ")
        }
    }
}

/// A side of the connection from the labels the flows carry; the labels of its
/// namespace (from the manifests' `Namespace` documents) are added as the agent adds them.
fn peer(side: &str, labels: &str, sources: &Sources) -> Result<Peer, String> {
    let mut labels = Labels::parse_list(labels).map_err(|e| format!("{side} {labels:?}: {e}"))?;
    if let Some(ns) = labels.namespace().map(str::to_owned) {
        for (k, v) in sources.namespaces.get(&ns).into_iter().flatten() {
            let key = format!("{NAMESPACE_LABELS}{k}");
            if labels.get("k8s", &key).is_none() {
                labels.insert(Label::new("k8s", &key, v));
            }
        }
    }
    Ok(Peer { labels, cidr: None })
}

/// A file, or the YAML and JSON files of a directory (sorted).
fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: NamespaceMeta,
}

#[derive(Deserialize, Default)]
struct NamespaceMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The policies and namespaces of one file; the first problem names the file,
/// the document and the field.
fn read_file(file: &Path) -> Result<Sources, String> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {name}: {e}"))?;
    let mut out = Sources::default();
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| format!("{name}: document {}: invalid YAML: {e}", i + 1))?;
        if value.is_null() {
            continue;
        }
        let meta: Meta = serde_json::from_value(value.clone()).unwrap_or(Meta {
            kind: String::new(),
            metadata: NamespaceMeta::default(),
        });
        if meta.kind == "Namespace" {
            out.namespaces
                .insert(meta.metadata.name, meta.metadata.labels);
            continue;
        }
        if !POLICY_KINDS.contains(&meta.kind.as_str()) {
            continue;
        }
        let at = Location {
            file: name.clone(),
            document: i + 1,
            object: None,
        };
        match parse_document(&at, &value) {
            Ok(policy) => out.policies.push(policy),
            Err(problems) => {
                return Err(problems.first().map_or_else(
                    || format!("{name}: document {}", i + 1),
                    ToString::to_string,
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: x, namespace: payments}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: postgres-ingress, namespace: payments}
spec:
  endpointSelector: {matchLabels: {app: postgres}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: payments-api}}]
      toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
    - fromEndpoints: [{matchLabels: {"k8s:io.kubernetes.pod.namespace": ops, "io.cilium.k8s.namespace.labels.team": sre}}]
"#;

    fn query(src: &str) -> PolicyHintQuery {
        PolicyHintQuery {
            src: src.to_owned(),
            dst: "k8s:app=postgres,k8s:io.kubernetes.pod.namespace=payments".to_owned(),
            port: 5432,
            protocol: "TCP".to_owned(),
        }
    }

    #[test]
    fn default_deny_and_allow_from_a_manifest_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("10-all.yaml");
        std::fs::write(&file, MANIFEST).expect("write");
        let hints = PolicyFileHints::new(vec![dir.path().to_path_buf()]);
        let denied = hints
            .explain(&query(
                "k8s:app=ops-toolbox,k8s:io.kubernetes.pod.namespace=ops",
            ))
            .expect("hint");
        assert_eq!(denied.verdict, "DENIED", "{denied:?}");
        assert!(denied.summary.contains("ingress"), "{}", denied.summary);
        assert!(denied.warnings.is_empty(), "{:?}", denied.warnings);
        let allowed = hints
            .explain(&query(
                "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments",
            ))
            .expect("hint");
        assert_eq!(allowed.verdict, "ALLOWED", "{allowed:?}");
        assert!(
            allowed.summary.contains("postgres-ingress"),
            "{}",
            allowed.summary
        );

        // A broken edit keeps the last good policies and says so.
        std::fs::write(
            &file,
            MANIFEST.replace(
                "fromEndpoints: [{matchLabels: {app: payments-api}}]",
                "fromEndpointz: []",
            ),
        )
        .expect("write");
        let kept = hints
            .explain(&query(
                "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments",
            ))
            .expect("hint");
        assert_eq!(kept.verdict, "ALLOWED", "{kept:?}");
        assert!(
            kept.warnings[0].contains("10-all.yaml"),
            "{:?}",
            kept.warnings
        );
    }

    #[test]
    fn bad_labels_are_named() {
        let hints = PolicyFileHints::new(vec![]);
        let err = hints.explain(&query(":x")).expect_err("bad labels");
        assert!(err.contains("src"), "{err}");
    }
}
