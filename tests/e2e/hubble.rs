//! End to end: `porin observe` reads the agents' Hubble API (gRPC on the
//! observe plugin's unix socket) and the server filters: flows of real pod
//! traffic name the right endpoints, verdict and event type; `--verdict DROPPED`
//! returns only drops.

mod common;

use std::time::Duration;

use common::{SHOP_WEB_AND_CLIENT as PODS, TestSandbox, str_of, wait_for};
use serde_json::Value;

/// `porin observe ARGS -o json`: every line a GetFlowsResponse.
fn observe(sandbox: &TestSandbox, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["observe", "-o", "json", "--last", "500"];
    all.extend_from_slice(args);
    let out = sandbox.porin(&all);
    assert!(
        out.status.success(),
        "porin {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("GetFlowsResponse JSON"))
        .collect()
}

#[test]
fn observe_over_grpc_filters_on_the_server() {
    common::assert_root();
    let sandbox = TestSandbox::up(&[("10-pods.yaml", PODS)]);
    let web = str_of(&sandbox.endpoint("shop/web")["endpoint"]["ipv4"]).to_string();
    common::fetch_from_client(&sandbox, &web);

    // Flows to web, as GetFlowsResponses in protojson with proto field names.
    let responses = wait_for(Duration::from_secs(5), || {
        let r = observe(
            &sandbox,
            &["--to-pod", "shop/web", "--type", "trace:to-endpoint"],
        );
        (!r.is_empty()).then_some(r)
    })
    .expect("flows to shop/web");
    for r in &responses {
        let f = &r["flow"];
        assert_eq!(r["node_name"], f["node_name"], "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        assert_eq!(f["destination"]["pod_name"], "web", "{r}");
        assert_eq!(f["destination"]["namespace"], "shop", "{r}");
        assert_eq!(f["event_type"]["type"], 4, "{r}");
        assert_eq!(f["trace_observation_point"], "TO_ENDPOINT", "{r}");
        assert_eq!(f["node_name"], "node-1", "{r}");
    }
    let syn = responses
        .iter()
        .map(|r| &r["flow"])
        .find(|f| f["l4"]["TCP"]["flags"]["SYN"] == true && f["source"]["pod_name"] == "client")
        .unwrap_or_else(|| panic!("no SYN from client among {responses:#?}"));
    assert_eq!(syn["verdict"], "FORWARDED");
    assert_eq!(syn["traffic_direction"], "INGRESS");
    assert_eq!(syn["l4"]["TCP"]["destination_port"], 8080);
    assert_eq!(syn["Type"], "L3_L4");
    assert_eq!(syn["IP"]["destination"], web.as_str());
    assert!(syn["uuid"].as_str().is_some_and(|u| u.len() == 36), "{syn}");

    // Label, port and IP flags on live flows (the full table of flags runs over
    // recorded flows: src/cli/observe/filter_table.rs).
    let client_ip = str_of(&sandbox.endpoint("shop/client")["endpoint"]["ipv4"]).to_string();
    let labelled = observe(
        &sandbox,
        &[
            "--from-label",
            "k8s:app=client",
            "--to-port",
            "8080",
            "--from-ip",
            &client_ip,
        ],
    );
    assert!(
        !labelled.is_empty(),
        "no flows for --from-label k8s:app=client"
    );
    for r in &labelled {
        let f = &r["flow"];
        assert_eq!(f["source"]["pod_name"], "client", "{r}");
        assert_eq!(f["l4"]["TCP"]["destination_port"], 8080, "{r}");
        assert_eq!(f["IP"]["source"], client_ip.as_str(), "{r}");
    }

    // A malformed packet is dropped; --verdict DROPPED returns only drops.
    let send_truncated = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\ns.sendto(b'\\x30\\x39\\x15', ('{web}', 0))"
    );
    let out = sandbox.exec("shop/client", &["python3", "-c", &send_truncated]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drops = wait_for(Duration::from_secs(5), || {
        let r = observe(&sandbox, &["--verdict", "DROPPED"]);
        (!r.is_empty()).then_some(r)
    })
    .expect("DROPPED flows");
    for r in &drops {
        assert_eq!(r["flow"]["verdict"], "DROPPED", "{r}");
        assert_eq!(r["flow"]["event_type"]["type"], 1, "{r}");
    }
    assert!(
        drops
            .iter()
            .any(|r| r["flow"]["source"]["pod_name"] == "client"
                && r["flow"]["drop_reason_desc"] == "CT_TRUNCATED_OR_INVALID_HEADER"),
        "{drops:#?}"
    );
    // And the forwarded flows are still there without the filter.
    let all = observe(&sandbox, &["--pod", "shop/client"]);
    assert!(
        all.iter().any(|r| r["flow"]["verdict"] == "FORWARDED"),
        "{all:#?}"
    );
    sandbox.down_and_check();
}
