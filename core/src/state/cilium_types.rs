//! `cilium.io/v2` custom resources the store holds.
//!
//! The policy kinds keep their spec untyped (`serde_json::Value`): the policy
//! plugin owns their schema. CiliumEndpoint is typed because the core reads it
//! to learn remote pods' IPs and identities. The policy kinds carry a typed
//! `status` with conditions: an agent that cannot parse a policy says so there.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use schemars::JsonSchema;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::cilium_node::CiliumNode;

/// API group of the Cilium custom resources.
pub const CILIUM_GROUP: &str = "cilium.io";
/// API version of the Cilium custom resources.
pub const CILIUM_VERSION: &str = "v2";
/// `apiVersion` of the Cilium custom resources.
pub const CILIUM_API_VERSION: &str = "cilium.io/v2";

/// `cilium.io/v2` CiliumNetworkPolicy (namespaced).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CiliumNetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    #[serde(default)]
    pub specs: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub status: Option<PolicyStatus>,
}

/// `cilium.io/v2` CiliumClusterwideNetworkPolicy (cluster scoped).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CiliumClusterwideNetworkPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    #[serde(default)]
    pub specs: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub status: Option<PolicyStatus>,
}

/// `cilium.io/v2` CiliumEndpoint (namespaced, named like its pod).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CiliumEndpoint {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<CiliumEndpointStatus>,
}

/// Status of a policy object: conditions, one per problem kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    /// A map keyed by `type` for server-side apply: setting one condition
    /// leaves the others alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<PolicyCondition>,
}

/// Condition type set on a policy object: `True` when the spec parsed,
/// `False` (with the parse error as message) when it did not (Cilium's name).
pub const POLICY_CONDITION_VALID: &str = "Valid";

/// One condition of a policy object, shaped like Kubernetes' `Condition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// The condition's type, e.g. [`POLICY_CONDITION_VALID`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// RFC 3339 time the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// One CamelCase word, e.g. `ParseError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong, naming the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Status of a [`CiliumEndpoint`]: what other agents need to reach the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiliumEndpointStatus {
    /// Endpoint id, local to the node that owns the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<EndpointIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<EndpointNetworking>,
    /// Endpoint state, e.g. `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Whether policy is enforced on the endpoint, per direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<EndpointPolicy>,
}

/// Policy enforcement of an endpoint (Cilium's `status.policy`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<EndpointPolicyDirection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EndpointPolicyDirection>,
}

/// Policy enforcement in one direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointPolicyDirection {
    /// True when some policy selects the endpoint in this direction (or
    /// enforcement is `always`).
    pub enforcing: bool,
    /// `enforcing` or `non-enforcing`, for `kubectl get` columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Security identity of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointIdentity {
    pub id: i64,
    /// Labels in Cilium's `source:key=value` form.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Where an endpoint lives and which addresses it has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointNetworking {
    /// IP of the node hosting the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub addressing: Vec<AddressPair>,
}

/// One IPv4/IPv6 address pair of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AddressPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// Implements `kube::Resource` and a `Serialize` that writes `apiVersion` and
/// `kind` first, so the objects round-trip through YAML and server-side apply.
macro_rules! cilium_resource {
    ($ty:ident, $scope:ty, $plural:literal, [$($field:ident),*]) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(CILIUM_GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(CILIUM_VERSION)
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(CILIUM_API_VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut st = serializer.serialize_struct(stringify!($ty), 5)?;
                st.serialize_field("apiVersion", CILIUM_API_VERSION)?;
                st.serialize_field("kind", stringify!($ty))?;
                st.serialize_field("metadata", &self.metadata)?;
                $(
                    if let Some(value) = &self.$field {
                        st.serialize_field(stringify!($field), value)?;
                    }
                )*
                st.end()
            }
        }
    };
}

cilium_resource!(
    CiliumNetworkPolicy,
    NamespaceResourceScope,
    "ciliumnetworkpolicies",
    [spec, specs, status]
);
cilium_resource!(
    CiliumClusterwideNetworkPolicy,
    ClusterResourceScope,
    "ciliumclusterwidenetworkpolicies",
    [spec, specs, status]
);
cilium_resource!(
    CiliumEndpoint,
    NamespaceResourceScope,
    "ciliumendpoints",
    [status]
);
cilium_resource!(
    CiliumNode,
    ClusterResourceScope,
    "ciliumnodes",
    [spec, status]
);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn url_paths_match_the_api_server() {
        assert_eq!(
            CiliumEndpoint::url_path(&(), Some("ns")),
            "/apis/cilium.io/v2/namespaces/ns/ciliumendpoints"
        );
        assert_eq!(
            CiliumClusterwideNetworkPolicy::url_path(&(), None),
            "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies"
        );
    }

    #[test]
    fn endpoint_round_trips_through_yaml() {
        let yaml = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: api, namespace: payments}
status:
  id: 12
  identity: {id: 4242, labels: ["k8s:app=api"]}
  networking:
    node: 10.0.0.1
    addressing: [{ipv4: 10.1.0.5}]
  state: ready
"#;
        let cep: CiliumEndpoint = serde_yaml::from_str(yaml).expect("parse");
        let status = cep.status.clone().expect("status");
        assert_eq!(status.identity.expect("identity").id, 4242);
        let text = serde_yaml::to_string(&cep).expect("serialize");
        assert!(text.starts_with("apiVersion: cilium.io/v2\nkind: CiliumEndpoint\n"));
        let back: CiliumEndpoint = serde_yaml::from_str(&text).expect("reparse");
        assert_eq!(back, cep);
    }
}
