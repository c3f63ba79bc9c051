//! The scenarios' bodies: send the traffic, compare the answer with the expectation,
//! then find the flow Porin reported for it. A failure says what was seen and, when
//! Porin dropped the traffic, the drop flow with its reason.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use porin_observe::hubble_proto::flow::{DropReason, Verdict};

use super::capture::Capture;
use super::flows::{self, FlowExpectation};
use super::sandbox_deploy::TestSandbox;
use super::scenarios::TRAFFIC_WAIT;
use super::traffic::{self, HttpResult, Origin};
use super::workloads::{
    ALLOWED_NAME, ALLOWED_WORLD_IP, CROSS_NODE_MARKER, ECHO_PORT, NODE_PORT_LOCAL,
    NODE_PORT_REMOTE, OUTSIDE_NAME, REFUSED_NAME, REFUSED_WORLD_IP, SERVICE_IP, SERVICE_PORT,
    WORLD_PORT,
};

/// What the checks work with.
pub struct Ctx<'a> {
    pub sandbox: &'a TestSandbox,
    pub runtime: &'a tokio::runtime::Runtime,
    /// Plugins on in every agent.
    pub enabled: &'a BTreeSet<String>,
}

/// What a scenario observed and whether that was right.
pub struct Check {
    pub observed: String,
    pub result: Result<(), String>,
    pub flow: Option<String>,
}

impl Check {
    pub(super) fn fail(observed: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            observed: observed.into(),
            result: Err(message.into()),
            flow: None,
        }
    }
}

/// The answer an HTTP scenario expects.
#[derive(Clone, Copy)]
enum Want {
    Status(u16),
    NoAnswer,
}

impl Want {
    fn met(self, r: &HttpResult) -> bool {
        match self {
            Want::Status(code) => r.code == code,
            Want::NoAnswer => r.code == 0,
        }
    }
}

/// One HTTP exchange checked end to end: the answer, then the flow.
struct HttpScenario<'a> {
    origin: Origin<'a>,
    source_ip: String,
    url: String,
    want: Want,
    flow: FlowExpectation,
    /// Added to a failure's message (what to look at).
    hint: Option<String>,
}

fn pod_ip(ctx: &Ctx<'_>, pod: &str) -> Result<String, Check> {
    ctx.sandbox
        .pod_ip(pod)
        .map(|ip| ip.to_string())
        .map_err(|e| Check::fail("-", format!("{e:#}")))
}

fn run_http(ctx: &Ctx<'_>, s: HttpScenario<'_>) -> Check {
    let since = SystemTime::now() - Duration::from_millis(500);
    let answer = match traffic::http_until(ctx.sandbox, s.origin, &s.url, TRAFFIC_WAIT, |r| {
        s.want.met(r)
    }) {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    let observed = answer.observed();
    let destination = s.flow.destination_ip.clone().unwrap_or_default();
    if !s.want.met(&answer) {
        let drops = ctx.runtime.block_on(flows::drops_between(
            &ctx.sandbox.targets,
            since,
            &s.source_ip,
            &destination,
            s.flow.destination_port,
        ));
        let mut message = format!("GET {}: {observed}", s.url);
        match drops.first() {
            Some(drop) => {
                message.push_str(&format!("; Porin dropped it: {}", flows::describe(drop)))
            }
            None if matches!(s.want, Want::Status(_)) => {
                message.push_str("; Porin reported no drop for it")
            }
            None => {}
        }
        if let Some(hint) = &s.hint {
            message.push_str(&format!("; {hint}"));
        }
        return Check::fail(observed, message);
    }
    let related = if destination.is_empty() {
        s.source_ip.clone()
    } else {
        destination
    };
    match ctx.runtime.block_on(flows::expect(
        &ctx.sandbox.targets,
        since,
        &s.flow,
        &related,
    )) {
        Ok(flow) => Check {
            observed: format!("{observed}, {}", s.flow.describe()),
            result: Ok(()),
            flow: Some(flows::describe(&flow)),
        },
        Err(message) => Check::fail(
            observed,
            format!("the traffic worked but the flows do not confirm it: {message}"),
        ),
    }
}

fn echo_url(ip: &str, path: &str) -> String {
    format!("http://{ip}:{ECHO_PORT}/{path}")
}

fn forwarded(source: &str, destination: Option<&str>, port: u16) -> FlowExpectation {
    FlowExpectation {
        source_ip: Some(source.to_string()),
        destination_ip: destination.map(str::to_string),
        destination_port: Some(port),
        verdict: Some(Verdict::Forwarded),
        ..FlowExpectation::default()
    }
}

fn dropped(source: &str, destination: &str, reason: DropReason) -> FlowExpectation {
    FlowExpectation {
        source_ip: Some(source.to_string()),
        destination_ip: Some(destination.to_string()),
        verdict: Some(Verdict::Dropped),
        drop_reason: Some(reason),
        ..FlowExpectation::default()
    }
}

/// What Porin must report for an exchange between two pods.
#[derive(Clone, Copy)]
enum Reported {
    Forwarded,
    Dropped(DropReason),
    /// An L7 HTTP flow of the request's path with this verdict.
    L7(Verdict),
}

/// `GET /path` from one test pod to an echo server.
struct PodExchange<'a> {
    from: &'a str,
    to: &'a str,
    path: &'a str,
    want: Want,
    reported: Reported,
    /// The flow must come from this node (where the deciding program runs).
    node: Option<&'a str>,
    hint: Option<&'a str>,
}

fn pod_exchange(ctx: &Ctx<'_>, x: &PodExchange<'_>) -> Check {
    let (client, echo) = match (pod_ip(ctx, x.from), pod_ip(ctx, x.to)) {
        (Ok(c), Ok(e)) => (c, e),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let mut flow = match x.reported {
        Reported::Forwarded => forwarded(&client, Some(&echo), ECHO_PORT),
        Reported::Dropped(reason) => dropped(&client, &echo, reason),
        Reported::L7(verdict) => FlowExpectation {
            http_url: Some(format!("/{}", x.path)),
            verdict: Some(verdict),
            ..FlowExpectation::default()
        },
    };
    flow.node = x.node.map(str::to_string);
    run_http(
        ctx,
        HttpScenario {
            origin: Origin::Pod(x.from),
            url: echo_url(&echo, x.path),
            want: x.want,
            flow,
            source_ip: client,
            hint: x.hint.map(str::to_string),
        },
    )
}

/// A plain exchange: no node constraint, no hint.
fn exchange<'a>(from: &'a str, to: &'a str, want: Want, reported: Reported) -> PodExchange<'a> {
    PodExchange {
        from,
        to,
        path: "",
        want,
        reported,
        node: None,
        hint: None,
    }
}

pub fn pod_to_pod_same_node(ctx: &Ctx<'_>) -> Check {
    let x = exchange(
        "client",
        "echo-same-node",
        Want::Status(200),
        Reported::Forwarded,
    );
    pod_exchange(ctx, &x)
}

pub fn pod_to_pod_other_node(ctx: &Ctx<'_>) -> Check {
    let x = exchange(
        "client",
        "echo-other-node",
        Want::Status(200),
        Reported::Forwarded,
    );
    pod_exchange(ctx, &x)
}

/// What a Service failure points at when the lb plugin is off.
fn lb_hint(ctx: &Ctx<'_>) -> Option<String> {
    (!ctx.enabled.contains("lb")).then(|| {
        "the lb plugin is off ([plugins.lb] enabled = false): nothing translates Service \
         addresses; enable it (or run kube-proxy)"
            .to_string()
    })
}

pub fn pod_to_cluster_ip(ctx: &Ctx<'_>) -> Check {
    let client = match pod_ip(ctx, "client") {
        Ok(c) => c,
        Err(c) => return c,
    };
    run_http(
        ctx,
        HttpScenario {
            origin: Origin::Pod("client"),
            url: format!("http://{SERVICE_IP}:{SERVICE_PORT}/"),
            want: Want::Status(200),
            flow: forwarded(&client, None, ECHO_PORT),
            source_ip: client,
            hint: lb_hint(ctx),
        },
    )
}

/// From the external client through node-1's address to the NodePort of a Service whose
/// one backend is `backend`.
fn node_port(ctx: &Ctx<'_>, node_port: u16, backend: &str, how: &str) -> Check {
    let (node, echo) = match (ctx.sandbox.node_ip("node-1"), pod_ip(ctx, backend)) {
        (Ok(n), Ok(e)) => (n.to_string(), e),
        (Err(e), _) => return Check::fail("-", format!("{e:#}")),
        (_, Err(c)) => return c,
    };
    let mut hint = format!("{backend} is reached {how}");
    if let Some(lb) = lb_hint(ctx) {
        hint = format!("{hint}; {lb}");
    }
    run_http(
        ctx,
        HttpScenario {
            origin: Origin::External,
            url: format!("http://{node}:{node_port}/"),
            want: Want::Status(200),
            flow: FlowExpectation {
                source_prefix: Some("192.168.200.".to_string()),
                destination_ip: Some(echo),
                destination_port: Some(ECHO_PORT),
                verdict: Some(Verdict::Forwarded),
                ..FlowExpectation::default()
            },
            source_ip: "192.168.200.250".to_string(),
            hint: Some(hint),
        },
    )
}

pub fn node_port_local_backend(ctx: &Ctx<'_>) -> Check {
    node_port(ctx, NODE_PORT_LOCAL, "echo-same-node", "by DNAT on node-1")
}

pub fn node_port_remote_backend(ctx: &Ctx<'_>) -> Check {
    let how = if ctx.enabled.contains("encryption") {
        "by DNAT and SNAT on node-1, then through the WireGuard tunnel to node-2 (node-2 \
         accepts node-1's address from the tunnel: `porin encrypt status` lists it in \
         node-1's allowed IPs)"
    } else {
        "by DNAT and SNAT on node-1, then across to node-2"
    };
    node_port(ctx, NODE_PORT_REMOTE, "echo-other-node", how)
}

pub fn policy_egress_allow(ctx: &Ctx<'_>) -> Check {
    let x = PodExchange {
        node: Some("node-1"),
        hint: Some("policy cct-client-egress allows this"),
        ..exchange(
            "client",
            "echo-other-node",
            Want::Status(200),
            Reported::Forwarded,
        )
    };
    pod_exchange(ctx, &x)
}

pub fn policy_egress_deny(ctx: &Ctx<'_>) -> Check {
    let denied = Reported::Dropped(DropReason::PolicyDenied);
    let x = PodExchange {
        hint: Some("policy cct-client-egress allows only the other node's echo"),
        ..exchange("client", "echo-same-node", Want::NoAnswer, denied)
    };
    pod_exchange(ctx, &x)
}

pub fn policy_ingress_allow(ctx: &Ctx<'_>) -> Check {
    let x = PodExchange {
        node: Some("node-2"),
        hint: Some("policy cct-echo-ingress allows the client"),
        ..exchange(
            "client",
            "echo-other-node",
            Want::Status(200),
            Reported::Forwarded,
        )
    };
    pod_exchange(ctx, &x)
}

pub fn policy_ingress_deny(ctx: &Ctx<'_>) -> Check {
    let denied = Reported::Dropped(DropReason::PolicyDenied);
    let x = PodExchange {
        node: Some("node-2"),
        hint: Some("policy cct-echo-ingress admits only the client"),
        ..exchange("client-other", "echo-other-node", Want::NoAnswer, denied)
    };
    pod_exchange(ctx, &x)
}

pub fn policy_deny_overrides_allow(ctx: &Ctx<'_>) -> Check {
    // The allow rule works for a pod the deny rule does not name...
    let allowed = PodExchange {
        hint: Some("policy cct-deny-client allows every pod in"),
        ..exchange(
            "client-other",
            "echo-same-node",
            Want::Status(200),
            Reported::Forwarded,
        )
    };
    let allowed = pod_exchange(ctx, &allowed);
    if allowed.result.is_err() {
        return allowed;
    }
    // ...and the deny rule wins over it for the client.
    let denied = PodExchange {
        hint: Some("policy cct-deny-client denies the client"),
        ..exchange(
            "client",
            "echo-same-node",
            Want::NoAnswer,
            Reported::Dropped(DropReason::PolicyDeny),
        )
    };
    pod_exchange(ctx, &denied)
}

/// The DNS proxies' counter `name`, summed over the nodes.
fn dns_counter(ctx: &Ctx<'_>, name: &str) -> u64 {
    ctx.runtime.block_on(async {
        let mut total = 0;
        for t in &ctx.sandbox.targets {
            let status = porin_core::api::AgentClient::new(&t.socket)
                .plugin_status("policy")
                .await
                .unwrap_or_default();
            total += status["dns_proxy"]["counters"][name].as_u64().unwrap_or(0);
        }
        total
    })
}

/// A lookup that failed, explained by the drops Porin reported for it.
fn dns_failure(ctx: &Ctx<'_>, since: SystemTime, client: &str, dns: &str, what: &str) -> String {
    let drops = ctx.runtime.block_on(flows::drops_between(
        &ctx.sandbox.targets,
        since,
        client,
        dns,
        Some(53),
    ));
    match drops.first() {
        Some(drop) => format!(
            "{what}; Porin dropped the query: {} (a policy blocks DNS: see `porin policy get`)",
            flows::describe(drop)
        ),
        None => format!("{what}; Porin reported no drop (is the DNS server running?)"),
    }
}

pub fn dns_through_proxy(ctx: &Ctx<'_>) -> Check {
    let (client, dns) = match (pod_ip(ctx, "client"), pod_ip(ctx, "dns")) {
        (Ok(c), Ok(d)) => (c, d),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let since = SystemTime::now() - Duration::from_millis(500);
    let forwarded_before = dns_counter(ctx, "forwarded");
    let refused_before = dns_counter(ctx, "rejected_refused");
    let answer = match traffic::dig_until(
        ctx.sandbox,
        "client",
        &dns,
        ALLOWED_NAME,
        TRAFFIC_WAIT,
        |r| r.addresses.iter().any(|a| a == ALLOWED_WORLD_IP),
    ) {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    if !answer.addresses.iter().any(|a| a == ALLOWED_WORLD_IP) {
        let what = format!("dig {ALLOWED_NAME} @{dns}: {}", answer.observed());
        return Check::fail(
            answer.observed(),
            dns_failure(ctx, since, &client, &dns, &what),
        );
    }
    let outside = match traffic::dig(ctx.sandbox, "client", &dns, OUTSIDE_NAME) {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    let observed = format!(
        "{ALLOWED_NAME}: {}, {OUTSIDE_NAME}: {}",
        answer.observed(),
        outside.observed()
    );
    let forwarded_by_proxy = dns_counter(ctx, "forwarded") > forwarded_before;
    let refused_by_proxy = dns_counter(ctx, "rejected_refused") > refused_before;
    if outside.status != "REFUSED" || !refused_by_proxy {
        return Check::fail(
            observed,
            format!(
                "{OUTSIDE_NAME} is outside the DNS rules (*.connectivity.test): the proxy must \
                 refuse it (REFUSED counted by the proxy: {refused_by_proxy})"
            ),
        );
    }
    if !forwarded_by_proxy {
        return Check::fail(
            observed,
            "the answer did not come through a node's DNS proxy (its `forwarded` counter did \
             not move): the datapath does not steer DNS to the proxy",
        );
    }
    let flow = FlowExpectation {
        source_ip: Some(client.clone()),
        destination_port: Some(53),
        verdict: Some(Verdict::Forwarded),
        ..FlowExpectation::default()
    };
    match ctx
        .runtime
        .block_on(flows::expect(&ctx.sandbox.targets, since, &flow, &client))
    {
        Ok(f) => Check {
            observed: format!("{observed}, via the proxy, FORWARDED"),
            result: Ok(()),
            flow: Some(flows::describe(&f)),
        },
        Err(m) => Check::fail(observed, format!("no DNS flow: {m}")),
    }
}

/// Resolve `name` through the proxy (so the FQDN policy learns its address), then
/// connect to `world_ip`.
fn fqdn(ctx: &Ctx<'_>, name: &str, world_ip: &str, want: Want, flow: FlowExpectation) -> Check {
    let (client, dns) = match (pod_ip(ctx, "client"), pod_ip(ctx, "dns")) {
        (Ok(c), Ok(d)) => (c, d),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let since = SystemTime::now() - Duration::from_millis(500);
    let answer = match traffic::dig_until(ctx.sandbox, "client", &dns, name, TRAFFIC_WAIT, |r| {
        r.addresses.iter().any(|a| a == world_ip)
    }) {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    if !answer.addresses.iter().any(|a| a == world_ip) {
        let what = format!(
            "dig {name} @{dns}: {} (expected {world_ip})",
            answer.observed()
        );
        return Check::fail(
            format!("DNS {}", answer.observed()),
            dns_failure(ctx, since, &client, &dns, &what),
        );
    }
    run_http(
        ctx,
        HttpScenario {
            origin: Origin::Pod("client"),
            url: format!("http://{world_ip}:{WORLD_PORT}/"),
            want,
            flow,
            source_ip: client,
            hint: Some(format!(
                "policy cct-client-fqdn allows only {ALLOWED_NAME} (toFQDNs)"
            )),
        },
    )
}

pub fn fqdn_allowed_name(ctx: &Ctx<'_>) -> Check {
    let client = match pod_ip(ctx, "client") {
        Ok(c) => c,
        Err(c) => return c,
    };
    let flow = forwarded(&client, Some(ALLOWED_WORLD_IP), WORLD_PORT);
    fqdn(ctx, ALLOWED_NAME, ALLOWED_WORLD_IP, Want::Status(200), flow)
}

pub fn fqdn_refused_name(ctx: &Ctx<'_>) -> Check {
    let client = match pod_ip(ctx, "client") {
        Ok(c) => c,
        Err(c) => return c,
    };
    let flow = dropped(&client, REFUSED_WORLD_IP, DropReason::PolicyDenied);
    fqdn(ctx, REFUSED_NAME, REFUSED_WORLD_IP, Want::NoAnswer, flow)
}

fn l7(ctx: &Ctx<'_>, path: &str, want: u16, verdict: Verdict) -> Check {
    let x = PodExchange {
        path,
        hint: Some(
            "policy cct-client-http allows GET /allowed.* through the L7 proxy \
             ([plugins.policy.l7_proxy])",
        ),
        ..exchange(
            "client",
            "echo-other-node",
            Want::Status(want),
            Reported::L7(verdict),
        )
    };
    pod_exchange(ctx, &x)
}

pub fn l7_allowed(ctx: &Ctx<'_>) -> Check {
    l7(ctx, "allowed.txt", 200, Verdict::Forwarded)
}

pub fn l7_denied(ctx: &Ctx<'_>) -> Check {
    l7(ctx, "private.txt", 403, Verdict::Dropped)
}

pub fn encryption_cross_node(ctx: &Ctx<'_>) -> Check {
    let (client, echo) = match (pod_ip(ctx, "client"), pod_ip(ctx, "echo-other-node")) {
        (Ok(c), Ok(e)) => (c, e),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    let capture = ctx.sandbox.underlay_netns().and_then(|netns| {
        Capture::start(
            &netns,
            porin_testbed::topology::BRIDGE,
            ctx.sandbox.state_dir.join("underlay.pcap"),
        )
    });
    let capture = match capture {
        Ok(c) => c,
        Err(e) => return Check::fail("-", format!("capturing the underlay: {e:#}")),
    };
    let since = SystemTime::now() - Duration::from_millis(500);
    // The first handshake can take a few seconds.
    let answer = traffic::http_until(
        ctx.sandbox,
        Origin::Pod("client"),
        &echo_url(&echo, "marker.txt"),
        TRAFFIC_WAIT * 2,
        |r| r.code == 200,
    );
    let captured = match capture.stop() {
        Ok(c) => c,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Check::fail("-", format!("{e:#}")),
    };
    if answer.code != 200 {
        return Check::fail(
            answer.observed(),
            format!("the cross-node fetch failed: {}", answer.observed()),
        );
    }
    if captured.contains(CROSS_NODE_MARKER) {
        return Check::fail(
            "plaintext on the underlay",
            "the page crossed the underlay in clear: the traffic was not encrypted",
        );
    }
    let pod_tcp = format!("{echo}.{ECHO_PORT}");
    if captured.text.contains(&pod_tcp) {
        return Check::fail(
            "pod TCP on the underlay",
            format!("the pods' TCP ({pod_tcp}) is visible on the underlay"),
        );
    }
    let udp = captured
        .text
        .lines()
        .filter(|l| l.contains("UDP") && l.contains("192.168.200."))
        .count();
    if udp == 0 {
        return Check::fail(
            "no UDP on the underlay",
            format!(
                "no WireGuard UDP between the nodes in the capture:\n{}",
                captured.text
            ),
        );
    }
    let observed = format!("HTTP 200, {udp} WireGuard UDP packets on the underlay, no plaintext");
    let flow = FlowExpectation {
        source_ip: Some(client.clone()),
        destination_ip: Some(echo.clone()),
        encrypted: Some(true),
        ..FlowExpectation::default()
    };
    match ctx
        .runtime
        .block_on(flows::expect(&ctx.sandbox.targets, since, &flow, &echo))
    {
        Ok(f) => Check {
            observed: format!("{observed}, flow encrypted"),
            result: Ok(()),
            flow: Some(flows::describe(&f)),
        },
        Err(m) => Check::fail(observed, m),
    }
}
