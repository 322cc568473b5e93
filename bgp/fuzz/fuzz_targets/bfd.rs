//! The BFD control packet decoder: never panics, and decode(encode(p)) == p for every
//! packet it accepts. The same input, cut into packets, then drives a session with a
//! clock the input moves, so no packet sequence panics the state machine either.
#![no_main]

use bgp::bfd::{ControlPacket, Input, Session, SessionConfig, Timers};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(out.len(), 24);
        match ControlPacket::decode(&out) {
            Ok(again) => assert_eq!(again, p),
            Err(e) => panic!("our own encoding does not decode: {e}\n{p:?}"),
        }
    }

    let Some(local) = NonZeroU32::new(1) else { return };
    let cfg = SessionConfig {
        local_discriminator: local,
        timers: Timers {
            desired_min_tx: Duration::from_millis(10),
            required_min_rx: Duration::from_millis(10),
            detect_mult: 3,
        },
        passive: data.first().is_some_and(|b| b & 1 != 0),
        jitter_seed: 1,
    };
    let t0 = Instant::now();
    let Ok(mut s) = Session::new(cfg, t0) else { return };
    let mut now = t0;
    let mut actions = Vec::new();
    // Each record: one octet of clock (in 4 ms steps), then a 24-octet packet.
    for record in data.chunks(25) {
        let Some((&step, packet)) = record.split_first() else { break };
        now += Duration::from_millis(4 * u64::from(step));
        while let Some(at) = s.next_deadline().filter(|at| *at <= now) {
            s.on_timer(at, &mut actions);
        }
        match step % 16 {
            0 => s.handle(now, Input::AdminDown, &mut actions),
            1 => s.handle(now, Input::AdminUp, &mut actions),
            _ => {}
        }
        if let Ok(p) = ControlPacket::decode(packet) {
            s.handle(now, Input::Packet(&p), &mut actions);
        }
        for a in actions.drain(..) {
            if let bgp::bfd::Action::Send(p) = a {
                assert!(!(p.poll && p.final_), "P and F both set: {p:?}");
            }
        }
    }
});
