//! The cap on distinct values a labeller's label may take.

use std::collections::HashSet;

/// What a value past the cap becomes.
pub const OVERFLOW_VALUE: &str = "other";

/// Distinct values seen per label; new values past `limit` become `other`.
#[derive(Debug, Clone)]
pub struct Cardinality {
    limit: usize,
    seen: Vec<HashSet<String>>,
}

impl Cardinality {
    pub fn new(labels: usize, limit: usize) -> Self {
        Self {
            limit,
            seen: vec![HashSet::new(); labels],
        }
    }

    /// The value to use for `value` of label `label`, and whether it was capped.
    pub fn admit<'a>(&mut self, label: usize, value: &'a str) -> (&'a str, bool) {
        let Some(seen) = self.seen.get_mut(label) else {
            return (OVERFLOW_VALUE, true);
        };
        if seen.contains(value) {
            return (value, false);
        }
        if seen.len() >= self.limit {
            return (OVERFLOW_VALUE, true);
        }
        seen.insert(value.to_string());
        (value, false)
    }

    /// Distinct values admitted per label.
    pub fn counts(&self) -> Vec<usize> {
        self.seen.iter().map(HashSet::len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_become_other() {
        let mut c = Cardinality::new(2, 2);
        assert_eq!(c.admit(0, "a"), ("a", false));
        assert_eq!(c.admit(0, "b"), ("b", false));
        assert_eq!(c.admit(0, "c"), ("other", true));
        assert_eq!(c.admit(0, "a"), ("a", false), "known values stay");
        assert_eq!(c.admit(1, "c"), ("c", false), "each label has its own cap");
        assert_eq!(c.counts(), vec![2, 1]);
    }
}
