//! Every scenario of `tests/policy-corpus/` through trace and the policy maps.

use std::collections::BTreeSet;
use std::path::Path;

use super::{check_scenario, load_dir};

/// The issue asks for at least this many scenarios.
const MIN_SCENARIOS: usize = 150;

#[test]
fn compatibility_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/policy-corpus");
    let files = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut names = BTreeSet::new();
    let mut problems = Vec::new();
    let mut flows = 0;
    for (path, file) in &files {
        for scenario in &file.scenarios {
            if !names.insert(scenario.name.clone()) {
                problems.push(format!("{path}: duplicate scenario name {}", scenario.name));
            }
            flows += scenario.flows.len();
            problems.extend(check_scenario(file, scenario));
        }
    }
    eprintln!(
        "{} scenarios, {flows} flows in {} files",
        names.len(),
        files.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) in the corpus:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        names.len() >= MIN_SCENARIOS,
        "{} scenarios ({flows} flows); the corpus needs at least {MIN_SCENARIOS}",
        names.len()
    );
}
