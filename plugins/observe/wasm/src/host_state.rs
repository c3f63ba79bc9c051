//! What a module's `Store` holds: its limits, the labels it declared, the
//! values of the batch being labelled, and what went wrong inside a host call.

use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::error::Reason;

/// Caps linear memory and tables; remembers that the cap was hit, so the
/// resulting failure is reported as `memory` rather than as a plain trap.
#[derive(Debug)]
pub struct Limiter {
    pub memory_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory would grow to {desired} bytes, over the cap of {} bytes",
                self.memory_bytes
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Store data of one module instance.
#[derive(Debug)]
pub struct HostState {
    pub module: String,
    pub limiter: Limiter,
    /// Whether `init` is running (only then may labels be declared).
    pub initialising: bool,
    /// Declared label names, in order.
    pub labels: Vec<String>,
    /// Values of the batch being labelled: `flows * labels.len()`, row-major.
    pub values: Vec<String>,
    /// A contract violation found in a host call; the call fails with it.
    pub violation: Option<(Reason, String)>,
    /// The module's last error-level log line (explains a refused `init`).
    pub last_error_log: Option<String>,
    /// CPU time a call may use, and the thread's CPU time when it started.
    pub deadline: Duration,
    pub call_started: Duration,
}

impl HostState {
    pub fn new(module: &str, memory_bytes: usize) -> Self {
        Self {
            module: module.to_string(),
            limiter: Limiter {
                memory_bytes,
                hit: false,
            },
            initialising: false,
            labels: Vec::new(),
            values: Vec::new(),
            violation: None,
            last_error_log: None,
            deadline: Duration::ZERO,
            call_started: Duration::ZERO,
        }
    }

    /// At each epoch tick past the deadline: stop the call when it has used
    /// its CPU time, otherwise check again when the rest could be used up.
    pub fn on_epoch(&self) -> wasmtime::UpdateDeadline {
        let used = crate::cpu::thread_cpu_time().saturating_sub(self.call_started);
        if used >= self.deadline {
            return wasmtime::UpdateDeadline::Interrupt;
        }
        let left = (self.deadline - used).as_millis() as u64;
        wasmtime::UpdateDeadline::Continue(left.max(1))
    }

    /// Fail the current call with a contract violation.
    pub fn violate(&mut self, reason: Reason, message: String) -> wasmtime::Error {
        let err = wasmtime::Error::msg(message.clone());
        self.violation = Some((reason, message));
        err
    }
}
