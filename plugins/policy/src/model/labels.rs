//! Labels of an endpoint or peer in Cilium's `source:key=value` form.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// Namespace label every pod identity carries (Cilium's `k8s:io.kubernetes.pod.namespace`).
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Prefix of the namespace's own labels copied onto pod identities.
pub const NAMESPACE_LABELS: &str = "io.cilium.k8s.namespace.labels.";

/// One label; an empty source is never stored (`any` is a selector notion).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

/// A sorted label set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Labels(BTreeSet<Label>);

/// A label string that is not `source:key[=value]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label `{0}`: expected source:key=value")]
pub struct LabelError(pub String);

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Self {
            source: source.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

impl Labels {
    /// `k8s:app=web,k8s:io.kubernetes.pod.namespace=prod,reserved:world`; a label
    /// without a source is a `k8s:` label, as pods' labels are.
    pub fn parse_list(s: &str) -> Result<Self, LabelError> {
        let mut labels = Labels::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kv, value) = part.split_once('=').unwrap_or((part, ""));
            let (source, key) = kv.split_once(':').unwrap_or(("k8s", kv));
            if source.is_empty() || key.is_empty() {
                return Err(LabelError(part.to_owned()));
            }
            labels.insert(Label::new(source, key, value));
        }
        Ok(labels)
    }

    pub fn insert(&mut self, label: Label) {
        self.0.insert(label);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// The value of `key` under `source`; source `any` matches every source.
    pub fn get(&self, source: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.key == key && (source == "any" || l.source == source))
            .map(|l| l.value.as_str())
    }

    /// The pod namespace, if the labels belong to a pod.
    pub fn namespace(&self) -> Option<&str> {
        self.get("k8s", POD_NAMESPACE)
    }

    /// The reserved entity name if these labels carry `reserved:<name>`.
    pub fn reserved(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.source == "reserved")
            .map(|l| l.key.as_str())
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Label::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_defaults_to_k8s() {
        let l = Labels::parse_list("app=web, k8s:io.kubernetes.pod.namespace=prod,reserved:world")
            .expect("valid");
        assert_eq!(l.get("k8s", "app"), Some("web"));
        assert_eq!(l.get("any", "app"), Some("web"));
        assert_eq!(l.namespace(), Some("prod"));
        assert_eq!(l.reserved(), Some("world"));
        assert!(Labels::parse_list(":x=1").is_err());
    }
}
