//! The JSON documents of the native ABI (see [`super::abi`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ChangedObject, StateChangeSummary};

/// What the agent tells a native plugin when it starts it (the plain parts of the
/// [`crate::PluginContext`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartInfo {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Directory of the pinned datapath maps (`map_pin_path` joins a map name to it).
    pub map_dir: PathBuf,
}

/// A [`StateChangeSummary`] on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub kinds: Vec<String>,
    pub objects: Vec<WireObject>,
}

/// A [`ChangedObject`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireObject {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl From<&StateChangeSummary> for StateChange {
    fn from(s: &StateChangeSummary) -> Self {
        Self {
            kinds: s.kinds.clone(),
            objects: s
                .objects
                .iter()
                .map(|o| WireObject {
                    kind: o.kind.clone(),
                    namespace: o.namespace.clone(),
                    name: o.name.clone(),
                })
                .collect(),
        }
    }
}

impl From<StateChange> for StateChangeSummary {
    fn from(s: StateChange) -> Self {
        Self {
            kinds: s.kinds,
            objects: s
                .objects
                .into_iter()
                .map(|o| ChangedObject {
                    kind: o.kind,
                    namespace: o.namespace,
                    name: o.name,
                })
                .collect(),
        }
    }
}
