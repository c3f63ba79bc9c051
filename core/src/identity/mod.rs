//! Security identities, as in Cilium: a number standing for a set of
//! security-relevant labels, carried by packets through the ipcache and matched by
//! policy.

mod allocator;
mod filter;
mod labels;
mod reserved;

pub use allocator::{IdentityAllocator, IdentityError, MAX_IDENTITY};
pub use filter::{PodLabelsInput, is_security_relevant, security_labels};
pub use labels::{Label, LabelError, Labels};
pub use reserved::{MIN_CLUSTER_IDENTITY, ReservedIdentity};
