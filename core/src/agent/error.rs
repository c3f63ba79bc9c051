//! Why the agent could not start or run.

use std::path::PathBuf;

use thiserror::Error;

use crate::config::ConfigError;
use crate::datapath::DatapathError;
use crate::state::DatastoreError;

/// Fatal agent errors. Plugin failures are not here: they are reported in status.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Several problems in the configuration, each naming its line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Configs(Vec<ConfigError>),
    #[error("loading the datapath: {0}")]
    Datapath(#[from] DatapathError),
    #[error("starting the datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("local datastore needs `pod_cidr` in [agent] of the configuration")]
    NoPodCidr,
    #[error("IPAM: {0}")]
    Ipam(#[from] crate::ipam::IpamError),
    #[error("plugin {plugin}: {message}")]
    Toggle { plugin: String, message: String },
    #[error("agent API: {0}")]
    Api(#[from] crate::api::ApiError),
}
