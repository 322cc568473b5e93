//! serval's BGP speaker against BIRD 2, FRR bgpd, GoBGP, OpenBGPD and ExaBGP, every
//! scenario in namespaces of its own, several at once. At the end it prints the interop
//! matrix (peer × feature: pass / FAIL / n/a with the reason), writes it as Markdown to
//! `$CARGO_TARGET_DIR/interop-matrix.md`, and exits non-zero if anything failed.
//!
//! `cargo test -p serval-integration --test interop -- [FILTER…]` runs the cases whose
//! `row/column` name contains any FILTER (e.g. `bird`, `md5`, `frr/GR`).
//! `SERVAL_INTEROP_JOBS` sets how many run at once (default 6). Needs root, the Debian
//! daemons and a built `serval` binary (`cargo build -p serval`).

use serval_integration::interop::peer::{Feature, InteropPeer};
use serval_integration::interop::{matrix, run_all, scenarios, Case, Verdict};
use serval_integration::{tools, Bird, ExaBgp, Frr, GoBgp, OpenBgpd, Result, TestDir};
use std::path::PathBuf;
use std::time::Instant;

const PEERS: [&str; 5] = ["bird", "frr", "gobgp", "openbgpd", "exabgp"];
const SINGLE: &str = "scenario";
const SINGLE_ROWS: [&str; 12] = [
    "route reflector (2 BIRD clients)",
    "dynamic reconfiguration (2 BIRD peers)",
    "malformed: bad ORIGIN (raw client)",
    "malformed: duplicate MP_REACH (raw client)",
    "martian NEXT_HOP 127.0.0.1 (raw client)",
    "GR helper: stale until End-of-RIB (raw client)",
    "GR restarting: R bit, deferral, End-of-RIB (raw client)",
    "GR helper: peer gone past its restart time (raw client)",
    "enhanced refresh: purge at EoRR (raw client)",
    "2-octet AS peer, serval with a 4-octet AS (raw client)",
    "hold timer expiry (raw client)",
    "RFC 8538 graceful NOTIFICATION and Hard Reset (FRR)",
];
const SINGLE_COLUMN: &str = "result";

type Scenario = fn(&TestDir) -> Result<Verdict>;

fn scenario_of<P: InteropPeer>(f: Feature) -> Scenario {
    match f {
        Feature::Session => scenarios::session::<P>,
        Feature::Routes => scenarios::routes::<P>,
        Feature::Md5 => scenarios::md5::<P>,
        Feature::GrServalRestarts => scenarios::gr_serval_restarts::<P>,
        Feature::GrPeerRestarts => scenarios::gr_peer_restarts::<P>,
        Feature::RefreshServalAsks => scenarios::refresh_serval_asks::<P>,
        Feature::RefreshPeerAsks => scenarios::refresh_peer_asks::<P>,
        Feature::MaxPrefix => scenarios::max_prefix::<P>,
        Feature::Gtsm => scenarios::gtsm::<P>,
        Feature::DualStack => scenarios::dual_stack_one_session::<P>,
    }
}

fn peer_cases<P: InteropPeer>(out: &mut Vec<Case>) {
    for f in Feature::ALL {
        out.push(Case::new(P::NAME, f.column(), scenario_of::<P>(f)));
    }
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // The single-peer scenarios first, then peer by peer; slow graceful-restart cases
    // end up spread over the run.
    let singles: [Scenario; 12] = [
        scenarios::route_reflector,
        scenarios::reconfigure,
        scenarios::malformed_origin,
        scenarios::malformed_duplicate_mp_reach,
        scenarios::martian_next_hop,
        scenarios::gr_helper_stale_until_end_of_rib,
        scenarios::gr_restarting_speaker,
        scenarios::gr_helper_restart_time_expires,
        scenarios::enhanced_refresh_purges,
        scenarios::two_octet_peer,
        scenarios::hold_timer_expiry,
        scenarios::graceful_notification_frr,
    ];
    for (row, body) in SINGLE_ROWS.iter().zip(singles) {
        cases.push(Case::new(row, SINGLE_COLUMN, body));
    }
    peer_cases::<Bird>(&mut cases);
    peer_cases::<Frr>(&mut cases);
    peer_cases::<GoBgp>(&mut cases);
    peer_cases::<OpenBgpd>(&mut cases);
    peer_cases::<ExaBgp>(&mut cases);
    cases
}

fn matrix_path() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("interop-matrix.md"),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("interop-matrix.md")))
            .unwrap_or_else(|| PathBuf::from("interop-matrix.md")),
    }
}

fn main() {
    // Flags libtest would take (--nocapture, --test-threads=N…) mean nothing here.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Err(e) = tools::require_root() {
        eprintln!("interop: {e}");
        println!(
            "{}",
            matrix::summary_line(matrix::Totals {
                failed: 1,
                ..Default::default()
            })
        );
        std::process::exit(1);
    }
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name().contains(f.as_str())))
        .collect();
    let jobs = std::env::var("SERVAL_INTEROP_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(6);
    eprintln!("interop: {} cases, {jobs} at a time", cases.len());
    let start = Instant::now();
    let entries = run_all(cases, jobs);

    let columns: Vec<&str> = Feature::ALL.iter().map(|f| f.column()).collect();
    let single: Vec<&str> = SINGLE_ROWS.to_vec();
    let text = format!(
        "{}\n{}",
        matrix::text("interop matrix (serval × peer)", &PEERS, &columns, &entries),
        matrix::text("single-peer scenarios", &single, &[SINGLE_COLUMN], &entries)
    );
    let md = format!(
        "{}\n{}",
        matrix::markdown("peer", &PEERS, &columns, &entries),
        matrix::markdown(SINGLE, &single, &[SINGLE_COLUMN], &entries)
    );
    println!("\n{text}");
    let path = matrix_path();
    match std::fs::write(&path, &md) {
        Ok(()) => println!("matrix written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
    let totals = matrix::totals(&entries);
    println!("wall time {:.0} s", start.elapsed().as_secs_f64());
    println!("{}", matrix::summary_line(totals));
    if totals.failed > 0 {
        std::process::exit(1);
    }
}
