//! The control socket's place: shared by every network namespace on the machine.

use std::path::PathBuf;

use crate::TunnelError;

/// Where userspace WireGuard implementations keep their control sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The control socket of interface `name`.
pub fn socket_path(name: &str) -> PathBuf {
    PathBuf::from(SOCKET_DIR).join(format!("{name}.sock"))
}

/// A name the kernel takes for a link and that is safe as a file name under
/// [`SOCKET_DIR`].
pub fn check_name(name: &str) -> Result<(), TunnelError> {
    let invalid = |reason| TunnelError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 15 {
        return Err(invalid("longer than 15 bytes (IFNAMSIZ)"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || name == "."
        || name == ".."
    {
        return Err(invalid(
            "only letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_created() {
        assert!(check_name("pwg1a2b3c4d5e6f").is_ok());
        for bad in ["", "a-name-longer-than-15", "../etc", "a/b", "..", "wg 0"] {
            let e = check_name(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(
            socket_path("pwg0"),
            PathBuf::from("/var/run/wireguard/pwg0.sock")
        );
    }
}
