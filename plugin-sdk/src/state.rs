//! A read-only view of the cluster state for plugins.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The address of a pod, on this or another node, as core knows it: local endpoints it
/// wired itself and the CiliumEndpoints other nodes published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub namespace: String,
    pub pod_name: String,
    pub ip: IpAddr,
}

/// An endpoint of this node, as the datapath knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Endpoint id (the key of the datapath's per-endpoint maps).
    pub id: u32,
    pub namespace: String,
    pub pod_name: String,
    pub identity: u32,
    /// Security labels in Cilium's `source:key=value` form.
    pub labels: Vec<String>,
}

/// A security identity known to the agent (reserved ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    pub id: u32,
    /// Labels in Cilium's `source:key=value` form.
    pub labels: Vec<String>,
}

/// The cluster state at one generation. Implemented by core over its snapshot; each call
/// returns owned copies so a plugin never holds the store's lock.
pub trait ClusterState: Send + Sync {
    /// The generation of the store this view was taken at.
    fn generation(&self) -> u64;

    /// Every Service.
    fn services(&self) -> Vec<Service>;

    /// Every EndpointSlice (`discovery.k8s.io/v1`).
    fn endpoint_slices(&self) -> Vec<EndpointSlice>;

    /// One Service by namespace and name (for incremental work: no full copy).
    fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        self.services().into_iter().find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// One EndpointSlice by namespace and name.
    fn endpoint_slice(&self, namespace: &str, name: &str) -> Option<EndpointSlice> {
        self.endpoint_slices().into_iter().find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// The EndpointSlices of one Service (label `kubernetes.io/service-name`).
    fn endpoint_slices_of(&self, namespace: &str, service: &str) -> Vec<EndpointSlice> {
        self.endpoint_slices()
            .into_iter()
            .filter(|s| slice_belongs_to(s, namespace, service))
            .collect()
    }

    /// Every Pod.
    fn pods(&self) -> Vec<Pod>;

    /// Every pod address core knows.
    fn pod_addresses(&self) -> Vec<PodAddress>;

    /// The endpoints of this node, ordered by id.
    fn local_endpoints(&self) -> Vec<LocalEndpoint> {
        Vec::new()
    }

    /// Every identity the agent knows, cluster-wide, reserved ones included, ordered by id.
    fn identities(&self) -> Vec<IdentityInfo> {
        Vec::new()
    }

    /// Every Node, this one included, as published (pod CIDR, addresses, annotations).
    fn nodes(&self) -> Vec<Node> {
        Vec::new()
    }

    /// Every Namespace (their labels feed `io.cilium.k8s.namespace.labels.*`).
    fn namespaces(&self) -> Vec<Namespace> {
        Vec::new()
    }

    /// Every NetworkPolicy, CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy as the
    /// whole document a user wrote (`apiVersion`, `kind`, `metadata`, `spec`/`specs`), in
    /// key order: what the policy parser reads.
    fn policy_documents(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// A cluster with nothing in it: for tests and for contexts without a store.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyState;

impl ClusterState for EmptyState {
    fn generation(&self) -> u64 {
        0
    }
    fn services(&self) -> Vec<Service> {
        Vec::new()
    }
    fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        Vec::new()
    }
    fn pods(&self) -> Vec<Pod> {
        Vec::new()
    }
    fn pod_addresses(&self) -> Vec<PodAddress> {
        Vec::new()
    }
}

/// Whether an EndpointSlice belongs to the Service `namespace/service`.
pub fn slice_belongs_to(slice: &EndpointSlice, namespace: &str, service: &str) -> bool {
    slice.metadata.namespace.as_deref().unwrap_or("default") == namespace
        && slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .is_some_and(|n| n == service)
}
