//! How each userspace WireGuard implementation is started. Both create a TUN device
//! named after their argument and serve `/var/run/wireguard/<name>.sock`, so everything
//! after the start (`wg set`, `wg show`, `ip link del`) is the same for both.

use std::process::Command;

use crate::config::Userspace;
use crate::error::WgError;

/// The subcommand of the `porin` binary that runs Porin's device.
pub const PORIN_SUBCOMMAND: &str = "wireguard";

/// The command that runs `implementation` in the foreground for device `name`.
/// Porin's device is the running binary itself (`porin wireguard NAME`), so the agent
/// and its tunnel are always the same build.
pub fn command(implementation: Userspace, name: &str) -> Result<Command, WgError> {
    match implementation {
        Userspace::Porin => {
            let exe = std::env::current_exe().map_err(|e| WgError::Command {
                command: format!("porin {PORIN_SUBCOMMAND} {name}"),
                message: format!("cannot find the running porin binary: {e}"),
            })?;
            let mut command = Command::new(exe);
            command.arg(PORIN_SUBCOMMAND).arg(name);
            // Each `wg` call is a control connection that gotatun logs at info.
            if std::env::var_os("PORIN_LOG").is_none() {
                command.env("PORIN_LOG", "info,gotatun=warn");
            }
            Ok(command)
        }
        Userspace::WireguardGo => {
            let mut command = Command::new("wireguard-go");
            command
                .arg("-f")
                .arg(name)
                .env("WG_PROCESS_FOREGROUND", "1");
            Ok(command)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_implementations_take_the_device_name() {
        let porin = command(Userspace::Porin, "pwg1234").expect("porin");
        let args: Vec<_> = porin.get_args().collect();
        assert_eq!(args, ["wireguard", "pwg1234"]);
        let go = command(Userspace::WireguardGo, "pwg1234").expect("wireguard-go");
        assert_eq!(go.get_program(), "wireguard-go");
        let args: Vec<_> = go.get_args().collect();
        assert_eq!(args, ["-f", "pwg1234"]);
    }
}
