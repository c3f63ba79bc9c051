//! The transparent DNS proxy: endpoints whose egress policy has `rules.dns` have their
//! DNS (UDP and TCP 53) steered here by the datapath (`bpf/lib/proxy.h`). Queries for
//! names the rules allow go to the server the pod asked; the others get REFUSED. Answers
//! are parsed (CNAME chains included) and their addresses enter the ipcache under the
//! identities of the `toFQDNs` selectors they match before the pod sees them. Every
//! query and answer is published as a DNS L7 record for the flow pipeline.

mod batch;
pub mod message;
mod mmsg;
pub mod pattern;
pub mod record;
mod redirects;
pub mod rules;
pub mod run;
pub mod server;
pub mod state;
pub mod upstream;

pub use message::Rejection;
pub use pattern::NamePattern;
pub use rules::DnsPolicy;
pub use state::{DnsCounters, DnsShared, DnsView};
