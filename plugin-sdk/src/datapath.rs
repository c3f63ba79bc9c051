//! What a plugin asks of the datapath before programs are loaded.
//!
//! Porin switches features inside its C programs with `volatile const` globals set
//! at load time: the verifier prunes branches of disabled features, so a disabled
//! plugin costs nothing per packet. This is the one switch mechanism; tail calls are
//! not used for features.

/// A load-time global in the C programs, e.g. `CFG_ENABLE_POLICY = 1`, or, when the
/// name starts with [`MAX_ENTRIES_PREFIX`] (`max_entries:porin_lb_svc`), the
/// `max_entries` of a map the plugin sizes from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub name: &'static str,
    pub value: u32,
}

/// Switch names starting with this size a map instead: `max_entries:<map name>`. The
/// agent creates the map with that size; at start it recreates a pinned map of another
/// size (its entries are rebuilt by the plugin that writes it).
pub const MAX_ENTRIES_PREFIX: &str = "max_entries:";

/// Everything a plugin contributes to the datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatapathContribution {
    /// Load-time switches this plugin turns on.
    pub switches: Vec<Switch>,
    /// Pinned maps the plugin will open through its context (for diagnostics).
    pub maps: Vec<&'static str>,
    /// Node devices that need the node device program (`bpf/host.c`, e.g. NodePort), by
    /// interface name. Core attaches it to the union over plugins; a plugin that wants it
    /// on the default device (the one holding the node IP) returns [`DEFAULT_DEVICE`].
    pub devices: Vec<String>,
}

/// In [`DatapathContribution::devices`]: the interface holding the node IP.
pub const DEFAULT_DEVICE: &str = "<node-ip>";

/// In [`DatapathContribution::devices`], before an interface name: an L3 tunnel device
/// (WireGuard) that gets the node device program's tunnel entry (`porin_from_tunnel`)
/// when it exists; the plugin that makes it later calls
/// [`crate::PluginContext::attach_tunnel_program`].
pub const TUNNEL_DEVICE_PREFIX: &str = "tunnel:";
