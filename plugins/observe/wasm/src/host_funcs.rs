//! The `porin` import module: `log`, `declare_label`, `set_label`.

use porin_wasm_abi::{IMPORT_DECLARE_LABEL, IMPORT_LOG, IMPORT_MODULE, IMPORT_SET_LABEL};
use porin_wasm_abi::{MAX_LABEL_VALUE, MAX_LABELS};
use tracing::{debug, error, info, trace, warn};
use wasmtime::{Caller, Linker};

use crate::error::Reason;
use crate::host_state::HostState;
use crate::memory::{memory_of, range};

/// Host function names of the `porin` module.
pub const NAMES: [&str; 3] = [IMPORT_LOG, IMPORT_DECLARE_LABEL, IMPORT_SET_LABEL];

/// Label names a labeller may not declare: Hubble metrics' own labels and the
/// context labels (`labelsContext`) they may carry.
pub const RESERVED_LABELS: [&str; 22] = [
    "source",
    "destination",
    "verdict",
    "reason",
    "protocol",
    "direction",
    "family",
    "flag",
    "port",
    "type",
    "subtype",
    "code",
    "method",
    "status",
    "rcode",
    "qtypes",
    "ips_returned",
    "query",
    "reporter",
    "le",
    "module",
    "traffic_direction",
];

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(IMPORT_MODULE, IMPORT_LOG, log)?;
    linker.func_wrap(IMPORT_MODULE, IMPORT_DECLARE_LABEL, declare_label)?;
    linker.func_wrap(IMPORT_MODULE, IMPORT_SET_LABEL, set_label)?;
    Ok(())
}

fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let text = String::from_utf8_lossy(range(data, ptr, len.min(4096))?);
    let module = state.module.as_str();
    match level {
        0 => {
            error!(wasm_module = module, "{text}");
            state.last_error_log = Some(text.into_owned());
        }
        1 => warn!(wasm_module = module, "{text}"),
        2 => info!(wasm_module = module, "{text}"),
        3 => debug!(wasm_module = module, "{text}"),
        _ => trace!(wasm_module = module, "{text}"),
    }
    Ok(())
}

/// Why `name` cannot be a label of a labeller that declared `declared`.
pub fn label_name_problem(name: &str, declared: &[String]) -> Option<String> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid {
        return Some(format!(
            "label name `{name}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    let context = ["source_", "destination_"].iter().any(|p| {
        name.strip_prefix(p).is_some_and(|f| {
            matches!(
                f,
                "ip" | "namespace" | "pod" | "workload" | "workload_kind" | "app" | "label"
            )
        })
    });
    if RESERVED_LABELS.contains(&name) || context {
        return Some(format!(
            "label name `{name}` is one of Hubble's own metric labels"
        ));
    }
    if declared.iter().any(|d| d == name) {
        return Some(format!("label `{name}` is declared twice"));
    }
    if declared.len() >= MAX_LABELS {
        return Some(format!(
            "label `{name}`: a labeller declares at most {MAX_LABELS} labels"
        ));
    }
    None
}

fn declare_label(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let name = String::from_utf8_lossy(range(data, ptr, len.min(256))?).into_owned();
    if !state.initialising {
        return Err(state.violate(
            Reason::Label,
            format!("declared label `{name}` outside init"),
        ));
    }
    if let Some(problem) = label_name_problem(&name, &state.labels) {
        return Err(state.violate(Reason::Label, problem));
    }
    state.labels.push(name);
    Ok(0)
}

fn set_label(
    mut caller: Caller<'_, HostState>,
    flow: i32,
    name_ptr: i32,
    name_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> wasmtime::Result<i32> {
    let memory = memory_of(&mut caller)?;
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let name = range(data, name_ptr, name_len.min(256))?;
    let Some(index) = state.labels.iter().position(|l| l.as_bytes() == name) else {
        let message = format!(
            "set label `{}`, which it did not declare (declared: {})",
            String::from_utf8_lossy(name),
            state.labels.join(", ")
        );
        return Err(state.violate(Reason::Label, message));
    };
    let value = range(data, value_ptr, value_len)?;
    if value.len() > MAX_LABEL_VALUE {
        let message = format!(
            "value of label `{}` is {} bytes, over {MAX_LABEL_VALUE}",
            state.labels[index],
            value.len()
        );
        return Err(state.violate(Reason::Label, message));
    }
    let Ok(value) = std::str::from_utf8(value) else {
        let message = format!("value of label `{}` is not UTF-8", state.labels[index]);
        return Err(state.violate(Reason::Label, message));
    };
    let slot = (flow as u32 as usize)
        .checked_mul(state.labels.len())
        .map(|s| s + index)
        .filter(|s| *s < state.values.len());
    let Some(slot) = slot else {
        let message = format!("set a label of flow {flow}, which is not in the batch");
        return Err(state.violate(Reason::Label, message));
    };
    let out = &mut state.values[slot];
    out.clear();
    out.push_str(value);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        assert_eq!(label_name_problem("source_team", &[]), None);
        for bad in ["1x", "a-b", "", "__x", "verdict", "source_namespace", "le"] {
            assert!(label_name_problem(bad, &[]).is_some(), "{bad}");
        }
        assert!(label_name_problem("team", &["team".to_string()]).is_some());
        let eight: Vec<String> = (0..8).map(|i| format!("l{i}")).collect();
        assert!(label_name_problem("ninth", &eight).is_some());
    }
}
