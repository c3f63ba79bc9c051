//! The datastore interface: where the store's objects come from, and where
//! this node's own objects are published.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::cilium_types::PolicyCondition;
use super::objects::{Kind, Object, ObjectKey};
use super::store::StateStore;

/// A source of cluster state (a manifest directory, the API server).
///
/// Every agent reads everything; each writes only its own node's objects:
/// its `Node`, its `CiliumNode` and the `CiliumEndpoint`s of its pods, so other agents learn
/// this node's pod IPs and identities.
pub trait Datastore: Send + Sync + 'static {
    /// Short name for logs and `porin status` (`local`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Feeds `store` until `shutdown` is cancelled. Transient failures are
    /// retried inside; an error return means the datastore cannot go on.
    fn run(
        self: Arc<Self>,
        store: StateStore,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DatastoreError>>;

    /// Publishes (creates or replaces) one object this node owns.
    fn publish(&self, object: Object) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Withdraws an object this node published. Withdrawing an unknown
    /// object is not an error.
    fn withdraw(&self, key: ObjectKey) -> BoxFuture<'_, Result<(), DatastoreError>>;

    /// Sets one status condition of a policy object (not this node's: every agent parses
    /// the same spec, so agents agree). Datastores without statuses (a manifest
    /// directory) ignore it.
    fn write_policy_condition(
        &self,
        _key: ObjectKey,
        _condition: PolicyCondition,
    ) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Failures of datastores.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serializing {key} for publishing: {source}")]
    Serialize {
        key: ObjectKey,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{key}: {operation} through the API server failed: {source}")]
    Kube {
        key: ObjectKey,
        operation: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("connecting to the API server: {0}")]
    Client(#[source] Box<kube::Error>),
    #[error(
        "node {node} cannot publish {key}: a node publishes only its own Node, CiliumNode and CiliumEndpoints"
    )]
    NotOwned { node: String, key: ObjectKey },
    #[error("cannot publish {key}: the local datastore has no runtime directory")]
    NoRuntimeDir { key: ObjectKey },
    #[error("datastore task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Checks that `node` may publish `key`: its own Node or CiliumNode, or any CiliumEndpoint
/// (the caller creates those only for pods it hosts).
pub fn check_owned(node: &str, key: &ObjectKey) -> Result<(), DatastoreError> {
    match key.kind {
        Kind::Node | Kind::CiliumNode if key.name == node => Ok(()),
        Kind::CiliumEndpoint if key.namespace.is_some() && !key.name.is_empty() => Ok(()),
        _ => Err(DatastoreError::NotOwned {
            node: node.to_owned(),
            key: key.clone(),
        }),
    }
}
