//! Core's implementation of the plugins' read-only [`ClusterState`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use porin_plugin_sdk::{ClusterState, PodAddress};

use super::cluster::ClusterView;
use crate::state::Snapshot;

/// One snapshot of the store plus the pod addresses of the agent's cluster view (local
/// endpoints and other nodes' CiliumEndpoints) taken at the same time.
pub struct SnapshotState {
    snapshot: Arc<Snapshot>,
    addresses: Vec<PodAddress>,
}

impl SnapshotState {
    pub fn new(snapshot: Arc<Snapshot>, view: &ClusterView) -> Self {
        let mut addresses: Vec<PodAddress> = view
            .by_ip
            .iter()
            .map(|(ip, meta)| PodAddress {
                namespace: meta.namespace.clone(),
                pod_name: meta.pod_name.clone(),
                ip: *ip,
            })
            .collect();
        // Stable order: plugins compare results between calls.
        addresses.sort_by(|a, b| {
            (&a.namespace, &a.pod_name, a.ip).cmp(&(&b.namespace, &b.pod_name, b.ip))
        });
        Self {
            snapshot,
            addresses,
        }
    }
}

impl ClusterState for SnapshotState {
    fn generation(&self) -> u64 {
        self.snapshot.generation()
    }

    fn services(&self) -> Vec<Service> {
        self.snapshot.services().cloned().collect()
    }

    fn endpoint_slices(&self) -> Vec<EndpointSlice> {
        self.snapshot.endpoint_slices().cloned().collect()
    }

    fn pods(&self) -> Vec<Pod> {
        self.snapshot.pods().cloned().collect()
    }

    fn pod_addresses(&self) -> Vec<PodAddress> {
        self.addresses.clone()
    }
}
