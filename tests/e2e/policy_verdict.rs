//! End to end: which policy allowed or denied a flow, through the Hubble API, on the
//! quickstart with the seed article's policies (`examples/policies/`) and one
//! cluster-wide egressDeny:
//!
//! - payments-api -> postgres:5432: a policy verdict at payments-api's egress names
//!   `payments-egress` (`egress_allowed_by`), one at postgres' ingress names `require-mtls`
//!   (`ingress_allowed_by`), with Cilium's derived labels and match types;
//! - ops-toolbox -> postgres:5432: dropped by the CCNP's egressDeny (181) with
//!   `egress_denied_by` naming it;
//! - payments-admin-api -> postgres:5432: dropped by default deny (133), no policy named;
//! - `--type policy-verdict` returns only policy verdicts, the compact output reads like
//!   hubble's, and `hubble_policy_verdicts_total` counts them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestSandbox, metric_value, str_of, wait_for};
use serde_json::Value;

/// Stops ops-toolbox from reaching postgres, without putting its egress into default deny.
const OPS_NO_POSTGRES: &str = r#"apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ops-no-postgres
spec:
  endpointSelector:
    matchLabels: {app: ops-toolbox, io.kubernetes.pod.namespace: ops}
  enableDefaultDeny: {egress: false}
  egressDeny:
    - toEndpoints:
        - matchLabels: {app: postgres, io.kubernetes.pod.namespace: payments}
      toPorts:
        - ports: [{port: "5432", protocol: TCP}]
"#;

/// Policy on; the observe plugin's section is the last of the generated porin.toml, so
/// the bare `metrics` key lands there.
const AGENT_CONFIG: &str = "metrics = [\"drop\", \"policy\"]\n[plugins.policy]\nenabled = true\n";

/// The quickstart, the seed article's policies and the CCNP above.
fn files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples/quickstart", "examples/policies"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!(
                "{}-{}",
                if dir.ends_with("policies") {
                    "50"
                } else {
                    "00"
                },
                e.file_name().to_string_lossy()
            );
            files.push((
                name,
                std::fs::read_to_string(e.path()).expect("read example"),
            ));
        }
    }
    files.push(("60-ops-no-postgres.yaml".into(), OPS_NO_POSTGRES.into()));
    files
}

fn ip(sandbox: &TestSandbox, pod: &str) -> String {
    str_of(&sandbox.endpoint(pod)["endpoint"]["ipv4"]).to_owned()
}

/// `nc` to `addr` 5432 from `pod`: whether the connection opened.
fn connects(sandbox: &TestSandbox, pod: &str, addr: &str) -> bool {
    let nc = format!("nc -w 2 {addr} 5432 </dev/null");
    sandbox.exec(pod, &["sh", "-c", &nc]).status.success()
}

/// Waits for a flow among `porin observe ARGS --last 2000` that `pick` accepts; panics
/// with the flows seen and the agents' logs otherwise.
fn find_flow(
    sandbox: &TestSandbox,
    args: &[&str],
    what: &str,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    let mut all = vec!["--last", "2000"];
    all.extend_from_slice(args);
    wait_for(Duration::from_secs(15), || {
        sandbox.observe(&all).into_iter().find(|f| pick(f))
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: no such flow among {:#?}\nagent logs:\n{}",
            sandbox.observe(&all),
            sandbox.agent_logs()
        )
    })
}

fn between(f: &Value, src: &str, dst: &str) -> bool {
    f["source"]["pod_name"] == src && f["destination"]["pod_name"] == dst
}

/// The single policy of a `*_allowed_by` / `*_denied_by` list: (kind, namespace, name).
fn named(list: &Value) -> (String, String, String) {
    let all = list.as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 1, "one policy expected: {list}");
    let p = &all[0];
    (
        str_of(&p["kind"]).to_owned(),
        p["namespace"].as_str().unwrap_or_default().to_owned(),
        str_of(&p["name"]).to_owned(),
    )
}

#[test]
fn flows_name_the_policy_that_allowed_or_denied_them() {
    common::assert_root();
    let files = files();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let sandbox = TestSandbox::up_with(&files, Some(AGENT_CONFIG));
    let postgres = ip(&sandbox, "payments/postgres");

    // Allowed: payments-api (node-1) -> postgres (node-2).
    let ok = wait_for(Duration::from_secs(15), || {
        connects(&sandbox, "payments/payments-api", &postgres).then_some(())
    });
    assert!(
        ok.is_some(),
        "payments-api must reach postgres\n{}",
        sandbox.agent_logs()
    );
    let verdicts = ["--type", "policy-verdict"];
    let egress = find_flow(&sandbox, &verdicts, "egress verdict", |f| {
        between(f, "payments-api", "postgres") && f["traffic_direction"] == "EGRESS"
    });
    assert_eq!(egress["verdict"], "FORWARDED", "{egress}");
    assert_eq!(egress["event_type"]["type"], 5, "{egress}");
    assert_eq!(egress["Type"], "L3_L4", "{egress}");
    assert_eq!(egress["policy_match_type"], 2, "L3-L4: {egress}");
    assert_eq!(
        named(&egress["egress_allowed_by"]),
        (
            "CiliumNetworkPolicy".into(),
            "payments".into(),
            "payments-egress".into()
        )
    );
    let labels = egress["egress_allowed_by"][0]["labels"].to_string();
    for l in [
        "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
        "k8s:io.cilium.k8s.policy.name=payments-egress",
        "k8s:io.cilium.k8s.policy.namespace=payments",
    ] {
        assert!(labels.contains(l), "{l} in {labels}");
    }
    // protojson writes uint64 as a string.
    let revision = egress["egress_allowed_by"][0]["revision"]
        .as_str()
        .and_then(|r| r.parse::<u64>().ok());
    assert!(revision >= Some(1), "{egress}");
    assert!(egress.get("ingress_allowed_by").is_none(), "{egress}");
    let ingress = find_flow(&sandbox, &verdicts, "ingress verdict", |f| {
        between(f, "payments-api", "postgres") && f["traffic_direction"] == "INGRESS"
    });
    assert_eq!(
        named(&ingress["ingress_allowed_by"]),
        (
            "CiliumNetworkPolicy".into(),
            "payments".into(),
            "require-mtls".into()
        )
    );
    assert_eq!(
        ingress["policy_match_type"], 1,
        "fromEntities: L3-Only: {ingress}"
    );

    // `porin policy get` shows the id each policy's map entries carry: one per policy.
    let got = sandbox.porin_json(&["policy", "get", "--node", "node-1"]);
    let ids: Vec<u64> = got[0]["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        ids.len() == 5 && distinct.len() == 5 && !ids.contains(&0),
        "{got}"
    );

    // Denied by the CCNP's egressDeny, at ops-toolbox's egress (node-2).
    assert!(
        !connects(&sandbox, "ops/ops-toolbox", &postgres),
        "ops-toolbox must not reach postgres"
    );
    let denied = find_flow(&sandbox, &["--verdict", "DROPPED"], "deny drop", |f| {
        between(f, "ops-toolbox", "postgres") && f["drop_reason_desc"] == "POLICY_DENY"
    });
    assert_eq!(denied["drop_reason"], 181, "{denied}");
    assert_eq!(denied["traffic_direction"], "EGRESS", "{denied}");
    assert_eq!(
        named(&denied["egress_denied_by"]),
        (
            "CiliumClusterwideNetworkPolicy".into(),
            String::new(),
            "ops-no-postgres".into()
        )
    );

    // Default deny: payments-admin-api has no egress rule; nothing is named.
    assert!(
        !connects(&sandbox, "payments/payments-admin-api", &postgres),
        "payments-admin-api must not reach postgres"
    );
    let default = find_flow(
        &sandbox,
        &["--verdict", "DROPPED"],
        "default-deny drop",
        |f| between(f, "payments-admin-api", "postgres"),
    );
    assert_eq!(default["drop_reason"], 133, "{default}");
    assert_eq!(default["drop_reason_desc"], "POLICY_DENIED", "{default}");
    for field in ["egress_denied_by", "ingress_denied_by", "egress_allowed_by"] {
        assert!(default.get(field).is_none(), "{field}: {default}");
    }

    // `--type policy-verdict` returns policy verdicts only; compact lines read like hubble's.
    let only = sandbox.observe(&["--last", "2000", "--type", "policy-verdict"]);
    assert!(
        only.iter().all(|f| f["event_type"]["type"] == 5),
        "{only:#?}"
    );
    let out = sandbox.porin(&["observe", "--last", "2000", "--type", "policy-verdict"]);
    let compact = String::from_utf8_lossy(&out.stdout);
    assert!(
        compact.lines().any(|l| l.contains("payments/payments-api")
            && l.contains("policy-verdict:L3-L4 EGRESS ALLOWED")),
        "{compact}"
    );

    // hubble_policy_verdicts_total on node-1 (payments-api's egress, admin API's drop).
    let counted = wait_for(Duration::from_secs(10), || {
        let text = sandbox.hubble_metrics("node-1");
        let allowed = metric_value(
            &text,
            "hubble_policy_verdicts_total",
            &[
                r#"direction="egress""#,
                r#"match="l3-l4""#,
                r#"action="forwarded""#,
            ],
        )?;
        let dropped = metric_value(
            &text,
            "hubble_policy_verdicts_total",
            &[
                r#"direction="egress""#,
                r#"match="none""#,
                r#"action="dropped""#,
            ],
        )?;
        (allowed >= 1.0 && dropped >= 1.0).then_some(text)
    });
    assert!(
        counted.is_some(),
        "hubble_policy_verdicts_total on node-1:\n{}",
        sandbox.hubble_metrics("node-1")
    );
    sandbox.down_and_check();
}
