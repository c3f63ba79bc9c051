//! A blocking NETLINK_GENERIC socket talking to the kernel's `wireguard` family.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::WireguardMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

use super::messages::{Reply, frame, parse_replies};
use crate::error::WgError;

fn fail(what: &str, message: impl std::fmt::Display) -> WgError {
    WgError::Netlink {
        what: what.to_string(),
        message: message.to_string(),
    }
}

fn open_socket() -> Result<Socket, WgError> {
    let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| fail("socket", e))?;
    socket.bind_auto().map_err(|e| fail("bind", e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| fail("connect", e))?;
    Ok(socket)
}

fn receive(socket: &Socket) -> Result<Vec<u8>, WgError> {
    let (buf, _) = socket.recv_from_full().map_err(|e| fail("recv", e))?;
    Ok(buf)
}

/// The id of generic netlink family `name` (`nlctrl` CTRL_CMD_GETFAMILY). A kernel without
/// the family answers ENOENT: for `wireguard`, no kernel WireGuard.
pub fn resolve_family(name: &str) -> Result<u16, WgError> {
    let socket = open_socket()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let request = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    });
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| fail("send", e))?;
    let reply = receive(&socket)?;
    let parsed = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&reply)
        .map_err(|e| fail("parse nlctrl reply", e))?;
    match parsed.payload {
        NetlinkPayload::InnerMessage(genl) => genl
            .payload
            .nlas
            .iter()
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| fail("resolve family", format!("no id for `{name}`"))),
        NetlinkPayload::Error(e) => Err(fail(
            "resolve family",
            format!(
                "`{name}`: {}",
                std::io::Error::from_raw_os_error(-e.code.map_or(0, |c| c.get()))
            ),
        )),
        other => Err(fail("resolve family", format!("unexpected {other:?}"))),
    }
}

/// A connection to the kernel's `wireguard` family.
pub struct Genl {
    socket: Socket,
    family: u16,
    sequence: u32,
}

impl Genl {
    /// Connects and resolves the family; fails where the kernel has no WireGuard.
    pub fn open() -> Result<Self, WgError> {
        Ok(Self {
            family: resolve_family("wireguard")?,
            socket: open_socket()?,
            sequence: 0,
        })
    }

    /// Sends `message` and collects the replies until the ACK or the end of the dump.
    pub fn request(&mut self, message: WireguardMessage) -> Result<Vec<WireguardMessage>, WgError> {
        self.sequence = self.sequence.wrapping_add(1);
        let cmd = format!("{:?}", message.cmd);
        let bytes = frame(message, self.family, self.sequence);
        self.socket.send(&bytes, 0).map_err(|e| fail("send", e))?;
        let mut out = Vec::new();
        loop {
            let buf = receive(&self.socket)?;
            for reply in parse_replies(&buf).map_err(|e| fail("parse reply", e))? {
                match reply {
                    Reply::Message(m) => out.push(m),
                    Reply::Done => return Ok(out),
                    Reply::Error(code) => {
                        return Err(fail(&cmd, std::io::Error::from_raw_os_error(-code)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_resolve_through_the_real_nlctrl() {
        // nlctrl itself always exists, with the fixed id GENL_ID_CTRL (16).
        assert_eq!(resolve_family("nlctrl").expect("nlctrl"), 16);
        let e = resolve_family("porin-no-such-family").expect_err("unknown family");
        assert!(e.to_string().contains("porin-no-such-family"), "{e}");
    }
}
