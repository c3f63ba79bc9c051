//! A real agent (`porin agent`, datastore = "kubernetes") against the fake list/watch
//! API server writes each CiliumNetworkPolicy's and CiliumClusterwideNetworkPolicy's
//! `Valid` status condition (through the status subresource): `False` with the field at
//! fault when the spec does not parse, `True` once it is fixed, as Cilium does; and its
//! CiliumNode's `status.agent` says the agent is degraded by them.

#[path = "../../core/tests/kube_api/mod.rs"]
mod kube_api;
mod kube_support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use kube_api::{FakeApi, NAMESPACES};

const CNPS: &str = "/apis/cilium.io/v2/ciliumnetworkpolicies";
const CCNPS: &str = "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies";
const CILIUM_NODES: &str = "/apis/cilium.io/v2/ciliumnodes";

fn cnp(name: &str, ingress: Value) -> Value {
    json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": ingress}})
}

/// The `Valid` condition of a stored object, once it has one.
fn valid(api: &FakeApi, collection: &str, namespace: &str, name: &str) -> Option<Value> {
    let object = api.get(collection, namespace, name)?;
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Valid")
        .cloned()
}

async fn wait_valid(
    api: &FakeApi,
    collection: &str,
    namespace: &str,
    name: &str,
    status: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = valid(api, collection, namespace, name)
            && c["status"] == status
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no Valid={status} condition: {:?}",
            api.get(collection, namespace, name)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_parse_errors_become_status_conditions() {
    let api = FakeApi::default();
    api.upsert(
        NAMESPACES,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        false,
    );
    let good_rule = json!([{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]);
    let bad_rule = json!([{"fromEndpointz": [{"matchLabels": {"app": "client"}}]}]);
    api.upsert(CNPS, cnp("good", good_rule.clone()), false);
    api.upsert(CNPS, cnp("broken", bad_rule), false);
    api.upsert(
        CCNPS,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "cluster-bad"},
               "spec": {"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"port": "99999"}]}]}]}}),
        false,
    );
    let running = kube_support::start("porin-polstat", "status-node", api.clone()).await;

    let good = wait_valid(&api, CNPS, "shop", "good", "True").await;
    assert_eq!(good["reason"], "Parsed", "{good}");
    let broken = wait_valid(&api, CNPS, "shop", "broken", "False").await;
    assert_eq!(broken["reason"], "ParseError", "{broken}");
    assert!(
        broken["message"]
            .as_str()
            .is_some_and(|m| m.contains("fromEndpointz")),
        "the message names the field: {broken}"
    );
    assert!(broken["lastTransitionTime"].is_string(), "{broken}");
    let cluster = wait_valid(&api, CCNPS, "", "cluster-bad", "False").await;
    assert!(
        cluster["message"]
            .as_str()
            .is_some_and(|m| m.contains("99999")),
        "{cluster}"
    );

    // The node's CiliumNode reports the agent degraded by the broken policies, through
    // the status subresource, naming the plugin and the fields.
    let deadline = Instant::now() + Duration::from_secs(20);
    let node = loop {
        let node = api.get(CILIUM_NODES, "", "status-node");
        let agent = node.as_ref().map(|n| n["status"]["agent"].clone());
        if let Some(agent) = agent.filter(|a| a["state"] == "Degraded") {
            break agent;
        }
        assert!(
            Instant::now() < deadline,
            "no Degraded agent status: {node:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let message = node["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("plugin policy") && message.contains("fromEndpointz"),
        "{node}"
    );
    assert!(node["lastUpdated"].is_string(), "{node}");

    // Fixed through the watch: the condition turns True.
    api.upsert(CNPS, cnp("broken", good_rule), true);
    let fixed = wait_valid(&api, CNPS, "shop", "broken", "True").await;
    assert!(fixed.get("message").is_none(), "{fixed}");
    // The spec the user wrote is untouched by the agent's status writes.
    let stored = api.get(CNPS, "shop", "broken").expect("stored");
    assert_eq!(
        stored["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["app"], "client",
        "{stored}"
    );
    drop(running);
}
