//! A minimal ICMP echo ("ping") from inside a namespace, so tests need no
//! `ping` binary. Uses a raw socket (root) created by a helper thread that
//! entered the namespace.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::netns::{NetNs, NetNsError};

/// Errors from [`ping`].
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("ping {dst} from {netns}: {op}: {source}")]
    Io {
        netns: String,
        dst: Ipv4Addr,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("ping {dst} from {netns}: no reply within {timeout:?}")]
    Timeout {
        netns: String,
        dst: Ipv4Addr,
        timeout: Duration,
    },
    #[error("helper thread for ping panicked")]
    ThreadPanicked,
}

/// Sends one ICMP echo request to `dst` from `netns` and waits up to
/// `timeout` for the matching reply. Returns the round-trip time.
pub fn ping(netns: &NetNs, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, PingError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _guard = netns.enter_on_this_thread()?;
                ping_here(netns.name(), dst, timeout)
            })
            .join()
            .map_err(|_| PingError::ThreadPanicked)?
    })
}

fn ping_here(netns: &str, dst: Ipv4Addr, timeout: Duration) -> Result<Duration, PingError> {
    let io_err = |op| {
        move |source| PingError::Io {
            netns: netns.to_owned(),
            dst,
            op,
            source,
        }
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(io_err("socket")(io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    let ident = (std::process::id() & 0xffff) as u16;
    let seq: u16 = rand_seq();
    let mut packet = [0u8; 16];
    packet[0] = 8; // echo request
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..16].copy_from_slice(b"porin-tb");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());

    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    // SAFETY: packet and addr are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io_err("sendto")(io::Error::last_os_error()));
    }
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(PingError::Timeout {
                netns: netns.to_owned(),
                dst,
                timeout,
            });
        }
        let tv = libc::timeval {
            tv_sec: left.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(left.subsec_micros().max(1)),
        };
        // SAFETY: tv is a valid timeval for the given length.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                continue;
            }
            return Err(io_err("recv")(e));
        }
        let n = n.unsigned_abs();
        if is_reply(&buf[..n.min(buf.len())], dst, ident, seq) {
            return Ok(start.elapsed());
        }
    }
}

/// Whether an IPv4 packet (raw socket delivery) is our echo reply.
fn is_reply(pkt: &[u8], dst: Ipv4Addr, ident: u16, seq: u16) -> bool {
    let Some(&first) = pkt.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if pkt.len() < ihl + 8 || ihl < 20 {
        return false;
    }
    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    let icmp = &pkt[ihl..];
    src == dst
        && icmp[0] == 0
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn rand_seq() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_request() {
        let mut p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn recognises_reply() {
        let mut pkt = vec![0x45u8; 20];
        pkt[12..16].copy_from_slice(&[10, 0, 0, 1]);
        pkt.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(&pkt, Ipv4Addr::new(10, 0, 0, 1), 0x1234, 7));
        assert!(!is_reply(&pkt, Ipv4Addr::new(10, 0, 0, 2), 0x1234, 7));
        assert!(!is_reply(&pkt, Ipv4Addr::new(10, 0, 0, 1), 0x1234, 8));
    }
}
