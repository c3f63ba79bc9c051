//! `porin policy validate` and `porin policy trace` on the seed article's policies.

use std::path::PathBuf;
use std::process::Command;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    [
        "default-deny",
        "payments-egress",
        "admin-api-access",
        "require-mtls",
    ]
    .iter()
    .map(|f| dir.join(format!("{f}.yaml")))
    .collect()
}

fn porin(args: &[&str], files: &[PathBuf]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_porin"))
        .args(args)
        .args(files)
        .output()
        .expect("run porin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_examples() {
    let (ok, out, err) = porin(&["policy", "validate"], &examples());
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "4 policies OK");
}

#[test]
fn validate_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("payments.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: ok, namespace: payments}\nspec: {endpointSelector: {}, ingress: [{}]}\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: payments}\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [{ports: [{port: \"99999\"}]}]\n  - toEntities: [moon]\n",
    )
    .expect("write");
    let (ok, out, _) = porin(&["policy", "validate"], std::slice::from_ref(&bad));
    assert!(!ok);
    let prefix = format!(
        "{}: document 2 (CiliumNetworkPolicy payments/x): ",
        bad.display()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        format!("{prefix}spec.egress[0].toPorts[0].ports[0].port: invalid port \"99999\"")
    );
    assert!(
        lines[1].starts_with(&format!(
            "{prefix}spec.egress[1].toEntities[0]: unknown entity \"moon\""
        )),
        "{}",
        lines[1]
    );
}

fn trace_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["policy", "trace", "-o", "json", "--policy"];
    let files = examples();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    all.extend(names.iter().map(String::as_str));
    all.extend(args);
    let (ok, out, err) = porin(&all, &[]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("json")
}

#[test]
fn trace_seed_article_flows() {
    let v = trace_json(&[
        "--src",
        "k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring",
        "--dst",
        "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments",
        "--dport",
        "8080/TCP",
    ]);
    assert_eq!(v["verdict"], "ALLOWED");
    let matched = v["ingress"]["matched"].as_array().expect("matched");
    assert!(
        matched
            .iter()
            .any(|m| m["policy"]["name"] == "admin-api-access" && m["l7"].is_string()),
        "{v}"
    );

    let v = trace_json(&[
        "--src",
        "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments",
        "--dst-cidr",
        "203.0.113.7/32",
        "--dport",
        "443/TCP",
    ]);
    assert_eq!(v["verdict"], "DENIED");
    assert_eq!(v["egress"]["verdict"], "DENIED");
    assert!(
        v["egress"]["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("needs FQDN policy")),
        "{v}"
    );

    let v = trace_json(&[
        "--src",
        "k8s:app=payments-api,k8s:io.kubernetes.pod.namespace=payments",
        "--dst",
        "reserved:kube-apiserver",
        "--dport",
        "443/TCP",
    ]);
    assert_eq!(v["verdict"], "ALLOWED");
    assert_eq!(v["egress"]["matched"][0]["rule"], "spec.egress[3]");
}

#[test]
fn trace_reports_bad_flags() {
    let (ok, _, err) = porin(
        &[
            "policy",
            "trace",
            "--policy",
            "/nonexistent.yaml",
            "--src",
            "a=b",
            "--dst",
            "c=d",
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("/nonexistent.yaml"), "{err}");
}

/// `ops` is allowed on admin-api-access's port without HTTP rules, `monitoring` with them:
/// the whole port goes through the proxy, and ops' requests pass an allow-all L7 rule.
#[test]
fn trace_peer_without_http_rules_on_an_l7_port() {
    let v = trace_json(&[
        "--src",
        "k8s:app=ops-toolbox,k8s:io.kubernetes.pod.namespace=ops",
        "--dst",
        "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments",
        "--dport",
        "8080/TCP",
        "--http-method",
        "POST",
        "--http-path",
        "/anything",
    ]);
    assert_eq!(v["verdict"], "ALLOWED", "{v}");
    assert_eq!(v["http"]["proxied"], true, "{v}");
    assert_eq!(v["http"]["ingress"]["verdict"], "ALLOWED", "{v}");
    assert!(
        v["http"]["ingress"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("allow-all L7 rule for this peer")),
        "{v}"
    );
}
