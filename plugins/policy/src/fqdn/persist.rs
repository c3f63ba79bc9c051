//! Learned FQDN addresses on disk, so a restarted agent knows them again (Cilium restores
//! its DNS cache from the endpoints' state): name -> addresses, each with its expiry
//! (wall clock) and the endpoints that learned it, in `<state_dir>/fqdn-cache.json`.
//!
//! Written atomically (a temporary file in the same directory, synced, then renamed), so a
//! crash leaves the old file or the new one. Bounded: at most
//! [`MAX_PERSISTED_ADDRESSES`] (name, address) pairs are written, those expiring last
//! first, and a file over [`MAX_FILE_BYTES`] is not read. A file that cannot be read or
//! parsed is reported with its path and ignored (the next save replaces it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::cache::FqdnCache;

/// The file's name in the agent's state directory.
pub const FILE_NAME: &str = "fqdn-cache.json";
/// The most (name, address) pairs one file holds.
pub const MAX_PERSISTED_ADDRESSES: usize = 100_000;
/// Larger files are not read (a bounded file of the above is well under it).
pub const MAX_FILE_BYTES: u64 = 32 << 20;
const VERSION: u32 = 1;

/// Why the file could not be read or written; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes, over the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: not a learned FQDN address file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: version {found}, this agent reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One learned address of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedAddress {
    pub ip: IpAddr,
    /// Seconds since the Unix epoch.
    pub expires_unix: u64,
    pub endpoints: BTreeSet<u32>,
}

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FqdnSnapshot {
    pub version: u32,
    pub names: BTreeMap<String, Vec<PersistedAddress>>,
}

/// An address to restore: its name, address, endpoints and expiry on this clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub name: String,
    pub ip: IpAddr,
    pub endpoints: BTreeSet<u32>,
    pub expires: Instant,
}

impl FqdnSnapshot {
    /// The cache's addresses, the [`MAX_PERSISTED_ADDRESSES`] expiring last; `now` and
    /// `wall` are the same moment on both clocks.
    pub fn of(cache: &FqdnCache, now: Instant, wall: SystemTime) -> Self {
        let wall_secs = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut pairs: Vec<(&String, PersistedAddress)> = cache
            .iter()
            .flat_map(|(ip, learned)| {
                let left = learned.expires.saturating_duration_since(now);
                let expires_unix = (wall_secs + left).as_secs();
                learned.names.iter().map(move |name| {
                    let address = PersistedAddress {
                        ip: *ip,
                        expires_unix,
                        endpoints: learned.endpoints.clone(),
                    };
                    (name, address)
                })
            })
            .collect();
        if pairs.len() > MAX_PERSISTED_ADDRESSES {
            pairs.sort_by_key(|(_, a)| std::cmp::Reverse(a.expires_unix));
            pairs.truncate(MAX_PERSISTED_ADDRESSES);
        }
        let mut names: BTreeMap<String, Vec<PersistedAddress>> = BTreeMap::new();
        for (name, address) in pairs {
            names.entry(name.clone()).or_default().push(address);
        }
        Self {
            version: VERSION,
            names,
        }
    }

    /// The addresses not yet expired, with their expiry on the monotonic clock.
    pub fn live(&self, now: Instant, wall: SystemTime) -> Vec<Restored> {
        let wall_secs = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.names
            .iter()
            .flat_map(|(name, addresses)| {
                addresses
                    .iter()
                    .filter(move |a| a.expires_unix > wall_secs)
                    .map(move |a| Restored {
                        name: name.clone(),
                        ip: a.ip,
                        endpoints: a.endpoints.clone(),
                        expires: now + Duration::from_secs(a.expires_unix - wall_secs),
                    })
            })
            .collect()
    }
}

/// Writes `snapshot` to `path` atomically (creating its directory).
pub fn save(path: &Path, snapshot: &FqdnSnapshot) -> Result<(), PersistError> {
    let write_err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec(snapshot).map_err(|e| write_err(e.into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err)
}

/// Reads the file at `path`: `None` when there is none.
pub fn load(path: &Path) -> Result<Option<FqdnSnapshot>, PersistError> {
    let read_err = |source| PersistError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if size > MAX_FILE_BYTES {
        return Err(PersistError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let snapshot: FqdnSnapshot =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    if snapshot.version != VERSION {
        return Err(PersistError::Version {
            path: path.to_path_buf(),
            found: snapshot.version,
        });
    }
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fqdn::FqdnLimits;

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, i])
    }

    /// A directory of its own, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("porin-fqdn-persist-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn cache(now: Instant) -> FqdnCache {
        let mut c = FqdnCache::new(FqdnLimits {
            min_ttl: Duration::ZERO,
            ..FqdnLimits::default()
        });
        c.learn(5, "a.example.com", ip(1), 7, Duration::from_secs(600), now);
        c.learn(6, "a.example.com", ip(2), 7, Duration::from_secs(60), now);
        c.learn(5, "b.example.com", ip(1), 7, Duration::from_secs(600), now);
        c
    }

    #[test]
    fn saved_addresses_come_back_with_their_expiry() {
        let dir = tempdir();
        let path = dir.path().join("state").join(FILE_NAME);
        let now = Instant::now();
        let wall = SystemTime::now();
        save(&path, &FqdnSnapshot::of(&cache(now), now, wall)).expect("save");
        assert!(
            !path.with_extension("json.tmp").exists(),
            "renamed into place"
        );
        let loaded = load(&path).expect("load").expect("a file");
        assert_eq!(loaded.names.len(), 2);
        // A minute later on both clocks: a.example.com's second address expired.
        let later = now + Duration::from_secs(61);
        let live = loaded.live(later, wall + Duration::from_secs(61));
        let mut got: Vec<(&str, IpAddr)> = live.iter().map(|r| (r.name.as_str(), r.ip)).collect();
        got.sort();
        assert_eq!(
            got,
            vec![("a.example.com", ip(1)), ("b.example.com", ip(1))]
        );
        let left = live[0].expires.saturating_duration_since(later);
        assert!(
            (Duration::from_secs(537)..=Duration::from_secs(540)).contains(&left),
            "{left:?}"
        );
        assert_eq!(live[0].endpoints, BTreeSet::from([5]));
    }

    #[test]
    fn no_file_is_nothing_to_restore() {
        let dir = tempdir();
        assert!(load(&dir.path().join(FILE_NAME)).expect("load").is_none());
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_naming_it() {
        let dir = tempdir();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            b"{\"version\": 1, \"names\": {\"a\": [{\"ip\": \"x\"",
        )
        .expect("write");
        let e = load(&path).expect_err("truncated JSON");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        std::fs::write(&path, br#"{"version": 9, "names": {}}"#).expect("write");
        let e = load(&path).expect_err("another version");
        assert!(e.to_string().contains("version 9"), "{e}");
    }

    #[test]
    fn an_oversized_file_is_not_read() {
        let dir = tempdir();
        let path = dir.path().join(FILE_NAME);
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(MAX_FILE_BYTES + 1).expect("grow");
        assert!(matches!(load(&path), Err(PersistError::TooLarge { .. })));
    }

    #[test]
    fn the_file_is_bounded_to_the_addresses_expiring_last() {
        let now = Instant::now();
        let mut c = FqdnCache::new(FqdnLimits {
            max_ips_per_name: usize::MAX,
            max_ips_per_endpoint: usize::MAX,
            min_ttl: Duration::ZERO,
        });
        let total = MAX_PERSISTED_ADDRESSES + 10;
        for i in 0..total {
            let addr = IpAddr::from(u32::try_from(0x0a00_0000 + i).expect("fits").to_be_bytes());
            let ttl = Duration::from_secs(60 + u64::try_from(i).expect("fits"));
            c.learn(1, "many.example.com", addr, 7, ttl, now);
        }
        let snapshot = FqdnSnapshot::of(&c, now, SystemTime::now());
        let kept = &snapshot.names["many.example.com"];
        assert_eq!(kept.len(), MAX_PERSISTED_ADDRESSES);
        let first = IpAddr::from(0x0a00_0000u32.to_be_bytes());
        assert!(
            !kept.iter().any(|a| a.ip == first),
            "the first to expire goes"
        );
    }
}
