//! CustomResourceDefinitions of the `cilium.io/v2` kinds, generated from the
//! Rust types: `porin crds` prints them, `deploy/crds/` holds the committed
//! copy, and a test fails when the two drift.
//!
//! Typed parts (CiliumNode, CiliumEndpoint status, policy status) get their
//! OpenAPI schema from `schemars`, rewritten into Kubernetes' structural form
//! by kube's `StructuralSchemaRewriter`. Policy specs are owned by the policy
//! plugin and stay open (`x-kubernetes-preserve-unknown-fields`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::schema::StructuralSchemaRewriter;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use super::cilium_node::{CiliumNodeSpec, CiliumNodeStatus};
use super::cilium_types::{CILIUM_GROUP, CILIUM_VERSION, CiliumEndpointStatus, PolicyStatus};

/// Failure to build or print a CRD (a bug in the types, not user input).
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("CRD {name}: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("printing CRDs as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The structural OpenAPI v3 schema of `T`, inlined (no `$ref`).
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(map) = schema.as_object_mut() {
        map.remove("title");
        map.remove("$defs");
        map.remove("definitions");
    }
    schema
}

/// A field whose content another component validates.
fn open_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

struct Definition {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    properties: Value,
    columns: Value,
    status_subresource: bool,
}

impl Definition {
    fn build(self) -> Result<CustomResourceDefinition, CrdError> {
        let name = format!("{}.{CILIUM_GROUP}", self.plural);
        let mut properties = self.properties;
        if let Some(map) = properties.as_object_mut() {
            map.insert("apiVersion".into(), json!({"type": "string"}));
            map.insert("kind".into(), json!({"type": "string"}));
            map.insert("metadata".into(), json!({"type": "object"}));
        }
        let mut version = json!({
            "name": CILIUM_VERSION,
            "served": true,
            "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": properties}},
            "additionalPrinterColumns": self.columns,
        });
        if self.status_subresource {
            version["subresources"] = json!({"status": {}});
        }
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/part-of": "porin"},
            },
            "spec": {
                "group": CILIUM_GROUP,
                "names": {
                    "kind": self.kind,
                    "listKind": format!("{}List", self.kind),
                    "plural": self.plural,
                    "singular": self.singular,
                    "shortNames": self.short_names,
                    "categories": ["cilium"],
                },
                "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
                "versions": [version],
            },
        });
        serde_json::from_value(crd).map_err(|source| CrdError::Json { name, source })
    }
}

fn column(name: &str, kind: &str, path: &str, priority: i32) -> Value {
    json!({"name": name, "type": kind, "jsonPath": path, "priority": priority})
}

fn age() -> Value {
    column("Age", "date", ".metadata.creationTimestamp", 0)
}

fn policy(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
) -> Definition {
    Definition {
        kind,
        plural,
        singular,
        short_names: short,
        namespaced,
        properties: json!({
            "spec": open_object(),
            "specs": {"type": "array", "items": open_object()},
            "status": schema_of::<PolicyStatus>(),
        }),
        columns: json!([
            column(
                "Valid",
                "string",
                ".status.conditions[?(@.type==\"Valid\")].status",
                0
            ),
            age(),
        ]),
        status_subresource: true,
    }
}

/// Every CRD Porin uses, in a stable order.
pub fn definitions() -> Result<Vec<CustomResourceDefinition>, CrdError> {
    [
        Definition {
            kind: "CiliumNode",
            plural: "ciliumnodes",
            singular: "ciliumnode",
            short_names: &["cn", "ciliumn"],
            namespaced: false,
            properties: json!({
                "spec": schema_of::<CiliumNodeSpec>(),
                "status": schema_of::<CiliumNodeStatus>(),
            }),
            columns: json!([
                column(
                    "CiliumInternalIP",
                    "string",
                    ".spec.addresses[?(@.type==\"CiliumInternalIP\")].ip",
                    0
                ),
                column(
                    "InternalIP",
                    "string",
                    ".spec.addresses[?(@.type==\"InternalIP\")].ip",
                    0
                ),
                column("PodCIDR", "string", ".spec.ipam.podCIDRs[0]", 1),
                column("Health", "string", ".status.agent.state", 1),
                age(),
            ]),
            status_subresource: true,
        },
        Definition {
            kind: "CiliumEndpoint",
            plural: "ciliumendpoints",
            singular: "ciliumendpoint",
            short_names: &["cep", "ciliumep"],
            namespaced: true,
            properties: json!({"status": schema_of::<CiliumEndpointStatus>()}),
            columns: json!([
                column("Security Identity", "integer", ".status.identity.id", 0),
                column("Endpoint State", "string", ".status.state", 0),
                column("IPv4", "string", ".status.networking.addressing[0].ipv4", 0),
                column("IPv6", "string", ".status.networking.addressing[0].ipv6", 0),
                column(
                    "Ingress Enforcement",
                    "boolean",
                    ".status.policy.ingress.enforcing",
                    1
                ),
                column(
                    "Egress Enforcement",
                    "boolean",
                    ".status.policy.egress.enforcing",
                    1
                ),
            ]),
            // Like Cilium's: the object is all status, written by one agent.
            status_subresource: false,
        },
        policy(
            "CiliumNetworkPolicy",
            "ciliumnetworkpolicies",
            "ciliumnetworkpolicy",
            &["cnp", "ciliumnp"],
            true,
        ),
        policy(
            "CiliumClusterwideNetworkPolicy",
            "ciliumclusterwidenetworkpolicies",
            "ciliumclusterwidenetworkpolicy",
            &["ccnp"],
            false,
        ),
    ]
    .into_iter()
    .map(Definition::build)
    .collect()
}

/// Every CRD as one multi-document YAML stream, what `porin crds` prints.
pub fn to_yaml() -> Result<String, CrdError> {
    let mut out = String::from("# Generated by `porin crds`; do not edit.\n");
    for crd in definitions()? {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_structural_and_inline() {
        let text = to_yaml().expect("crds");
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("anyOf"), "{text}");
        let crds = definitions().expect("crds");
        let names: Vec<_> = crds
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "ciliumnodes.cilium.io",
                "ciliumendpoints.cilium.io",
                "ciliumnetworkpolicies.cilium.io",
                "ciliumclusterwidenetworkpolicies.cilium.io"
            ]
        );
        let node = serde_json::to_value(&crds[0]).expect("json");
        let spec = &node["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["ipam"]["properties"]["podCIDRs"]["type"],
            "array"
        );
        assert_eq!(
            spec["properties"]["encryption"]["properties"]["key"]["type"],
            "integer"
        );
    }
}
