//! The watchable state store and the datastores that feed it.
//!
//! Datastores (`local` manifest directories, the `kubernetes` API server)
//! feed a [`StateStore`]; the rest of the agent reads [`Snapshot`]s and
//! subscribes to [`StateChange`]s. Every agent reads all objects but
//! publishes only its own node's (its Node and CiliumNode, its pods'
//! CiliumEndpoints, its entries in policy status).

pub mod cilium_node;
pub mod cilium_types;
pub mod crds;
pub mod datastore;
pub mod file_watch;
pub mod kubernetes;
pub mod local;
pub mod manifest;
pub mod objects;
pub mod snapshot;
pub mod store;

pub use cilium_node::CiliumNode;
pub use cilium_types::{CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy};
pub use datastore::{Datastore, DatastoreError};

pub use kubernetes::KubernetesDatastore;
pub use local::{LocalConfig, LocalDatastore};
pub use objects::{Kind, Object, ObjectKey};
pub use snapshot::Snapshot;
pub use store::{ChangeKind, Issue, Severity, StateChange, StateStore};
