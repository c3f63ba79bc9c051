//! New TCP connections per second with as little userspace cost per connection as
//! possible, so that the number shows the datapath (the service translation, the
//! programs, conntrack) rather than the generator.
//!
//! The client keeps `inflight` nonblocking connects outstanding per thread on one
//! epoll instance: each connect that completes (the handshake's SYN-ACK arrived)
//! counts, its latency (connect() to writable) is recorded, and the socket is closed
//! at once with SO_LINGER 0, a reset, so no side keeps TIME_WAIT sockets and source
//! ports never run out. The server accepts and closes in a tight loop on a few
//! threads.
//!
//! `conn` (connect, echo, close) is the heavier cycle the `datapath` benchmark uses.

use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;

/// A connect that has not completed after this long counts as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The accept queue (capped by net.core.somaxconn).
const ACCEPT_BACKLOG: libc::c_int = 4096;
/// After a failed connect, the slot waits this long before trying again, so a
/// refused or unreachable address does not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// What `connect-client` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectReport {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub conn_per_s: f64,
    pub threads: usize,
    pub inflight: usize,
    /// Median connect latency (connect() until the socket is writable), microseconds.
    pub p50_us: u64,
    /// 99th percentile connect latency, microseconds.
    pub p99_us: u64,
    /// The last error seen, if any.
    pub last_error: String,
}

/// Accepts on `0.0.0.0:port` from `threads` threads and closes every connection at
/// once. Serves forever.
pub fn serve(port: u16, threads: usize) -> Result<(), BenchError> {
    serve_threads("accept-server", port, threads, accept_and_close)
}

/// Listens on `0.0.0.0:port` (std sets SO_REUSEADDR) with a deep accept queue and runs
/// `handler` on `threads` threads sharing the listener, forever.
pub(crate) fn serve_threads(
    name: &str,
    port: u16,
    threads: usize,
    handler: fn(&TcpListener),
) -> Result<(), BenchError> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|source| BenchError::Io {
        op: "listen on",
        target: format!("0.0.0.0:{port}"),
        source,
    })?;
    // A deep accept queue: a burst of handshakes must not overflow it (the kernel
    // would drop SYNs and the client would wait out a 1 s retransmission).
    // listen() again on a listening socket only changes its backlog.
    // SAFETY: a valid listening socket owned by `listener`.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) } != 0 {
        return Err(BenchError::Io {
            op: "listen (backlog) on",
            target: format!("0.0.0.0:{port}"),
            source: std::io::Error::last_os_error(),
        });
    }
    eprintln!("{name}: listening on 0.0.0.0:{port} with {threads} threads");
    let mut handles = Vec::new();
    for _ in 0..threads {
        let listener = listener.try_clone().map_err(|source| BenchError::Io {
            op: "clone",
            target: "listener".to_owned(),
            source,
        })?;
        handles.push(std::thread::spawn(move || handler(&listener)));
    }
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

fn accept_and_close(listener: &TcpListener) {
    loop {
        // The stream is dropped at once: a FIN, never a reset, so the client's
        // connect always succeeds; the client's reset then ends the socket without
        // TIME_WAIT on either side.
        let _ = listener.accept();
    }
}

/// Opens connections to `addr` for `duration`, `inflight` at a time on each of
/// `threads` threads.
pub fn run_client(
    addr: SocketAddr,
    duration: Duration,
    threads: usize,
    inflight: usize,
) -> Result<ConnectReport, BenchError> {
    let SocketAddr::V4(addr) = addr else {
        return Err(BenchError::Usage(format!(
            "connect-client: {addr} is not an IPv4 address"
        )));
    };
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || client_thread(addr, deadline, inflight)))
        .collect();
    let mut total = ThreadResult::default();
    for handle in handles {
        match handle.join() {
            Ok(Ok(result)) => total.merge(result),
            Ok(Err(source)) => {
                return Err(BenchError::Io {
                    op: "epoll client on",
                    target: addr.to_string(),
                    source,
                });
            }
            Err(_) => total.fail("a client thread panicked".to_owned()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let connections = total.latencies_us.len() as u64;
    if connections == 0 {
        return Err(BenchError::NoConnections {
            errors: total.errors,
            last: total.last_error,
        });
    }
    total.latencies_us.sort_unstable();
    Ok(ConnectReport {
        connections,
        errors: total.errors,
        seconds,
        conn_per_s: connections as f64 / seconds,
        threads,
        inflight,
        p50_us: percentile(&total.latencies_us, 50),
        p99_us: percentile(&total.latencies_us, 99),
        last_error: total.last_error,
    })
}

/// The `p`th percentile of sorted values (nearest rank).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[derive(Default)]
struct ThreadResult {
    latencies_us: Vec<u64>,
    errors: u64,
    last_error: String,
}

impl ThreadResult {
    fn merge(&mut self, other: ThreadResult) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if !other.last_error.is_empty() {
            self.last_error = other.last_error;
        }
    }

    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.last_error = error;
    }
}

/// One outstanding connect (or a pause after a failure).
struct Slot {
    socket: Option<OwnedFd>,
    since: Instant,
}

fn client_thread(
    addr: SocketAddrV4,
    deadline: Instant,
    inflight: usize,
) -> std::io::Result<ThreadResult> {
    let epoll = Epoll::new()?;
    let mut result = ThreadResult::default();
    let mut slots: Vec<Slot> = Vec::with_capacity(inflight);
    for index in 0..inflight {
        let mut slot = Slot {
            socket: None,
            since: Instant::now(),
        };
        start(&epoll, &mut slot, index, addr, &mut result);
        slots.push(slot);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; inflight];
    let mut last_sweep = Instant::now();
    while Instant::now() < deadline {
        let ready = epoll.wait(&mut events, 50)?;
        for event in events.iter().take(ready) {
            let index = usize::try_from(event.u64).unwrap_or(usize::MAX);
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            let Some(socket) = slot.socket.take() else {
                continue;
            };
            match socket_error(socket.as_raw_fd()) {
                Ok(()) => {
                    let micros = slot.since.elapsed().as_micros();
                    result
                        .latencies_us
                        .push(u64::try_from(micros).unwrap_or(u64::MAX));
                    // Closing removes it from the epoll set; linger 0 sends a reset.
                    drop(socket);
                    start(&epoll, slot, index, addr, &mut result);
                }
                Err(e) => {
                    drop(socket);
                    result.fail(format!("connect to {addr}: {e}"));
                    slot.since = Instant::now();
                }
            }
        }
        // Timeouts and pauses: at most every few milliseconds.
        if last_sweep.elapsed() >= Duration::from_millis(5) {
            last_sweep = Instant::now();
            for (index, slot) in slots.iter_mut().enumerate() {
                match &slot.socket {
                    Some(_) if slot.since.elapsed() > CONNECT_TIMEOUT => {
                        slot.socket = None;
                        result.fail(format!("connect to {addr}: timed out"));
                        start(&epoll, slot, index, addr, &mut result);
                    }
                    None if slot.since.elapsed() > RETRY_PAUSE => {
                        start(&epoll, slot, index, addr, &mut result);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(result)
}

/// Starts a nonblocking connect in `slot`; a failure leaves the slot pausing.
fn start(epoll: &Epoll, slot: &mut Slot, index: usize, addr: SocketAddrV4, r: &mut ThreadResult) {
    slot.since = Instant::now();
    match connect_nonblocking(addr) {
        Ok(socket) => match epoll.add_writable(socket.as_raw_fd(), index as u64) {
            Ok(()) => slot.socket = Some(socket),
            Err(e) => r.fail(format!("epoll_ctl: {e}")),
        },
        Err(e) => r.fail(format!("connect to {addr}: {e}")),
    }
}

fn connect_nonblocking(addr: SocketAddrV4) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_linger_zero(fd)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid socket and a sockaddr_in that lives across the call, with its size.
    let rc = unsafe {
        libc::connect(
            fd,
            std::ptr::from_ref(&sin).cast(),
            socklen(std::mem::size_of::<libc::sockaddr_in>())?,
        )
    };
    if rc == 0 {
        return Ok(socket);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(socket)
    } else {
        Err(error)
    }
}

/// SO_ERROR of a socket whose connect finished: Ok when it is connected.
fn socket_error(fd: RawFd) -> std::io::Result<()> {
    let mut value: libc::c_int = 0;
    let mut len = socklen(std::mem::size_of::<libc::c_int>())?;
    // SAFETY: a valid socket, a c_int and its length that live across the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            std::ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match value {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// SO_LINGER {on, 0}: close() sends a reset and leaves no TIME_WAIT socket.
pub(crate) fn set_linger_zero(fd: RawFd) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor, and a pointer to a `linger` that lives across
    // the call with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            socklen(std::mem::size_of::<libc::linger>())?,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn socklen(size: usize) -> std::io::Result<libc::socklen_t> {
    libc::socklen_t::try_from(size).map_err(std::io::Error::other)
}

/// An epoll instance.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> std::io::Result<Self> {
        // SAFETY: plain epoll_create1(2); the descriptor is owned right away.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Waits for `fd` to become writable (or fail), once.
    fn add_writable(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLONESHOT) as u32,
            u64: token,
        };
        // SAFETY: valid epoll and socket descriptors and an event that lives across the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                std::ptr::from_mut(&mut event),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Ready events into `events`; returns how many.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> std::io::Result<usize> {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: a valid epoll descriptor and a buffer of `max` events.
        let rc =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if rc >= 0 {
            return Ok(usize::try_from(rc).unwrap_or(0));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 99), 7);
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), 50);
        assert_eq!(percentile(&values, 99), 99);
    }

    #[test]
    fn client_counts_connects_to_a_local_accept_server() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        for _ in 0..2 {
            let listener = listener.try_clone().expect("clone");
            std::thread::spawn(move || accept_and_close(&listener));
        }
        let report = run_client(addr, Duration::from_millis(300), 2, 8).expect("client");
        assert!(report.connections > 10, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(
            report.p50_us > 0 && report.p50_us <= report.p99_us,
            "{report:?}"
        );
    }

    #[test]
    fn refused_connects_are_errors_not_a_busy_loop() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let err = run_client(addr, Duration::from_millis(100), 1, 4).expect_err("refused");
        let BenchError::NoConnections { errors, last } = err else {
            panic!("want NoConnections, got {err}");
        };
        // 4 slots pausing 10 ms after each refusal: at most a few dozen attempts.
        assert!(errors > 0 && errors < 200, "{errors} errors");
        assert!(last.contains("refused"), "{last}");
    }
}
