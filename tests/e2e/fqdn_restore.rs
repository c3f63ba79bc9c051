//! End to end: learned FQDN addresses persist across an agent restart (docs/fqdn.md,
//! Cilium restores its DNS cache from the endpoint state). The seed article's
//! `payments-egress` with a real dnsmasq as the cluster DNS, as in `fqdn.rs`: the client's
//! lookup teaches node-1's DNS proxy an address, the agent saves it, is killed and
//! restarted, and knows the address again without a new lookup. A corrupt file is logged
//! with its path and ignored. (A binary of its own: `fqdn.rs` times lookups across a
//! restart, which a second sandbox beside it would disturb.)

mod common;

use std::time::{Duration, Instant};

use common::dns::{self, SECRETS, external_web};
use common::{TestSandbox, str_of, wait_for};
use serde_json::Value;

const SECRETS_IP: &str = "192.168.200.241";
const BUCKET_IP: &str = "192.168.200.242";
const EVIL_IP: &str = "192.168.200.243";
const PAYMENTS_EGRESS: &str = include_str!("../../examples/policies/payments-egress.yaml");
const CLIENT: &str = "payments/payments-api";

fn dig(sandbox: &TestSandbox, server: &str, name: &str) -> (String, Vec<String>) {
    dns::dig(sandbox, CLIENT, server, name, false)
}

fn curl_ok(sandbox: &TestSandbox, ip: &str) -> bool {
    dns::curl_ok(sandbox, CLIENT, ip)
}

/// The DNS proxy's status on node-1 (`None` while its agent does not answer).
fn dns_proxy_status(sandbox: &TestSandbox) -> Option<Value> {
    let out = sandbox.porin(&["policy", "get", "--node", "node-1", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let all: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(all[0]["dns_proxy"].clone()).filter(|d| d["counters"].is_object())
}

/// node-1's saved FQDN addresses (`<state_dir>/fqdn-cache.json`, state_dir from its
/// agent config).
fn fqdn_cache_file(sandbox: &TestSandbox) -> std::path::PathBuf {
    let state = sandbox.state();
    let node = state["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-1"))
        .expect("node-1")
        .clone();
    let config = std::fs::read_to_string(str_of(&node["config_path"])).expect("agent config");
    let dir = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("state_dir = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no state_dir in node-1's config:\n{config}"));
    std::path::Path::new(&dir).join("fqdn-cache.json")
}

fn restart_node_1(sandbox: &TestSandbox) {
    let out = sandbox.porin(&["sandbox", "restart-agent", "node-1", "--kill"]);
    assert!(
        out.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Learned addresses persist across an agent restart (Cilium restores its DNS cache from
/// the endpoint state): the restarted agent knows the address its proxy learned before
/// the restart without a new lookup (no query reached the restarted proxy), and the
/// connection to it works. A corrupt file is logged with its path and ignored.
#[test]
fn learned_addresses_survive_an_agent_restart() {
    let started = Instant::now();
    let sandbox = TestSandbox::up_with(
        &[
            (
                "10-pods.yaml",
                dns::pods_yaml("node-2", [SECRETS_IP, BUCKET_IP, EVIL_IP]).as_str(),
            ),
            ("50-payments-egress.yaml", PAYMENTS_EGRESS),
        ],
        Some("[plugins.policy]\nenabled = true\n"),
    );
    let _web = external_web(&sandbox, &[SECRETS_IP, BUCKET_IP, EVIL_IP]);
    let dns = str_of(&sandbox.endpoint("kube-system/kube-dns")["endpoint"]["ipv4"]).to_string();
    let learned = wait_for(Duration::from_secs(15), || {
        let (status, addrs) = dig(&sandbox, &dns, SECRETS);
        (status == "NOERROR" && addrs == [SECRETS_IP]).then_some(())
    });
    assert!(
        learned.is_some(),
        "{SECRETS} must resolve\n{}",
        sandbox.agent_logs()
    );
    assert!(
        wait_for(Duration::from_secs(5), || curl_ok(&sandbox, SECRETS_IP)
            .then_some(()))
        .is_some(),
        "{SECRETS_IP}:443 before the restart\n{}",
        sandbox.agent_logs()
    );
    // Saved within a second of the answer.
    let file = fqdn_cache_file(&sandbox);
    let saved = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&file).ok()?;
        (text.contains(SECRETS_IP) && text.contains(SECRETS)).then_some(text)
    });
    assert!(
        saved.is_some(),
        "{} never named {SECRETS_IP}",
        file.display()
    );

    restart_node_1(&sandbox);
    let restored = wait_for(Duration::from_secs(20), || {
        dns_proxy_status(&sandbox).filter(|d| d["learned_addresses"].as_u64() >= Some(1))
    })
    .unwrap_or_else(|| {
        panic!(
            "the restarted agent did not restore {SECRETS_IP}: {:?}\n{}",
            dns_proxy_status(&sandbox),
            sandbox.agent_logs()
        )
    });
    assert_eq!(restored["counters"]["queries"], 0, "{restored}");
    assert!(
        wait_for(Duration::from_secs(10), || curl_ok(&sandbox, SECRETS_IP)
            .then_some(()))
        .is_some(),
        "{SECRETS_IP}:443 after the restart, without a lookup\n{}",
        sandbox.agent_logs()
    );
    let after = dns_proxy_status(&sandbox).expect("status");
    assert_eq!(
        after["counters"]["queries"], 0,
        "no lookup went through the proxy: {after}"
    );
    assert!(
        sandbox
            .agent_logs()
            .contains("learned FQDN addresses restored"),
        "{}",
        sandbox.agent_logs()
    );

    // A corrupt file: logged with its path, ignored; the proxy serves as before.
    std::fs::write(&file, b"{\"version\": 1, \"names\": {\"x\": [").expect("corrupt the file");
    restart_node_1(&sandbox);
    let status = wait_for(Duration::from_secs(20), || dns_proxy_status(&sandbox))
        .unwrap_or_else(|| panic!("agent back\n{}", sandbox.agent_logs()));
    assert_eq!(status["learned_addresses"], 0, "{status}");
    let logs = sandbox.agent_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("ignoring the saved FQDN addresses")
                && l.contains(&file.display().to_string())),
        "{logs}"
    );
    assert_eq!(dig(&sandbox, &dns, SECRETS).0, "NOERROR");
    println!("fqdn restore e2e took {:?}", started.elapsed());
}
