//! Hubble metric options in Cilium's syntax: `name[:opt=value;opt=value]`.

use serde::Serialize;

/// Metric names Hubble knows.
pub const METRIC_NAMES: [&str; 10] = [
    "dns",
    "drop",
    "tcp",
    "flow",
    "port-distribution",
    "icmp",
    "httpV2",
    "http",
    "flows-to-world",
    "policy",
];

/// Values of `labelsContext`.
pub const LABELS_CONTEXT: [&str; 15] = [
    "source_ip",
    "source_namespace",
    "source_pod",
    "source_workload",
    "source_workload_kind",
    "source_app",
    "source_label",
    "destination_ip",
    "destination_namespace",
    "destination_pod",
    "destination_workload",
    "destination_workload_kind",
    "destination_app",
    "destination_label",
    "traffic_direction",
];

/// Values of `sourceContext` / `destinationContext`.
pub const CONTEXT_VALUES: [&str; 10] = [
    "identity",
    "namespace",
    "pod",
    "pod-name",
    "dns",
    "ip",
    "reserved-identity",
    "workload",
    "workload-name",
    "app",
];

/// One parsed entry of `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricSpec {
    pub name: String,
    pub labels_context: Vec<String>,
    pub exemplars: bool,
    /// Alternatives tried in order (`pod|ip`).
    pub source_context: Vec<String>,
    pub destination_context: Vec<String>,
    /// Options without a value that some metrics take (`dns:query;ignoreAAAA`,
    /// `flows-to-world:any-drop;port;syn-only`).
    pub flags: Vec<String>,
}

/// The value-less options a metric accepts (Cilium's).
pub fn flag_options(metric: &str) -> &'static [&'static str] {
    match metric {
        "dns" => &["query", "ignoreAAAA"],
        "flows-to-world" => &["any-drop", "port", "syn-only"],
        _ => &[],
    }
}

impl MetricSpec {
    /// Parse `httpV2:exemplars=true;labelsContext=source_namespace,...`; the error
    /// names the unknown metric, option or value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, options) = match text.split_once(':') {
            Some((n, o)) => (n.trim(), o),
            None => (text.trim(), ""),
        };
        if !METRIC_NAMES.contains(&name) {
            return Err(format!(
                "unknown metric `{name}`, expected one of {}",
                METRIC_NAMES.join(", ")
            ));
        }
        let mut spec = Self {
            name: name.to_string(),
            ..Self::default()
        };
        for option in options.split(';').map(str::trim).filter(|o| !o.is_empty()) {
            if flag_options(name).contains(&option) {
                spec.flags.push(option.to_string());
                continue;
            }
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("option `{option}` of `{name}` has no value"))?;
            match key.trim() {
                "labelsContext" => spec.labels_context = list(value, ',', &LABELS_CONTEXT, key)?,
                "sourceContext" => spec.source_context = list(value, '|', &CONTEXT_VALUES, key)?,
                "destinationContext" => {
                    spec.destination_context = list(value, '|', &CONTEXT_VALUES, key)?;
                }
                "exemplars" => {
                    spec.exemplars = value.trim().parse().map_err(|_| {
                        format!("exemplars: `{value}` is not a boolean (true or false)")
                    })?;
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}` of metric `{name}`, expected one of \
                         labelsContext, exemplars, sourceContext, destinationContext"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

fn list(value: &str, sep: char, allowed: &[&str], key: &str) -> Result<Vec<String>, String> {
    value
        .split(sep)
        .map(str::trim)
        .map(|v| {
            if allowed.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "{key}: unknown value `{v}`, expected one of {}",
                    allowed.join(", ")
                ))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cilium_syntax() {
        let s = MetricSpec::parse(
            "httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace;sourceContext=workload-name|reserved-identity",
        )
        .expect("valid");
        assert_eq!(s.name, "httpV2");
        assert!(s.exemplars);
        assert_eq!(
            s.labels_context,
            vec!["source_namespace", "destination_namespace"]
        );
        assert_eq!(s.source_context, vec!["workload-name", "reserved-identity"]);
        assert_eq!(MetricSpec::parse("dns").expect("valid").name, "dns");
        let dns = MetricSpec::parse("dns:query;ignoreAAAA").expect("valid");
        assert_eq!(dns.flags, vec!["query", "ignoreAAAA"]);
        let world = MetricSpec::parse("flows-to-world:any-drop;port;sourceContext=namespace")
            .expect("valid");
        assert_eq!(world.flags, vec!["any-drop", "port"]);
        assert_eq!(world.source_context, vec!["namespace"]);
    }

    #[test]
    fn errors_name_the_culprit() {
        for (text, culprit) in [
            ("dnss", "`dnss`"),
            ("dns:query=true", "`query`"),
            ("flow:labelsContext=source_pod,pod", "`pod`"),
            ("drop:sourceContext=namespace|host", "`host`"),
            ("http:exemplars=yes", "`yes`"),
            ("tcp:exemplars", "`exemplars`"),
            ("tcp:any-drop", "`any-drop`"),
        ] {
            let e = MetricSpec::parse(text).expect_err(text);
            assert!(e.contains(culprit), "{text}: {e}");
        }
    }
}
