//! The CNI spec versions this plugin speaks.

use crate::error::{CniError, ErrorCode};

/// Versions whose result format this plugin can write, oldest first.
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version.
pub const LATEST: &str = "1.1.0";

/// Check that a network config's `cniVersion` is one we speak.
pub fn ensure_supported(version: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("incompatible CNI version {version:?}"),
            format!("porin-cni supports {}", supported().join(", ")),
        ))
    }
}

/// The supported versions.
pub fn supported() -> Vec<&'static str> {
    SUPPORTED.to_vec()
}

/// Results before 1.0.0 carry `"version": "4"` in each IP config.
pub fn ips_carry_version(version: &str) -> bool {
    version.starts_with("0.")
}

/// STATUS and GC exist from 1.1.0 on.
pub fn has_status_and_gc(version: &str) -> bool {
    version == "1.1.0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_versions_name_themselves_and_the_supported_ones() {
        let e = ensure_supported("2.0.0").expect_err("unsupported");
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        assert!(e.msg.contains("2.0.0"));
        assert!(e.details.contains("1.1.0"));
        assert!(ensure_supported("1.0.0").is_ok());
        assert_eq!(supported().len(), 5);
    }
}
