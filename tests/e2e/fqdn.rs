//! End to end: the seed article's `payments-egress` policy, as written, in a sandbox whose
//! cluster DNS is a real dnsmasq (pod `kube-system/kube-dns`) serving the seed's names.
//! Names are answered with addresses of the external client's namespace (outside the
//! cluster, `world`), where a web server listens on 443.
//!
//! - Allowed names resolve through the node's DNS proxy (UDP and TCP), and connections to
//!   their addresses work: the proxy put them into the ipcache under the `toFQDNs`
//!   selector identities before releasing the answer.
//! - A connection to the address of a name no `toFQDNs` selector matches is dropped with
//!   POLICY_DENIED (seen over the Hubble API). The seed's DNS rule is `matchPattern: "*"`,
//!   so every name resolves; with the DNS rules narrowed to the FQDN selectors (the same
//!   policy file, edited), other names get REFUSED over UDP and TCP.
//! - Malformed queries (truncated, compression-pointer loop) are answered or dropped with a
//!   counted reason, and the proxy keeps serving.
//! - The agent of the client's node is killed and restarted during a loop of lookups and
//!   connections: no lookup fails (while no proxy listens, the datapath sends DNS to its
//!   server directly: `bpf/lib/proxy.h`).

mod common;

use std::time::{Duration, Instant};

use common::dns::{self, ALIAS, BUCKET, EVIL, SECRETS, external_web};
use common::{TestSandbox, manifest_path, str_of, wait_for};
use serde_json::Value;

const SECRETS_IP: &str = "192.168.200.241";
const BUCKET_IP: &str = "192.168.200.242";
const EVIL_IP: &str = "192.168.200.243";

fn manifests() -> String {
    dns::pods_yaml("node-2", [SECRETS_IP, BUCKET_IP, EVIL_IP])
}

/// The seed article's policy, verbatim.
const PAYMENTS_EGRESS: &str = r#"apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: payments-egress
  namespace: payments
spec:
  endpointSelector:
    matchLabels:
      app: payments-api

  egress:
    # Allow DNS (required for FQDN resolution)
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
              - matchPattern: "*" # Allow all DNS queries

    # Allow access to AWS Secrets Manager (FQDN)
    - toFQDNs:
        - matchName: "secretsmanager.us-east-1.amazonaws.com"
        - matchPattern: "*.s3.us-east-1.amazonaws.com" # Wildcard pattern
      toPorts:
        - ports:
            - port: "443"
              protocol: TCP

    # Allow access to internal services
    - toEndpoints:
        - matchLabels:
            app: postgres
            io.kubernetes.pod.namespace: payments
      toPorts:
        - ports:
            - port: "5432"
              protocol: TCP

    # Allow access to Kubernetes API (for workloads that need it)
    - toEntities:
        - kube-apiserver
      toPorts:
        - ports:
            - port: "443"
              protocol: TCP
"#;

/// The same policy with DNS rules narrowed to the FQDN selectors: other names get REFUSED.
fn strict_policy() -> String {
    PAYMENTS_EGRESS.replace(
        "              - matchPattern: \"*\" # Allow all DNS queries\n",
        "              - matchPattern: \"*.s3.us-east-1.amazonaws.com\"\n              - matchName: \"secretsmanager.us-east-1.amazonaws.com\"\n",
    )
}

const CLIENT: &str = "payments/payments-api";

/// `dig` from the client pod; returns (status line, answer addresses).
fn dig(sandbox: &TestSandbox, server: &str, name: &str, tcp: bool) -> (String, Vec<String>) {
    dns::dig(sandbox, CLIENT, server, name, tcp)
}

fn curl_ok(sandbox: &TestSandbox, ip: &str) -> bool {
    dns::curl_ok(sandbox, CLIENT, ip)
}

fn dns_counters(sandbox: &TestSandbox) -> Value {
    let all = sandbox.porin_json(&["policy", "get", "--node", "node-1"]);
    all[0]["dns_proxy"]["counters"].clone()
}

#[test]
fn payments_egress_dns_and_fqdn_policy() {
    let started = Instant::now();
    let sandbox = TestSandbox::up_with(
        &[
            ("10-pods.yaml", manifests().as_str()),
            ("50-payments-egress.yaml", PAYMENTS_EGRESS),
        ],
        Some("[plugins.policy]\nenabled = true\n"),
    );
    let _web = external_web(&sandbox, &[SECRETS_IP, BUCKET_IP, EVIL_IP]);
    let dns = str_of(&sandbox.endpoint("kube-system/kube-dns")["endpoint"]["ipv4"]).to_string();

    // Allowed names resolve, over UDP and TCP, CNAME chain included.
    let first = wait_for(Duration::from_secs(15), || {
        let (status, addrs) = dig(&sandbox, &dns, SECRETS, false);
        (status == "NOERROR" && !addrs.is_empty()).then_some(addrs)
    });
    assert_eq!(
        first,
        Some(vec![SECRETS_IP.to_string()]),
        "{SECRETS} must resolve\n{}",
        sandbox.agent_logs()
    );
    assert_eq!(
        dig(&sandbox, &dns, BUCKET, true),
        ("NOERROR".into(), vec![BUCKET_IP.into()])
    );
    assert_eq!(
        dig(&sandbox, &dns, ALIAS, false),
        ("NOERROR".into(), vec![BUCKET_IP.into()])
    );
    // `*` allows every query, but no toFQDNs selector matches this one.
    assert_eq!(
        dig(&sandbox, &dns, EVIL, false),
        ("NOERROR".into(), vec![EVIL_IP.into()])
    );

    // Connections to the learned addresses work; to the refused name's address they drop.
    // (The web server may still be starting: retry briefly.)
    let reached = wait_for(Duration::from_secs(5), || {
        curl_ok(&sandbox, SECRETS_IP).then_some(())
    });
    assert!(
        reached.is_some(),
        "{SECRETS_IP}:443\nflows: {:#?}\n{}",
        sandbox
            .flows(200)
            .into_iter()
            .filter(|f| f["IP"]["destination"] == SECRETS_IP)
            .collect::<Vec<_>>(),
        sandbox.agent_logs()
    );
    assert!(curl_ok(&sandbox, BUCKET_IP), "{BUCKET_IP}:443");
    assert!(!curl_ok(&sandbox, EVIL_IP), "{EVIL_IP} must be dropped");
    let drop = wait_for(Duration::from_secs(10), || {
        sandbox.flows(500).into_iter().find(|f| {
            f["verdict"] == "DROPPED"
                && f["IP"]["destination"] == EVIL_IP
                && f["source"]["pod_name"] == "payments-api"
        })
    })
    .unwrap_or_else(|| panic!("no drop flow to {EVIL_IP}"));
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED", "{drop}");

    // DNS rules narrowed to the FQDN selectors: other names are refused by the proxy.
    std::fs::write(
        manifest_path(&sandbox, "50-payments-egress.yaml"),
        strict_policy(),
    )
    .expect("rewrite the policy");
    let refused = wait_for(Duration::from_secs(10), || {
        (dig(&sandbox, &dns, EVIL, false).0 == "REFUSED").then_some(())
    });
    assert!(
        refused.is_some(),
        "{EVIL} must be REFUSED\n{}",
        sandbox.agent_logs()
    );
    assert_eq!(dig(&sandbox, &dns, EVIL, true).0, "REFUSED");
    assert_eq!(dig(&sandbox, &dns, SECRETS, true).0, "NOERROR");

    // Malformed queries: answered (FORMERR) or dropped, counted; the proxy keeps serving.
    // UDP: a truncated header and a compression-pointer loop; TCP: an oversized query
    // (over UDP it would be fragmented, and only first fragments are redirected).
    let garbage = format!(
        "import socket, struct\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.settimeout(1)\n\
         for m in [b'\\x00\\x01\\x01', b'\\x00\\x01\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c\\x00\\x01\\x00\\x01']:\n\
         \x20   s.sendto(m, ('{dns}', 53))\n\
         \x20   try: s.recv(512)\n\
         \x20   except OSError: pass\n\
         t=socket.create_connection(('{dns}', 53), timeout=2)\n\
         t.sendall(struct.pack('>H', 5000) + b'\\x00' * 5000)\n\
         try: t.recv(512)\n\
         except OSError: pass\n"
    );
    let out = sandbox.exec(CLIENT, &["python3", "-c", &garbage]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counters = dns_counters(&sandbox);
    assert!(
        counters["rejected_truncated"].as_u64() >= Some(1),
        "{counters}"
    );
    assert!(
        counters["rejected_malformed"].as_u64() >= Some(1),
        "{counters}"
    );
    assert!(
        counters["rejected_oversized"].as_u64() >= Some(1),
        "{counters}"
    );
    assert!(
        counters["rejected_refused"].as_u64() >= Some(2),
        "{counters}"
    );
    assert_eq!(
        dig(&sandbox, &dns, SECRETS, false).0,
        "NOERROR",
        "still serving"
    );

    // The agent of node-1 (the client's node, where its DNS proxy runs) is killed and
    // restarted during a loop of lookups and connections: no lookup fails.
    let script = format!(
        "fails=0; conn=0; for i in $(seq 1 40); do \
           a=$(dig +short +time=1 +tries=3 @{dns} {SECRETS}); \
           [ \"$a\" = \"{SECRETS_IP}\" ] || fails=$((fails+1)); \
           curl -s -o /dev/null -m 2 http://{SECRETS_IP}:443/ || conn=$((conn+1)); \
           sleep 0.1; done; echo \"$fails $conn\""
    );
    let looped = std::thread::scope(|s| {
        let lookups = s.spawn(|| sandbox.exec(CLIENT, &["sh", "-c", &script]));
        std::thread::sleep(Duration::from_millis(800));
        let out = sandbox.porin(&["sandbox", "restart-agent", "node-1", "--kill"]);
        assert!(
            out.status.success(),
            "restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lookups.join().expect("lookup loop")
    });
    let text = String::from_utf8_lossy(&looped.stdout).trim().to_string();
    let counts: Vec<u32> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "loop output: {text}");
    println!(
        "across the agent restart: {} failed lookups, {} failed connections",
        counts[0], counts[1]
    );
    assert_eq!(
        counts[0],
        0,
        "failed lookups across the agent restart\n{}",
        sandbox.agent_logs()
    );
    assert_eq!(counts[1], 0, "failed connections across the agent restart");
    // After the restart the proxy is back and refuses again.
    let back = wait_for(Duration::from_secs(10), || {
        (dig(&sandbox, &dns, EVIL, false).0 == "REFUSED").then_some(())
    });
    assert!(
        back.is_some(),
        "the restarted proxy refuses again\n{}",
        sandbox.agent_logs()
    );
    println!("fqdn e2e took {:?}", started.elapsed());
}
