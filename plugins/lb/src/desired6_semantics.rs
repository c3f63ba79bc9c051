//! Service semantics of the IPv6 ClusterIP frontends, on top of what
//! [`desired_services6`](crate::desired6::desired_services6) computes, with the IPv4 rules
//! of `desired.rs`:
//!
//! - `sessionAffinity: ClientIP`: the Service's timeout (or `[plugins.lb]
//!   session_affinity_timeout`) on every IPv6 ClusterIP frontend of the Service;
//! - `internalTrafficPolicy: Local`: the frontend keeps only this node's backends (with
//!   none, connections are refused). Local means an IPv6 address of one of this node's
//!   endpoints.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use k8s_openapi::api::core::v1::Service;

use crate::desired::client_ip_affinity;
use crate::desired6::{DesiredServices6, ipv6_cluster_ip};
use crate::programmer6::Affinity6;

/// Applies the traffic policy of each Service to its IPv6 ClusterIP frontends in
/// `desired`, and returns their session affinity.
pub fn apply_semantics6(
    desired: &mut DesiredServices6,
    services: &[Service],
    local_ips: &BTreeSet<Ipv6Addr>,
    affinity_default: u32,
) -> Affinity6 {
    let mut affinity = Affinity6::new();
    for svc in services {
        let (Some(vip), Some(spec)) = (ipv6_cluster_ip(svc), svc.spec.as_ref()) else {
            continue;
        };
        let timeout = client_ip_affinity(spec, affinity_default);
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        for (fe, backends) in desired.iter_mut().filter(|(fe, _)| *fe.addr.ip() == vip) {
            if internal_local {
                backends.retain(|b| local_ips.contains(b.ip()));
            }
            if let Some(timeout) = timeout {
                affinity.insert(*fe, timeout);
            }
        }
    }
    affinity
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV6;

    use porin_core::datapath::Lb6Frontend;

    use super::*;
    use crate::desired6::desired_services6;

    const SERVICE: &str = r#"
metadata: {name: web, namespace: shop}
spec:
  ipFamilies: [IPv6]
  clusterIP: "fd00:96::10"
  clusterIPs: ["fd00:96::10"]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

    const SLICE: &str = r#"
metadata: {name: web-v6, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: ["fd00:10:1::5"]
  - addresses: ["fd00:10:2::7"]
"#;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).expect("test YAML")
    }

    fn fe() -> Lb6Frontend {
        Lb6Frontend {
            addr: SocketAddrV6::new("fd00:96::10".parse().expect("ip"), 80, 0, 0),
            proto: 6,
        }
    }

    fn sa(s: &str) -> SocketAddrV6 {
        s.parse().expect("socket address")
    }

    /// The frontend's backends and affinity with `extra` appended to the Service's spec;
    /// fd00:10:1::5 is this node's.
    fn compute(extra: &str) -> (Vec<SocketAddrV6>, Option<u32>) {
        let svc: Service = yaml(&format!("{SERVICE}{extra}"));
        let services = [svc];
        let mut desired = desired_services6(&services, &[yaml(SLICE)], &[], &[]);
        let local = BTreeSet::from(["fd00:10:1::5".parse().expect("ip")]);
        let affinity = apply_semantics6(&mut desired, &services, &local, 10800);
        (desired[&fe()].clone(), affinity.get(&fe()).copied())
    }

    #[test]
    fn internal_traffic_policy_local_keeps_only_this_nodes_backends() {
        let all = vec![sa("[fd00:10:1::5]:8080"), sa("[fd00:10:2::7]:8080")];
        assert_eq!(compute("").0, all, "Cluster (default): every backend");
        assert_eq!(compute("  internalTrafficPolicy: Cluster\n").0, all);
        assert_eq!(
            compute("  internalTrafficPolicy: Local\n").0,
            vec![sa("[fd00:10:1::5]:8080")]
        );
        // No local backend: an empty frontend (refused), not the remote ones.
        let svc: Service = yaml(&format!("{SERVICE}  internalTrafficPolicy: Local\n"));
        let services = [svc];
        let mut desired = desired_services6(&services, &[yaml(SLICE)], &[], &[]);
        apply_semantics6(&mut desired, &services, &BTreeSet::new(), 10800);
        assert!(desired[&fe()].is_empty());
    }

    #[test]
    fn client_ip_affinity_with_its_timeout_or_the_default() {
        assert_eq!(compute("").1, None);
        assert_eq!(compute("  sessionAffinity: None\n").1, None);
        assert_eq!(compute("  sessionAffinity: ClientIP\n").1, Some(10800));
        assert_eq!(
            compute(
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}\n"
            )
            .1,
            Some(30)
        );
    }
}
