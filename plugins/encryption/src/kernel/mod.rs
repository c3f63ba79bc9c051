//! Kernel WireGuard through generic netlink: the path used when the kernel has WireGuard
//! (`ip link add NAME type wireguard` succeeds); the userspace devices are the fallback.
//!
//! `messages` builds and parses the `wireguard` family's WG_CMD_SET_DEVICE and
//! WG_CMD_GET_DEVICE messages (pure, unit-tested byte for byte); `genl` sends them on a
//! NETLINK_GENERIC socket after resolving the family id through `nlctrl`.

mod control;
mod genl;
mod messages;

pub use control::KernelControl;
