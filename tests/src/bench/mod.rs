//! `porin-bench`: the measuring tools of `scripts/bench` (see docs/benchmarks.md).
//!
//! - [`conn`]: a TCP connection-rate server and client (connect, send a few
//!   bytes, read them back, close), meant to run inside two pods.
//! - [`connect`]: the connection-rate generator of the `lb` benchmark: many
//!   nonblocking connects in flight, a reset right after the handshake, connect
//!   latency percentiles; and a server that accepts and closes.
//! - [`report`]: reading iperf3's JSON and turning per-run samples into the
//!   one line of JSON a benchmark ends with.
//! - [`args`]: the command line of the `porin-bench` binary.

pub mod args;
pub mod conn;
pub mod connect;
pub mod report;

use std::path::PathBuf;

/// Errors of the benchmark tools.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}\n{usage}", usage = args::USAGE)]
    Usage(String),
    #[error("{op} {target}: {source}")]
    Io {
        op: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("iperf3 reported an error: {0}")]
    Iperf(String),
    #[error("no samples for {0}")]
    NoSamples(String),
    #[error("every connection failed ({errors} errors, last: {last})")]
    NoConnections { errors: u64, last: String },
}
