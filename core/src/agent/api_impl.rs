//! The agent behind its API, and conversions between core's parts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::Ordering;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use porin_plugin_sdk::{DatapathEvent, Direction, EventKind, Verdict};
use tracing::{info, warn};

use super::cluster::{self, NODE_LABEL};
use super::endpoints::EndpointRecord;
use super::run::{Agent, lock};
use crate::api::{
    AddEndpointRequest, AgentApi, ApiError, DatapathStatus, DatastoreStatus, EndpointInfo,
    EndpointState, IdentityInfo, PluginStatus, StatusResponse,
};
use crate::config::AgentConfig;
use crate::datapath;
use crate::endpoint::links;
use crate::identity::ReservedIdentity;
use crate::ipcache::{IpcacheSink, SinkError, Source};
use crate::state::Object;
use crate::state::cilium_types::{
    AddressPair, CiliumEndpoint, CiliumEndpointStatus, EndpointIdentity, EndpointNetworking,
    EndpointPolicy,
};

impl AgentApi for Agent {
    fn set_plugin_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<crate::api::PluginToggle, ApiError> {
        Agent::set_plugin_enabled(self, name, enabled).map_err(|e| match e {
            super::error::AgentError::Toggle { .. } => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        })
    }

    fn maps(&self) -> Vec<crate::api::MapInfo> {
        self.map_list()
    }

    fn status(&self) -> StatusResponse {
        // One lock at a time: holding the datapath while taking the endpoints would
        // invert reconcile's order (endpoints, identities, datapath, ipcache) and deadlock.
        let plugins = lock(&self.plugins).statuses();
        let (pin_dir, attached_interfaces) = {
            let datapath = lock(&self.datapath);
            (
                datapath.node_pin_dir().display().to_string(),
                datapath.attached_interfaces(),
            )
        };
        let endpoints = lock(&self.endpoints).len();
        StatusResponse {
            node: self.config.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.ready.load(Ordering::SeqCst),
            uptime_seconds: self.started.elapsed().as_secs(),
            datastore: DatastoreStatus {
                kind: self.datastore_kind.to_string(),
                synced: self.synced.load(Ordering::SeqCst),
                errors: self
                    .store
                    .issues()
                    .iter()
                    .map(|i| format!("{}: {}", i.source, i.message))
                    .collect(),
            },
            datapath: DatapathStatus {
                loaded: true,
                pin_dir,
                attached_interfaces,
                error: None,
            },
            plugins,
            endpoints,
            identities: self.identities().len(),
            cluster_endpoints: self.view.read().map(|v| v.by_ip.len()).unwrap_or(0),
        }
    }

    fn endpoints(&self) -> Vec<EndpointInfo> {
        lock(&self.endpoints)
            .iter()
            .map(EndpointRecord::info)
            .collect()
    }

    fn identities(&self) -> Vec<IdentityInfo> {
        let mut out: BTreeMap<u32, IdentityInfo> = ReservedIdentity::ALL
            .iter()
            .map(|r| {
                (
                    r.id(),
                    IdentityInfo {
                        id: r.id(),
                        labels: r.labels().to_strings(),
                        reserved: true,
                    },
                )
            })
            .collect();
        for (id, labels, _refs) in lock(&self.identities).list() {
            out.insert(
                id,
                IdentityInfo {
                    id,
                    labels: labels.to_strings(),
                    reserved: false,
                },
            );
        }
        if let Ok(view) = self.view.read() {
            for (id, labels) in &view.identity_labels {
                out.entry(*id).or_insert_with(|| IdentityInfo {
                    id: *id,
                    labels: labels.clone(),
                    reserved: false,
                });
            }
        }
        out.into_values().collect()
    }

    fn plugins(&self) -> Vec<PluginStatus> {
        lock(&self.plugins).statuses()
    }

    fn plugin_status(&self, name: &str) -> Option<serde_json::Value> {
        lock(&self.plugins).plugin_status(name)
    }

    fn add_endpoint(&self, request: AddEndpointRequest) -> Result<EndpointInfo, ApiError> {
        validate(&request)?;
        let started = std::time::Instant::now();
        let key = format!("{}/{}", request.namespace, request.pod);
        let mut endpoints = lock(&self.endpoints);
        if let Some(existing) = endpoints.get_mut(&request.namespace, &request.pod) {
            if existing.netns == request.netns && links::link_exists(&existing.host_ifname) {
                if request.container_id.is_some() && existing.container_id != request.container_id {
                    existing.container_id.clone_from(&request.container_id);
                    let info = existing.info();
                    if let Err(e) = endpoints.persist() {
                        warn!(error = %e, "writing the endpoint record");
                    }
                    return Ok(info);
                }
                return Ok(existing.info());
            }
            // The pod got a new namespace (sandbox restarted it): start over.
            let old = existing.clone();
            let _ = lock(&self.datapath).detach_endpoint(&old.host_ifname);
            let _ = links::delete_pod_link(&old.host_ifname);
            endpoints.remove(&old.namespace, &old.pod);
        }
        let (id, ip) = endpoints
            .allocate(&request.namespace, &request.pod)
            .map_err(|e| ApiError::Internal(format!("{key}: {e}")))?;
        let host = links::host_ifname(&request.namespace, &request.pod);
        let ipv6 = endpoints.ipv6_of(ip);
        let addrs = links::PodAddrs { ipv4: ip, ipv6 };
        let link = match links::create_pod_link(
            &host,
            Path::new(&request.netns),
            &request.ifname,
            addrs,
        ) {
            Ok(link) => link,
            Err(e) => {
                endpoints.release(ip);
                return Err(match e {
                    links::LinkError::NoNetns(_) => ApiError::BadRequest(format!("{key}: {e}")),
                    _ => ApiError::Internal(format!("{key}: {e}")),
                });
            }
        };
        let linked = started.elapsed();
        let snapshot = self.store.snapshot();
        let labels = cluster::pod_security_labels(&snapshot, &request.namespace, &request.pod);
        let (identity, state, label_strings) = match &labels {
            Some(l) => match lock(&self.identities).allocate(l) {
                Ok(id) => (id, EndpointState::Ready, l.to_strings()),
                Err(e) => {
                    warn!(endpoint = %key, error = %e, "no identity yet");
                    (
                        ReservedIdentity::Init.id(),
                        EndpointState::WaitingForIdentity,
                        Vec::new(),
                    )
                }
            },
            None => (
                ReservedIdentity::Init.id(),
                EndpointState::WaitingForIdentity,
                Vec::new(),
            ),
        };
        {
            let mut datapath = lock(&self.datapath);
            if let Err(e) = datapath.attach_endpoint(&host) {
                let _ = links::delete_pod_link(&host);
                endpoints.release(ip);
                return Err(ApiError::Internal(format!(
                    "{key}: attaching programs to {host}: {e}"
                )));
            }
            let info = datapath::EndpointInfo {
                endpoint_id: id,
                ifindex: link.ifindex,
                identity,
            };
            for addr in std::iter::once(IpAddr::V4(ip)).chain(ipv6.map(IpAddr::V6)) {
                if let Err(e) = datapath.endpoints().and_then(|mut m| m.upsert(addr, info)) {
                    warn!(endpoint = %key, %addr, error = %e, "writing the endpoints map");
                }
            }
        }
        let record = EndpointRecord {
            id,
            namespace: request.namespace.clone(),
            pod: request.pod.clone(),
            ipv4: ip,
            ipv6,
            host_ifname: host,
            ifindex: link.ifindex,
            netns: request.netns.clone(),
            identity,
            labels: label_strings,
            state,
            container_id: request.container_id.clone(),
        };
        endpoints.insert(record.clone());
        if let Err(e) = endpoints.persist() {
            warn!(error = %e, "writing the endpoint record");
        }
        drop(endpoints);
        let attached = started.elapsed();
        for addr in record.addresses() {
            lock(&self.ipcache).upsert(IpNet::from(addr), identity, Source::LocalEndpoint);
        }
        // Its policy state is published by the status publisher's next round.
        lock(&self.endpoint_policy).remove(&id);
        let cep = cilium_endpoint(&self.config, &record, None);
        if let Err(e) = self.runtime.block_on(self.datastore.publish(cep)) {
            warn!(endpoint = %key, error = %e, "publishing the CiliumEndpoint");
        }
        let published = started.elapsed();
        self.reconcile(&porin_plugin_sdk::StateChangeSummary {
            kinds: vec!["CiliumEndpoint".to_string()],
            ..Default::default()
        });
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        info!(
            endpoint = %key, %ip, id, identity,
            link_ms = ms(linked),
            attach_ms = ms(attached - linked),
            publish_ms = ms(published - attached),
            reconcile_ms = ms(started.elapsed() - published),
            "endpoint created"
        );
        let endpoints = lock(&self.endpoints);
        Ok(endpoints
            .get(&request.namespace, &request.pod)
            .map_or_else(|| record.info(), EndpointRecord::info))
    }

    fn delete_endpoint(
        &self,
        namespace: &str,
        pod: &str,
        container_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let key = format!("{namespace}/{pod}");
        let record = {
            let mut endpoints = lock(&self.endpoints);
            let owner = endpoints
                .get(namespace, pod)
                .and_then(|e| e.container_id.as_deref());
            if let (Some(asked), Some(own)) = (container_id, owner)
                && own != asked
            {
                // A DEL for an older sandbox of the pod: the current one stays.
                info!(endpoint = %key, container = asked, owner = own, "endpoint belongs to another container; nothing to delete");
                return Ok(());
            }
            let Some(mut record) = endpoints.remove(namespace, pod) else {
                // DEL of an unknown endpoint succeeds, as CNI requires.
                return Ok(());
            };
            record.state = EndpointState::Disconnecting;
            if let Err(e) = endpoints.persist() {
                warn!(error = %e, "writing the endpoint record");
            }
            record
        };
        {
            let mut datapath = lock(&self.datapath);
            if let Err(e) = datapath.detach_endpoint(&record.host_ifname) {
                warn!(endpoint = %key, error = %e, "detaching programs");
            }
            for addr in record.addresses() {
                if let Err(e) = datapath.endpoints().and_then(|mut m| m.remove(addr)) {
                    warn!(endpoint = %key, %addr, error = %e, "removing from the endpoints map");
                }
            }
        }
        links::delete_pod_link(&record.host_ifname)
            .map_err(|e| ApiError::Internal(format!("{key}: {e}")))?;
        if record.identity >= 256 {
            let _ = lock(&self.identities).release(record.identity);
        }
        for addr in record.addresses() {
            lock(&self.ipcache).remove(IpNet::from(addr), Source::LocalEndpoint);
        }
        let cep_key = cilium_endpoint(&self.config, &record, None).key();
        if let Err(e) = self.runtime.block_on(self.datastore.withdraw(cep_key)) {
            warn!(endpoint = %key, error = %e, "withdrawing the CiliumEndpoint");
        }
        info!(endpoint = %key, "endpoint deleted");
        self.reconcile(&porin_plugin_sdk::StateChangeSummary {
            kinds: vec!["CiliumEndpoint".to_string()],
            ..Default::default()
        });
        Ok(())
    }
}

fn validate(request: &AddEndpointRequest) -> Result<(), ApiError> {
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !dns_label(&request.namespace) {
        return Err(ApiError::BadRequest(format!(
            "invalid namespace {:?}",
            request.namespace
        )));
    }
    if !dns_label(&request.pod) {
        return Err(ApiError::BadRequest(format!(
            "invalid pod name {:?}",
            request.pod
        )));
    }
    if request.ifname.is_empty() || request.ifname.len() > 15 {
        return Err(ApiError::BadRequest(format!(
            "invalid interface name {:?}",
            request.ifname
        )));
    }
    Ok(())
}

/// The CiliumEndpoint this node publishes for one of its pods.
pub(crate) fn cilium_endpoint(
    config: &AgentConfig,
    record: &EndpointRecord,
    policy: Option<EndpointPolicy>,
) -> Object {
    let mut labels = BTreeMap::new();
    labels.insert(NODE_LABEL.to_string(), config.node_name.clone());
    Object::from(CiliumEndpoint {
        metadata: ObjectMeta {
            name: Some(record.pod.clone()),
            namespace: Some(record.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        status: Some(CiliumEndpointStatus {
            id: Some(i64::from(record.id)),
            identity: Some(EndpointIdentity {
                id: i64::from(record.identity),
                labels: record.labels.clone(),
            }),
            networking: Some(EndpointNetworking {
                node: config.node_ip.map(|ip| ip.to_string()),
                addressing: vec![AddressPair {
                    ipv4: Some(record.ipv4.to_string()),
                    ipv6: record.ipv6.map(|ip| ip.to_string()),
                }],
            }),
            state: Some(record.state.as_str().to_string()),
            policy,
        }),
    })
}

/// This node's IPv6 side with dual stack (`[agent] enable_ipv6`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeV6 {
    pub pod_cidr: Ipv6Net,
    pub node_ip: Option<Ipv6Addr>,
}

impl NodeV6 {
    pub(crate) fn of(config: &AgentConfig) -> Option<Self> {
        if !config.enable_ipv6 {
            return None;
        }
        Some(Self {
            pod_cidr: config.pod_cidr_v6?,
            node_ip: config.node_ip_v6,
        })
    }
}

/// The Node object this node publishes, with the annotations plugins contribute
/// (e.g. `network.porin.io/wg-pub-key`). With dual stack, `spec.podCIDRs` and the
/// InternalIP addresses list the IPv6 ones after the IPv4 ones (as Kubernetes does).
pub(crate) fn node_object(
    name: &str,
    pod_cidr: Ipv4Net,
    node_ip: IpAddr,
    v6: Option<NodeV6>,
    annotations: BTreeMap<String, String>,
) -> Object {
    let mut pod_cidrs = vec![pod_cidr.to_string()];
    let mut addresses = vec![NodeAddress {
        type_: "InternalIP".to_string(),
        address: node_ip.to_string(),
    }];
    if let Some(v6) = v6 {
        pod_cidrs.push(v6.pod_cidr.to_string());
        if let Some(ip) = v6.node_ip {
            addresses.push(NodeAddress {
                type_: "InternalIP".to_string(),
                address: ip.to_string(),
            });
        }
    }
    Object::from(Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.to_string()),
            pod_cidrs: Some(pod_cidrs),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(addresses),
            ..NodeStatus::default()
        }),
    })
}

/// The datapath's decoded event in the plugins' terms.
pub fn to_sdk_event(e: &datapath::abi::FlowEvent) -> DatapathEvent {
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    DatapathEvent {
        ktime_ns: e.ktime_ns,
        kind: match e.event_type {
            datapath::abi::EventType::Drop => EventKind::Drop,
            datapath::abi::EventType::TcpFlags => EventKind::TcpFlags,
            datapath::abi::EventType::PolicyVerdict => EventKind::PolicyVerdict,
            datapath::abi::EventType::NewConnection => EventKind::NewFlow,
        },
        verdict: match e.verdict {
            datapath::abi::Verdict::Dropped => Verdict::Dropped,
            datapath::abi::Verdict::Audit => Verdict::Audit,
            datapath::abi::Verdict::Forwarded => Verdict::Forwarded,
        },
        drop_reason: e.drop_reason.map_or(0, |r| r.code()),
        direction: match e.direction {
            datapath::abi::Direction::Ingress => Direction::ToEndpoint,
            _ => Direction::FromEndpoint,
        },
        protocol: e.l4_proto,
        src: e.src.unwrap_or(unspecified),
        dst: e.dst.unwrap_or(unspecified),
        src_port: e.src_port,
        dst_port: e.dst_port,
        tcp_flags: e.tcp_flags,
        icmp_type: e.icmp_type,
        icmp_code: e.icmp_code,
        ifindex: e.ifindex,
        src_identity: e.src_identity,
        dst_identity: e.dst_identity,
        endpoint_id: e.endpoint_id,
        is_reply: e.is_reply,
        encrypted: e.encrypted,
        packet_len: e.pkt_len,
        policy_id: e.policy_id,
        policy_match: e.policy_match,
    }
}

/// A datapath counter sample in the metrics' terms.
pub(crate) fn to_metrics_sample(s: &datapath::CounterSample) -> crate::metrics::CounterSample {
    crate::metrics::CounterSample {
        reason: s.reason,
        direction: s.direction.map_or(0, |d| d.as_raw()),
        packets: s.packets,
        bytes: s.bytes,
    }
}

/// The BPF ipcache map as the userspace ipcache's sink.
pub(crate) struct IpcacheMap<'a>(pub &'a mut datapath::IpCache);

impl IpcacheSink for IpcacheMap<'_> {
    fn upsert(&mut self, prefix: IpNet, identity: u32) -> Result<(), SinkError> {
        self.0.upsert(prefix, identity, 0).map_err(Into::into)
    }

    fn remove(&mut self, prefix: IpNet) -> Result<(), SinkError> {
        self.0.remove(prefix).map_err(Into::into)
    }
}
