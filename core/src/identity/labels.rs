//! Labels in Cilium's `source:key=value` form and sorted label sets.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One label. Ordered by source, key, value, which gives the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    /// `k8s`, `reserved`, `cidr`, ...
    pub source: String,
    pub key: String,
    /// May be empty (`reserved:host`).
    pub value: String,
}

/// A label string that is not `source:key[=value]`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid label `{label}`: {reason}")]
pub struct LabelError {
    pub label: String,
    pub reason: &'static str,
}

/// A sorted set of labels; its [`Display`](fmt::Display) is the canonical string
/// (`;`-separated `source:key=value`) that identities are hashed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Labels(BTreeSet<Label>);

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Self {
        Self {
            source: source.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// A `k8s:` label.
    pub fn k8s(key: &str, value: &str) -> Self {
        Self::new("k8s", key, value)
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

impl FromStr for Label {
    type Err = LabelError;

    /// `source:key=value`; a missing source means `any` as in Cilium's CLI.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| LabelError {
            label: s.to_string(),
            reason,
        };
        let (kv, value) = match s.split_once('=') {
            Some((kv, v)) => (kv, v),
            None => (s, ""),
        };
        let (source, key) = match kv.split_once(':') {
            Some((src, key)) => (src, key),
            None => ("any", kv),
        };
        if source.is_empty() {
            return Err(err("empty source"));
        }
        if key.is_empty() {
            return Err(err("empty key"));
        }
        Ok(Self::new(source, key, value))
    }
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn from_reserved(name: &str) -> Self {
        Self(BTreeSet::from([Label::new("reserved", name, "")]))
    }

    /// Parse a comma-separated list such as `k8s:app=web,k8s:io.kubernetes.pod.namespace=prod`.
    pub fn parse_list(s: &str) -> Result<Self, LabelError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Label::from_str)
            .collect()
    }

    pub fn insert(&mut self, label: Label) {
        self.0.insert(label);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `source:key`, if present.
    pub fn get(&self, source: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|l| l.source == source && l.key == key)
            .map(|l| l.value.as_str())
    }

    /// Labels as strings, for `EndpointMeta::labels` and the API.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Label::to_string).collect()
    }
}

impl FromIterator<Label> for Labels {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, label) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{label}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_string_is_sorted() {
        let a = Labels::parse_list("k8s:z=1,k8s:app=web,cidr:10.0.0.0/8").expect("valid");
        let b = Labels::parse_list("cidr:10.0.0.0/8,k8s:app=web,k8s:z=1").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "cidr:10.0.0.0/8;k8s:app=web;k8s:z=1");
        assert_eq!(a.get("k8s", "app"), Some("web"));
    }

    #[test]
    fn label_parsing() {
        let l: Label = "reserved:host".parse().expect("valid");
        assert_eq!(l, Label::new("reserved", "host", ""));
        let l: Label = "app=web".parse().expect("valid");
        assert_eq!(l.source, "any");
        assert!(":x=1".parse::<Label>().is_err());
        assert!("k8s:=1".parse::<Label>().is_err());
    }
}
