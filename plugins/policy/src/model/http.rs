//! `rules.http`: Cilium's HTTP rules (`PortRuleHTTP`) and how one request is
//! matched against them.
//!
//! As in Cilium (Envoy underneath), `method`, `path` and `host` are regular
//! expressions that must match the whole value (anchored at both ends); an
//! omitted field matches everything. `path` is matched against the request
//! target as sent (path and query, Envoy's `:path`). `headers` entries are
//! `Name` (the header must be present) or `Name: value` (present with exactly
//! that value); `headerMatches` entries name a header and the value it must
//! have. Header names are case-insensitive. A request is allowed when every
//! field of at least one rule matches.

use std::fmt;

use regex::Regex;
use serde::{Serialize, Serializer};

/// A regular expression matched against a whole value.
#[derive(Debug, Clone)]
pub struct AnchoredRegex {
    source: String,
    regex: Regex,
}

impl AnchoredRegex {
    /// Compile `source` anchored at both ends; the error is the regex crate's
    /// explanation.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The expression as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for AnchoredRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for AnchoredRegex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// One `headers` entry or one `headerMatches` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderRequirement {
    /// Lower-case header name.
    pub name: String,
    /// `None`: the header must be present; `Some`: present with this exact value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One entry of `rules.http`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<AnchoredRegex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<AnchoredRegex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<AnchoredRegex>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderRequirement>,
}

/// What an HTTP rule looks at in a request.
pub trait HttpRequestView {
    fn method(&self) -> &str;
    /// The request target as sent: path and query.
    fn path(&self) -> &str;
    /// The `Host` header (or the URI authority), without changes.
    fn host(&self) -> Option<&str>;
    /// Every value of the header named `name` (lower case).
    fn header_values(&self, name: &str) -> Vec<&str>;
}

/// A request given as plain values (`porin policy trace`, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// (lower-case name, value)
    pub headers: Vec<(String, String)>,
}

impl HttpRequestView for HttpRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl HeaderRequirement {
    /// Parse a `headers` entry: `Name` or `Name: value` (value trimmed).
    pub fn parse(entry: &str) -> Option<Self> {
        let (name, value) = match entry.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_owned())),
            None => (entry.trim(), None),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        Some(Self {
            name: name.to_ascii_lowercase(),
            value,
        })
    }

    pub fn matches(&self, request: &dyn HttpRequestView) -> bool {
        let values = request.header_values(&self.name);
        match &self.value {
            None => !values.is_empty(),
            Some(want) => values.iter().any(|v| v == want),
        }
    }
}

impl HttpRule {
    /// Whether every field of the rule matches `request`.
    pub fn matches(&self, request: &dyn HttpRequestView) -> bool {
        let field = |re: &Option<AnchoredRegex>, value: Option<&str>| match re {
            None => true,
            Some(re) => value.is_some_and(|v| re.is_match(v)),
        };
        field(&self.method, Some(request.method()))
            && field(&self.path, Some(request.path()))
            && field(&self.host, request.host())
            && self.headers.iter().all(|h| h.matches(request))
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = &self.method {
            parts.push(format!("method {}", m.as_str()));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path {}", p.as_str()));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host {}", h.as_str()));
        }
        for h in &self.headers {
            match &h.value {
                Some(v) => parts.push(format!("header {}: {v}", h.name)),
                None => parts.push(format!("header {}", h.name)),
            }
        }
        if parts.is_empty() {
            return f.write_str("any request");
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Option<AnchoredRegex> {
        Some(AnchoredRegex::new(s).expect("regex"))
    }

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            path: path.into(),
            host: Some("admin.payments:8080".into()),
            headers: vec![("x-team".into(), "ops".into())],
        }
    }

    #[test]
    fn method_and_path_are_anchored() {
        let rule = HttpRule {
            method: re("GET"),
            path: re("/metrics"),
            ..HttpRule::default()
        };
        assert!(rule.matches(&get("/metrics")));
        assert!(!rule.matches(&get("/metrics/extra")));
        assert!(!rule.matches(&get("/api/metrics")));
        // Envoy's :path carries the query: it is part of what must match.
        assert!(!rule.matches(&get("/metrics?x=1")));
        let post = HttpRequest {
            method: "POST".into(),
            ..get("/metrics")
        };
        assert!(!rule.matches(&post));
        // `GETX` is not `GET`.
        let getx = HttpRequest {
            method: "GETX".into(),
            ..get("/metrics")
        };
        assert!(!rule.matches(&getx));
    }

    #[test]
    fn regexes_alternate_inside_the_anchors() {
        let rule = HttpRule {
            method: re("GET|HEAD"),
            path: re("/public/.*"),
            ..HttpRule::default()
        };
        assert!(rule.matches(&get("/public/a/b")));
        let head = HttpRequest {
            method: "HEAD".into(),
            ..get("/public/x")
        };
        assert!(rule.matches(&head));
        assert!(!rule.matches(&get("/private/public/x")));
    }

    #[test]
    fn host_and_headers() {
        let rule = HttpRule {
            host: re(r"admin\.payments(:8080)?"),
            headers: vec![
                HeaderRequirement::parse("X-Team: ops").expect("header"),
                HeaderRequirement::parse("X-Team").expect("header"),
            ],
            ..HttpRule::default()
        };
        assert!(rule.matches(&get("/")));
        let other_team = HttpRequest {
            headers: vec![("x-team".into(), "dev".into())],
            ..get("/")
        };
        assert!(!rule.matches(&other_team));
        let no_host = HttpRequest {
            host: None,
            ..get("/")
        };
        assert!(!rule.matches(&no_host));
    }

    #[test]
    fn an_empty_rule_matches_every_request() {
        assert!(HttpRule::default().matches(&get("/anything")));
        assert_eq!(HttpRule::default().to_string(), "any request");
    }

    #[test]
    fn header_entries_parse_like_cilium() {
        assert_eq!(
            HeaderRequirement::parse("X-Token:  abc "),
            Some(HeaderRequirement {
                name: "x-token".into(),
                value: Some("abc".into())
            })
        );
        assert_eq!(HeaderRequirement::parse(""), None);
        assert_eq!(HeaderRequirement::parse("bad name: 1"), None);
    }
}
