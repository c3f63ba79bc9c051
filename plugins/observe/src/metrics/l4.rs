//! `tcp`, `port-distribution` and `icmp`: layer 4 of forwarded flows.

use hubble_proto::flow::{self as pb, Flow, layer4::Protocol};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{ContextOptions, Handler, Labels, family, is_policy_verdict, with_context};

/// Forwarded, and not a policy verdict (which repeats its connection's trace event).
fn forwarded(flow: &Flow) -> bool {
    (flow.verdict == pb::Verdict::Forwarded as i32
        || flow.verdict == pb::Verdict::Redirected as i32)
        && !is_policy_verdict(flow)
}

fn l4(flow: &Flow) -> Option<&Protocol> {
    flow.l4.as_ref()?.protocol.as_ref()
}

/// `hubble_tcp_flags_total{flag,family,...}`: SYN, SYN-ACK, FIN and RST of
/// forwarded TCP flows.
pub struct TcpHandler {
    flags: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl TcpHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let flags = Family::default();
        registry.register("hubble_tcp_flags", "TCP flag occurrences", flags.clone());
        ctx.watch(&flags);
        Self { flags, ctx }
    }
}

impl Handler for TcpHandler {
    fn name(&self) -> &'static str {
        "hubble_tcp_flags"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        if !forwarded(flow) {
            return;
        }
        let (Some(Protocol::Tcp(tcp)), Some(family)) = (l4(flow), family(flow)) else {
            return;
        };
        let Some(f) = tcp.flags.as_ref() else {
            return;
        };
        let seen = [
            (f.fin, "FIN"),
            (f.syn && f.ack, "SYN-ACK"),
            (f.syn && !f.ack, "SYN"),
            (f.rst, "RST"),
        ];
        for (_, flag) in seen.iter().filter(|(on, _)| *on) {
            let labels = with_context(
                &[("flag", flag.to_string()), ("family", family.to_string())],
                &self.ctx,
                flow,
                extra,
            );
            self.flags.get_or_create(&labels).inc();
        }
    }
}

/// `hubble_port_distribution_total{protocol,port,...}`: destination ports of
/// forwarded requests (replies are not counted; ICMP counts as port 0).
pub struct PortHandler {
    ports: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl PortHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let ports = Family::default();
        registry.register(
            "hubble_port_distribution",
            "Numbers of packets distributed by destination port",
            ports.clone(),
        );
        ctx.watch(&ports);
        Self { ports, ctx }
    }
}

impl Handler for PortHandler {
    fn name(&self) -> &'static str {
        "hubble_port_distribution"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        if !forwarded(flow) || flow.is_reply.as_ref().is_some_and(|r| r.value) {
            return;
        }
        let (protocol, port) = match l4(flow) {
            Some(Protocol::Tcp(t)) => ("TCP", t.destination_port),
            Some(Protocol::Udp(u)) => ("UDP", u.destination_port),
            Some(Protocol::IcmPv4(_)) => ("ICMPv4", 0),
            Some(Protocol::IcmPv6(_)) => ("ICMPv6", 0),
            _ => return,
        };
        let labels = with_context(
            &[
                ("protocol", protocol.to_string()),
                ("port", port.to_string()),
            ],
            &self.ctx,
            flow,
            extra,
        );
        self.ports.get_or_create(&labels).inc();
    }
}

/// `hubble_icmp_total{family,type,...}`: ICMP messages by type name.
pub struct IcmpHandler {
    messages: Family<Labels, Counter>,
    ctx: ContextOptions,
}

impl IcmpHandler {
    pub fn register(registry: &mut Registry, ctx: ContextOptions) -> Self {
        let messages = Family::default();
        registry.register("hubble_icmp", "Number of ICMP messages", messages.clone());
        ctx.watch(&messages);
        Self { messages, ctx }
    }
}

impl Handler for IcmpHandler {
    fn name(&self) -> &'static str {
        "hubble_icmp"
    }

    fn process_with(&self, flow: &Flow, extra: &[(String, String)]) {
        let (family, name) = match l4(flow) {
            Some(Protocol::IcmPv4(i)) => ("IPv4", icmpv4_type(i.r#type)),
            Some(Protocol::IcmPv6(i)) => ("IPv6", icmpv6_type(i.r#type)),
            _ => return,
        };
        let labels = with_context(
            &[("family", family.to_string()), ("type", name)],
            &self.ctx,
            flow,
            extra,
        );
        self.messages.get_or_create(&labels).inc();
    }
}

/// ICMPv4 type names as Hubble prints them.
pub fn icmpv4_type(t: u32) -> String {
    let name = match t {
        0 => "EchoReply",
        3 => "DestinationUnreachable",
        4 => "SourceQuench",
        5 => "Redirect",
        8 => "EchoRequest",
        9 => "RouterAdvertisement",
        10 => "RouterSolicitation",
        11 => "TimeExceeded",
        12 => "ParameterProblem",
        13 => "TimestampRequest",
        14 => "TimestampReply",
        15 => "InfoRequest",
        16 => "InfoReply",
        17 => "AddressMaskRequest",
        18 => "AddressMaskReply",
        other => return other.to_string(),
    };
    name.to_string()
}

/// ICMPv6 type names as Hubble prints them.
pub fn icmpv6_type(t: u32) -> String {
    let name = match t {
        1 => "DestinationUnreachable",
        2 => "PacketTooBig",
        3 => "TimeExceeded",
        4 => "ParameterProblem",
        128 => "EchoRequest",
        129 => "EchoReply",
        133 => "RouterSolicitation",
        134 => "RouterAdvertisement",
        135 => "NeighborSolicitation",
        136 => "NeighborAdvertisement",
        137 => "Redirect",
        other => return other.to_string(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricSpec;
    use crate::metrics::testing::{dropped, flow_between, has_line, scrape};

    fn ctx(text: &str) -> ContextOptions {
        ContextOptions::from_spec(&MetricSpec::parse(text).expect("spec"))
    }

    fn with_flags(flags: pb::TcpFlags) -> Flow {
        let mut f = flow_between();
        if let Some(Protocol::Tcp(t)) = f.l4.as_mut().and_then(|l| l.protocol.as_mut()) {
            t.flags = Some(flags);
        }
        f
    }

    fn icmp(v6: bool, t: u32) -> Flow {
        let mut f = flow_between();
        f.l4 = Some(pb::Layer4 {
            protocol: Some(if v6 {
                Protocol::IcmPv6(pb::IcmPv6 { r#type: t, code: 0 })
            } else {
                Protocol::IcmPv4(pb::IcmPv4 { r#type: t, code: 0 })
            }),
        });
        f
    }

    #[test]
    fn tcp_flags_of_forwarded_flows() {
        let mut registry = Registry::default();
        let h = TcpHandler::register(&mut registry, ctx("tcp:destinationContext=ip"));
        h.process(&flow_between()); // SYN
        h.process(&with_flags(pb::TcpFlags {
            syn: true,
            ack: true,
            ..Default::default()
        }));
        h.process(&with_flags(pb::TcpFlags {
            fin: true,
            rst: true,
            ..Default::default()
        }));
        h.process(&with_flags(pb::TcpFlags {
            ack: true,
            ..Default::default()
        }));
        h.process(&dropped(pb::DropReason::PolicyDenied)); // a dropped SYN
        let text = scrape(&registry);
        for flag in ["SYN", "SYN-ACK", "FIN", "RST"] {
            let line = format!(
                "hubble_tcp_flags_total{{flag=\"{flag}\",family=\"IPv4\",destination=\"1.1.1.1\"}} 1"
            );
            assert!(has_line(&text, &line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("hubble_tcp_flags_total{").count(), 4);
    }

    #[test]
    fn ports_of_forwarded_requests() {
        let mut registry = Registry::default();
        let h = PortHandler::register(&mut registry, ctx("port-distribution"));
        h.process(&flow_between());
        let mut reply = flow_between();
        reply.is_reply = Some(hubble_proto::BoolValue { value: true });
        h.process(&reply);
        h.process(&dropped(pb::DropReason::PolicyDenied));
        h.process(&icmp(false, 8));
        let text = scrape(&registry);
        assert!(has_line(
            &text,
            "hubble_port_distribution_total{protocol=\"TCP\",port=\"443\"} 1"
        ));
        assert!(has_line(
            &text,
            "hubble_port_distribution_total{protocol=\"ICMPv4\",port=\"0\"} 1"
        ));
        assert_eq!(text.matches("hubble_port_distribution_total{").count(), 2);
    }

    #[test]
    fn icmp_by_family_and_type_name() {
        let mut registry = Registry::default();
        let h = IcmpHandler::register(&mut registry, ctx("icmp:sourceContext=pod"));
        h.process(&icmp(false, 8));
        h.process(&icmp(false, 8));
        h.process(&icmp(true, 129));
        h.process(&icmp(false, 200));
        h.process(&flow_between());
        let text = scrape(&registry);
        for line in [
            "hubble_icmp_total{family=\"IPv4\",type=\"EchoRequest\",source=\"shop/web-1\"} 2",
            "hubble_icmp_total{family=\"IPv6\",type=\"EchoReply\",source=\"shop/web-1\"} 1",
            "hubble_icmp_total{family=\"IPv4\",type=\"200\",source=\"shop/web-1\"} 1",
        ] {
            assert!(has_line(&text, line), "missing {line} in\n{text}");
        }
    }
}
