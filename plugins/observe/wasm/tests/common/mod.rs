//! Test helpers: build the example guests (Rust for wasm32-unknown-unknown,
//! C with clang-19/wasm-ld-19) once per test binary, write WAT modules, and
//! make flows.
#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::path::{Path, PathBuf};

use hubble_proto::flow::{self as pb, layer4::Protocol};

/// The Rust example `crate_name` of `examples/wasm`, built for wasm32.
pub fn rust_example(crate_name: &str) -> PathBuf {
    porin_testbed::wasm_guests::rust_example(crate_name).unwrap_or_else(|e| panic!("{e}"))
}

/// The C example `examples/wasm/c/<name>.c`, built with clang-19.
pub fn c_example(name: &str) -> PathBuf {
    porin_testbed::wasm_guests::c_example(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Write `text` (WAT or bytes) as `<dir>/<name>.wasm`.
pub fn write_module(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, text).expect("write module");
    path
}

/// A TCP flow `src_ns/src_pod:sport -> dst_ns/dst_pod:dport`.
pub fn flow(src_ns: &str, dst_ns: &str, dport: u32, verdict: pb::Verdict) -> pb::Flow {
    let endpoint = |ns: &str, identity: u32| pb::Endpoint {
        identity,
        namespace: ns.to_string(),
        pod_name: format!("{ns}-pod"),
        labels: vec![
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
            "k8s:app=web".to_string(),
        ],
        workloads: vec![pb::Workload {
            name: format!("{ns}-app"),
            kind: "Deployment".to_string(),
        }],
        ..Default::default()
    };
    pb::Flow {
        verdict: verdict as i32,
        ip: Some(pb::Ip {
            source: "10.200.1.5".to_string(),
            destination: "10.200.2.7".to_string(),
            ip_version: pb::IpVersion::IPv4 as i32,
            encrypted: false,
        }),
        l4: Some(pb::Layer4 {
            protocol: Some(Protocol::Tcp(pb::Tcp {
                source_port: 40000,
                destination_port: dport,
                flags: Some(pb::TcpFlags {
                    syn: true,
                    ..Default::default()
                }),
            })),
        }),
        source: Some(endpoint(src_ns, 1000)),
        destination: Some(endpoint(dst_ns, 2000)),
        node_name: "node-1".to_string(),
        traffic_direction: pb::TrafficDirection::Egress as i32,
        ..Default::default()
    }
}
