//! Which imports a module may have, and the linker that provides them.

use wasmtime::{Engine, Linker, Module};

use crate::config::WasiCapability;
use crate::error::Reason;
use crate::host_state::HostState;
use crate::{host_funcs, wasi};

/// Refuse a module whose imports the host will not provide, naming the
/// first such import and why.
pub fn check_imports(module: &Module, granted: &[WasiCapability]) -> Result<(), (Reason, String)> {
    for import in module.imports() {
        let (from, name) = (import.module(), import.name());
        if from == porin_wasm_abi::IMPORT_MODULE {
            if !host_funcs::NAMES.contains(&name) {
                return Err((
                    Reason::Import,
                    format!("imports `{from}.{name}`, which the host does not have"),
                ));
            }
        } else if from == wasi::MODULE {
            match wasi::capability_of(name) {
                None => {
                    return Err((
                        Reason::Wasi,
                        format!(
                            "imports WASI `{name}`, which Porin never grants (no files, no sockets)"
                        ),
                    ));
                }
                Some(cap) if !granted.contains(&cap) => {
                    return Err((
                        Reason::Wasi,
                        format!(
                            "imports WASI `{name}` (capability `{}`), which was not granted: \
                             add `wasi = [\"{}\"]` to its configuration to allow it",
                            cap.as_str(),
                            cap.as_str()
                        ),
                    ));
                }
                Some(_) => {}
            }
        } else {
            return Err((
                Reason::Import,
                format!("imports `{from}.{name}`, which the host does not have"),
            ));
        }
    }
    Ok(())
}

/// The host functions plus the granted WASI functions.
pub fn linker(engine: &Engine, granted: &[WasiCapability]) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    host_funcs::add_to_linker(&mut linker)?;
    wasi::add_to_linker(&mut linker, granted)?;
    Ok(linker)
}
