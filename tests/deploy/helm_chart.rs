//! The Helm chart `deploy/helm/porin`, rendered with the seed article's
//! cilium-values.yaml: the porin.toml it produces must load with Porin's own
//! config loader and every plugin's section parser, and the objects must be
//! the ones the values ask for, with no more privilege or RBAC than needed.
//! The CRDs the chart ships must be `porin crds`' output.

mod helm_render;

use std::path::{Path, PathBuf};

use helm_render::{Rendered, render};
use serde_yaml::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/porin")
}

fn seed_values() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy/data/cilium-values.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).expect("seed values")).expect("yaml")
}

fn objects(rendered: &[Rendered]) -> Vec<&Value> {
    rendered.iter().flat_map(|r| r.documents.iter()).collect()
}

fn find<'a>(objects: &[&'a Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .copied()
}

fn porin_toml(objects: &[&Value]) -> String {
    let config = find(objects, "ConfigMap", "porin-config").expect("porin-config ConfigMap");
    config["data"]["porin.toml"]
        .as_str()
        .expect("porin.toml key")
        .to_owned()
}

/// Loads porin.toml as the agent does, then each enabled plugin's section as
/// the plugin does.
fn load(text: &str) -> porin_core::config::Config {
    let config = porin_core::config::Config::parse(text, "porin.toml")
        .unwrap_or_else(|e| panic!("rendered porin.toml does not load: {e}\n{text}"));
    let section = |name: &str| config.plugin(name).expect(name).settings.clone();
    porin_lb::LbConfig::from_section(&section("lb")).expect("lb section");
    porin_policy::PolicyConfig::from_section(&section("policy")).expect("policy section");
    porin_encryption::EncryptionConfig::from_section(&section("encryption"))
        .expect("encryption section");
    porin_observe::ObserveConfig::from_section(&section("observe")).expect("observe section");
    config
}

#[test]
fn seed_values_render_a_loadable_config_and_the_right_objects() {
    let rendered = render(&chart(), Some(seed_values()), "kube-system").expect("render");
    let objects = objects(&rendered);
    let text = porin_toml(&objects);
    let config = load(&text);

    // The seed's keys, mapped.
    assert_eq!(
        config.agent.datastore,
        porin_core::config::Datastore::Kubernetes
    );
    let lb = config.plugin("lb").expect("lb");
    assert!(lb.enabled);
    assert_eq!(
        lb.settings["kube_proxy_replacement"],
        toml::Value::Boolean(true)
    );
    let encryption = config.plugin("encryption").expect("encryption");
    assert!(encryption.enabled);
    assert_eq!(encryption.settings["type"].as_str(), Some("wireguard"));
    let observe = config.plugin("observe").expect("observe");
    assert!(observe.enabled);
    let metrics: Vec<&str> = observe.settings["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(toml::Value::as_str)
        .collect();
    assert_eq!(
        metrics,
        [
            "dns",
            "drop",
            "tcp",
            "flow",
            "port-distribution",
            "httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction"
        ]
    );
    let parsed = porin_observe::ObserveConfig::from_section(&observe.settings).expect("observe");
    assert_eq!(parsed.metrics.len(), 6);
    assert!(
        text.contains("ipam.mode \"eni\""),
        "the unsupported ipam mode is called out:\n{text}"
    );

    let notes = rendered
        .iter()
        .find(|r| r.template == "NOTES.txt")
        .expect("NOTES.txt");
    assert!(
        notes.text.contains("ipam.mode \"eni\" is not implemented"),
        "{}",
        notes.text
    );

    // k8sServicePort reaches the agent's environment; no host was given.
    let ds = find(&objects, "DaemonSet", "porin").expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let agent = &pod["containers"][0];
    let env: Vec<(&str, Option<&str>)> = agent["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or_default(), e["value"].as_str()))
        .collect();
    assert!(
        env.contains(&("KUBERNETES_SERVICE_PORT", Some("443"))),
        "{env:?}"
    );
    assert!(!env.iter().any(|(n, _)| *n == "KUBERNETES_SERVICE_HOST"));
    assert!(env.iter().any(|(n, _)| *n == "PORIN_NODE_NAME"));

    // Privileges: capabilities, not privileged mode.
    let security = &agent["securityContext"];
    assert_eq!(security["privileged"], Value::Bool(false));
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let mut added: Vec<&str> = security["capabilities"]["add"]
        .as_sequence()
        .expect("caps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    added.sort_unstable();
    assert_eq!(
        added,
        [
            "BPF",
            "NET_ADMIN",
            "NET_RAW",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_RESOURCE"
        ]
    );
    assert_eq!(pod["hostNetwork"], Value::Bool(true));
    assert!(
        pod.get("hostPID").is_none(),
        "the agent does not need the host's PIDs"
    );

    // RBAC: reads everything it watches; writes only node-owned kinds.
    let role = find(&objects, "ClusterRole", "porin").expect("ClusterRole");
    for rule in role["rules"].as_sequence().expect("rules") {
        let verbs: Vec<&str> = rule["verbs"]
            .as_sequence()
            .expect("verbs")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let resources: Vec<&str> = rule["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !verbs.contains(&"*") && !resources.contains(&"*"),
            "{rule:?}"
        );
        let writes = verbs
            .iter()
            .any(|v| ["create", "patch", "update", "delete"].contains(v));
        if writes {
            for resource in &resources {
                assert!(
                    [
                        "ciliumnodes",
                        "ciliumendpoints",
                        "ciliumnodes/status",
                        "ciliumnetworkpolicies/status",
                        "ciliumclusterwidenetworkpolicies/status"
                    ]
                    .contains(resource),
                    "the agent may not write {resource}"
                );
            }
        }
    }
    for read in [
        "pods",
        "services",
        "namespaces",
        "nodes",
        "endpointslices",
        "networkpolicies",
        "ciliumnetworkpolicies",
        "ciliumclusterwidenetworkpolicies",
    ] {
        assert!(
            role["rules"]
                .as_sequence()
                .expect("rules")
                .iter()
                .any(|r| r["resources"]
                    .as_sequence()
                    .is_some_and(|s| s.iter().any(|x| x == read))
                    && r["verbs"]
                        .as_sequence()
                        .is_some_and(|v| v.iter().any(|x| x == "watch"))),
            "the agent must watch {read}"
        );
    }

    // hubble.relay.enabled, hubble.ui.enabled.
    let relay = find(&objects, "Deployment", "hubble-relay").expect("relay Deployment");
    let args: Vec<&str> = relay["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(&args[..2], ["porin", "relay"]);
    assert!(
        args.contains(&"hubble-peer.kube-system.svc:443"),
        "{args:?}"
    );
    assert!(find(&objects, "Service", "hubble-relay").is_some());
    assert!(find(&objects, "Service", "hubble-peer").is_some());
    // hubble.ui.enabled: the relay serves the Flow UI behind the Service hubble-ui.
    let ui_at = args.iter().position(|a| *a == "--ui").expect("--ui");
    assert_eq!(args[ui_at + 1], "0.0.0.0:12000", "{args:?}");
    let ports = &relay["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports.as_sequence().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "http" && p["containerPort"] == 12000)),
        "{ports:?}"
    );
    let ui = find(&objects, "Service", "hubble-ui").expect("hubble-ui Service");
    assert_eq!(
        ui["spec"]["selector"]["app.kubernetes.io/name"],
        "hubble-relay"
    );
    assert_eq!(ui["spec"]["ports"][0]["targetPort"], "http");
    assert!(find(&objects, "Deployment", "hubble-ui").is_none());

    // prometheus.serviceMonitor.enabled: agent and Hubble metrics.
    let agent_monitor = find(&objects, "ServiceMonitor", "porin-agent").expect("agent monitor");
    assert_eq!(agent_monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert!(find(&objects, "ServiceMonitor", "hubble").is_some());
    assert!(find(&objects, "Service", "porin-agent").is_some());

    // The Grafana dashboard is valid JSON querying Cilium's metric names.
    let dashboard = find(&objects, "ConfigMap", "porin-grafana-dashboard").expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["porin-dashboard.json"]
            .as_str()
            .expect("json text"),
    )
    .expect("dashboard JSON");
    let exprs = json.to_string();
    for metric in [
        "cilium_drop_count_total",
        "cilium_forward_count_total",
        "hubble_drop_total",
    ] {
        assert!(exprs.contains(metric), "dashboard misses {metric}");
    }

    // Every object lands in the release namespace or is cluster scoped.
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !["ClusterRole", "ClusterRoleBinding"].contains(&kind) {
            assert_eq!(object["metadata"]["namespace"], "kube-system", "{object:?}");
        }
    }
}

#[test]
fn defaults_render_without_optional_objects() {
    let rendered = render(&chart(), None, "porin").expect("render");
    let objects = objects(&rendered);
    load(&porin_toml(&objects));
    assert!(find(&objects, "Deployment", "hubble-relay").is_none());
    assert!(find(&objects, "Deployment", "hubble-ui").is_none());
    assert!(!objects.iter().any(|o| o["kind"] == "ServiceMonitor"));
    let config =
        porin_core::config::Config::parse(&porin_toml(&objects), "porin.toml").expect("load");
    assert!(!config.plugin("encryption").expect("encryption").enabled);
}

#[test]
fn hubble_ui_with_cilium_images() {
    let mut values = seed_values();
    values["hubble"]["ui"]["useCiliumImages"] = Value::Bool(true);
    let rendered = render(&chart(), Some(values), "kube-system").expect("render");
    let objects = objects(&rendered);
    assert!(find(&objects, "Deployment", "hubble-ui").is_some());
    let ui = find(&objects, "Service", "hubble-ui").expect("hubble-ui Service");
    assert_eq!(
        ui["spec"]["selector"]["app.kubernetes.io/name"],
        "hubble-ui"
    );
    let relay = find(&objects, "Deployment", "hubble-relay").expect("relay Deployment");
    let command = &relay["spec"]["template"]["spec"]["containers"][0]["command"];
    assert!(
        !command
            .as_sequence()
            .is_some_and(|c| c.iter().any(|a| a == "--ui")),
        "{command:?}"
    );
}

#[test]
fn kube_proxy_replacement_false_and_bad_encryption_type() {
    let values: Value = serde_yaml::from_str("kubeProxyReplacement: false").expect("yaml");
    let rendered = render(&chart(), Some(values), "kube-system").expect("render");
    let config = load(&porin_toml(&objects(&rendered)));
    let lb = config.plugin("lb").expect("lb");
    assert_eq!(
        lb.settings["kube_proxy_replacement"],
        toml::Value::Boolean(false)
    );

    let values: Value =
        serde_yaml::from_str("encryption: {enabled: true, type: ipsec}").expect("yaml");
    let error = render(&chart(), Some(values), "kube-system")
        .err()
        .expect("ipsec must be refused");
    assert!(
        error.contains("encryption.type \"ipsec\" is not supported"),
        "{error}"
    );
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let generated = porin_core::state::crds::to_yaml().expect("crds");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for path in [
        "deploy/crds/porin-crds.yaml",
        "deploy/helm/porin/crds/porin-crds.yaml",
    ] {
        let committed = std::fs::read_to_string(root.join(path)).expect(path);
        assert!(
            committed == generated,
            "{path} drifted from the Rust types: regenerate it with `porin crds > {path}`"
        );
    }
}
