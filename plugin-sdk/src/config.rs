//! Typed plugin configuration from a `porin.toml` section.

use serde::de::DeserializeOwned;

use crate::PluginError;

/// Deserialize a plugin's section (without `enabled`) into its typed config.
///
/// Config types should use `#[serde(deny_unknown_fields)]`; the unknown key is
/// extracted from serde's message so core can point at its line in the file.
pub fn parse_section<T: DeserializeOwned>(
    plugin: &str,
    section: &toml::Table,
) -> Result<T, PluginError> {
    T::deserialize(toml::Value::Table(section.clone())).map_err(|e| {
        let message = e.message().to_string();
        PluginError::Config {
            plugin: plugin.to_string(),
            key: offending_key(&message),
            message,
        }
    })
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
                .starts_with("plugins.lb: unknown field `sise`")
        );
    }

    #[test]
    fn valid_section_parses() {
        let table: toml::Table = toml::from_str("size = 3").expect("toml");
        let cfg = parse_section::<Sample>("lb", &table).expect("valid");
        assert_eq!(cfg.size, 3);
    }
}
