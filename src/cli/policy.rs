//! `porin policy validate` and `porin policy trace`: offline, no agent (`porin policy get`
//! asks the agents: policy_get.rs).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use porin_policy::Enforcement;
use porin_policy::compute::{
    ConnectionFilter, Decision, L4, Peer, ResolvedAddress, Verdict, resolve_address, resolve_fqdn,
    trace,
};
use porin_policy::model::{HttpRequest, Label, Labels, NAMESPACE_LABELS, Policy, Protocol};
use porin_policy::parse::{PolicyError, parse_file};

use super::Target;
use super::output::Format;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policies each agent enforces, its policy revision and every invalid policy.
    Get {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Format,
        #[command(flatten)]
        target: Target,
    },
    /// Check policy files; print every problem with file, document and field.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Decide a connection offline: the source's egress and the destination's ingress.
    Trace(Box<TraceArgs>),
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Policy files (NetworkPolicy, CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy).
    #[arg(long = "policy", required = true, num_args = 1..)]
    policies: Vec<PathBuf>,
    /// Source labels, e.g. `k8s:app=web,k8s:io.kubernetes.pod.namespace=prod` or `reserved:world`,
    /// or an address outside the cluster (`1.2.3.4`, as --src-ip).
    #[arg(long)]
    src: Option<String>,
    /// Destination labels, or an address outside the cluster (`1.2.3.4`, as --dst-ip).
    #[arg(long)]
    dst: Option<String>,
    /// Destination port and protocol, e.g. `443/TCP`.
    #[arg(long)]
    dport: Option<String>,
    /// The source's address outside the cluster (implies `reserved:world` without --src).
    /// An address resolves to the identity the ipcache would give it: the longest prefix
    /// the policies reference that contains it, or `world`.
    #[arg(long, visible_alias = "src-ip")]
    src_cidr: Option<String>,
    /// The destination's address outside the cluster (see --src-cidr).
    #[arg(long, visible_alias = "dst-ip")]
    dst_cidr: Option<String>,
    /// The destination is an address of this DNS name, as the DNS proxy learns it: the
    /// identity of the first `toFQDNs` selector matching the name, or `world`.
    #[arg(long, conflicts_with_all = ["dst", "dst_cidr"])]
    dst_fqdn: Option<String>,
    /// A namespace's labels: `NS=k=v,k2=v2` (repeatable), added to pods of NS.
    #[arg(long = "namespace-labels")]
    namespace_labels: Vec<String>,
    /// A named port of the destination: `http=8080` (repeatable).
    #[arg(long = "dst-named-port")]
    named_ports: Vec<String>,
    /// An HTTP request on the connection, judged by the L7 rules as the proxy
    /// would (with --http-path).
    #[arg(long, requires = "http_path")]
    http_method: Option<String>,
    /// The request's path and query, e.g. `/metrics` (with --http-method).
    #[arg(long, requires = "http_method")]
    http_path: Option<String>,
    /// The request's Host header.
    #[arg(long, requires = "http_method")]
    http_host: Option<String>,
    /// A request header `Name: value` (repeatable).
    #[arg(long = "http-header", requires = "http_method")]
    http_headers: Vec<String>,
    /// Policy enforcement mode, as `[plugins.policy] enforcement`.
    #[arg(long, value_enum, default_value = "default")]
    enforcement: EnforcementArg,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EnforcementArg {
    Default,
    Always,
    Never,
}

pub fn run(command: PolicyCommand) -> Result<bool> {
    match command {
        PolicyCommand::Validate { files } => validate(&files),
        PolicyCommand::Trace(args) => run_trace(&args),
        // Queries an agent: dispatched with a runtime by the caller.
        PolicyCommand::Get { .. } => bail!("`porin policy get` needs the agent API"),
    }
}

fn load(files: &[PathBuf]) -> Result<(Vec<Policy>, Vec<PolicyError>)> {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let mut parsed = parse_file(&file.display().to_string(), &text);
        policies.append(&mut parsed.policies);
        problems.append(&mut parsed.problems);
    }
    Ok((policies, problems))
}

fn validate(files: &[PathBuf]) -> Result<bool> {
    let (policies, problems) = load(files)?;
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("{} policies OK", policies.len());
        Ok(true)
    } else {
        eprintln!("{} problem(s) found", problems.len());
        Ok(false)
    }
}

fn run_trace(args: &TraceArgs) -> Result<bool> {
    let (policies, problems) = load(&args.policies)?;
    if let Some(first) = problems.first() {
        bail!(
            "{} problem(s) in the policy files (run `porin policy validate`); first: {first}",
            problems.len()
        );
    }
    let ns_labels = namespace_labels(&args.namespace_labels)?;
    let mut addresses = Vec::new();
    let src = side_peer(
        &policies,
        Side {
            flag: "--src",
            name: "source",
            labels: args.src.as_deref(),
            cidr: args.src_cidr.as_deref(),
        },
        &ns_labels,
        &mut addresses,
    )?;
    let (dst, dst_fqdn) = match &args.dst_fqdn {
        Some(name) => {
            let (peer, resolved) = resolve_fqdn(&policies, name);
            (peer, Some(resolved))
        }
        None => (
            side_peer(
                &policies,
                Side {
                    flag: "--dst",
                    name: "destination",
                    labels: args.dst.as_deref(),
                    cidr: args.dst_cidr.as_deref(),
                },
                &ns_labels,
                &mut addresses,
            )?,
            None,
        ),
    };
    let mut l4 = L4 {
        port: args.dport.as_deref().map(parse_dport).transpose()?,
        named_ports: BTreeMap::new(),
        // Egress rules resolve names against the same ports (`--dst-named-port`).
        cluster_named_ports: BTreeMap::new(),
    };
    for np in &args.named_ports {
        let (name, port) = np
            .split_once('=')
            .context(format!("--dst-named-port {np:?}: expected NAME=PORT"))?;
        let port = port
            .parse()
            .context(format!("--dst-named-port {np:?}: invalid port"))?;
        l4.named_ports.insert(name.to_owned(), port);
    }
    let enforcement = match args.enforcement {
        EnforcementArg::Default => Enforcement::Default,
        EnforcementArg::Always => Enforcement::Always,
        EnforcementArg::Never => Enforcement::Never,
    };
    let mut result = trace(&policies, enforcement, &src, &dst, &l4);
    result.addresses = addresses;
    result.dst_fqdn = dst_fqdn;
    if let Some(request) = http_request(args)? {
        let http = ConnectionFilter::new(&policies, enforcement, &src, &dst, &l4).trace(&request);
        if http.verdict == Verdict::Denied {
            result.verdict = Verdict::Denied;
        }
        result.http = Some(http);
    }
    match args.output {
        Format::Json => super::output::print_json(&result)?,
        Format::Table => {
            println!("verdict: {:?}", result.verdict);
            if let Some(f) = &result.dst_fqdn {
                match &f.selector {
                    Some(s) => println!("destination {}: identity {} ({s:?})", f.name, f.identity),
                    None => println!("destination {}: no toFQDNs selector, world", f.name),
                }
            }
            for a in &result.addresses {
                let prefix = a.prefix.map_or("world".to_owned(), |p| p.to_string());
                println!(
                    "{} {}: identity {} ({prefix})",
                    a.side, a.address, a.identity
                );
            }
            print_side("egress (source)", &result.egress);
            print_side("ingress (destination)", &result.ingress);
            if let Some(h) = &result.http {
                println!("http {} {}: {:?}", h.method, h.path, h.verdict);
                println!("  egress: {:?} - {}", h.egress.verdict, h.egress.reason);
                println!("  ingress: {:?} - {}", h.ingress.verdict, h.ingress.reason);
            }
        }
    }
    Ok(true)
}

fn print_side(title: &str, d: &Decision) {
    println!("{title}: {:?} - {}", d.verdict, d.reason);
    for m in &d.matched {
        print!("  {} by {} {}", m.action, m.policy, m.rule);
        match &m.l7 {
            Some(l7) => println!(" ({l7})"),
            None => println!(),
        }
    }
    for n in &d.notes {
        println!("  note: {n}");
    }
}

/// The request of `--http-method`/`--http-path`/`--http-host`/`--http-header`.
fn http_request(args: &TraceArgs) -> Result<Option<HttpRequest>> {
    let (Some(method), Some(path)) = (&args.http_method, &args.http_path) else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    for h in &args.http_headers {
        let (name, value) = h
            .split_once(':')
            .context(format!("--http-header {h:?}: expected \"Name: value\""))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    if let Some(host) = &args.http_host {
        headers.push(("host".to_owned(), host.clone()));
    }
    Ok(Some(HttpRequest {
        method: method.clone(),
        path: path.clone(),
        host: args.http_host.clone(),
        headers,
    }))
}

/// One side of the traced connection as given on the command line.
struct Side<'a> {
    flag: &'static str,
    name: &'static str,
    labels: Option<&'a str>,
    cidr: Option<&'a str>,
}

/// The peer of one side. A bare address (in `--src`/`--dst` or `--*-cidr`) resolves
/// through the CIDR identities of the policies, as the datapath's ipcache does.
fn side_peer(
    policies: &[Policy],
    side: Side<'_>,
    ns_labels: &BTreeMap<String, Vec<(String, String)>>,
    addresses: &mut Vec<ResolvedAddress>,
) -> Result<Peer> {
    let address = match (side.labels, side.cidr) {
        (Some(l), None) => l.parse::<std::net::IpAddr>().ok(),
        (None, Some(c)) => c.parse::<std::net::IpAddr>().ok(),
        _ => None,
    };
    if let Some(ip) = address {
        let (peer, resolved) = resolve_address(policies, side.name, ip);
        addresses.push(resolved);
        return Ok(peer);
    }
    peer(side.flag, side.labels, side.cidr, ns_labels)
}

fn peer(
    flag: &str,
    labels: Option<&str>,
    cidr: Option<&str>,
    ns_labels: &BTreeMap<String, Vec<(String, String)>>,
) -> Result<Peer> {
    let cidr = cidr
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .with_context(|| format!("{flag}-cidr {c:?}: invalid CIDR"))
        })
        .transpose()?;
    let mut labels = match (labels, cidr) {
        (Some(l), _) => Labels::parse_list(l).with_context(|| format!("{flag} {l:?}"))?,
        (None, Some(_)) => Labels::parse_list("reserved:world")?,
        (None, None) => bail!("{flag} or {flag}-cidr is required"),
    };
    if let Some(ns) = labels.namespace().map(str::to_owned) {
        for (k, v) in ns_labels.get(&ns).into_iter().flatten() {
            labels.insert(Label::new("k8s", &format!("{NAMESPACE_LABELS}{k}"), v));
        }
    }
    Ok(Peer { labels, cidr })
}

/// `NS=k=v,k2=v2` entries.
fn namespace_labels(entries: &[String]) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in entries {
        let (ns, rest) = e.split_once('=').context(format!(
            "--namespace-labels {e:?}: expected NS=key=value,..."
        ))?;
        for kv in rest.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .context(format!("--namespace-labels {e:?}: {kv:?} is not key=value"))?;
            out.entry(ns.to_owned())
                .or_default()
                .push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

/// `443/TCP`, `53/udp`, or `443` (TCP).
fn parse_dport(s: &str) -> Result<(u16, Protocol)> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
    let port = port
        .parse()
        .with_context(|| format!("--dport {s:?}: invalid port"))?;
    let proto = Protocol::parse(&proto.to_ascii_uppercase())
        .filter(|p| *p != Protocol::Any)
        .with_context(|| format!("--dport {s:?}: protocol must be TCP, UDP, SCTP or ICMP"))?;
    Ok((port, proto))
}
