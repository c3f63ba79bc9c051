//! DNS name matching with Cilium's semantics for `matchName` and `matchPattern`.
//!
//! Names compare case-insensitively and with or without the trailing dot. `matchName` is
//! an exact name. In `matchPattern`, `*` alone matches every name; elsewhere `*` matches
//! any run of the characters allowed in a label (`[-a-z0-9_]`), never a dot, so
//! `*.example.com` matches `a.example.com` but neither `example.com` (the apex) nor
//! `a.b.example.com`, and `part*ial.com` matches `partial.com` and `part-of-trial.com`.
//! A leading `**.` (Cilium 1.18) matches one or more whole labels: `**.example.com`
//! matches `a.example.com` and `a.b.example.com`, not the apex.

use crate::model::FqdnSelector;

/// A compiled `matchName` or `matchPattern`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// `matchPattern: "*"`.
    All,
    /// `matchName`: the normalized name.
    Exact(String),
    /// `matchPattern` without a leading `**.`: one glob per label.
    Labels(Vec<String>),
    /// `matchPattern: "**.rest"`: one or more labels, then `rest`.
    AnyLabelsThen(Vec<String>),
}

/// Lower case, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl NamePattern {
    pub fn from_selector(selector: &FqdnSelector) -> Self {
        match selector {
            FqdnSelector::MatchName(n) => Self::match_name(n),
            FqdnSelector::MatchPattern(p) => Self::match_pattern(p),
        }
    }

    pub fn match_name(name: &str) -> Self {
        Self::Exact(normalize(name))
    }

    pub fn match_pattern(pattern: &str) -> Self {
        let p = normalize(pattern);
        if p == "*" {
            return Self::All;
        }
        let labels = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        match p.strip_prefix("**.") {
            Some(rest) => Self::AnyLabelsThen(labels(rest)),
            None => Self::Labels(labels(&p)),
        }
    }

    /// Whether `name` (as it appears in a query or an answer) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize(name);
        match self {
            Self::All => true,
            Self::Exact(n) => *n == name,
            Self::Labels(globs) => labels_match(globs, &name.split('.').collect::<Vec<_>>()),
            Self::AnyLabelsThen(globs) => {
                let labels: Vec<&str> = name.split('.').collect();
                labels.len() > globs.len()
                    && labels_match(globs, &labels[labels.len() - globs.len()..])
            }
        }
    }
}

fn labels_match(globs: &[String], labels: &[&str]) -> bool {
    globs.len() == labels.len() && globs.iter().zip(labels).all(|(g, l)| glob_label(g, l))
}

fn label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `*` matches any run of label characters; everything else matches itself.
fn glob_label(glob: &str, label: &str) -> bool {
    let (g, l) = (glob.as_bytes(), label.as_bytes());
    // Classic wildcard matching with one backtrack point.
    let (mut gi, mut li) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while li < l.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, li));
            gi += 1;
        } else if gi < g.len() && g[gi] == l[li] {
            gi += 1;
            li += 1;
        } else if let Some((sg, sl)) = star
            && label_char(l[sl])
        {
            star = Some((sg, sl + 1));
            gi = sg + 1;
            li = sl + 1;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> NamePattern {
        NamePattern::match_pattern(p)
    }

    #[test]
    fn star_alone_matches_everything() {
        assert!(pat("*").matches("example.com"));
        assert!(pat("*").matches("a.b.c.d."));
    }

    #[test]
    fn match_name_is_exact_case_insensitive_and_ignores_the_trailing_dot() {
        let n = NamePattern::match_name("secretsmanager.us-east-1.amazonaws.com");
        assert!(n.matches("SecretsManager.us-east-1.amazonaws.com."));
        assert!(!n.matches("x.secretsmanager.us-east-1.amazonaws.com"));
        assert!(!n.matches("secretsmanager.us-east-2.amazonaws.com"));
    }

    #[test]
    fn subdomain_wildcard_matches_one_label_and_not_the_apex() {
        let p = pat("*.s3.us-east-1.amazonaws.com");
        assert!(p.matches("bucket.s3.us-east-1.amazonaws.com"));
        assert!(p.matches("My-Bucket_1.S3.us-east-1.amazonaws.com."));
        assert!(!p.matches("s3.us-east-1.amazonaws.com"), "apex");
        assert!(!p.matches("a.b.s3.us-east-1.amazonaws.com"), "two labels");
        assert!(!p.matches("bucket.s3.us-east-1.amazonaws.com.evil.com"));
    }

    #[test]
    fn star_inside_a_label() {
        let p = pat("part*ial.com");
        assert!(p.matches("partial.com"));
        assert!(p.matches("part-of-trial.com"));
        assert!(!p.matches("part.x.ial.com"));
        assert!(!p.matches("partia.com"));
        assert!(pat("*x*").matches("abxcd"));
        assert!(!pat("a*").matches("b"));
    }

    #[test]
    fn double_star_prefix_matches_several_labels_not_the_apex() {
        let p = pat("**.example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
    }
}
