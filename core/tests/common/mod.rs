//! Helpers shared by the BPF_PROG_TEST_RUN test files.

#![allow(dead_code, reason = "each test file uses a different subset")]

pub mod host_fixture;
pub mod lb_hash;
pub mod packet;
pub mod packet6;
pub mod pinned;
pub mod pod_fixture;
