//! Keeps what this node publishes about its own state current, as Cilium's agent does:
//! each local CiliumEndpoint's `status.policy` (whether policy is enforced per direction,
//! read from the datapath's default-deny flags, so it says what the kernel enforces) and
//! the CiliumNode's `status.agent` (the agent's health from its plugins). Polled every
//! [`STATUS_INTERVAL`]; only changes are published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use porin_plugin_sdk::Health;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::run::{Agent, lock};
use crate::api::PluginStatus;
use crate::datapath::PolicyMaps;
use crate::datapath::abi::Direction;
use crate::state::cilium_node::AgentHealth;
use crate::state::cilium_types::{EndpointPolicy, EndpointPolicyDirection};

/// How often enforcement and health are looked at.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// Whether the last read of the enforcement flags failed (to warn once, not every round).
static READ_FAILING: AtomicBool = AtomicBool::new(false);

/// Per local endpoint id: (ingress enforced, egress enforced).
pub type Enforcement = BTreeMap<u32, (bool, bool)>;

/// `status.policy` of an endpoint from its enforcement flags.
pub fn endpoint_policy(ingress: bool, egress: bool) -> EndpointPolicy {
    let direction = |enforcing: bool| EndpointPolicyDirection {
        enforcing,
        state: Some(
            if enforcing {
                "enforcing"
            } else {
                "non-enforcing"
            }
            .to_owned(),
        ),
    };
    EndpointPolicy {
        ingress: Some(direction(ingress)),
        egress: Some(direction(egress)),
    }
}

/// The agent's health from its plugins: `Failure` when an enabled plugin failed,
/// `Degraded` when one is degraded, else `Ok`; the message names the plugins.
pub fn agent_health(plugins: &[PluginStatus]) -> (String, Option<String>) {
    let mut failed = Vec::new();
    let mut degraded = Vec::new();
    for p in plugins.iter().filter(|p| p.enabled) {
        match &p.health {
            Health::Failed(why) => failed.push(format!("plugin {}: {why}", p.name)),
            Health::Degraded(why) => degraded.push(format!("plugin {}: {why}", p.name)),
            Health::Starting | Health::Ok | Health::Stopped => {}
        }
    }
    if !failed.is_empty() {
        failed.extend(degraded);
        return ("Failure".to_owned(), Some(failed.join("; ")));
    }
    if !degraded.is_empty() {
        return ("Degraded".to_owned(), Some(degraded.join("; ")));
    }
    ("Ok".to_owned(), None)
}

/// Enforcement of every endpoint the default-deny map names (absent = not enforced);
/// `None` when the map cannot be read (what was published stays).
fn read_enforcement(agent: &Agent) -> Option<Enforcement> {
    let map_dir = lock(&agent.datapath).node_pin_dir().join("maps");
    let flags = match PolicyMaps::open(|name| map_dir.join(name))
        .and_then(|maps| maps.default_denies())
    {
        Ok(flags) => flags,
        Err(e) => {
            // Said once per failure streak, not every round.
            if !READ_FAILING.swap(true, Ordering::Relaxed) {
                warn!(error = %e, "reading the policy enforcement flags; the published endpoint states stay as they were");
            }
            return None;
        }
    };
    READ_FAILING.store(false, Ordering::Relaxed);
    let mut out = Enforcement::new();
    for (key, deny) in flags {
        let slot = out.entry(key.endpoint_id).or_default();
        if key.direction == Direction::Ingress.as_raw() {
            slot.0 |= deny;
        } else if key.direction == Direction::Egress.as_raw() {
            slot.1 |= deny;
        }
    }
    Some(out)
}

/// One round: republishes the CiliumEndpoints whose enforcement changed and the
/// CiliumNode when the agent's health changed.
async fn publish_changes(agent: &Agent) {
    if let Some(enforcement) = read_enforcement(agent) {
        publish_endpoint_policy(agent, &enforcement).await;
    }
    publish_node_health(agent).await;
}

/// Republishes the CiliumEndpoints whose enforcement changed.
async fn publish_endpoint_policy(agent: &Agent, enforcement: &Enforcement) {
    let records: Vec<_> = lock(&agent.endpoints).iter().cloned().collect();
    let mut changed = Vec::new();
    {
        let mut published = lock(&agent.endpoint_policy);
        let mut now = BTreeMap::new();
        for record in records {
            let flags = enforcement.get(&record.id).copied().unwrap_or_default();
            if published.get(&record.id) != Some(&flags) {
                changed.push((record.clone(), flags));
            }
            now.insert(record.id, flags);
        }
        *published = now;
    }
    for (record, (ingress, egress)) in changed {
        let cep = super::api_impl::cilium_endpoint(
            &agent.config,
            &record,
            Some(endpoint_policy(ingress, egress)),
        );
        if let Err(e) = agent.datastore.publish(cep).await {
            warn!(error = %e, endpoint = %record.pod, "publishing the CiliumEndpoint's policy state");
            lock(&agent.endpoint_policy).remove(&record.id);
        }
    }
}

/// Republishes the CiliumNode when the agent's health changed.
async fn publish_node_health(agent: &Agent) {
    let (state, message) = agent_health(&lock(&agent.plugins).statuses());
    let unchanged = lock(&agent.node_health)
        .as_ref()
        .is_some_and(|h| h.state == state && h.message == message);
    if unchanged {
        return;
    }
    *lock(&agent.node_health) = Some(AgentHealth {
        state,
        message,
        last_updated: Some(k8s_openapi::jiff::Timestamp::now().to_string()),
    });
    if let Some(node) = agent.cilium_node()
        && let Err(e) = agent.datastore.publish(node.into()).await
    {
        warn!(error = %e, "publishing this node's CiliumNode health");
        *lock(&agent.node_health) = None;
    }
}

/// Runs [`publish_changes`] every [`STATUS_INTERVAL`] until shutdown.
pub fn spawn_status_publisher(agent: Arc<Agent>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            publish_changes(&agent).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, enabled: bool, health: Health) -> PluginStatus {
        PluginStatus {
            name: name.into(),
            enabled,
            health,
        }
    }

    #[test]
    fn health_names_the_plugins_at_fault() {
        let ok = [
            status("lb", true, Health::Ok),
            status("policy", false, Health::Failed("off anyway".into())),
        ];
        assert_eq!(agent_health(&ok), ("Ok".into(), None));
        let degraded = [
            status("lb", true, Health::Ok),
            status("policy", true, Health::Degraded("map full".into())),
        ];
        assert_eq!(
            agent_health(&degraded),
            ("Degraded".into(), Some("plugin policy: map full".into()))
        );
        let failed = [
            status("observe", true, Health::Failed("port in use".into())),
            status("policy", true, Health::Degraded("map full".into())),
        ];
        let (state, message) = agent_health(&failed);
        assert_eq!(state, "Failure");
        let message = message.unwrap_or_default();
        assert!(message.contains("observe: port in use") && message.contains("policy"));
    }

    #[test]
    fn policy_state_reads_like_ciliums() {
        let p = endpoint_policy(true, false);
        let ingress = p.ingress.unwrap_or_default();
        let egress = p.egress.unwrap_or_default();
        assert!(ingress.enforcing && !egress.enforcing);
        assert_eq!(ingress.state.as_deref(), Some("enforcing"));
        assert_eq!(egress.state.as_deref(), Some("non-enforcing"));
    }
}
