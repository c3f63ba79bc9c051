//! The DNS proxy's sockets: UDP and TCP on {node IP, dns_proxy_port}, where the datapath
//! steers the DNS of endpoints with DNS rules. Each query: read and check it, find the
//! client's original server and endpoint, refuse names the endpoint's rules do not allow,
//! forward the others to that server, learn the FQDN addresses of the answer (ipcache
//! first), then release the answer.
//!
//! UDP queries are not tasks: the receiving loop decides and sends each query upstream
//! through the shared sockets of [`Upstreams`], and each upstream socket's reader
//! releases the answers. TCP clients get a task each and their own upstream connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use porin_plugin_sdk::Verdict;
use std::io::ErrorKind;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::debug;

use super::batch::{DRAIN_LIMIT, RecordBatch};
use super::message::{
    MAX_UDP_MESSAGE, Parsed, Rejection, answer_of, answer_with, parse_query, read_answer,
};
use super::record::Exchange;
use super::state::DnsShared;
use super::upstream::{Pending, UpstreamSocket, Upstreams};
use crate::proxy::Transport;

/// How often unanswered queries are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Largest answer read from an upstream over UDP.
const MAX_UPSTREAM_ANSWER: usize = 65_535;

/// What to do with one client message.
enum Decision {
    /// Answer the client with these bytes (errors, REFUSED).
    Reply(Vec<u8>),
    /// Nothing to answer.
    Drop,
    /// Allowed: forward to the original server.
    Forward(Pending),
}

/// Serves UDP queries until the task is aborted. The socket is drained without waiting
/// (up to [`DRAIN_LIMIT`] datagrams), then the records of the drain are published at
/// once ([`RecordBatch`]). No explicit yield between drains: each one costs an
/// `epoll_wait`, and `readable()` spends tokio's cooperative budget, which makes the task
/// give way to the answer readers often enough.
pub async fn serve_udp(
    listener: Arc<UdpSocket>,
    upstreams: Arc<Upstreams>,
    shared: Arc<DnsShared>,
) {
    let mut buf = vec![0u8; MAX_UDP_MESSAGE + 1];
    let mut records = RecordBatch::with_capacity(2 * DRAIN_LIMIT);
    loop {
        if let Err(e) = listener.readable().await {
            debug!(error = %e, "DNS proxy: waiting for queries");
            continue;
        }
        records.begin(&shared);
        for _ in 0..DRAIN_LIMIT {
            let (len, client) = match listener.try_recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "DNS proxy: receiving");
                    break;
                }
            };
            let decision = decide(&shared, &buf[..len], client, Transport::Udp, &mut records);
            let reply = match decision {
                Decision::Reply(reply) => reply,
                Decision::Drop => continue,
                Decision::Forward(pending) => {
                    match upstreams.forward(&mut buf[..len], pending).await {
                        Ok(()) => continue,
                        Err(unsent) => {
                            debug!(error = %unsent.error, "DNS proxy: forwarding");
                            match server_failure(&unsent.pending, &shared, &mut records) {
                                Some(reply) => reply,
                                None => continue,
                            }
                        }
                    }
                }
            };
            if let Err(e) = listener.send_to(&reply, client).await {
                debug!(error = %e, %client, "DNS proxy: answering");
            }
        }
        records.flush(&shared);
    }
}

/// Releases the answers arriving on one upstream socket until the task is aborted,
/// draining it like [`serve_udp`].
pub async fn read_answers(
    socket: Arc<UpstreamSocket>,
    listener: Arc<UdpSocket>,
    shared: Arc<DnsShared>,
) {
    let mut buf = vec![0u8; MAX_UPSTREAM_ANSWER];
    let mut records = RecordBatch::with_capacity(DRAIN_LIMIT);
    loop {
        if let Err(e) = socket.socket.readable().await {
            debug!(error = %e, "DNS proxy: waiting for answers");
            continue;
        }
        records.begin(&shared);
        for _ in 0..DRAIN_LIMIT {
            let (len, from) = match socket.socket.try_recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "DNS proxy: receiving from upstream");
                    break;
                }
            };
            let answer = &mut buf[..len];
            let Some(pending) = (len >= 2)
                .then(|| socket.take(u16::from_be_bytes([answer[0], answer[1]]), from))
                .flatten()
            else {
                // Late (after SERVFAIL), duplicated, or not from the server asked.
                shared.counters.reject(Rejection::StrayAnswer);
                continue;
            };
            answer[..2].copy_from_slice(&pending.client_id.to_be_bytes());
            let sent = match release(&shared, &pending, answer, &mut records) {
                Released::Answer => listener.send_to(answer, pending.client).await,
                Released::Instead(reply) => listener.send_to(&reply, pending.client).await,
                Released::Nothing => continue,
            };
            if let Err(e) = sent {
                debug!(error = %e, client = %pending.client, "DNS proxy: answering");
            }
        }
        records.flush(&shared);
    }
}

/// Answers SERVFAIL to the queries whose server did not answer in time.
pub async fn sweep_unanswered(
    upstreams: Arc<Upstreams>,
    listener: Arc<UdpSocket>,
    shared: Arc<DnsShared>,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut records = RecordBatch::with_capacity(0);
    loop {
        tick.tick().await;
        records.begin(&shared);
        for pending in upstreams.expire(Instant::now()) {
            if let Some(reply) = server_failure(&pending, &shared, &mut records) {
                let _ = listener.send_to(&reply, pending.client).await;
            }
        }
        records.flush(&shared);
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
        let mut records = RecordBatch::with_capacity(2);
        records.begin(shared);
        let reply = match decide(shared, &msg, client, Transport::Tcp, &mut records) {
            Decision::Reply(reply) => Some(reply),
            Decision::Drop => None,
            Decision::Forward(pending) => {
                records.flush(shared);
                forward_tcp(shared, &msg, &pending, &mut records).await
            }
        };
        records.flush(shared);
        let Some(reply) = reply else {
            return Ok(());
        };
        write_framed(&mut stream, &reply).await?;
    }
}

/// One TCP query to its server on a connection of its own; `None`: nothing to answer.
async fn forward_tcp(
    shared: &DnsShared,
    msg: &[u8],
    pending: &Pending,
    records: &mut RecordBatch,
) -> Option<Vec<u8>> {
    let upstream = SocketAddr::V4(pending.upstream);
    let answer = match tokio::time::timeout(shared.upstream_timeout, ask_tcp(msg, upstream)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            debug!(error = %e, %upstream, "DNS proxy: upstream");
            return server_failure(pending, shared, records);
        }
        Err(_) => return server_failure(pending, shared, records),
    };
    match release(shared, pending, &answer, records) {
        Released::Answer => Some(answer),
        Released::Instead(reply) => Some(reply),
        Released::Nothing => None,
    }
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("message over 64 KiB"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

async fn ask_tcp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads one client message and decides on it.
fn decide(
    shared: &DnsShared,
    bytes: &[u8],
    client: SocketAddr,
    transport: Transport,
    records: &mut RecordBatch,
) -> Decision {
    shared.counters.queries.fetch_add(1, Ordering::Relaxed);
    let query = match parse_query(bytes) {
        Parsed::Query(q) => q,
        Parsed::Reply(reply, why) => {
            shared.counters.reject(why);
            return Decision::Reply(reply);
        }
        Parsed::Drop(why) => {
            shared.counters.reject(why);
            return Decision::Drop;
        }
    };
    let redirect = match shared.destinations.lookup(client, transport) {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "DNS proxy: no original destination");
            shared.counters.reject(Rejection::NotRedirected);
            return Decision::Drop;
        }
    };
    let pending = Pending {
        client,
        client_id: query.message.id(),
        upstream: redirect.original_destination,
        endpoint: redirect.endpoint_id,
        upstream_identity: redirect.destination_identity,
        query,
        transport,
        sent: Instant::now(),
    };
    let exchange = Exchange::from(&pending);
    if !shared
        .view()
        .policy
        .allows(redirect.endpoint_id, &pending.query.name)
    {
        shared.counters.reject(Rejection::Refused);
        records.push(|| exchange.request(Verdict::Dropped));
        let refused = ResponseCode::Refused;
        records.push(|| exchange.own_reply(Verdict::Dropped, refused.into(), pending.sent));
        return match answer_with(&pending.query, refused) {
            Some(reply) => Decision::Reply(reply),
            None => Decision::Drop,
        };
    }
    records.push(|| exchange.request(Verdict::Forwarded));
    Decision::Forward(pending)
}

/// SERVFAIL for a query its server did not answer (in time, or at all).
fn server_failure(
    pending: &Pending,
    shared: &DnsShared,
    records: &mut RecordBatch,
) -> Option<Vec<u8>> {
    shared.counters.reject(Rejection::UpstreamTimeout);
    let code = ResponseCode::ServFail;
    records
        .push(|| Exchange::from(pending).own_reply(Verdict::Forwarded, code.into(), pending.sent));
    answer_with(&pending.query, code)
}

/// What goes back to the client for an upstream's answer.
enum Released {
    /// The answer itself, unchanged.
    Answer,
    /// Another reply (SERVFAIL for an unreadable answer).
    Instead(Vec<u8>),
    Nothing,
}

/// Parses the upstream's answer (its id already the client's) and learns its FQDN
/// addresses before it is released.
fn release(
    shared: &DnsShared,
    pending: &Pending,
    answer: &[u8],
    records: &mut RecordBatch,
) -> Released {
    match read_answer(answer).and_then(|m| answer_of(&m, &pending.query.name)) {
        Ok(a) if a.id == pending.client_id => {
            if !a.addresses.is_empty() {
                shared.learn(pending.endpoint, &a.names, &a.addresses);
            }
            shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            records.push(|| Exchange::from(pending).answer(&a, pending.sent));
            Released::Answer
        }
        _ => {
            shared.counters.reject(Rejection::BadUpstreamAnswer);
            let code = ResponseCode::ServFail;
            records.push(|| {
                Exchange::from(pending).own_reply(Verdict::Forwarded, code.into(), pending.sent)
            });
            match answer_with(&pending.query, code) {
                Some(reply) => Released::Instead(reply),
                None => Released::Nothing,
            }
        }
    }
}
