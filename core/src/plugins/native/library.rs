//! Opening a shared object and calling into it.
//!
//! Every call into the object runs on one thread per plugin (the "plugin thread"). Code
//! of the object may register thread-local destructors (Rust's std does, e.g. for
//! `thread::current`); the C library keeps an object mapped while a thread holding such
//! destructors lives. Keeping the plugin's code off the agent's threads, and ending the
//! plugin thread before the object is closed, lets disabling a plugin really unload it.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use libloading::Library;
use porin_plugin_sdk::native::abi::{
    ABI_VERSION, ABI_VERSION_SYMBOL, AbiVersionFn, OK, PANICKED, PluginVTable, VTABLE_SYMBOL,
    VTableFn, WriteFn, write_to_vec,
};
use tracing::info;

use super::error::NativeLoadError;

/// What a call into the plugin gave back, when not success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The plugin returned an error.
    Failed(String),
    /// The plugin panicked (now, or earlier: it is disabled since).
    Panicked(String),
}

/// A call run on the plugin thread with the plugin's handle.
type Job = Box<dyn FnOnce(*mut c_void) + Send>;

struct Worker {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// A loaded object and the plugin it built. Dropping it destroys the plugin, ends the
/// plugin thread, and then unloads the object.
pub struct Loaded {
    vtable: PluginVTable,
    worker: Mutex<Option<Worker>>,
    panicked: Mutex<Option<String>>,
    pub path: PathBuf,
    // Last: dropped after `Drop::drop` ended the plugin thread.
    _library: Library,
}

impl Loaded {
    /// Opens `path`, checks the ABI version (before calling anything else), and builds
    /// the plugin on its thread.
    pub fn open(path: &Path) -> Result<Self, NativeLoadError> {
        // SAFETY: loading a shared object runs its initialisers; the user configured
        // this object as a Porin plugin.
        let library = unsafe { Library::new(path) }.map_err(|e| NativeLoadError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let missing = |symbol: &[u8]| NativeLoadError::MissingSymbol {
            path: path.to_path_buf(),
            symbol: String::from_utf8_lossy(symbol).into_owned(),
        };
        // SAFETY: the symbol's type is fixed by the ABI.
        let version = unsafe { library.get::<AbiVersionFn>(ABI_VERSION_SYMBOL) }
            .map_err(|_| missing(ABI_VERSION_SYMBOL))?;
        // SAFETY: as above; the function takes nothing and returns an integer.
        let found = unsafe { version() };
        if found != ABI_VERSION {
            return Err(NativeLoadError::AbiMismatch {
                path: path.to_path_buf(),
                found,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: the version matches, so the symbol has the ABI's type.
        let vtable_fn = unsafe { library.get::<VTableFn>(VTABLE_SYMBOL) }
            .map_err(|_| missing(VTABLE_SYMBOL))?;
        // SAFETY: returns a pointer to a static table in the object.
        let vtable =
            unsafe { vtable_fn().as_ref().copied() }.ok_or_else(|| NativeLoadError::Create {
                path: path.to_path_buf(),
                message: "porin_plugin_vtable returned null".to_string(),
            })?;
        let worker = spawn_worker(path, vtable)?;
        Ok(Self {
            vtable,
            worker: Mutex::new(Some(worker)),
            panicked: Mutex::new(None),
            path: path.to_path_buf(),
            _library: library,
        })
    }

    pub fn vtable(&self) -> &PluginVTable {
        &self.vtable
    }

    /// The panic that disabled the plugin, if any.
    pub fn panicked(&self) -> Option<String> {
        self.panicked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// One call into the plugin on its thread, with its output collected. Once the
    /// plugin panicked it is never called again.
    pub fn call(
        &self,
        f: impl FnOnce(*mut c_void, *mut c_void, WriteFn) -> i32 + Send + 'static,
    ) -> Result<Vec<u8>, CallError> {
        if let Some(message) = self.panicked() {
            return Err(CallError::Panicked(message));
        }
        let jobs = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|w| w.jobs.clone());
        let gone = || CallError::Failed("the plugin thread has ended".to_string());
        let jobs = jobs.ok_or_else(gone)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |handle| {
            let mut out: Vec<u8> = Vec::new();
            let code = f(handle, (&raw mut out).cast(), write_to_vec);
            let _ = reply.send((code, out));
        });
        jobs.send(job).map_err(|_| gone())?;
        let (code, out) = answer.recv().map_err(|_| gone())?;
        let text = || String::from_utf8_lossy(&out).into_owned();
        match code {
            OK => Ok(out),
            PANICKED => {
                let message = text();
                *self
                    .panicked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message.clone());
                Err(CallError::Panicked(message))
            }
            _ => Err(CallError::Failed(text())),
        }
    }
}

/// Starts the plugin thread and builds the plugin on it.
fn spawn_worker(path: &Path, vtable: PluginVTable) -> Result<Worker, NativeLoadError> {
    let create_error = |message: String| NativeLoadError::Create {
        path: path.to_path_buf(),
        message,
    };
    let (jobs, queue) = mpsc::channel::<Job>();
    let (created, creation) = mpsc::sync_channel::<Result<(), String>>(1);
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().chars().take(12).collect::<String>())
        .unwrap_or_default();
    let thread = std::thread::Builder::new()
        .name(format!("native-{name}"))
        .spawn(move || {
            let mut message: Vec<u8> = Vec::new();
            // SAFETY: `message` lives through the call.
            let handle = unsafe { (vtable.create)((&raw mut message).cast(), write_to_vec) };
            if handle.is_null() {
                let _ = created.send(Err(String::from_utf8_lossy(&message).into_owned()));
                return;
            }
            let _ = created.send(Ok(()));
            for job in queue {
                job(handle);
            }
            // SAFETY: the handle came from `create`; no call runs any more.
            unsafe { (vtable.destroy)(handle) };
        })
        .map_err(|e| create_error(format!("starting its thread: {e}")))?;
    match creation.recv() {
        Ok(Ok(())) => Ok(Worker { jobs, thread }),
        Ok(Err(message)) => {
            let _ = thread.join();
            Err(create_error(message))
        }
        Err(_) => {
            let _ = thread.join();
            Err(create_error(
                "its thread ended while creating it".to_string(),
            ))
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let worker = self
            .worker
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Worker { jobs, thread }) = worker {
            // Closing the queue makes the thread destroy the plugin and end.
            drop(jobs);
            let _ = thread.join();
        }
        info!(path = %self.path.display(), "native plugin unloaded");
    }
}
