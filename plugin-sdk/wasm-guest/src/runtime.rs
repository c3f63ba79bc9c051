//! What the export macros call: the batch buffer, the module's state and the
//! loop over a batch's flows.

use std::cell::UnsafeCell;

use porin_wasm_abi::{header, read_u32};

use crate::{Filter, Flow, LabelSink, Labeller, Level, host};

/// The module's single instance of the user's type. WebAssembly modules run
/// single-threaded, and the host never re-enters an export.
pub struct State<T>(UnsafeCell<Option<T>>);

// SAFETY: a WebAssembly instance has one thread; the host calls one export at a time.
unsafe impl<T> Sync for State<T> {}

impl<T> State<T> {
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }
    #[allow(clippy::mut_from_ref, reason = "single-threaded guest, no re-entry")]
    fn get(&self) -> &mut Option<T> {
        // SAFETY: see the `Sync` impl.
        unsafe { &mut *self.0.get() }
    }
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The host's batch buffer, allocated once and never freed.
pub fn alloc(len: i32) -> i32 {
    let buf = vec![0u8; len.max(0) as usize].into_boxed_slice();
    Box::leak(buf).as_mut_ptr() as usize as i32
}

/// # Safety
/// `ptr..ptr+len` is memory of this module (the host wrote it).
unsafe fn bytes<'a>(ptr: i32, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(ptr as usize as *mut u8, len) }
}

fn config<'a>(ptr: i32, len: i32) -> &'a str {
    // SAFETY: the host wrote the configuration there.
    let raw = unsafe { bytes(ptr, len.max(0) as usize) };
    std::str::from_utf8(raw).unwrap_or("")
}

fn refuse(message: &str) -> i32 {
    host::log(Level::Error, message);
    1
}

pub fn init_filter<T: Filter>(state: &State<T>, ptr: i32, len: i32) -> i32 {
    match T::new(config(ptr, len)) {
        Ok(f) => {
            *state.get() = Some(f);
            0
        }
        Err(e) => refuse(&e),
    }
}

pub fn init_labeller<T: Labeller>(state: &State<T>, ptr: i32, len: i32) -> i32 {
    match T::new(config(ptr, len)) {
        Ok(l) => {
            for name in l.labels() {
                if !host::declare_label(&name) {
                    return refuse(&format!("label `{name}` was refused by the host"));
                }
            }
            *state.get() = Some(l);
            0
        }
        Err(e) => refuse(&e),
    }
}

/// The batch at `ptr`: its bytes, flow count, record size and results offset.
fn batch<'a>(ptr: i32) -> (&'a mut [u8], usize, usize, usize) {
    // SAFETY: the host wrote a header there.
    let head = unsafe { bytes(ptr, header::SIZE) };
    let count = read_u32(head, header::COUNT) as usize;
    let size = read_u32(head, header::RECORD_SIZE) as usize;
    let results = read_u32(head, header::RESULTS) as usize;
    let length = read_u32(head, header::LENGTH) as usize;
    // SAFETY: the host wrote `length` bytes.
    let all = unsafe { bytes(ptr, length.max(results + count)) };
    (all, count, size, results)
}

pub fn run_filter<T: Filter>(state: &State<T>, ptr: i32) -> i32 {
    let Some(filter) = state.get().as_mut() else {
        return 1;
    };
    let (all, count, size, results) = batch(ptr);
    let first = read_u32(all, header::RECORDS) as usize;
    for i in 0..count {
        let keep = filter.keep(&Flow::at(all, first + i * size));
        all[results + i] = u8::from(keep);
    }
    0
}

pub fn run_labeller<T: Labeller>(state: &State<T>, ptr: i32) -> i32 {
    let Some(labeller) = state.get().as_mut() else {
        return 1;
    };
    let (all, count, size, _) = batch(ptr);
    let first = read_u32(all, header::RECORDS) as usize;
    for i in 0..count {
        labeller.label(
            &Flow::at(all, first + i * size),
            &mut LabelSink::new(i as i32),
        );
    }
    0
}
