//! The device's life: TUN, control socket, gotatun, then wait for the end.

use gotatun::device::uapi::UapiServer;
use gotatun::device::{Device, DeviceBuilder};
use gotatun::tun::tun_async_device::TunDevice;
use gotatun::udp::socket::UdpSocketFactory;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::TunnelError;
use crate::socket::{check_name, socket_path};

type Transports = (UdpSocketFactory, TunDevice, TunDevice);

/// How often the device checks that its interface still exists.
const LINK_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How to run the device.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// The TUN interface's name; also names the control socket.
    pub interface: String,
    /// `SO_RCVBUF`/`SO_SNDBUF` of the UDP socket. Large buffers keep bursts of a fast
    /// TCP stream from being dropped before the device reads them.
    pub udp_buffer_bytes: usize,
    /// Runtime worker threads (0: one per CPU).
    pub worker_threads: usize,
}

impl TunnelOptions {
    /// Defaults for `interface`: 7 MiB socket buffers, one worker per CPU.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            udp_buffer_bytes: 7 << 20,
            worker_threads: 0,
        }
    }
}

/// Run the device in the foreground until its TUN device is deleted or the process gets
/// SIGTERM or SIGINT. The control socket is removed before returning.
pub fn run(options: &TunnelOptions) -> Result<(), TunnelError> {
    check_name(&options.interface)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if options.worker_threads > 0 {
        builder.worker_threads(options.worker_threads);
    }
    let runtime = builder
        .thread_name("porin-wg")
        .enable_all()
        .build()
        .map_err(TunnelError::Runtime)?;
    let mut socket_inode = None;
    let outcome = runtime.block_on(serve(options, &mut socket_inode));
    // Only the socket this process made: a successor may have its own there already.
    let path = socket_path(&options.interface);
    if socket_inode.is_some() && inode(&path) == socket_inode {
        let _ = std::fs::remove_file(&path);
    }
    outcome
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

async fn serve(options: &TunnelOptions, socket_inode: &mut Option<u64>) -> Result<(), TunnelError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|source| TunnelError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| TunnelError::Signal {
        signal: "SIGINT",
        source,
    })?;
    let started = start(options).await;
    *socket_inode = inode(&socket_path(&options.interface));
    let mut device = started?;
    info!(interface = %options.interface, socket = %socket_path(&options.interface).display(), "WireGuard device up (gotatun)");
    tokio::select! {
        () = device.wait() => warn!(interface = %options.interface, "the TUN device failed; stopping"),
        () = link_deleted(&options.interface) => info!(interface = %options.interface, "the interface was deleted; stopping"),
        _ = terminate.recv() => info!("SIGTERM; stopping"),
        _ = interrupt.recv() => info!("SIGINT; stopping"),
    }
    device.stop().await;
    Ok(())
}

async fn start(options: &TunnelOptions) -> Result<Device<Transports>, TunnelError> {
    let name = options.interface.as_str();
    let tun = TunDevice::from_name(name).map_err(|e| TunnelError::Tun {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let uapi = UapiServer::default_unix_socket(name, None, None).map_err(|e| {
        TunnelError::ControlSocket {
            path: socket_path(name).display().to_string(),
            message: format!("{e:#}"),
        }
    })?;
    // Only root may configure the device, as with wireguard-go.
    let path = socket_path(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        TunnelError::ControlSocket {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    })?;
    DeviceBuilder::new()
        .with_uapi(uapi)
        .with_default_udp()
        .udp_recv_buffer_size(options.udp_buffer_bytes)
        .udp_send_buffer_size(options.udp_buffer_bytes)
        .with_ip(tun)
        .build()
        .await
        .map_err(|e| TunnelError::Device {
            name: name.to_string(),
            message: e.to_string(),
        })
}

/// Resolves once `name` no longer exists in this network namespace. Deleting the link is
/// how wireguard-go is told to exit (`ip link del`); an open TUN descriptor is not woken
/// by the deletion, so the name is checked.
async fn link_deleted(name: &str) {
    loop {
        tokio::time::sleep(LINK_CHECK_EVERY).await;
        if nix::net::if_::if_nametoindex(name).is_err() {
            return;
        }
    }
}
