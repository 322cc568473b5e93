//! The NOTIFICATION decoder and everything that reads its data.
#![no_main]

use bgp::wire::Notification;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(n) = Notification::decode(data) {
        let _ = n.to_string();
        let _ = n.shutdown_communication();
        let _ = n.hard_reset_cause();
        let _ = n.max_prefixes_data();
    }
});
