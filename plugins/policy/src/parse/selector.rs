//! Label selectors as written in policies: `k8s:`/`any:` prefixes, matchExpressions.

use serde_json::Value;

use super::walk::{Cx, index, join};
use crate::model::{NAMESPACE_LABELS, Operator, Requirement, Selector};

/// How a key without a `source:` prefix is read.
#[derive(Debug, Clone, Copy)]
pub enum KeyStyle {
    /// Cilium selectors: no prefix means `any:`.
    Cilium,
    /// Kubernetes podSelector: pod labels, `k8s:`.
    PodLabels,
    /// Kubernetes namespaceSelector: the namespace's labels.
    NamespaceLabels,
}

/// A `LabelSelector` (`matchLabels`, `matchExpressions`).
pub fn selector(cx: &mut Cx, v: &Value, path: &str, style: KeyStyle) -> Option<Selector> {
    let map = cx.object(v, path, &["matchLabels", "matchExpressions"])?;
    let mut out = Selector::default();
    let mut ok = true;
    if let Some(labels) = map.get("matchLabels") {
        let lpath = join(path, "matchLabels");
        match labels.as_object() {
            Some(labels) => {
                for (key, value) in labels {
                    let vpath = join(&lpath, key);
                    // YAML may give numbers or booleans; Kubernetes wants strings.
                    let Some(value) = cx.string(value, &vpath) else {
                        ok = false;
                        continue;
                    };
                    let (source, key) = split_key(key, style);
                    out.requirements.push(Requirement {
                        source,
                        key,
                        operator: Operator::In(vec![value.to_owned()]),
                    });
                }
            }
            None if labels.is_null() => {}
            None => {
                cx.error(&lpath, "expected an object of label: value");
                ok = false;
            }
        }
    }
    if let Some(exprs) = map.get("matchExpressions") {
        let epath = join(path, "matchExpressions");
        for (i, expr) in cx
            .list(exprs, &epath)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match expression(cx, expr, &index(&epath, i), style) {
                Some(r) => out.requirements.push(r),
                None => ok = false,
            }
        }
    }
    ok.then_some(out)
}

fn expression(cx: &mut Cx, v: &Value, path: &str, style: KeyStyle) -> Option<Requirement> {
    let map = cx.object(v, path, &["key", "operator", "values"])?;
    let key = match map.get("key") {
        Some(k) => cx.string(k, &join(path, "key"))?,
        None => {
            cx.error(&join(path, "key"), "is missing");
            return None;
        }
    };
    let values = map
        .get("values")
        .map(|v| cx.strings(v, &join(path, "values")))
        .unwrap_or_default();
    let opath = join(path, "operator");
    let op = match map.get("operator") {
        Some(o) => cx.string(o, &opath)?,
        None => {
            cx.error(&opath, "is missing");
            return None;
        }
    };
    let operator = match op {
        "In" | "NotIn" if values.is_empty() => {
            cx.error(
                &join(path, "values"),
                format!("must not be empty with operator {op}"),
            );
            return None;
        }
        "In" => Operator::In(values),
        "NotIn" => Operator::NotIn(values),
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            cx.error(
                &join(path, "values"),
                format!("must be empty with operator {op}"),
            );
            return None;
        }
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            cx.error(
                &opath,
                format!("unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"),
            );
            return None;
        }
    };
    let (source, key) = split_key(key, style);
    Some(Requirement {
        source,
        key,
        operator,
    })
}

/// `k8s:app` -> (`k8s`, `app`); a bare key per `style`. Only the sources Cilium
/// knows are prefixes: keys such as `io.kubernetes.pod.namespace` contain no colon,
/// but `app.example.com/x:y` style keys do not occur in label keys either.
fn split_key(key: &str, style: KeyStyle) -> (String, String) {
    match style {
        KeyStyle::NamespaceLabels => ("k8s".to_owned(), format!("{NAMESPACE_LABELS}{key}")),
        KeyStyle::PodLabels => ("k8s".to_owned(), key.to_owned()),
        KeyStyle::Cilium => match key.split_once(':') {
            Some((source, rest)) if !source.is_empty() && !rest.is_empty() => {
                (source.to_owned(), rest.to_owned())
            }
            _ => ("any".to_owned(), key.to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Labels;
    use serde_json::json;

    #[test]
    fn prefixes_and_expressions() {
        let mut cx = Cx::default();
        let s = selector(
            &mut cx,
            &json!({"matchLabels": {"k8s:app": "web", "any:tier": "x"},
                    "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
            "sel",
            KeyStyle::Cilium,
        )
        .expect("valid");
        assert!(cx.problems.is_empty());
        assert!(s.matches(&Labels::parse_list("k8s:app=web,k8s:tier=x,k8s:env=dev").expect("l")));
        assert!(!s.matches(&Labels::parse_list("k8s:app=web,k8s:tier=x,k8s:env=prod").expect("l")));
    }

    #[test]
    fn bad_expressions_are_all_reported() {
        let mut cx = Cx::default();
        let s = selector(
            &mut cx,
            &json!({"matchExpressions": [{"key": "a", "operator": "Maybe"},
                                         {"key": "b", "operator": "In"}], "matchLables": {}}),
            "sel",
            KeyStyle::Cilium,
        );
        assert!(s.is_none());
        let fields: Vec<&str> = cx.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sel.matchLables",
                "sel.matchExpressions[0].operator",
                "sel.matchExpressions[1].values"
            ]
        );
    }
}
