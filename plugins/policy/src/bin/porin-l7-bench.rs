//! `porin-l7-bench`: the two processes of `scripts/bench l7`.
//!
//! - `porin-l7-bench server LISTEN`: a minimal HTTP/1.1 server (hyper,
//!   keep-alive) answering every request with `200` and a short body.
//! - `porin-l7-bench proxy LISTEN UPSTREAM POLICY_FILE CLIENT_IP=LABELS SERVER_IP=LABELS`:
//!   the L7 proxy with the policies of POLICY_FILE, sending every connection
//!   to UPSTREAM (the original destination, given explicitly) and resolving
//!   the two addresses to the given labels. Records are dropped.
//!
//! Both run until killed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use porin_policy::l7::{
    FixedDestination, L7Proxy, PolicySet, ResolvedPeer, SharedPolicies, StaticPeers,
};
use porin_policy::model::Labels;
use porin_policy::parse::parse_file;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("porin-l7-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("server") if args.len() == 2 => server(&args[1]).await,
            Some("proxy") if args.len() == 6 => proxy(&args[1..]).await,
            _ => Err("usage: porin-l7-bench server LISTEN | proxy LISTEN UPSTREAM POLICY CLIENT_IP=LABELS SERVER_IP=LABELS".into()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("porin-l7-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn server(listen: &str) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("porin-l7-bench: server on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"payments_up 1\n",
                ))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn peer(arg: &str) -> Result<(std::net::IpAddr, ResolvedPeer), BoxError> {
    let (ip, labels) = arg
        .split_once('=')
        .ok_or(format!("{arg:?}: expected IP=LABELS"))?;
    Ok((
        ip.parse()?,
        ResolvedPeer {
            identity: 0,
            labels: Labels::parse_list(labels).map_err(|e| format!("{labels:?}: {e}"))?,
        },
    ))
}

async fn proxy(args: &[String]) -> Result<(), BoxError> {
    let listen: SocketAddr = args[0].parse()?;
    let upstream: SocketAddr = args[1].parse()?;
    let text = std::fs::read_to_string(&args[2]).map_err(|e| format!("{}: {e}", args[2]))?;
    let parsed = parse_file(&args[2], &text);
    if let Some(p) = parsed.problems.first() {
        return Err(format!("{p}").into());
    }
    let mut table = HashMap::new();
    for (i, arg) in args[3..].iter().enumerate() {
        let (ip, mut resolved) = peer(arg)?;
        resolved.identity = 1000 + u32::try_from(i)?;
        table.insert(ip, resolved);
    }
    let running = L7Proxy {
        policies: Arc::new(SharedPolicies::new(PolicySet {
            policies: parsed.policies,
            ..PolicySet::default()
        })),
        peers: Arc::new(StaticPeers(table)),
        original: Arc::new(FixedDestination(upstream)),
        sink: Arc::new(()),
    }
    .start(listen)?;
    eprintln!("porin-l7-bench: proxy on {} to {upstream}", running.addr);
    std::future::pending::<()>().await;
    Ok(())
}
