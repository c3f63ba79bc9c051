//! Test helpers: build the example guests (Rust for wasm32-unknown-unknown,
//! C with clang-19/wasm-ld-19) once per test binary, write WAT modules, and
//! make flows.
#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hubble_proto::flow::{self as pb, layer4::Protocol};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

fn guest_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("wasm-guests")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example crates of `examples/wasm`, built once; the path of `crate_name`.
pub fn rust_example(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target = guest_target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        run(Command::new(cargo)
            .args(["build", "--release", "--locked", "--offline"])
            .args(["--target", "wasm32-unknown-unknown", "--manifest-path"])
            .arg(repo_root().join("examples/wasm/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target));
        target.join("wasm32-unknown-unknown/release")
    });
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `examples/wasm/c/<name>.c` built with clang-19 for wasm32.
pub fn c_example(name: &str) -> PathBuf {
    let out_dir = guest_target_dir().join("c");
    std::fs::create_dir_all(&out_dir).expect("guest dir");
    let out = out_dir.join(format!("{name}.wasm"));
    let root = repo_root();
    run(Command::new("clang-19")
        .args(["--target=wasm32", "-O2", "-nostdlib", "-Wall", "-Werror"])
        .arg("-I")
        .arg(root.join("plugin-sdk/wasm-guest/c"))
        .args(["-Wl,--no-entry", "-o"])
        .arg(&out)
        .arg(root.join(format!("examples/wasm/c/{name}.c"))));
    out
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
