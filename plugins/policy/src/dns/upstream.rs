//! Forwarding UDP queries upstream without a socket per query.
//!
//! A few unconnected UDP sockets are shared by every query of the node. A forwarded query
//! leaves with a fresh unpredictable id in its socket's id space; the socket's pending
//! table maps that id back to the client, the client's id and the question. One reader
//! task per socket releases the answers (the answer must come from the server the query
//! went to, with a pending id, and echo the question); a sweeper answers SERVFAIL for the
//! queries whose server did not answer in time.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::message::Query;
use crate::proxy::Transport;

/// Upstream sockets (each has its own 16-bit id space).
pub const UPSTREAM_SOCKETS: usize = 4;
/// Queries in flight per socket before the next socket is tried (ids must stay guessable
/// only with low odds: a quarter of the id space at most).
const MAX_PENDING_PER_SOCKET: usize = 16_384;

/// A query waiting for its server's answer.
#[derive(Debug)]
pub struct Pending {
    pub client: SocketAddr,
    /// The id the client chose (restored in the answer).
    pub client_id: u16,
    pub upstream: SocketAddrV4,
    pub endpoint: u32,
    /// The identity of the server, as the datapath recorded it.
    pub upstream_identity: u32,
    pub query: Box<Query>,
    pub transport: Transport,
    pub sent: Instant,
}

/// A query that could not be sent, with why.
#[derive(Debug)]
pub struct Unsent {
    pub error: ForwardError,
    pub pending: Pending,
}

/// Why a query could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0} queries in flight on every upstream socket")]
    Overloaded(usize),
    #[error("sending to {upstream}: {source}")]
    Send {
        upstream: SocketAddrV4,
        source: std::io::Error,
    },
}

/// One shared upstream socket and its pending queries.
pub struct UpstreamSocket {
    pub socket: UdpSocket,
    pending: Mutex<HashMap<u16, Pending>>,
    ids: RandomState,
    counter: AtomicU64,
}

impl UpstreamSocket {
    fn new(socket: UdpSocket) -> Self {
        Self {
            socket,
            pending: Mutex::new(HashMap::new()),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u16, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A keyed hash of a counter: ids an off-path attacker cannot predict.
    fn next_id(&self) -> u16 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (self.ids.hash_one(n) & 0xffff) as u16
    }

    /// Registers `pending` under a free id; `None` when the socket is full.
    fn register(&self, pending: Pending) -> Result<u16, Pending> {
        let mut table = self.pending();
        if table.len() >= MAX_PENDING_PER_SOCKET {
            return Err(pending);
        }
        loop {
            let id = self.next_id();
            if let Entry::Vacant(slot) = table.entry(id) {
                slot.insert(pending);
                return Ok(id);
            }
        }
    }

    /// The pending query answered by `id` from `from`; a reply from another address
    /// leaves the query pending (it is not the server's).
    pub fn take(&self, id: u16, from: SocketAddr) -> Option<Pending> {
        let mut table = self.pending();
        match table.get(&id) {
            Some(p) if SocketAddr::V4(p.upstream) == from => table.remove(&id),
            _ => None,
        }
    }

    fn forget(&self, id: u16) -> Option<Pending> {
        self.pending().remove(&id)
    }

    /// Removes and returns the queries sent before `deadline`.
    pub fn expire(&self, deadline: Instant) -> Vec<Pending> {
        let mut table = self.pending();
        if table.values().all(|p| p.sent >= deadline) {
            return Vec::new();
        }
        let expired: Vec<u16> = table
            .iter()
            .filter(|(_, p)| p.sent < deadline)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| table.remove(&id))
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.pending().len()
    }
}

/// The node's upstream sockets.
pub struct Upstreams {
    pub sockets: Vec<std::sync::Arc<UpstreamSocket>>,
    next: AtomicUsize,
    pub timeout: Duration,
}

impl Upstreams {
    /// Binds [`UPSTREAM_SOCKETS`] sockets on ephemeral ports, registered with `runtime`'s
    /// reactor: the proxy's, whatever runtime the caller runs on. Registered with the
    /// agent's, every answer woke an agent thread first, which then woke the proxy's
    /// reader (two cross-thread wakeups per answer, each a context switch).
    pub fn bind(timeout: Duration, runtime: &tokio::runtime::Handle) -> std::io::Result<Self> {
        let _reactor = runtime.enter();
        let mut sockets = Vec::with_capacity(UPSTREAM_SOCKETS);
        for _ in 0..UPSTREAM_SOCKETS {
            let std_socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            std_socket.set_nonblocking(true)?;
            sockets.push(std::sync::Arc::new(UpstreamSocket::new(
                UdpSocket::from_std(std_socket)?,
            )));
        }
        Ok(Self {
            sockets,
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// The socket the queries of a new batch go to first. The sockets take turns batch by
    /// batch, not query by query: a batch's queries then leave with one `sendmmsg` and
    /// their answers come back to one reader, in batches too.
    pub fn next_socket(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.sockets.len().max(1)
    }

    /// Registers `pending` under a fresh id on socket `first`, or the next one with room
    /// when it is full: the socket's index and the id, which the caller writes into the
    /// query before sending it there.
    pub fn register(&self, first: usize, pending: Pending) -> Result<(usize, u16), Box<Unsent>> {
        let mut pending = pending;
        for i in 0..self.sockets.len() {
            let index = (first + i) % self.sockets.len();
            match self.sockets[index].register(pending) {
                Ok(id) => return Ok((index, id)),
                Err(back) => pending = back,
            }
        }
        Err(Box::new(Unsent {
            error: ForwardError::Overloaded(MAX_PENDING_PER_SOCKET * self.sockets.len()),
            pending,
        }))
    }

    /// Takes back a query registered on socket `index` whose datagram could not be sent
    /// (`None`: answered or expired meanwhile).
    pub fn unsent(&self, index: usize, id: u16, error: std::io::Error) -> Option<Box<Unsent>> {
        let pending = self.sockets.get(index)?.forget(id)?;
        Some(Box::new(Unsent {
            error: ForwardError::Send {
                upstream: pending.upstream,
                source: error,
            },
            pending,
        }))
    }

    /// Queries whose server did not answer within the timeout.
    pub fn expire(&self, now: Instant) -> Vec<Pending> {
        let Some(deadline) = now.checked_sub(self.timeout) else {
            return Vec::new();
        };
        self.sockets
            .iter()
            .flat_map(|s| s.expire(deadline))
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.sockets.iter().map(|s| s.in_flight()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::{Parsed, parse_query};
    use hickory_proto::op::Message;
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn pending(upstream: SocketAddrV4, sent: Instant) -> Pending {
        let mut m = Message::new();
        m.add_query(hickory_proto::op::Query::query(
            Name::from_str("a.example.").expect("name"),
            RecordType::A,
        ));
        let Parsed::Query(query) = parse_query(&m.to_vec().expect("encode")) else {
            panic!("query")
        };
        Pending {
            client: "10.0.0.1:5000".parse().expect("addr"),
            client_id: 7,
            upstream,
            endpoint: 1,
            upstream_identity: 2,
            query,
            transport: Transport::Udp,
            sent,
        }
    }

    /// The sockets are served by the runtime they were bound for, not the caller's: here
    /// the caller runs no runtime at all and then blocks, and an answer still wakes the
    /// reader on the proxy's runtime.
    #[test]
    fn sockets_belong_to_the_proxy_runtime() {
        let proxy = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let upstreams = Upstreams::bind(Duration::from_secs(1), proxy.handle()).expect("bind");
        let socket = upstreams.sockets[0].clone();
        let to = socket.socket.local_addr().expect("addr").port();
        let reader = proxy.spawn(async move {
            let mut buf = [0u8; 16];
            socket.socket.readable().await.expect("readable");
            socket.socket.try_recv(&mut buf).expect("datagram")
        });
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        sender.send_to(b"answer", ("127.0.0.1", to)).expect("send");
        let got = proxy
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), reader).await })
            .expect("the proxy runtime's reader woke up")
            .expect("reader task");
        assert_eq!(got, 6);
    }

    #[tokio::test]
    async fn ids_map_back_only_from_the_server_asked() {
        let up: SocketAddrV4 = "127.0.0.1:53".parse().expect("addr");
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        std_socket.set_nonblocking(true).expect("nonblocking");
        let socket = UpstreamSocket::new(UdpSocket::from_std(std_socket).expect("tokio"));
        let now = Instant::now();
        let ids: Vec<u16> = (0..100)
            .map(|_| socket.register(pending(up, now)).expect("room"))
            .collect();
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 100, "ids are unique while pending");
        assert!(
            socket
                .take(ids[0], "127.0.0.2:53".parse().expect("addr"))
                .is_none()
        );
        let p = socket
            .take(ids[0], SocketAddr::V4(up))
            .expect("the server's answer");
        assert_eq!(p.client_id, 7);
        assert!(
            socket.take(ids[0], SocketAddr::V4(up)).is_none(),
            "answered once"
        );
        assert_eq!(socket.in_flight(), 99);
        assert_eq!(socket.expire(now).len(), 0);
        assert_eq!(socket.expire(now + Duration::from_millis(1)).len(), 99);
    }
}
