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
