//! L7 records of requests and responses, for the flow pipeline.

use porin_plugin_sdk::{L7Record, PluginContext};

/// Where the proxy hands its records.
pub trait L7Sink: Send + Sync {
    fn publish(&self, record: L7Record);
}

impl L7Sink for std::sync::Arc<dyn PluginContext> {
    fn publish(&self, record: L7Record) {
        self.publish_l7(record);
    }
}

/// Records go nowhere (benchmarks of the forwarding alone).
impl L7Sink for () {
    fn publish(&self, _record: L7Record) {}
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`);
/// an all-zero or malformed id is none.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let _version = parts.next()?;
    let id = parts.next()?;
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_ids() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }
}
