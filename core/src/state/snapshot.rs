//! An immutable view of the store at one generation.

use std::collections::BTreeMap;
use std::collections::btree_map;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::cilium_node::CiliumNode;
use super::cilium_types::{CiliumClusterwideNetworkPolicy, CiliumEndpoint, CiliumNetworkPolicy};
use super::objects::{Kind, Object, ObjectKey};

/// Every object of the store at one generation. Readers hold an
/// `Arc<Snapshot>` and never see a half-applied change.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) objects: BTreeMap<ObjectKey, Object>,
}

/// Typed accessors: `plural()` iterates in key order, `singular(...)` looks one up.
macro_rules! accessors {
    ($($kind:ident: $ty:ty, $plural:ident, $singular:ident($($arg:ident),*);)*) => {
        impl Snapshot {
            $(
                #[doc = concat!("Every ", stringify!($kind), ", ordered by key.")]
                pub fn $plural(&self) -> impl Iterator<Item = &$ty> + '_ {
                    self.of_kind(Kind::$kind).filter_map(|o| match o {
                        Object::$kind(x) => Some(&**x),
                        _ => None,
                    })
                }

                #[doc = concat!("One ", stringify!($kind), " by name.")]
                pub fn $singular(&self, $($arg: &str),*) -> Option<&$ty> {
                    let key = accessors!(@key $kind $($arg)*);
                    match self.objects.get(&key) {
                        Some(Object::$kind(x)) => Some(&**x),
                        _ => None,
                    }
                }
            )*
        }
    };
    (@key $kind:ident $name:ident) => { ObjectKey::cluster(Kind::$kind, $name) };
    (@key $kind:ident $ns:ident $name:ident) => { ObjectKey::namespaced(Kind::$kind, $ns, $name) };
}

accessors! {
    Namespace: Namespace, namespaces, namespace(name);
    Node: Node, nodes, node(name);
    Pod: Pod, pods, pod(namespace, name);
    Service: Service, services, service(namespace, name);
    EndpointSlice: EndpointSlice, endpoint_slices, endpoint_slice(namespace, name);
    NetworkPolicy: NetworkPolicy, network_policies, network_policy(namespace, name);
    CiliumNetworkPolicy: CiliumNetworkPolicy, cilium_network_policies, cilium_network_policy(namespace, name);
    CiliumClusterwideNetworkPolicy: CiliumClusterwideNetworkPolicy, clusterwide_policies, clusterwide_policy(name);
    CiliumEndpoint: CiliumEndpoint, cilium_endpoints, cilium_endpoint(namespace, name);
    CiliumNode: CiliumNode, cilium_nodes, cilium_node(name);
}

impl Snapshot {
    /// The generation this snapshot was taken at; it grows with every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// One object by key.
    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    /// Every object, ordered by kind, namespace, name.
    pub fn iter(&self) -> btree_map::Iter<'_, ObjectKey, Object> {
        self.objects.iter()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the snapshot holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every object of `kind`, ordered by namespace and name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> + '_ {
        self.objects
            .range(ObjectKey::first_of(kind)..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Pods of one namespace.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.pods()
            .filter(move |p| p.metadata.namespace.as_deref() == Some(namespace))
    }
}
