//! End to end: Maglev backend selection and map sizes from `[plugins.lb]` in the sandbox.
//! With `algorithm = "maglev"` the socket LB hashes a pod's netns and the frontend, so
//! every connection of one client to one service reaches the same backend (a random
//! pick over three backends would not, twelve times in a row); `porin_lb_svc` sized to
//! three frontends holds three of the four Services, the fourth is reported in
//! `porin service list` and the plugin's health with the map's name, and
//! `cilium_bpf_map_pressure` reports the full map and the Maglev tables. A restarted agent
//! with a larger `map_max_services` recreates the pinned map and serves all four.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    TestSandbox, curl_body, document_roots, metric_value, named_backend_pod,
    shop_with_web_backends, str_of, wait_for,
};
use serde_json::Value;

const VIP: &str = "10.96.0.70";
/// Services beyond the first: with room for three frontends, the last does not fit.
const EXTRA_VIPS: [&str; 3] = ["10.96.0.71", "10.96.0.72", "10.96.0.73"];
const CONNECTIONS: usize = 12;

const AGENT_CONFIG: &str = "[plugins.lb]\nenabled = true\nalgorithm = \"maglev\"\n\
    maglev_table_size = 1021\nmap_max_services = 3\n";

fn service(name: &str, vip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: shop
spec:
  clusterIP: {vip}
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
---
"#
    )
}

/// node-1's entries of `porin service list -o json`.
fn listed(sandbox: &TestSandbox) -> Vec<Value> {
    let listed = sandbox.porin_json(&["service", "list", "--node", "node-1"]);
    listed[0]["services"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn maglev_keeps_a_client_on_one_backend_and_a_full_map_names_the_service() {
    let www = document_roots(&["web-1", "web-2", "web-3"]);
    let mut yaml = shop_with_web_backends(www.path());
    yaml.push_str(&named_backend_pod(www.path(), "web-3", "node-2"));
    yaml.push_str(&service("web", VIP));
    for (i, vip) in EXTRA_VIPS.iter().enumerate() {
        yaml.push_str(&service(&format!("extra-{i}"), vip));
    }
    let sandbox = TestSandbox::up_with(&[("00-shop.yaml", &yaml)], Some(AGENT_CONFIG));
    let url = format!("http://{VIP}/");

    // All three backends listen before anything is counted: each answers its own address.
    for (pod, ip) in ["web-1", "web-2", "web-3"].iter().map(|p| {
        let key = format!("shop/{p}");
        (
            p,
            str_of(&sandbox.endpoint(&key)["endpoint"]["ipv4"]).to_string(),
        )
    }) {
        let up = wait_for(Duration::from_secs(30), || {
            curl_body(&sandbox, "shop/client", &format!("http://{ip}:8080/"))
        });
        assert_eq!(
            up.as_deref(),
            Some(*pod),
            "{pod} at {ip} never answered\nagent logs:\n{}",
            sandbox.agent_logs()
        );
    }
    let first = wait_for(Duration::from_secs(20), || {
        curl_body(&sandbox, "shop/client", &url)
    });
    assert!(
        first.is_some(),
        "{VIP} never answered\nagent logs:\n{}",
        sandbox.agent_logs()
    );

    // Maglev over the socket LB: one client, one service, one backend, every time.
    let reached: BTreeSet<String> = (0..CONNECTIONS)
        .filter_map(|_| curl_body(&sandbox, "shop/client", &url))
        .collect();
    assert_eq!(
        reached.len(),
        1,
        "{CONNECTIONS} connections to {VIP} reached {reached:?}\nagent logs:\n{}",
        sandbox.agent_logs()
    );

    // The service map holds three frontends: the fourth Service is refused by name.
    let failed = wait_for(Duration::from_secs(20), || {
        let services = listed(&sandbox);
        let failed: Vec<Value> = services
            .iter()
            .filter(|s| !s["error"].is_null())
            .cloned()
            .collect();
        (services.len() == 4 && !failed.is_empty()).then_some(failed)
    })
    .unwrap_or_else(|| {
        panic!(
            "no service reported as not fitting: {:?}\nagent logs:\n{}",
            listed(&sandbox),
            sandbox.agent_logs()
        )
    });
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        str_of(&failed[0]["frontend"]),
        "10.96.0.73:80",
        "{failed:?}"
    );
    let error = str_of(&failed[0]["error"]);
    assert!(
        error.contains("porin_lb_svc") && error.contains("is full"),
        "{error}"
    );
    // (`plugins list` exits non-zero while a plugin is degraded: read its output anyway.)
    let out = sandbox.porin(&["plugins", "list", "-o", "json"]);
    let plugins: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plugins list printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let lb = plugins
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["node"] == "node-1" && e["plugin"]["name"] == "lb")
        .unwrap_or_else(|| panic!("no lb plugin on node-1: {plugins}"));
    let health = lb["plugin"].to_string();
    assert!(
        health.contains("10.96.0.73:80/TCP did not fit") && health.contains("porin_lb_svc"),
        "the plugin's health names the service and the map: {health}"
    );
    // The three that fit are served.
    for vip in &EXTRA_VIPS[..2] {
        let body = wait_for(Duration::from_secs(10), || {
            curl_body(&sandbox, "shop/client", &format!("http://{vip}/"))
        });
        assert!(body.is_some(), "{vip} does not answer");
    }

    // Map pressure: the full service map, and the four Maglev tables (a table goes in
    // before its frontend entry, so the one that did not fit has one too).
    let metrics = sandbox.metrics("node-1");
    let pressure = |map: &str| {
        metric_value(
            &metrics,
            "cilium_bpf_map_pressure",
            &[&format!("map_name=\"{map}\"")],
        )
    };
    assert_eq!(pressure("porin_lb_svc"), Some(1.0), "{metrics}");
    let maglev = pressure("porin_lb_maglev").unwrap_or(0.0);
    assert!(
        (maglev - 4.0 / 262_144.0).abs() < 1e-9,
        "porin_lb_maglev pressure {maglev}"
    );

    // A larger map in the configuration: the restarted agent recreates the pinned map
    // with the new size and programs all four Services; the client keeps its backend
    // (the tables are rebuilt the same).
    let state = sandbox.state();
    let config_path = state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == "node-1")
        .map(|n| str_of(&n["config_path"]).to_string())
        .unwrap_or_else(|| panic!("no config_path for node-1 in {state}"));
    let config = std::fs::read_to_string(&config_path).expect("node-1 config");
    assert!(config.contains("map_max_services = 3"), "{config}");
    std::fs::write(
        &config_path,
        config.replace("map_max_services = 3", "map_max_services = 8"),
    )
    .expect("rewriting node-1 config");
    let out = sandbox.porin(&["sandbox", "restart-agent", "node-1"]);
    assert!(
        out.status.success(),
        "restart failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sandbox.agent_logs()
    );
    let all_served = wait_for(Duration::from_secs(30), || {
        let services = listed(&sandbox);
        (services.len() == 4 && services.iter().all(|s| s["error"].is_null())).then_some(())
    });
    assert!(
        all_served.is_some(),
        "after the resize: {:?}\nagent logs:\n{}",
        listed(&sandbox),
        sandbox.agent_logs()
    );
    let log_path = sandbox.state_dir.path().join("logs/agent_node-1.log");
    let log = std::fs::read_to_string(&log_path).expect("node-1 agent log");
    assert!(
        log.lines().any(|l| l.contains("recreating the map")
            && l.contains("map=\"porin_lb_svc\"")
            && l.contains("from=3")
            && l.contains("to=8")),
        "the resize is logged in {}:\n{log}",
        log_path.display()
    );
    let last = format!("http://{}/", EXTRA_VIPS[2]);
    let body = wait_for(Duration::from_secs(20), || {
        curl_body(&sandbox, "shop/client", &last)
    });
    assert!(body.is_some(), "{last} does not answer after the resize");
    let again: BTreeSet<String> = (0..4)
        .filter_map(|_| curl_body(&sandbox, "shop/client", &url))
        .collect();
    assert_eq!(again, reached, "the client's backend after the restart");
}
