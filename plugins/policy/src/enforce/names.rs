//! The table that names the policy ids of the policy maps, published to the flow pipeline
//! (`PluginContext::publish_policies`) so flows can say which policy allowed or denied them.
//!
//! Ids are [`policy_id`]: a hash of the policy's kind, namespace and name. So an id depends
//! on nothing but its own policy: it stays the same across recomputations, restarts and
//! changes of other policies, and is only ever used again by a policy of the same kind and
//! name. Two policies whose names hash alike (about 1 in 8,600 at 1,000 policies) would
//! share an id; the table then names the first in order and the collision is logged.

use porin_plugin_sdk::{PolicyInfo, PolicyTable};

use super::desired::policy_id;
use crate::model::PolicyRef;

/// The table of `policies` at `revision`, and the collisions (as messages).
pub fn policy_table<'a>(
    policies: impl IntoIterator<Item = &'a PolicyRef>,
    revision: u64,
) -> (PolicyTable, Vec<String>) {
    let mut table = PolicyTable::new();
    let mut collisions = Vec::new();
    for source in policies {
        let id = policy_id(source);
        let info = PolicyInfo::new(
            &source.kind.to_string(),
            source.namespace.as_deref(),
            &source.name,
            revision,
        );
        match table.get(&id) {
            Some(first)
                if first.kind != info.kind
                    || first.namespace != info.namespace
                    || first.name != info.name =>
            {
                collisions.push(format!(
                    "{source} has the same policy id {id} as {} {}/{}: its flows name the latter",
                    first.kind, first.namespace, first.name
                ));
            }
            Some(_) => {}
            None => {
                table.insert(id, info);
            }
        }
    }
    (table, collisions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PolicyKind;

    fn cnp(ns: &str, name: &str) -> PolicyRef {
        PolicyRef {
            kind: PolicyKind::CiliumNetworkPolicy,
            namespace: Some(ns.to_string()),
            name: name.to_string(),
        }
    }

    #[test]
    fn ids_name_their_policy_and_do_not_depend_on_the_others() {
        let a = cnp("payments", "payments-egress");
        let b = PolicyRef {
            kind: PolicyKind::CiliumClusterwideNetworkPolicy,
            namespace: None,
            name: "require-mtls".to_string(),
        };
        let (both, collisions) = policy_table([&a, &b], 4);
        assert!(collisions.is_empty());
        let named = &both[&policy_id(&a)];
        assert_eq!(
            (
                named.name.as_str(),
                named.namespace.as_str(),
                named.kind.as_str()
            ),
            ("payments-egress", "payments", "CiliumNetworkPolicy")
        );
        assert_eq!(named.revision, 4);
        assert_eq!(both[&policy_id(&b)].namespace, "");
        // Without b, a keeps its id; the same name in another namespace gets another one.
        let (alone, _) = policy_table([&a], 5);
        assert_eq!(alone.keys().collect::<Vec<_>>(), [&policy_id(&a)]);
        assert_ne!(policy_id(&a), policy_id(&cnp("other", "payments-egress")));
    }
}
