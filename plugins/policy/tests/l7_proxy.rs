//! The L7 proxy on loopback with the seed article's `admin-api-access`:
//! clients bound to distinct 127/8 addresses stand for pods of `monitoring`,
//! `ops` and `default`; a tokio server stands for `payments-admin-api`. The
//! client connects to the proxy, which is told the original destination
//! explicitly ([`FixedDestination`]) as the datapath redirect would.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use porin_plugin_sdk::{L7Kind, L7Record, Verdict};
use porin_policy::l7::{
    FixedDestination, L7Proxy, L7Sink, NamedPortView, PolicySet, ResolvedPeer, SharedPolicies,
    StaticPeers,
};
use porin_policy::model::Labels;
use porin_policy::parse::parse_file;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const ADMIN: &str = include_str!("../../../examples/policies/admin-api-access.yaml");

#[derive(Default)]
struct Records(Mutex<Vec<L7Record>>);

impl L7Sink for Records {
    fn publish(&self, record: L7Record) {
        self.0.lock().expect("lock").push(record);
    }
}

fn peer(identity: u32, labels: &str) -> ResolvedPeer {
    ResolvedPeer {
        identity,
        labels: Labels::parse_list(labels).expect("labels"),
    }
}

/// The seed's pods at these addresses: the admin API, prometheus (monitoring) and ops.
fn seed_peers(admin: &str, monitoring: &str, ops: &str) -> StaticPeers {
    let pods = [
        (
            admin,
            1001,
            "k8s:app=payments-admin-api,k8s:io.kubernetes.pod.namespace=payments",
        ),
        (
            monitoring,
            1002,
            "k8s:app=prometheus,k8s:io.kubernetes.pod.namespace=monitoring",
        ),
        (
            ops,
            1003,
            "k8s:app=ops-toolbox,k8s:io.kubernetes.pod.namespace=ops",
        ),
    ];
    StaticPeers(
        pods.into_iter()
            .map(|(ip, id, labels)| (ip.parse().expect("ip"), peer(id, labels)))
            .collect(),
    )
}

/// An HTTP/1.1 server answering `200 <method> <path>` on every request, with keep-alive.
async fn server(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind server");
    let local = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let mut parts = line.split(' ');
                        let body = format!(
                            "{} {}",
                            parts.next().unwrap_or_default(),
                            parts.next().unwrap_or_default()
                        );
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    local
}

/// Connect to `proxy` from `from` (a 127/8 address).
async fn connect(from: &str, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind client");
    socket.connect(proxy).await.expect("connect to proxy")
}

/// Send one request on `stream` and read one response: (status, body).
async fn request(stream: &mut TcpStream, method: &str, path: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin.payments:8080\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ncontent-length: 0\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("length"));
        if text.len() >= end + 4 + len {
            let status = head[9..12].parse().expect("status");
            return (status, text[end + 4..end + 4 + len].to_owned());
        }
    }
}

#[tokio::test]
async fn admin_api_access_through_the_proxy() {
    let parsed = parse_file("admin-api-access.yaml", ADMIN);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let peers = seed_peers("127.77.7.1", "127.0.0.2", "127.0.0.3");
    let records = Arc::new(Records::default());
    // The policy names port 8080: the original destination carries it (an
    // address of its own so parallel tests do not collide on the port).
    let upstream_8080 = server("127.77.7.1:8080").await;
    let proxy = L7Proxy {
        policies: Arc::new(SharedPolicies::new(PolicySet {
            policies: parsed.policies,
            ..PolicySet::default()
        })),
        peers: Arc::new(peers),
        original: Arc::new(FixedDestination(upstream_8080)),
        sink: records.clone(),
    }
    .start("127.0.0.1:0".parse().expect("addr"))
    .expect("proxy");

    // monitoring: GET /metrics passes, several times on one keep-alive connection.
    let mut monitoring = connect("127.0.0.2", proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(
            request(&mut monitoring, "GET", "/metrics").await,
            (200, "GET /metrics".to_owned())
        );
    }
    // POST and other paths get Cilium's 403, and the connection stays usable.
    assert_eq!(
        request(&mut monitoring, "POST", "/metrics").await,
        (403, "Access denied\r\n".to_owned())
    );
    assert_eq!(request(&mut monitoring, "GET", "/admin/users").await.0, 403);
    assert_eq!(request(&mut monitoring, "GET", "/metrics").await.0, 200);

    // ops: full access.
    let mut ops = connect("127.0.0.3", proxy.addr).await;
    assert_eq!(
        request(&mut ops, "POST", "/admin/users").await,
        (200, "POST /admin/users".to_owned())
    );
    assert_eq!(request(&mut ops, "DELETE", "/metrics").await.0, 200);

    // Anyone else is denied (the datapath would drop them at L4).
    let mut other = connect("127.0.0.4", proxy.addr).await;
    assert_eq!(request(&mut other, "GET", "/metrics").await.0, 403);

    let records = records.0.lock().expect("lock").clone();
    let responses: Vec<&L7Record> = records
        .iter()
        .filter(|r| r.kind == L7Kind::Response)
        .collect();
    assert_eq!(responses.len(), 9, "{records:#?}");
    let denied_post = records
        .iter()
        .find(|r| r.kind == L7Kind::Request && r.method == "POST" && r.src_identity == 1002)
        .expect("POST request record");
    assert_eq!(denied_post.verdict, Verdict::Dropped);
    assert_eq!(denied_post.url, "http://admin.payments:8080/metrics");
    assert_eq!(denied_post.protocol, "HTTP/1.1");
    assert_eq!(denied_post.dst_identity, 1001);
    assert_eq!(
        denied_post.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let ok = responses
        .iter()
        .find(|r| r.method == "GET" && r.code == 200)
        .expect("GET response");
    assert_eq!(ok.verdict, Verdict::Forwarded);
    assert!(ok.latency_ns > 0);
    assert!(
        responses
            .iter()
            .any(|r| r.method == "POST" && r.code == 403 && r.verdict == Verdict::Dropped)
    );
}

/// `admin-api-access` with `port: http` instead of 8080: the proxy resolves the name
/// against the destination pod's container ports (`http` -> 8080), as the datapath's
/// entries do; without them nothing on the port is allowed.
#[tokio::test]
async fn named_ports_resolve_against_the_destination_pod() {
    let named = ADMIN.replace("port: \"8080\"", "port: http");
    assert_ne!(named, ADMIN);
    let parsed = parse_file("admin-api-access-named.yaml", &named);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let admin: std::net::IpAddr = "127.77.7.2".parse().expect("ip");
    let peers = seed_peers("127.77.7.2", "127.0.0.5", "127.0.0.6");
    let upstream = server("127.77.7.2:8080").await;
    let with_names = PolicySet {
        policies: parsed.policies.clone(),
        named_ports: NamedPortView {
            by_address: HashMap::from([(admin, BTreeMap::from([("http".to_owned(), 8080)]))]),
            ..NamedPortView::default()
        },
        ..PolicySet::default()
    };
    let policies = Arc::new(SharedPolicies::new(with_names));
    let proxy = L7Proxy {
        policies: policies.clone(),
        peers: Arc::new(peers),
        original: Arc::new(FixedDestination(upstream)),
        sink: Arc::new(Records::default()),
    }
    .start("127.0.0.1:0".parse().expect("addr"))
    .expect("proxy");

    let mut monitoring = connect("127.0.0.5", proxy.addr).await;
    assert_eq!(
        request(&mut monitoring, "GET", "/metrics").await,
        (200, "GET /metrics".to_owned())
    );
    assert_eq!(request(&mut monitoring, "POST", "/metrics").await.0, 403);
    let mut ops = connect("127.0.0.6", proxy.addr).await;
    assert_eq!(request(&mut ops, "POST", "/admin/users").await.0, 200);

    // The pod no longer names the port (a new revision): the name resolves to nothing.
    policies.replace(PolicySet {
        policies: parsed.policies,
        ..PolicySet::default()
    });
    assert_eq!(request(&mut monitoring, "GET", "/metrics").await.0, 403);
}
