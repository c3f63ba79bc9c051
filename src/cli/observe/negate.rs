//! `hubble observe --not`: the filter flag right after `--not` excludes flows instead of
//! selecting them (`--not --namespace kube-system`). Clap has no positional flag
//! modifiers, so the command line is rewritten before parsing: `--not FLAG [VALUE]`
//! becomes one hidden `--not-filter=FLAG=VALUE`; every negated flag together makes the
//! request's blacklist (fields AND'ed, like Hubble's).

use std::ffi::OsString;

/// The hidden flag that carries one negated filter flag.
pub const NOT_FILTER: &str = "--not-filter";

/// `args` with every `--not FLAG [VALUE]` folded into `--not-filter=FLAG=VALUE`. A `--not`
/// with no flag after it becomes `--not-filter=` (an error when the request is built).
pub fn fold_not(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg != "--not" {
            out.push(arg);
            continue;
        }
        let mut folded = OsString::from(format!("{NOT_FILTER}="));
        if let Some(flag) = args.next_if(|a| a.to_string_lossy().starts_with('-')) {
            let has_value = flag.to_string_lossy().contains('=');
            folded.push(&flag);
            if !has_value && let Some(value) = args.next() {
                folded.push("=");
                folded.push(value);
            }
        }
        out.push(folded);
    }
    out
}

/// The negated flags as a command line for `ObserveArgs` (`["observe", "--pod=web", ...]`),
/// or an error naming the empty `--not`.
pub fn negated_command_line(negated: &[String]) -> Result<Vec<String>, String> {
    let mut line = vec!["observe".to_string()];
    for n in negated {
        if n.is_empty() {
            return Err(
                "--not must be followed by a filter flag (`--not --namespace kube-system`)".into(),
            );
        }
        line.push(n.clone());
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(args: &[&str]) -> Vec<String> {
        fold_not(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn not_takes_the_next_flag_and_its_value() {
        assert_eq!(
            fold(&[
                "porin",
                "observe",
                "--not",
                "--namespace",
                "kube-system",
                "--last",
                "5"
            ]),
            [
                "porin",
                "observe",
                "--not-filter=--namespace=kube-system",
                "--last",
                "5"
            ]
        );
        assert_eq!(
            fold(&[
                "porin",
                "observe",
                "--not",
                "--to-port=53",
                "--not",
                "-n",
                "a"
            ]),
            [
                "porin",
                "observe",
                "--not-filter=--to-port=53",
                "--not-filter=-n=a"
            ]
        );
        assert_eq!(
            fold(&["porin", "observe", "--not"]),
            ["porin", "observe", "--not-filter="]
        );
        assert_eq!(
            fold(&["porin", "observe", "--not", "x"]),
            ["porin", "observe", "--not-filter=", "x"]
        );
        assert!(negated_command_line(&[String::new()]).is_err());
    }
}
