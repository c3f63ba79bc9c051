//! porin-wg: Porin's userspace WireGuard device.
//!
//! A [gotatun](https://crates.io/crates/gotatun) device (Mullvad's maintained fork of
//! boringtun) on a TUN device, with the cross-platform control socket
//! `/var/run/wireguard/<ifname>.sock` that `wg set` and `wg show` speak to, exactly as
//! `wireguard-go <ifname>` offers. The encryption plugin starts it as `porin wireguard
//! <ifname>` and configures it with `wg`, so both implementations are driven by the same
//! code. It runs until the TUN device is deleted or it gets SIGTERM/SIGINT, and removes its
//! control socket on the way out.

mod error;
mod socket;
mod tunnel;

pub use error::TunnelError;
pub use socket::{SOCKET_DIR, socket_path};
pub use tunnel::{TunnelOptions, run};
