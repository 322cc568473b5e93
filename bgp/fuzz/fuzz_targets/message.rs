//! Framing and the whole-message decoder, with arbitrary session parameters.
#![no_main]

#[path = "common.rs"]
mod common;

use bgp::wire::{decode_message, frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((p, mut buf)) = common::split(data) else { return };
    // Walk the buffer as a session would, message after message.
    while let Ok(Frame::Complete { len, .. }) = frame(buf, &p) {
        if let Err(e) = decode_message(&buf[..len], &p) {
            let _ = e.notification().to_string();
            break;
        }
        buf = &buf[len..];
    }
    let _ = decode_message(buf, &p);
});
