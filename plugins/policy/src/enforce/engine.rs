//! The policy map computation, kept incremental.
//!
//! Like Cilium's selector cache, every peer entry of every rule resolves its selectors
//! once against all identities (through a label index, so a `matchLabels` selector only
//! looks at identities carrying one of its labels), and every rule knows the local
//! endpoints it selects. The map contents are the union of (endpoint, identity, port)
//! keys of all (rule, entry) pairs, merged by [`insert_entry`]'s precedence (deny over
//! allow, then the smaller policy id), which does not depend on order. So:
//!
//! - a new identity is tested against each entry's selectors and adds keys only for the
//!   endpoints of the rules whose entries select it;
//! - a new policy resolves only its own entries and adds keys only for the endpoints its
//!   rules select.
//!
//! - a new local endpoint evaluates only the rules whose subject selects it and writes
//!   only its own keys ([`changes`]);
//! - a removed identity drops exactly its keys, a removed endpoint all of its keys and
//!   flags, and a removed policy recomputes only the endpoints its rules selected, from
//!   the rules that remain (a key two policies write keeps the other writer's value).
//!
//! A label change (a namespace relabelled) is identities replaced and endpoints
//! relabelled: removals followed by additions.

mod changes;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use porin_core::datapath::abi::{
    POLICY_ALLOW, POLICY_DENY, POLICY_L7_PORT_IDENTITY, PolicyEpKey, PolicyKey, PolicyValue,
};

use super::desired::{
    Desired, EndpointInput, IdentityInput, NamedPorts, dp_direction, names_ports, policy_id,
    port_keys, unique_named_ports,
};
use crate::Enforcement;
use crate::compute::{CidrIdentities, Peer};
use crate::model::{Direction, Entity, Operator, PeerRule, Peers, Policy, Rule, Subject};
use crate::proxy::ProxyPorts;

/// One rule in force with its policy's id and the local endpoints it selects.
struct RuleSlot {
    policy_id: u32,
    /// The policy's name (`namespace/name`), which removals go by.
    source: String,
    rule: Rule,
    endpoints: Vec<u32>,
    /// Its entry slots.
    entries: Range<usize>,
    /// The policy was removed: the rule selects nothing and its entries are no
    /// selection's users any more.
    removed: bool,
}

/// The identities one entry of one rule selects.
enum Selected {
    /// Any identity (no L3 restriction, or `all`): identity 0 in the map.
    Any,
    Ids(BTreeSet<u32>),
}

/// A distinct L3 peer set (entries with the same selectors share one) and the
/// identities it selects.
struct Selection {
    peers: Peers,
    selected: Selected,
    /// Entry slots using it.
    slots: Vec<usize>,
}

/// One entry (`ingress[i]`, `egressDeny[j]`, ...) of one rule, resolved.
struct EntrySlot {
    rule: usize,
    direction: Direction,
    deny: bool,
    entry: PeerRule,
    selection: usize,
}

/// Policies, identities and endpoints, and the policy maps they give.
pub struct Engine {
    enforcement: Enforcement,
    /// The proxy ports allow entries with L7 rules carry.
    proxies: ProxyPorts,
    rules: Vec<RuleSlot>,
    entries: Vec<EntrySlot>,
    selections: Vec<Selection>,
    /// The selection of each distinct peer set, by its JSON form.
    selection_by_peers: HashMap<String, usize>,
    identities: BTreeMap<u32, Peer>,
    /// (label key, value) -> identities carrying it, whatever the label's source.
    index: HashMap<(String, String), BTreeSet<u32>>,
    /// CIDR identities and world: the only candidates of CIDR rules.
    cidr_peers: BTreeSet<u32>,
    /// FQDN selector identities: the only candidates of `toFQDNs` rules.
    fqdn_peers: BTreeSet<u32>,
    endpoints: BTreeMap<u32, EndpointInput>,
    /// Every port number each port name has on some pod of the cluster, and the names
    /// with exactly one, which egress rules resolve against.
    all_named_ports: NamedPorts,
    /// The named ports of each identity that has some, to recompute the above when one
    /// is removed.
    identity_named_ports: BTreeMap<u32, NamedPorts>,
    egress_named_ports: BTreeMap<String, u16>,
    out: Desired,
    /// During the full computation, keys are collected here and merged once at the end
    /// (a sort and a bulk build instead of about a million tree insertions).
    pending: Option<Pending>,
}

/// Keeps the stronger of two values for one key: deny over allow, then an allow that
/// goes through a proxy (its L7 rules must see the traffic, e.g. to learn DNS names),
/// then the smaller policy id, so the result does not depend on the order of insertion.
pub fn insert_entry(
    entries: &mut BTreeMap<PolicyKey, PolicyValue>,
    key: PolicyKey,
    value: PolicyValue,
) {
    // One tree walk per key: the computation inserts about a million of them at scale.
    match entries.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut slot) => {
            if rank(slot.get()) < rank(&value) {
                slot.insert(value);
            }
        }
    }
}

/// The precedence [`insert_entry`] keeps the greatest of.
fn rank(v: &PolicyValue) -> (u8, bool, std::cmp::Reverse<u32>) {
    (v.action, v.proxy_port != 0, std::cmp::Reverse(v.policy_id))
}

/// Keys collected during the full computation, per endpoint, each as one integer.
type Pending = BTreeMap<u32, Vec<(u64, PolicyValue)>>;

/// The rest of a key after its endpoint, as one integer in the field order of
/// `PolicyKey`'s derived `Ord`: sorting by it is one comparison instead of four.
fn packed(k: &PolicyKey) -> u64 {
    (u64::from(k.identity) << 32)
        | (u64::from(k.dport) << 16)
        | (u64::from(k.proto) << 8)
        | u64::from(k.direction)
}

fn unpacked(endpoint_id: u32, packed: u64) -> PolicyKey {
    PolicyKey {
        endpoint_id,
        identity: (packed >> 32) as u32,
        dport: (packed >> 16) as u16,
        proto: (packed >> 8) as u8,
        direction: packed as u8,
    }
}

/// The map contents of the collected keys with [`insert_entry`]'s precedence: each
/// endpoint's keys sorted, the strongest value of each run of equal keys kept, the map
/// built in bulk from the sorted run.
fn merge_pending(pending: Pending) -> BTreeMap<PolicyKey, PolicyValue> {
    let total = pending.values().map(Vec::len).sum();
    let mut merged: Vec<(PolicyKey, PolicyValue)> = Vec::with_capacity(total);
    for (endpoint_id, mut keys) in pending {
        keys.sort_unstable_by_key(|(key, _)| *key);
        let mut last: Option<(u64, PolicyValue)> = None;
        for (key, value) in keys {
            match &mut last {
                Some((k, kept)) if *k == key => {
                    if rank(kept) < rank(&value) {
                        *kept = value;
                    }
                }
                _ => {
                    if let Some((k, v)) = last.replace((key, value)) {
                        merged.push((unpacked(endpoint_id, k), v));
                    }
                }
            }
        }
        if let Some((k, v)) = last {
            merged.push((unpacked(endpoint_id, k), v));
        }
    }
    merged.into_iter().collect()
}

impl Engine {
    /// The full computation, with the default proxy ports.
    pub fn new(
        policies: &[Policy],
        enforcement: Enforcement,
        endpoints: &[EndpointInput],
        identities: &[IdentityInput],
        cidrs: &CidrIdentities,
    ) -> Self {
        Self::with_proxies(
            policies,
            enforcement,
            endpoints,
            identities,
            cidrs,
            ProxyPorts::default(),
        )
    }

    /// The full computation.
    pub fn with_proxies(
        policies: &[Policy],
        enforcement: Enforcement,
        endpoints: &[EndpointInput],
        identities: &[IdentityInput],
        cidrs: &CidrIdentities,
        proxies: ProxyPorts,
    ) -> Self {
        let mut engine = Self {
            enforcement,
            proxies,
            rules: Vec::new(),
            entries: Vec::new(),
            selections: Vec::new(),
            selection_by_peers: HashMap::new(),
            identities: BTreeMap::new(),
            index: HashMap::new(),
            cidr_peers: BTreeSet::new(),
            fqdn_peers: BTreeSet::new(),
            endpoints: endpoints.iter().map(|e| (e.id, e.clone())).collect(),
            all_named_ports: NamedPorts::new(),
            identity_named_ports: BTreeMap::new(),
            egress_named_ports: BTreeMap::new(),
            out: Desired::default(),
            pending: Some(Pending::new()),
        };
        let peers = identities
            .iter()
            .map(|i| {
                let peer = Peer {
                    labels: i.labels.clone(),
                    cidr: None,
                };
                (i.id, peer)
            })
            .chain(cidrs.peers());
        for (id, peer) in peers {
            engine.index_identity(id, peer);
        }
        for identity in identities {
            engine.index_named_ports(identity);
        }
        engine.egress_named_ports = unique_named_ports(&engine.all_named_ports);
        if enforcement == Enforcement::Always {
            for id in engine.endpoints.keys().copied().collect::<Vec<_>>() {
                for direction in [Direction::Ingress, Direction::Egress] {
                    engine.out.default_deny.insert(ep_key(id, direction));
                }
            }
        }
        for policy in policies {
            engine.add_policy(policy);
        }
        // Nothing else writes entries while keys are collected.
        if let Some(pending) = engine.pending.take() {
            engine.out.entries = merge_pending(pending);
        }
        engine
    }

    /// The maps' contents.
    pub fn desired(&self) -> &Desired {
        &self.out
    }

    pub fn into_desired(self) -> Desired {
        self.out
    }

    /// Number of map entries of one endpoint.
    pub fn entries_of(&self, endpoint: u32) -> usize {
        self.out
            .entries
            .keys()
            .filter(|k| k.endpoint_id == endpoint)
            .count()
    }

    fn index_identity(&mut self, id: u32, peer: Peer) {
        for label in peer.labels.iter() {
            self.index
                .entry((label.key.clone(), label.value.clone()))
                .or_default()
                .insert(id);
        }
        if peer.cidr.is_some() || peer.is_world() {
            self.cidr_peers.insert(id);
        }
        if peer.is_fqdn() {
            self.fqdn_peers.insert(id);
        }
        self.identities.insert(id, peer);
    }

    fn index_named_ports(&mut self, identity: &IdentityInput) {
        if identity.named_ports.is_empty() {
            return;
        }
        for (name, ports) in &identity.named_ports {
            self.all_named_ports
                .entry(name.clone())
                .or_default()
                .extend(ports);
        }
        self.identity_named_ports
            .insert(identity.id, identity.named_ports.clone());
    }

    /// Whether some rule in force names a port at egress: then a new identity with named
    /// ports can change what the name resolves to for every peer, which
    /// [`Engine::add_identity`] does not revisit (the caller recomputes fully).
    pub fn resolves_egress_named_ports(&self) -> bool {
        self.entries.iter().any(|e| {
            e.direction == Direction::Egress && !self.rules[e.rule].removed && names_ports(&e.entry)
        })
    }

    /// A new identity (a new pod label set somewhere in the cluster): only the entries
    /// that select it gain keys.
    pub fn add_identity(&mut self, identity: &IdentityInput) {
        let peer = Peer {
            labels: identity.labels.clone(),
            cidr: None,
        };
        self.index_identity(identity.id, peer.clone());
        self.index_named_ports(identity);
        self.egress_named_ports = unique_named_ports(&self.all_named_ports);
        if self.enforcement == Enforcement::Never {
            return;
        }
        for index in 0..self.selections.len() {
            let selection = &mut self.selections[index];
            let Selected::Ids(ids) = &mut selection.selected else {
                continue;
            };
            if !peer.selected_by_peers(&selection.peers) {
                continue;
            }
            ids.insert(identity.id);
            for slot in selection.slots.clone() {
                self.program_entry(slot, Some(identity.id), None);
            }
        }
    }

    /// A new policy: its rules select endpoints and resolve their own entries only.
    pub fn add_policy(&mut self, policy: &Policy) {
        if self.enforcement == Enforcement::Never {
            return;
        }
        let id = policy_id(&policy.source);
        for rule in &policy.rules {
            let endpoints: Vec<u32> = self
                .endpoints
                .values()
                .filter(|e| matches!(&rule.subject, Subject::Endpoints(s) if s.matches(&e.labels)))
                .map(|e| e.id)
                .collect();
            for direction in [Direction::Ingress, Direction::Egress] {
                if rule.default_deny(direction) {
                    for ep in &endpoints {
                        self.out.default_deny.insert(ep_key(*ep, direction));
                    }
                }
            }
            let index = self.rules.len();
            let first = self.entries.len();
            self.rules.push(RuleSlot {
                policy_id: id,
                source: policy.source.to_string(),
                rule: rule.clone(),
                endpoints,
                entries: first..first,
                removed: false,
            });
            for direction in [Direction::Ingress, Direction::Egress] {
                for deny in [false, true] {
                    let section = self.rules[index].rule.section(direction, deny).to_vec();
                    for entry in section {
                        let slot = self.entries.len();
                        let selection = self.selection_for(&entry.peers, slot);
                        self.entries.push(EntrySlot {
                            rule: index,
                            direction,
                            deny,
                            entry,
                            selection,
                        });
                        self.program_entry(slot, None, None);
                    }
                }
            }
            self.rules[index].entries = first..self.entries.len();
        }
    }

    /// The shared selection of `peers`, resolved on first use, now also used by `slot`.
    fn selection_for(&mut self, peers: &Peers, slot: usize) -> usize {
        let key = serde_json::to_string(peers).unwrap_or_default();
        let index = match self.selection_by_peers.get(&key) {
            Some(index) => *index,
            None => {
                let selected = self.select(peers);
                self.selections.push(Selection {
                    peers: peers.clone(),
                    selected,
                    slots: Vec::new(),
                });
                self.selection_by_peers
                    .insert(key, self.selections.len() - 1);
                self.selections.len() - 1
            }
        };
        self.selections[index].slots.push(slot);
        index
    }

    /// Identities a peer set selects, looked up through the label index where a selector
    /// has an `In` requirement, checked against the full selection logic.
    fn select(&self, peers: &Peers) -> Selected {
        if peers.wildcard || peers.entities.contains(&Entity::All) {
            return Selected::Any;
        }
        let mut candidates: BTreeSet<u32> = BTreeSet::new();
        let mut scan_all = !peers.entities.is_empty();
        for selector in &peers.endpoints {
            let narrowest = selector
                .requirements
                .iter()
                .filter_map(|r| match &r.operator {
                    Operator::In(values) => Some(
                        values
                            .iter()
                            .flat_map(|v| {
                                self.index
                                    .get(&(r.key.clone(), v.clone()))
                                    .into_iter()
                                    .flatten()
                            })
                            .copied()
                            .collect::<BTreeSet<u32>>(),
                    ),
                    _ => None,
                })
                .min_by_key(BTreeSet::len);
            match narrowest {
                Some(ids) => candidates.extend(ids),
                None => scan_all = true,
            }
        }
        if !peers.cidrs.is_empty() {
            // CIDR rules select only CIDR identities and world, never labelled pods.
            candidates.extend(&self.cidr_peers);
        }
        if !peers.fqdns.is_empty() {
            // toFQDNs selects only FQDN selector identities.
            candidates.extend(&self.fqdn_peers);
        }
        let ids = if scan_all {
            self.identities
                .iter()
                .filter(|(_, p)| p.selected_by_peers(peers))
                .map(|(id, _)| *id)
                .collect()
        } else {
            candidates
                .into_iter()
                .filter(|id| {
                    self.identities
                        .get(id)
                        .is_some_and(|p| p.selected_by_peers(peers))
                })
                .collect()
        };
        Selected::Ids(ids)
    }

    /// Writes the keys of one entry for every endpoint of its rule (or only for the
    /// endpoint `only_endpoint`): for all identities it selects, or only for `only`.
    fn program_entry(&mut self, slot: usize, only: Option<u32>, only_endpoint: Option<u32>) {
        let entry = &self.entries[slot];
        let rule = &self.rules[entry.rule];
        let value = |proxy_port: u16| PolicyValue {
            policy_id: rule.policy_id,
            action: if entry.deny {
                POLICY_DENY
            } else {
                POLICY_ALLOW
            },
            pad: 0,
            proxy_port: if entry.deny { 0 } else { proxy_port },
        };
        let ids: Vec<u32> = match (&self.selections[entry.selection].selected, only) {
            (_, Some(id)) => vec![id],
            (Selected::Any, None) => vec![0],
            (Selected::Ids(ids), None) => ids.iter().copied().collect(),
        };
        let dir = dp_direction(entry.direction);
        for ep in &rule.endpoints {
            if only_endpoint.is_some_and(|o| o != *ep) {
                continue;
            }
            let Some(endpoint) = self.endpoints.get(ep) else {
                continue;
            };
            let ports = port_keys(
                &entry.entry,
                entry.direction,
                endpoint,
                &self.egress_named_ports,
                &self.proxies,
            );
            let markers = l7_port_markers(&ports, self.proxies.http, entry.deny);
            let keys = ids
                .iter()
                .flat_map(|&identity| {
                    ports.iter().map(move |&(proto, dport, proxy)| {
                        let key = PolicyKey {
                            endpoint_id: *ep,
                            identity,
                            dport,
                            proto,
                            direction: dir,
                        };
                        (key, proxy)
                    })
                })
                .chain(markers.into_iter().map(|(proto, dport, proxy)| {
                    let key = PolicyKey {
                        endpoint_id: *ep,
                        identity: POLICY_L7_PORT_IDENTITY,
                        dport,
                        proto,
                        direction: dir,
                    };
                    (key, proxy)
                }));
            match &mut self.pending {
                Some(pending) => {
                    let collected = pending.entry(*ep).or_default();
                    collected.extend(keys.map(|(key, proxy)| (packed(&key), value(proxy))));
                }
                None => {
                    for (key, proxy) in keys {
                        insert_entry(&mut self.out.entries, key, value(proxy));
                    }
                }
            }
        }
    }
}

/// The ports of an allow entry with HTTP rules, which get a marker key
/// ([`POLICY_L7_PORT_IDENTITY`]) whatever peers the entry selects: every connection allowed
/// on such a port goes to the HTTP proxy, as Cilium redirects the whole port (peers allowed
/// without HTTP rules get allow-all at L7). Not for a port-less entry (every port).
fn l7_port_markers(ports: &[(u8, u16, u16)], http_proxy: u16, deny: bool) -> Vec<(u8, u16, u16)> {
    if deny || http_proxy == 0 {
        return Vec::new();
    }
    ports
        .iter()
        .filter(|&&(_, dport, proxy)| dport != 0 && proxy == http_proxy)
        .copied()
        .collect()
}

fn ep_key(endpoint_id: u32, direction: Direction) -> PolicyEpKey {
    PolicyEpKey {
        endpoint_id,
        direction: dp_direction(direction),
        pad: [0; 3],
    }
}
