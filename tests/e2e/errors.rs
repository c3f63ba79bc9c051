//! Every bad input a user can give gets one clear error naming it.

mod common;

use std::process::Command;

fn agent_with(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("porin.toml");
    std::fs::write(&path, config).expect("write config");
    let out = Command::new(common::porin_bin())
        .args(["agent", "--config"])
        .arg(&path)
        .output()
        .expect("run porin agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_agent_key_names_file_line_and_key() {
    let (ok, err) = agent_with("[agent]\nnode_name = \"n1\"\npod_cidrr = \"10.9.0.0/24\"\n");
    assert!(!ok);
    assert!(err.contains("porin.toml:3"), "{err}");
    assert!(err.contains("pod_cidrr"), "{err}");
}

#[test]
fn plugin_section_errors_name_their_line() {
    let (ok, err) = agent_with(
        "[agent]\nnode_name = \"n1\"\npod_cidr = \"10.9.0.0/24\"\n\n[plugins.lb]\nenabled = true\nalgoritm = \"maglev\"\n",
    );
    assert!(!ok);
    assert!(err.contains("porin.toml:7"), "{err}");
    assert!(err.contains("algoritm"), "{err}");
}

#[test]
fn unknown_plugin_is_rejected() {
    let (ok, err) = agent_with(
        "[agent]\nnode_name = \"n1\"\npod_cidr = \"10.9.0.0/24\"\n\n[plugins.lbb]\nenabled = true\n",
    );
    assert!(!ok);
    assert!(err.contains("lbb"), "{err}");
}

#[test]
fn unreachable_agent_is_explained() {
    let out = Command::new(common::porin_bin())
        .args(["status", "--socket", "/nonexistent/agent.sock"])
        .output()
        .expect("run porin status");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unreachable") && text.contains("/nonexistent/agent.sock"),
        "{text}"
    );
}
