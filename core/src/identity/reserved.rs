//! Reserved identities with Cilium's numbers, so flows and policies read the same.

use super::Labels;

/// First identity allocated for label sets (Cilium's `MinimalAllocationIdentity`).
pub const MIN_CLUSTER_IDENTITY: u32 = 256;

/// Identities every agent knows without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReservedIdentity {
    Host = 1,
    World = 2,
    Unmanaged = 3,
    Health = 4,
    Init = 5,
    RemoteNode = 6,
    KubeApiserver = 7,
    Ingress = 8,
}

impl ReservedIdentity {
    pub const ALL: [Self; 8] = [
        Self::Host,
        Self::World,
        Self::Unmanaged,
        Self::Health,
        Self::Init,
        Self::RemoteNode,
        Self::KubeApiserver,
        Self::Ingress,
    ];

    /// The numeric identity.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The label value after `reserved:` (Cilium's names).
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::World => "world",
            Self::Unmanaged => "unmanaged",
            Self::Health => "health",
            Self::Init => "init",
            Self::RemoteNode => "remote-node",
            Self::KubeApiserver => "kube-apiserver",
            Self::Ingress => "ingress",
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// `reserved:<name>` as a label set.
    pub fn labels(self) -> Labels {
        Labels::from_reserved(self.name())
    }

    /// The reserved identity a label set stands for: exactly one `reserved:` label.
    pub fn from_labels(labels: &Labels) -> Option<Self> {
        let mut iter = labels.iter();
        let only = iter.next()?;
        if iter.next().is_some() || only.source != "reserved" {
            return None;
        }
        Self::from_name(&only.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_cilium() {
        let expected = [
            ("host", 1),
            ("world", 2),
            ("unmanaged", 3),
            ("health", 4),
            ("init", 5),
            ("remote-node", 6),
            ("kube-apiserver", 7),
            ("ingress", 8),
        ];
        for (name, id) in expected {
            let r = ReservedIdentity::from_name(name).expect("known");
            assert_eq!(r.id(), id);
            assert_eq!(ReservedIdentity::from_id(id), Some(r));
            assert_eq!(ReservedIdentity::from_labels(&r.labels()), Some(r));
        }
        assert_eq!(ReservedIdentity::from_id(9), None);
    }
}
