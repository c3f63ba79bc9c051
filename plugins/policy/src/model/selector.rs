//! Label selectors (matchLabels and matchExpressions) and how they match labels.

use serde::Serialize;

use super::labels::Labels;

/// A selector operator, as in Kubernetes' `LabelSelectorRequirement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "operator", content = "values")]
pub enum Operator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One requirement on a label: `source` is `k8s`, `reserved`, ... or `any`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub source: String,
    pub key: String,
    #[serde(flatten)]
    pub operator: Operator,
}

/// All requirements must hold; no requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.source, &self.key);
        match (&self.operator, value) {
            (Operator::In(values), Some(v)) => values.iter().any(|x| x == v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), Some(v)) => !values.iter().any(|x| x == v),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
        }
    }
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a requirement names the pod namespace label (then a CNP does not
    /// add its own namespace).
    pub fn names_namespace(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| r.key == super::labels::POD_NAMESPACE)
    }

    /// Restrict to pods of `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.requirements.push(Requirement {
            source: "k8s".to_owned(),
            key: super::labels::POD_NAMESPACE.to_owned(),
            operator: Operator::In(vec![namespace.to_owned()]),
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(source: &str, key: &str, operator: Operator) -> Requirement {
        Requirement {
            source: source.into(),
            key: key.into(),
            operator,
        }
    }

    #[test]
    fn operators_follow_kubernetes() {
        let l = Labels::parse_list("k8s:app=web,k8s:tier=front").expect("valid");
        assert!(req("any", "app", Operator::In(vec!["web".into()])).matches(&l));
        assert!(!req("reserved", "app", Operator::In(vec!["web".into()])).matches(&l));
        assert!(req("k8s", "env", Operator::NotIn(vec!["prod".into()])).matches(&l));
        assert!(!req("k8s", "app", Operator::NotIn(vec!["web".into()])).matches(&l));
        assert!(req("any", "tier", Operator::Exists).matches(&l));
        assert!(!req("any", "tier", Operator::DoesNotExist).matches(&l));
        assert!(Selector::default().matches(&l));
    }
}
