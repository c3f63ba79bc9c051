//! The outcome of a run: the summary table for people, the JSON report a platform team
//! attaches to a change (every scenario, durations, the Porin version and the plugins
//! and configuration each node ran with).

use serde::Serialize;

use super::scenarios::{Outcome, ScenarioResult};
use crate::cli::output::print_table;

/// One node as the suite found it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub node: String,
    /// The agent's version (`porin status`).
    pub version: String,
    /// Every plugin with `enabled` and its health.
    pub plugins: serde_json::Value,
    /// The `[plugins.*]` sections of the node's porin.toml.
    pub config: serde_json::Value,
}

/// The whole report (`-o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub porin_version: String,
    /// `sandbox` (or `kubernetes`).
    pub target: String,
    /// Seconds since the epoch when the run started.
    pub started_at: u64,
    pub deploy_ms: u64,
    pub scenarios_ms: u64,
    pub cleanup_ms: u64,
    pub total_ms: u64,
    pub nodes: Vec<NodeInfo>,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub scenarios: Vec<ScenarioResult>,
}

/// A run's timing: when it started (seconds since the epoch) and how long each part took.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub started_at: u64,
    pub deploy_ms: u64,
    pub scenarios_ms: u64,
    pub cleanup_ms: u64,
    pub total_ms: u64,
}

impl Report {
    /// The report of a run against `target` (`sandbox`, `kubernetes`), tallied.
    pub fn new(
        target: &str,
        timing: Timing,
        nodes: Vec<NodeInfo>,
        scenarios: Vec<ScenarioResult>,
    ) -> Self {
        let mut report = Report {
            porin_version: env!("CARGO_PKG_VERSION").to_string(),
            target: target.to_string(),
            started_at: timing.started_at,
            deploy_ms: timing.deploy_ms,
            scenarios_ms: timing.scenarios_ms,
            cleanup_ms: timing.cleanup_ms,
            total_ms: timing.total_ms,
            nodes,
            passed: 0,
            failed: 0,
            skipped: 0,
            scenarios,
        };
        report.tally();
        report
    }

    /// Counts the outcomes.
    pub fn tally(&mut self) {
        let count = |o: Outcome| self.scenarios.iter().filter(|s| s.result == o).count();
        self.passed = count(Outcome::Passed);
        self.failed = count(Outcome::Failed);
        self.skipped = count(Outcome::Skipped);
    }

    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

/// The `[plugins]` table of a porin.toml as JSON (the whole text when it does not parse).
pub fn plugin_config(toml_text: &str) -> serde_json::Value {
    match toml_text.parse::<toml::Table>() {
        Ok(table) => serde_json::to_value(table.get("plugins")).unwrap_or_default(),
        Err(_) => serde_json::Value::String(toml_text.to_string()),
    }
}

/// One progress line (stderr), as each scenario ends.
pub fn progress_line(index: usize, total: usize, r: &ScenarioResult) -> String {
    let status = match r.result {
        Outcome::Passed => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
    };
    let mut line = format!(
        "[{index:>2}/{total}] {:<30} {status} ({:.1}s)",
        r.name,
        seconds(r.duration_ms)
    );
    if let Some(m) = &r.message {
        line.push_str(&format!("\n        {m}"));
    }
    line
}

fn seconds(ms: u64) -> f64 {
    // Durations of a test run are far below 2^52 ms: exact in an f64.
    ms as f64 / 1000.0
}

/// The summary table and totals.
pub fn print_summary(report: &Report) {
    let rows: Vec<Vec<String>> = report
        .scenarios
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.expected.clone(),
                s.observed.clone(),
                format!("{:?}", s.result).to_uppercase(),
                format!("{:.1}s", seconds(s.duration_ms)),
            ]
        })
        .collect();
    print_table(
        &["SCENARIO", "EXPECTED", "OBSERVED", "RESULT", "TIME"],
        &rows,
    );
    for s in report
        .scenarios
        .iter()
        .filter(|s| s.result != Outcome::Passed)
    {
        if let Some(m) = &s.message {
            println!("{}: {m}", s.name);
        }
    }
    println!(
        "{} passed, {} failed, {} skipped in {:.1}s (deploy {:.1}s, scenarios {:.1}s, cleanup {:.1}s)",
        report.passed,
        report.failed,
        report.skipped,
        seconds(report.total_ms),
        seconds(report.deploy_ms),
        seconds(report.scenarios_ms),
        seconds(report.cleanup_ms),
    );
}
