//! The ROUTE-REFRESH decoder.
#![no_main]

use bgp::wire::RouteRefresh;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RouteRefresh::decode(data, data);
});
