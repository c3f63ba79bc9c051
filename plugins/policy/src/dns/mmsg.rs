//! Many UDP datagrams per system call (`recvmmsg`, `sendmmsg`) on the DNS proxy's IPv4
//! sockets.
//!
//! A profile of the proxy under load (docs/benchmarks.md, `dns`) showed most of its
//! thread's time in the kernel, a large part of it in one `recvfrom` or `sendto` per
//! datagram, four per query (from the client, to the server, from the server, to the
//! client). The receiving loops now take every datagram waiting on a socket with one
//! `recvmmsg` and send what a batch produced per destination socket with one `sendmmsg`.
//! Both work on tokio's sockets through `try_io`, so readiness stays tokio's.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams one system call moves.
pub const MAX_BATCH: usize = 64;

/// Datagrams received by one `recvmmsg`, in buffers reused from call to call.
pub struct Received {
    /// `slots` buffers of `size` bytes, one after the other.
    buffers: Vec<u8>,
    size: usize,
    lens: Vec<usize>,
    /// The sender of each datagram (`None`: not an IPv4 address).
    senders: Vec<Option<SocketAddrV4>>,
    count: usize,
}

impl Received {
    /// Room for `slots` datagrams (at most [`MAX_BATCH`]) of up to `size` bytes each. A
    /// longer datagram is cut to `size` bytes, so callers that must notice one pass a size
    /// one byte larger than they accept.
    pub fn new(slots: usize, size: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        Self {
            buffers: vec![0; slots * size],
            size,
            lens: vec![0; slots],
            senders: vec![None; slots],
            count: 0,
        }
    }

    /// Datagrams of the last call.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Datagram `i` of the last call (its bytes may be changed in place) and its sender.
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], Option<SocketAddrV4>)> {
        if i >= self.count {
            return None;
        }
        let start = i * self.size;
        let bytes = &mut self.buffers[start..start + self.lens[i]];
        Some((bytes, self.senders[i]))
    }

    /// Takes every datagram waiting on `socket` (up to the slots), without waiting:
    /// `WouldBlock` when there is none (tokio then waits for readiness again).
    pub fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        socket.try_io(Interest::READABLE, || self.recv_now(fd))
    }

    fn recv_now(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let slots = self.lens.len();
        // SAFETY: all-zero is a valid value of these plain C structs (null pointers,
        // zero lengths).
        let mut names: [libc::sockaddr_in; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (iov, chunk) in iovs.iter_mut().zip(self.buffers.chunks_mut(self.size)) {
            iov.iov_base = chunk.as_mut_ptr().cast();
            iov.iov_len = chunk.len();
        }
        link(&mut hdrs, &mut names, &mut iovs);
        // SAFETY: the first `slots` headers point at live, distinct buffers of the sizes
        // they state (`iovs` into `self.buffers`, `names`), all outliving the call.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        for i in 0..got.min(slots) {
            self.lens[i] = (hdrs[i].msg_len as usize).min(self.size);
            self.senders[i] = address_of(&names[i]);
        }
        self.count = got.min(slots);
        Ok(self.count)
    }
}

/// Points each header at its address and its one buffer.
fn link(hdrs: &mut [libc::mmsghdr], names: &mut [libc::sockaddr_in], iovs: &mut [libc::iovec]) {
    for ((hdr, name), iov) in hdrs.iter_mut().zip(names.iter_mut()).zip(iovs.iter_mut()) {
        hdr.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
        hdr.msg_hdr.msg_namelen = SOCKADDR_IN_LEN;
        hdr.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        hdr.msg_hdr.msg_iovlen = 1;
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as _;

fn address_of(name: &libc::sockaddr_in) -> Option<SocketAddrV4> {
    (name.sin_family == libc::AF_INET as libc::sa_family_t).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
            u16::from_be(name.sin_port),
        )
    })
}

fn sockaddr_of(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in (the padding must be zero).
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = addr.port().to_be();
    name.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    name
}

/// A datagram that could not be sent.
#[derive(Debug)]
pub struct NotSent {
    /// What the caller tagged it with.
    pub tag: u16,
    pub to: SocketAddrV4,
    pub error: io::Error,
}

/// Datagrams to send with as few `sendmmsg` calls as possible.
#[derive(Default)]
pub struct Outgoing {
    bytes: Vec<u8>,
    /// Start and length in `bytes`, destination, the caller's tag.
    parts: Vec<(usize, usize, SocketAddrV4, u16)>,
}

impl Outgoing {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Queues a copy of `payload` for `to`; `tag` comes back if it cannot be sent.
    pub fn push(&mut self, to: SocketAddrV4, payload: &[u8], tag: u16) {
        self.parts.push((self.bytes.len(), payload.len(), to, tag));
        self.bytes.extend_from_slice(payload);
    }

    /// Sends every queued datagram on `socket` in order and empties the queue. Datagrams
    /// the kernel refuses are skipped and reported in `failed`; when the socket's buffer
    /// is full the call waits until it drains.
    pub async fn send_all(&mut self, socket: &UdpSocket, failed: &mut Vec<NotSent>) {
        let fd = socket.as_raw_fd();
        let mut next = 0;
        while next < self.parts.len() {
            if let Err(error) = socket.writable().await {
                self.fail_from(next, &error, failed);
                break;
            }
            match socket.try_io(Interest::WRITABLE, || self.send_now(fd, next)) {
                Ok(sent) => next += sent.max(1),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(error) => {
                    let (_, _, to, tag) = self.parts[next];
                    failed.push(NotSent { tag, to, error });
                    next += 1;
                }
            }
        }
        self.parts.clear();
        self.bytes.clear();
    }

    fn fail_from(&self, first: usize, error: &io::Error, failed: &mut Vec<NotSent>) {
        for &(_, _, to, tag) in &self.parts[first..] {
            failed.push(NotSent {
                tag,
                to,
                error: io::Error::new(error.kind(), error.to_string()),
            });
        }
    }

    /// One `sendmmsg` of up to [`MAX_BATCH`] datagrams from `first`: how many left.
    fn send_now(&self, fd: RawFd, first: usize) -> io::Result<usize> {
        let parts = &self.parts[first..self.parts.len().min(first + MAX_BATCH)];
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut names: [libc::sockaddr_in; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, &(start, len, to, _)) in parts.iter().enumerate() {
            names[i] = sockaddr_of(to);
            // sendmmsg only reads the payload: the pointer is `*mut` by C's signature.
            iovs[i].iov_base = self.bytes[start..start + len].as_ptr().cast_mut().cast();
            iovs[i].iov_len = len;
        }
        link(&mut hdrs, &mut names, &mut iovs);
        // SAFETY: the first `parts.len()` headers point at live addresses and at payloads
        // inside `self.bytes`, which outlive the call and are only read.
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr(),
                parts.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    async fn bound() -> (UdpSocket, SocketAddrV4) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let SocketAddr::V4(addr) = socket.local_addr().expect("addr") else {
            panic!("IPv4")
        };
        (socket, addr)
    }

    #[tokio::test]
    async fn batches_go_out_and_come_back_in_order_with_their_senders() {
        let (a, a_addr) = bound().await;
        let (b, b_addr) = bound().await;
        let mut out = Outgoing::default();
        for i in 0..100u16 {
            out.push(b_addr, &i.to_be_bytes(), i);
        }
        let mut failed = Vec::new();
        out.send_all(&a, &mut failed).await;
        assert!(failed.is_empty(), "{failed:?}");
        assert!(out.is_empty());

        let mut received = Received::new(MAX_BATCH, 3);
        let mut seen = Vec::new();
        while seen.len() < 100 {
            b.readable().await.expect("readable");
            match received.try_recv(&b) {
                Ok(n) => assert!(n <= MAX_BATCH),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => panic!("recvmmsg: {e}"),
            }
            for i in 0..received.count() {
                let (bytes, from) = received.get_mut(i).expect("datagram");
                assert_eq!(from, Some(a_addr));
                seen.push(u16::from_be_bytes([bytes[0], bytes[1]]));
            }
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(received.get_mut(received.count()).is_none());
    }

    #[tokio::test]
    async fn long_datagrams_are_cut_to_the_buffer_and_refusals_are_reported() {
        let (a, _) = bound().await;
        let (b, b_addr) = bound().await;
        let mut out = Outgoing::default();
        out.push(b_addr, &[7; 10], 1);
        // Port 0 is not a destination: the kernel refuses it, the rest still goes.
        out.push(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &[1], 2);
        out.push(b_addr, &[8; 2], 3);
        let mut failed = Vec::new();
        out.send_all(&a, &mut failed).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].tag, 2);

        let mut received = Received::new(4, 5);
        let mut lens = Vec::new();
        while lens.len() < 2 {
            b.readable().await.expect("readable");
            if received.try_recv(&b).is_err() {
                continue;
            }
            for i in 0..received.count() {
                lens.push(received.get_mut(i).expect("datagram").0.len());
            }
        }
        assert_eq!(
            lens,
            vec![5, 2],
            "the 10-byte datagram is cut to the 5-byte buffer"
        );
    }
}
