//! `porin-bench`: the measuring tools of `scripts/bench` (see
//! `porin_testbed::bench` and docs/benchmarks.md). Prints results on stdout.

use std::path::Path;
use std::process::ExitCode;

use porin_testbed::bench::args::{self, Command};
use porin_testbed::bench::{BenchError, conn, connect, report};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("porin-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), BenchError> {
    match command {
        Command::ConnServer { port, threads } => conn::serve(port, threads),
        Command::AcceptServer { port, threads } => connect::serve(port, threads),
        Command::ConnectClient {
            addr,
            duration,
            threads,
            inflight,
        } => print_json(&connect::run_client(addr, duration, threads, inflight)?),
        Command::ConnClient {
            addr,
            duration,
            concurrency,
            payload,
        } => print_json(&conn::run_client(addr, duration, concurrency, payload)?),
        Command::IperfBps { path } => {
            let bps = report::iperf_bps(&path, &read(&path)?)?;
            println!("{bps}");
            Ok(())
        }
        Command::Summarize(args) => {
            let samples = report::parse_samples(&args.path, &read(&args.path)?)?;
            println!("{}", report::summarize(&args, &samples)?);
            Ok(())
        }
    }
}

fn print_json(report: &impl serde::Serialize) -> Result<(), BenchError> {
    let line = serde_json::to_string(report).map_err(|e| BenchError::Parse {
        path: "client report".into(),
        message: e.to_string(),
    })?;
    println!("{line}");
    Ok(())
}

fn read(path: &Path) -> Result<String, BenchError> {
    std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        op: "read",
        target: path.display().to_string(),
        source,
    })
}
