//! The command line of `porin-bench` (no clap: the testbed stays small).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::BenchError;

/// Shown with every usage error.
pub const USAGE: &str = "usage:
  porin-bench conn-server PORT [--threads N]
  porin-bench conn-client ADDR:PORT [--seconds S] [--concurrency C] [--payload BYTES]
  porin-bench accept-server PORT [--threads N]
  porin-bench connect-client ADDR:PORT [--seconds S] [--threads T] [--inflight K]
  porin-bench iperf-bps FILE
  porin-bench summarize FILE --bench NAME [--compare A,B] [--ratio NAME=METRIC]... [--set KEY=JSON]...";

/// A `porin-bench` command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Accept connections on `port` with `threads` threads, echoing what each sends.
    ConnServer { port: u16, threads: usize },
    /// Open connections to `addr` for `duration` from `concurrency` threads.
    ConnClient {
        addr: SocketAddr,
        duration: Duration,
        concurrency: usize,
        payload: usize,
    },
    /// Accept connections on `port` with `threads` threads and close them at once.
    AcceptServer { port: u16, threads: usize },
    /// Keep `inflight` nonblocking connects to `addr` outstanding on each of `threads`
    /// threads for `duration`; report the rate and connect latency.
    ConnectClient {
        addr: SocketAddr,
        duration: Duration,
        threads: usize,
        inflight: usize,
    },
    /// Print the received bits per second of an `iperf3 -J` result.
    IperfBps { path: PathBuf },
    /// Turn a samples file into a benchmark's JSON line.
    Summarize(SummarizeArgs),
}

/// Arguments of `summarize` (see [`super::report::summarize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SummarizeArgs {
    pub path: PathBuf,
    pub bench: String,
    /// The measured topology and its baseline, e.g. `porin` and `plain`.
    pub compare: (String, String),
    /// `(name, metric)`: `ratio_NAME` = median of METRIC for A / for B.
    pub ratios: Vec<(String, String)>,
    /// Extra `(key, JSON value)` fields appended to the line.
    pub fields: Vec<(String, serde_json::Value)>,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, BenchError> {
    let (sub, rest) = args.split_first().ok_or_else(|| usage("missing command"))?;
    let mut rest = Args::new(rest);
    let command = match sub.as_str() {
        "conn-server" => {
            let (port, threads) = server(&mut rest, 32)?;
            Command::ConnServer { port, threads }
        }
        "accept-server" => {
            let (port, threads) = server(&mut rest, 2)?;
            Command::AcceptServer { port, threads }
        }
        "conn-client" => conn_client(&mut rest)?,
        "connect-client" => connect_client(&mut rest)?,
        "iperf-bps" => Command::IperfBps {
            path: rest.positional("FILE")?.into(),
        },
        "summarize" => summarize(&mut rest)?,
        other => return Err(usage(&format!("unknown command {other:?}"))),
    };
    rest.finish()?;
    match &command {
        Command::ConnServer { threads: 0, .. }
        | Command::AcceptServer { threads: 0, .. }
        | Command::ConnectClient { threads: 0, .. } => Err(usage("--threads must be at least 1")),
        Command::ConnectClient { inflight: 0, .. } => Err(usage("--inflight must be at least 1")),
        Command::ConnClient { concurrency: 0, .. } => {
            Err(usage("--concurrency must be at least 1"))
        }
        Command::ConnClient { payload: 0, .. } => Err(usage("--payload must be at least 1")),
        _ => Ok(command),
    }
}

/// `PORT [--threads N]`.
fn server(rest: &mut Args, default_threads: usize) -> Result<(u16, usize), BenchError> {
    let port = number(&rest.positional("PORT")?, "PORT")?;
    let mut threads = default_threads;
    while let Some(flag) = rest.flag()? {
        match flag.as_str() {
            "--threads" => threads = number(&rest.value(&flag)?, &flag)?,
            _ => return Err(unknown(&flag)),
        }
    }
    Ok((port, threads))
}

fn address(rest: &mut Args) -> Result<SocketAddr, BenchError> {
    let addr = rest.positional("ADDR:PORT")?;
    addr.parse()
        .map_err(|_| usage(&format!("{addr:?} is not an ADDR:PORT")))
}

fn duration(seconds: f64) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| usage("--seconds must be a positive number"))
}

fn connect_client(rest: &mut Args) -> Result<Command, BenchError> {
    let addr = address(rest)?;
    let mut seconds: f64 = 10.0;
    let mut threads = 1;
    let mut inflight = 32;
    while let Some(flag) = rest.flag()? {
        match flag.as_str() {
            "--seconds" => seconds = number(&rest.value(&flag)?, &flag)?,
            "--threads" => threads = number(&rest.value(&flag)?, &flag)?,
            "--inflight" => inflight = number(&rest.value(&flag)?, &flag)?,
            _ => return Err(unknown(&flag)),
        }
    }
    Ok(Command::ConnectClient {
        addr,
        duration: duration(seconds)?,
        threads,
        inflight,
    })
}

fn conn_client(rest: &mut Args) -> Result<Command, BenchError> {
    let addr = address(rest)?;
    let mut seconds: f64 = 10.0;
    let mut concurrency = 8;
    let mut payload = 16;
    while let Some(flag) = rest.flag()? {
        match flag.as_str() {
            "--seconds" => seconds = number(&rest.value(&flag)?, &flag)?,
            "--concurrency" => concurrency = number(&rest.value(&flag)?, &flag)?,
            "--payload" => payload = number(&rest.value(&flag)?, &flag)?,
            _ => return Err(unknown(&flag)),
        }
    }
    Ok(Command::ConnClient {
        addr,
        duration: duration(seconds)?,
        concurrency,
        payload,
    })
}

fn summarize(rest: &mut Args) -> Result<Command, BenchError> {
    let path = rest.positional("FILE")?.into();
    let mut bench = None;
    let mut compare = ("porin".to_owned(), "plain".to_owned());
    let mut ratios = Vec::new();
    let mut fields = Vec::new();
    while let Some(flag) = rest.flag()? {
        let value = rest.value(&flag)?;
        match flag.as_str() {
            "--bench" => bench = Some(value),
            "--compare" => compare = pair(&value, ',', &flag)?,
            "--ratio" => ratios.push(pair(&value, '=', &flag)?),
            "--set" => {
                let (key, json) = pair(&value, '=', &flag)?;
                let json = serde_json::from_str(&json)
                    .map_err(|e| usage(&format!("--set {key}: {json:?} is not JSON: {e}")))?;
                fields.push((key, json));
            }
            _ => return Err(unknown(&flag)),
        }
    }
    Ok(Command::Summarize(SummarizeArgs {
        path,
        bench: bench.ok_or_else(|| usage("summarize needs --bench NAME"))?,
        compare,
        ratios,
        fields,
    }))
}

/// `a<sep>b` with both sides non-empty.
fn pair(value: &str, sep: char, flag: &str) -> Result<(String, String), BenchError> {
    match value.split_once(sep) {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => Err(usage(&format!("{flag} wants A{sep}B, not {value:?}"))),
    }
}

fn number<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, BenchError> {
    value
        .parse()
        .map_err(|_| usage(&format!("{what}: {value:?} is not a valid number")))
}

fn usage(message: &str) -> BenchError {
    BenchError::Usage(message.to_owned())
}

fn unknown(flag: &str) -> BenchError {
    usage(&format!("unknown option {flag}"))
}

/// A cursor over arguments: positionals first, then `--flag value` pairs.
struct Args<'a> {
    rest: &'a [String],
}

impl<'a> Args<'a> {
    fn new(rest: &'a [String]) -> Self {
        Self { rest }
    }

    fn next(&mut self) -> Option<&'a String> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    fn positional(&mut self, name: &str) -> Result<String, BenchError> {
        match self.rest.first() {
            Some(arg) if !arg.starts_with("--") => Ok(self.next().cloned().unwrap_or_default()),
            _ => Err(usage(&format!("missing {name}"))),
        }
    }

    fn flag(&mut self) -> Result<Option<String>, BenchError> {
        match self.rest.first() {
            None => Ok(None),
            Some(arg) if arg.starts_with("--") => Ok(self.next().cloned()),
            Some(arg) => Err(usage(&format!("unexpected argument {arg:?}"))),
        }
    }

    fn value(&mut self, flag: &str) -> Result<String, BenchError> {
        self.next()
            .cloned()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))
    }

    fn finish(&self) -> Result<(), BenchError> {
        match self.rest.first() {
            None => Ok(()),
            Some(arg) => Err(usage(&format!("unexpected argument {arg:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, BenchError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    #[test]
    fn conn_client_defaults_and_flags() {
        let Ok(Command::ConnClient {
            addr,
            duration,
            concurrency,
            payload,
        }) = parse_str("conn-client 10.200.1.11:7000 --seconds 2.5 --concurrency 4")
        else {
            panic!("conn-client should parse");
        };
        assert_eq!(addr.to_string(), "10.200.1.11:7000");
        assert_eq!(duration, Duration::from_millis(2500));
        assert_eq!(concurrency, 4);
        assert_eq!(payload, 16);
    }

    #[test]
    fn connect_client_and_accept_server() {
        assert_eq!(
            parse_str("connect-client 10.100.0.1:80 --seconds 2 --threads 2 --inflight 64")
                .expect("parses"),
            Command::ConnectClient {
                addr: "10.100.0.1:80".parse().expect("addr"),
                duration: Duration::from_secs(2),
                threads: 2,
                inflight: 64,
            }
        );
        assert_eq!(
            parse_str("accept-server 7000").expect("parses"),
            Command::AcceptServer {
                port: 7000,
                threads: 2
            }
        );
        for line in [
            "connect-client 10.0.0.1:1 --inflight 0",
            "connect-client 10.0.0.1:1 --threads 0",
            "accept-server 7000 --threads 0",
        ] {
            assert!(
                matches!(parse_str(line), Err(BenchError::Usage(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn conn_server_port_and_threads() {
        assert_eq!(
            parse_str("conn-server 7000 --threads 4").expect("parses"),
            Command::ConnServer {
                port: 7000,
                threads: 4
            }
        );
        assert_eq!(
            parse_str("conn-server 7000").expect("parses"),
            Command::ConnServer {
                port: 7000,
                threads: 32
            }
        );
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for line in [
            "",
            "nope",
            "conn-server",
            "conn-server 70000",
            "conn-server 7000 --threads 0",
            "conn-server 7000 extra",
            "conn-client 10.0.0.1",
            "conn-client 10.0.0.1:1 --seconds 0",
            "conn-client 10.0.0.1:1 --seconds -1",
            "conn-client 10.0.0.1:1 --concurrency",
            "conn-client 10.0.0.1:1 --bogus 1",
            "iperf-bps",
            "summarize f.txt",
            "summarize f.txt --bench x --ratio nope",
            "summarize f.txt --bench x --set k=notjson",
        ] {
            let err = parse_str(line).expect_err(line);
            assert!(matches!(err, BenchError::Usage(_)), "{line}: {err}");
            assert!(err.to_string().contains("usage:"), "{line}: {err}");
        }
    }

    #[test]
    fn summarize_collects_ratios_and_fields() {
        let Ok(Command::Summarize(args)) = parse_str(
            "summarize s.txt --bench datapath --ratio throughput=throughput_gbps \
             --ratio conn_rate=conn_per_s --set runs=3 --set quick=true",
        ) else {
            panic!("summarize should parse");
        };
        assert_eq!(args.bench, "datapath");
        assert_eq!(args.compare, ("porin".to_owned(), "plain".to_owned()));
        assert_eq!(args.ratios.len(), 2);
        assert_eq!(
            args.ratios[1],
            ("conn_rate".to_owned(), "conn_per_s".to_owned())
        );
        assert_eq!(args.fields[0], ("runs".to_owned(), serde_json::json!(3)));
        assert_eq!(
            args.fields[1],
            ("quick".to_owned(), serde_json::json!(true))
        );
    }
}
