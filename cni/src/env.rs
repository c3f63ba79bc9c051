//! The CNI_* environment variables of one invocation.

use std::collections::HashMap;

use crate::error::{CniError, ErrorCode};

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(value: &str) -> Result<Self, CniError> {
        Ok(match value {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_COMMAND {other:?} is not a CNI command"),
                    "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
                ));
            }
        })
    }
}

/// What the runtime passed in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `KEY=VALUE;KEY=VALUE`.
    pub args: Vec<(String, String)>,
}

impl CniEnv {
    /// Read the variables from the process environment.
    pub fn from_process() -> Result<Self, CniError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Read the variables from `vars` (tests pass their own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, CniError> {
        let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        let command = get("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                "CNI_COMMAND is not set",
                "porin-cni is run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC",
            )
        })?;
        Ok(Self {
            command: Command::parse(&command)?,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?,
        })
    }

    /// `CNI_CONTAINERID`, required by ADD, DEL and CHECK; checked against the
    /// spec's alphabet.
    pub fn require_container_id(&self) -> Result<&str, CniError> {
        let id = self.require("CNI_CONTAINERID", self.container_id.as_deref())?;
        let valid = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(id)
        } else {
            Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_CONTAINERID {id:?} is not a valid container id"),
                "the CNI spec allows letters, digits, '-', '_' and '.'",
            ))
        }
    }

    /// `CNI_NETNS`, required by ADD and CHECK.
    pub fn require_netns(&self) -> Result<&str, CniError> {
        self.require("CNI_NETNS", self.netns.as_deref())
    }

    /// `CNI_IFNAME`, required by ADD, DEL and CHECK; a valid Linux interface name.
    pub fn require_ifname(&self) -> Result<&str, CniError> {
        let name = self.require("CNI_IFNAME", self.ifname.as_deref())?;
        let valid = name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if valid {
            Ok(name)
        } else {
            Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("CNI_IFNAME {name:?} is not a valid interface name"),
                "at most 15 characters, no '/', ':' or spaces",
            ))
        }
    }

    /// A `CNI_ARGS` value.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn require<'a>(&self, name: &str, value: Option<&'a str>) -> Result<&'a str, CniError> {
        value.ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("{name} is not set"),
                format!("the runtime must set {name} for {:?}", self.command),
            )
        })
    }
}

fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    CniError::new(
                        ErrorCode::InvalidEnvironment,
                        format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                        format!("CNI_ARGS was {text:?}"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        CniEnv::from_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn kubelet_style_args_are_read() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
            ),
        ])
        .expect("env");
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.arg("K8S_POD_NAMESPACE"), Some("shop"));
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(e.require_container_id(), Ok("abc123"));
    }

    #[test]
    fn bad_variables_are_named() {
        let e = env(&[("CNI_COMMAND", "ATTACH")]).expect_err("bad command");
        assert!(e.msg.contains("CNI_COMMAND"), "{e}");
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", "K8S_POD_NAME")]).expect_err("args");
        assert!(e.msg.contains("CNI_ARGS"), "{e}");
        let e = env(&[("CNI_COMMAND", "ADD")]).expect("env");
        let missing = e.require_netns().expect_err("no netns");
        assert_eq!(missing.code, ErrorCode::InvalidEnvironment);
        assert!(missing.msg.contains("CNI_NETNS"));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "a-very-long-ifname")]).expect("env");
        assert!(
            e.require_ifname()
                .expect_err("long")
                .msg
                .contains("CNI_IFNAME")
        );
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "a/b")]).expect("env");
        assert!(e.require_container_id().is_err());
    }
}
