//! One loaded module: compiled, checked against the contract, instantiated
//! with its own `Store`, initialised; and the calls that hand it batches.

use std::time::Duration;

use hubble_proto::flow::Flow;
use porin_wasm_abi as abi;
use wasmtime::{
    Engine, ExternType, FuncType, Instance as WasmInstance, Memory, Module, Store, Trap, TypedFunc,
    ValType,
};

use crate::config::{WasmKind, WasmModuleConfig};
use crate::cpu::thread_cpu_time;
use crate::encode;
use crate::error::{CallError, Reason};
use crate::host_state::HostState;
use crate::linker::{check_imports, linker};

/// Size of the batch buffer each module allocates for the host.
pub const BUFFER_BYTES: usize = 256 * 1024;
/// Longest configuration string.
pub const MAX_CONFIG: usize = 64 * 1024;

/// A running module instance.
pub struct Instance {
    store: Store<HostState>,
    memory: Memory,
    buffer: usize,
    call: TypedFunc<i32, i32>,
    deadline_ticks: u64,
    deadline_ms: u32,
}

type Refusal = (Reason, String);

fn refuse(reason: Reason, message: impl Into<String>) -> Refusal {
    (reason, message.into())
}

/// Whether `ty` is a function of `params` i32s returning `results` i32s.
fn is_i32_func(ty: &FuncType, params: usize, results: usize) -> bool {
    ty.params().len() == params
        && ty.results().len() == results
        && ty
            .params()
            .chain(ty.results())
            .all(|v| matches!(v, ValType::I32))
}

/// Check the exports against the contract for `kind`.
fn check_exports(module: &Module, kind: WasmKind) -> Result<(), Refusal> {
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(f)) => Some(f),
        _ => None,
    };
    if func(abi::EXPORT_VERSION).is_none() {
        let other = module
            .exports()
            .map(|e| e.name())
            .find(|n| n.starts_with(abi::EXPORT_VERSION_PREFIX));
        let (major, minor, _) = abi::VERSION;
        return Err(match other {
            Some(name) => {
                let version = name[abi::EXPORT_VERSION_PREFIX.len()..].replace('_', ".");
                refuse(
                    Reason::Version,
                    format!(
                        "built for porin:flow@{version} (export `{name}`); this host runs \
                         porin:flow@{major}.{minor}: rebuild it with a matching SDK"
                    ),
                )
            }
            None => refuse(
                Reason::Contract,
                format!(
                    "exports no `{}`: not a porin:flow@{major}.{minor} module",
                    abi::EXPORT_VERSION
                ),
            ),
        });
    }
    if !matches!(
        module.get_export(abi::EXPORT_MEMORY),
        Some(ExternType::Memory(_))
    ) {
        return Err(refuse(Reason::Contract, "exports no `memory`"));
    }
    let (wanted, other, other_kind) = match kind {
        WasmKind::Filter => (abi::EXPORT_FILTER, abi::EXPORT_LABEL, WasmKind::Labeller),
        WasmKind::Labeller => (abi::EXPORT_LABEL, abi::EXPORT_FILTER, WasmKind::Filter),
    };
    if func(wanted).is_none() && func(other).is_some() {
        return Err(refuse(
            Reason::Contract,
            format!(
                "is a {} (exports `{other}`) but is configured with kind = \"{}\"",
                other_kind.as_str(),
                kind.as_str()
            ),
        ));
    }
    for (name, params, results) in [
        (abi::EXPORT_VERSION, 0, 1),
        (abi::EXPORT_ALLOC, 1, 1),
        (abi::EXPORT_INIT, 2, 1),
        (wanted, 1, 1),
    ] {
        match func(name) {
            None => {
                return Err(refuse(
                    Reason::Contract,
                    format!("a {} must export function `{name}`", kind.as_str()),
                ));
            }
            Some(ty) if !is_i32_func(&ty, params, results) => {
                return Err(refuse(
                    Reason::Contract,
                    format!(
                        "export `{name}` has type {ty:?}; the contract wants {params} i32 \
                         parameter(s) and {results} i32 result"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Compile `bytes` (a core module, binary or text).
pub fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, Refusal> {
    Module::new(engine, bytes).map_err(|e| {
        refuse(
            Reason::Load,
            format!("not a valid WebAssembly module: {}", one_line(&e)),
        )
    })
}

fn one_line(e: &wasmtime::Error) -> String {
    let root = e.root_cause().to_string();
    let top = e.to_string();
    if root == top || top.contains(&root) {
        top
    } else {
        format!("{top}: {root}")
    }
}

impl Instance {
    /// Check, instantiate and initialise a compiled module.
    pub fn start(
        engine: &Engine,
        module: &Module,
        config: &WasmModuleConfig,
    ) -> Result<Self, Refusal> {
        check_exports(module, config.kind)?;
        check_imports(module, &config.wasi)?;
        let pre = linker(engine, &config.wasi)
            .and_then(|l| l.instantiate_pre(module))
            .map_err(|e| refuse(Reason::Import, one_line(&e)))?;
        let memory_bytes = config.memory_mib as usize * 1024 * 1024;
        let mut store = Store::new(engine, HostState::new(&config.name, memory_bytes));
        store.limiter(|s| &mut s.limiter);
        store.data_mut().deadline = Duration::from_millis(u64::from(config.deadline_ms));
        store.epoch_deadline_callback(|ctx| Ok(ctx.data().on_epoch()));
        let deadline_ticks = u64::from(config.deadline_ms) + 1;
        store.set_epoch_deadline(deadline_ticks);
        store.data_mut().call_started = thread_cpu_time();
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| classify(&mut store, e, config.deadline_ms))?;
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| refuse(Reason::Contract, "exports no `memory`"))?;
        let typed = |store: &mut Store<HostState>, name: &str| {
            instance
                .get_typed_func::<i32, i32>(store, name)
                .map_err(|e| refuse(Reason::Contract, one_line(&e)))
        };
        let call_name = match config.kind {
            WasmKind::Filter => abi::EXPORT_FILTER,
            WasmKind::Labeller => abi::EXPORT_LABEL,
        };
        let call = typed(&mut store, call_name)?;
        let alloc = typed(&mut store, abi::EXPORT_ALLOC)?;
        let mut this = Self {
            store,
            memory,
            buffer: 0,
            call,
            deadline_ticks,
            deadline_ms: config.deadline_ms,
        };
        this.check_kind(&instance, config.kind)?;
        let ptr = this.guarded(|s| alloc.call(s, BUFFER_BYTES as i32))?;
        let buffer = ptr as u32 as usize;
        if buffer == 0 || buffer + BUFFER_BYTES > this.memory.data_size(&this.store) {
            return Err(refuse(
                Reason::Contract,
                format!("`porin_alloc` returned {ptr}, not a buffer of {BUFFER_BYTES} bytes"),
            ));
        }
        this.buffer = buffer;
        this.init(&instance, config)?;
        Ok(this)
    }

    fn check_kind(&mut self, instance: &WasmInstance, kind: WasmKind) -> Result<(), Refusal> {
        let version = instance
            .get_typed_func::<(), i32>(&mut self.store, abi::EXPORT_VERSION)
            .map_err(|e| refuse(Reason::Contract, one_line(&e)))?;
        let said = self.guarded(|s| version.call(s, ()))?;
        let expected = match kind {
            WasmKind::Filter => abi::KIND_FILTER,
            WasmKind::Labeller => abi::KIND_LABELLER,
        };
        if said != expected {
            return Err(refuse(
                Reason::Contract,
                format!(
                    "`{}` says kind {said}, but the module is configured as a {} ({expected})",
                    abi::EXPORT_VERSION,
                    kind.as_str()
                ),
            ));
        }
        Ok(())
    }

    fn init(&mut self, instance: &WasmInstance, config: &WasmModuleConfig) -> Result<(), Refusal> {
        let text = config.config.as_bytes();
        if text.len() > MAX_CONFIG {
            return Err(refuse(
                Reason::Init,
                format!("config is {} bytes, over {MAX_CONFIG}", text.len()),
            ));
        }
        let buffer = self.buffer;
        self.memory.data_mut(&mut self.store)[buffer..buffer + text.len()].copy_from_slice(text);
        let init = instance
            .get_typed_func::<(i32, i32), i32>(&mut self.store, abi::EXPORT_INIT)
            .map_err(|e| refuse(Reason::Contract, one_line(&e)))?;
        self.store.data_mut().initialising = true;
        let result = self.guarded(|s| init.call(s, (buffer as i32, text.len() as i32)));
        self.store.data_mut().initialising = false;
        match result? {
            0 => {}
            code => {
                let why = self
                    .store
                    .data_mut()
                    .last_error_log
                    .take()
                    .unwrap_or_else(|| "no message".to_string());
                return Err(refuse(
                    Reason::Init,
                    format!("init refused its configuration (code {code}): {why}"),
                ));
            }
        }
        if config.kind == WasmKind::Labeller && self.labels().is_empty() {
            return Err(refuse(Reason::Contract, "the labeller declared no labels"));
        }
        Ok(())
    }

    /// Labels the labeller declared.
    pub fn labels(&self) -> &[String] {
        &self.store.data().labels
    }

    /// A call under the deadline, with failures classified.
    fn guarded<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().call_started = thread_cpu_time();
        f(&mut self.store).map_err(|e| classify(&mut self.store, e, self.deadline_ms).into())
    }

    /// Encode flows from `flows` into the buffer; how many went in (at least
    /// one unless `flows` is empty).
    fn encode(&mut self, flows: &[Flow]) -> usize {
        let buffer = self.buffer;
        let out = &mut self.memory.data_mut(&mut self.store)[buffer..buffer + BUFFER_BYTES];
        encode::encode(flows, out)
    }

    /// Run the filter over `flows`, appending one decision per flow to `keep`.
    pub fn filter(&mut self, flows: &[Flow], keep: &mut Vec<bool>) -> Result<(), CallError> {
        let mut rest = flows;
        while !rest.is_empty() {
            let n = self.encode(rest);
            if n == 0 {
                // A flow too large for the buffer (cannot happen below
                // BUFFER_BYTES of strings): kept, not shown to the module.
                keep.push(true);
                rest = &rest[1..];
                continue;
            }
            let (call, ptr) = (self.call.clone(), self.buffer as i32);
            self.guarded(|s| check_status(call.call(s, ptr)))?;
            let buffer = self.buffer;
            let data = &self.memory.data(&self.store)[buffer..buffer + BUFFER_BYTES];
            let results = encode::results_offset(data);
            keep.extend(data[results..results + n].iter().map(|b| *b != 0));
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Run the labeller over `flows`; `out(flow, label, value)` for each value.
    pub fn label(
        &mut self,
        flows: &[Flow],
        mut out: impl FnMut(usize, usize, &str),
    ) -> Result<(), CallError> {
        let mut rest = flows;
        let mut base = 0;
        let labels = self.labels().len();
        while !rest.is_empty() {
            let n = self.encode(rest).max(1);
            {
                let values = &mut self.store.data_mut().values;
                values.resize(n * labels, String::new());
                values.iter_mut().for_each(String::clear);
            }
            let (call, ptr) = (self.call.clone(), self.buffer as i32);
            self.guarded(|s| check_status(call.call(s, ptr)))?;
            let values = &self.store.data().values;
            for (i, v) in values[..n * labels].iter().enumerate() {
                out(base + i / labels, i % labels, v);
            }
            base += n;
            rest = &rest[n..];
        }
        Ok(())
    }

    pub fn deadline_ms(&self) -> u32 {
        self.deadline_ms
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

/// A nonzero return of a batch call is an error of the module.
fn check_status(r: wasmtime::Result<i32>) -> wasmtime::Result<()> {
    match r? {
        0 => Ok(()),
        code => Err(wasmtime::format_err!(
            "the module returned error code {code}"
        )),
    }
}

impl From<CallError> for Refusal {
    fn from(e: CallError) -> Self {
        (e.reason, e.message)
    }
}

impl From<Refusal> for CallError {
    fn from((reason, message): Refusal) -> Self {
        CallError { reason, message }
    }
}

/// Why a call failed: a contract violation found by a host function, the
/// memory cap, the deadline, or another trap.
fn classify(store: &mut Store<HostState>, e: wasmtime::Error, deadline_ms: u32) -> Refusal {
    let state = store.data_mut();
    if let Some(v) = state.violation.take() {
        return v;
    }
    if std::mem::take(&mut state.limiter.hit) {
        return refuse(Reason::Memory, one_line(&e));
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return refuse(
            Reason::Deadline,
            format!("ran past its deadline of {deadline_ms} ms of CPU time"),
        );
    }
    refuse(Reason::Trap, one_line(&e))
}
