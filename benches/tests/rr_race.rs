//! rr-race end to end at a small scale: serval and BIRD each reflect the blocks of 20
//! clients, then 5 clients drop and come back and 3 withdraw and announce again, in fresh
//! namespaces. Checks the machinery (configurations, sessions from 20 addresses,
//! counting, timing, RSS), not the speed.
//!
//! Needs root and bird2, and serval's binary: `cargo build -p serval` first (or set
//! `SERVAL_BIN`).

use serval_benches::rr::reflectors::Reflector;
use serval_benches::rr::{self, report, RrOpts};
use std::time::Duration;

#[test]
fn serval_and_bird_reflect_twenty_clients() {
    let serval_bin = serval_integration::serval::binary().unwrap_or_else(|e| panic!("{e}"));
    let opts = RrOpts {
        serval_bin,
        clients: 20,
        churn: 5,
        withdrawals: 3,
        timeout: Duration::from_secs(60),
    };
    let mut results = Vec::new();
    for r in [Reflector::Serval, Reflector::Bird] {
        let s = rr::run_once(r, &opts).unwrap_or_else(|e| panic!("{}: {e}", r.name()));
        assert!(s.cold_secs > 0.0 && s.cold_secs < 60.0, "{s:?}");
        // Every client received UPDATEs (the 19 other blocks, however packed).
        assert!(s.cold_updates >= 20, "{s:?}");
        assert!(s.churn_secs.is_some_and(|c| c > 0.0), "{s:?}");
        assert_eq!(s.withdraw_ms.len(), 3, "{s:?}");
        assert!(s.withdraw_ms.iter().all(|&ms| ms > 0.0), "{s:?}");
        assert!(
            s.peak_rss_kib >= s.idle_rss_kib && s.peak_rss_kib > 0,
            "{s:?}"
        );
        assert!(s.cpu_secs >= 0.0, "{s:?}");
        results.push((r, vec![s]));
    }
    let t = report::table(20, &results);
    assert!(t.contains("serval/bird"), "{t}");
    // Nothing left behind.
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{}{}-", rr::NS_PREFIX, std::process::id())))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
