//! The OPEN body decoder.
#![no_main]

use bgp::wire::Open;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = Open::decode(data) {
        let _ = o.families().count();
    }
});
