//! The DNS proxy's sockets: UDP and TCP on {node IP, dns_proxy_port}, where the datapath
//! steers the DNS of endpoints with DNS rules. Each query: read and check it, find the
//! client's original server and endpoint, refuse names the endpoint's rules do not allow,
//! forward the others to that server, learn the FQDN addresses of the answer (ipcache
//! first), then release the answer.
//!
//! UDP queries are not tasks: the receiving loop takes the waiting queries in batches
//! (`recvmmsg`, [`super::mmsg`]), decides on each and sends the allowed ones upstream
//! through the shared sockets of [`Upstreams`] (`sendmmsg`), and each upstream socket's
//! reader releases the answers in batches the same way. TCP clients get a task each and
//! their own upstream connection.

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
use super::mmsg::{NotSent, Outgoing, Received};
use super::record::Exchange;
use super::redirects::BatchRedirects;
use super::state::{DnsShared, DnsView};
use super::upstream::{Pending, UpstreamSocket, Upstreams};
use crate::proxy::Transport;

/// How often unanswered queries are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Largest answer read from an upstream over UDP.
const MAX_UPSTREAM_ANSWER: usize = 65_535;
/// Answers one `recvmmsg` takes from an upstream socket. Their buffers are allocated
/// zeroed and untouched beyond each answer's length, so most of their pages are never
/// made resident.
const ANSWER_BATCH: usize = 32;

/// What to do with one client message.
enum Decision {
    /// Answer the client with these bytes (errors, REFUSED).
    Reply(Vec<u8>),
    /// Nothing to answer.
    Drop,
    /// Allowed: forward to the original server.
    Forward(Pending),
}

/// Serves UDP queries until the task is aborted. Each wake-up takes every waiting query
/// with one `recvmmsg` (up to [`DRAIN_LIMIT`]), decides on each, sends the allowed ones
/// with one `sendmmsg` per upstream socket and the proxy's own replies (REFUSED, errors)
/// with one more, then publishes the batch's records at once ([`RecordBatch`]). No
/// explicit yield between batches: each one costs an `epoll_wait`, and `readable()` spends
/// tokio's cooperative budget, which makes the task give way to the answer readers often
/// enough.
pub async fn serve_udp(
    listener: Arc<UdpSocket>,
    upstreams: Arc<Upstreams>,
    shared: Arc<DnsShared>,
) {
    let mut received = Received::new(DRAIN_LIMIT, MAX_UDP_MESSAGE + 1);
    let mut to_upstreams: Vec<Outgoing> = upstreams
        .sockets
        .iter()
        .map(|_| Outgoing::default())
        .collect();
    let mut replies = Outgoing::default();
    let mut failed = Vec::new();
    let mut redirects = BatchRedirects::default();
    let mut records = RecordBatch::with_capacity(2 * DRAIN_LIMIT);
    loop {
        if let Err(e) = listener.readable().await {
            debug!(error = %e, "DNS proxy: waiting for queries");
            continue;
        }
        match received.try_recv(&listener) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(error = %e, "DNS proxy: receiving");
                continue;
            }
        }
        records.begin(&shared);
        let view = shared.view();
        let first_socket = upstreams.next_socket();
        for i in 0..received.count() {
            let Some((bytes, Some(client))) = received.get_mut(i) else {
                continue;
            };
            let decision = decide(
                &shared,
                &view,
                bytes,
                SocketAddr::V4(client),
                Transport::Udp,
                &mut redirects,
                &mut records,
            );
            match decision {
                Decision::Reply(reply) => replies.push(client, &reply, 0),
                Decision::Drop => {}
                Decision::Forward(pending) => {
                    let upstream = pending.upstream;
                    match upstreams.register(first_socket, pending) {
                        Ok((socket, id)) => {
                            bytes[..2].copy_from_slice(&id.to_be_bytes());
                            to_upstreams[socket].push(upstream, bytes, id);
                        }
                        Err(unsent) => {
                            debug!(error = %unsent.error, "DNS proxy: forwarding");
                            if let Some(reply) =
                                server_failure(&unsent.pending, &shared, &mut records)
                            {
                                replies.push(client, &reply, 0);
                            }
                        }
                    }
                }
            }
        }
        redirects.clear();
        for (index, queries) in to_upstreams.iter_mut().enumerate() {
            if queries.is_empty() {
                continue;
            }
            queries
                .send_all(&upstreams.sockets[index].socket, &mut failed)
                .await;
            for not_sent in failed.drain(..) {
                let Some(unsent) = upstreams.unsent(index, not_sent.tag, not_sent.error) else {
                    continue; // answered or expired meanwhile
                };
                debug!(error = %unsent.error, "DNS proxy: forwarding");
                if let (Some(reply), SocketAddr::V4(client)) = (
                    server_failure(&unsent.pending, &shared, &mut records),
                    unsent.pending.client,
                ) {
                    replies.push(client, &reply, 0);
                }
            }
        }
        send_replies(&listener, &mut replies, &mut failed).await;
        records.flush(&shared);
    }
}

/// Sends the queued replies to their clients (failures are logged: the client retries).
async fn send_replies(listener: &UdpSocket, replies: &mut Outgoing, failed: &mut Vec<NotSent>) {
    if replies.is_empty() {
        return;
    }
    replies.send_all(listener, failed).await;
    for not_sent in failed.drain(..) {
        debug!(error = %not_sent.error, client = %not_sent.to, "DNS proxy: answering");
    }
}

/// Releases the answers arriving on one upstream socket until the task is aborted,
/// in batches like [`serve_udp`]: one `recvmmsg` for the answers waiting, one
/// `sendmmsg` for the replies to the clients.
pub async fn read_answers(
    socket: Arc<UpstreamSocket>,
    listener: Arc<UdpSocket>,
    shared: Arc<DnsShared>,
) {
    let mut received = Received::new(ANSWER_BATCH, MAX_UPSTREAM_ANSWER);
    let mut replies = Outgoing::default();
    let mut failed = Vec::new();
    let mut records = RecordBatch::with_capacity(ANSWER_BATCH);
    loop {
        if let Err(e) = socket.socket.readable().await {
            debug!(error = %e, "DNS proxy: waiting for answers");
            continue;
        }
        match received.try_recv(&socket.socket) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(error = %e, "DNS proxy: receiving from upstream");
                continue;
            }
        }
        records.begin(&shared);
        for i in 0..received.count() {
            let Some((answer, from)) = received.get_mut(i) else {
                continue;
            };
            let pending = match (from, answer.len() >= 2) {
                (Some(from), true) => socket.take(
                    u16::from_be_bytes([answer[0], answer[1]]),
                    SocketAddr::V4(from),
                ),
                _ => None,
            };
            let Some(pending) = pending else {
                // Late (after SERVFAIL), duplicated, or not from the server asked.
                shared.counters.reject(Rejection::StrayAnswer);
                continue;
            };
            let SocketAddr::V4(client) = pending.client else {
                continue; // UDP clients are IPv4 (the listener is)
            };
            answer[..2].copy_from_slice(&pending.client_id.to_be_bytes());
            match release(&shared, &pending, answer, &mut records) {
                Released::Answer => replies.push(client, answer, 0),
                Released::Instead(reply) => replies.push(client, &reply, 0),
                Released::Nothing => {}
            }
        }
        send_replies(&listener, &mut replies, &mut failed).await;
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
        let view = shared.view();
        let mut redirects = BatchRedirects::default();
        let decision = decide(
            shared,
            &view,
            &msg,
            client,
            Transport::Tcp,
            &mut redirects,
            &mut records,
        );
        let reply = match decision {
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

/// Reads one client message and decides on it by `view` (the policy in force when its
/// batch started).
fn decide(
    shared: &DnsShared,
    view: &DnsView,
    bytes: &[u8],
    client: SocketAddr,
    transport: Transport,
    redirects: &mut BatchRedirects,
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
    let redirect = match redirects.lookup(&shared.destinations, client, transport) {
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
    if !view
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
