//! `--since` and `--until` values as `hubble observe` takes them: a duration before now
//! (`30s`, `5m`, `2h`, `1d`) or an RFC 3339 time (`2026-11-26T10:00:00Z`).

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use porin_observe::flow::timestamp;
use porin_observe::hubble_proto::Timestamp;

/// The time `text` stands for, `now` being the reference of relative values. `flag`
/// names the flag in errors.
pub fn parse_time(flag: &str, text: &str, now: SystemTime) -> Result<Timestamp> {
    if text.starts_with(|c: char| c.is_ascii_digit()) && text.contains('T') {
        return serde_json::from_value::<Timestamp>(serde_json::Value::String(text.to_string()))
            .map_err(|e| anyhow::anyhow!("{flag}: `{text}` is not an RFC 3339 time: {e}"));
    }
    let ago = parse_duration(flag, text)?;
    let at = now
        .checked_sub(ago)
        .with_context(|| format!("{flag}: `{text}` reaches before 1970"))?;
    Ok(timestamp(at))
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().with_context(|| {
        format!("{flag}: `{text}` is not like 30s, 5m, 2h or 2026-11-26T10:00:00Z")
    })?;
    let unit_secs: u64 = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{flag}: unknown unit in `{text}` (s, m, h, d)"),
    };
    let secs = n
        .checked_mul(unit_secs)
        .with_context(|| format!("{flag}: `{text}` reaches before 1970"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn relative_and_absolute_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_time("--since", "5m", now).expect("relative").seconds,
            1_000_000 - 300
        );
        assert_eq!(
            parse_time("--until", "2d", now).expect("days").seconds,
            1_000_000 - 172_800
        );
        let t = parse_time("--until", "2026-11-26T10:00:00Z", now).expect("RFC 3339");
        assert_eq!(t.seconds, 1_795_687_200);
        let t = parse_time("--since", "2026-11-26T11:00:00.5+01:00", now).expect("offset");
        assert_eq!((t.seconds, t.nanos), (1_795_687_200, 500_000_000));
        for (text, part) in [
            ("5y", "unknown unit"),
            ("soon", "not like"),
            ("2026-13-26T10:00:00Z", "RFC 3339"),
            ("9999999999999999d", "before 1970"),
        ] {
            let e = parse_time("--until", text, now).expect_err(text);
            let e = format!("{e:#}");
            assert!(e.contains("--until") && e.contains(part), "{text}: {e}");
        }
    }
}
