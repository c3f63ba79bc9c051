//! TLS for the Hubble API over TCP (rustls through tonic): the agent's and the relay's
//! listeners, and the clients that reach them (`porin observe`, the relay's connections
//! to agents). Cilium's model: the server presents a certificate; with client CA files
//! it requires and verifies a client certificate (mutual TLS). Unix sockets stay
//! plaintext (file permissions guard them).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS {what} {path}: no PEM block in the file")]
    NotPem { what: &'static str, path: PathBuf },
    #[error("TLS {0} is given without {1}")]
    Incomplete(&'static str, &'static str),
}

/// A server's TLS settings (`[plugins.observe.tls]`, `porin relay --tls-relay-server-*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM).
    pub key_file: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; empty: no client
    /// certificate is asked for.
    #[serde(default)]
    pub client_ca_files: Vec<PathBuf>,
}

impl ServerTls {
    /// The tonic configuration, reading the files now.
    pub fn config(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_pem("certificate", &self.cert_file)?;
        let key = read_pem("key", &self.key_file)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if !self.client_ca_files.is_empty() {
            config = config.client_ca_root(Certificate::from_pem(read_all(
                "client CA",
                &self.client_ca_files,
            )?));
        }
        Ok(config)
    }
}

/// A client's TLS settings (`porin observe --tls ...`, `porin relay --tls-hubble-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca_files: Vec<PathBuf>,
    /// The client certificate and key, for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name expected in the server's certificate; default: the host dialled.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The tonic configuration, reading the files now.
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        if !self.ca_files.is_empty() {
            config = config.ca_certificate(Certificate::from_pem(read_all("CA", &self.ca_files)?));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read_pem("client certificate", cert)?,
                    read_pem("client key", key)?,
                ));
            }
            (Some(_), None) => {
                return Err(TlsError::Incomplete("a client certificate", "its key"));
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete("a client key", "its certificate"));
            }
            (None, None) => {}
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn read_all(what: &'static str, paths: &[PathBuf]) -> Result<Vec<u8>, TlsError> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(read_pem(what, path)?);
        all.push(b'\n');
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let missing = dir.path().join("missing.pem");
        let server = ServerTls {
            cert_file: missing.clone(),
            key_file: junk.clone(),
            client_ca_files: vec![],
        };
        let e = server.config().expect_err("missing").to_string();
        assert!(
            e.contains("certificate") && e.contains("missing.pem"),
            "{e}"
        );
        let server = ServerTls {
            cert_file: junk.clone(),
            ..server
        };
        let e = server.config().expect_err("junk").to_string();
        assert!(e.contains("junk.pem") && e.contains("no PEM"), "{e}");
        let client = ClientTls {
            cert_file: Some(junk),
            ..ClientTls::default()
        };
        let e = client.config().expect_err("no key").to_string();
        assert!(e.contains("without its key"), "{e}");
        assert!(ClientTls::default().config().is_ok());
    }
}
