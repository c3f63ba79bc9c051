//! New TCP connections per second: the client opens a connection, sends a few
//! bytes, reads them back and closes; the server echoes and waits for the
//! client's close.
//!
//! Neither end may hide the datapath: the server accepts from a pool of
//! threads (more than the client's concurrency), and the client closes with
//! SO_LINGER 0 (a reset), so neither side keeps TIME_WAIT sockets and the
//! client never runs out of source ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;

/// How long one connection may take before it counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server waits for a client to close.
const SERVER_IDLE: Duration = Duration::from_secs(10);

/// What `conn-client` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnReport {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub conn_per_s: f64,
    pub concurrency: usize,
}

/// Serves forever: `threads` threads accept on `0.0.0.0:port` and echo one request
/// per connection.
pub fn serve(port: u16, threads: usize) -> Result<(), BenchError> {
    super::connect::serve_threads("conn-server", port, threads, accept_loop)
}

fn accept_loop(listener: &TcpListener) {
    loop {
        // Errors of one connection (a reset, a timeout) only end that connection.
        if let Ok((stream, _)) = listener.accept() {
            let _ = echo_once(stream);
        }
    }
}

fn echo_once(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SERVER_IDLE))?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    stream.write_all(buf.get(..n).unwrap_or_default())?;
    // Wait for the client's close (a reset), so the server holds no TIME_WAIT.
    while stream.read(&mut buf)? > 0 {}
    Ok(())
}

/// Opens connections to `addr` from `concurrency` threads for `duration`.
pub fn run_client(
    addr: SocketAddr,
    duration: Duration,
    concurrency: usize,
    payload: usize,
) -> Result<ConnReport, BenchError> {
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..concurrency)
        .map(|_| std::thread::spawn(move || client_loop(addr, deadline, payload)))
        .collect();
    let mut connections = 0;
    let mut errors = 0;
    let mut last_error = String::new();
    for handle in handles {
        let (ok, failed, last) = handle
            .join()
            .unwrap_or((0, 1, "thread panicked".to_owned()));
        connections += ok;
        errors += failed;
        if !last.is_empty() {
            last_error = last;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if connections == 0 {
        return Err(BenchError::NoConnections {
            errors,
            last: last_error,
        });
    }
    if errors > 0 {
        eprintln!("conn-client: {errors} failed connections (last: {last_error})");
    }
    Ok(ConnReport {
        connections,
        errors,
        seconds,
        conn_per_s: connections as f64 / seconds,
        concurrency,
    })
}

/// One thread's connections: (succeeded, failed, last error).
fn client_loop(addr: SocketAddr, deadline: Instant, payload: usize) -> (u64, u64, String) {
    let request = vec![b'p'; payload];
    let mut reply = vec![0u8; payload];
    let (mut ok, mut failed, mut last) = (0, 0, String::new());
    while Instant::now() < deadline {
        match one_connection(addr, &request, &mut reply) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                last = e.to_string();
                // A refused or unreachable server must not turn into a busy loop.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    (ok, failed, last)
}

fn one_connection(addr: SocketAddr, request: &[u8], reply: &mut [u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    super::connect::set_linger_zero(stream.as_raw_fd())?;
    stream.write_all(request)?;
    stream.read_exact(reply)?;
    if reply != request {
        return Err(std::io::Error::other("the server echoed something else"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_counts_connections_to_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        for _ in 0..4 {
            let listener = listener.try_clone().expect("clone");
            std::thread::spawn(move || accept_loop(&listener));
        }
        let report = run_client(addr, Duration::from_millis(300), 2, 8).expect("client");
        assert!(report.connections > 10, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(report.conn_per_s > 0.0);
    }

    #[test]
    fn client_without_server_fails() {
        // Bind then drop to find a port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let err = run_client(addr, Duration::from_millis(50), 1, 8).expect_err("refused");
        assert!(matches!(err, BenchError::NoConnections { .. }), "{err}");
    }
}
