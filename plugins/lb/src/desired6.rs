//! The IPv6 ClusterIP frontends the datapath should serve (dual stack), computed from
//! cluster objects. Pure, like `desired.rs`, whose rules it follows for what it serves:
//!
//! - a Service's IPv6 ClusterIP is the IPv6 entry of `spec.clusterIPs` (Kubernetes lists
//!   the primary family first; `spec.clusterIP` is that first entry); headless and
//!   ExternalName services are ignored;
//! - every TCP or UDP port is its own frontend, served at `connect()`/`sendmsg()` by the
//!   IPv6 socket hooks (`bpf/lib/lb_sock6.h`);
//! - backends come from the Service's EndpointSlices with `addressType: IPv6` (ready
//!   endpoints, or terminating-but-serving ones when none is ready), or, with no
//!   EndpointSlice at all, from the selected pods' IPv6 addresses (the sandbox stand-in).
//!
//! NodePort, externalIPs and LoadBalancer IPs over IPv6 derive from these frontends
//! (`desired6_nodeport.rs`). Session affinity and `internalTrafficPolicy: Local` are applied
//! on top by `desired6_semantics.rs`; Maglev tables are the programmer's (`programmer6.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use porin_core::datapath::Lb6Frontend;
use porin_plugin_sdk::PodAddress;

use crate::desired::{SERVICE_NAME_LABEL, protocol, selected_pods, slice_backends, target_port};

/// IPv6 frontend -> its backends (sorted, without duplicates; empty: refuse connections).
pub type DesiredServices6 = BTreeMap<Lb6Frontend, Vec<SocketAddrV6>>;

/// The desired IPv6 frontends of all Services.
pub fn desired_services6(
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
    addresses: &[PodAddress],
) -> DesiredServices6 {
    let mut pod_ips: HashMap<(String, String), BTreeSet<Ipv6Addr>> = HashMap::new();
    for a in addresses {
        if let IpAddr::V6(ip) = a.ip {
            pod_ips
                .entry((a.namespace.clone(), a.pod_name.clone()))
                .or_default()
                .insert(ip);
        }
    }
    let mut out = DesiredServices6::new();
    for svc in services {
        let Some(vip) = ipv6_cluster_ip(svc) else {
            continue;
        };
        let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let own: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        let spec = svc.spec.as_ref();
        for port in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
            let Some((proto, proto_name)) = protocol(port) else {
                continue;
            };
            let Ok(vport) = u16::try_from(port.port) else {
                continue;
            };
            let mut backends = if own.is_empty() {
                selected_pods(pods, svc, namespace)
                    .filter_map(|(pod, pod_name)| {
                        let target = target_port(pod, port)?;
                        let ips = pod_ips.get(&(namespace.to_owned(), pod_name))?;
                        Some(
                            ips.iter()
                                .map(move |ip| SocketAddrV6::new(*ip, target, 0, 0)),
                        )
                    })
                    .flatten()
                    .collect()
            } else {
                from_slices6(&own, port, proto_name)
            };
            backends.sort();
            backends.dedup();
            out.insert(
                Lb6Frontend {
                    addr: SocketAddrV6::new(vip, vport, 0, 0),
                    proto,
                },
                backends,
            );
        }
    }
    out
}

/// The IPv6 ClusterIP of a ClusterIP, NodePort or LoadBalancer Service, if it has one.
pub(crate) fn ipv6_cluster_ip(svc: &Service) -> Option<Ipv6Addr> {
    let spec = svc.spec.as_ref()?;
    if !matches!(
        spec.type_.as_deref(),
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer")
    ) {
        return None;
    }
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .find_map(|ip| ip.parse::<Ipv6Addr>().ok())
}

fn from_slices6(slices: &[&EndpointSlice], port: &ServicePort, proto: &str) -> Vec<SocketAddrV6> {
    slice_backends(slices, port, proto, "IPv6", |ip: Ipv6Addr, port| {
        SocketAddrV6::new(ip, port, 0, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).expect("test YAML")
    }

    const DUAL: &str = r#"
metadata: {name: web, namespace: shop}
spec:
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
"#;

    fn fe(port: u16, proto: u8) -> Lb6Frontend {
        Lb6Frontend {
            addr: SocketAddrV6::new("fd00:96::10".parse().expect("ip"), port, 0, 0),
            proto,
        }
    }

    #[test]
    fn ipv6_slices_give_the_backends_of_the_ipv6_cluster_ip() {
        let slice: EndpointSlice = yaml(
            r#"
metadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]
endpoints:
  - addresses: ["fd00:10:1::5"]
  - addresses: ["fd00:10:2::7"]
    conditions: {ready: false}
"#,
        );
        let v4_slice: EndpointSlice = yaml(
            r#"
metadata: {name: web-v4, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.200.1.5]}]
"#,
        );
        let got = desired_services6(&[yaml(DUAL)], &[slice, v4_slice], &[], &[]);
        let be = |s: &str| s.parse::<SocketAddrV6>().expect("sa");
        assert_eq!(got.len(), 2);
        assert_eq!(got[&fe(80, 6)], vec![be("[fd00:10:1::5]:8080")]);
        assert_eq!(got[&fe(53, 17)], vec![be("[fd00:10:1::5]:53")]);
    }

    #[test]
    fn without_slices_the_selected_pods_ipv6_addresses_serve() {
        let pod: Pod = yaml(
            "metadata: {name: web-1, namespace: shop, labels: {app: web}}\nspec: {containers: [{name: c}]}\n",
        );
        let addresses = [
            PodAddress {
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                ip: "fd00:10:1::5".parse().expect("ip"),
            },
            PodAddress {
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                ip: "10.200.1.5".parse().expect("ip"),
            },
        ];
        let got = desired_services6(&[yaml(DUAL)], &[], &[pod], &addresses);
        assert_eq!(
            got[&fe(80, 6)],
            vec!["[fd00:10:1::5]:8080".parse::<SocketAddrV6>().expect("sa")]
        );
    }

    #[test]
    fn single_stack_and_headless_services_have_no_ipv6_frontend() {
        let v4: Service =
            yaml("metadata: {name: a}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n");
        let headless: Service = yaml(
            "metadata: {name: b}\nspec: {clusterIP: None, clusterIPs: [None], ports: [{port: 80}]}\n",
        );
        assert!(desired_services6(&[v4, headless], &[], &[], &[]).is_empty());
    }
}
