//! The call shapes of wasmtime 48 that the contract was chosen from (issue
//! #6): a plain core call, a host-written 64-byte buffer plus a call, a
//! component call with a 64-byte `list<u8>`, a component call with a batch of
//! 256 flow-sized records in one `list<u8>`, and a new instance.

use porin_wasm::cpu::thread_cpu_time;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Engine, Linker, Module, Store};

const CORE: &str = r#"(module
  (memory (export "memory") 2)
  (func (export "id") (param i32) (result i32) local.get 0)
  (func (export "first") (param i32) (result i32) (i32.load8_u (local.get 0))))"#;

const COMPONENT: &str = r#"(component
  (core module $m
    (memory (export "memory") 2)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
    (func (export "first") (param i32 i32) (result i32) (i32.load8_u (local.get 0))))
  (core instance $i (instantiate $m))
  (func (export "first") (param "b" (list u8)) (result u32)
    (canon lift (core func $i "first") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))"#;

/// Nanoseconds of this thread's CPU time per iteration of `f` over `n`
/// iterations (CPU time: other work on a shared machine does not count).
fn per_iter(n: u64, mut f: impl FnMut() -> wasmtime::Result<()>) -> wasmtime::Result<f64> {
    for _ in 0..n / 10 {
        f()?;
    }
    let start = thread_cpu_time();
    for _ in 0..n {
        f()?;
    }
    Ok((thread_cpu_time() - start).as_nanos() as f64 / n as f64)
}

pub struct Shapes {
    pub plain_call_ns: f64,
    pub buffer64_call_ns: f64,
    pub component_list64_ns: f64,
    pub component_batch_ns_per_flow: f64,
    pub new_instance_us: f64,
}

pub fn measure(engine: &Engine, n: u64) -> wasmtime::Result<Shapes> {
    let module = Module::new(engine, CORE)?;
    let linker = Linker::<()>::new(engine);
    let pre = linker.instantiate_pre(&module)?;
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instantiate(&mut store)?;
    let id = instance.get_typed_func::<i32, i32>(&mut store, "id")?;
    let first = instance.get_typed_func::<i32, i32>(&mut store, "first")?;
    let memory = instance
        .get_memory(&mut store, "memory")
        .ok_or_else(|| wasmtime::format_err!("no memory"))?;
    let plain_call_ns = per_iter(n, || id.call(&mut store, 7).map(drop))?;
    let payload = [0x5au8; 64];
    let buffer64_call_ns = per_iter(n, || {
        memory.data_mut(&mut store)[1024..1088].copy_from_slice(&payload);
        first.call(&mut store, 1024)?;
        Ok(())
    })?;
    let new_instance_us = per_iter(n / 100, || {
        let mut s = Store::new(engine, ());
        s.set_epoch_deadline(u64::MAX / 2);
        pre.instantiate(&mut s)?;
        Ok(())
    })? / 1e3;

    let component = Component::new(engine, COMPONENT)?;
    let clinker = ComponentLinker::<()>::new(engine);
    let mut cstore = Store::new(engine, ());
    cstore.set_epoch_deadline(u64::MAX / 2);
    let cinstance = clinker.instantiate(&mut cstore, &component)?;
    let cfirst = cinstance.get_typed_func::<(&[u8],), (u32,)>(&mut cstore, "first")?;
    let component_list64_ns = per_iter(n, || {
        cfirst.call(&mut cstore, (&payload[..],))?;
        Ok(())
    })?;
    // 256 records of 200 bytes plus their strings (~180 bytes) in one list.
    let batch = vec![0x5au8; 256 * 380];
    let component_batch_ns_per_flow = per_iter(n / 256, || {
        cfirst.call(&mut cstore, (&batch[..],))?;
        Ok(())
    })? / 256.0;
    Ok(Shapes {
        plain_call_ns,
        buffer64_call_ns,
        component_list64_ns,
        component_batch_ns_per_flow,
        new_instance_us,
    })
}
