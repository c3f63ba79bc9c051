//! Keep one forwarded flow in N (`config = "N"`, default 10); every other
//! verdict (drops, errors) is always kept.
use porin_wasm_guest::{Filter, Flow, Verdict, export_filter};

struct Sample {
    every: u64,
    seen: u64,
}

impl Filter for Sample {
    fn new(config: &str) -> Result<Self, String> {
        let every = match config.trim() {
            "" => 10,
            n => n.parse().map_err(|_| format!("`{n}` is not a number"))?,
        };
        if every == 0 {
            return Err("N must be at least 1".to_string());
        }
        Ok(Self { every, seen: 0 })
    }

    fn keep(&mut self, flow: &Flow) -> bool {
        if flow.verdict() != Verdict::Forwarded {
            return true;
        }
        self.seen += 1;
        self.seen % self.every == 1 % self.every
    }
}

export_filter!(Sample);
