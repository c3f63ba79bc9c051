//! The `local` datastore: Kubernetes YAML in directories, plus a runtime
//! directory where the agents of one machine publish their own objects.
//!
//! Every agent of a sandbox watches the same runtime directory and writes only
//! `<runtime_dir>/<node>.yaml`, so agents on one machine share state as they
//! would through the API server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::datastore::{Datastore, DatastoreError, check_owned};
use super::file_watch::{DirPoller, FileEvent};
use super::manifest::parse_manifest;
use super::objects::{Object, ObjectKey};
use super::store::{Issue, Severity, StateStore};

/// Settings of the `local` datastore.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// This node; published objects go to `<runtime_dir>/<node_name>.yaml`.
    pub node_name: String,
    /// Directories of manifests, read recursively.
    pub manifest_dirs: Vec<PathBuf>,
    /// Shared directory of published objects; `None` disables publishing.
    pub runtime_dir: Option<PathBuf>,
    /// How often files are checked for changes.
    pub poll_interval: Duration,
    /// Id of this datastore's source in the store.
    pub source_id: String,
}

impl LocalConfig {
    pub fn new(node_name: impl Into<String>, manifest_dirs: Vec<PathBuf>) -> Self {
        LocalConfig {
            node_name: node_name.into(),
            manifest_dirs,
            runtime_dir: None,
            poll_interval: Duration::from_millis(250),
            source_id: "local".to_owned(),
        }
    }

    pub fn with_runtime_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runtime_dir = Some(dir.into());
        self
    }
}

/// The `local` datastore. See the module documentation.
pub struct LocalDatastore {
    config: LocalConfig,
    /// What this node published, written as a whole on every change.
    published: tokio::sync::Mutex<BTreeMap<ObjectKey, Object>>,
    /// Wakes the poll loop right after publishing.
    rescan: Notify,
    issues: Mutex<Vec<Issue>>,
}

/// What the poll loop knows about one file.
#[derive(Default)]
struct FileState {
    /// Objects of the last version that parsed without errors.
    good: Vec<Object>,
    problems: Vec<Issue>,
}

impl LocalDatastore {
    /// A restarted agent takes over what it published before, so it can
    /// withdraw objects that are gone meanwhile.
    pub fn new(config: LocalConfig) -> Self {
        let datastore = LocalDatastore {
            config,
            published: tokio::sync::Mutex::new(BTreeMap::new()),
            rescan: Notify::new(),
            issues: Mutex::new(Vec::new()),
        };
        let previous = datastore.read_published();
        LocalDatastore {
            published: tokio::sync::Mutex::new(previous),
            ..datastore
        }
    }

    /// Objects of this node's published file, if any (best effort).
    fn read_published(&self) -> BTreeMap<ObjectKey, Object> {
        let Some(path) = self.published_path() else {
            return BTreeMap::new();
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            return BTreeMap::new();
        };
        let parsed = parse_manifest(&path, &text);
        for problem in &parsed.problems {
            warn!("previously published objects: {problem}");
        }
        parsed
            .objects
            .into_iter()
            .map(|o| (o.key(), o))
            .filter(|(key, _)| check_owned(&self.config.node_name, key).is_ok())
            .collect()
    }

    /// The file this node's published objects are written to.
    pub fn published_path(&self) -> Option<PathBuf> {
        self.config
            .runtime_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.yaml", self.config.node_name)))
    }

    /// Current problems of the watched files (broken documents, unknown kinds).
    pub fn errors(&self) -> Vec<Issue> {
        self.issues
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn roots(&self) -> Vec<PathBuf> {
        let mut roots = self.config.manifest_dirs.clone();
        roots.extend(self.config.runtime_dir.clone());
        roots
    }

    async fn run_loop(self: Arc<Self>, store: StateStore, shutdown: CancellationToken) {
        let mut poller = Some(DirPoller::new(self.roots()));
        let mut files: BTreeMap<PathBuf, FileState> = BTreeMap::new();
        info!(dirs = ?self.roots(), "local datastore watching");
        loop {
            let Some(mut p) = poller.take() else {
                return;
            };
            let polled = tokio::task::spawn_blocking(move || {
                let events = p.poll();
                (p, events)
            })
            .await;
            let events = match polled {
                Ok((p, events)) => {
                    poller = Some(p);
                    events
                }
                Err(join) => {
                    error!(error = %join, "local datastore poll task failed");
                    return;
                }
            };
            if !events.is_empty() {
                for event in events {
                    self.handle(&mut files, event);
                }
                self.commit(&store, &files);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = self.rescan.notified() => {}
            }
        }
    }

    fn handle(&self, files: &mut BTreeMap<PathBuf, FileState>, event: FileEvent) {
        let source = &self.config.source_id;
        let issue = |severity, message: String| Issue {
            source: source.clone(),
            severity,
            message,
        };
        match event {
            FileEvent::Removed { path } => {
                info!(path = %path.display(), "manifest removed");
                files.remove(&path);
            }
            FileEvent::Unreadable { path, error } => {
                let message = format!("{}: {error}", path.display());
                let state = files.entry(path).or_default();
                if state.problems.iter().all(|p| p.message != message) {
                    error!("{message}");
                }
                state.problems = vec![issue(Severity::Error, message)];
            }
            FileEvent::Changed { path, text } => {
                let parsed = parse_manifest(&path, &text);
                let state = files.entry(path.clone()).or_default();
                state.problems = parsed
                    .problems
                    .iter()
                    .map(|p| issue(p.severity(), p.to_string()))
                    .collect();
                for problem in &parsed.problems {
                    match problem.severity() {
                        Severity::Error => error!("{problem}"),
                        Severity::Warning => warn!("{problem}"),
                    }
                }
                if parsed.is_broken() {
                    warn!(path = %path.display(), "keeping the last good objects of this file until it is fixed");
                } else {
                    info!(path = %path.display(), objects = parsed.objects.len(), "manifest loaded");
                    state.good = parsed.objects;
                }
            }
        }
    }

    /// Pushes the merged good objects of every file to the store.
    fn commit(&self, store: &StateStore, files: &BTreeMap<PathBuf, FileState>) {
        let mut merged: BTreeMap<ObjectKey, (&Path, &Object)> = BTreeMap::new();
        let mut issues: Vec<Issue> = files.values().flat_map(|f| f.problems.clone()).collect();
        for (path, state) in files {
            for object in &state.good {
                let key = object.key();
                if let Some((first, _)) = merged.get(&key) {
                    let message = format!(
                        "{}: {key} is already defined in {}; ignored",
                        path.display(),
                        first.display()
                    );
                    warn!("{message}");
                    issues.push(Issue {
                        source: self.config.source_id.clone(),
                        severity: Severity::Warning,
                        message,
                    });
                    continue;
                }
                merged.insert(key, (path, object));
            }
        }
        store.replace_source(
            &self.config.source_id,
            merged.into_values().map(|(_, o)| o.clone()),
        );
        store.set_issues(&self.config.source_id, issues.clone());
        match self.issues.lock() {
            Ok(mut current) => *current = issues,
            Err(poisoned) => *poisoned.into_inner() = issues,
        }
    }

    /// Writes the published set atomically (temporary file, then rename).
    async fn write_published(
        &self,
        key: &ObjectKey,
        published: &BTreeMap<ObjectKey, Object>,
    ) -> Result<(), DatastoreError> {
        let Some(path) = self.published_path() else {
            return Err(DatastoreError::NoRuntimeDir { key: key.clone() });
        };
        let mut text = String::new();
        for (key, object) in published {
            let yaml =
                serde_yaml::to_string(object).map_err(|source| DatastoreError::Serialize {
                    key: key.clone(),
                    source,
                })?;
            text.push_str("---\n");
            text.push_str(&yaml);
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DatastoreError::Io { path, source }
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let tmp = path.with_file_name(format!(".{}.yaml.tmp", self.config.node_name));
        tokio::fs::write(&tmp, text).await.map_err(io(&tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(io(&path))?;
        self.rescan.notify_one();
        Ok(())
    }
}

impl Datastore for LocalDatastore {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run(
        self: Arc<Self>,
        store: StateStore,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), DatastoreError>> {
        Box::pin(async move {
            self.run_loop(store, shutdown).await;
            Ok(())
        })
    }

    fn publish(&self, object: Object) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            let key = object.key();
            check_owned(&self.config.node_name, &key)?;
            let mut published = self.published.lock().await;
            if published.get(&key) == Some(&object) {
                return Ok(());
            }
            let previous = published.insert(key.clone(), object);
            if let Err(e) = self.write_published(&key, &published).await {
                match previous {
                    Some(previous) => published.insert(key, previous),
                    None => published.remove(&key),
                };
                return Err(e);
            }
            Ok(())
        })
    }

    fn withdraw(&self, key: ObjectKey) -> BoxFuture<'_, Result<(), DatastoreError>> {
        Box::pin(async move {
            let mut published = self.published.lock().await;
            let Some(previous) = published.remove(&key) else {
                return Ok(());
            };
            if let Err(e) = self.write_published(&key, &published).await {
                published.insert(key, previous);
                return Err(e);
            }
            Ok(())
        })
    }
}
