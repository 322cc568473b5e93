//! The message header (RFC 4271 §4.1) and framing: where a message ends in a receive
//! buffer, and the header checks of RFC 4271 §6.1 with the lengths of RFC 8654.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                                                               |
//! +                                                               +
//! |                           Marker                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::wire::consts::{
    min_len, msg_type, HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN,
};
use crate::wire::error::HeaderError;
use crate::wire::CodecParams;
use bytes::{BufMut, BytesMut};

pub const MARKER: [u8; 16] = [0xff; 16];

/// What a receive buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole message yet: read until the buffer holds `needed` octets.
    Incomplete { needed: usize },
    /// A whole message of `len` octets (header included) starts the buffer.
    Complete { len: usize, msg_type: u8 },
}

/// The largest message of a type on this session (RFC 4271 §4.1, RFC 8654 §4).
pub fn max_len(t: u8, params: &CodecParams) -> usize {
    match t {
        msg_type::UPDATE | msg_type::NOTIFICATION | msg_type::ROUTE_REFRESH
            if params.extended_message =>
        {
            MAX_EXTENDED_MESSAGE_LEN
        }
        _ => MAX_MESSAGE_LEN,
    }
}

/// The smallest message of a known type, or `None` for an unknown type.
fn min_len(t: u8) -> Option<usize> {
    Some(match t {
        msg_type::OPEN => min_len::OPEN,
        msg_type::UPDATE => min_len::UPDATE,
        msg_type::NOTIFICATION => min_len::NOTIFICATION,
        msg_type::KEEPALIVE => min_len::KEEPALIVE,
        msg_type::ROUTE_REFRESH => min_len::ROUTE_REFRESH,
        _ => return None,
    })
}

/// Check the header at the start of `buf` and say whether the whole message is there.
/// Reads nothing past the header, so a session can call it on its socket buffer as
/// octets arrive and hand the complete frame to `decode_message` without copying.
pub fn frame(buf: &[u8], params: &CodecParams) -> Result<Frame, HeaderError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(Frame::Incomplete { needed: HEADER_LEN });
    };
    if header[..16] != MARKER {
        return Err(HeaderError::NotSynchronized);
    }
    let len16 = u16::from_be_bytes([header[16], header[17]]);
    let len = usize::from(len16);
    let t = header[18];
    // RFC 4271 §6.1: a length outside 19..=max, or below the type's minimum (KEEPALIVE
    // exactly 19), is a Bad Message Length; checked before the type, as that needs the
    // length to be sane to find the next message anyway.
    let bad_len = HeaderError::BadLength {
        len: len16,
        msg_type: t,
    };
    let session_max = if params.extended_message {
        MAX_EXTENDED_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    };
    if !(HEADER_LEN..=session_max).contains(&len) {
        return Err(bad_len);
    }
    let Some(min) = min_len(t) else {
        return Err(HeaderError::BadType(t));
    };
    if len < min
        || len > max_len(t, params)
        || (t == msg_type::KEEPALIVE && len != min_len::KEEPALIVE)
    {
        return Err(bad_len);
    }
    if buf.len() < len {
        return Ok(Frame::Incomplete { needed: len });
    }
    Ok(Frame::Complete { len, msg_type: t })
}

/// Write a header with a zero length, to be set by [`finish`] once the body is written.
pub(crate) fn start(out: &mut BytesMut, t: u8) -> usize {
    let at = out.len();
    out.put_slice(&MARKER);
    out.put_u16(0);
    out.put_u8(t);
    at
}

/// Set the length of the message started at `at`.
pub(crate) fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as u16;
    out[at + 16..at + 18].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u16, t: u8) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.extend_from_slice(&len.to_be_bytes());
        v.push(t);
        v
    }

    #[test]
    fn framing() {
        let p = CodecParams::default();
        assert_eq!(frame(&[0xff; 10], &p), Ok(Frame::Incomplete { needed: 19 }));
        assert_eq!(
            frame(&hdr(19, 4), &p),
            Ok(Frame::Complete {
                len: 19,
                msg_type: 4
            })
        );
        assert_eq!(frame(&hdr(23, 2), &p), Ok(Frame::Incomplete { needed: 23 }));
        let mut two = hdr(19, 4);
        two.extend(hdr(19, 4));
        assert_eq!(
            frame(&two, &p),
            Ok(Frame::Complete {
                len: 19,
                msg_type: 4
            })
        );
    }

    #[test]
    fn header_errors() {
        let p = CodecParams::default();
        let ext = CodecParams {
            extended_message: true,
            ..CodecParams::default()
        };
        let mut bad_marker = hdr(19, 4);
        bad_marker[3] = 0;
        assert_eq!(frame(&bad_marker, &p), Err(HeaderError::NotSynchronized));
        assert_eq!(
            frame(&hdr(18, 4), &p),
            Err(HeaderError::BadLength {
                len: 18,
                msg_type: 4
            })
        );
        assert_eq!(
            frame(&hdr(20, 4), &p),
            Err(HeaderError::BadLength {
                len: 20,
                msg_type: 4
            })
        );
        assert_eq!(
            frame(&hdr(28, 1), &p),
            Err(HeaderError::BadLength {
                len: 28,
                msg_type: 1
            })
        );
        assert_eq!(
            frame(&hdr(22, 2), &p),
            Err(HeaderError::BadLength {
                len: 22,
                msg_type: 2
            })
        );
        assert_eq!(
            frame(&hdr(20, 3), &p),
            Err(HeaderError::BadLength {
                len: 20,
                msg_type: 3
            })
        );
        assert_eq!(
            frame(&hdr(22, 5), &p),
            Err(HeaderError::BadLength {
                len: 22,
                msg_type: 5
            })
        );
        assert_eq!(
            frame(&hdr(4097, 2), &p),
            Err(HeaderError::BadLength {
                len: 4097,
                msg_type: 2
            })
        );
        assert_eq!(
            frame(&hdr(4097, 2), &ext),
            Ok(Frame::Incomplete { needed: 4097 })
        );
        assert_eq!(
            frame(&hdr(65535, 3), &ext),
            Ok(Frame::Incomplete { needed: 65535 })
        );
        // RFC 8654 §4: OPEN and KEEPALIVE stay within 4096.
        assert_eq!(
            frame(&hdr(4097, 1), &ext),
            Err(HeaderError::BadLength {
                len: 4097,
                msg_type: 1
            })
        );
        assert_eq!(frame(&hdr(19, 6), &p), Err(HeaderError::BadType(6)));
        assert_eq!(frame(&hdr(19, 0), &p), Err(HeaderError::BadType(0)));
    }
}
