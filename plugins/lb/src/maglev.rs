//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each backend gets a permutation of the table slots from two hashes of its
//! name (`offset`, `skip`); backends then take turns claiming their next free
//! preferred slot until the table is full. Every backend ends up with
//! ⌊M/N⌋ or ⌈M/N⌉ slots, and removing a backend mostly reassigns only its own.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("maglev table size {size} is not prime")]
    NotPrime { size: u32 },
    #[error("maglev table size {size} is too small for {backends} backends")]
    TooManyBackends { size: u32, backends: usize },
}

/// The lookup table: slot -> index into `backends`. Empty if there are no
/// backends. `size` must be prime and larger than the number of backends.
pub fn maglev_table<S: AsRef<str>>(backends: &[S], size: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime { size });
    }
    if backends.len() >= size as usize {
        return Err(MaglevError::TooManyBackends {
            size,
            backends: backends.len(),
        });
    }
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let name = b.as_ref().as_bytes();
            let offset = mix(fnv1a(name, 0)) % m;
            let skip = mix(fnv1a(name, 1)) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0usize;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize] != u32::MAX {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            // i < backends.len() < size <= u32::MAX
            table[slot as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == table.len() {
                break 'fill;
            }
        }
    }
    Ok(table)
}

/// The table the datapath reads (`porin_lb_maglev`): slot -> backend id. Backends are
/// hashed by their `ip:port` in address order, so every node computes the same table for
/// the same backends whatever order they were listed in, and ids (local to a node) do not
/// matter. `addrs[i]` has id `ids[i]`. Either family: IPv6 backends are hashed by their
/// `[ip]:port`.
pub fn backend_table<A: Copy + Ord + std::fmt::Display>(
    addrs: &[A],
    ids: &[u32],
    size: u32,
) -> Result<Vec<u32>, MaglevError> {
    let mut backends: Vec<(A, u32)> = addrs.iter().copied().zip(ids.iter().copied()).collect();
    backends.sort_unstable();
    backends.dedup_by_key(|(addr, _)| *addr);
    let names: Vec<String> = backends.iter().map(|(addr, _)| addr.to_string()).collect();
    let table = maglev_table(&names, size)?;
    Ok(table
        .into_iter()
        .map(|index| backends.get(index as usize).map_or(0, |(_, id)| *id))
        .collect())
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// FNV-1a with a seed byte, so one name yields two independent hashes.
fn fnv1a(bytes: &[u8], seed: u8) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&seed).chain(bytes) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    #[test]
    fn balanced_within_one_percent() {
        for n in [3, 10, 37, 100] {
            let table = maglev_table(&names(n), 16381).expect("table");
            let mut counts = vec![0usize; n];
            table.iter().for_each(|b| counts[*b as usize] += 1);
            let ideal = 16381.0 / n as f64;
            for c in counts {
                assert!(
                    (c as f64 - ideal).abs() / ideal <= 0.01,
                    "n={n} count={c} ideal={ideal}"
                );
            }
        }
    }

    #[test]
    fn removing_a_backend_moves_little_else() {
        let n = 10;
        let all = names(n);
        let before = maglev_table(&all, 16381).expect("table");
        let removed = 4usize;
        let rest: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, s)| s.clone())
            .collect();
        let after = maglev_table(&rest, 16381).expect("table");
        let name_before = |slot: usize| &all[before[slot] as usize];
        let name_after = |slot: usize| &rest[after[slot] as usize];
        let moved = (0..before.len())
            .filter(|&s| before[s] as usize != removed && name_before(s) != name_after(s))
            .count();
        let fraction = moved as f64 / before.len() as f64;
        assert!(
            fraction < 0.05,
            "{moved} slots of surviving backends moved ({fraction:.3})"
        );
    }

    #[test]
    fn backend_tables_use_ids_and_ignore_the_listing_order() {
        let addrs: Vec<SocketAddrV4> = (1..=4)
            .map(|i| SocketAddrV4::new([10, 0, i, 9].into(), 8080))
            .collect();
        let table = backend_table(&addrs, &[11, 12, 13, 14], 251).expect("table");
        assert_eq!(table.len(), 251);
        assert!(table.iter().all(|id| (11..=14).contains(id)));
        let mut reversed = addrs.clone();
        reversed.reverse();
        assert_eq!(
            backend_table(&reversed, &[14, 13, 12, 11], 251).expect("table"),
            table
        );
    }

    #[test]
    fn deterministic_and_validated() {
        let b = names(5);
        assert_eq!(maglev_table(&b, 251), maglev_table(&b, 251));
        assert_eq!(
            maglev_table(&b, 1000),
            Err(MaglevError::NotPrime { size: 1000 })
        );
        assert!(maglev_table(&names(300), 251).is_err());
        assert_eq!(maglev_table::<String>(&[], 251), Ok(Vec::new()));
    }
}
