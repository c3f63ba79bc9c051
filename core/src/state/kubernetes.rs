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
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cilium_types::{CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy};
use super::datastore::{Datastore, DatastoreError, check_owned};
use super::objects::{Kind, Object, ObjectKey};
use super::store::{Issue, Severity, StateStore};

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
                CiliumEndpoint => CiliumEndpoint
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

    fn withdraw(&self, key: ObjectKey) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            check_owned(&self.node_name, &key)?;
            // Nodes belong to the kubelet: withdrawing one leaves it in place.
            let (Kind::CiliumEndpoint, Some(namespace)) = (key.kind, key.namespace.as_deref())
            else {
                return Ok(());
            };
            let api: Api<CiliumEndpoint> = Api::namespaced(self.client.clone(), namespace);
            match api.delete(&key.name, &DeleteParams::default()).await {
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

/// Lists and watches one kind into the store until `shutdown`. Watch errors
/// are retried with kube's default exponential backoff (0.8 s to 30 s); a
/// `410 Gone` makes the watcher relist, and the relist replaces the kind.
async fn watch_kind<K>(api: Api<K>, kind: Kind, store: StateStore, shutdown: CancellationToken)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    Object: From<K>,
{
    let source = source_id(kind);
    let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Vec<Object> = Vec::new();
    let mut failing = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
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
