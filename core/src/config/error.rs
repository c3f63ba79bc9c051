//! Configuration errors that point at a file and a line.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Why `porin.toml` could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is readable but wrong: a syntax error, an unknown key or an invalid
    /// value. Displayed as `porin.toml:12: plugins.lb: unknown field ...`.
    #[error("{}", Located { file, line: *line, key, message })]
    Invalid {
        /// The name of the file (or source) as given to the parser.
        file: String,
        /// 1-based line of the offending key, when it could be found.
        line: Option<usize>,
        /// Dotted path of the table or key at fault, e.g. `agent` or `plugins.lb`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The line the error points at, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { line, .. } => *line,
            Self::Read { .. } => None,
        }
    }
}

struct Located<'a> {
    file: &'a str,
    line: Option<usize>,
    key: &'a str,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// 1-based line number of byte `offset` in `text`.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}
