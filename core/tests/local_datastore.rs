//! The `local` datastore against real files in a temporary directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porin_core::state::cilium_types::{
    AddressPair, CiliumEndpointStatus, EndpointIdentity, EndpointNetworking,
};
use porin_core::state::{
    CiliumEndpoint, Datastore, Kind, LocalConfig, LocalDatastore, ObjectKey, Snapshot, StateStore,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    store: StateStore,
    datastore: Arc<LocalDatastore>,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(config: LocalConfig) -> Running {
    let config = LocalConfig {
        poll_interval: Duration::from_millis(50),
        ..config
    };
    let store = StateStore::new();
    let datastore = Arc::new(LocalDatastore::new(config));
    let shutdown = CancellationToken::new();
    tokio::spawn(datastore.clone().run(store.clone(), shutdown.clone()));
    Running {
        store,
        datastore,
        shutdown,
    }
}

async fn wait_for(
    store: &StateStore,
    what: &str,
    f: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    tokio::time::timeout(WAIT, store.wait_for(f))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn wait_errors(
    datastore: &LocalDatastore,
    what: &str,
    f: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let errors: Vec<String> = datastore.errors().into_iter().map(|i| i.message).collect();
        if f(&errors) {
            return errors;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod_yaml(port: &str, label: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: payments
---
apiVersion: v1
kind: Pod
metadata:
  name: api
  namespace: payments
  labels: {{app: {label}}}
spec:
  containers:
  - name: api
    image: api:1
    ports:
    - containerPort: {port}
"#
    )
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write manifest");
}

fn app_label(s: &Snapshot) -> Option<String> {
    s.pod("payments", "api")?
        .metadata
        .labels
        .as_ref()?
        .get("app")
        .cloned()
}

#[tokio::test]
async fn loads_reloads_and_removes_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nested/app.yml");
    write(&file, &pod_yaml("8080", "v1"));
    write(
        &dir.path().join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: payments}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n",
    );
    write(&dir.path().join("notes.txt"), "not yaml: [");
    let run = start(LocalConfig::new("node-1", vec![dir.path().to_owned()]));

    let snap = wait_for(&run.store, "initial load", |s| s.len() == 3).await;
    assert!(snap.namespace("payments").is_some());
    assert!(snap.service("payments", "api").is_some());
    assert_eq!(app_label(&snap).as_deref(), Some("v1"));
    let warnings = wait_errors(&run.datastore, "unknown kind warning", |e| !e.is_empty()).await;
    assert!(
        warnings[0].contains("document 2: unknown kind ConfigMap"),
        "{warnings:?}"
    );

    let mut changes = run.store.subscribe();
    write(&file, &pod_yaml("8080", "v2"));
    wait_for(&run.store, "reload", |s| {
        app_label(s).as_deref() == Some("v2")
    })
    .await;
    let change = changes.recv().await.expect("change");
    assert_eq!(
        change.key,
        ObjectKey::namespaced(Kind::Pod, "payments", "api")
    );
    assert_eq!(change.change, porin_core::state::ChangeKind::Modified);

    std::fs::remove_file(&file).expect("remove");
    let snap = wait_for(&run.store, "removal", |s| s.pods().count() == 0).await;
    assert!(snap.namespace("payments").is_none());
    assert!(snap.service("payments", "api").is_some());
}

#[tokio::test]
async fn broken_document_keeps_last_good_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x.yaml");
    write(&file, &pod_yaml("8080", "good"));
    let run = start(LocalConfig::new("node-1", vec![dir.path().to_owned()]));
    wait_for(&run.store, "initial load", |s| app_label(s).is_some()).await;

    write(&file, &pod_yaml("abc", "broken"));
    let errors = wait_errors(&run.datastore, "parse error", |e| !e.is_empty()).await;
    assert_eq!(
        errors,
        vec![format!(
            "{}: document 2 (Pod payments/api): spec.containers[0].ports[0].containerPort: invalid type: string \"abc\", expected i32",
            file.display()
        )]
    );
    assert_eq!(run.store.issues().len(), 1);
    let snap = run.store.snapshot();
    assert_eq!(app_label(&snap).as_deref(), Some("good"));
    assert!(snap.namespace("payments").is_some());

    write(&file, &pod_yaml("9090", "fixed"));
    wait_for(&run.store, "fixed file", |s| {
        app_label(s).as_deref() == Some("fixed")
    })
    .await;
    wait_errors(&run.datastore, "errors cleared", |e| e.is_empty()).await;
    assert!(run.store.issues().is_empty());
}

fn endpoint(name: &str, ip: &str) -> CiliumEndpoint {
    CiliumEndpoint {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("payments".into()),
            ..Default::default()
        },
        status: Some(CiliumEndpointStatus {
            id: Some(7),
            identity: Some(EndpointIdentity {
                id: 4242,
                labels: vec!["k8s:app=api".into()],
            }),
            networking: Some(EndpointNetworking {
                node: Some("10.0.0.1".into()),
                addressing: vec![AddressPair {
                    ipv4: Some(ip.into()),
                    ipv6: None,
                }],
            }),
            state: Some("ready".into()),
            policy: None,
        }),
    }
}

#[tokio::test]
async fn publish_and_withdraw_between_agents() {
    let manifests = tempfile::tempdir().expect("tempdir");
    let runtime = tempfile::tempdir().expect("tempdir");
    let node1 = start(
        LocalConfig::new("node-1", vec![manifests.path().to_owned()])
            .with_runtime_dir(runtime.path()),
    );
    let node2 = start(
        LocalConfig::new("node-2", vec![manifests.path().to_owned()])
            .with_runtime_dir(runtime.path()),
    );

    let cep = endpoint("api", "10.1.0.5");
    node1
        .datastore
        .publish(cep.clone().into())
        .await
        .expect("publish");
    let snap = wait_for(&node2.store, "endpoint on node-2", |s| {
        s.cilium_endpoint("payments", "api").is_some()
    })
    .await;
    assert_eq!(snap.cilium_endpoint("payments", "api"), Some(&cep));
    // The publisher sees its own objects like everyone else.
    wait_for(&node1.store, "endpoint on node-1", |s| {
        s.cilium_endpoints().count() == 1
    })
    .await;
    assert_eq!(
        node1.datastore.published_path(),
        Some(runtime.path().join("node-1.yaml"))
    );

    // A node may not publish another node's Node.
    let foreign = k8s_openapi::api::core::v1::Node {
        metadata: ObjectMeta {
            name: Some("node-2".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = node1
        .datastore
        .publish(foreign.into())
        .await
        .expect_err("foreign node");
    assert!(
        err.to_string().contains("cannot publish Node node-2"),
        "{err}"
    );

    // A restarted node-1 agent takes over its published file and withdraws.
    let restarted = LocalDatastore::new(
        LocalConfig::new("node-1", vec![manifests.path().to_owned()])
            .with_runtime_dir(runtime.path()),
    );
    restarted
        .withdraw(ObjectKey::namespaced(
            Kind::CiliumEndpoint,
            "payments",
            "api",
        ))
        .await
        .expect("withdraw");
    wait_for(&node2.store, "withdrawal on node-2", |s| {
        s.cilium_endpoints().count() == 0
    })
    .await;
    assert!(
        node1.datastore.errors().is_empty(),
        "{:?}",
        node1.datastore.errors()
    );
}
