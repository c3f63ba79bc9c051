//! Runs a corpus scenario offline, twice: through `compute::trace` (what `porin policy
//! trace` prints) and through the policy maps the agent would write (`enforce::desired`)
//! looked up as `bpf/lib/policy.h` does. Both must give the expected verdict and drop
//! reason for every flow.

use std::collections::BTreeMap;
use std::path::Path;

use super::format::{CorpusFile, ENTITIES, EndpointSpec, Expected, Flow, FlowPeer, Scenario};
use crate::compute::{CidrIdentities, L4, Peer, Trace, Verdict, cidr_peer, referenced_prefixes};
use crate::compute::{resolve_address, trace};
use crate::enforce::desired::{
    Desired, EndpointInput, IdentityInput, MapVerdict, NamedPorts, REASON_POLICY_DENIED,
    REASON_POLICY_DENY, desired, dp_direction, lookup, unique_named_ports,
};
use crate::model::{Direction, Label, Labels, NAMESPACE_LABELS, POD_NAMESPACE, Policy, Protocol};
use crate::parse::parse_file;

/// Endpoint ids and identities of a scenario's pods start here, in name order.
const FIRST_POD_IDENTITY: u32 = 1000;

/// Every `*.yaml` of `dir`, parsed, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, CorpusFile)>, String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| Ok((path.display().to_string(), load_file(&path)?)))
        .collect()
}

/// One corpus file.
pub fn load_file(path: &Path) -> Result<CorpusFile, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The pods of a scenario with their endpoint ids (= identities) and labels.
pub struct Pods {
    pub by_name: BTreeMap<String, (u32, Labels, BTreeMap<String, u16>)>,
}

/// Security labels of a pod, as core derives them: its own labels, its namespace and
/// its namespace's labels.
pub fn pod_labels(
    spec: &EndpointSpec,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Labels {
    let mut labels = Labels::default();
    for (k, v) in &spec.labels {
        labels.insert(Label::new("k8s", k, v));
    }
    labels.insert(Label::new("k8s", POD_NAMESPACE, &spec.namespace));
    for (k, v) in namespaces.get(&spec.namespace).into_iter().flatten() {
        labels.insert(Label::new("k8s", &format!("{NAMESPACE_LABELS}{k}"), v));
    }
    labels
}

impl Pods {
    pub fn of(file: &CorpusFile, scenario: &Scenario) -> Self {
        let mut specs = file.endpoints.clone();
        specs.extend(scenario.endpoints.clone());
        let by_name = specs
            .iter()
            .zip(FIRST_POD_IDENTITY..)
            .map(|((name, spec), id)| {
                let entry = (
                    id,
                    pod_labels(spec, &file.namespaces),
                    spec.named_ports.clone(),
                );
                (name.clone(), entry)
            })
            .collect();
        Self { by_name }
    }

    /// The port names with one number over all pods, which egress rules resolve against.
    pub fn cluster_named_ports(&self) -> BTreeMap<String, u16> {
        let mut all = NamedPorts::new();
        for (_, _, ports) in self.by_name.values() {
            for (name, port) in ports {
                all.entry(name.clone()).or_default().insert(*port);
            }
        }
        unique_named_ports(&all)
    }
}

fn reserved_id(name: &str) -> u32 {
    ENTITIES
        .iter()
        .position(|e| *e == name)
        .and_then(|i| u32::try_from(i + 1).ok())
        .unwrap_or(2)
}

fn reserved_labels(name: &str) -> Labels {
    let mut labels = Labels::default();
    labels.insert(Label::new("reserved", name, ""));
    labels
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Icmp => 1,
        Protocol::Any => 0,
    }
}

/// Everything a scenario is evaluated against.
struct Ctx<'a> {
    policies: Vec<Policy>,
    pods: Pods,
    cidrs: CidrIdentities,
    maps: Desired,
    scenario: &'a Scenario,
}

impl Ctx<'_> {
    fn trace_peer(&self, peer: &FlowPeer, side: &'static str) -> Result<Peer, String> {
        Ok(match peer {
            FlowPeer::Endpoint(name) => Peer {
                labels: self.pod(name)?.1.clone(),
                cidr: None,
            },
            FlowPeer::Entity(e) if e == "world" => cidr_peer(None),
            FlowPeer::Entity(e) => Peer {
                labels: reserved_labels(e),
                cidr: None,
            },
            FlowPeer::Address(ip) => resolve_address(&self.policies, side, *ip).0,
        })
    }

    fn identity(&self, peer: &FlowPeer) -> Result<u32, String> {
        Ok(match peer {
            FlowPeer::Endpoint(name) => self.pod(name)?.0,
            FlowPeer::Entity(e) => reserved_id(e),
            FlowPeer::Address(ip) => self.cidrs.lookup(*ip).0,
        })
    }

    fn pod(&self, name: &str) -> Result<&(u32, Labels, BTreeMap<String, u16>), String> {
        self.pods
            .by_name
            .get(name)
            .ok_or_else(|| format!("unknown endpoint {name:?}"))
    }

    /// The outcome through `trace`: the first side that denies decides the reason.
    fn by_trace(&self, flow: &Flow) -> Result<(Expected, Trace), String> {
        let src = self.trace_peer(&flow.src, "source")?;
        let dst = self.trace_peer(&flow.dst, "destination")?;
        let named_ports = match &flow.dst {
            FlowPeer::Endpoint(name) => self.pod(name)?.2.clone(),
            _ => BTreeMap::new(),
        };
        let l4 = L4 {
            port: Some(flow.port),
            named_ports,
            cluster_named_ports: self.pods.cluster_named_ports(),
        };
        let t = trace(&self.policies, self.scenario.enforcement, &src, &dst, &l4);
        let outcome = [&t.egress, &t.ingress]
            .into_iter()
            .find(|d| d.verdict == Verdict::Denied)
            .map_or(Expected::Allowed, |d| {
                if d.matched.iter().any(|m| m.action == "deny") {
                    Expected::Deny
                } else {
                    Expected::Denied
                }
            });
        Ok((outcome, t))
    }

    /// The outcome through the policy maps: egress of the source, then ingress of the
    /// destination, as the packet meets them.
    fn by_maps(&self, flow: &Flow) -> Result<Expected, String> {
        let (port, proto) = flow.port;
        let proto = proto_number(proto);
        let mut sides = Vec::new();
        if let FlowPeer::Endpoint(name) = &flow.src {
            let peer = self.identity(&flow.dst)?;
            sides.push((self.pod(name)?.0, Direction::Egress, peer));
        }
        if let FlowPeer::Endpoint(name) = &flow.dst {
            let peer = self.identity(&flow.src)?;
            sides.push((self.pod(name)?.0, Direction::Ingress, peer));
        }
        for (ep, direction, peer) in sides {
            match lookup(&self.maps, ep, dp_direction(direction), peer, proto, port) {
                MapVerdict::Allowed => {}
                MapVerdict::Dropped(REASON_POLICY_DENY) => return Ok(Expected::Deny),
                MapVerdict::Dropped(REASON_POLICY_DENIED) => return Ok(Expected::Denied),
                MapVerdict::Dropped(other) => {
                    return Err(format!("unexpected drop reason {other}"));
                }
            }
        }
        Ok(Expected::Allowed)
    }
}

/// Problems with one scenario: each names the scenario and the flow.
pub fn check_scenario(file: &CorpusFile, scenario: &Scenario) -> Vec<String> {
    let fail = |what: String| vec![format!("{}: {what}", scenario.name)];
    let parsed = parse_file(&scenario.name, &scenario.policies);
    if let Some(p) = parsed.problems.first() {
        return fail(format!("policy does not parse: {p}"));
    }
    let policies = parsed.policies;
    let pods = Pods::of(file, scenario);
    let endpoints: Vec<EndpointInput> = pods
        .by_name
        .values()
        .map(|(id, labels, named_ports)| EndpointInput {
            id: *id,
            labels: labels.clone(),
            named_ports: named_ports.clone(),
        })
        .collect();
    let identities: Vec<IdentityInput> = endpoints
        .iter()
        .map(|e| IdentityInput {
            id: e.id,
            labels: e.labels.clone(),
            named_ports: e
                .named_ports
                .iter()
                .map(|(name, port)| (name.clone(), [*port].into()))
                .collect(),
        })
        .chain(ENTITIES.iter().map(|e| IdentityInput {
            id: reserved_id(e),
            labels: reserved_labels(e),
            named_ports: Default::default(),
        }))
        .collect();
    let cidrs = CidrIdentities::for_prefixes(&referenced_prefixes(&policies));
    let maps = desired(
        &policies,
        scenario.enforcement,
        &endpoints,
        &identities,
        &cidrs,
    );
    let ctx = Ctx {
        policies,
        pods,
        cidrs,
        maps,
        scenario,
    };
    let mut problems = Vec::new();
    for line in &scenario.flows {
        let checked = Flow::parse(line).and_then(|flow| {
            let (traced, t) = ctx.by_trace(&flow)?;
            let mapped = ctx.by_maps(&flow)?;
            Ok((flow, traced, mapped, t))
        });
        match checked {
            Err(e) => problems.push(format!("{}: {e}", scenario.name)),
            Ok((flow, traced, mapped, t)) => {
                if traced != flow.expected || mapped != flow.expected {
                    problems.push(format!(
                        "{}: `{line}`: trace gives {traced:?} (egress: {}; ingress: {}), the policy maps give {mapped:?}",
                        scenario.name, t.egress.reason, t.ingress.reason
                    ));
                }
            }
        }
    }
    problems
}
