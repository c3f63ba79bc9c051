//! Typed plugin configuration from a `porin.toml` section.

use serde::de::DeserializeOwned;

use crate::PluginError;

/// Deserialize a plugin's section (without `enabled`) into its typed config.
///
/// Config types should use `#[serde(deny_unknown_fields)]`. The error names the
/// offending key with its path inside the section (e.g. `wasm[0].kind`), so core
/// can point at its line in the file.
pub fn parse_section<T: DeserializeOwned>(
    plugin: &str,
    section: &toml::Table,
) -> Result<T, PluginError> {
    serde_path_to_error::deserialize(toml::Value::Table(section.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().to_string();
        if path == "." {
            PluginError::Config {
                plugin: plugin.to_string(),
                key: offending_key(&message),
                message,
            }
        } else {
            invalid_key(plugin, &path, message)
        }
    })
}

/// An invalid value of `key` in a plugin's section: `key: message`.
pub fn invalid_key(plugin: &str, key: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError::Config {
        plugin: plugin.to_string(),
        key: Some(key.to_string()),
        message: format!("{key}: {message}"),
    }
}

/// serde names the key in backticks: "unknown field `algoritm`, expected ...".
fn offending_key(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        size: u32,
    }

    #[test]
    fn unknown_key_is_named() {
        let table: toml::Table = toml::from_str("sise = 3").expect("toml");
        let err = parse_section::<Sample>("lb", &table).expect_err("must fail");
        assert_eq!(err.config_key(), Some("sise"));
        assert!(
            err.to_string()
                .starts_with("plugins.lb: sise: unknown field `sise`")
        );
    }

    #[test]
    fn valid_section_parses() {
        let table: toml::Table = toml::from_str("size = 3").expect("toml");
        let cfg = parse_section::<Sample>("lb", &table).expect("valid");
        assert_eq!(cfg.size, 3);
    }
}
