//! The services the datapath should serve, computed from cluster objects. Pure: no maps, no
//! I/O, so every Kubernetes rule below is unit-tested.
//!
//! Rules (Kubernetes' Service semantics, the part this slice serves):
//! - Services of type ClusterIP, and the ClusterIP part of NodePort and LoadBalancer, with
//!   an IPv4 `clusterIP`; headless (`None`) and ExternalName services are ignored.
//! - Every TCP or UDP port is its own frontend.
//! - NodePort and LoadBalancer services also get a NodePort frontend per `nodePort`:
//!   `0.0.0.0:nodePort` (every address of the node), same backends as the ClusterIP.
//! - `spec.externalIPs` (any type) and, for LoadBalancer, `status.loadBalancer.ingress[].ip`
//!   get a frontend `{IP, port}` per port with the NodePort's backends: served by the node's
//!   device program to clients whose packets for that IP are routed to a node.
//! - `externalTrafficPolicy: Local`: the NodePort frontend only has this node's backends
//!   (the datapath DNATs to a local backend without SNAT, so the backend sees the client's
//!   address; with none, the packet is dropped). `internalTrafficPolicy: Local`: the same for
//!   the ClusterIP frontend (with none, connections are refused). Local means an address of
//!   one of this node's endpoints ([`ClusterObjects::local_ips`]).
//! - Backends come from the service's EndpointSlices (label `kubernetes.io/service-name`):
//!   the slice port with the service port's name gives the backend port (this is how a
//!   named `targetPort` resolves); ready endpoints, or terminating-but-serving ones only
//!   when no endpoint is ready.
//! - `sessionAffinity: ClientIP` binds a client to its backend for
//!   `sessionAffinityConfig.clientIP.timeoutSeconds` (default: `[plugins.lb]
//!   session_affinity_timeout`), on every frontend of the Service.
//! - With no EndpointSlice at all and a selector, backends are the selected pods whose
//!   address core knows. The sandbox has no EndpointSlice controller: this is its stand-in
//!   (a real cluster always has slices for services with selectors).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use porin_core::datapath::LbFrontend;
use porin_plugin_sdk::PodAddress;

/// How a frontend is reached (`porin service list`'s TYPE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FrontendKind {
    #[default]
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl FrontendKind {
    /// The name `porin service list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::ExternalIp => "ExternalIP",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// What one frontend serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontendSpec {
    pub kind: FrontendKind,
    /// Sorted and without duplicates (empty: refuse connections).
    pub backends: Vec<SocketAddrV4>,
    /// `sessionAffinity: ClientIP`: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
}

/// Frontend -> what it serves.
pub type DesiredServices = BTreeMap<LbFrontend, FrontendSpec>;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Everything the computation reads.
pub struct ClusterObjects<'a> {
    pub services: &'a [Service],
    pub slices: &'a [EndpointSlice],
    pub pods: &'a [Pod],
    pub addresses: &'a [PodAddress],
    /// What this node adds: its local addresses and defaults.
    pub node: NodeView<'a>,
}

/// What the computation needs to know about this node.
#[derive(Clone, Copy)]
pub struct NodeView<'a> {
    /// The IPv4 addresses of this node's endpoints (`Local` traffic policies keep only
    /// backends among them).
    pub local_ips: &'a BTreeSet<Ipv4Addr>,
    /// Session affinity timeout of a Service that does not set one, in seconds.
    pub affinity_timeout: u32,
}

/// The frontends of one Service with their backends.
pub type ServiceFrontends = Vec<(LbFrontend, FrontendSpec)>;

/// A Service's namespace and name.
pub type ServiceKey = (String, String);

/// The desired frontends and backends.
pub fn desired_services(objects: &ClusterObjects<'_>) -> DesiredServices {
    desired_by_service(objects)
        .into_values()
        .flatten()
        .collect()
}

/// The desired frontends and backends of every Service, by Service.
pub fn desired_by_service(objects: &ClusterObjects<'_>) -> BTreeMap<ServiceKey, ServiceFrontends> {
    let pod_ips = pod_ipv4s(objects.addresses, objects.pods);
    // Indexed once: looking slices up per service would be O(services x slices).
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in objects.slices {
        if let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
            slices_by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = BTreeMap::new();
    for svc in objects.services {
        let Some(key) = service_key(svc) else {
            continue;
        };
        let slices = slices_by_service
            .get(&(key.0.as_str(), key.1.as_str()))
            .map_or(&[][..], Vec::as_slice);
        let frontends = service_frontends(svc, slices, objects.pods, &pod_ips, objects.node);
        out.insert(key, frontends);
    }
    out
}

/// `(namespace, name)` of a Service (None without a name).
pub fn service_key(svc: &Service) -> Option<ServiceKey> {
    let name = svc.metadata.name.clone()?;
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    Some((namespace, name))
}

/// The frontends of one Service, from its EndpointSlices or (with none) the pods its
/// selector picks (`pod_ips`: see [`pod_ipv4s`]).
pub fn service_frontends(
    svc: &Service,
    slices: &[&EndpointSlice],
    pods: &[Pod],
    pod_ips: &PodIps,
    node: NodeView<'_>,
) -> ServiceFrontends {
    let mut out = Vec::new();
    let Some(spec) = &svc.spec else {
        return out;
    };
    if !matches!(
        spec.type_.as_deref(),
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer")
    ) {
        return Vec::new();
    }
    // "None" (headless) and "" do not parse: ignored, as kube-proxy does.
    let Some(vip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity = client_ip_affinity(spec, node.affinity_timeout);
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let external_ips = ipv4s(spec.external_ips.iter().flatten().map(String::as_str));
    let ingress_ips = ipv4s(load_balancer_ips(svc));
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let local_only = |all: &FrontendSpec| FrontendSpec {
        backends: all
            .backends
            .iter()
            .filter(|b| node.local_ips.contains(b.ip()))
            .copied()
            .collect(),
        ..all.clone()
    };
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    for port in spec.ports.iter().flatten() {
        let Some((proto, proto_name)) = protocol(port) else {
            continue;
        };
        let Ok(vport) = u16::try_from(port.port) else {
            continue;
        };
        let mut backends = if !slices.is_empty() {
            from_slices(slices, port, proto_name)
        } else {
            from_selected_pods(pods, pod_ips, svc, namespace, port)
        };
        backends.sort();
        backends.dedup();
        let backends = FrontendSpec {
            kind: FrontendKind::ClusterIp,
            backends,
            affinity_timeout: affinity,
        };
        let mut external = |addr: Ipv4Addr, port: u16, kind: FrontendKind| {
            let mut spec = if external_local {
                local_only(&backends)
            } else {
                backends.clone()
            };
            spec.kind = kind;
            out.push((
                LbFrontend {
                    addr: SocketAddrV4::new(addr, port),
                    proto,
                },
                spec,
            ));
        };
        for ip in &external_ips {
            external(*ip, vport, FrontendKind::ExternalIp);
        }
        for ip in &ingress_ips {
            external(*ip, vport, FrontendKind::LoadBalancer);
        }
        // NodePort: the same backends behind {0.0.0.0 (every node address), nodePort}.
        if let Some(node_port) = port
            .node_port
            .filter(|_| node_port_type)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        {
            external(Ipv4Addr::UNSPECIFIED, node_port, FrontendKind::NodePort);
        }
        out.push((
            LbFrontend {
                addr: SocketAddrV4::new(vip, vport),
                proto,
            },
            if internal_local {
                local_only(&backends)
            } else {
                backends
            },
        ));
    }
    out
}

/// The `sessionAffinity: ClientIP` timeout of a Service (its own, or `default` seconds),
/// None without affinity. Both families' frontends of the Service share it.
pub(crate) fn client_ip_affinity(spec: &ServiceSpec, default: u32) -> Option<u32> {
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(default)
    })
}

/// The `status.loadBalancer.ingress[].ip` of a LoadBalancer Service (both families; none
/// for other types).
pub(crate) fn load_balancer_ips(svc: &Service) -> impl Iterator<Item = &str> {
    let load_balancer = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .filter(|_| load_balancer)
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
}

/// The IPv4 addresses among `ips`, without duplicates (IPv6 ones: `desired6_nodeport.rs`).
fn ipv4s<'a>(ips: impl Iterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = ips.filter_map(|ip| ip.parse().ok()).collect();
    set.into_iter().collect()
}

pub(crate) fn protocol(port: &ServicePort) -> Option<(u8, &'static str)> {
    match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Some((IPPROTO_TCP, "TCP")),
        "UDP" => Some((IPPROTO_UDP, "UDP")),
        _ => None, // SCTP: not served by this datapath yet
    }
}

fn from_slices(slices: &[&EndpointSlice], port: &ServicePort, proto: &str) -> Vec<SocketAddrV4> {
    slice_backends(slices, port, proto, "IPv4", SocketAddrV4::new)
}

/// The backends of `port` in the slices of `address_type` (`IPv4`, `IPv6`): ready
/// endpoints, or terminating-but-serving ones when none is ready.
pub(crate) fn slice_backends<A: std::str::FromStr, B>(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    proto: &str,
    address_type: &str,
    backend: impl Fn(A, u16) -> B,
) -> Vec<B> {
    let want = port.name.as_deref().unwrap_or("");
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == address_type) {
        let Some(bport) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == want
                    && p.protocol.as_deref().unwrap_or("TCP") == proto
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // Kubernetes: an unknown `ready` is ready; `serving` defaults to `ready`.
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for addr in ep.addresses.iter().filter_map(|a| a.parse::<A>().ok()) {
                let b = backend(addr, bport);
                if is_ready && !is_terminating {
                    ready.push(b);
                } else if serving && is_terminating {
                    terminating.push(b);
                }
            }
        }
    }
    if ready.is_empty() { terminating } else { ready }
}

/// IPv4 addresses of each pod, by (namespace, name).
pub type PodIps = HashMap<(String, String), BTreeSet<Ipv4Addr>>;

/// Pod IPv4 addresses: what core knows (local endpoints, other nodes' CiliumEndpoints),
/// then `status.podIP` from the API server.
pub fn pod_ipv4s(addresses: &[PodAddress], pods: &[Pod]) -> PodIps {
    let mut out = PodIps::new();
    for a in addresses {
        if let IpAddr::V4(ip) = a.ip {
            out.entry((a.namespace.clone(), a.pod_name.clone()))
                .or_default()
                .insert(ip);
        }
    }
    for pod in pods {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        if let (Some(ip), Some(ns), Some(name)) = (
            ip,
            pod.metadata.namespace.clone(),
            pod.metadata.name.clone(),
        ) {
            out.entry((ns, name)).or_default().insert(ip);
        }
    }
    out
}

fn from_selected_pods(
    pods: &[Pod],
    pod_ips: &PodIps,
    svc: &Service,
    namespace: &str,
    port: &ServicePort,
) -> Vec<SocketAddrV4> {
    let mut out = Vec::new();
    for (pod, name) in selected_pods(pods, svc, namespace) {
        let Some(target) = target_port(pod, port) else {
            continue;
        };
        for ip in pod_ips
            .get(&(namespace.to_string(), name))
            .into_iter()
            .flatten()
        {
            out.push(SocketAddrV4::new(*ip, target));
        }
    }
    out
}

/// The live pods of `namespace` the Service's selector picks, with their names (none
/// without a selector: its endpoints are managed by hand, in slices).
pub(crate) fn selected_pods<'a>(
    pods: &'a [Pod],
    svc: &'a Service,
    namespace: &'a str,
) -> impl Iterator<Item = (&'a Pod, String)> + 'a {
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty());
    pods.iter().filter_map(move |pod| {
        let selector = selector?;
        let pod_ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        if pod_ns != namespace || pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let labels = pod.metadata.labels.as_ref();
        if !selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return None;
        }
        Some((pod, pod.metadata.name.clone()?))
    })
}

/// `targetPort` for one pod: a number, a container port name, or the service port.
pub(crate) fn target_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).expect("test YAML")
    }

    fn fe(vip: &str, port: u16, proto: u8) -> LbFrontend {
        LbFrontend {
            addr: SocketAddrV4::new(vip.parse().expect("ip"), port),
            proto,
        }
    }

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("socket address")
    }

    fn compute(
        services: &[&str],
        slices: &[&str],
        pods: &[&str],
        addresses: &[PodAddress],
    ) -> DesiredServices {
        let services: Vec<Service> = services.iter().map(|s| yaml(s)).collect();
        let slices: Vec<EndpointSlice> = slices.iter().map(|s| yaml(s)).collect();
        let pods: Vec<Pod> = pods.iter().map(|s| yaml(s)).collect();
        desired_services(&ClusterObjects {
            services: &services,
            slices: &slices,
            pods: &pods,
            addresses,
            node: NodeView {
                local_ips: &BTreeSet::from([Ipv4Addr::new(10, 200, 1, 5)]),
                affinity_timeout: 10800,
            },
        })
    }

    const WEB: &str = "
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
";

    const SLICE: &str = "
addressType: IPv4
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- {addresses: [10.200.1.5], conditions: {ready: true}}
- {addresses: [10.200.2.5]}
- {addresses: [10.200.2.6], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.200.2.7], conditions: {ready: false}}
";

    #[test]
    fn slices_give_ready_backends_per_named_port() {
        let d = compute(&[WEB], &[SLICE], &[], &[]);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[&fe("10.96.0.50", 80, 6)].backends,
            vec![sa("10.200.1.5:8080"), sa("10.200.2.5:8080")]
        );
        assert_eq!(
            d[&fe("10.96.0.50", 53, 17)].backends,
            vec![sa("10.200.1.5:5353"), sa("10.200.2.5:5353")]
        );
    }

    #[test]
    fn terminating_serving_endpoints_only_without_ready_ones() {
        let slice = "
addressType: IPv4
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.200.2.6], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.200.2.8], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [10.200.2.7], conditions: {ready: false}}
";
        let d = compute(&[WEB], &[slice], &[], &[]);
        assert_eq!(
            d[&fe("10.96.0.50", 80, 6)].backends,
            vec![sa("10.200.2.6:8080")]
        );
    }

    #[test]
    fn a_service_whose_slices_have_no_endpoint_has_no_backend() {
        let slice = "
addressType: IPv4
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
ports: [{name: http, port: 8080}]
endpoints: []
";
        // A matching pod exists, but slices win: the stand-in is only for missing slices.
        let pod = "
metadata: {name: web-1, namespace: shop, labels: {app: web}}
status: {podIP: 10.200.1.9}
";
        let d = compute(&[WEB], &[slice], &[pod], &[]);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, vec![]);
    }

    #[test]
    fn headless_external_name_and_other_namespaces_are_ignored() {
        let headless = "
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
";
        let external = "
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: example.com, ports: [{port: 80}]}
";
        let nodeport = "
metadata: {name: np, namespace: shop}
spec: {type: NodePort, clusterIP: 10.96.0.60, ports: [{port: 81, nodePort: 30081}]}
";
        let other_ns_slice = SLICE.replace("namespace: shop", "namespace: other");
        let d = compute(
            &[headless, external, nodeport, WEB],
            &[&other_ns_slice],
            &[],
            &[],
        );
        let keys: Vec<_> = d.keys().copied().collect();
        assert_eq!(
            keys,
            vec![
                fe("0.0.0.0", 30081, 6),
                fe("10.96.0.50", 53, 17),
                fe("10.96.0.50", 80, 6),
                fe("10.96.0.60", 81, 6)
            ]
        );
        // No slice in shop, no pods: no backends (not the other namespace's).
        assert!(d.values().all(|f| f.backends.is_empty()));
    }

    #[test]
    fn without_slices_selected_pods_stand_in() {
        let pod = |name: &str, app: &str, phase: &str| {
            format!(
                "
metadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}
spec:
  containers:
  - name: c
    ports: [{{name: http, containerPort: 8080}}]
status: {{phase: {phase}}}
"
            )
        };
        let pods = [
            pod("web-1", "web", "Running"),
            pod("web-2", "web", "Running"),
            pod("web-3", "web", "Succeeded"),
            pod("other", "db", "Running"),
        ];
        let addr = |name: &str, ip: &str| PodAddress {
            namespace: "shop".into(),
            pod_name: name.into(),
            ip: ip.parse().expect("ip"),
        };
        let addresses = [
            addr("web-1", "10.200.1.3"),
            addr("web-2", "10.200.2.3"),
            addr("web-3", "10.200.2.4"),
            addr("other", "10.200.2.9"),
        ];
        let refs: Vec<&str> = pods.iter().map(String::as_str).collect();
        let d = compute(&[WEB], &[], &refs, &addresses);
        assert_eq!(
            d[&fe("10.96.0.50", 80, 6)].backends,
            vec![sa("10.200.1.3:8080"), sa("10.200.2.3:8080")],
            "named targetPort resolved through the container port"
        );
        assert_eq!(
            d[&fe("10.96.0.50", 53, 17)].backends,
            vec![sa("10.200.1.3:5353"), sa("10.200.2.3:5353")]
        );
    }

    #[test]
    fn node_port_services_get_a_wildcard_frontend_with_the_same_backends() {
        let np = "
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIP: 10.96.0.50
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
";
        let d = compute(&[np], &[SLICE], &[], &[]);
        let want = vec![sa("10.200.1.5:8080"), sa("10.200.2.5:8080")];
        assert_eq!(d[&fe("0.0.0.0", 30080, 6)].backends, want);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, want);
        // A ClusterIP service with a stray nodePort gets no NodePort frontend.
        let d = compute(
            &[&np.replace("type: NodePort", "type: ClusterIP")],
            &[SLICE],
            &[],
            &[],
        );
        assert!(!d.contains_key(&fe("0.0.0.0", 30080, 6)), "{d:?}");
    }

    #[test]
    fn client_ip_affinity_with_its_timeout_or_the_default() {
        let with = |extra: &str| {
            WEB.replace(
                "  selector: {app: web}\n",
                &format!("  selector: {{app: web}}\n{extra}"),
            )
        };
        let d = compute(
            &[&with("  sessionAffinity: ClientIP\n")],
            &[SLICE],
            &[],
            &[],
        );
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].affinity_timeout, Some(10800));
        assert_eq!(d[&fe("10.96.0.50", 53, 17)].affinity_timeout, Some(10800));
        let d = compute(
            &[&with(
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}\n",
            )],
            &[SLICE],
            &[],
            &[],
        );
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].affinity_timeout, Some(30));
        let d = compute(&[&with("  sessionAffinity: None\n")], &[SLICE], &[], &[]);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].affinity_timeout, None);
    }

    #[test]
    fn local_traffic_policies_keep_only_this_nodes_backends() {
        // 10.200.1.5 is local (see `compute`), 10.200.2.5 is not.
        let svc = |policies: &str| {
            format!(
                "
metadata: {{name: web, namespace: shop}}
spec:
  type: NodePort
  clusterIP: 10.96.0.50
{policies}  ports:
  - {{name: http, port: 80, targetPort: http, nodePort: 30080}}
"
            )
        };
        let local = vec![sa("10.200.1.5:8080")];
        let all = vec![sa("10.200.1.5:8080"), sa("10.200.2.5:8080")];
        let d = compute(
            &[&svc("  externalTrafficPolicy: Local\n")],
            &[SLICE],
            &[],
            &[],
        );
        assert_eq!(
            d[&fe("0.0.0.0", 30080, 6)].backends,
            local,
            "NodePort: local only"
        );
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, all, "ClusterIP: all");
        let d = compute(
            &[&svc("  internalTrafficPolicy: Local\n")],
            &[SLICE],
            &[],
            &[],
        );
        assert_eq!(d[&fe("0.0.0.0", 30080, 6)].backends, all);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, local);
        let d = compute(
            &[&svc(
                "  externalTrafficPolicy: Cluster\n  internalTrafficPolicy: Cluster\n",
            )],
            &[SLICE],
            &[],
            &[],
        );
        assert_eq!(d[&fe("0.0.0.0", 30080, 6)].backends, all);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, all);
        // No local backend: an empty frontend (refused or dropped), not the remote ones.
        let remote_only = SLICE.replace("10.200.1.5", "10.200.3.5");
        let d = compute(
            &[&svc(
                "  externalTrafficPolicy: Local\n  internalTrafficPolicy: Local\n",
            )],
            &[&remote_only],
            &[],
            &[],
        );
        assert!(d[&fe("0.0.0.0", 30080, 6)].backends.is_empty());
        assert!(d[&fe("10.96.0.50", 80, 6)].backends.is_empty());
    }

    #[test]
    fn external_and_load_balancer_ips_get_frontends_like_the_node_port() {
        let lb = "
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalIPs: [203.0.113.10, 2001:db8::1, 203.0.113.10]
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}, {hostname: lb.example.com}]
";
        let d = compute(&[lb], &[SLICE], &[], &[]);
        let local = vec![sa("10.200.1.5:8080")];
        let all = vec![sa("10.200.1.5:8080"), sa("10.200.2.5:8080")];
        let ext = &d[&fe("203.0.113.10", 80, 6)];
        assert_eq!(
            (ext.kind, &ext.backends),
            (FrontendKind::ExternalIp, &local)
        );
        let ingress = &d[&fe("203.0.113.20", 80, 6)];
        assert_eq!(
            (ingress.kind, &ingress.backends),
            (FrontendKind::LoadBalancer, &local)
        );
        assert_eq!(d[&fe("0.0.0.0", 30080, 6)].kind, FrontendKind::NodePort);
        assert_eq!(d[&fe("10.96.0.50", 80, 6)].backends, all);
        assert_eq!(
            d.len(),
            4,
            "IPv6 (desired6_nodeport.rs) and hostnames are not here: {d:?}"
        );

        // External IPs of a ClusterIP service are served; its status is not read.
        let cip = lb
            .replace("type: LoadBalancer", "type: ClusterIP")
            .replace("  externalTrafficPolicy: Local\n", "");
        let d = compute(&[&cip], &[SLICE], &[], &[]);
        assert_eq!(d[&fe("203.0.113.10", 80, 6)].backends, all);
        assert!(!d.contains_key(&fe("203.0.113.20", 80, 6)));
    }
}
