//! decode(encode(decode(x))) == decode(x) wherever the first decode succeeds.
#![no_main]

#[path = "common.rs"]
mod common;

use bgp::wire::{decode_message, encode_message, Message};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((p, frame)) = common::split(data) else { return };
    let Ok(first) = decode_message(frame, &p) else { return };
    let Some(msg) = first.message else { return };
    let mut out = BytesMut::new();
    // Some decoded values do not fit again (a 4096-octet UPDATE whose attributes grow when
    // re-encoded, say); those are refused, never mis-encoded.
    if encode_message(&msg, &p, &mut out).is_err() {
        return;
    }
    let second = match decode_message(&out, &p) {
        Ok(d) => d,
        Err(e) => panic!("our own encoding does not decode: {e}\n{msg:?}"),
    };
    assert_eq!(second.message, Some(normalize(msg)));
});

/// Unknown transitive attributes are passed on with the Partial bit (RFC 4271 §5), and
/// every attribute goes out in ascending order of type code (RFC 4271 §5, "SHOULD"),
/// whatever order they came in.
fn normalize(m: Message) -> Message {
    match m {
        Message::Update(mut u) => {
            if let Some(a) = u.attrs.as_mut() {
                for r in &mut a.unknown {
                    r.flags |= 0x20;
                }
                a.unknown.sort_by_key(|r| r.code);
            }
            Message::Update(u)
        }
        m => m,
    }
}
