//! Build the native plugin examples (`examples/native-plugin`) for tests: the workspace's
//! cdylibs with cargo, and a stand-in for a plugin built against another ABI version
//! (one exported symbol, compiled with rustc).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::wasm_guests::{GuestBuildError, repo_root};

/// `$CARGO_TARGET_DIR` or the repository's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn run(cmd: &mut Command) -> Result<(), GuestBuildError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| GuestBuildError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GuestBuildError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Builds the workspace package `package` (a cdylib) and returns its `.so`.
pub fn build_example(package: &str) -> Result<PathBuf, GuestBuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run(Command::new(cargo).current_dir(repo_root()).args([
        "build",
        "--locked",
        "--offline",
        "-p",
        package,
    ]))?;
    let so = target_dir()
        .join("debug")
        .join(format!("lib{}.so", package.replace('-', "_")));
    if so.exists() {
        Ok(so)
    } else {
        Err(GuestBuildError::Missing(so))
    }
}

/// A shared object that exports only `porin_plugin_abi_version() == version`: what the
/// agent sees first of a plugin built against ABI `version`. Written into `dir`.
pub fn build_abi_stub(dir: &Path, version: u32) -> Result<PathBuf, GuestBuildError> {
    let source = dir.join("abi_stub.rs");
    std::fs::write(
        &source,
        format!(
            "#[unsafe(no_mangle)]\npub extern \"C\" fn porin_plugin_abi_version() -> u32 {{ {version} }}\n"
        ),
    )
    .map_err(|source| GuestBuildError::Spawn {
        command: "writing abi_stub.rs".to_string(),
        source,
    })?;
    let so = dir.join(format!("libabi_v{version}.so"));
    run(Command::new("rustc")
        .args(["--edition", "2024", "--crate-type", "cdylib", "-o"])
        .arg(&so)
        .arg(&source))?;
    Ok(so)
}
