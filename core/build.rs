//! Builds the C datapath (`bpf/`) and the layout constants of its shared structs.
//!
//! 1. `bpf/pod.c` -> `$OUT_DIR/pod.o` and `bpf/sock.c` -> `$OUT_DIR/sock.o`, `bpf/host.c` -> `$OUT_DIR/host.o` with clang (`$CLANG`, then `clang-19`, then `clang`).
//! 2. A host C program that includes `bpf/lib/common.h` prints `sizeof`/`offsetof` of every
//!    shared field; its output becomes `$OUT_DIR/abi_layout.rs`, which the `abi` unit tests
//!    compare against the Rust `#[repr(C)]` mirrors.

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Every struct of `common.h` and its fields, in declaration order.
const LAYOUT: &[(&str, &[&str])] = &[
    (
        "porin_ct_key",
        &[
            "saddr", "daddr", "sport", "dport", "family", "l4_proto", "pad",
        ],
    ),
    (
        "porin_ct_entry",
        &[
            "created_ns",
            "last_seen_ns",
            "packets",
            "bytes",
            "tcp_flags_seen",
        ],
    ),
    (
        "porin_flow_event",
        &[
            "ktime_ns",
            "type",
            "verdict",
            "drop_reason",
            "direction",
            "family",
            "l4_proto",
            "tcp_flags",
            "icmp_type",
            "icmp_code",
            "is_reply",
            "flags",
            "pad",
            "sport",
            "dport",
            "ifindex",
            "src_identity",
            "dst_identity",
            "endpoint_id",
            "pkt_len",
            "node_id",
            "saddr",
            "daddr",
            "policy_id",
            "policy_match",
            "pad2",
        ],
    ),
    ("porin_metrics_key", &["reason", "direction", "pad"]),
    ("porin_metrics_value", &["packets", "bytes"]),
    ("porin_ipcache_key", &["prefixlen", "family", "pad", "addr"]),
    ("porin_ipcache_value", &["identity", "flags", "pad"]),
    ("porin_endpoint_key", &["family", "pad", "addr"]),
    (
        "porin_endpoint_value",
        &["endpoint_id", "ifindex", "identity"],
    ),
    ("porin_lb_svc_key", &["vip", "port", "proto", "pad"]),
    (
        "porin_lb_svc_value",
        &["service_id", "backend_count", "flags"],
    ),
    ("porin_lb_slot_key", &["service_id", "slot"]),
    ("porin_lb_backend", &["addr", "port", "pad"]),
    ("porin_lb_svc6_key", &["vip", "port", "proto", "pad"]),
    ("porin_lb_backend6", &["addr", "port", "pad"]),
    ("porin_lb_nat_entry", &["addr", "port", "pad", "id"]),
    (
        "porin_lb_affinity_key",
        &["client", "service_id", "netns_cookie", "pad"],
    ),
    (
        "porin_lb_affinity6_key",
        &["client", "service_id", "netns_cookie", "pad"],
    ),
    (
        "porin_lb_affinity_value",
        &["last_used_ns", "backend_id", "pad"],
    ),
    (
        "porin_np_nat",
        &["saddr", "daddr", "sport", "dport", "id", "ifindex"],
    ),
    ("porin_policy_ep_key", &["endpoint_id", "direction", "pad"]),
    ("porin_policy_ep_value", &["default_deny", "pad"]),
    (
        "porin_policy_key",
        &["endpoint_id", "identity", "dport", "proto", "direction"],
    ),
    (
        "porin_policy_value",
        &["policy_id", "action", "pad", "proxy_port"],
    ),
    (
        "porin_proxy_key",
        &["client_addr", "client_port", "proto", "pad"],
    ),
    (
        "porin_proxy_value",
        &[
            "orig_daddr",
            "orig_dport",
            "proxy_port",
            "endpoint_id",
            "dst_identity",
        ],
    ),
    ("porin_encrypt_key", &["prefixlen", "addr"]),
];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let bpf_dir = manifest_dir.join("../bpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = find_clang()?;
    let lib_dir = bpf_dir.join("lib");
    let mut includes = vec![format!("-I{}", lib_dir.display())];
    // -target bpf has no multiarch include path: <asm/types.h> lives there on Debian.
    if let Some(dir) = multiarch_include_dir() {
        includes.push(format!("-I{}", dir.display()));
    }

    for object in ["pod", "sock", "host"] {
        compile_bpf(
            &clang,
            &includes,
            &bpf_dir.join(format!("{object}.c")),
            &out_dir.join(format!("{object}.o")),
        )?;
    }
    generate_layout(&clang, &lib_dir, &out_dir)?;
    Ok(())
}

/// `$CLANG`, then `clang-19`, then `clang`: the first that runs.
fn find_clang() -> Result<String> {
    let mut candidates = Vec::new();
    if let Ok(c) = env::var("CLANG") {
        candidates.push(c);
    }
    candidates.extend(["clang-19".to_owned(), "clang".to_owned()]);
    for candidate in &candidates {
        let works = Command::new(candidate)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if works {
            return Ok(candidate.clone());
        }
    }
    bail!(
        "no working clang found (tried {candidates:?}): the eBPF datapath needs clang with the \
         BPF target; on Debian install it with `apt-get install clang-19` or set $CLANG"
    )
}

fn multiarch_include_dir() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let dir = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    dir.is_dir().then_some(dir)
}

fn compile_bpf(clang: &str, includes: &[String], src: &Path, out: &Path) -> Result<()> {
    let output = Command::new(clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .args(includes)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .with_context(|| format!("running {clang} on {}", src.display()))?;
    if !output.status.success() {
        bail!(
            "{clang} failed to compile {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Compiles and runs a host program printing the layout of every shared struct.
fn generate_layout(clang: &str, lib_dir: &Path, out_dir: &Path) -> Result<()> {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"common.h\"\nint main(void) {\n",
    );
    for (name, fields) in LAYOUT {
        let upper = name.to_uppercase();
        writeln!(
            c,
            "printf(\"pub const {upper}_SIZE: usize = %zu;\\n\", sizeof(struct {name}));"
        )?;
        for field in *fields {
            let fu = field.to_uppercase();
            writeln!(
                c,
                "printf(\"pub const {upper}__{fu}: usize = %zu;\\n\", offsetof(struct {name}, {field}));"
            )?;
        }
    }
    c.push_str("return 0;\n}\n");

    let src = out_dir.join("abi_layout.c");
    let exe = out_dir.join("abi_layout");
    fs::write(&src, c).context("writing abi_layout.c")?;

    // The host compiler: the same clang, else the system cc.
    let mut last_err = String::new();
    let mut built = false;
    for compiler in [clang, "cc"] {
        let output = Command::new(compiler)
            .arg(format!("-I{}", lib_dir.display()))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output();
        match output {
            Ok(o) if o.status.success() => {
                built = true;
                break;
            }
            Ok(o) => last_err = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last_err = e.to_string(),
        }
    }
    if !built {
        bail!("compiling the ABI layout probe failed:\n{last_err}");
    }
    let output = Command::new(&exe)
        .output()
        .context("running the ABI layout probe")?;
    if !output.status.success() {
        bail!("the ABI layout probe failed");
    }
    fs::write(out_dir.join("abi_layout.rs"), &output.stdout).context("writing abi_layout.rs")?;
    Ok(())
}
