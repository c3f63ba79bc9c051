//! Generates the Hubble API from `proto/` with protoc (Debian's `protobuf-compiler`):
//! prost messages, tonic clients and servers, and pbjson serde impls that write
//! protojson with the proto field names, as `hubble observe -o json` does.

use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/observer/observer.proto",
    "proto/peer/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("hubble_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&PROTOS, &["proto"])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .preserve_proto_field_names()
        .build(&[".flow", ".relay", ".observer", ".peer"])?;
    Ok(())
}
