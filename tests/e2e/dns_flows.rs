//! End to end: what the DNS proxy shows to Hubble users, on one node with a real dnsmasq
//! as cluster DNS and the seed article's FQDN selectors.
//!
//! - Every proxied query and answer is an L7 flow with `l7.dns` (query, qtypes; answers:
//!   ips, ttl, cnames, rcode, rrtypes, observation_source), over UDP and TCP, found with
//!   `porin observe --type l7 --protocol dns`; a refused name is DROPPED with REFUSED.
//! - `hubble_dns_queries_total`, `hubble_dns_responses_total` and
//!   `hubble_dns_response_types_total` count them with Cilium's labels.
//! - L3/L4 flows to an address learned from an answer carry `destination_names`, and
//!   `porin observe --to-fqdn` selects them.

mod common;

use std::time::{Duration, Instant};

use common::dns::{self, ALIAS, BUCKET, EVIL, SECRETS, curl_ok, dig, external_web};
use common::{TestSandbox, metric_value, str_of, wait_for};
use serde_json::Value;

const SECRETS_IP: &str = "192.168.200.231";
const BUCKET_IP: &str = "192.168.200.232";
const CLIENT: &str = "payments/payments-api";

/// The cluster DNS and the client on one node, the seed's FQDN selectors, and DNS rules
/// that allow their names only.
fn manifests() -> String {
    let policy = format!(
        r#"---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: payments-egress
  namespace: payments
spec:
  endpointSelector:
    matchLabels:
      app: payments-api
  egress:
    - toEndpoints:
        - matchLabels:
            io.kubernetes.pod.namespace: kube-system
            k8s-app: kube-dns
      toPorts:
        - ports:
            - port: "53"
              protocol: ANY
          rules:
            dns:
              - matchPattern: "*.s3.us-east-1.amazonaws.com"
              - matchName: "{SECRETS}"
    - toFQDNs:
        - matchName: "{SECRETS}"
        - matchPattern: "*.s3.us-east-1.amazonaws.com"
      toPorts:
        - ports:
            - port: "443"
              protocol: TCP
"#
    );
    dns::pods_yaml("node-1", [SECRETS_IP, BUCKET_IP, "192.168.200.233"]) + &policy
}

/// The observe plugin counts DNS flows; the policy plugin runs the proxy.
const AGENT_CONFIG: &str = "metrics = [\"dns\"]\n[plugins.policy]\nenabled = true\n";

/// `porin observe --last 500 ARGS -o json` as flows.
fn observe(sandbox: &TestSandbox, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--last", "500"];
    all.extend_from_slice(args);
    sandbox.observe(&all)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The DNS L7 flow of `query` of kind `kind` (REQUEST/RESPONSE) over `l4` (UDP/TCP).
fn dns_flow<'a>(flows: &'a [Value], query: &str, kind: &str, l4: &str) -> Option<&'a Value> {
    flows.iter().find(|f| {
        f["l7"]["dns"]["query"] == format!("{query}.")
            && f["l7"]["type"] == kind
            && f["l4"][l4].is_object()
    })
}

#[test]
fn dns_l7_flows_metrics_and_destination_names() {
    let started = Instant::now();
    let sandbox = TestSandbox::up_with_nodes(
        &[("10-all.yaml", manifests().as_str())],
        Some(AGENT_CONFIG),
        1,
    );
    let _web = external_web(&sandbox, &[SECRETS_IP, BUCKET_IP]);
    let dns = str_of(&sandbox.endpoint("kube-system/kube-dns")["endpoint"]["ipv4"]).to_string();

    let first = wait_for(Duration::from_secs(15), || {
        let (status, addrs) = dig(&sandbox, CLIENT, &dns, SECRETS, false);
        (status == "NOERROR" && !addrs.is_empty()).then_some(addrs)
    });
    assert_eq!(
        first,
        Some(vec![SECRETS_IP.to_string()]),
        "{}",
        sandbox.agent_logs()
    );
    assert_eq!(
        dig(&sandbox, CLIENT, &dns, ALIAS, true),
        ("NOERROR".into(), vec![BUCKET_IP.into()])
    );
    assert_eq!(dig(&sandbox, CLIENT, &dns, EVIL, false).0, "REFUSED");
    let reached = wait_for(Duration::from_secs(5), || {
        curl_ok(&sandbox, CLIENT, SECRETS_IP).then_some(())
    });
    assert!(reached.is_some(), "{SECRETS_IP}:443 must be reachable");

    // DNS L7 flows, as `porin observe --type l7 --protocol dns` shows them.
    let flows = wait_for(Duration::from_secs(10), || {
        let flows = observe(&sandbox, &["--type", "l7", "--protocol", "dns"]);
        dns_flow(&flows, EVIL, "RESPONSE", "UDP")
            .is_some()
            .then_some(flows)
    })
    .unwrap_or_else(|| {
        panic!(
            "no DNS L7 flows: {:#?}",
            observe(&sandbox, &["--type", "l7"])
        )
    });
    assert!(
        flows
            .iter()
            .all(|f| f["Type"] == "L7" && f["l7"]["dns"].is_object()),
        "only DNS L7 flows: {flows:#?}"
    );
    let request = dns_flow(&flows, SECRETS, "REQUEST", "UDP").expect("request flow");
    assert_eq!(request["verdict"], "FORWARDED", "{request}");
    assert_eq!(strings(&request["l7"]["dns"]["qtypes"]), ["A"], "{request}");
    assert_eq!(request["source"]["pod_name"], "payments-api", "{request}");
    assert_eq!(request["destination"]["pod_name"], "kube-dns", "{request}");
    assert_eq!(request["traffic_direction"], "EGRESS", "{request}");
    let answer = dns_flow(&flows, SECRETS, "RESPONSE", "UDP").expect("response flow");
    assert_eq!(answer["is_reply"], true, "{answer}");
    assert_eq!(answer["source"]["pod_name"], "kube-dns", "{answer}");
    assert_eq!(
        strings(&answer["l7"]["dns"]["ips"]),
        [SECRETS_IP],
        "{answer}"
    );
    assert_eq!(
        answer["l7"]["dns"]["observation_source"], "proxy",
        "{answer}"
    );
    assert!(
        answer["l7"]["dns"]["rcode"].as_u64().unwrap_or(0) == 0,
        "{answer}"
    );
    // The CNAME chain, over TCP.
    let alias = dns_flow(&flows, ALIAS, "RESPONSE", "TCP").expect("TCP response flow");
    assert_eq!(
        strings(&alias["l7"]["dns"]["cnames"]),
        [format!("{BUCKET}.")]
    );
    assert_eq!(strings(&alias["l7"]["dns"]["rrtypes"]), ["CNAME", "A"]);
    assert_eq!(strings(&alias["l7"]["dns"]["ips"]), [BUCKET_IP]);
    // The refused name: both DROPPED, REFUSED (5).
    let refused_q = dns_flow(&flows, EVIL, "REQUEST", "UDP").expect("refused request");
    let refused_a = dns_flow(&flows, EVIL, "RESPONSE", "UDP").expect("refused response");
    assert_eq!(refused_q["verdict"], "DROPPED", "{refused_q}");
    assert_eq!(refused_a["verdict"], "DROPPED", "{refused_a}");
    assert_eq!(refused_a["l7"]["dns"]["rcode"], 5, "{refused_a}");
    assert!(
        observe(&sandbox, &["--type", "l7", "--protocol", "http"]).is_empty(),
        "no HTTP flows"
    );

    // hubble_dns_* with Cilium's labels.
    let text = sandbox.hubble_metrics("node-1");
    let queries = metric_value(&text, "hubble_dns_queries_total", &["qtypes=\"A\""]);
    assert!(queries >= Some(3.0), "queries: {queries:?}\n{text}");
    let no_error = metric_value(
        &text,
        "hubble_dns_responses_total",
        &["rcode=\"No Error\"", "ips_returned=\"1\""],
    );
    assert!(no_error >= Some(2.0), "responses: {no_error:?}\n{text}");
    let refused = metric_value(
        &text,
        "hubble_dns_responses_total",
        &["rcode=\"Query Refused\"", "ips_returned=\"0\""],
    );
    assert_eq!(refused, Some(1.0), "{text}");
    let cname = metric_value(
        &text,
        "hubble_dns_response_types_total",
        &["type=\"CNAME\"", "qtypes=\"A\""],
    );
    assert_eq!(cname, Some(1.0), "{text}");

    // destination_names on the L3/L4 flows of the connection to the learned address.
    let to_secrets = wait_for(Duration::from_secs(10), || {
        let flows = observe(&sandbox, &["--to-fqdn", "*.us-east-1.amazonaws.com"]);
        (!flows.is_empty()).then_some(flows)
    })
    .unwrap_or_else(|| panic!("no flows --to-fqdn: {:#?}", sandbox.flows(50)));
    for f in &to_secrets {
        assert_ne!(f["Type"], "L7", "L3/L4 flows only: {f}");
        assert_eq!(f["IP"]["destination"], SECRETS_IP, "{f}");
        assert_eq!(strings(&f["destination_names"]), [SECRETS], "{f}");
    }
    // Its replies carry the name as their source.
    let back = observe(&sandbox, &["--from-fqdn", SECRETS]);
    assert!(
        back.iter()
            .any(|f| f["IP"]["source"] == SECRETS_IP && strings(&f["source_names"]) == [SECRETS]),
        "{back:#?}"
    );
    assert!(observe(&sandbox, &["--to-fqdn", "*.example.com"]).is_empty());
    println!("dns flows e2e took {:?}", started.elapsed());
}
