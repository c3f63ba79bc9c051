//! The `kubernetes` datastore against the fake list/watch API server: every
//! kind's create, update and delete reach the store; namespace labels reach
//! pods' security labels; a dropped connection (API server restart) loses no
//! update; an agent writes only its own node's objects (CiliumNode with its
//! status subresource) and the status condition of a broken policy.

mod kube_api;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porin_core::identity::{PodLabelsInput, security_labels};
use porin_core::state::cilium_node::{AgentHealth, CiliumNodeStatus};
use porin_core::state::cilium_types::{POLICY_CONDITION_VALID, PolicyCondition};
use porin_core::state::{
    CiliumNode, Datastore, DatastoreError, Kind, KubernetesDatastore, ObjectKey, Snapshot,
    StateStore,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use kube_api::{FakeApi, NAMESPACES, PODS, Server, WAIT, wait_for};

const CILIUM_NODES: &str = "/apis/cilium.io/v2/ciliumnodes";
const CNPS: &str = "/apis/cilium.io/v2/ciliumnetworkpolicies";

/// One kind: its collection, key, and an object of it labelled `rev`.
struct Case {
    collection: &'static str,
    kind: Kind,
    namespaced: bool,
    api_version: &'static str,
    body: Value,
}

fn cases() -> Vec<Case> {
    let case = |collection, kind, namespaced, api_version, body| Case {
        collection,
        kind,
        namespaced,
        api_version,
        body,
    };
    vec![
        case(NAMESPACES, Kind::Namespace, false, "v1", json!({})),
        case(
            "/api/v1/nodes",
            Kind::Node,
            false,
            "v1",
            json!({"spec": {"podCIDR": "10.1.0.0/24"}}),
        ),
        case(
            PODS,
            Kind::Pod,
            true,
            "v1",
            json!({"spec": {"containers": [{"name": "c"}]}}),
        ),
        case(
            "/api/v1/services",
            Kind::Service,
            true,
            "v1",
            json!({"spec": {"ports": [{"port": 80}]}}),
        ),
        case(
            "/apis/discovery.k8s.io/v1/endpointslices",
            Kind::EndpointSlice,
            true,
            "discovery.k8s.io/v1",
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.1.0.9"]}]}),
        ),
        case(
            "/apis/networking.k8s.io/v1/networkpolicies",
            Kind::NetworkPolicy,
            true,
            "networking.k8s.io/v1",
            json!({"spec": {"podSelector": {}}}),
        ),
        case(
            CNPS,
            Kind::CiliumNetworkPolicy,
            true,
            "cilium.io/v2",
            json!({"spec": {"endpointSelector": {}}}),
        ),
        case(
            "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
            Kind::CiliumClusterwideNetworkPolicy,
            false,
            "cilium.io/v2",
            json!({"spec": {"endpointSelector": {}}}),
        ),
        case(
            "/apis/cilium.io/v2/ciliumendpoints",
            Kind::CiliumEndpoint,
            true,
            "cilium.io/v2",
            json!({"status": {"identity": {"id": 4242, "labels": []}}}),
        ),
        case(
            CILIUM_NODES,
            Kind::CiliumNode,
            false,
            "cilium.io/v2",
            json!({"spec": {"ipam": {"podCIDRs": ["10.1.0.0/24"]}}}),
        ),
    ]
}

impl Case {
    fn key(&self) -> ObjectKey {
        if self.namespaced {
            ObjectKey::namespaced(self.kind, "payments", "obj")
        } else {
            ObjectKey::cluster(self.kind, "obj")
        }
    }

    fn object(&self, rev: &str) -> Value {
        let mut object = self.body.clone();
        object["apiVersion"] = json!(self.api_version);
        object["kind"] = json!(self.kind.as_str());
        object["metadata"] = json!({"name": "obj", "labels": {"rev": rev}});
        if self.namespaced {
            object["metadata"]["namespace"] = json!("payments");
        }
        object
    }

    fn namespace(&self) -> &'static str {
        if self.namespaced { "payments" } else { "" }
    }
}

fn rev_of(snapshot: &Snapshot, key: &ObjectKey) -> Option<String> {
    snapshot
        .get(key)?
        .meta()
        .labels
        .as_ref()?
        .get("rev")
        .cloned()
}

struct Running {
    datastore: Arc<KubernetesDatastore>,
    store: StateStore,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DatastoreError>>,
}

fn start(server: &Server, node: &str) -> Running {
    let datastore = Arc::new(KubernetesDatastore::new(server.client(), node));
    let store = StateStore::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(datastore.clone().run(store.clone(), shutdown.clone()));
    Running {
        datastore,
        store,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("datastore stops on shutdown")
            .expect("join")
            .expect("datastore result");
    }
}

#[tokio::test]
async fn create_update_delete_of_every_kind_reach_the_store() {
    let api = FakeApi::default();
    let server = Server::start(api.clone(), 0).await;
    let running = start(&server, "node-1");
    let store = &running.store;
    let cases = cases();
    assert_eq!(cases.len(), Kind::ALL.len(), "every kind has a case");

    for case in &cases {
        api.upsert(case.collection, case.object("1"), true);
    }
    wait_for(store, "every kind created", |s| {
        cases
            .iter()
            .all(|c| rev_of(s, &c.key()).as_deref() == Some("1"))
    })
    .await;

    for case in &cases {
        api.upsert(case.collection, case.object("2"), true);
    }
    wait_for(store, "every kind updated", |s| {
        cases
            .iter()
            .all(|c| rev_of(s, &c.key()).as_deref() == Some("2"))
    })
    .await;

    for case in &cases {
        api.remove(case.collection, case.namespace(), "obj", true)
            .unwrap_or_else(|| panic!("{} stored", case.kind));
    }
    wait_for(store, "every kind deleted", |s| {
        cases.iter().all(|c| s.get(&c.key()).is_none())
    })
    .await;
    assert!(store.issues().is_empty(), "{:?}", store.issues());
    running.stop().await;
}

fn pod_labels(snapshot: &Snapshot) -> String {
    let pod = snapshot.pod("payments", "api").expect("pod");
    let empty = Default::default();
    let namespace_labels = snapshot
        .namespace("payments")
        .and_then(|n| n.metadata.labels.as_ref())
        .unwrap_or(&empty);
    let labels = security_labels(&PodLabelsInput {
        namespace: "payments",
        pod_labels: pod.metadata.labels.as_ref().unwrap_or(&empty),
        namespace_labels,
        service_account: None,
        cluster: "default",
    });
    format!("{labels:?}")
}

#[tokio::test]
async fn namespace_labels_reach_pod_security_labels() {
    let api = FakeApi::default();
    let namespace = |team: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "payments", "labels": {"team": team}}})
    };
    api.upsert(NAMESPACES, namespace("red"), true);
    api.upsert(
        PODS,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "api", "namespace": "payments", "labels": {"app": "api"}},
               "spec": {"containers": [{"name": "c"}]}}),
        true,
    );
    let server = Server::start(api.clone(), 0).await;
    let running = start(&server, "node-1");
    let snapshot = wait_for(&running.store, "pod and namespace", |s| {
        s.pod("payments", "api").is_some() && s.namespace("payments").is_some()
    })
    .await;
    let before = pod_labels(&snapshot);
    assert!(
        before.contains("io.cilium.k8s.namespace.labels.team") && before.contains("red"),
        "{before}"
    );

    api.upsert(NAMESPACES, namespace("blue"), true);
    let snapshot = wait_for(&running.store, "namespace relabelled", |s| {
        s.namespace("payments")
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get("team"))
            .is_some_and(|t| t == "blue")
    })
    .await;
    let after = pod_labels(&snapshot);
    assert!(after.contains("blue") && !after.contains("red"), "{after}");
    running.stop().await;
}

fn pod(name: &str, rev: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "payments", "labels": {"rev": rev}},
           "spec": {"containers": [{"name": "c"}]}})
}

fn pods(s: &Snapshot) -> Vec<(String, String)> {
    s.pods()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let rev = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("rev").cloned())
                .unwrap_or_default();
            (name, rev)
        })
        .collect()
}

#[tokio::test]
async fn a_dropped_connection_loses_no_update() {
    let api = FakeApi::default();
    api.upsert(PODS, pod("a", "1"), true);
    api.upsert(PODS, pod("b", "1"), true);
    let server = Server::start(api.clone(), 0).await;
    let port = server.port;
    let running = start(&server, "node-1");
    wait_for(&running.store, "initial list", |s| pods(s).len() == 2).await;

    // The API server goes away with its connections; changes happen meanwhile.
    server.stop(&api);
    api.remove(PODS, "payments", "a", true);
    api.upsert(PODS, pod("b", "2"), true);
    api.upsert(PODS, pod("c", "1"), true);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        pods(&running.store.snapshot()).len(),
        2,
        "nothing arrives while down"
    );

    // Back on the same address: the watch resumes and every change arrives.
    let _server = Server::start(api.clone(), port).await;
    let expected = vec![
        ("b".to_owned(), "2".to_owned()),
        ("c".to_owned(), "1".to_owned()),
    ];
    wait_for(&running.store, "changes made while down", |s| {
        pods(s) == expected
    })
    .await;
    api.upsert(PODS, pod("d", "1"), true);
    wait_for(&running.store, "a change after the restart", |s| {
        pods(s).len() == 3
    })
    .await;
    // The watch errors of every kind clear although most kinds saw no event.
    tokio::time::timeout(WAIT, async {
        while !running.store.issues().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("issues stay: {:?}", running.store.issues()));
    running.stop().await;
}

#[tokio::test]
async fn an_agent_writes_its_own_ciliumnode_and_policy_conditions_only() {
    let api = FakeApi::default();
    let server = Server::start(api.clone(), 0).await;
    let running = start(&server, "node-1");
    let datastore = &running.datastore;

    let mut node = CiliumNode::for_agent(
        "node-1",
        "10.1.0.0/24".parse().expect("cidr"),
        "192.168.0.1".parse().expect("ip"),
        [("network.porin.io/wg-pub-key".to_owned(), "key=".to_owned())].into(),
    );
    node.status = Some(CiliumNodeStatus {
        agent: Some(AgentHealth {
            state: "Ok".into(),
            ..Default::default()
        }),
    });
    datastore
        .publish(node.clone().into())
        .await
        .expect("publish own CiliumNode");
    let stored = api.get(CILIUM_NODES, "", "node-1").expect("stored");
    assert_eq!(stored["spec"]["ipam"]["podCIDRs"][0], "10.1.0.0/24");
    assert_eq!(
        stored["status"]["agent"]["state"], "Ok",
        "status went through the subresource"
    );
    let snapshot = wait_for(&running.store, "own CiliumNode watched back", |s| {
        s.cilium_node("node-1").is_some()
    })
    .await;
    let watched = snapshot.cilium_node("node-1").expect("node");
    assert_eq!(watched.spec, node.spec);

    // Another node's CiliumNode is refused before any request.
    let mut other = node.clone();
    other.metadata = ObjectMeta {
        name: Some("node-2".into()),
        ..Default::default()
    };
    let error = datastore.publish(other.into()).await.expect_err("not ours");
    assert!(matches!(error, DatastoreError::NotOwned { .. }), "{error}");
    assert!(api.get(CILIUM_NODES, "", "node-2").is_none());

    // A policy that failed to parse gets a Valid=False condition.
    api.upsert(
        CNPS,
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
               "metadata": {"name": "broken", "namespace": "payments"},
               "spec": {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": "http"}]}]}]}}),
        true,
    );
    let key = ObjectKey::namespaced(Kind::CiliumNetworkPolicy, "payments", "broken");
    let condition = PolicyCondition {
        kind: POLICY_CONDITION_VALID.into(),
        status: "False".into(),
        reason: Some("ParseError".into()),
        message: Some("spec.ingress[0].toPorts[0].ports[0].port: `http` is not a port".into()),
        last_transition_time: None,
    };
    datastore
        .set_policy_condition(&key, condition.clone())
        .await
        .expect("set condition");
    let stored = api.get(CNPS, "payments", "broken").expect("policy");
    assert_eq!(stored["status"]["conditions"][0]["type"], "Valid");
    assert_eq!(stored["status"]["conditions"][0]["status"], "False");
    assert!(
        stored["spec"]["ingress"].is_array(),
        "the spec is left alone"
    );
    let snapshot = wait_for(&running.store, "condition watched back", |s| {
        s.cilium_network_policy("payments", "broken")
            .and_then(|p| p.status.as_ref())
            .is_some_and(|st| st.conditions == [condition.clone()])
    })
    .await;
    assert!(
        snapshot
            .cilium_network_policy("payments", "broken")
            .is_some()
    );

    // Withdrawing the CiliumNode deletes it.
    datastore
        .withdraw(ObjectKey::cluster(Kind::CiliumNode, "node-1"))
        .await
        .expect("withdraw");
    assert!(api.get(CILIUM_NODES, "", "node-1").is_none());
    running.stop().await;
}
