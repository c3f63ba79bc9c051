//! The IPv6 NodePort, ExternalIP and LoadBalancer frontends (dual stack), served by the
//! node device program (`bpf/lib/nodeport6.h`). Pure, and derived from the IPv6 ClusterIP
//! frontends of `desired6.rs` with the rules `desired.rs` applies to IPv4:
//!
//! - a NodePort or LoadBalancer Service with an IPv6 ClusterIP gets `[::]:nodePort` per
//!   port (every IPv6 address of the node; the datapath answers on `node_ip_v6`);
//! - its IPv6 `spec.externalIPs` (any type) and, for LoadBalancer, its IPv6
//!   `status.loadBalancer.ingress[].ip` get `{IP, port}` per port;
//! - all of them have the ClusterIP frontend's backends, only this node's with
//!   `externalTrafficPolicy: Local` (DNAT without SNAT: the backend sees the client).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddrV6};

use k8s_openapi::api::core::v1::Service;
use porin_core::datapath::Lb6Frontend;

use crate::desired::{FrontendKind, load_balancer_ips, protocol};
use crate::desired6::{DesiredServices6, ipv6_cluster_ip};

/// IPv6 frontend reached from outside the cluster -> its kind, its backends and the
/// ClusterIP frontend it comes from (whose session affinity it shares).
pub type ExternalServices6 = BTreeMap<Lb6Frontend, (FrontendKind, Vec<SocketAddrV6>, Lb6Frontend)>;

/// The IPv6 NodePort, ExternalIP and LoadBalancer frontends of `services`, with the
/// backends of their ClusterIP frontends in `cluster`; `local_ips`: this node's
/// endpoints' IPv6 addresses (`externalTrafficPolicy: Local`).
pub fn external_services6(
    services: &[Service],
    cluster: &DesiredServices6,
    local_ips: &BTreeSet<Ipv6Addr>,
) -> ExternalServices6 {
    let mut out = ExternalServices6::new();
    for svc in services {
        let (Some(spec), Some(vip)) = (svc.spec.as_ref(), ipv6_cluster_ip(svc)) else {
            continue;
        };
        let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let external_ips = ipv6s(spec.external_ips.iter().flatten().map(String::as_str));
        let ingress_ips = ipv6s(load_balancer_ips(svc));
        for port in spec.ports.iter().flatten() {
            let (Some((proto, _)), Ok(vport)) = (protocol(port), u16::try_from(port.port)) else {
                continue;
            };
            let cluster_fe = Lb6Frontend {
                addr: SocketAddrV6::new(vip, vport, 0, 0),
                proto,
            };
            let Some(backends) = cluster.get(&cluster_fe) else {
                continue;
            };
            let backends: Vec<SocketAddrV6> = backends
                .iter()
                .filter(|b| !local || local_ips.contains(b.ip()))
                .copied()
                .collect();
            let node_port = port
                .node_port
                .filter(|_| node_port_type)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .map(|p| (Ipv6Addr::UNSPECIFIED, p, FrontendKind::NodePort));
            let frontends = external_ips
                .iter()
                .map(|ip| (*ip, vport, FrontendKind::ExternalIp))
                .chain(
                    ingress_ips
                        .iter()
                        .map(|ip| (*ip, vport, FrontendKind::LoadBalancer)),
                )
                .chain(node_port);
            for (ip, fe_port, kind) in frontends {
                let fe = Lb6Frontend {
                    addr: SocketAddrV6::new(ip, fe_port, 0, 0),
                    proto,
                };
                out.insert(fe, (kind, backends.clone(), cluster_fe));
            }
        }
    }
    out
}

/// The IPv6 addresses among `ips`, without duplicates.
fn ipv6s<'a>(ips: impl Iterator<Item = &'a str>) -> Vec<Ipv6Addr> {
    let set: BTreeSet<Ipv6Addr> = ips.filter_map(|ip| ip.parse().ok()).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired6::desired_services6;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).expect("test YAML")
    }

    const LB: &str = r#"
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalIPs: [203.0.113.10, "2001:db8::10"]
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP, nodePort: 30053}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.20}, {ip: "2001:db8::20"}, {hostname: lb.example.com}]
"#;

    const SLICE: &str = r#"
metadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]
endpoints:
  - addresses: ["fd00:10:1::5"]
  - addresses: ["fd00:10:2::7"]
"#;

    fn fe(ip: &str, port: u16, proto: u8) -> Lb6Frontend {
        Lb6Frontend {
            addr: SocketAddrV6::new(ip.parse().expect("ip"), port, 0, 0),
            proto,
        }
    }

    fn be(s: &str) -> SocketAddrV6 {
        s.parse().expect("socket address")
    }

    fn compute(svc: &str, local: &[&str]) -> ExternalServices6 {
        let services: Vec<Service> = vec![yaml(svc)];
        let slices: Vec<EndpointSlice> = vec![yaml(SLICE)];
        let cluster = desired_services6(&services, &slices, &[], &[]);
        let local = local.iter().map(|ip| ip.parse().expect("ip")).collect();
        external_services6(&services, &cluster, &local)
    }

    #[test]
    fn node_ports_external_and_load_balancer_ips_get_the_cluster_ip_backends() {
        let got = compute(LB, &[]);
        let both = vec![be("[fd00:10:1::5]:8080"), be("[fd00:10:2::7]:8080")];
        let cluster = fe("fd00:96::10", 80, 6);
        assert_eq!(got.len(), 6, "3 IPv6 frontends x 2 ports: {got:?}");
        assert_eq!(
            got[&fe("::", 30080, 6)],
            (FrontendKind::NodePort, both.clone(), cluster)
        );
        assert_eq!(
            got[&fe("2001:db8::10", 80, 6)],
            (FrontendKind::ExternalIp, both.clone(), cluster)
        );
        assert_eq!(
            got[&fe("2001:db8::20", 80, 6)],
            (FrontendKind::LoadBalancer, both, cluster)
        );
        assert_eq!(got[&fe("::", 30053, 17)].0, FrontendKind::NodePort);
    }

    #[test]
    fn external_traffic_policy_local_keeps_this_nodes_backends() {
        let local = LB.replace(
            "type: LoadBalancer",
            "type: LoadBalancer\n  externalTrafficPolicy: Local",
        );
        let got = compute(&local, &["fd00:10:1::5"]);
        assert_eq!(got[&fe("::", 30080, 6)].1, vec![be("[fd00:10:1::5]:8080")]);
    }

    #[test]
    fn cluster_ip_services_get_external_ips_only_and_v4_only_services_nothing() {
        let got = compute(&LB.replace("type: LoadBalancer", "type: ClusterIP"), &[]);
        let kinds: Vec<FrontendKind> = got.values().map(|(k, _, _)| *k).collect();
        assert_eq!(kinds, vec![FrontendKind::ExternalIp; 2], "{got:?}");
        let v4_only = LB.replace(", \"fd00:96::10\"", "");
        assert!(compute(&v4_only, &[]).is_empty());
    }
}
