//! One row per `porin observe` filter flag: the flag becomes Hubble `FlowFilter`s
//! (exactly what is sent to the agent or the relay), the server's filter runs them
//! over flows recorded from a sandbox (`scripts/demo.sh`'s traffic on the
//! quickstart: TCP, UDP to DNS, ICMP, a drop, replies, two nodes), and the flows
//! kept must be exactly those an independent predicate on the flow picks. Every
//! row must keep some flows and drop others, so a filter that ignores its flag
//! fails. `--last` and `--since` run through the agent's GetFlows.

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use porin_observe::filter::keeps;
use porin_observe::flow::timestamp;
use porin_observe::hubble_proto::flow::Flow;
use porin_observe::hubble_proto::flow::layer4::Protocol;
use porin_observe::hubble_proto::observer::GetFlowsResponse;
use porin_observe::hubble_proto::observer::get_flows_response::ResponseTypes;
use porin_observe::hubble_proto::observer::observer_server::Observer;
use porin_observe::{FlowRing, HubbleService};

use super::ObserveArgs;

/// `porin observe -o json --last 1000` of the demo's traffic.
const RECORDED: &str = include_str!("../../../plugins/observe/tests/data/sandbox_flows.jsonl");

fn recorded() -> Vec<Flow> {
    RECORDED
        .lines()
        .map(|l| {
            let r: GetFlowsResponse = serde_json::from_str(l).expect("recorded GetFlowsResponse");
            match r.response_types {
                Some(ResponseTypes::Flow(f)) => f,
                other => panic!("not a flow: {other:?}"),
            }
        })
        .collect()
}

fn src(f: &Flow) -> (&str, &str) {
    f.source
        .as_ref()
        .map_or(("", ""), |e| (e.namespace.as_str(), e.pod_name.as_str()))
}

fn dst(f: &Flow) -> (&str, &str) {
    f.destination
        .as_ref()
        .map_or(("", ""), |e| (e.namespace.as_str(), e.pod_name.as_str()))
}

fn ports(f: &Flow) -> (u32, u32) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.source_port, t.destination_port),
        Some(Protocol::Udp(u)) => (u.source_port, u.destination_port),
        _ => (0, 0),
    }
}

fn ips(f: &Flow) -> (&str, &str) {
    f.ip.as_ref()
        .map_or(("", ""), |i| (i.source.as_str(), i.destination.as_str()))
}

fn has_label(ep: Option<&porin_observe::hubble_proto::flow::Endpoint>, label: &str) -> bool {
    ep.is_some_and(|e| e.labels.iter().any(|l| l == label))
}

type Row = (&'static str, ObserveArgs, Box<dyn Fn(&Flow) -> bool>);

fn args(f: impl FnOnce(&mut ObserveArgs)) -> ObserveArgs {
    let mut a = ObserveArgs::default();
    f(&mut a);
    a
}

fn rows(flows: &[Flow]) -> Vec<Row> {
    // Values taken from the recording, so the table follows a new recording.
    let postgres_ip = flows
        .iter()
        .find(|f| dst(f).1 == "postgres")
        .map(|f| ips(f).1.to_string())
        .expect("a flow to postgres");
    let api_identity = flows
        .iter()
        .find(|f| src(f).1 == "payments-api")
        .and_then(|f| f.source.as_ref())
        .map(|e| e.identity)
        .expect("a flow from payments-api");
    let uuid = flows[3].uuid.clone();
    let pg = postgres_ip.clone();
    let pg2 = postgres_ip.clone();
    let pg3 = postgres_ip.clone();
    vec![
        (
            "--not --namespace ops",
            args(|a| a.not_filter = vec!["--namespace=ops".into()]),
            Box::new(|f| src(f).0 != "ops" && dst(f).0 != "ops"),
        ),
        (
            "--from-namespace payments --not --to-port 5432",
            args(|a| {
                a.from_namespace = Some("payments".into());
                a.not_filter = vec!["--to-port=5432".into()];
            }),
            Box::new(|f| src(f).0 == "payments" && ports(f).1 != 5432),
        ),
        (
            "--namespace ops",
            args(|a| a.namespace = Some("ops".into())),
            Box::new(|f| src(f).0 == "ops" || dst(f).0 == "ops"),
        ),
        (
            "--from-namespace monitoring",
            args(|a| a.from_namespace = Some("monitoring".into())),
            Box::new(|f| src(f).0 == "monitoring"),
        ),
        (
            "--to-namespace kube-system",
            args(|a| a.to_namespace = Some("kube-system".into())),
            Box::new(|f| dst(f).0 == "kube-system"),
        ),
        (
            "--pod payments/postgres",
            args(|a| a.pod = Some("payments/postgres".into())),
            Box::new(|f| src(f) == ("payments", "postgres") || dst(f) == ("payments", "postgres")),
        ),
        (
            "--namespace payments --pod payments-admin",
            args(|a| {
                a.namespace = Some("payments".into());
                a.pod = Some("payments-admin".into());
            }),
            Box::new(|f| {
                src(f).1.starts_with("payments-admin") || dst(f).1.starts_with("payments-admin")
            }),
        ),
        (
            "--from-pod ops/ops-toolbox",
            args(|a| a.from_pod = Some("ops/ops-toolbox".into())),
            Box::new(|f| src(f) == ("ops", "ops-toolbox")),
        ),
        (
            "--to-pod payments/payments-api",
            args(|a| a.to_pod = Some("payments/payments-api".into())),
            Box::new(|f| dst(f) == ("payments", "payments-api")),
        ),
        (
            "--verdict DROPPED",
            args(|a| a.verdict = Some("DROPPED".into())),
            Box::new(|f| f.verdict == 2),
        ),
        (
            "--verdict forwarded",
            args(|a| a.verdict = Some("forwarded".into())),
            Box::new(|f| f.verdict == 1),
        ),
        (
            "--protocol udp",
            args(|a| a.protocol = Some("udp".into())),
            Box::new(|f| {
                matches!(
                    f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                    Some(Protocol::Udp(_))
                )
            }),
        ),
        (
            "--protocol icmp",
            args(|a| a.protocol = Some("icmp".into())),
            Box::new(|f| {
                matches!(
                    f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                    Some(Protocol::IcmPv4(_))
                )
            }),
        ),
        (
            "--port 5432",
            args(|a| a.port = Some(5432)),
            Box::new(|f| ports(f).0 == 5432 || ports(f).1 == 5432),
        ),
        (
            "--to-port 8080",
            args(|a| a.to_port = Some(8080)),
            Box::new(|f| ports(f).1 == 8080),
        ),
        (
            "--from-port 8080",
            args(|a| a.from_port = Some(8080)),
            Box::new(|f| ports(f).0 == 8080),
        ),
        (
            "--type drop",
            args(|a| a.event_type = Some("drop".into())),
            Box::new(|f| f.event_type.as_ref().is_some_and(|e| e.r#type == 1)),
        ),
        (
            "--type trace:to-endpoint",
            args(|a| a.event_type = Some("trace:to-endpoint".into())),
            Box::new(|f| {
                f.event_type
                    .as_ref()
                    .is_some_and(|e| e.r#type == 4 && e.sub_type == 0)
            }),
        ),
        (
            "--type trace:from-endpoint",
            args(|a| a.event_type = Some("trace:from-endpoint".into())),
            Box::new(|f| {
                f.event_type
                    .as_ref()
                    .is_some_and(|e| e.r#type == 4 && e.sub_type == 5)
            }),
        ),
        (
            "--ip POSTGRES",
            args(|a| a.ip = Some(postgres_ip.clone())),
            Box::new(move |f| ips(f).0 == pg || ips(f).1 == pg),
        ),
        (
            "--to-ip POSTGRES",
            args(|a| a.to_ip = Some(postgres_ip.clone())),
            Box::new(move |f| ips(f).1 == pg2),
        ),
        (
            "--from-ip POSTGRES/32",
            args(|a| a.from_ip = Some(format!("{postgres_ip}/32"))),
            Box::new(move |f| ips(f).0 == pg3),
        ),
        (
            "--from-ip 10.200.2.0/24",
            args(|a| a.from_ip = Some("10.200.2.0/24".into())),
            Box::new(|f| ips(f).0.starts_with("10.200.2.")),
        ),
        (
            "--label k8s:app=postgres",
            args(|a| a.label = Some("k8s:app=postgres".into())),
            Box::new(|f| {
                has_label(f.source.as_ref(), "k8s:app=postgres")
                    || has_label(f.destination.as_ref(), "k8s:app=postgres")
            }),
        ),
        (
            "--from-label app=prometheus",
            args(|a| a.from_label = Some("app=prometheus".into())),
            Box::new(|f| has_label(f.source.as_ref(), "k8s:app=prometheus")),
        ),
        (
            "--to-label io.cilium.k8s.namespace.labels.team=ops",
            args(|a| a.to_label = Some("io.cilium.k8s.namespace.labels.team=ops".into())),
            Box::new(|f| {
                has_label(
                    f.destination.as_ref(),
                    "k8s:io.cilium.k8s.namespace.labels.team=ops",
                )
            }),
        ),
        (
            "--identity API",
            args(|a| a.identity = Some(api_identity)),
            Box::new(move |f| {
                f.source
                    .as_ref()
                    .is_some_and(|e| e.identity == api_identity)
                    || f.destination
                        .as_ref()
                        .is_some_and(|e| e.identity == api_identity)
            }),
        ),
        (
            "--from-identity API",
            args(|a| a.from_identity = Some(api_identity)),
            Box::new(move |f| {
                f.source
                    .as_ref()
                    .is_some_and(|e| e.identity == api_identity)
            }),
        ),
        (
            "--node-name node-2",
            args(|a| a.node_name = Some("node-2".into())),
            Box::new(|f| f.node_name == "node-2"),
        ),
        (
            "--node-name '*-1'",
            args(|a| a.node_name = Some("*-1".into())),
            Box::new(|f| f.node_name.ends_with("-1")),
        ),
        (
            "--traffic-direction ingress",
            args(|a| a.traffic_direction = Some("ingress".into())),
            Box::new(|f| f.traffic_direction == 1),
        ),
        (
            "--uuid U",
            args(|a| a.uuid = Some(uuid.clone())),
            Box::new(move |f| f.uuid == uuid),
        ),
        (
            "--from-namespace payments --protocol tcp --verdict FORWARDED",
            args(|a| {
                a.from_namespace = Some("payments".into());
                a.protocol = Some("tcp".into());
                a.verdict = Some("FORWARDED".into());
            }),
            Box::new(|f| {
                src(f).0 == "payments"
                    && ports(f) != (0, 0)
                    && f.verdict == 1
                    && matches!(
                        f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                        Some(Protocol::Tcp(_))
                    )
            }),
        ),
    ]
}

#[test]
fn every_flag_keeps_exactly_its_flows() {
    let flows = recorded();
    assert!(
        flows.len() >= 20,
        "the recording is too small: {}",
        flows.len()
    );
    for (name, args, wanted) in rows(&flows) {
        let request = args.request().unwrap_or_else(|e| panic!("{name}: {e}"));
        let kept: Vec<usize> = (0..flows.len())
            .filter(|&i| keeps(&request.whitelist, &request.blacklist, &flows[i]))
            .collect();
        let expected: Vec<usize> = (0..flows.len()).filter(|&i| wanted(&flows[i])).collect();
        assert_eq!(kept, expected, "{name}: filters {:?}", request.whitelist);
        assert!(
            !expected.is_empty() && expected.len() < flows.len(),
            "{name} must keep some of the recorded flows and drop others ({} of {})",
            expected.len(),
            flows.len()
        );
    }
}

/// The command line as a user types it: `--not` folded before clap parses it.
#[test]
fn not_on_the_command_line_negates_the_next_flag() {
    let parse = |line: &[&str]| {
        let folded = super::negate::fold_not(line.iter().map(std::ffi::OsString::from));
        super::NegatedFlags::try_parse_from(folded)
            .map(|n| n.args)
            .map_err(|e| e.to_string())
    };
    let typed = parse(&[
        "observe",
        "--from-namespace",
        "payments",
        "--not",
        "--to-port",
        "5432",
    ])
    .expect("parses");
    let built = args(|a| {
        a.from_namespace = Some("payments".into());
        a.not_filter = vec!["--to-port=5432".into()];
    });
    assert_eq!(
        typed.request().expect("request"),
        built.request().expect("request")
    );
    let both = parse(&[
        "observe",
        "--not",
        "-n",
        "ops",
        "--not",
        "--verdict=DROPPED",
    ])
    .expect("parses")
    .request()
    .expect("request");
    assert!(both.whitelist.is_empty());
    // One filter per side of --namespace, each also excluding drops (fields AND'ed).
    assert_eq!(both.blacklist.len(), 2, "{:?}", both.blacklist);
    assert!(both.blacklist.iter().all(|f| f.verdict == vec![2]));
    for (line, part) in [
        (
            &["observe", "--not"][..],
            "--not must be followed by a filter flag",
        ),
        (&["observe", "--not", "--follow"][..], "not a filter flag"),
        (
            &["observe", "--not", "--planet", "mars"][..],
            "--not --planet=mars",
        ),
    ] {
        let e = match parse(line) {
            Ok(a) => a.request().map(|_| ()).expect_err(part).to_string(),
            Err(e) => e,
        };
        assert!(e.contains(part), "{line:?}: {e}");
    }
}

#[test]
fn bad_flag_values_name_the_flag() {
    for (args, flag) in [
        (
            args(|a| a.traffic_direction = Some("sideways".into())),
            "--traffic-direction",
        ),
        (args(|a| a.ip_version = Some("5".into())), "--ip-version"),
        (
            args(|a| a.event_type = Some("trace:nowhere".into())),
            "--type",
        ),
        (args(|a| a.verdict = Some("maybe".into())), "--verdict"),
    ] {
        let e = args.request().expect_err(flag);
        assert!(e.to_string().contains(flag), "{e}");
    }
}

/// `--last N` and `--since` through the agent's GetFlows over the recorded flows,
/// re-timed one minute apart ending now.
#[tokio::test]
async fn last_and_since_select_the_newest() {
    let flows = recorded();
    let n = flows.len();
    let ring = Arc::new(FlowRing::new(64));
    let now = SystemTime::now();
    for (i, mut f) in flows.into_iter().enumerate() {
        let age = Duration::from_secs(60 * (n - 1 - i) as u64);
        f.time = Some(timestamp(now - age));
        ring.push(f);
    }
    let service = HubbleService::new(ring, "node-1", "unix:///unused");
    let count = |args: ObserveArgs| {
        let service = service.clone();
        async move {
            use tokio_stream::StreamExt;
            let request = args.request().expect("request");
            let stream = service
                .get_flows(tonic::Request::new(request))
                .await
                .expect("GetFlows")
                .into_inner();
            stream.collect::<Vec<_>>().await.len()
        }
    };
    assert_eq!(count(args(|a| a.last = Some(5))).await, 5);
    assert_eq!(
        count(ObserveArgs::default()).await,
        20,
        "20 by default, like hubble"
    );
    // 10m30s ago: the flows of the last ten minutes, and the one at exactly now.
    assert_eq!(count(args(|a| a.since = Some("630s".into()))).await, 11);
    assert_eq!(count(args(|a| a.since = Some("1d".into()))).await, n);
    // --until 630s: everything older than 10m30s; with --since 1230s (20m30s), the ten
    // of minutes 11 to 20.
    assert_eq!(count(args(|a| a.until = Some("630s".into()))).await, n - 11);
    let window = args(|a| {
        a.since = Some("1230s".into());
        a.until = Some("630s".into());
    });
    assert_eq!(count(window).await, 10);
    // --first 5: the oldest five, oldest first.
    let first = args(|a| a.first = Some(5));
    assert_eq!(count(first).await, 5);
    let oldest = service
        .get_flows(tonic::Request::new(
            args(|a| a.first = Some(1)).request().expect("request"),
        ))
        .await
        .expect("GetFlows")
        .into_inner();
    let oldest = {
        use tokio_stream::StreamExt;
        oldest.collect::<Vec<_>>().await
    };
    let age = |r: &Result<GetFlowsResponse, tonic::Status>| {
        r.as_ref().ok().and_then(|r| r.time).map(|t| t.seconds)
    };
    assert_eq!(
        age(&oldest[0]),
        Some(timestamp(now - Duration::from_secs(60 * (n - 1) as u64)).seconds)
    );
}
