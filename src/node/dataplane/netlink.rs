//! The one rtnetlink connection every part of the dataplane talks through.
//!
//! It is rtnetlink's own transport (`netlink-proto`, re-exported as `rtnetlink::proto`)
//! opened directly so that writes can be *batched*: [`Netlink::ack_many`] packs many
//! requests into one datagram (the kernel processes every message of a datagram within
//! the one `sendmsg`) and keeps several datagrams in flight before reading their
//! acknowledgements. That is what lets 100,000 routes go in faster than `ip -batch`,
//! which waits for each ACK before sending the next request.

use std::io;
use std::os::fd::AsRawFd;

use futures_util::stream::{FuturesOrdered, StreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::proto::{self, ConnectionHandle};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, AsyncSocket as _, SocketAddr};

/// Requests per datagram, at most: a /32 route request is ~60 bytes.
const BATCH: usize = 1024;
/// Bytes per datagram, at most: well below the socket's default send buffer (212,992
/// bytes), whose size bounds one `sendmsg`, also for large ECMP requests.
const BATCH_BYTES: usize = 64 << 10;
/// Datagrams in flight at once, at most; fewer when the receive buffer is small.
const WINDOW: usize = 8;
/// Receive buffer asked for (`SO_RCVBUFFORCE`, root only; plain `SO_RCVBUF` otherwise).
const RCVBUF: usize = 8 << 20;
/// Receive-buffer cost of one ACK (its skb's truesize), with margin. Every ACK of the
/// datagrams in flight must fit: one that does not is dropped by the kernel, and its
/// request would never complete.
const ACK_COST: usize = 1024;

/// What the kernel answered to one request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel rejected the request: errno and, when the kernel gave one, its
    /// extended-ACK message.
    #[error("{}{}", io::Error::from_raw_os_error(*errno), message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        /// The positive errno value.
        errno: i32,
        /// `NLMSGERR_ATTR_MSG` of the extended ACK, if any.
        message: Option<String>,
    },
    /// The connection to the kernel is gone or the answer could not be decoded.
    #[error("netlink transport: {0}")]
    Transport(String),
}

impl NetlinkError {
    /// The errno of a kernel rejection.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Transport(_) => None,
        }
    }
}

/// A cloneable handle on the connection; the connection task lives on the tokio runtime
/// that was current when [`Netlink::connect`] ran, and ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: ConnectionHandle<RouteNetlinkMessage>,
    /// Requests per datagram and datagrams in flight whose ACKs fit in the receive
    /// buffer together.
    batch: usize,
    window: usize,
}

impl Netlink {
    /// Opens a rtnetlink socket in the network namespace of the calling thread.
    /// Must be called from inside a tokio runtime.
    pub fn connect() -> io::Result<Self> {
        let (mut conn, handle, _unsolicited) =
            proto::new_connection::<RouteNetlinkMessage>(NETLINK_ROUTE)?;
        let socket = conn.socket_mut().socket_mut();
        // Strict checking makes the kernel filter dumps by the header's table and
        // reject attributes it does not know instead of ignoring them.
        socket.set_netlink_get_strict_chk(true)?;
        // Errors carry only the failed request's header, plus the kernel's text.
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        set_rcvbuf(socket.as_raw_fd(), RCVBUF)?;
        let acks = socket.get_rx_buf_sz()? / ACK_COST;
        let batch = acks.clamp(1, BATCH);
        let window = (acks / batch).clamp(1, WINDOW);
        // netlink-proto drops plain ACKs by default and ends the answer stream instead;
        // forwarding them lets a dead connection be told from success.
        conn.set_forward_ack(true);
        // Likewise the NLMSG_DONE closing a dump, which carries the dump's error code.
        conn.set_forward_done(true);
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            batch,
            window,
        })
    }

    /// Sends one request with `NLM_F_ACK` and waits for its acknowledgement.
    pub async fn ack(&self, message: RouteNetlinkMessage, flags: u16) -> Result<(), NetlinkError> {
        let mut responses = self.request(vec![request(message, flags | NLM_F_ACK)])?;
        let mut outcome = Err(NetlinkError::Transport("no acknowledgement".into()));
        while let Some(msg) = responses.next().await {
            outcome = ack_outcome(msg.payload);
        }
        outcome
    }

    /// Sends a request that has one answer (e.g. `RTM_GETLINK` by name).
    pub async fn get(
        &self,
        message: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        let mut responses = self.request(vec![request(message, 0)])?;
        while let Some(msg) = responses.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => return Ok(Some(inner)),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(kernel_error(&e)),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Sends a dump request and collects every answer.
    pub async fn dump(
        &self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut responses = self.request(vec![request(message, NLM_F_DUMP)])?;
        let mut out = Vec::new();
        while let Some(msg) = responses.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(kernel_error(&e));
                }
                NetlinkPayload::Done(done) if done.code != 0 => {
                    return Err(NetlinkError::Kernel {
                        errno: done.code.abs(),
                        message: ext_ack_text(&done.extended_ack),
                    });
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(NetlinkError::Transport(
                        "receive buffer overrun during dump".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Sends every request with `NLM_F_ACK`, up to [`BATCH`] requests or
    /// [`BATCH_BYTES`] to a datagram and up to [`WINDOW`] datagrams in flight, and
    /// returns one outcome per request, in order.
    pub async fn ack_many(
        &self,
        messages: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        let total = messages.len();
        let mut batches = Vec::with_capacity(total.div_ceil(self.batch));
        let mut batch = Vec::with_capacity(self.batch.min(total));
        let mut bytes = 0;
        for (message, flags) in messages {
            let req = request(message, flags | NLM_F_ACK);
            let len = req.buffer_len();
            if !batch.is_empty() && (batch.len() == self.batch || bytes + len > BATCH_BYTES) {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += len;
            batch.push(req);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        let mut pending = batches.into_iter();
        let mut in_flight = FuturesOrdered::new();
        let mut outcomes = Vec::with_capacity(total);
        loop {
            while in_flight.len() < self.window {
                let Some(batch) = pending.next() else { break };
                let len = batch.len();
                let responses = self.request(batch)?;
                in_flight.push_back(collect_acks(responses, len));
            }
            match in_flight.next().await {
                Some(batch) => outcomes.extend(batch),
                None => break,
            }
        }
        Ok(outcomes)
    }

    fn request(
        &self,
        batch: Vec<NetlinkMessage<RouteNetlinkMessage>>,
    ) -> Result<
        impl futures_util::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + use<>,
        NetlinkError,
    > {
        self.handle
            .request_batch(batch, SocketAddr::new(0, 0))
            .map_err(|e| NetlinkError::Transport(e.to_string()))
    }
}

/// Reads the `len` acknowledgements of one datagram. The kernel answers the messages of
/// a datagram in order, one answer each, so the answer's sequence number minus the
/// first one's is the request's index.
async fn collect_acks(
    mut responses: impl futures_util::Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Unpin,
    len: usize,
) -> Vec<Result<(), NetlinkError>> {
    let mut outcomes: Vec<Result<(), NetlinkError>> =
        vec![Err(NetlinkError::Transport("no acknowledgement".into())); len];
    let mut first = None;
    while let Some(msg) = responses.next().await {
        let seq = msg.header.sequence_number;
        let base = *first.get_or_insert(seq);
        let index = seq.wrapping_sub(base) as usize;
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = ack_outcome(msg.payload);
        }
    }
    outcomes
}

fn request(message: RouteNetlinkMessage, flags: u16) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut req = NetlinkMessage::from(message);
    req.header.flags = NLM_F_REQUEST | flags;
    req
}

fn ack_outcome(payload: NetlinkPayload<RouteNetlinkMessage>) -> Result<(), NetlinkError> {
    match payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(kernel_error(&e)),
        NetlinkPayload::Error(_) => Ok(()),
        NetlinkPayload::Overrun(_) => Err(NetlinkError::Transport("receive buffer overrun".into())),
        other => Err(NetlinkError::Transport(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// With `NETLINK_CAP_ACK` the error's payload is the request's 16-byte header followed,
/// with `NETLINK_EXT_ACK`, by `NLMSGERR_ATTR_*` attributes; attribute 1 is the message.
fn kernel_error(e: &netlink_packet_core::ErrorMessage) -> NetlinkError {
    NetlinkError::Kernel {
        errno: e.raw_code().abs(),
        message: e.header.get(NLMSGHDR_LEN..).and_then(ext_ack_text),
    }
}

const NLMSGHDR_LEN: usize = 16;

/// The `NLMSGERR_ATTR_MSG` text among extended-ACK attributes (after an error's
/// request header, or the whole tail of an `NLMSG_DONE`).
fn ext_ack_text(attributes: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut rest = attributes;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &rest[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or(text);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

fn set_rcvbuf(fd: i32, size: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: fd is the open netlink socket, value outlives the call and its size
        // is passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn ext_ack_message_is_found_after_other_attributes() {
        let mut payload = vec![0u8; 16];
        payload.extend(attr(2, &7u32.to_ne_bytes()));
        payload.extend(attr(1, b"Nexthop has invalid gateway\0"));
        assert_eq!(
            ext_ack_text(&payload[16..]).as_deref(),
            Some("Nexthop has invalid gateway")
        );
    }

    #[test]
    fn ext_ack_message_absent_or_truncated() {
        assert_eq!(ext_ack_text(&[]), None);
        assert_eq!(ext_ack_text(&[0u8; 3]), None);
        assert_eq!(ext_ack_text(&[40, 0, 1, 0, b'x']), None);
    }

    #[test]
    fn kernel_error_says_errno_and_text() {
        let e = NetlinkError::Kernel {
            errno: libc::EEXIST,
            message: Some("already there".into()),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "{} (already there)",
                io::Error::from_raw_os_error(libc::EEXIST)
            )
        );
        assert_eq!(e.errno(), Some(libc::EEXIST));
    }
}
