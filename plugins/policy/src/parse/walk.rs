//! Walking an untyped document while collecting every problem with its field path.

use serde_json::{Map, Value};

/// One problem inside a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

/// Collects problems; every helper reports and returns `None` on a wrong shape.
#[derive(Debug, Default)]
pub struct Cx {
    pub problems: Vec<FieldProblem>,
}

impl Cx {
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(FieldProblem {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// An object whose keys are all in `allowed`; unknown keys are reported.
    pub fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(map) = v.as_object() else {
            self.error(path, format!("expected an object, found {}", kind(v)));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(&join(path, key), "unknown field");
            }
        }
        Some(map)
    }

    /// A list; `null` counts as absent.
    pub fn list<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v [Value]> {
        match v {
            Value::Array(items) => Some(items),
            Value::Null => Some(&[]),
            other => {
                self.error(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    pub fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.error(path, format!("expected a string, found {}", kind(v)));
                None
            }
        }
    }

    pub fn bool(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.error(path, format!("expected true or false, found {}", kind(v)));
                None
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, v: &Value, path: &str) -> Vec<String> {
        let items = self.list(v, path).unwrap_or_default();
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.string(item, &index(path, i)).map(str::to_owned))
            .collect()
    }
}

/// `a.b`, or `b` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `a[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
