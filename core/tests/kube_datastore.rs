//! The `kubernetes` datastore against a local fake API server speaking the
//! real list/watch protocol (JSON lists with `metadata.resourceVersion`,
//! chunked watch streams of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR lines).

mod kube_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porin_core::state::cilium_types::{CiliumEndpointStatus, EndpointIdentity};
use porin_core::state::{
    CiliumEndpoint, Datastore, Kind, KubernetesDatastore, ObjectKey, Snapshot, StateStore,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use kube_api::{ENDPOINTS, FakeApi, NAMESPACES, PODS, WAIT, serve, wait_for};

fn pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "payments", "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "10.1.0.5"},
    })
}

fn app(s: &Snapshot, name: &str) -> Option<String> {
    s.pod("payments", name)?
        .metadata
        .labels
        .as_ref()?
        .get("app")
        .cloned()
}

fn pod_names(s: &Snapshot) -> Vec<String> {
    s.pods().filter_map(|p| p.metadata.name.clone()).collect()
}

#[tokio::test]
async fn lists_watches_and_relists_after_gone() {
    let api = FakeApi::default();
    api.upsert(
        NAMESPACES,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}),
        true,
    );
    api.upsert(PODS, pod("a", "v1"), true);
    api.upsert(PODS, pod("b", "v1"), true);
    let port = serve(api.clone()).await;

    let url: hyper::Uri = format!("http://127.0.0.1:{port}").parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    let datastore = Arc::new(KubernetesDatastore::new(client, "node-1"));
    let store = StateStore::new();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(datastore.clone().run(store.clone(), shutdown.clone()));

    // Initial list.
    let snap = wait_for(&store, "initial list", |s| s.pods().count() == 2).await;
    assert!(snap.namespace("payments").is_some());
    assert_eq!(app(&snap, "a").as_deref(), Some("v1"));

    // Watch: modification and deletion.
    api.upsert(PODS, pod("a", "v2"), true);
    wait_for(&store, "modification", |s| {
        app(s, "a").as_deref() == Some("v2")
    })
    .await;
    api.remove(PODS, "payments", "b", true);
    wait_for(&store, "deletion", |s| s.pod("payments", "b").is_none()).await;

    // Changes the watcher never hears about, then 410 Gone: it must relist
    // and converge, dropping the object deleted behind its back.
    let lists_before = api.lists(PODS);
    api.remove(PODS, "payments", "a", false);
    api.upsert(PODS, pod("c", "v1"), false);
    assert!(store.snapshot().pod("payments", "a").is_some());
    api.expire_watches(PODS);
    let snap = wait_for(&store, "relist after 410", |s| pod_names(s) == ["c"]).await;
    assert!(snap.namespace("payments").is_some());
    assert!(api.lists(PODS) > lists_before, "no relist happened");

    // Watching continues after the relist.
    api.upsert(PODS, pod("d", "v1"), true);
    wait_for(&store, "event after relist", |s| pod_names(s) == ["c", "d"]).await;

    // Publishing goes through the API server and comes back through the watch.
    let cep = CiliumEndpoint {
        metadata: ObjectMeta {
            name: Some("c".into()),
            namespace: Some("payments".into()),
            ..Default::default()
        },
        status: Some(CiliumEndpointStatus {
            identity: Some(EndpointIdentity {
                id: 4242,
                labels: vec!["k8s:app=v1".into()],
            }),
            ..Default::default()
        }),
    };
    datastore.publish(cep.into()).await.expect("publish");
    let stored = api.state().collections.get(ENDPOINTS).map(BTreeMap::len);
    assert_eq!(stored, Some(1), "server-side apply reached the API server");
    let snap = wait_for(&store, "published endpoint", |s| {
        s.cilium_endpoints().count() == 1
    })
    .await;
    let got = snap.cilium_endpoint("payments", "c").expect("endpoint");
    assert_eq!(
        got.status
            .as_ref()
            .and_then(|s| s.identity.as_ref())
            .map(|i| i.id),
        Some(4242)
    );
    let key = ObjectKey::namespaced(Kind::CiliumEndpoint, "payments", "c");
    datastore.withdraw(key.clone()).await.expect("withdraw");
    wait_for(&store, "withdrawn endpoint", |s| {
        s.cilium_endpoints().count() == 0
    })
    .await;
    datastore
        .withdraw(key)
        .await
        .expect("withdrawing twice is fine");

    // The watch error of the 410 is no longer reported once recovered.
    assert!(store.issues().is_empty(), "{:?}", store.issues());

    shutdown.cancel();
    tokio::time::timeout(WAIT, running)
        .await
        .expect("datastore stops on shutdown")
        .expect("join")
        .expect("datastore result");
}
