//! The rr-race table: per reflector the medians over the runs with their spread, then
//! serval's ratios against each other reflector and the targets they are held to
//! (convergence at most half the fastest other reflector's, peak RSS at most BIRD's,
//! cold start under 10 s with 1,000 clients).

use super::reflectors::Reflector;
use super::Sample;
use crate::race::stats::Summary;
use std::fmt::Write as _;

/// Nearest-rank percentile `p` (0–100) of `xs`.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// The medians of one reflector's runs.
#[derive(Clone, Copy, Debug)]
struct Row {
    cold: Summary,
    rss_kib: Summary,
    churn: Option<Summary>,
    withdraw_p50: Option<f64>,
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The table for `clients` clients. `results` holds each reflector's samples.
pub fn table(clients: usize, results: &[(Reflector, Vec<Sample>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:>7} {:>7} {:>20} {:>7} {:>9} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>5}",
        "reflector",
        "start s",
        "cold s",
        "[min-max] spread",
        "RSS MiB",
        "[min-max]",
        "CPU s",
        "cli CPU",
        "churn s",
        "wd p50ms",
        "wd p99ms",
        "k-routes",
        "lost"
    );
    let mut rows: Vec<(Reflector, Row)> = Vec::new();
    for (r, samples) in results {
        let cold: Vec<f64> = samples.iter().map(|s| s.cold_secs).collect();
        let rss: Vec<f64> = samples.iter().map(|s| s.peak_rss_kib as f64).collect();
        let (Some(c), Some(m)) = (Summary::of(&cold), Summary::of(&rss)) else {
            let _ = writeln!(out, "{:<11} no successful run", r.name());
            continue;
        };
        let med = |f: &dyn Fn(&Sample) -> f64| {
            Summary::of(&samples.iter().map(f).collect::<Vec<_>>()).map_or(0.0, |s| s.median)
        };
        let churn: Vec<f64> = samples.iter().filter_map(|s| s.churn_secs).collect();
        let churn = Summary::of(&churn);
        // Percentiles over every withdrawal of every run.
        let wd: Vec<f64> = samples.iter().flat_map(|s| s.withdraw_ms.clone()).collect();
        let p50 = percentile(&wd, 50.0);
        let p99 = percentile(&wd, 99.0);
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        let routes = samples
            .iter()
            .filter_map(|s| s.kernel_routes)
            .min()
            .map_or("-".to_string(), |k| k.to_string());
        let _ = writeln!(
            out,
            "{:<11} {:>7.2} {:>7.3} {:>20} {:>7.1} {:>9} {:>6.2} {:>7.2} {:>7} {:>8} {:>8} {:>8} {:>5}",
            r.name(),
            med(&|s| s.start_secs),
            c.median,
            format!("[{:.3}-{:.3}] {:.0}%", c.min, c.max, c.spread() * 100.0),
            mib(m.median),
            format!("[{:.0}-{:.0}]", mib(m.min), mib(m.max)),
            med(&|s| s.cold_cpu_secs),
            med(&|s| s.clients_cpu_secs),
            opt(churn.map(|s| s.median), 3),
            opt(p50, 1),
            opt(p99, 1),
            routes,
            samples.iter().map(|s| s.sessions_lost).sum::<usize>(),
        );
        rows.push((
            *r,
            Row {
                cold: c,
                rss_kib: m,
                churn,
                withdraw_p50: p50,
            },
        ));
    }
    let others: Vec<&(Reflector, Row)> = rows.iter().filter(|(r, _)| !r.is_serval()).collect();
    let fastest_cold = others
        .iter()
        .map(|(_, row)| row.cold.median)
        .min_by(f64::total_cmp);
    let fastest_churn = others
        .iter()
        .filter_map(|(_, row)| row.churn.map(|c| c.median))
        .min_by(f64::total_cmp);
    let bird_rss = rows
        .iter()
        .find(|(r, _)| *r == Reflector::Bird)
        .map(|(_, row)| row.rss_kib.median);
    for (s, srow) in rows.iter().filter(|(r, _)| r.is_serval()) {
        for (o, orow) in &others {
            let mut line = format!(
                "{}/{:<6} cold start {}x, peak RSS {}x",
                s.name(),
                o.name(),
                ratio(srow.cold.median / orow.cold.median),
                ratio(srow.rss_kib.median / orow.rss_kib.median)
            );
            if let (Some(a), Some(b)) = (srow.churn, orow.churn) {
                let _ = write!(line, ", churn {}x", ratio(a.median / b.median));
            }
            if let (Some(a), Some(b)) = (srow.withdraw_p50, orow.withdraw_p50) {
                let _ = write!(line, ", withdraw p50 {}x", ratio(a / b));
            }
            let _ = writeln!(out, "{line}");
        }
        let mut t = format!("{} targets:", s.name());
        if let Some(f) = fastest_cold {
            let r = srow.cold.median / f;
            let _ = write!(
                t,
                " cold start <= 0.5x the fastest other ({}x): {};",
                ratio(r),
                verdict(r <= 0.5)
            );
        }
        if let (Some(f), Some(c)) = (fastest_churn, srow.churn) {
            let r = c.median / f;
            let _ = write!(
                t,
                " churn <= 0.5x the fastest other ({}x): {};",
                ratio(r),
                verdict(r <= 0.5)
            );
        }
        if let Some(b) = bird_rss {
            let r = srow.rss_kib.median / b;
            let _ = write!(t, " RSS <= BIRD's ({}x): {};", ratio(r), verdict(r <= 1.0));
        }
        if clients >= 1000 {
            let _ = write!(
                t,
                " cold start < 10 s ({:.2} s): {}",
                srow.cold.median,
                verdict(srow.cold.median < 10.0)
            );
        }
        if t.ends_with(':') {
            continue;
        }
        let _ = writeln!(out, "{}", t.trim_end_matches(';'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cold: f64, rss_mib: u64, churn: f64) -> Sample {
        Sample {
            start_secs: 0.1,
            cold_secs: cold,
            cold_cpu_secs: cold / 2.0,
            clients_cpu_secs: 0.1,
            cpu_secs: cold,
            peak_rss_kib: rss_mib * 1024,
            idle_rss_kib: 1024,
            churn_secs: Some(churn),
            withdraw_ms: vec![1.0, 2.0, 3.0],
            cold_updates: 0,
            kernel_routes: None,
            listen_drops: 0,
            sessions_lost: 0,
            last_loss: String::new(),
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), Some(10.0));
        assert_eq!(percentile(&xs, 99.0), Some(20.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratios_against_the_fastest_other() {
        let results = vec![
            (Reflector::Serval, vec![sample(0.4, 20, 0.2)]),
            (Reflector::Bird, vec![sample(1.0, 30, 0.5)]),
            (Reflector::Frr, vec![sample(2.0, 90, 1.0)]),
        ];
        let t = table(1000, &results);
        assert!(
            t.contains(
                "serval/bird   cold start 0.40x, peak RSS 0.67x, churn 0.40x, withdraw p50 1.00x"
            ),
            "{t}"
        );
        assert!(
            t.contains("cold start <= 0.5x the fastest other (0.40x): met"),
            "{t}"
        );
        assert!(t.contains("RSS <= BIRD's (0.67x): met"), "{t}");
        assert!(t.contains("cold start < 10 s (0.40 s): met"), "{t}");
        let results = vec![
            (Reflector::Serval, vec![sample(0.8, 40, 0.2)]),
            (Reflector::Bird, vec![sample(1.0, 30, 0.5)]),
        ];
        let t = table(50, &results);
        assert!(t.contains("(0.80x): NOT met"), "{t}");
        assert!(!t.contains("< 10 s"), "{t}");
    }
}
