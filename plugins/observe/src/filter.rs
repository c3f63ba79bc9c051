//! Hubble's flow filter semantics: a flow is kept when it matches any whitelist
//! filter (or there is none) and no blacklist filter. Within one filter every set
//! field must match (AND); the values of one field are alternatives (OR).

use std::net::IpAddr;

use hubble_proto::flow::layer4::Protocol;
use hubble_proto::flow::{Endpoint, EventTypeFilter, Flow, FlowFilter};

/// Whether `flow` passes `whitelist - blacklist`.
pub fn keeps(whitelist: &[FlowFilter], blacklist: &[FlowFilter], flow: &Flow) -> bool {
    (whitelist.is_empty() || whitelist.iter().any(|f| matches(f, flow)))
        && !blacklist.iter().any(|f| matches(f, flow))
}

/// Whether every set field of `filter` matches `flow`.
pub fn matches(filter: &FlowFilter, flow: &Flow) -> bool {
    let (src_ip, dst_ip) = flow
        .ip
        .as_ref()
        .map(|ip| (ip.source.as_str(), ip.destination.as_str()))
        .unwrap_or(("", ""));
    let none = Endpoint::default();
    let src = flow.source.as_ref().unwrap_or(&none);
    let dst = flow.destination.as_ref().unwrap_or(&none);
    let (proto, sport, dport) = l4(flow);
    let l7 = l7_protocol(flow);
    any(&filter.uuid, |u| *u == flow.uuid)
        && any(&filter.source_ip, |p| ip_matches(p, src_ip))
        && any(&filter.destination_ip, |p| ip_matches(p, dst_ip))
        && any(&filter.source_fqdn, |p| fqdn_matches(p, &flow.source_names))
        && any(&filter.destination_fqdn, |p| {
            fqdn_matches(p, &flow.destination_names)
        })
        && any(&filter.source_pod, |p| pod_matches(p, src))
        && any(&filter.destination_pod, |p| pod_matches(p, dst))
        && any(&filter.source_label, |s| labels_match(s, &src.labels))
        && any(&filter.destination_label, |s| labels_match(s, &dst.labels))
        && any(&filter.source_identity, |i| *i == src.identity)
        && any(&filter.destination_identity, |i| *i == dst.identity)
        && any(&filter.verdict, |v| *v == flow.verdict)
        && any(&filter.traffic_direction, |d| *d == flow.traffic_direction)
        && any(&filter.event_type, |e| event_type_matches(e, flow))
        && any(&filter.protocol, |p| {
            protocol_matches(p, proto) || l7.is_some_and(|l7| p.eq_ignore_ascii_case(l7))
        })
        && any(&filter.source_port, |p| p.parse::<u32>().ok() == sport)
        && any(&filter.destination_port, |p| p.parse::<u32>().ok() == dport)
        && any(&filter.node_name, |p| glob(p, &flow.node_name))
        && any(&filter.reply, |r| {
            flow.is_reply.as_ref().is_some_and(|b| b.value == *r)
        })
        && any(&filter.ip_version, |v| {
            flow.ip.as_ref().is_some_and(|ip| ip.ip_version == *v)
        })
}

/// An empty list matches everything; otherwise one value must match.
fn any<T>(values: &[T], f: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(f)
}

fn l4(flow: &Flow) -> (&'static str, Option<u32>, Option<u32>) {
    match flow.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => ("tcp", Some(t.source_port), Some(t.destination_port)),
        Some(Protocol::Udp(u)) => ("udp", Some(u.source_port), Some(u.destination_port)),
        Some(Protocol::Sctp(s)) => ("sctp", Some(s.source_port), Some(s.destination_port)),
        Some(Protocol::IcmPv4(_)) => ("icmpv4", None, None),
        Some(Protocol::IcmPv6(_)) => ("icmpv6", None, None),
        None => ("", None, None),
    }
}

/// The L7 protocol of an L7 flow (`dns`, `http`), which Hubble's protocol filter
/// matches as well as the L4 one.
fn l7_protocol(flow: &Flow) -> Option<&'static str> {
    use hubble_proto::flow::layer7::Record;
    match flow.l7.as_ref()?.record.as_ref()? {
        Record::Dns(_) => Some("dns"),
        Record::Http(_) => Some("http"),
    }
}

fn protocol_matches(wanted: &str, proto: &str) -> bool {
    let wanted = wanted.to_ascii_lowercase();
    wanted == proto || (wanted == "icmp" && proto.starts_with("icmp"))
}

/// An FQDN pattern (`*` matches any run of characters, case-insensitive, trailing dot
/// optional) against the names of a flow's side.
fn fqdn_matches(pattern: &str, names: &[String]) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    names
        .iter()
        .any(|n| glob(&pattern, &n.trim_end_matches('.').to_ascii_lowercase()))
}

/// `1.2.3.4` exactly or `1.2.3.0/24`.
fn ip_matches(pattern: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    match pattern.split_once('/') {
        None => pattern.parse::<IpAddr>().is_ok_and(|p| p == ip),
        Some((net, len)) => match (net.parse::<IpAddr>(), len.parse::<u32>()) {
            (Ok(IpAddr::V4(n)), Ok(len)) if len <= 32 => match ip {
                IpAddr::V4(a) => {
                    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                    u32::from(a) & mask == u32::from(n) & mask
                }
                IpAddr::V6(_) => false,
            },
            (Ok(IpAddr::V6(n)), Ok(len)) if len <= 128 => match ip {
                IpAddr::V6(a) => {
                    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                    u128::from(a) & mask == u128::from(n) & mask
                }
                IpAddr::V4(_) => false,
            },
            _ => false,
        },
    }
}

/// `[namespace/]pod-name-prefix`; `namespace/` alone matches the whole namespace.
/// Without a namespace the prefix matches pods of any namespace.
fn pod_matches(pattern: &str, ep: &Endpoint) -> bool {
    if ep.pod_name.is_empty() && !pattern.ends_with('/') {
        return false;
    }
    match pattern.split_once('/') {
        Some((ns, prefix)) => ep.namespace == ns && ep.pod_name.starts_with(prefix),
        None => ep.pod_name.starts_with(pattern),
    }
}

/// A label selector: `key=value`, `key!=value`, `key`, `!key`, comma-separated
/// (all must hold). Keys may carry a source (`k8s:app`); without one any source
/// matches.
fn labels_match(selector: &str, labels: &[String]) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .all(|req| {
            if let Some(key) = req.strip_prefix('!') {
                return !labels.iter().any(|l| label_key_is(l, key));
            }
            if let Some((key, value)) = req.split_once("!=") {
                return !labels.iter().any(|l| label_is(l, key.trim(), value.trim()));
            }
            match req.split_once('=') {
                Some((key, value)) => {
                    let value = value.trim_start_matches('=');
                    labels.iter().any(|l| label_is(l, key.trim(), value.trim()))
                }
                None => labels.iter().any(|l| label_key_is(l, req)),
            }
        })
}

fn label_is(label: &str, key: &str, value: &str) -> bool {
    label
        .split_once('=')
        .is_some_and(|(k, v)| v == value && key_matches(k, key))
}

fn label_key_is(label: &str, key: &str) -> bool {
    key_matches(label.split_once('=').map_or(label, |(k, _)| k), key)
}

/// `k8s:app` matches `k8s:app`; `app` matches `app` under any source.
fn key_matches(label_key: &str, key: &str) -> bool {
    label_key == key
        || (!key.contains(':')
            && label_key
                .split_once(':')
                .is_some_and(|(_, bare)| bare == key))
}

fn event_type_matches(filter: &EventTypeFilter, flow: &Flow) -> bool {
    flow.event_type.as_ref().is_some_and(|e| {
        e.r#type == filter.r#type && (!filter.match_sub_type || e.sub_type == filter.sub_type)
    })
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests;
