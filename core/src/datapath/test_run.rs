//! A safe wrapper over `BPF_PROG_TEST_RUN` for socket buffer programs.

use std::os::fd::{AsFd, AsRawFd};

use super::error::DatapathError;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Room for programs that grow the packet.
const OUT_HEADROOM: usize = 256;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// The outcome of one test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (e.g. `TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2).
    pub retval: u32,
    /// The packet after the program ran.
    pub packet: Vec<u8>,
}

/// Runs a loaded program once on `packet` (which must hold at least an Ethernet header for
/// `sched_cls` programs) and returns its verdict and the output packet.
pub fn test_run(prog: impl AsFd, packet: &[u8]) -> Result<TestRunOutput, DatapathError> {
    let mut out = vec![0u8; packet.len() + OUT_HEADROOM];
    let too_big = |_| DatapathError::TestRun {
        source: std::io::Error::from_raw_os_error(libc::E2BIG),
    };
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_fd().as_raw_fd()).map_err(|_| DatapathError::TestRun {
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        })?,
        data_size_in: u32::try_from(packet.len()).map_err(too_big)?,
        data_size_out: u32::try_from(out.len()).map_err(too_big)?,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size we pass; the
    // kernel reads data_in (packet.len() bytes, alive for the call) and writes at most
    // data_size_out bytes to data_out (out is that long and alive for the call).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if ret < 0 {
        return Err(DatapathError::TestRun {
            source: std::io::Error::last_os_error(),
        });
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        retval: attr.retval,
        packet: out,
    })
}
