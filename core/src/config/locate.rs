//! Finding the line of a key in a TOML text without a span-preserving parser.
//!
//! Plugins validate their section from a `toml::Table`, which has no spans; when a
//! plugin names the offending key, core finds its line here so the error can say
//! `porin.toml:12`.

/// The 1-based line where `key` (dotted, relative to `section_path`) is defined
/// inside the table `section_path` (e.g. `plugins.lb`), or `None`.
///
/// Understands `[table]` and `[[array]]` headers, dotted keys (`lb.algorithm = ..`
/// under `[plugins]`) and quoted key parts. Keys inside inline tables are located
/// at the line of the enclosing key. If `key` itself names a sub-table, its header
/// line is returned.
pub fn locate_key(text: &str, section_path: &str, key: &str) -> Option<usize> {
    let target = split_key(&format!("{section_path}.{key}"));
    let mut header: Vec<String> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = header_name(line) {
            header = split_key(name);
            if header == target {
                return Some(index + 1);
            }
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let mut full = header.clone();
        full.extend(split_key(lhs));
        // A match on the full path, or on a prefix of it (the key sits inside an
        // inline table or array written on this line).
        if full == target || (full.len() < target.len() && target.starts_with(&full)) {
            return Some(index + 1);
        }
    }
    None
}

/// `[a.b]` -> `a.b`, `[[a.b]]` -> `a.b`; comments after the header are ignored.
fn header_name(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("[[") {
        return rest.split("]]").next();
    }
    let rest = line.strip_prefix('[')?;
    rest.split(']').next()
}

/// Split a dotted TOML key into its parts, removing quotes and whitespace.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut in_index = false;
    for c in key.chars() {
        match (quote, c) {
            // `wasm[0].kind` (serde_path_to_error's form): indexes are dropped, the
            // first entry of the array of tables is reported.
            (None, '[') => in_index = true,
            (None, ']') => in_index = false,
            _ if in_index => {}
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '.') => parts.push(std::mem::take(&mut current)),
            (None, c) if c.is_whitespace() => {}
            (None, c) => current.push(c),
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# porin
[agent]
node_name = "n1"

[plugins.lb]
enabled = true
algoritm = "maglev"

[plugins]
policy.enforcement = "always"

[[plugins.observe.wasm]]
name = "a"
kind = "filtre"

[plugins."encryption"]
listen_port = 1
"#;

    #[test]
    fn finds_key_in_section() {
        assert_eq!(locate_key(TEXT, "plugins.lb", "algoritm"), Some(7));
        assert_eq!(locate_key(TEXT, "plugins.lb", "enabled"), Some(6));
        assert_eq!(locate_key(TEXT, "agent", "node_name"), Some(3));
    }

    #[test]
    fn finds_dotted_and_quoted_keys() {
        assert_eq!(locate_key(TEXT, "plugins.policy", "enforcement"), Some(10));
        assert_eq!(
            locate_key(TEXT, "plugins.encryption", "listen_port"),
            Some(17)
        );
    }

    #[test]
    fn finds_tables_and_array_entries() {
        assert_eq!(locate_key(TEXT, "plugins.observe", "wasm"), Some(12));
        assert_eq!(locate_key(TEXT, "plugins.observe", "wasm.kind"), Some(14));
        assert_eq!(
            locate_key(TEXT, "plugins.observe", "wasm[0].kind"),
            Some(14)
        );
    }

    #[test]
    fn missing_key_is_none() {
        assert_eq!(locate_key(TEXT, "plugins.lb", "nope"), None);
        assert_eq!(locate_key(TEXT, "plugins.policy", "algoritm"), None);
    }
}
