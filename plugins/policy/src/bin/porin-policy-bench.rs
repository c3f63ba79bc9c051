//! `porin-policy-bench`: the policy computation benchmark of `scripts/bench policy`.
//! Prints one JSON object (see `porin_policy::bench::ComputeReport`) on stdout.
//!
//! usage: porin-policy-bench [--identities N] [--rules N] [--endpoints N] [--namespaces N]

use std::process::ExitCode;

use porin_policy::bench::{Sizes, run};

fn main() -> ExitCode {
    let mut sizes = Sizes {
        identities: 10_000,
        rules: 1_000,
        endpoints: 100,
        namespaces: 50,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            eprintln!("porin-policy-bench: {} needs a value", pair[0]);
            return ExitCode::FAILURE;
        };
        let Ok(n) = value.parse::<usize>() else {
            eprintln!("porin-policy-bench: {flag} {value:?}: not a number");
            return ExitCode::FAILURE;
        };
        match flag.as_str() {
            "--identities" => sizes.identities = n,
            "--rules" => sizes.rules = n,
            "--endpoints" => sizes.endpoints = n,
            "--namespaces" => sizes.namespaces = n.max(1),
            _ => {
                eprintln!("porin-policy-bench: unknown flag {flag}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(sizes).map(|r| serde_json::to_string(&r)) {
        Ok(Ok(line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("porin-policy-bench: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("porin-policy-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
