//! The node's WireGuard key pair: made at first start, kept in the state directory
//! (private key mode 0600), reused across restarts.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::command::run;
use crate::error::WgError;

/// File name of the private key inside the plugin's state directory.
pub const PRIVATE_KEY_FILE: &str = "wireguard-private.key";

/// Makes and derives keys. The real one runs `wg genkey` / `wg pubkey`; tests fake it.
pub trait KeyTool {
    fn generate(&self) -> Result<String, WgError>;
    fn public_of(&self, private: &str) -> Result<String, WgError>;
}

/// `wg genkey` and `wg pubkey` from wireguard-tools.
#[derive(Debug, Default, Clone, Copy)]
pub struct WgKeyTool;

impl KeyTool for WgKeyTool {
    fn generate(&self) -> Result<String, WgError> {
        run("wg", &["genkey"], None).map(|s| s.trim().to_string())
    }

    fn public_of(&self, private: &str) -> Result<String, WgError> {
        run("wg", &["pubkey"], Some(private)).map(|s| s.trim().to_string())
    }
}

/// This node's key pair; the private key stays in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKey {
    pub private_key_path: PathBuf,
    pub public_key: String,
}

/// Load the key pair from `dir`, or make one and store it (0600). A stored key with a
/// looser mode is tightened; a stored key that is not a WireGuard key is an error rather
/// than silently replaced (other nodes may still have its public half).
pub fn load_or_create(dir: &Path, tool: &dyn KeyTool) -> Result<NodeKey, WgError> {
    let path = dir.join(PRIVATE_KEY_FILE);
    let io = |what, source| WgError::Io {
        what,
        path: path.clone(),
        source,
    };
    let private = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)
                .map_err(|e| io("reading the mode of", e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{mode:o}"), "private key readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io("setting the mode of", e))?;
            }
            text.trim().to_string()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
            let key = tool.generate()?;
            check_key(&key, &path)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io("creating", e))?;
            file.write_all(format!("{key}\n").as_bytes())
                .map_err(|e| io("writing", e))?;
            info!(path = %path.display(), "made a new WireGuard key pair");
            key
        }
        Err(e) => return Err(io("reading", e)),
    };
    check_key(&private, &path)?;
    let public_key = tool.public_of(&private)?;
    check_key(&public_key, &path)?;
    Ok(NodeKey {
        private_key_path: path,
        public_key,
    })
}

/// A WireGuard key is 32 bytes in standard base64: 43 characters and one `=`.
pub fn is_key(text: &str) -> bool {
    text.len() == 44
        && text.ends_with('=')
        && text[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

fn check_key(text: &str, path: &Path) -> Result<(), WgError> {
    if is_key(text) {
        Ok(())
    } else {
        Err(WgError::BadKey {
            path: path.to_path_buf(),
            reason: format!(
                "expected 44 base64 characters, got {} characters",
                text.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Hands out distinct fake keys and counts how many it made.
    #[derive(Default)]
    struct FakeTool {
        made: Cell<u8>,
    }

    impl KeyTool for FakeTool {
        fn generate(&self) -> Result<String, WgError> {
            self.made.set(self.made.get() + 1);
            Ok(format!("{}{}=", "A".repeat(42), self.made.get()))
        }
        fn public_of(&self, private: &str) -> Result<String, WgError> {
            Ok(private.replace('A', "P"))
        }
    }

    #[test]
    fn first_start_makes_a_0600_key_and_restarts_reuse_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = FakeTool::default();
        let first = load_or_create(dir.path(), &tool).expect("first");
        let mode = std::fs::metadata(&first.private_key_path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(tool.made.get(), 1);
        let second = load_or_create(dir.path(), &tool).expect("second");
        assert_eq!(first, second, "a restart must reuse the key");
        assert_eq!(tool.made.get(), 1, "no second key is made");
        assert!(first.public_key.starts_with('P'));
    }

    #[test]
    fn a_loose_mode_is_tightened_and_a_broken_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(PRIVATE_KEY_FILE);
        std::fs::write(&path, format!("{}=\n", "B".repeat(43))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let tool = FakeTool::default();
        load_or_create(dir.path(), &tool).expect("valid key");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(tool.made.get(), 0);

        std::fs::write(&path, "not a key\n").expect("write");
        let err = load_or_create(dir.path(), &tool).expect_err("broken key");
        assert!(matches!(err, WgError::BadKey { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "not a key\n",
            "a broken key is never overwritten"
        );
    }

    #[test]
    fn key_syntax() {
        assert!(is_key("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="));
        assert!(!is_key("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk"));
        assert!(!is_key("yAnz5TF lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="));
    }
}
