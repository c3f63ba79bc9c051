//! `scripts/bench` argument handling (the benchmarks themselves are not run here).

use std::path::PathBuf;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench");
    Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run scripts/bench")
}

#[test]
fn unknown_benchmark_lists_the_known_ones() {
    let out = bench(&["no-such-bench"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let known = stderr
        .split("known benchmarks: ")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    for name in [
        "agent",
        "datapath",
        "dns",
        "flows",
        "l7",
        "lb",
        "policy",
        "wasm",
        "wireguard",
    ] {
        assert!(known.contains(&name), "{name} missing from: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_name_and_bad_options_are_usage_errors() {
    assert_eq!(bench(&[]).status.code(), Some(2));
    assert_eq!(bench(&["../Makefile"]).status.code(), Some(2));
    let out = bench(&["datapath", "--slow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slow"));
    assert_eq!(bench(&["--help"]).status.code(), Some(0));
}
