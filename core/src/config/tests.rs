use std::path::PathBuf;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_hostname(text, "porin.toml", || "host-a".to_string())
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(cfg) => panic!("expected an error, got {cfg:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_has_defaults() {
    let cfg = parse("").expect("empty config is valid");
    let a = &cfg.agent;
    assert_eq!(a.node_name, "host-a");
    assert_eq!(a.datastore, Datastore::Kubernetes);
    assert_eq!(a.runtime_dir, PathBuf::from("/var/run/porin/cluster"));
    assert_eq!(a.state_dir, PathBuf::from("/var/lib/porin/host-a"));
    assert_eq!(a.run_dir, PathBuf::from("/var/run/porin"));
    assert_eq!(a.api_socket, PathBuf::from("/var/run/porin/agent.sock"));
    assert_eq!(a.metrics_address.to_string(), DEFAULT_METRICS_ADDRESS);
    assert_eq!(a.pin_root, PathBuf::from(DEFAULT_PIN_ROOT));
    assert_eq!(a.pin_dir(), PathBuf::from("/sys/fs/bpf/porin/host-a"));
    assert_eq!(a.log_level, "info");
    assert_eq!(a.map_pressure_interval_seconds, 30);
    assert!(a.pod_cidr.is_none() && a.node_ip.is_none() && a.cgroup_path.is_none());
    assert_eq!(cfg.plugins.len(), 4);
    assert!(
        cfg.plugins
            .values()
            .all(|p| !p.enabled && p.settings.is_empty())
    );
    assert!(cfg.native.is_empty());
}

#[test]
fn map_pressure_interval_is_read_and_zero_turns_it_off() {
    let cfg = parse("[agent]\nmap_pressure_interval_seconds = 0\n").expect("valid");
    assert_eq!(cfg.agent.map_pressure_interval_seconds, 0);
    let e = err("[agent]\nmap_pressure_interval_seconds = \"30s\"\n");
    assert!(e.contains("map_pressure_interval_seconds"), "{e}");
}

#[test]
fn design_sketch_parses() {
    let text = r#"
[agent]
node_name = "node-1"
datastore = "local"
manifests = "/etc/porin/manifests"
pod_cidr = "10.244.1.0/24"
node_ip = "192.168.0.2"
run_dir = "/var/run/porin/node-1"

[plugins.lb]
enabled = true
kube_proxy_replacement = true
algorithm = "maglev"

[plugins.observe]
enabled = true
metrics = ["dns", "httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace"]

[[plugins.observe.wasm]]
name = "drop-health-checks"
path = "/etc/porin/filters/drop_health.wasm"
kind = "filter"

[[plugins.native]]
path = "/usr/lib/porin/libexample_exporter.so"
"#;
    let cfg = parse(text).expect("valid");
    assert_eq!(cfg.agent.node_name, "node-1");
    assert_eq!(
        cfg.agent.manifests,
        vec![PathBuf::from("/etc/porin/manifests")]
    );
    assert_eq!(
        cfg.agent.api_socket,
        PathBuf::from("/var/run/porin/node-1/agent.sock")
    );
    assert_eq!(cfg.agent.state_dir, PathBuf::from("/var/lib/porin/node-1"));
    let lb = cfg.plugin("lb").expect("lb");
    assert!(lb.enabled);
    assert!(!lb.settings.contains_key("enabled"));
    assert_eq!(
        lb.settings.get("algorithm").and_then(|v| v.as_str()),
        Some("maglev")
    );
    let observe = cfg.plugin("observe").expect("observe");
    assert!(observe.settings.contains_key("wasm"));
    assert!(!cfg.plugin("policy").expect("policy").enabled);
    assert_eq!(cfg.native.len(), 1);
}

#[test]
fn manifests_accepts_a_list() {
    let cfg = parse("[agent]\nmanifests = [\"/a\", \"/b\"]\n").expect("valid");
    assert_eq!(
        cfg.agent.manifests,
        vec![PathBuf::from("/a"), PathBuf::from("/b")]
    );
}

#[test]
fn unknown_agent_key_names_key_file_and_line() {
    let msg = err("[agent]\nnode_name = \"a\"\nnode_nam = \"b\"\n");
    assert!(
        msg.starts_with("porin.toml:3: agent.node_nam: unknown field `node_nam`"),
        "{msg}"
    );
}

#[test]
fn unknown_top_level_table_is_an_error() {
    let msg = err("[agnt]\nx = 1\n");
    assert!(msg.starts_with("porin.toml:1:"), "{msg}");
    assert!(msg.contains("unknown field `agnt`"), "{msg}");
}

#[test]
fn unknown_plugin_is_an_error() {
    let msg = err("[plugins.lb]\nenabled = true\n\n[plugins.firewall]\nenabled = true\n");
    assert!(
        msg.starts_with("porin.toml:4: plugins.firewall: unknown field `firewall`"),
        "{msg}"
    );
}

#[test]
fn invalid_values_are_located() {
    let msg = err("[agent]\n\ndatastore = \"etcd\"\n");
    assert!(
        msg.starts_with("porin.toml:3: agent.datastore: unknown variant `etcd`"),
        "{msg}"
    );
    let msg = err("[agent]\npod_cidr = \"10.0.0.0/33\"\n");
    assert!(msg.starts_with("porin.toml:2: agent.pod_cidr:"), "{msg}");
    let msg = err("[agent]\nmetrics_address = \"nope\"\n");
    assert!(
        msg.starts_with("porin.toml:2: agent.metrics_address:"),
        "{msg}"
    );
    let msg = err("[agent]\npod_cidr = \"10.0.0.1/24\"\n");
    assert!(msg.contains("host bits"), "{msg}");
}

#[test]
fn enabled_must_be_boolean() {
    let msg = err("[plugins.policy]\n\nenabled = \"yes\"\n");
    assert!(
        msg.starts_with("porin.toml:3: plugins.policy.enabled: expected a boolean"),
        "{msg}"
    );
}

#[test]
fn local_mode_requires_pod_cidr_and_manifests() {
    let msg = err("[agent]\ndatastore = \"local\"\nmanifests = \"/m\"\n");
    assert!(msg.starts_with("porin.toml:2: agent.datastore:"), "{msg}");
    assert!(msg.contains("pod_cidr"), "{msg}");
    let msg = err("[agent]\ndatastore = \"local\"\npod_cidr = \"10.0.0.0/24\"\n");
    assert!(msg.contains("manifests"), "{msg}");
}

#[test]
fn native_entries_reject_unknown_keys() {
    let msg = err("[[plugins.native]]\npath = \"/x.so\"\nfile = \"/y\"\n");
    assert!(msg.starts_with("porin.toml:3:"), "{msg}");
    assert!(msg.contains("unknown field `file`"), "{msg}");
}

#[test]
fn syntax_error_has_a_line() {
    let msg = err("[agent]\nnode_name = \n");
    assert!(msg.starts_with("porin.toml:2:"), "{msg}");
}

#[test]
fn plugin_errors_are_located() {
    let text = "[plugins.lb]\nenabled = true\n# comment\nalgoritm = \"maglev\"\n";
    let cfg = parse(text).expect("core part is valid");
    let plugin_err = PluginError::Config {
        plugin: "lb".to_string(),
        key: Some("algoritm".to_string()),
        message: "unknown field `algoritm`, expected one of `algorithm`".to_string(),
    };
    assert_eq!(
        cfg.plugin_error(&plugin_err).to_string(),
        "porin.toml:4: plugins.lb: unknown field `algoritm`, expected one of `algorithm`"
    );
}

#[test]
fn from_file_reads_and_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("porin.toml");
    std::fs::write(&path, "[agent]\nbogus = 1\n").expect("write");
    let msg = Config::from_file(&path).expect_err("invalid").to_string();
    assert!(
        msg.starts_with(&format!("{}:2: agent.bogus: unknown field", path.display())),
        "{msg}"
    );
    let missing = Config::from_file(&dir.path().join("nope.toml")).expect_err("missing");
    assert!(matches!(missing, ConfigError::Read { .. }));
}

#[test]
fn ipv6_is_opt_in_and_needs_its_pod_cidr() {
    let a = parse("").expect("empty").agent;
    assert!(!a.enable_ipv6 && a.pod_cidr_v6.is_none() && a.node_ip_v6.is_none());
    let msg = err("[agent]\nenable_ipv6 = true\n");
    assert!(msg.starts_with("porin.toml:2: agent.enable_ipv6:"), "{msg}");
    assert!(msg.contains("pod_cidr_v6"), "{msg}");
    let msg = err("[agent]\nenable_ipv6 = true\npod_cidr_v6 = \"fd00:10:1::1/64\"\n");
    assert!(msg.contains("host bits"), "{msg}");
    let msg = err(
        "[agent]\npod_cidr = \"10.0.0.0/16\"\nenable_ipv6 = true\npod_cidr_v6 = \"fd00:10:1::/120\"\n",
    );
    assert!(msg.contains("fewer host bits"), "{msg}");
    let a = parse(
        "[agent]\npod_cidr = \"10.200.1.0/24\"\nenable_ipv6 = true\npod_cidr_v6 = \"fd00:10:1::/64\"\nnode_ip_v6 = \"fd00:ffff::1\"\n",
    )
    .expect("dual stack")
    .agent;
    assert!(a.enable_ipv6);
    assert_eq!(a.pod_cidr_v6, Some("fd00:10:1::/64".parse().expect("cidr")));
    assert_eq!(a.node_ip_v6, Some("fd00:ffff::1".parse().expect("ip")));
}
