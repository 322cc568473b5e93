//! The race's tables: per shape, each daemon's median time and peak RSS with their
//! spread, then serval's ratios against each and the targets they are held to.

use super::daemons::Daemon;
use super::stats::Summary;
use super::{Sample, Shape};
use std::fmt::Write as _;

/// The targets of the brief: serval's time as a fraction of another's.
fn time_target(shape: Shape, other: Daemon) -> Option<f64> {
    match (shape, other) {
        (Shape::Single, Daemon::Bird) => Some(0.8),
        (Shape::Single, Daemon::Gobgp) => Some(0.2),
        // Fastest of the four.
        (Shape::RouteServer, Daemon::Bird | Daemon::Gobgp | Daemon::Frr) => Some(1.0),
        _ => None,
    }
}

/// Two decimals, three below 0.1 (serval against GoBGP is ~0.004).
fn ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// One shape's table. `results` holds each daemon's samples in run order.
pub fn table(shape: Shape, header: &str, results: &[(Daemon, Vec<Sample>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== {header} ==");
    let _ = writeln!(
        out,
        "{:<7} {:>7} {:>22} {:>7} {:>11} {:>8} {:>7} {:>8} {:>7}",
        "daemon",
        "time s",
        "[min-max] spread",
        "RSS MiB",
        "[min-max]",
        "B/prefix",
        "CPU s",
        "fed by s",
        "poll ms"
    );
    let mut medians: Vec<(Daemon, Summary, Summary, u64)> = Vec::new();
    for (d, samples) in results {
        let secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
        let rss: Vec<f64> = samples.iter().map(|s| s.peak_rss_kib as f64).collect();
        let fed: Vec<f64> = samples.iter().map(|s| s.feeder_written_secs).collect();
        let poll: Vec<f64> = samples.iter().map(|s| s.poll_ms).collect();
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_secs).collect();
        let prefixes = samples.first().map_or(0, |s| s.prefixes);
        let (Some(t), Some(r)) = (Summary::of(&secs), Summary::of(&rss)) else {
            let _ = writeln!(out, "{:<7} no successful run", d.name());
            continue;
        };
        let fed = Summary::of(&fed).map_or(0.0, |s| s.median);
        let poll = Summary::of(&poll).map_or(0.0, |s| s.median);
        let cpu = Summary::of(&cpu).map_or(0.0, |s| s.median);
        let per_prefix = r.median * 1024.0 / prefixes.max(1) as f64;
        let _ = writeln!(
            out,
            "{:<7} {:>7.3} {:>22} {:>7.0} {:>11} {:>8.0} {:>7.2} {:>8.3} {:>7}",
            d.name(),
            t.median,
            format!("[{:.3}-{:.3}] {:.0}%", t.min, t.max, t.spread() * 100.0),
            mib(r.median),
            format!("[{:.0}-{:.0}]", mib(r.min), mib(r.max)),
            per_prefix,
            cpu,
            fed,
            if poll > 0.0 {
                format!("{poll:.1}")
            } else {
                "-".into()
            },
        );
        medians.push((*d, t, r, prefixes));
    }
    let Some(&(_, st, sr, _)) = medians.iter().find(|(d, ..)| *d == Daemon::Serval) else {
        return out;
    };
    for (d, t, r, _) in medians.iter().filter(|(d, ..)| *d != Daemon::Serval) {
        let tr = st.median / t.median;
        let rr = sr.median / r.median;
        let verdict = match time_target(shape, *d) {
            Some(target) => format!(
                " (target <= {target}x: {})",
                if tr <= target { "met" } else { "NOT met" }
            ),
            None => String::new(),
        };
        let mem = if shape == Shape::Single && *d == Daemon::Bird {
            format!(
                " (target <= 1x: {})",
                if rr <= 1.0 { "met" } else { "NOT met" }
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "serval/{:<6} time {}x{verdict}, peak RSS {}x{mem}",
            d.name(),
            ratio(tr),
            ratio(rr)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: f64, rss: u64) -> Sample {
        Sample {
            secs,
            lower_secs: secs - 0.05,
            peak_rss_kib: rss,
            idle_rss_kib: 1000,
            feeder_written_secs: secs / 2.0,
            cpu_secs: secs,
            poll_ms: 3.0,
            polls: 10,
            prefixes: 1_000_000,
            feeders_received: 0,
        }
    }

    #[test]
    fn ratios_and_verdicts() {
        let results = vec![
            (
                Daemon::Serval,
                vec![
                    sample(0.4, 90 * 1024),
                    sample(0.5, 92 * 1024),
                    sample(0.45, 91 * 1024),
                ],
            ),
            (Daemon::Bird, vec![sample(0.6, 106 * 1024)]),
            (Daemon::Gobgp, vec![sample(18.0, 1168 * 1024)]),
        ];
        let t = table(Shape::Single, "single", &results);
        assert!(t.contains("serval    0.450"), "{t}");
        assert!(t.contains("serval/bird   time 0.75x (target <= 0.8x: met), peak RSS 0.86x (target <= 1x: met)"), "{t}");
        assert!(
            t.contains("serval/gobgp  time 0.025x (target <= 0.2x: met)"),
            "{t}"
        );
    }

    #[test]
    fn a_missed_target_says_so() {
        let results = vec![
            (Daemon::Serval, vec![sample(0.7, 200 * 1024)]),
            (Daemon::Bird, vec![sample(0.6, 106 * 1024)]),
        ];
        let t = table(Shape::Single, "single", &results);
        assert!(t.contains("NOT met"), "{t}");
    }
}
