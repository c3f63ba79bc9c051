//! hubble-proto: Hubble's gRPC API with Cilium's package, service, message and enum
//! names and field numbers, generated from `proto/` by `build.rs`.
//!
//! Every message serialises to protojson with the proto field names
//! (`drop_reason_desc`, `IP`, `l4.TCP.flags.SYN`, enums by name), like
//! `hubble observe -o json`.

#![allow(
    clippy::all,
    reason = "generated code, checked by the descriptor test instead"
)]

pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

/// The encoded `FileDescriptorSet` of all Hubble protos (for reflection and tests).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hubble_descriptor.bin"));

pub use pbjson_types::{BoolValue, Timestamp, UInt32Value};

/// A message as one line of protojson, like Go's `protojson` (what `hubble
/// observe -o json` prints): pbjson-types writes timestamps with `+00:00`, which
/// protojson always writes as `Z`, so top-level and `flow` times are rewritten.
pub fn to_protojson<T: serde::Serialize>(message: &T) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(message)?;
    fix_time(value.get_mut("time"));
    fix_time(value.get_mut("flow").and_then(|f| f.get_mut("time")));
    serde_json::to_string(&value)
}

fn fix_time(time: Option<&mut serde_json::Value>) {
    if let Some(serde_json::Value::String(t)) = time
        && let Some(utc) = t.strip_suffix("+00:00")
    {
        *t = format!("{utc}Z");
    }
}
