//! `porin-flows-bench`: the measuring tool of `scripts/bench flows` (see
//! docs/benchmarks.md). Synthetic ring-buffer records in the datapath's format go
//! through core's decoder and the observe plugin's own pipeline, ring and Hubble
//! API:
//!
//! - `rate`: flows per second on one core, decode + enrich + store, and the same
//!   with the Hubble message built and a filter evaluated;
//! - `stream`: flows per second one `GetFlows` client receives over the unix socket;
//! - `sustained RATE SECONDS`: the plugin's pipeline (`run_pipeline`) fed at RATE
//!   events/s through an event channel of the agent's capacity, with one
//!   `GetFlows --follow` client; prints the losses and the RSS over time.
//!
//! Each command prints one JSON object on stdout.

mod context;
mod rate;
mod source;
mod stream;
mod sustained;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("porin-flows-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:
  porin-flows-bench rate [--events N]
  porin-flows-bench stream [--seconds S]
  porin-flows-bench sustained RATE SECONDS";

fn run(args: &[String]) -> Result<serde_json::Value> {
    let (command, rest) = args.split_first().context(USAGE)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match (command.as_str(), rest) {
        ("rate", []) => Ok(rate::measure(2_000_000)),
        ("rate", [flag, n]) if flag == "--events" => Ok(rate::measure(n.parse()?)),
        ("stream", []) => runtime.block_on(stream::measure(Duration::from_secs(5))),
        ("stream", [flag, s]) if flag == "--seconds" => {
            runtime.block_on(stream::measure(Duration::from_secs(s.parse()?)))
        }
        ("sustained", [rate, seconds]) => runtime.block_on(sustained::measure(
            rate.parse().context("RATE")?,
            Duration::from_secs(seconds.parse().context("SECONDS")?),
        )),
        _ => bail!("{USAGE}"),
    }
}
