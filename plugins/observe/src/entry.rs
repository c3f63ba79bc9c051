//! A flow as the ring keeps it: the decoded datapath event (or the proxy's L7
//! record) with its endpoints resolved (shared metadata), and the Hubble `Flow`
//! message built from them once, the first time a reader, a metric or a filter
//! needs it. The pipeline's cost per event stays a copy of the event (a reference
//! count for an L7 record) and two reference counts.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use hubble_proto::flow::{Endpoint, Flow, Policy};
use porin_plugin_sdk::{DatapathEvent, L7Record};

use crate::dns_names::Names;
use crate::flow::{assemble, attribute_policy, system_time};
use crate::l7_flow::l7_flow;

/// One flow in the ring.
#[derive(Debug)]
pub struct FlowEntry {
    time: SystemTime,
    parts: Option<Parts>,
    l7: Option<L7Parts>,
    /// Boxed: a `Flow` is 864 bytes, and entries are moved into batches and `Arc`s
    /// before most of them are ever read.
    flow: OnceLock<Box<Flow>>,
}

/// What an L7 flow is built from.
#[derive(Debug)]
struct L7Parts {
    record: Arc<L7Record>,
    seq: u64,
    node: Arc<str>,
    client: Arc<Endpoint>,
    server: Arc<Endpoint>,
}

#[derive(Debug)]
struct Parts {
    event: DatapathEvent,
    seq: u64,
    node: Arc<str>,
    source: Arc<Endpoint>,
    destination: Arc<Endpoint>,
    /// `source_names` and `destination_names` (learned from DNS answers).
    names: Option<Box<(Option<Names>, Option<Names>)>>,
    /// The policy that decided the flow (policy verdicts, deny drops).
    policy: Option<Arc<Policy>>,
}

impl FlowEntry {
    /// An event whose endpoints are resolved; the message is built later.
    pub fn new(
        event: DatapathEvent,
        time: SystemTime,
        seq: u64,
        node: Arc<str>,
        source: Arc<Endpoint>,
        destination: Arc<Endpoint>,
    ) -> Self {
        Self {
            time,
            parts: Some(Parts {
                event,
                seq,
                node,
                source,
                destination,
                names: None,
                policy: None,
            }),
            l7: None,
            flow: OnceLock::new(),
        }
    }

    /// A proxy's L7 record whose client and server are resolved; the message is
    /// built later.
    pub fn l7(
        record: Arc<L7Record>,
        seq: u64,
        node: Arc<str>,
        client: Arc<Endpoint>,
        server: Arc<Endpoint>,
    ) -> Self {
        Self {
            time: record.time,
            parts: None,
            l7: Some(L7Parts {
                record,
                seq,
                node,
                client,
                server,
            }),
            flow: OnceLock::new(),
        }
    }

    /// The names the source and the destination address had in DNS answers of the
    /// flow's endpoint (nothing changes when both are unknown).
    pub fn with_names(mut self, source: Option<Names>, destination: Option<Names>) -> Self {
        if let Some(p) = self.parts.as_mut()
            && (source.is_some() || destination.is_some())
        {
            p.names = Some(Box::new((source, destination)));
        }
        self
    }

    /// The policy that decided the flow, resolved at event time.
    pub fn with_policy(mut self, policy: Option<Arc<Policy>>) -> Self {
        if let Some(p) = self.parts.as_mut() {
            p.policy = policy;
        }
        self
    }

    /// A flow that is already a message.
    pub fn ready(flow: Flow) -> Self {
        Self {
            time: flow
                .time
                .as_ref()
                .map_or(SystemTime::UNIX_EPOCH, system_time),
            parts: None,
            l7: None,
            flow: OnceLock::from(Box::new(flow)),
        }
    }

    /// When the packet was seen.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// The Hubble message (built on first use, then kept for other readers).
    pub fn flow(&self) -> &Flow {
        self.flow.get_or_init(|| Box::new(self.build()))
    }

    /// The Hubble message as an owned value: a copy of the kept one, or built
    /// now without keeping it (a follower without filters needs it once, and a
    /// copy costs as much as building it).
    pub fn to_flow(&self) -> Flow {
        match self.flow.get() {
            Some(f) => Flow::clone(f),
            None => self.build(),
        }
    }

    fn build(&self) -> Flow {
        if let Some(l7) = &self.l7 {
            return l7_flow(&l7.record, l7.seq, &l7.node, &l7.client, &l7.server);
        }
        match &self.parts {
            Some(p) => {
                let mut flow = assemble(
                    &p.event,
                    self.time,
                    p.seq,
                    &p.node,
                    &p.source,
                    &p.destination,
                );
                if let Some(names) = &p.names {
                    let (source, destination) = &**names;
                    flow.source_names = source
                        .as_deref()
                        .map(<[String]>::to_vec)
                        .unwrap_or_default();
                    flow.destination_names = destination
                        .as_deref()
                        .map(<[String]>::to_vec)
                        .unwrap_or_default();
                }
                if let Some(policy) = &p.policy {
                    attribute_policy(&mut flow, &p.event, policy);
                }
                flow
            }
            None => Flow::default(),
        }
    }
}
