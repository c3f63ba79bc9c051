//! Renders a Helm chart the way `helm template` does, for the chart's tests:
//! values.yaml deep-merged with user values, every template executed by
//! `gtmpl` (Go's text/template semantics in Rust) with `.Values`, `.Release`,
//! `.Chart` and `.Files`, and the output split into YAML documents.
//!
//! No helm binary installs from our registries, so this covers the subset the
//! chart uses: Go template actions and builtins, plus Helm's `quote`,
//! `default`, `indent`, `nindent` and `fail`. gtmpl has no methods with
//! arguments, so `.Files.Get "path"` is read as `(index .Files "path")`
//! before parsing. Anything else Helm-specific fails to render, loudly.

use std::collections::HashMap;
use std::path::Path;

use gtmpl::{Context, Template};
use gtmpl_value::{FuncError, Number, Value};

/// One rendered template: its file name and its YAML documents.
pub struct Rendered {
    pub template: String,
    pub documents: Vec<serde_yaml::Value>,
    pub text: String,
}

/// Helm's deep merge: maps merge key by key, anything else is replaced.
pub fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn to_gtmpl(value: &serde_yaml::Value) -> Value {
    match value {
        serde_yaml::Value::Null => Value::Nil,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Number(Number::from(i)),
            (None, Some(f)) => Value::Number(Number::from(f)),
            _ => Value::Nil,
        },
        serde_yaml::Value::String(s) => Value::String(s.clone()),
        serde_yaml::Value::Sequence(items) => Value::Array(items.iter().map(to_gtmpl).collect()),
        serde_yaml::Value::Mapping(map) => Value::Map(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), to_gtmpl(v))))
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => to_gtmpl(&t.value),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args.iter().map(|a| format!("{:?}", text_of(a))).collect();
    Ok(Value::String(parts.join(" ")))
}

fn default(args: &[Value]) -> Result<Value, FuncError> {
    let [fallback, given] = args else {
        return Err(FuncError::ExactlyXArgs("default".into(), 2));
    };
    let empty = matches!(given, Value::NoValue | Value::Nil)
        || matches!(given, Value::String(s) if s.is_empty())
        || matches!(given, Value::Bool(false));
    Ok(if empty {
        fallback.clone()
    } else {
        given.clone()
    })
}

fn indent_by(args: &[Value], name: &str) -> Result<(usize, String), FuncError> {
    let [width, text] = args else {
        return Err(FuncError::ExactlyXArgs(name.into(), 2));
    };
    let width: usize = text_of(width)
        .parse()
        .map_err(|_| FuncError::Generic(format!("{name}: width must be a number")))?;
    let pad = " ".repeat(width);
    let text = text_of(text)
        .split('\n')
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok((width, text))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(indent_by(args, "indent")?.1))
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(format!(
        "\n{}",
        indent_by(args, "nindent")?.1
    )))
}

fn fail(args: &[Value]) -> Result<Value, FuncError> {
    Err(FuncError::Generic(
        args.iter().map(text_of).collect::<Vec<_>>().join(" "),
    ))
}

/// Every file of the chart outside `templates/`, for `.Files.Get`.
fn chart_files(chart: &Path, dir: &Path, files: &mut HashMap<String, Value>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let relative = path
            .strip_prefix(chart)
            .expect("inside the chart")
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            if relative != "templates" {
                chart_files(chart, &path, files);
            }
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            files.insert(relative, Value::String(text));
        }
    }
}

/// Renders every template of `chart` with `values` over the chart's defaults.
/// Errors name the template and what failed.
pub fn render(
    chart: &Path,
    values: Option<serde_yaml::Value>,
    namespace: &str,
) -> Result<Vec<Rendered>, String> {
    let defaults = std::fs::read_to_string(chart.join("values.yaml"))
        .map_err(|e| format!("values.yaml: {e}"))?;
    let mut merged: serde_yaml::Value =
        serde_yaml::from_str(&defaults).map_err(|e| format!("values.yaml: {e}"))?;
    if let Some(values) = values {
        merge(&mut merged, values);
    }
    let chart_meta: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml"))
            .map_err(|e| format!("Chart.yaml: {e}"))?,
    )
    .map_err(|e| format!("Chart.yaml: {e}"))?;
    let mut files = HashMap::new();
    chart_files(chart, chart, &mut files);
    let mut release = HashMap::new();
    release.insert("Name".to_owned(), Value::from("porin"));
    release.insert("Namespace".to_owned(), Value::from(namespace));
    let mut root = HashMap::new();
    root.insert("Values".to_owned(), to_gtmpl(&merged));
    root.insert("Release".to_owned(), Value::Map(release));
    root.insert("Chart".to_owned(), to_gtmpl(&chart_meta));
    root.insert("Files".to_owned(), Value::Map(files));
    let root = Value::Map(root);

    let mut names: Vec<_> = std::fs::read_dir(chart.join("templates"))
        .map_err(|e| format!("templates/: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut rendered = Vec::new();
    for name in names {
        let source = std::fs::read_to_string(chart.join("templates").join(&name))
            .map_err(|e| format!("{name}: {e}"))?;
        let source = source.replace(".Files.Get \"", "index .Files \"");
        let mut template = Template::default();
        template.add_funcs(&[
            ("quote", quote as gtmpl::Func),
            ("default", default as gtmpl::Func),
            ("indent", indent as gtmpl::Func),
            ("nindent", nindent as gtmpl::Func),
            ("fail", fail as gtmpl::Func),
        ]);
        template
            .parse(source)
            .map_err(|e| format!("templates/{name}: parse: {e}"))?;
        let text = template
            .render(&Context::from(root.clone()))
            .map_err(|e| format!("templates/{name}: {e}"))?;
        let mut documents = Vec::new();
        if name.ends_with(".yaml") {
            for (i, doc) in text.split("\n---").enumerate() {
                let value: serde_yaml::Value = serde_yaml::from_str(doc)
                    .map_err(|e| format!("templates/{name} document {i}: {e}\n{doc}"))?;
                if !value.is_null() {
                    documents.push(value);
                }
            }
        }
        rendered.push(Rendered {
            template: name,
            documents,
            text,
        });
    }
    Ok(rendered)
}
