//! The UPDATE body decoder under every combination of session parameters.
#![no_main]

#[path = "common.rs"]
mod common;

use bgp::wire::Update;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((p, body)) = common::split(data) else { return };
    match Update::decode(body, &p) {
        Ok(d) => {
            for e in &d.errors {
                let _ = e.to_string();
                let _ = e.notification();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
