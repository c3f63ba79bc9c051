//! Parsing multi-document Kubernetes YAML into store objects.
//!
//! Pure: no I/O, so `porin policy validate` and tests use it directly.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::objects::{DecodeError, Kind, Object};
use super::store::Severity;

/// Objects of one file, and the problems found in it.
#[derive(Debug, Default)]
pub struct ParsedManifest {
    pub objects: Vec<Object>,
    pub problems: Vec<ManifestError>,
}

impl ParsedManifest {
    /// Whether any problem makes the file unusable (warnings do not).
    pub fn is_broken(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.severity() == Severity::Error)
    }
}

/// Where in a file a problem is: path and 1-based document index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentRef {
    pub path: PathBuf,
    pub document: usize,
}

impl fmt::Display for DocumentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.path.display(), self.document)
    }
}

/// A problem in one document of a manifest file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{at}: {source}")]
    Yaml {
        at: DocumentRef,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{at}: {field} is missing")]
    MissingField {
        at: DocumentRef,
        field: &'static str,
    },
    #[error("{at}: unknown kind {kind} (apiVersion {api_version}), skipped")]
    UnknownKind {
        at: DocumentRef,
        api_version: String,
        kind: String,
    },
    #[error("{at} ({object}): {source}")]
    Decode {
        at: DocumentRef,
        /// `Kind namespace/name` as written in the document.
        object: String,
        #[source]
        source: DecodeError,
    },
}

impl ManifestError {
    /// Unknown kinds are skipped with a warning; everything else is an error.
    pub fn severity(&self) -> Severity {
        match self {
            ManifestError::UnknownKind { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// Parses every document of `text`, read from `path`.
///
/// Namespaced objects without a namespace get `default`, as with kubectl.
pub fn parse_manifest(path: &Path, text: &str) -> ParsedManifest {
    let mut parsed = ParsedManifest::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = DocumentRef {
            path: path.to_owned(),
            document: index + 1,
        };
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(source) => {
                // The YAML stream cannot be resynchronised after a syntax error.
                parsed.problems.push(ManifestError::Yaml { at, source });
                break;
            }
        };
        match parse_document(at, value) {
            Ok(Some(object)) => parsed.objects.push(object),
            Ok(None) => {}
            Err(problem) => parsed.problems.push(problem),
        }
    }
    parsed
}

/// One document; `None` for an empty document.
fn parse_document(at: DocumentRef, mut value: Value) -> Result<Option<Object>, ManifestError> {
    if value.is_null() {
        return Ok(None);
    }
    let field = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let Some(api_version) = field(&value, "apiVersion") else {
        return Err(ManifestError::MissingField {
            at,
            field: "apiVersion",
        });
    };
    let Some(kind_name) = field(&value, "kind") else {
        return Err(ManifestError::MissingField { at, field: "kind" });
    };
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        return Err(ManifestError::UnknownKind {
            at,
            api_version,
            kind: kind_name,
        });
    };
    let Some(metadata) = value.get_mut("metadata").and_then(Value::as_mapping_mut) else {
        return Err(ManifestError::MissingField {
            at,
            field: "metadata",
        });
    };
    let Some(name) = metadata
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(ManifestError::MissingField {
            at,
            field: "metadata.name",
        });
    };
    let object = if kind.is_namespaced() {
        let namespace = match metadata.get("namespace").and_then(Value::as_str) {
            Some(ns) => ns.to_owned(),
            None => {
                metadata.insert("namespace".into(), "default".into());
                "default".to_owned()
            }
        };
        format!("{kind} {namespace}/{name}")
    } else {
        format!("{kind} {name}")
    };
    Object::decode(kind, value)
        .map(Some)
        .map_err(|source| ManifestError::Decode { at, object, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_empty_and_unknown() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: api}\n";
        let parsed = parse_manifest(Path::new("x.yaml"), text);
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.objects[1].key().to_string(), "Pod default/api");
        assert!(!parsed.is_broken());
        assert_eq!(
            parsed.problems[0].to_string(),
            "x.yaml: document 3: unknown kind ConfigMap (apiVersion v1), skipped"
        );
    }

    #[test]
    fn missing_kind_is_an_error() {
        let parsed = parse_manifest(Path::new("x.yaml"), "apiVersion: v1\nmetadata: {name: a}\n");
        assert!(parsed.is_broken());
        assert_eq!(
            parsed.problems[0].to_string(),
            "x.yaml: document 1: kind is missing"
        );
    }

    #[test]
    fn syntax_error_names_the_document() {
        let parsed = parse_manifest(
            Path::new("x.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n",
        );
        assert!(parsed.is_broken());
        assert!(
            parsed.problems[0]
                .to_string()
                .starts_with("x.yaml: document 2: "),
            "{}",
            parsed.problems[0]
        );
    }
}
