//! `toPorts` (Cilium) and `ports` (Kubernetes).

use serde_json::Value;

use super::walk::{Cx, index, join};
use crate::model::{L7Rules, Port, PortProtocol, PortRule, Protocol};

/// Cilium `toPorts`: `[{ports: [...], rules: {http, dns}}]`.
pub fn to_ports(cx: &mut Cx, v: &Value, path: &str, allow_l7: bool) -> Vec<PortRule> {
    let mut out = Vec::new();
    for (i, item) in cx.list(v, path).unwrap_or_default().iter().enumerate() {
        let ipath = index(path, i);
        let Some(map) = cx.object(item, &ipath, &["ports", "rules"]) else {
            continue;
        };
        let ports = map
            .get("ports")
            .map(|p| ports(cx, p, &join(&ipath, "ports"), Style::Cilium))
            .unwrap_or_default();
        let l7 = match map.get("rules") {
            Some(_) if !allow_l7 => {
                cx.error(
                    &join(&ipath, "rules"),
                    "L7 rules are not allowed in deny rules",
                );
                L7Rules::default()
            }
            Some(r) => l7_rules(cx, r, &join(&ipath, "rules")),
            None => L7Rules::default(),
        };
        out.push(PortRule { ports, l7 });
    }
    out
}

fn l7_rules(cx: &mut Cx, v: &Value, path: &str) -> L7Rules {
    let mut out = L7Rules::default();
    let Some(map) = cx.object(v, path, &["http", "dns"]) else {
        return out;
    };
    if let Some(http) = map.get("http") {
        out.http = super::http::http_rules(cx, http, &join(path, "http"));
    }
    if let Some(dns) = map.get("dns") {
        out.dns = cx
            .list(dns, &join(path, "dns"))
            .unwrap_or_default()
            .to_vec();
    }
    out
}

/// Which schema a port entry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `port` is a string, protocols include ICMP and ANY.
    Cilium,
    /// `port` is an integer or a name, protocols TCP, UDP, SCTP.
    Kubernetes,
}

/// A list of `{port, endPort, protocol}`.
pub fn ports(cx: &mut Cx, v: &Value, path: &str, style: Style) -> Vec<PortProtocol> {
    let mut out = Vec::new();
    for (i, item) in cx.list(v, path).unwrap_or_default().iter().enumerate() {
        if let Some(p) = port_protocol(cx, item, &index(path, i), style) {
            out.push(p);
        }
    }
    out
}

fn port_protocol(cx: &mut Cx, v: &Value, path: &str, style: Style) -> Option<PortProtocol> {
    let map = cx.object(v, path, &["port", "endPort", "protocol"])?;
    let ppath = join(path, "protocol");
    let protocol = match map.get("protocol") {
        None => Some(if style == Style::Cilium {
            Protocol::Any
        } else {
            Protocol::Tcp
        }),
        Some(p) => {
            let p = cx.string(p, &ppath)?;
            match Protocol::parse(p) {
                Some(Protocol::Icmp | Protocol::Any) if style == Style::Kubernetes => None,
                parsed => parsed,
            }
            .or_else(|| {
                let expected = match style {
                    Style::Cilium => "TCP, UDP, SCTP, ICMP or ANY",
                    Style::Kubernetes => "TCP, UDP or SCTP",
                };
                cx.error(
                    &ppath,
                    format!("invalid protocol {p:?} (expected {expected})"),
                );
                None
            })
        }
    };
    let port_path = join(path, "port");
    let port = match map.get("port") {
        None => Some(Port::Any),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(0) => Some(Port::Any),
            Some(n) => Some(Port::Range { start: n, end: n }),
            None => {
                cx.error(&port_path, format!("invalid port {n} (expected 0-65535)"));
                None
            }
        },
        Some(Value::String(s)) => parse_port(s).or_else(|| {
            cx.error(&port_path, format!("invalid port {s:?}"));
            None
        }),
        Some(other) => {
            cx.error(&port_path, format!("invalid port {other}"));
            None
        }
    };
    let end_path = join(path, "endPort");
    let port = match (port, map.get("endPort")) {
        (port, None) => port,
        (Some(Port::Range { start, .. }), Some(end)) => {
            match end.as_u64().and_then(|e| u16::try_from(e).ok()) {
                Some(e) if e >= start => Some(Port::Range { start, end: e }),
                Some(e) => {
                    cx.error(&end_path, format!("endPort {e} is lower than port {start}"));
                    None
                }
                None => {
                    cx.error(
                        &end_path,
                        format!("invalid endPort {end} (expected 1-65535)"),
                    );
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            cx.error(&end_path, "endPort needs a numeric port");
            None
        }
        (None, Some(_)) => None,
    };
    Some(PortProtocol {
        port: port?,
        protocol: protocol?,
    })
}

/// `"443"`, `"0"` (any) or a named port (`http`, `dns-tcp`: IANA service name).
fn parse_port(s: &str) -> Option<Port> {
    if let Ok(n) = s.parse::<u16>() {
        return Some(if n == 0 {
            Port::Any
        } else {
            Port::Range { start: n, end: n }
        });
    }
    let valid_name = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    valid_name.then(|| Port::Named(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_names_and_defaults() {
        let mut cx = Cx::default();
        let p = ports(
            &mut cx,
            &json!([{"port": "8000", "endPort": 8100, "protocol": "TCP"}, {"port": "http"}, {"port": "0", "protocol": "UDP"}]),
            "p",
            Style::Cilium,
        );
        assert!(cx.problems.is_empty(), "{:?}", cx.problems);
        assert_eq!(
            p[0].port,
            Port::Range {
                start: 8000,
                end: 8100
            }
        );
        assert_eq!(p[1].port, Port::Named("http".into()));
        assert_eq!(p[1].protocol, Protocol::Any);
        assert_eq!(p[2].port, Port::Any);
    }

    #[test]
    fn every_bad_port_is_reported() {
        let mut cx = Cx::default();
        let p = ports(
            &mut cx,
            &json!([{"port": "abc!"}, {"port": 70000}, {"port": "80", "endPort": 79},
                    {"port": 53, "protocol": "ICMP"}]),
            "p",
            Style::Kubernetes,
        );
        assert!(p.is_empty());
        let got: Vec<String> = cx
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert_eq!(
            got,
            [
                "p[0].port: invalid port \"abc!\"",
                "p[1].port: invalid port 70000 (expected 0-65535)",
                "p[2].endPort: endPort 79 is lower than port 80",
                "p[3].protocol: invalid protocol \"ICMP\" (expected TCP, UDP or SCTP)",
            ]
        );
    }
}
