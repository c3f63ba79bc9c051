//! A read-only view of the cluster state for plugins.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The address of a pod, on this or another node, as core knows it: local endpoints it
/// wired itself and the CiliumEndpoints other nodes published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub namespace: String,
    pub pod_name: String,
    pub ip: IpAddr,
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

    /// Every Pod.
    fn pods(&self) -> Vec<Pod>;

    /// Every pod address core knows.
    fn pod_addresses(&self) -> Vec<PodAddress>;
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
