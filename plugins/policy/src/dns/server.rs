//! The DNS proxy's sockets: UDP and TCP on {node IP, dns_proxy_port}, where the datapath
//! steers the DNS of endpoints with DNS rules. Each query: read and check it, find the
//! client's original server and endpoint, refuse names the endpoint's rules do not allow,
//! forward the others to that server, learn the FQDN addresses of the answer (ipcache
//! first), then release the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::debug;

use super::message::{
    MAX_UDP_MESSAGE, Parsed, Query, Rejection, answer_with, parse_answer, parse_query,
};
use super::state::DnsShared;
use crate::proxy::Transport;

/// Serves UDP queries until the task is aborted.
pub async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<DnsShared>) {
    let mut buf = vec![0u8; MAX_UDP_MESSAGE + 1];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "DNS proxy: receiving");
                continue;
            }
        };
        let bytes = buf[..len].to_vec();
        let socket = socket.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(reply) = handle(&shared, &bytes, client, Transport::Udp).await
                && let Err(e) = socket.send_to(&reply, client).await
            {
                debug!(error = %e, %client, "DNS proxy: answering");
            }
        });
    }
}

/// Serves TCP connections until the task is aborted.
pub async fn serve_tcp(listener: TcpListener, shared: Arc<DnsShared>) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_client(stream, client, &shared).await {
                debug!(error = %e, %client, "DNS proxy: TCP client");
            }
        });
    }
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    client: SocketAddr,
    shared: &DnsShared,
) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return Ok(()); // the client closed
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).await?;
        match handle(shared, &msg, client, Transport::Tcp).await {
            Some(reply) => write_framed(&mut stream, &reply).await?,
            None => return Ok(()),
        }
    }
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("message over 64 KiB"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// One query from `client`; `None`: nothing to answer.
async fn handle(
    shared: &DnsShared,
    bytes: &[u8],
    client: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    shared.counters.queries.fetch_add(1, Ordering::Relaxed);
    let query = match parse_query(bytes) {
        Parsed::Query(q) => q,
        Parsed::Reply(reply, why) => {
            shared.counters.reject(why);
            return Some(reply);
        }
        Parsed::Drop(why) => {
            shared.counters.reject(why);
            return None;
        }
    };
    let redirect = match shared.destinations.lookup(client, transport) {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "DNS proxy: no original destination");
            shared.counters.reject(Rejection::NotRedirected);
            return None;
        }
    };
    if !shared
        .view()
        .policy
        .allows(redirect.endpoint_id, &query.name)
    {
        shared.counters.reject(Rejection::Refused);
        return answer_with(&query, ResponseCode::Refused);
    }
    let upstream = SocketAddr::V4(redirect.original_destination);
    let answer =
        match tokio::time::timeout(shared.upstream_timeout, forward(bytes, upstream, transport))
            .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                debug!(error = %e, %upstream, "DNS proxy: upstream");
                shared.counters.reject(Rejection::UpstreamTimeout);
                return answer_with(&query, ResponseCode::ServFail);
            }
            Err(_) => {
                shared.counters.reject(Rejection::UpstreamTimeout);
                return answer_with(&query, ResponseCode::ServFail);
            }
        };
    learn_and_release(shared, &query, redirect.endpoint_id, answer)
}

/// Parses the upstream's answer, learns its FQDN addresses, returns it unchanged.
fn learn_and_release(
    shared: &DnsShared,
    query: &Query,
    endpoint: u32,
    answer: Vec<u8>,
) -> Option<Vec<u8>> {
    match parse_answer(&answer, &query.name) {
        Ok(a) if a.id == query.message.id() => {
            if !a.addresses.is_empty() {
                shared.learn(endpoint, &a.names, &a.addresses);
            }
            shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            Some(answer)
        }
        _ => {
            shared.counters.reject(Rejection::BadUpstreamAnswer);
            answer_with(query, ResponseCode::ServFail)
        }
    }
}

/// Sends the query to the original server and waits for its answer.
async fn forward(
    query: &[u8],
    upstream: SocketAddr,
    transport: Transport,
) -> std::io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let socket = UdpSocket::bind("0.0.0.0:0").await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            let mut buf = vec![0u8; 65535];
            let len = socket.recv(&mut buf).await?;
            buf.truncate(len);
            Ok(buf)
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect(upstream).await?;
            write_framed(&mut stream, query).await?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            Ok(buf)
        }
    }
}
