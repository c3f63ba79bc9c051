//! `porin observe`: flows from every agent's Hubble API, in Hubble's formats.
//! Filtering happens on the server: the flags become `FlowFilter`s.

use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, ValueEnum};
use porin_observe::flow::{
    MESSAGE_TYPE_DROP, MESSAGE_TYPE_POLICY_VERDICT, MESSAGE_TYPE_TRACE, TRACE_FROM_LXC,
    TRACE_TO_LXC,
};
use porin_observe::hubble_proto::flow::{
    EventTypeFilter, FlowFilter, IpVersion, TrafficDirection, Verdict,
};
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::hubble_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use porin_observe::hubble_proto::relay::NodeState;
use porin_observe::l7_flow::MESSAGE_TYPE_ACCESS_LOG;
use porin_observe::{ClientTls, HubbleAddress, format_compact};
use time_flag::parse_time;
use tokio::sync::mpsc;

use super::discover::AgentTarget;

/// `-o` of `porin observe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ObserveFormat {
    #[default]
    Compact,
    Json,
}

/// Hubble's filter flags.
#[derive(Debug, Clone, Args, Default)]
pub struct ObserveArgs {
    /// Show the last N flows of each node (default 20; 0 with --follow shows only new ones).
    #[arg(long)]
    pub last: Option<u64>,
    /// Keep printing new flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show the first N flows of each node's buffer (not with --last or --follow).
    #[arg(long, conflicts_with_all = ["last", "follow"])]
    pub first: Option<u64>,
    /// Flows since this time: a duration ago (`30s`, `5m`, `2h`, `1d`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Flows until this time: a duration ago (`30s`, `5m`, `2h`, `1d`) or RFC 3339.
    #[arg(long)]
    pub until: Option<String>,
    /// Exclude, rather than select, the flows the next filter flag matches
    /// (`--not --namespace kube-system`); may be repeated.
    #[arg(long = "not")]
    pub not: bool,
    /// The filter flags `--not` applies to (the command line is rewritten into these).
    #[arg(long = "not-filter", hide = true)]
    pub not_filter: Vec<String>,
    /// Only flows from or to this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only flows from or to this pod (`[namespace/]name-prefix`).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows from this pod (`[namespace/]name-prefix`).
    #[arg(long)]
    pub from_pod: Option<String>,
    /// Only flows to this pod (`[namespace/]name-prefix`).
    #[arg(long)]
    pub to_pod: Option<String>,
    /// Only flows with this verdict (FORWARDED, DROPPED).
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only flows of this L4 protocol (tcp, udp, icmp) or L7 protocol (dns, http).
    #[arg(long)]
    pub protocol: Option<String>,
    /// Only flows from or to an address resolved from this name through the DNS proxy
    /// (`*` matches any run of characters: `*.amazonaws.com`).
    #[arg(long)]
    pub fqdn: Option<String>,
    /// Only flows from an address resolved from this name.
    #[arg(long, visible_alias = "src-fqdn")]
    pub from_fqdn: Option<String>,
    /// Only flows to an address resolved from this name.
    #[arg(long, visible_alias = "dst-fqdn")]
    pub to_fqdn: Option<String>,
    /// Only flows from or to this port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only flows from this port.
    #[arg(long)]
    pub from_port: Option<u16>,
    /// Only flows to this port.
    #[arg(long)]
    pub to_port: Option<u16>,
    /// Only flows from this namespace.
    #[arg(long)]
    pub from_namespace: Option<String>,
    /// Only flows to this namespace.
    #[arg(long)]
    pub to_namespace: Option<String>,
    /// Only flows from or to this IP address or CIDR.
    #[arg(long)]
    pub ip: Option<String>,
    /// Only flows from this IP address or CIDR.
    #[arg(long)]
    pub from_ip: Option<String>,
    /// Only flows to this IP address or CIDR.
    #[arg(long)]
    pub to_ip: Option<String>,
    /// Only flows from or to endpoints with these labels (`k8s:app=web,tier`).
    #[arg(short = 'l', long)]
    pub label: Option<String>,
    /// Only flows from endpoints with these labels.
    #[arg(long)]
    pub from_label: Option<String>,
    /// Only flows to endpoints with these labels.
    #[arg(long)]
    pub to_label: Option<String>,
    /// Only flows from or to this security identity.
    #[arg(long)]
    pub identity: Option<u32>,
    /// Only flows from this security identity.
    #[arg(long)]
    pub from_identity: Option<u32>,
    /// Only flows to this security identity.
    #[arg(long)]
    pub to_identity: Option<u32>,
    /// Only flows seen on this node (`*` matches any run of characters).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Only flows in this direction (ingress, egress).
    #[arg(long)]
    pub traffic_direction: Option<String>,
    /// Only flows of this IP version (4 or 6, also v4, v6).
    #[arg(long)]
    pub ip_version: Option<String>,
    /// Only the flow with this uuid.
    #[arg(long)]
    pub uuid: Option<String>,
    /// Only these events: `drop`, `trace`, `trace:to-endpoint`, `trace:from-endpoint`, `l7`,
    /// `policy-verdict`.
    #[arg(short = 't', long = "type")]
    pub event_type: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ObserveFormat,
    /// A Hubble API to read instead of the discovered agents': a unix socket or host:port.
    #[arg(long)]
    pub server: Option<String>,
    /// Talk TLS to --server (host:port).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the server's certificate must chain to (repeatable, or
    /// comma-separated; default: none, so give the CA of a private PKI).
    #[arg(long, value_delimiter = ',', requires = "tls")]
    pub tls_ca_cert_files: Vec<std::path::PathBuf>,
    /// Client certificate (PEM) for servers that require one.
    #[arg(long, requires_all = ["tls", "tls_client_key_file"])]
    pub tls_client_cert_file: Option<std::path::PathBuf>,
    /// The key of --tls-client-cert-file (PEM).
    #[arg(long, requires_all = ["tls", "tls_client_cert_file"])]
    pub tls_client_key_file: Option<std::path::PathBuf>,
    /// The name expected in the server's certificate (default: the host dialled).
    #[arg(long, requires = "tls")]
    pub tls_server_name: Option<String>,
}

impl ObserveArgs {
    /// The request the flags stand for.
    pub fn request(&self) -> Result<GetFlowsRequest> {
        let now = SystemTime::now();
        let since = match &self.since {
            Some(s) => Some(parse_time("--since", s, now)?),
            None => None,
        };
        let until = match &self.until {
            Some(u) => Some(parse_time("--until", u, now)?),
            None => None,
        };
        if self.first.is_some() && (self.last.is_some() || self.follow) {
            bail!("--first cannot be combined with --last or --follow");
        }
        let number = match (self.first.or(self.last), self.follow, since.is_some()) {
            (Some(n), _, _) => n,
            (None, true, _) | (None, _, true) => 0,
            (None, false, false) => 20,
        };
        Ok(GetFlowsRequest {
            number,
            first: self.first.is_some(),
            follow: self.follow,
            blacklist: self.blacklist()?,
            whitelist: self.whitelist()?,
            since,
            until,
        })
    }

    /// The filters of the flags after `--not`, all together (their fields AND'ed).
    fn blacklist(&self) -> Result<Vec<FlowFilter>> {
        if self.not_filter.is_empty() {
            return Ok(Vec::new());
        }
        let line = negate::negated_command_line(&self.not_filter).map_err(anyhow::Error::msg)?;
        let negated = NegatedFlags::try_parse_from(&line)
            .map_err(|e| anyhow::anyhow!("--not {}: {}", self.not_filter.join(" "), e.kind()))?;
        let filters = negated.args.whitelist()?;
        if filters.is_empty() {
            bail!(
                "--not {}: not a filter flag (--not applies to --namespace, --pod, --verdict, ...)",
                self.not_filter.join(" ")
            );
        }
        Ok(filters)
    }

    /// Flags about both sides (`--namespace`, `--pod`, `--ip`, `--label`, `--port`,
    /// `--identity`) make two filters, one per side, OR'ed (Hubble's left and right
    /// filters); every other flag goes into both.
    fn whitelist(&self) -> Result<Vec<FlowFilter>> {
        let mut base = FlowFilter::default();
        if let Some(v) = &self.verdict {
            let verdict = Verdict::from_str_name(&v.to_ascii_uppercase())
                .with_context(|| format!("--verdict: unknown verdict `{v}`"))?;
            base.verdict.push(verdict as i32);
        }
        if let Some(d) = &self.traffic_direction {
            let direction = TrafficDirection::from_str_name(&d.to_ascii_uppercase())
                .filter(|d| *d != TrafficDirection::Unknown)
                .with_context(|| format!("--traffic-direction: `{d}` is not ingress or egress"))?;
            base.traffic_direction.push(direction as i32);
        }
        if let Some(v) = &self.ip_version {
            let version = match v.trim_start_matches(['v', 'V']) {
                "4" => IpVersion::IPv4,
                "6" => IpVersion::IPv6,
                _ => bail!("--ip-version: `{v}` is not 4 or 6"),
            };
            base.ip_version.push(version as i32);
        }
        if let Some(p) = &self.protocol {
            base.protocol.push(p.to_ascii_lowercase());
        }
        if let Some(t) = &self.event_type {
            base.event_type.push(event_type(t)?);
        }
        base.source_pod.extend(self.from_pod.clone());
        base.destination_pod.extend(self.to_pod.clone());
        base.source_pod
            .extend(self.from_namespace.as_ref().map(|n| format!("{n}/")));
        base.destination_pod
            .extend(self.to_namespace.as_ref().map(|n| format!("{n}/")));
        base.source_fqdn.extend(self.from_fqdn.clone());
        base.destination_fqdn.extend(self.to_fqdn.clone());
        base.source_ip.extend(self.from_ip.clone());
        base.destination_ip.extend(self.to_ip.clone());
        base.source_label.extend(self.from_label.clone());
        base.destination_label.extend(self.to_label.clone());
        base.source_port
            .extend(self.from_port.map(|p| p.to_string()));
        base.destination_port
            .extend(self.to_port.map(|p| p.to_string()));
        base.source_identity.extend(self.from_identity);
        base.destination_identity.extend(self.to_identity);
        base.node_name.extend(self.node_name.clone());
        base.uuid.extend(self.uuid.clone());

        let pod = match (&self.namespace, &self.pod) {
            (Some(ns), Some(p)) if !p.contains('/') => Some(format!("{ns}/{p}")),
            (_, Some(p)) => Some(p.clone()),
            (Some(ns), None) => Some(format!("{ns}/")),
            (None, None) => None,
        };
        let mut left = base.clone();
        let mut right = base;
        let mut either = false;
        let mut side = |l: &mut Vec<String>, r: &mut Vec<String>, value: Option<String>| {
            if let Some(v) = value {
                l.push(v.clone());
                r.push(v);
                either = true;
            }
        };
        side(&mut left.source_pod, &mut right.destination_pod, pod);
        side(
            &mut left.source_ip,
            &mut right.destination_ip,
            self.ip.clone(),
        );
        side(
            &mut left.source_label,
            &mut right.destination_label,
            self.label.clone(),
        );
        side(
            &mut left.source_fqdn,
            &mut right.destination_fqdn,
            self.fqdn.clone(),
        );
        let port = self.port.map(|p| p.to_string());
        side(&mut left.source_port, &mut right.destination_port, port);
        if let Some(id) = self.identity {
            left.source_identity.push(id);
            right.destination_identity.push(id);
            either = true;
        }
        if either {
            Ok(vec![left, right])
        } else if left == FlowFilter::default() {
            Ok(vec![])
        } else {
            Ok(vec![left])
        }
    }
}

fn event_type(text: &str) -> Result<EventTypeFilter> {
    let (kind, sub) = text.split_once(':').unwrap_or((text, ""));
    let r#type = match kind {
        "drop" => MESSAGE_TYPE_DROP,
        "trace" => MESSAGE_TYPE_TRACE,
        "l7" => MESSAGE_TYPE_ACCESS_LOG,
        "policy-verdict" => MESSAGE_TYPE_POLICY_VERDICT,
        other => bail!("--type: unknown event type `{other}` (drop, trace, l7, policy-verdict)"),
    };
    let sub_type = match (kind, sub) {
        (_, "") => None,
        ("trace", "to-endpoint") => Some(TRACE_TO_LXC),
        ("trace", "from-endpoint") => Some(TRACE_FROM_LXC),
        _ => bail!("--type: unknown sub-type `{sub}` of `{kind}`"),
    };
    Ok(EventTypeFilter {
        r#type,
        match_sub_type: sub_type.is_some(),
        sub_type: sub_type.unwrap_or(0),
    })
}

/// The flags after `--not`, parsed on their own.
#[derive(Debug, Parser)]
#[command(name = "observe")]
struct NegatedFlags {
    #[command(flatten)]
    args: ObserveArgs,
}

/// Print flows from all targets; returns when every server is done (or never with --follow).
pub async fn observe(targets: &[AgentTarget], args: &ObserveArgs) -> Result<()> {
    let servers: Vec<HubbleAddress> = match &args.server {
        Some(s) => vec![HubbleAddress::parse(s)],
        None => targets
            .iter()
            .map(|t| HubbleAddress::Unix(t.hubble_socket.clone()))
            .collect(),
    };
    let request = args.request()?;
    let tls = args.tls.then(|| ClientTls {
        ca_files: args.tls_ca_cert_files.clone(),
        cert_file: args.tls_client_cert_file.clone(),
        key_file: args.tls_client_key_file.clone(),
        server_name: args.tls_server_name.clone(),
    });
    let (tx, mut rx) = mpsc::channel::<GetFlowsResponse>(1024);
    for server in servers {
        let mut client = server.observer_with(tls.as_ref()).await?;
        let mut stream = client
            .get_flows(request.clone())
            .await
            .with_context(|| format!("GetFlows on {server}"))?
            .into_inner();
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("{server}: {}", e.message());
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    // Without --follow, merge the nodes' backlogs in time order.
    let mut backlog = Vec::new();
    while let Some(response) = rx.recv().await {
        if args.follow {
            print_response(&response, args.output)?;
        } else {
            backlog.push(response);
        }
    }
    backlog.sort_by_key(|r| r.time.map(|t| (t.seconds, t.nanos)));
    for response in &backlog {
        print_response(response, args.output)?;
    }
    Ok(())
}

/// Print one response; a closed stdout (`porin observe | head`) ends the command quietly.
fn print_response(response: &GetFlowsResponse, format: ObserveFormat) -> Result<()> {
    use std::io::Write;
    let line = match (format, &response.response_types) {
        (ObserveFormat::Json, _) => porin_observe::hubble_proto::to_protojson(response)?,
        (ObserveFormat::Compact, Some(ResponseTypes::Flow(flow))) => format_compact(flow),
        (ObserveFormat::Compact, Some(ResponseTypes::LostEvents(lost))) => format!(
            "EVENTS LOST: {} events lost on {}",
            lost.num_events_lost, response.node_name
        ),
        (ObserveFormat::Compact, Some(ResponseTypes::NodeStatus(status))) => format!(
            "{}: {} {}",
            NodeState::try_from(status.state_change)
                .map_or("UNKNOWN_NODE_STATE", |s| s.as_str_name()),
            status.node_names.join(", "),
            status.message
        ),
        (ObserveFormat::Compact, None) => return Ok(()),
    };
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod filter_table;
pub mod negate;
mod time_flag;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_hubble_filters() {
        let args = ObserveArgs {
            pod: Some("web".into()),
            namespace: Some("shop".into()),
            verdict: Some("dropped".into()),
            event_type: Some("trace:to-endpoint".into()),
            ..ObserveArgs::default()
        };
        let req = args.request().expect("request");
        assert_eq!(req.number, 20);
        assert_eq!(req.whitelist.len(), 2);
        assert_eq!(req.whitelist[0].source_pod, vec!["shop/web"]);
        assert_eq!(req.whitelist[1].destination_pod, vec!["shop/web"]);
        for f in &req.whitelist {
            assert_eq!(f.verdict, vec![Verdict::Dropped as i32]);
            assert_eq!(f.event_type[0].sub_type, TRACE_TO_LXC);
            assert!(f.event_type[0].match_sub_type);
        }
        let verdicts = ObserveArgs {
            event_type: Some("policy-verdict".into()),
            ..ObserveArgs::default()
        };
        let req = verdicts.request().expect("request");
        assert_eq!(req.whitelist[0].event_type[0].r#type, 5);
        assert!(!req.whitelist[0].event_type[0].match_sub_type);
        let from_to = ObserveArgs {
            from_pod: Some("tools/client".into()),
            to_pod: Some("shop/web".into()),
            since: Some("5m".into()),
            ..ObserveArgs::default()
        };
        let req = from_to.request().expect("request");
        assert_eq!((req.number, req.since.is_some()), (0, true));
        assert_eq!(req.whitelist.len(), 1);
        assert_eq!(req.whitelist[0].source_pod, vec!["tools/client"]);
        assert_eq!(req.whitelist[0].destination_pod, vec!["shop/web"]);
        let fqdn = NegatedFlags::try_parse_from(["observe", "--dst-fqdn", "*.example.com"])
            .expect("--dst-fqdn parses")
            .args
            .request()
            .expect("request");
        assert_eq!(fqdn.whitelist[0].destination_fqdn, vec!["*.example.com"]);
        let either = ObserveArgs {
            fqdn: Some("api.example.com".into()),
            ..ObserveArgs::default()
        };
        let req = either.request().expect("request");
        assert_eq!(req.whitelist[0].source_fqdn, vec!["api.example.com"]);
        assert_eq!(req.whitelist[1].destination_fqdn, vec!["api.example.com"]);
        assert!(
            ObserveArgs {
                verdict: Some("maybe".into()),
                ..ObserveArgs::default()
            }
            .request()
            .is_err()
        );
        assert!(
            ObserveArgs {
                since: Some("5y".into()),
                ..ObserveArgs::default()
            }
            .request()
            .is_err()
        );
        assert!(
            ObserveArgs::default()
                .request()
                .expect("request")
                .whitelist
                .is_empty()
        );
    }
}
