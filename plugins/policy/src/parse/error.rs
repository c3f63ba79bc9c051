//! Problems found while parsing policy files.

use std::fmt;

/// Where a problem is: file, 1-based document index, and the object if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub document: usize,
    /// `CiliumNetworkPolicy payments/x`.
    pub object: Option<String>,
}

/// One problem in a policy file, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {}{message}", field_prefix(.field))]
pub struct PolicyError {
    pub at: Location,
    /// Dotted path, e.g. `spec.egress[0].toPorts[0].ports[0].port`; empty for the document.
    pub field: String,
    pub message: String,
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}
