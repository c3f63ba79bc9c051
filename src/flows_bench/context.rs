//! The agent as the observe plugin sees it, for the benchmark: a cluster of
//! 64 pods behind a lock, looked up and copied the way core's context does, and
//! the datapath event channel.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use porin_observe::flow::Enricher;
use porin_plugin_sdk::state::EmptyState;
use porin_plugin_sdk::{ClusterState, DatapathEvent, EndpointMeta, PluginContext};
use tokio::sync::broadcast;

use crate::source::{PODS_PER_NODE, pod_ip};

pub struct BenchContext {
    pods: RwLock<HashMap<IpAddr, EndpointMeta>>,
    pub events: broadcast::Sender<Arc<DatapathEvent>>,
    dir: PathBuf,
}

impl BenchContext {
    pub fn new(dir: PathBuf) -> Self {
        let mut pods = HashMap::new();
        for node in [1u8, 2] {
            for n in 0..PODS_PER_NODE {
                let app = format!("app-{}", n % 8);
                pods.insert(
                    IpAddr::V4(pod_ip(node, n)),
                    EndpointMeta {
                        id: 100 + u32::from(n),
                        namespace: format!("ns-{}", n % 4),
                        pod_name: format!("{app}-{node}-{n:03}"),
                        identity: 10_000 + u32::from(n % 8),
                        labels: vec![
                            format!("k8s:app={app}"),
                            format!("k8s:io.kubernetes.pod.namespace=ns-{}", n % 4),
                            "k8s:io.cilium.k8s.policy.cluster=default".to_string(),
                        ],
                        node_name: format!("node-{node}"),
                        workload: Some(("Deployment".to_string(), app)),
                    },
                );
            }
        }
        Self {
            pods: RwLock::new(pods),
            events: broadcast::channel(porin_core::agent::EVENT_CHANNEL_CAPACITY).0,
            dir,
        }
    }
}

impl Enricher for BenchContext {
    fn node_name(&self) -> &str {
        "node-1"
    }
    fn endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
        self.pods.read().ok()?.get(&ip).cloned()
    }
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
        (identity == 2).then(|| vec!["reserved:world".to_string()])
    }
}

impl PluginContext for BenchContext {
    fn node_name(&self) -> &str {
        "node-1"
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn run_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn map_pin_path(&self, map: &str) -> PathBuf {
        self.dir.join(map)
    }
    fn subscribe_events(&self) -> broadcast::Receiver<Arc<DatapathEvent>> {
        self.events.subscribe()
    }
    fn resolve_endpoint(&self, ip: IpAddr) -> Option<EndpointMeta> {
        Enricher::endpoint(self, ip)
    }
    fn identity_labels(&self, identity: u32) -> Option<Vec<String>> {
        Enricher::identity_labels(self, identity)
    }
    fn state(&self) -> Arc<dyn ClusterState> {
        Arc::new(EmptyState)
    }
}
