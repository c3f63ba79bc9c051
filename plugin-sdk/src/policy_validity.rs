//! Whether each policy object parsed, as the policy plugin reports it to core (which
//! writes it as the object's `Valid` status condition where the datastore has statuses).

/// One policy object and its problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyValidity {
    /// `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy` (others have no status
    /// conditions and are ignored).
    pub kind: String,
    /// None for cluster-wide policies.
    pub namespace: Option<String>,
    pub name: String,
    /// Empty when the object parsed; else what is wrong, naming the field.
    pub problems: Vec<String>,
}
