//! The proxy's connections to pods on behalf of clients it judged by the pod's
//! ingress rules: they carry a socket mark (`SO_MARK`) that the pod program
//! recognises, so they are neither judged again nor redirected back to the
//! proxy (`bpf/lib/proxy.h`, ingress redirection).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// `PORIN_MARK_FROM_INGRESS_PROXY` of `bpf/lib/proxy.h` (Cilium's ingress proxy mark).
pub const MARK_FROM_INGRESS_PROXY: u32 = 0x0a00;

/// Connects to an `http://IP:PORT` URI with a socket mark.
#[derive(Debug, Clone, Copy)]
pub struct MarkedConnector {
    pub mark: u32,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower::Service<Uri> for MarkedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mark = self.mark;
        Box::pin(async move {
            let addr = socket_addr_of(&uri)?;
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket2::SockRef::from(&socket).set_mark(mark)?;
            socket.set_nodelay(true)?;
            Ok(TokioIo::new(socket.connect(addr).await?))
        })
    }
}

/// The proxy addresses pods by IP: `http://10.0.1.5:8080/...`.
fn socket_addr_of(uri: &Uri) -> io::Result<SocketAddr> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{uri}: expected http://IP:PORT"),
        )
    };
    let host = uri.host().ok_or_else(invalid)?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| invalid())?;
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_uris() {
        let uri: Uri = "http://10.0.1.5:8080/metrics".parse().expect("uri");
        assert_eq!(
            socket_addr_of(&uri).expect("addr"),
            SocketAddr::from(([10, 0, 1, 5], 8080))
        );
        let uri: Uri = "http://pod.example/".parse().expect("uri");
        assert!(socket_addr_of(&uri).is_err());
    }
}
