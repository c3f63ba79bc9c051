//! The configuration profiles of `examples/profiles` load through the agent's
//! configuration loader, and every built-in plugin accepts its section (the same
//! checks `porin agent` runs before anything starts), with the features each
//! profile promises switched on and off in the datapath.

use std::collections::BTreeMap;
use std::path::PathBuf;

use porin_core::config::Config;
use porin_core::plugins::PluginManager;
use porin_plugin_sdk::Plugin;

fn profile(name: &str) -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/profiles")
        .join(name);
    Config::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Configures the built-in plugins with the profile; returns the enabled ones and the
/// load-time switches they turn on.
fn configured(config: &Config) -> (Vec<String>, BTreeMap<String, u32>) {
    let plugins: Vec<Box<dyn Plugin>> = vec![
        Box::new(porin_lb::LbPlugin::default()),
        Box::new(porin_policy::PolicyPlugin::default()),
        Box::new(porin_encryption::EncryptionPlugin::default()),
        Box::new(porin_observe::ObservePlugin::default()),
    ];
    let mut manager = PluginManager::new(plugins);
    if let Err(errors) = manager.configure(&config.plugins) {
        panic!("{errors:?}");
    }
    let enabled = manager
        .statuses()
        .into_iter()
        .filter(|s| s.enabled)
        .map(|s| s.name)
        .collect();
    let switches = manager
        .switches()
        .into_iter()
        .map(|s| (s.name.to_string(), s.value))
        .collect();
    (enabled, switches)
}

fn on(switches: &BTreeMap<String, u32>, name: &str) -> bool {
    switches.get(name).is_some_and(|v| *v != 0)
}

#[test]
fn observability_profile_only_observes() {
    let config = profile("observability.toml");
    let (enabled, switches) = configured(&config);
    assert_eq!(enabled, ["observe"]);
    assert!(on(&switches, "CFG_EMIT_EVENTS"), "{switches:?}");
    assert!(!on(&switches, "CFG_ENABLE_LB") && !on(&switches, "CFG_ENABLE_POLICY"));
    assert!(config.native.is_empty());
}

#[test]
fn kube_proxy_replacement_profile_only_balances() {
    let config = profile("kube-proxy-replacement.toml");
    let (enabled, switches) = configured(&config);
    assert_eq!(enabled, ["lb"]);
    assert!(on(&switches, "CFG_ENABLE_LB") && on(&switches, "CFG_ENABLE_SOCKET_LB"));
    assert!(
        !on(&switches, "CFG_EMIT_EVENTS"),
        "events cost ring writes: {switches:?}"
    );
}

#[test]
fn full_profile_enables_everything() {
    let config = profile("full.toml");
    let (enabled, switches) = configured(&config);
    assert_eq!(enabled, ["lb", "policy", "encryption", "observe"]);
    for switch in ["CFG_ENABLE_LB", "CFG_ENABLE_POLICY", "CFG_EMIT_EVENTS"] {
        assert!(on(&switches, switch), "{switch} off: {switches:?}");
    }
    assert_eq!(config.native.len(), 1);
    assert!(config.native[0].enabled);
    assert_eq!(
        config.native[0]
            .settings
            .get("verdict")
            .and_then(|v| v.as_str()),
        Some("DROPPED")
    );
}
