//! Drop health-check noise: probes from the node (identity `reserved:host`),
//! HTTP requests to the usual probe paths, and flows to the ports listed in
//! the configuration (`config = "8080,9090"`).
use porin_wasm_guest::{Filter, Flow, L7, export_filter};

const HOST_IDENTITY: u32 = 1;
const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/livez"];

struct DropHealthChecks {
    ports: Vec<u16>,
}

impl Filter for DropHealthChecks {
    fn new(config: &str) -> Result<Self, String> {
        let ports = config
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|_| format!("`{p}` is not a port")))
            .collect::<Result<_, _>>()?;
        Ok(Self { ports })
    }

    fn keep(&mut self, flow: &Flow) -> bool {
        let probe_path = matches!(flow.l7(), L7::Http { url, .. }
            if PROBE_PATHS.iter().any(|p| url.starts_with(p)));
        let from_node = flow.source().identity() == HOST_IDENTITY;
        let health_port = self.ports.contains(&flow.destination().port())
            || self.ports.contains(&flow.source().port());
        !(probe_path || from_node || health_port)
    }
}

export_filter!(DropHealthChecks);
