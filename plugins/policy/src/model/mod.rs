//! The internal policy model every policy kind is parsed into.

mod http;
mod labels;
mod port;
mod rule;
mod selector;

pub use http::{AnchoredRegex, HeaderRequirement, HttpRequest, HttpRequestView, HttpRule};
pub use labels::{Label, LabelError, Labels, NAMESPACE_LABELS, POD_NAMESPACE};
pub use port::{Port, PortProtocol, Protocol};
pub use rule::{
    CidrRule, DefaultDeny, Direction, Entity, FqdnSelector, L7Rules, PeerRule, Peers, Policy,
    PolicyKind, PolicyRef, PortRule, Rule, Subject,
};
pub use selector::{Operator, Requirement, Selector};
