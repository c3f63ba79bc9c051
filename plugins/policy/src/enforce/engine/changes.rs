//! The incremental steps besides new identities and new policies: a new local endpoint,
//! and the removals (an endpoint, an identity, a policy). Each leaves the maps exactly as
//! a full computation from the engine's new inputs would.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use porin_core::datapath::abi::PolicyKey;

use super::{Engine, Pending, Selected, ep_key, merge_pending};
use crate::Enforcement;
use crate::enforce::desired::{EndpointInput, NamedPorts, unique_named_ports};
use crate::model::{Direction, Subject};

/// Every key of `endpoint_id`, or only those for the peer identity `identity`.
fn keys_of(endpoint_id: u32, identity: Option<u32>) -> RangeInclusive<PolicyKey> {
    let key = |identity, dport, proto, direction| PolicyKey {
        endpoint_id,
        identity,
        dport,
        proto,
        direction,
    };
    let (low, high) = identity.map_or((0, u32::MAX), |id| (id, id));
    key(low, 0, 0, 0)..=key(high, u16::MAX, u8::MAX, u8::MAX)
}

impl Engine {
    /// A new local endpoint (a pod scheduled on this node): only the rules whose subject
    /// selects it are evaluated, and only its keys and default-deny flags are written.
    pub fn add_endpoint(&mut self, endpoint: &EndpointInput) {
        self.endpoints.insert(endpoint.id, endpoint.clone());
        self.clear_endpoint(endpoint.id);
        if self.enforcement == Enforcement::Always {
            for direction in [Direction::Ingress, Direction::Egress] {
                self.out.default_deny.insert(ep_key(endpoint.id, direction));
            }
        }
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            let selects = !rule.removed
                && matches!(&rule.rule.subject, Subject::Endpoints(s) if s.matches(&endpoint.labels));
            if selects {
                self.rules[index].endpoints.push(endpoint.id);
                self.program_rule_for(index, endpoint.id);
            }
        }
    }

    /// A local endpoint gone (or about to come back relabelled): all its keys and flags.
    pub fn remove_endpoint(&mut self, endpoint_id: u32) {
        self.endpoints.remove(&endpoint_id);
        for rule in &mut self.rules {
            rule.endpoints.retain(|e| *e != endpoint_id);
        }
        self.clear_endpoint(endpoint_id);
    }

    /// An identity gone: it leaves every selection that held it and its keys go from
    /// every endpoint (only selections holding it write keys for it).
    pub fn remove_identity(&mut self, id: u32) {
        let Some(peer) = self.identities.remove(&id) else {
            return;
        };
        for label in peer.labels.iter() {
            let key = (label.key.clone(), label.value.clone());
            if let Some(ids) = self.index.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        self.cidr_peers.remove(&id);
        self.fqdn_peers.remove(&id);
        if self.identity_named_ports.remove(&id).is_some() {
            let mut all = NamedPorts::new();
            for ports in self.identity_named_ports.values() {
                for (name, numbers) in ports {
                    all.entry(name.clone()).or_default().extend(numbers);
                }
            }
            self.egress_named_ports = unique_named_ports(&all);
            self.all_named_ports = all;
        }
        for selection in &mut self.selections {
            if let Selected::Ids(ids) = &mut selection.selected {
                ids.remove(&id);
            }
        }
        let endpoints: Vec<u32> = self.endpoints.keys().copied().collect();
        for endpoint_id in endpoints {
            self.clear_keys(keys_of(endpoint_id, Some(id)));
        }
    }

    /// A policy gone (or about to come back edited): its rules stop selecting and their
    /// entries stop using their selections; the endpoints they selected are recomputed
    /// from the rules that remain, so a key another policy also writes keeps that
    /// policy's value.
    pub fn remove_policy(&mut self, source: &str) {
        let mut affected = BTreeSet::new();
        for index in 0..self.rules.len() {
            let rule = &mut self.rules[index];
            if rule.removed || rule.source != source {
                continue;
            }
            rule.removed = true;
            affected.extend(std::mem::take(&mut rule.endpoints));
            for slot in rule.entries.clone() {
                let selection = self.entries[slot].selection;
                self.selections[selection].slots.retain(|s| *s != slot);
            }
        }
        for endpoint_id in affected {
            self.recompute_endpoint(endpoint_id);
        }
    }

    /// Whether removed policies left more retired rules than the engine should carry (each
    /// keeps its slots): then a full computation, which starts clean, is due.
    pub fn has_many_retired_rules(&self) -> bool {
        let retired = self.rules.iter().filter(|r| r.removed).count();
        retired > 256 && retired > self.rules.len() / 2
    }

    /// One endpoint's keys and flags from the rules in force that select it. Its keys are
    /// collected and merged as in the full computation, then only the keys that differ
    /// are written or removed (most stay).
    fn recompute_endpoint(&mut self, endpoint_id: u32) {
        if !self.endpoints.contains_key(&endpoint_id) {
            self.clear_endpoint(endpoint_id);
            return;
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            self.out
                .default_deny
                .remove(&ep_key(endpoint_id, direction));
            if self.enforcement == Enforcement::Always {
                self.out.default_deny.insert(ep_key(endpoint_id, direction));
            }
        }
        self.pending = Some(Pending::new());
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            if !rule.removed && rule.endpoints.contains(&endpoint_id) {
                self.program_rule_for(index, endpoint_id);
            }
        }
        let wanted = self.pending.take().map(merge_pending).unwrap_or_default();
        let stale: Vec<PolicyKey> = self
            .out
            .entries
            .range(keys_of(endpoint_id, None))
            .filter(|(key, value)| wanted.get(key) != Some(value))
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            self.out.entries.remove(&key);
        }
        for (key, value) in wanted {
            if self.out.entries.get(&key) != Some(&value) {
                self.out.entries.insert(key, value);
            }
        }
    }

    /// The default-deny flags and keys one rule gives one endpoint it selects.
    fn program_rule_for(&mut self, index: usize, endpoint_id: u32) {
        for direction in [Direction::Ingress, Direction::Egress] {
            if self.rules[index].rule.default_deny(direction) {
                self.out.default_deny.insert(ep_key(endpoint_id, direction));
            }
        }
        for slot in self.rules[index].entries.clone() {
            self.program_entry(slot, None, Some(endpoint_id));
        }
    }

    /// Drops all keys and default-deny flags of one endpoint.
    fn clear_endpoint(&mut self, endpoint_id: u32) {
        self.clear_keys(keys_of(endpoint_id, None));
        for direction in [Direction::Ingress, Direction::Egress] {
            self.out
                .default_deny
                .remove(&ep_key(endpoint_id, direction));
        }
    }

    fn clear_keys(&mut self, range: RangeInclusive<PolicyKey>) {
        let keys: Vec<PolicyKey> = self.out.entries.range(range).map(|(k, _)| *k).collect();
        for key in keys {
            self.out.entries.remove(&key);
        }
    }
}
