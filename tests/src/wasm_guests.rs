//! Build the example WebAssembly guests for tests and benchmarks: the Rust
//! crates of `examples/wasm` for `wasm32-unknown-unknown` (offline, locked:
//! they have no registry dependencies) and the C examples with clang-19
//! (linked by wasm-ld-19). Outputs go under `<target>/wasm-guests`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use thiserror::Error;

/// A guest that could not be built.
#[derive(Debug, Error)]
pub enum GuestBuildError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed:\n{stderr}")]
    Failed { command: String, stderr: String },
    #[error("{0} was not built")]
    Missing(PathBuf),
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$CARGO_TARGET_DIR/wasm-guests`, or `target/wasm-guests` in the repository.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("wasm-guests")
}

fn run(cmd: &mut Command) -> Result<(), GuestBuildError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| GuestBuildError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(GuestBuildError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Build every Rust example (once per process) and return the directory of
/// the `.wasm` files.
pub fn rust_examples() -> Result<PathBuf, GuestBuildError> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let target = guest_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(Command::new(cargo)
        .args(["build", "--release", "--locked", "--offline"])
        .args(["--target", "wasm32-unknown-unknown", "--manifest-path"])
        .arg(repo_root().join("examples/wasm/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target))?;
    let dir = target.join("wasm32-unknown-unknown/release");
    *built = Some(dir.clone());
    Ok(dir)
}

/// The built Rust example `crate_name` (e.g. `team-labeller`).
pub fn rust_example(crate_name: &str) -> Result<PathBuf, GuestBuildError> {
    let path = rust_examples()?.join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !path.exists() {
        return Err(GuestBuildError::Missing(path));
    }
    Ok(path)
}

/// `examples/wasm/c/<name>.c` built with clang-19 for wasm32.
pub fn c_example(name: &str) -> Result<PathBuf, GuestBuildError> {
    let out_dir = guest_dir().join("c");
    std::fs::create_dir_all(&out_dir).map_err(|source| GuestBuildError::Spawn {
        command: format!("mkdir {}", out_dir.display()),
        source,
    })?;
    // Per-process output name: test binaries may build the same example at once.
    let out = out_dir.join(format!("{name}-{}.wasm", std::process::id()));
    let root = repo_root();
    run(Command::new("clang-19")
        .args(["--target=wasm32", "-O2", "-nostdlib", "-Wall", "-Werror"])
        .arg("-I")
        .arg(root.join("plugin-sdk/wasm-guest/c"))
        .args(["-Wl,--no-entry", "-o"])
        .arg(&out)
        .arg(root.join(format!("examples/wasm/c/{name}.c"))))?;
    Ok(out)
}
