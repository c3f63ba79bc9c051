//! Policy files: multi-document YAML into [`Policy`] values, with every problem
//! named by file, document and field path.

mod cilium;
mod error;
mod http;
mod knp;
mod ports;
mod selector;
mod walk;

use serde::Deserialize;
use serde_json::Value;

pub use error::{Location, PolicyError};
use walk::{Cx, index};

use crate::model::{Policy, PolicyKind, PolicyRef};

/// The policies of one file and every problem found in it.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub policies: Vec<Policy>,
    pub problems: Vec<PolicyError>,
}

/// Parse every document of `text`; `file` names it in errors.
pub fn parse_file(file: &str, text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = Location {
            file: file.to_owned(),
            document: i + 1,
            object: None,
        };
        match Value::deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => match parse_document(&at, &value) {
                Ok(policy) => out.policies.push(policy),
                Err(mut problems) => out.problems.append(&mut problems),
            },
            Err(e) => {
                out.problems.push(PolicyError {
                    at,
                    field: String::new(),
                    message: format!("invalid YAML: {e}"),
                });
                // The stream cannot be resynchronised after a syntax error.
                break;
            }
        }
    }
    out
}

/// One document holding one policy.
pub fn parse_document(at: &Location, value: &Value) -> Result<Policy, Vec<PolicyError>> {
    let mut cx = Cx::default();
    let fail = |at: &Location, cx: Cx| {
        cx.problems
            .into_iter()
            .map(|p| PolicyError {
                at: at.clone(),
                field: p.field,
                message: p.message,
            })
            .collect::<Vec<_>>()
    };
    let str_field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let kind = match (str_field("apiVersion"), str_field("kind")) {
        ("networking.k8s.io/v1", "NetworkPolicy") => PolicyKind::NetworkPolicy,
        ("cilium.io/v2", "CiliumNetworkPolicy") => PolicyKind::CiliumNetworkPolicy,
        ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => {
            PolicyKind::CiliumClusterwideNetworkPolicy
        }
        (api, kind) => {
            cx.error(
                "",
                format!(
                    "not a network policy (apiVersion {api:?}, kind {kind:?}); expected \
                     networking.k8s.io/v1 NetworkPolicy or cilium.io/v2 \
                     CiliumNetworkPolicy/CiliumClusterwideNetworkPolicy"
                ),
            );
            return Err(fail(at, cx));
        }
    };
    let allowed: &[&str] = match kind {
        PolicyKind::NetworkPolicy => &["apiVersion", "kind", "metadata", "spec", "status"],
        _ => &["apiVersion", "kind", "metadata", "spec", "specs", "status"],
    };
    let metadata = value.get("metadata").and_then(Value::as_object);
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let namespace = match kind {
        PolicyKind::CiliumClusterwideNetworkPolicy => None,
        _ => Some(
            metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned(),
        ),
    };
    let source = PolicyRef {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let at = Location {
        object: Some(source.to_string()),
        ..at.clone()
    };
    cx.object(value, "", allowed);
    if name.is_empty() {
        cx.error("metadata.name", "is missing");
    }
    let mut rules = Vec::new();
    match kind {
        PolicyKind::NetworkPolicy => match value.get("spec") {
            Some(spec) => rules.extend(knp::spec(
                &mut cx,
                spec,
                namespace.as_deref().unwrap_or("default"),
            )),
            None => cx.error("spec", "is missing"),
        },
        _ => {
            let ns = namespace.as_deref();
            if let Some(spec) = value.get("spec") {
                rules.extend(cilium::rule(&mut cx, spec, "spec", ns));
            }
            if let Some(specs) = value.get("specs") {
                for (i, spec) in cx
                    .list(specs, "specs")
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    rules.extend(cilium::rule(&mut cx, spec, &index("specs", i), ns));
                }
            }
            if value.get("spec").is_none() && value.get("specs").is_none() {
                cx.error("spec", "is missing (a policy needs spec or specs)");
            }
        }
    }
    if cx.problems.is_empty() {
        Ok(Policy { source, rules })
    } else {
        Err(fail(&at, cx))
    }
}

#[cfg(test)]
mod tests;
