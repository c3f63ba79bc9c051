//! The `kubernetes` datastore: list/watch every kind through kube-rs and
//! publish this node's objects with server-side apply.
//!
//! Each kind is its own store source (`kubernetes/<Kind>`): a relist after a
//! watch error (e.g. `410 Gone`) replaces that kind atomically, so objects
//! deleted while the watch was down disappear too.

use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cilium_node::CiliumNode;
use super::cilium_types::{
    CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy, PolicyCondition,
    PolicyStatus,
};
use super::datastore::{Datastore, DatastoreError, check_owned};
use super::objects::{Kind, Object, ObjectKey};
use super::store::{Issue, Severity, StateStore};

/// How often a failing watch checks whether the API server answers again.
const RECOVERY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Field manager of the agent's server-side applies.
pub const FIELD_MANAGER: &str = "porin-agent";

/// The `kubernetes` datastore.
pub struct KubernetesDatastore {
    client: Client,
    node_name: String,
}

impl KubernetesDatastore {
    /// Uses `client` (built from in-cluster config, kubeconfig, or a test URL).
    pub fn new(client: Client, node_name: impl Into<String>) -> Self {
        KubernetesDatastore {
            client,
            node_name: node_name.into(),
        }
    }

    /// Connects with kube's default configuration (in-cluster or kubeconfig).
    pub async fn try_default(node_name: impl Into<String>) -> Result<Self, DatastoreError> {
        let client = Client::try_default()
            .await
            .map_err(|e| DatastoreError::Client(Box::new(e)))?;
        Ok(Self::new(client, node_name))
    }

    fn kube_error(key: &ObjectKey, operation: &'static str, source: kube::Error) -> DatastoreError {
        DatastoreError::Kube {
            key: key.clone(),
            operation,
            source: Box::new(source),
        }
    }
}

/// Source id of one watched kind.
pub fn source_id(kind: Kind) -> String {
    format!("kubernetes/{kind}")
}

/// Copy of `object` fit for server-side apply: no server-owned metadata.
fn for_apply<K: Resource + Clone>(object: &K) -> K {
    let mut object = object.clone();
    let meta = object.meta_mut();
    meta.resource_version = None;
    meta.managed_fields = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.generation = None;
    object
}

impl Datastore for KubernetesDatastore {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn run(
        self: Arc<Self>,
        store: StateStore,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DatastoreError>> {
        Box::pin(async move {
            let client = &self.client;
            let mut tasks = JoinSet::new();
            macro_rules! watch {
                ($($ty:ty => $kind:ident),*) => {$(
                    tasks.spawn(watch_kind::<$ty>(
                        Api::all(client.clone()),
                        Kind::$kind,
                        store.clone(),
                        shutdown.clone(),
                    ));
                )*};
            }
            watch!(
                Namespace => Namespace,
                Node => Node,
                Pod => Pod,
                Service => Service,
                EndpointSlice => EndpointSlice,
                NetworkPolicy => NetworkPolicy,
                CiliumNetworkPolicy => CiliumNetworkPolicy,
                CiliumClusterwideNetworkPolicy => CiliumClusterwideNetworkPolicy,
                CiliumEndpoint => CiliumEndpoint,
                CiliumNode => CiliumNode
            );
            while let Some(done) = tasks.join_next().await {
                done?;
            }
            Ok(())
        })
    }

    fn publish(&self, object: Object) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            let key = object.key();
            check_owned(&self.node_name, &key)?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match &object {
                Object::CiliumEndpoint(cep) => {
                    let namespace = key.namespace.as_deref().unwrap_or("default");
                    let api: Api<CiliumEndpoint> = Api::namespaced(self.client.clone(), namespace);
                    api.patch(&key.name, &params, &Patch::Apply(for_apply(&**cep)))
                        .await
                        .map_err(|e| Self::kube_error(&key, "server-side apply", e))?;
                }
                Object::CiliumNode(node) => {
                    let api: Api<CiliumNode> = Api::all(self.client.clone());
                    let applied = for_apply(&**node);
                    api.patch(&key.name, &params, &Patch::Apply(&applied))
                        .await
                        .map_err(|e| Self::kube_error(&key, "server-side apply", e))?;
                    // `status` is a subresource: the main apply does not write it.
                    if applied.status.is_some() {
                        api.patch_status(&key.name, &params, &Patch::Apply(&applied))
                            .await
                            .map_err(|e| Self::kube_error(&key, "status apply", e))?;
                    }
                }
                Object::Node(node) => {
                    let api: Api<Node> = Api::all(self.client.clone());
                    api.patch(&key.name, &params, &Patch::Apply(for_apply(&**node)))
                        .await
                        .map_err(|e| Self::kube_error(&key, "server-side apply", e))?;
                }
                _ => {
                    return Err(DatastoreError::NotOwned {
                        node: self.node_name.clone(),
                        key,
                    });
                }
            }
            debug!(%key, "published");
            Ok(())
        })
    }

    fn write_policy_condition(
        &self,
        key: ObjectKey,
        condition: PolicyCondition,
    ) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move { self.set_policy_condition(&key, condition).await })
    }

    fn withdraw(&self, key: ObjectKey) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            check_owned(&self.node_name, &key)?;
            // Nodes belong to the kubelet: withdrawing one leaves it in place.
            let deleted = match (key.kind, key.namespace.as_deref()) {
                (Kind::CiliumEndpoint, Some(namespace)) => {
                    Api::<CiliumEndpoint>::namespaced(self.client.clone(), namespace)
                        .delete(&key.name, &DeleteParams::default())
                        .await
                        .map(|_| ())
                }
                (Kind::CiliumNode, _) => Api::<CiliumNode>::all(self.client.clone())
                    .delete(&key.name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
                _ => return Ok(()),
            };
            match deleted {
                Ok(_) => {
                    debug!(%key, "withdrawn");
                    Ok(())
                }
                Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
                Err(e) => Err(Self::kube_error(&key, "delete", e)),
            }
        })
    }
}

impl KubernetesDatastore {
    /// Sets one condition in the `status` of a CiliumNetworkPolicy or
    /// CiliumClusterwideNetworkPolicy (server-side apply of the status
    /// subresource; conditions are a map keyed by type, so this replaces only
    /// `condition.kind`). Every agent parses the same spec, so agents agree.
    pub async fn set_policy_condition(
        &self,
        key: &ObjectKey,
        condition: PolicyCondition,
    ) -> Result<(), DatastoreError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let status = Some(PolicyStatus {
            conditions: vec![condition],
        });
        let mut meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(key.name.clone()),
            ..Default::default()
        };
        let result = match (key.kind, key.namespace.as_deref()) {
            (Kind::CiliumNetworkPolicy, Some(namespace)) => {
                meta.namespace = Some(namespace.to_owned());
                let patch = CiliumNetworkPolicy {
                    metadata: meta,
                    status,
                    ..Default::default()
                };
                Api::<CiliumNetworkPolicy>::namespaced(self.client.clone(), namespace)
                    .patch_status(&key.name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
            }
            (Kind::CiliumClusterwideNetworkPolicy, _) => {
                let patch = CiliumClusterwideNetworkPolicy {
                    metadata: meta,
                    status,
                    ..Default::default()
                };
                Api::<CiliumClusterwideNetworkPolicy>::all(self.client.clone())
                    .patch_status(&key.name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
            }
            _ => {
                return Err(DatastoreError::NotOwned {
                    node: self.node_name.clone(),
                    key: key.clone(),
                });
            }
        };
        result.map_err(|e| Self::kube_error(key, "status apply", e))?;
        debug!(%key, "policy condition set");
        Ok(())
    }
}

/// Lists and watches one kind into the store until `shutdown`. Watch errors
/// are retried with kube's default exponential backoff (0.8 s to 30 s); a
/// `410 Gone` makes the watcher relist, and the relist replaces the kind.
async fn watch_kind<K>(api: Api<K>, kind: Kind, store: StateStore, shutdown: CancellationToken)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    Object: From<K>,
{
    let source = source_id(kind);
    let probe_api = api.clone();
    let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Vec<Object> = Vec::new();
    let mut failing = false;
    // A re-established watch yields nothing until the kind changes, so while
    // failing a cheap probe (list, limit 1) tells when the API server answers
    // again and the reported issue can go.
    let mut probe = tokio::time::interval(RECOVERY_PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
            _ = probe.tick(), if failing => {
                if probe_api.list(&ListParams::default().limit(1)).await.is_ok() {
                    info!(%kind, "API server answers again");
                    failing = false;
                    store.set_issues(&source, Vec::new());
                }
                continue;
            }
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(error)) => {
                warn!(%kind, %error, "watch failed; retrying with backoff");
                failing = true;
                store.set_issues(
                    &source,
                    vec![Issue {
                        source: source.clone(),
                        severity: Severity::Error,
                        message: format!("watching {kind}: {error}"),
                    }],
                );
                continue;
            }
            None => {
                warn!(%kind, "watch stream ended");
                return;
            }
        };
        if failing {
            failing = false;
            store.set_issues(&source, Vec::new());
        }
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(object) => listing.push(object.into()),
            Event::InitDone => {
                info!(%kind, objects = listing.len(), "listed");
                store.replace_source(&source, std::mem::take(&mut listing));
            }
            Event::Apply(object) => store.apply(&source, object.into()),
            Event::Delete(object) => store.delete(&source, &Object::from(object).key()),
        }
    }
}
