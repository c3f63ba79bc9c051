//! Which Kubernetes pod a CNI call is for.

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::{CniError, ErrorCode};

/// A pod's namespace and name: the agent's key of the endpoint, and how it finds
/// the Pod object whose labels make the endpoint's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// From `K8S_POD_NAMESPACE`/`K8S_POD_NAME` in `CNI_ARGS` (what kubelet's
    /// runtimes pass), else the config's default namespace and the container id.
    pub fn resolve(env: &CniEnv, conf: &NetConf) -> Result<Self, CniError> {
        let (namespace, name, source) =
            match (env.arg("K8S_POD_NAMESPACE"), env.arg("K8S_POD_NAME")) {
                (Some(ns), Some(name)) => (ns.to_string(), name.to_string(), "CNI_ARGS"),
                _ => (
                    conf.default_namespace().to_string(),
                    env.require_container_id()?.to_string(),
                    "CNI_CONTAINERID (no K8S_POD_NAME in CNI_ARGS)",
                ),
            };
        for (what, value) in [("namespace", &namespace), ("pod name", &name)] {
            if !is_dns_name(value) {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("{what} {value:?} from {source} is not a Kubernetes name"),
                    "names are lowercase letters, digits, '-' and '.', at most 253 characters",
                ));
            }
        }
        Ok(Self { namespace, name })
    }
}

/// A Kubernetes object name (RFC 1123 subdomain, as the agent checks it).
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(args: &str, container: &str) -> CniEnv {
        let vars: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", container),
            ("CNI_ARGS", args),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        CniEnv::from_map(&vars).expect("env")
    }

    fn conf() -> NetConf {
        NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"p","type":"porin-cni","defaultNamespace":"shop"}"#,
        )
        .expect("config")
    }

    #[test]
    fn kubelet_args_win_over_the_container_id() {
        let pod = PodRef::resolve(&env("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "c1"), &conf())
            .expect("pod");
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("a", "b"));
        let pod = PodRef::resolve(&env("IgnoreUnknown=1", "default-web"), &conf()).expect("pod");
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "default-web")
        );
    }

    #[test]
    fn names_that_kubernetes_refuses_are_reported_with_their_source() {
        let e = PodRef::resolve(&env("", "Web_1"), &conf()).expect_err("bad name");
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
    }
}
