//! The catalogue of scenarios, grouped in phases that share the policies they need, and
//! the runner: select (`--test`), skip what a turned-off plugin cannot do, apply each
//! phase's policies, run, time and record every scenario.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::checks::{self, Check, Ctx};
use super::workloads;

/// Scenarios that need the same policies run together; the policies are applied before
/// the phase and removed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    L3L4,
    Deny,
    Fqdn,
    L7,
}

impl Phase {
    fn policies(self) -> Vec<(&'static str, String)> {
        match self {
            Phase::Open => Vec::new(),
            Phase::L3L4 => workloads::l3l4_policies(),
            Phase::Deny => workloads::deny_policies(),
            Phase::Fqdn => workloads::fqdn_policies(),
            Phase::L7 => workloads::l7_policies(),
        }
    }
}

/// One scenario.
pub struct Scenario {
    pub name: &'static str,
    /// The plugin without which the scenario is skipped (None: always runs).
    pub plugin: Option<&'static str>,
    pub phase: Phase,
    pub expected: &'static str,
    run: fn(&Ctx<'_>) -> Check,
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// A scenario's result, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub plugin: Option<String>,
    pub expected: String,
    pub observed: String,
    pub result: Outcome,
    /// Why it failed or was skipped (what to look at).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The flow Porin reported that confirmed the traffic (compact format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    pub duration_ms: u64,
}

/// Every scenario, in the order they run.
pub fn catalogue() -> Vec<Scenario> {
    let s = |name, plugin, phase, expected, run| Scenario {
        name,
        plugin,
        phase,
        expected,
        run,
    };
    vec![
        s(
            "pod-to-pod/same-node",
            None,
            Phase::Open,
            "HTTP 200, FORWARDED",
            checks::pod_to_pod_same_node,
        ),
        s(
            "pod-to-pod/other-node",
            None,
            Phase::Open,
            "HTTP 200, FORWARDED",
            checks::pod_to_pod_other_node,
        ),
        s(
            "pod-to-service/cluster-ip",
            None,
            Phase::Open,
            "HTTP 200 from a backend, FORWARDED",
            checks::pod_to_cluster_ip,
        ),
        s(
            "node-port/local-backend",
            None,
            Phase::Open,
            "HTTP 200 from outside, FORWARDED to the backend",
            checks::node_port_local_backend,
        ),
        s(
            "node-port/remote-backend",
            None,
            Phase::Open,
            "HTTP 200 from outside, FORWARDED to the backend",
            checks::node_port_remote_backend,
        ),
        s(
            "encryption/cross-node",
            Some("encryption"),
            Phase::Open,
            "HTTP 200, only WireGuard on the underlay, flow encrypted",
            checks::encryption_cross_node,
        ),
        s(
            "policy/egress-allow",
            Some("policy"),
            Phase::L3L4,
            "HTTP 200, FORWARDED leaving the client",
            checks::policy_egress_allow,
        ),
        s(
            "policy/egress-deny",
            Some("policy"),
            Phase::L3L4,
            "no answer, DROPPED (POLICY_DENIED) leaving the client",
            checks::policy_egress_deny,
        ),
        s(
            "policy/ingress-allow",
            Some("policy"),
            Phase::L3L4,
            "HTTP 200, FORWARDED entering the server",
            checks::policy_ingress_allow,
        ),
        s(
            "policy/ingress-deny",
            Some("policy"),
            Phase::L3L4,
            "no answer, DROPPED (POLICY_DENIED) entering the server",
            checks::policy_ingress_deny,
        ),
        s(
            "policy/deny-overrides-allow",
            Some("policy"),
            Phase::Deny,
            "no answer, DROPPED (POLICY_DENY); other pods allowed",
            checks::policy_deny_overrides_allow,
        ),
        s(
            "dns/through-proxy",
            Some("policy"),
            Phase::Fqdn,
            "answer via the DNS proxy, REFUSED outside the rules",
            checks::dns_through_proxy,
        ),
        s(
            "fqdn/allowed-name",
            Some("policy"),
            Phase::Fqdn,
            "HTTP 200 from the world, FORWARDED",
            checks::fqdn_allowed_name,
        ),
        s(
            "fqdn/refused-name",
            Some("policy"),
            Phase::Fqdn,
            "no answer, DROPPED (POLICY_DENIED)",
            checks::fqdn_refused_name,
        ),
        s(
            "l7/http-allowed",
            Some("policy"),
            Phase::L7,
            "HTTP 200, L7 FORWARDED",
            checks::l7_allowed,
        ),
        s(
            "l7/http-403",
            Some("policy"),
            Phase::L7,
            "HTTP 403, L7 DROPPED",
            checks::l7_denied,
        ),
    ]
}

/// Whether a scenario's name matches one of the `--test` patterns (substrings; `*`
/// matches anything; none given: everything).
pub fn selected(name: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            let parts: Vec<&str> = p.split('*').collect();
            let mut rest = name;
            for part in parts {
                match rest.find(part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
            true
        })
}

/// Runs the selected scenarios; `enabled` holds the plugins on in every agent.
pub fn run_all(
    ctx: &Ctx<'_>,
    patterns: &[String],
    enabled: &BTreeSet<String>,
    progress: &mut dyn FnMut(usize, usize, &ScenarioResult),
) -> Result<Vec<ScenarioResult>> {
    let chosen: Vec<Scenario> = catalogue()
        .into_iter()
        .filter(|s| selected(s.name, patterns))
        .collect();
    let total = chosen.len();
    let mut results = Vec::new();
    let mut index = 0;
    for phase in [
        Phase::Open,
        Phase::L3L4,
        Phase::Deny,
        Phase::Fqdn,
        Phase::L7,
    ] {
        let in_phase: Vec<&Scenario> = chosen.iter().filter(|s| s.phase == phase).collect();
        let runnable = in_phase
            .iter()
            .any(|s| s.plugin.is_none_or(|p| enabled.contains(p)));
        let policies = phase.policies();
        let names: Vec<&str> = policies.iter().map(|(n, _)| *n).collect();
        if runnable && !policies.is_empty() {
            for (name, yaml) in &policies {
                ctx.sandbox.apply(name, yaml)?;
            }
            ctx.runtime
                .block_on(ctx.sandbox.wait_for_policies(&names, true))?;
        }
        for scenario in in_phase {
            index += 1;
            let result = run_one(ctx, scenario, enabled);
            progress(index, total, &result);
            results.push(result);
        }
        if runnable && !policies.is_empty() {
            for name in &names {
                ctx.sandbox.remove(name)?;
            }
            ctx.runtime
                .block_on(ctx.sandbox.wait_for_policies(&names, false))?;
        }
    }
    Ok(results)
}

fn run_one(ctx: &Ctx<'_>, scenario: &Scenario, enabled: &BTreeSet<String>) -> ScenarioResult {
    let base = ScenarioResult {
        name: scenario.name.to_string(),
        plugin: scenario.plugin.map(str::to_string),
        expected: scenario.expected.to_string(),
        observed: String::new(),
        result: Outcome::Skipped,
        message: None,
        flow: None,
        duration_ms: 0,
    };
    if let Some(plugin) = scenario.plugin
        && !enabled.contains(plugin)
    {
        return ScenarioResult {
            observed: "-".to_string(),
            message: Some(format!(
                "the {plugin} plugin is off ([plugins.{plugin}] enabled = false)"
            )),
            ..base
        };
    }
    let started = Instant::now();
    let check = (scenario.run)(ctx);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (result, message) = match check.result {
        Ok(()) => (Outcome::Passed, None),
        Err(message) => (Outcome::Failed, Some(message)),
    };
    ScenarioResult {
        observed: check.observed,
        result,
        message,
        flow: check.flow,
        duration_ms,
        ..base
    }
}

/// Used by the checks: how long traffic may take to give the expected answer (a policy
/// just applied, a server starting, a WireGuard handshake).
pub const TRAFFIC_WAIT: Duration = Duration::from_secs(6);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_by_substring_and_glob() {
        let p = |s: &str| vec![s.to_string()];
        assert!(selected("policy/egress-deny", &[]));
        assert!(selected("policy/egress-deny", &p("egress")));
        assert!(selected("policy/egress-deny", &p("policy/*deny")));
        assert!(!selected("policy/egress-allow", &p("policy/*deny")));
        assert!(!selected("fqdn/allowed-name", &p("l7")));
    }

    #[test]
    fn every_scenario_has_a_unique_name_and_the_issue_is_covered() {
        let names: Vec<&str> = catalogue().iter().map(|s| s.name).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
        for area in [
            "pod-to-pod/same-node",
            "pod-to-pod/other-node",
            "pod-to-service",
            "node-port/local-backend",
            "node-port/remote-backend",
            "fqdn/allowed",
            "fqdn/refused",
            "egress-deny",
            "ingress-deny",
            "deny-overrides-allow",
            "l7/http-allowed",
            "l7/http-403",
            "encryption",
            "dns/through-proxy",
        ] {
            assert!(names.iter().any(|n| n.contains(area)), "{area}");
        }
    }
}
