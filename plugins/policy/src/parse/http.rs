//! `rules.http`: Cilium's `PortRuleHTTP` entries, with every regular
//! expression compiled now so a bad one is reported with its field path
//! instead of failing in the proxy.

use serde_json::Value;

use super::walk::{Cx, index, join};
use crate::model::{AnchoredRegex, HeaderRequirement, HttpRule};

/// A list of HTTP rules at `path` (`...rules.http`).
pub fn http_rules(cx: &mut Cx, v: &Value, path: &str) -> Vec<HttpRule> {
    let mut out = Vec::new();
    for (i, item) in cx.list(v, path).unwrap_or_default().iter().enumerate() {
        if let Some(rule) = http_rule(cx, item, &index(path, i)) {
            out.push(rule);
        }
    }
    out
}

fn http_rule(cx: &mut Cx, v: &Value, path: &str) -> Option<HttpRule> {
    let map = cx.object(
        v,
        path,
        &["method", "path", "host", "headers", "headerMatches"],
    )?;
    let before = cx.problems.len();
    let mut rule = HttpRule {
        method: regex_field(cx, map.get("method"), &join(path, "method")),
        path: regex_field(cx, map.get("path"), &join(path, "path")),
        host: regex_field(cx, map.get("host"), &join(path, "host")),
        headers: Vec::new(),
    };
    if let Some(h) = map.get("headers") {
        let hpath = join(path, "headers");
        for (i, entry) in cx.strings(h, &hpath).iter().enumerate() {
            match HeaderRequirement::parse(entry) {
                Some(req) => rule.headers.push(req),
                None => cx.error(
                    &index(&hpath, i),
                    format!("invalid header {entry:?} (expected \"Name\" or \"Name: value\")"),
                ),
            }
        }
    }
    if let Some(m) = map.get("headerMatches") {
        let mpath = join(path, "headerMatches");
        for (i, entry) in cx.list(m, &mpath).unwrap_or_default().iter().enumerate() {
            if let Some(req) = header_match(cx, entry, &index(&mpath, i)) {
                rule.headers.push(req);
            }
        }
    }
    (cx.problems.len() == before).then_some(rule)
}

/// A `headerMatches` entry: `name` and the `value` it must have. Mismatch
/// actions and secrets are refused rather than silently ignored.
fn header_match(cx: &mut Cx, v: &Value, path: &str) -> Option<HeaderRequirement> {
    let map = cx.object(v, path, &["name", "value", "mismatch", "secret"])?;
    if map.contains_key("secret") {
        cx.error(
            &join(path, "secret"),
            "header values from secrets are not supported",
        );
    }
    if let Some(action) = map.get("mismatch") {
        let action = cx.string(action, &join(path, "mismatch"))?;
        if !action.is_empty() {
            cx.error(
                &join(path, "mismatch"),
                format!(
                    "mismatch action {action:?} is not supported (a mismatching request is denied)"
                ),
            );
        }
    }
    let npath = join(path, "name");
    let Some(name) = map.get("name") else {
        cx.error(&npath, "missing header name");
        return None;
    };
    let name = cx.string(name, &npath)?;
    let mut req = match HeaderRequirement::parse(name) {
        Some(r) if r.value.is_none() => r,
        _ => {
            cx.error(&npath, format!("invalid header name {name:?}"));
            return None;
        }
    };
    if let Some(value) = map.get("value") {
        req.value = Some(cx.string(value, &join(path, "value"))?.to_owned());
    }
    Some(req)
}

/// An optional regular expression; empty counts as omitted (matches all).
fn regex_field(cx: &mut Cx, v: Option<&Value>, path: &str) -> Option<AnchoredRegex> {
    let s = cx.string(v?, path)?;
    if s.is_empty() {
        return None;
    }
    match AnchoredRegex::new(s) {
        Ok(re) => Some(re),
        Err(e) => {
            let why = e.to_string().lines().last().unwrap_or_default().to_owned();
            cx.error(path, format!("invalid regular expression {s:?}: {why}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::HttpRequest;

    #[test]
    fn the_seed_articles_rule_parses() {
        let mut cx = Cx::default();
        let rules = http_rules(
            &mut cx,
            &json!([{"method": "GET", "path": "/metrics"}]),
            "r",
        );
        assert!(cx.problems.is_empty(), "{:?}", cx.problems);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].to_string(), "method GET, path /metrics");
        let req = HttpRequest {
            method: "GET".into(),
            path: "/metrics".into(),
            ..HttpRequest::default()
        };
        assert!(rules[0].matches(&req));
    }

    #[test]
    fn bad_regexes_and_fields_are_reported_with_their_paths() {
        let mut cx = Cx::default();
        let rules = http_rules(
            &mut cx,
            &json!([
                {"method": "GET(", "path": "/ok"},
                {"path": "[z-a]"},
                {"headers": ["X-Ok", "bad name"], "verb": "GET"},
                {"headerMatches": [{"name": "X-A", "value": "1", "mismatch": "LOG"}, {"value": "2"}]}
            ]),
            "spec.ingress[0].toPorts[0].rules.http",
        );
        assert!(rules.is_empty(), "{rules:?}");
        let fields: Vec<&str> = cx.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ingress[0].toPorts[0].rules.http[0].method",
                "spec.ingress[0].toPorts[0].rules.http[1].path",
                "spec.ingress[0].toPorts[0].rules.http[2].verb",
                "spec.ingress[0].toPorts[0].rules.http[2].headers[1]",
                "spec.ingress[0].toPorts[0].rules.http[3].headerMatches[0].mismatch",
                "spec.ingress[0].toPorts[0].rules.http[3].headerMatches[1].name",
            ]
        );
        assert!(
            cx.problems[0]
                .message
                .starts_with("invalid regular expression \"GET(\""),
            "{:?}",
            cx.problems[0]
        );
    }

    #[test]
    fn header_matches_require_the_value() {
        let mut cx = Cx::default();
        let rules = http_rules(
            &mut cx,
            &json!([{"headerMatches": [{"name": "X-Token", "value": "s3cret"}]}]),
            "r",
        );
        assert!(cx.problems.is_empty(), "{:?}", cx.problems);
        let with = HttpRequest {
            headers: vec![("x-token".into(), "s3cret".into())],
            ..HttpRequest::default()
        };
        assert!(rules[0].matches(&with));
        assert!(!rules[0].matches(&HttpRequest::default()));
    }
}
