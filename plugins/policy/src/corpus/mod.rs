//! The compatibility corpus: scenarios rewritten from Cilium's documentation and policy
//! tests (`tests/policy-corpus/`), their format, and the offline runner that checks
//! them through `porin policy trace`'s computation and through the datapath's maps.

pub mod format;
pub mod run;

pub use format::{CorpusFile, EndpointSpec, Expected, Flow, FlowPeer, Scenario};
pub use run::{check_scenario, load_dir, load_file, pod_labels};

#[cfg(test)]
mod tests;
