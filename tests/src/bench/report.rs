//! Reading iperf3 results and summarizing samples into a benchmark's JSON line.
//!
//! Samples file: one `TOPOLOGY METRIC VALUE` per line (e.g. `porin conn_per_s
//! 14210`), written by the benchmark script as it goes; blank lines and `#`
//! comments are skipped.

use std::path::Path;

use serde_json::Value;

use super::BenchError;
use super::args::SummarizeArgs;

/// Received bits per second of an `iperf3 -J` client result
/// (`end.sum_received.bits_per_second`).
pub fn iperf_bps(path: &Path, text: &str) -> Result<f64, BenchError> {
    let parse = |message: String| BenchError::Parse {
        path: path.to_owned(),
        message,
    };
    let json: Value =
        serde_json::from_str(text).map_err(|e| parse(format!("not iperf3 JSON: {e}")))?;
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        return Err(BenchError::Iperf(error.to_owned()));
    }
    json.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .filter(|bps| bps.is_finite() && *bps >= 0.0)
        .ok_or_else(|| parse("no end.sum_received.bits_per_second".to_owned()))
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub topology: String,
    pub metric: String,
    pub value: f64,
}

/// Parses a samples file.
pub fn parse_samples(path: &Path, text: &str) -> Result<Vec<Sample>, BenchError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let value = match fields.as_slice() {
            [_, _, value] => value.parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        };
        match (fields.as_slice(), value) {
            ([topology, metric, _], Some(value)) => samples.push(Sample {
                topology: (*topology).to_owned(),
                metric: (*metric).to_owned(),
                value,
            }),
            _ => {
                return Err(BenchError::Parse {
                    path: path.to_owned(),
                    message: format!("line {}: want `TOPOLOGY METRIC NUMBER`: {line}", index + 1),
                });
            }
        }
    }
    Ok(samples)
}

/// The median (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The benchmark's JSON line: `bench`, then for each metric (in order of first
/// appearance) `METRIC_A` and `METRIC_B` (medians) and the `ratio_NAME`s of
/// that metric, then the extra fields.
pub fn summarize(args: &SummarizeArgs, samples: &[Sample]) -> Result<String, BenchError> {
    let (a, b) = &args.compare;
    let mut metrics: Vec<&str> = Vec::new();
    for s in samples {
        if !metrics.contains(&s.metric.as_str()) {
            metrics.push(&s.metric);
        }
    }
    let median_of = |topology: &str, metric: &str| {
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.topology == topology && s.metric == metric)
            .map(|s| s.value)
            .collect();
        median(&values).ok_or_else(|| BenchError::NoSamples(format!("{metric} of {topology}")))
    };
    // A / B of the medians; null when the baseline is zero.
    let ratio = |metric: &str| -> Result<Value, BenchError> {
        let baseline = median_of(b, metric)?;
        Ok(if baseline > 0.0 {
            Value::from(round(median_of(a, metric)? / baseline))
        } else {
            Value::Null
        })
    };
    let mut fields: Vec<(String, Value)> = vec![("bench".to_owned(), Value::from(&*args.bench))];
    for metric in &metrics {
        for topology in [a, b] {
            let value = round(median_of(topology, metric)?);
            fields.push((format!("{metric}_{topology}"), Value::from(value)));
        }
        for (name, _) in args.ratios.iter().filter(|(_, m)| m == metric) {
            fields.push((format!("ratio_{name}"), ratio(metric)?));
        }
    }
    if let Some((_, metric)) = args
        .ratios
        .iter()
        .find(|(_, m)| !metrics.contains(&m.as_str()))
    {
        return Err(BenchError::NoSamples(metric.clone()));
    }
    fields.extend(args.fields.iter().cloned());
    let body: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
        .collect();
    Ok(format!("{{{}}}", body.join(",")))
}

/// Three decimals are plenty for figures that vary by a percent between runs.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPERF: &str = r#"{"start":{},"intervals":[],
        "end":{"sum_sent":{"bits_per_second":9.6e9},
               "sum_received":{"bits_per_second":9512345678.5}}}"#;

    #[test]
    fn iperf_received_rate() {
        let bps = iperf_bps(Path::new("x.json"), IPERF).expect("parses");
        assert!((bps - 9_512_345_678.5).abs() < 1.0);
    }

    #[test]
    fn iperf_errors_are_reported() {
        let err = iperf_bps(
            Path::new("x.json"),
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#,
        )
        .expect_err("iperf error");
        assert!(err.to_string().contains("Connection refused"), "{err}");
        assert!(iperf_bps(Path::new("x.json"), "iperf3: error").is_err());
        assert!(iperf_bps(Path::new("x.json"), r#"{"end":{}}"#).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn samples_file() {
        let text = "# round 1\nplain conn_per_s 100\n\nporin conn_per_s 95.5\n";
        let samples = parse_samples(Path::new("s"), text).expect("parses");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].value, 95.5);
        let err = parse_samples(Path::new("s"), "porin conn_per_s fast\n").expect_err("bad");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_samples(Path::new("s"), "porin 1\n").is_err());
        assert!(parse_samples(Path::new("s"), "porin x NaN\n").is_err());
    }

    #[test]
    fn summary_line_has_medians_ratios_and_fields() {
        let text = "plain throughput_gbps 10\nporin throughput_gbps 9\n\
                    plain conn_per_s 1000\nporin conn_per_s 950\n\
                    plain throughput_gbps 12\nporin throughput_gbps 9.5\n\
                    plain conn_per_s 1100\nporin conn_per_s 900\n\
                    plain throughput_gbps 11\nporin throughput_gbps 10\n";
        let samples = parse_samples(Path::new("s"), text).expect("parses");
        let args = SummarizeArgs {
            path: "s".into(),
            bench: "datapath".to_owned(),
            compare: ("porin".to_owned(), "plain".to_owned()),
            ratios: vec![
                ("throughput".to_owned(), "throughput_gbps".to_owned()),
                ("conn_rate".to_owned(), "conn_per_s".to_owned()),
            ],
            fields: vec![("runs".to_owned(), serde_json::json!(3))],
        };
        let line = summarize(&args, &samples).expect("summary");
        assert_eq!(
            line,
            r#"{"bench":"datapath","throughput_gbps_porin":9.5,"throughput_gbps_plain":11.0,"ratio_throughput":0.864,"conn_per_s_porin":925.0,"conn_per_s_plain":1050.0,"ratio_conn_rate":0.881,"runs":3}"#
        );
        let json: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(json["ratio_conn_rate"], serde_json::json!(0.881));
    }

    #[test]
    fn missing_topology_is_an_error() {
        let samples = parse_samples(Path::new("s"), "porin conn_per_s 1\n").expect("parses");
        let args = SummarizeArgs {
            path: "s".into(),
            bench: "datapath".to_owned(),
            compare: ("porin".to_owned(), "plain".to_owned()),
            ratios: vec![],
            fields: vec![],
        };
        let err = summarize(&args, &samples).expect_err("no plain samples");
        assert!(matches!(err, BenchError::NoSamples(_)), "{err}");
        let samples = parse_samples(Path::new("s"), "porin a 1\nplain a 1\n").expect("parses");
        let args = SummarizeArgs {
            ratios: vec![("b".to_owned(), "b".to_owned())],
            ..args
        };
        let err = summarize(&args, &samples).expect_err("ratio of a missing metric");
        assert!(matches!(err, BenchError::NoSamples(_)), "{err}");
    }
}
