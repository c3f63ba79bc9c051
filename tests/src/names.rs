//! Per-process unique ids for names of namespaces, cgroups and links.
//!
//! Parallel tests (in one process or many) must never collide, so every
//! cluster gets an id made of the process id and a per-process counter,
//! both in base 36 to keep names short (interface names are limited to 15
//! bytes, IFNAMSIZ - 1).

use std::sync::atomic::{AtomicU32, Ordering};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short id unique among live processes and within this process, e.g. `1k2a0`.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{}", base36(std::process::id()), base36(n))
}

/// `value` in lowercase base 36.
pub fn base36(mut value: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces anything outside `[a-z0-9-]` with `-`, so a Kubernetes name is
/// safe in a namespace or cgroup name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert!(base36(u32::MAX).len() <= 7);
    }

    #[test]
    fn ids_differ_and_are_short() {
        let a = unique_id();
        let b = unique_id();
        assert_ne!(a, b);
        assert!(a.len() <= 9, "{a}");
    }

    #[test]
    fn sanitize_names() {
        assert_eq!(sanitize("My_Pod.1"), "my-pod-1");
    }
}
