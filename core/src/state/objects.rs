//! The kinds of objects the state store holds, and their keys.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, Serializer};

use super::cilium_node::CiliumNode;
use super::cilium_types::{CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy};

/// Error of decoding one document into a typed object, with the field path.
pub type DecodeError = serde_path_to_error::Error<serde_yaml::Error>;

/// Declares [`Kind`] and [`Object`] from one table so they cannot drift.
macro_rules! kinds {
    ($($kind:ident: $ty:ty, $api_version:literal, namespaced = $ns:literal;)*) => {
        /// A kind of object the store holds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            /// Every kind, in key order.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// The `kind` field of this kind's objects.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$kind => stringify!($kind),)*
                }
            }

            /// The `apiVersion` field of this kind's objects.
            pub fn api_version(self) -> &'static str {
                match self {
                    $(Kind::$kind => $api_version,)*
                }
            }

            /// Whether objects of this kind live in a namespace.
            pub fn is_namespaced(self) -> bool {
                match self {
                    $(Kind::$kind => $ns,)*
                }
            }

            /// The kind named by a document's `apiVersion` and `kind`.
            pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
                match (api_version, kind) {
                    $(($api_version, stringify!($kind)) => Some(Kind::$kind),)*
                    _ => None,
                }
            }
        }

        /// One object of any kind the store holds. Cheap to clone.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $($kind(Arc<$ty>),)*
        }

        impl Object {
            /// The kind of this object.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$kind(_) => Kind::$kind,)*
                }
            }

            /// The object's metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$kind(o) => &o.metadata,)*
                }
            }

            /// Decodes a document of a known kind, reporting the field path of
            /// the first problem.
            pub fn decode(kind: Kind, document: serde_yaml::Value) -> Result<Object, DecodeError> {
                match kind {
                    $(Kind::$kind => Ok(Object::$kind(Arc::new(
                        serde_path_to_error::deserialize::<_, $ty>(document)?,
                    ))),)*
                }
            }

            /// Mutable metadata; clones the object first if it is shared.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$kind(o) => &mut Arc::make_mut(o).metadata,)*
                }
            }
        }

        impl Serialize for Object {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Object::$kind(o) => o.serialize(serializer),)*
                }
            }
        }

        $(
            impl From<$ty> for Object {
                fn from(object: $ty) -> Object {
                    Object::$kind(Arc::new(object))
                }
            }

            impl From<Arc<$ty>> for Object {
                fn from(object: Arc<$ty>) -> Object {
                    Object::$kind(object)
                }
            }
        )*
    };
}

kinds! {
    Namespace: Namespace, "v1", namespaced = false;
    Node: Node, "v1", namespaced = false;
    Pod: Pod, "v1", namespaced = true;
    Service: Service, "v1", namespaced = true;
    EndpointSlice: EndpointSlice, "discovery.k8s.io/v1", namespaced = true;
    NetworkPolicy: NetworkPolicy, "networking.k8s.io/v1", namespaced = true;
    CiliumNetworkPolicy: CiliumNetworkPolicy, "cilium.io/v2", namespaced = true;
    CiliumClusterwideNetworkPolicy: CiliumClusterwideNetworkPolicy, "cilium.io/v2", namespaced = false;
    CiliumEndpoint: CiliumEndpoint, "cilium.io/v2", namespaced = true;
    CiliumNode: CiliumNode, "cilium.io/v2", namespaced = false;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace (for namespaced kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// Key of a namespaced object.
    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// Key of a cluster-scoped object.
    pub fn cluster(kind: Kind, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: None,
            name: name.into(),
        }
    }

    /// The smallest key of `kind`: range scans of one kind start here.
    pub(crate) fn first_of(kind: Kind) -> Self {
        ObjectKey {
            kind,
            namespace: None,
            name: String::new(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl Object {
    /// The object's key. Cluster-scoped kinds ignore `metadata.namespace`;
    /// a missing name gives an empty name (datastores reject those first).
    pub fn key(&self) -> ObjectKey {
        let kind = self.kind();
        let meta = self.meta();
        ObjectKey {
            kind,
            namespace: if kind.is_namespaced() {
                meta.namespace.clone()
            } else {
                None
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_their_types() {
        use k8s_openapi::Resource;
        assert_eq!(Kind::Pod.api_version(), Pod::API_VERSION);
        assert_eq!(
            Kind::EndpointSlice.api_version(),
            EndpointSlice::API_VERSION
        );
        assert_eq!(
            Kind::NetworkPolicy.api_version(),
            NetworkPolicy::API_VERSION
        );
        assert_eq!(
            Kind::from_type("cilium.io/v2", "CiliumEndpoint"),
            Some(Kind::CiliumEndpoint)
        );
        assert_eq!(Kind::from_type("v1", "ConfigMap"), None);
    }

    #[test]
    fn decode_reports_the_field_path() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: abc}]\n",
        )
        .expect("yaml");
        let err = Object::decode(Kind::Pod, doc).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "spec.containers[0].ports[0].containerPort: invalid type: string \"abc\", expected i32"
        );
    }

    #[test]
    fn key_display() {
        let key = ObjectKey::namespaced(Kind::Pod, "payments", "api");
        assert_eq!(key.to_string(), "Pod payments/api");
        assert_eq!(ObjectKey::cluster(Kind::Node, "n1").to_string(), "Node n1");
    }
}
