//! Core's implementation of the plugins' read-only [`ClusterState`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use porin_plugin_sdk::{ClusterState, IdentityInfo, LocalEndpoint, PodAddress};
use serde_json::{Value, json};

use super::cluster::ClusterView;
use crate::identity::ReservedIdentity;
use crate::state::Snapshot;
use crate::state::cilium_types::CILIUM_API_VERSION;

/// One snapshot of the store plus the agent's cluster view (local endpoints, other nodes'
/// CiliumEndpoints, identities) taken at the same time.
pub struct SnapshotState {
    snapshot: Arc<Snapshot>,
    addresses: Vec<PodAddress>,
    local: Vec<LocalEndpoint>,
    identities: Vec<IdentityInfo>,
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
        // Endpoints of other nodes carry id 0; an endpoint with two addresses appears once.
        let local: BTreeMap<u32, LocalEndpoint> = view
            .by_ip
            .values()
            .filter(|m| m.id != 0)
            .map(|m| {
                let ep = LocalEndpoint {
                    id: m.id,
                    namespace: m.namespace.clone(),
                    pod_name: m.pod_name.clone(),
                    identity: m.identity,
                    labels: m.labels.clone(),
                };
                (m.id, ep)
            })
            .collect();
        let mut identities: BTreeMap<u32, Vec<String>> = ReservedIdentity::ALL
            .into_iter()
            .map(|r| (r.id(), r.labels().to_strings()))
            .collect();
        for (id, labels) in &view.identity_labels {
            identities.entry(*id).or_insert_with(|| labels.clone());
        }
        Self {
            snapshot,
            addresses,
            local: local.into_values().collect(),
            identities: identities
                .into_iter()
                .map(|(id, labels)| IdentityInfo { id, labels })
                .collect(),
        }
    }
}

fn cilium_document(kind: &str, name: &Option<String>, namespace: Option<&String>) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(name) = name {
        metadata.insert("name".into(), json!(name));
    }
    if let Some(ns) = namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    json!({ "apiVersion": CILIUM_API_VERSION, "kind": kind, "metadata": metadata })
}

fn with_specs(mut doc: Value, spec: &Option<Value>, specs: &Option<Vec<Value>>) -> Value {
    if let Some(obj) = doc.as_object_mut() {
        if let Some(spec) = spec {
            obj.insert("spec".into(), spec.clone());
        }
        if let Some(specs) = specs {
            obj.insert("specs".into(), Value::Array(specs.clone()));
        }
    }
    doc
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

    fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        self.snapshot.service(namespace, name).cloned()
    }

    fn endpoint_slice(&self, namespace: &str, name: &str) -> Option<EndpointSlice> {
        self.snapshot.endpoint_slice(namespace, name).cloned()
    }

    fn endpoint_slices_of(&self, namespace: &str, service: &str) -> Vec<EndpointSlice> {
        self.snapshot
            .endpoint_slices()
            .filter(|s| porin_plugin_sdk::slice_belongs_to(s, namespace, service))
            .cloned()
            .collect()
    }

    fn pods(&self) -> Vec<Pod> {
        self.snapshot.pods().cloned().collect()
    }

    fn pod_addresses(&self) -> Vec<PodAddress> {
        self.addresses.clone()
    }

    fn local_endpoints(&self) -> Vec<LocalEndpoint> {
        self.local.clone()
    }

    fn identities(&self) -> Vec<IdentityInfo> {
        self.identities.clone()
    }

    fn nodes(&self) -> Vec<Node> {
        self.snapshot.nodes().cloned().collect()
    }

    fn namespaces(&self) -> Vec<Namespace> {
        self.snapshot.namespaces().cloned().collect()
    }

    fn policy_documents(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for knp in self.snapshot.network_policies() {
            // k8s-openapi writes apiVersion and kind itself.
            if let Ok(doc) = serde_json::to_value(knp) {
                out.push(doc);
            }
        }
        for cnp in self.snapshot.cilium_network_policies() {
            let m = &cnp.metadata;
            let doc = cilium_document("CiliumNetworkPolicy", &m.name, m.namespace.as_ref());
            out.push(with_specs(doc, &cnp.spec, &cnp.specs));
        }
        for ccnp in self.snapshot.clusterwide_policies() {
            let doc = cilium_document("CiliumClusterwideNetworkPolicy", &ccnp.metadata.name, None);
            out.push(with_specs(doc, &ccnp.spec, &ccnp.specs));
        }
        out
    }
}
