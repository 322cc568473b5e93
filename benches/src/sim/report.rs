//! From the points of a run (one JSON object per shape and N) to the table, the fitted
//! curves and the plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::fit::{self, Fit};

/// A figure: its JSON path in a point, what it is, its unit.
pub struct Figure {
    pub path: &'static [&'static str],
    pub label: &'static str,
    pub unit: &'static str,
}

pub const FIGURES: &[Figure] = &[
    Figure {
        path: &["startup", "all_routes_s"],
        label: "start-up until every node routes every block",
        unit: "s",
    },
    Figure {
        path: &["claims", "p50_ms"],
        label: "block claimed → in every kernel, p50",
        unit: "ms",
    },
    Figure {
        path: &["claims", "p99_ms"],
        label: "block claimed → in every kernel, p99",
        unit: "ms",
    },
    Figure {
        path: &["kill_graceful_restart", "withdrawn_s"],
        label: "node killed → withdrawn everywhere (graceful restart)",
        unit: "s",
    },
    Figure {
        path: &["hang_hold_expiry", "withdrawn_s"],
        label: "node hung → withdrawn everywhere (hold expiry)",
        unit: "s",
    },
    Figure {
        path: &["idle", "rss_mib_mean"],
        label: "agent RSS idle (mean, non-reflector)",
        unit: "MiB",
    },
    Figure {
        path: &["churn", "rss_mib_mean"],
        label: "agent RSS during churn (mean, non-reflector)",
        unit: "MiB",
    },
    Figure {
        path: &["idle", "rr_rss_mib_mean"],
        label: "reflector RSS idle",
        unit: "MiB",
    },
    Figure {
        path: &["idle", "cpu_pct_mean"],
        label: "agent CPU idle (mean)",
        unit: "% of a core",
    },
    Figure {
        path: &["churn", "cpu_pct_mean"],
        label: "agent CPU during churn (mean)",
        unit: "% of a core",
    },
    Figure {
        path: &["churn", "rr_cpu_pct_mean"],
        label: "reflector CPU during churn",
        unit: "% of a core",
    },
    Figure {
        path: &["startup", "etcd", "requests"],
        label: "etcd requests during start-up",
        unit: "requests",
    },
    Figure {
        path: &["startup", "etcd", "watch_events"],
        label: "etcd watch events during start-up",
        unit: "events",
    },
    Figure {
        path: &["churn", "etcd", "requests_per_s"],
        label: "etcd requests/s during churn",
        unit: "1/s",
    },
    Figure {
        path: &["churn", "etcd", "watch_events_per_s"],
        label: "etcd watch events/s during churn",
        unit: "1/s",
    },
    Figure {
        path: &["churn", "etcd", "requests_per_pod"],
        label: "etcd requests per pod (created and released)",
        unit: "requests",
    },
    Figure {
        path: &["churn", "etcd", "watch_events_per_pod"],
        label: "etcd watch events per pod (created and released)",
        unit: "events",
    },
];

/// Per-pod figures of the churn: etcd's requests and watch events divided by the pods
/// created (each also released once the churn is under way).
pub fn derive(points: &mut [Value]) {
    for p in points {
        let Some(pods) = num(p, &["churn", "pods_created"]).filter(|v| *v > 0.0) else {
            continue;
        };
        for (from, to) in [
            ("requests", "requests_per_pod"),
            ("watch_events", "watch_events_per_pod"),
        ] {
            if let Some(v) = num(p, &["churn", "etcd", from]) {
                p["churn"]["etcd"][to] = serde_json::json!(super::etcd::round(v / pods));
            }
        }
    }
}

pub fn get<'a>(p: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(p, |v, k| v.get(*k))
}

fn num(p: &Value, path: &[&str]) -> Option<f64> {
    get(p, path).and_then(Value::as_f64)
}

/// (N, value) of a figure for one shape, by N.
pub fn series(points: &[Value], shape: &str, path: &[&str]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p["shape"] == shape)
        .filter_map(|p| Some((p["nodes"].as_f64()?, num(p, path)?)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

pub fn best_fit(points: &[Value], shape: &str, path: &[&str]) -> Option<Fit> {
    let s = series(points, shape, path);
    if s.iter().all(|p| p.1 == 0.0) {
        return None;
    }
    fit::all(&s).into_iter().next()
}

/// The fitted curves as text, every model per figure and shape, the chosen one first.
pub fn fits_text(points: &[Value]) -> String {
    let mut t = String::new();
    for shape in ["mesh", "rr"] {
        for f in FIGURES {
            let s = series(points, shape, f.path);
            if s.is_empty() || s.iter().all(|p| p.1 == 0.0) {
                continue;
            }
            let fits = fit::all(&s);
            let _ = write!(t, "{shape:<4} {} [{}]: ", f.label, f.unit);
            match fits.first() {
                Some(best) => {
                    let _ = writeln!(
                        t,
                        "{best}; at N = 1000: {:.4}, N = 5000: {:.4}",
                        best.eval(1000.0),
                        best.eval(5000.0)
                    );
                    for other in &fits[1..] {
                        let _ = writeln!(t, "       or {other}");
                    }
                }
                None => {
                    let _ = writeln!(t, "{} points, too few to fit", s.len());
                }
            }
        }
    }
    t
}

/// The table: one row per point.
pub fn table(points: &[Value]) -> String {
    let cols: &[(&str, &[&str])] = &[
        ("start-up s", &["startup", "all_routes_s"]),
        ("claim p50 ms", &["claims", "p50_ms"]),
        ("claim p99 ms", &["claims", "p99_ms"]),
        ("kill (GR) s", &["kill_graceful_restart", "withdrawn_s"]),
        ("hang (hold) s", &["hang_hold_expiry", "withdrawn_s"]),
        ("RSS idle MiB", &["idle", "rss_mib_mean"]),
        ("RSS churn MiB", &["churn", "rss_mib_mean"]),
        ("RR RSS MiB", &["churn", "rr_rss_mib_mean"]),
        ("CPU idle %", &["idle", "cpu_pct_mean"]),
        ("CPU churn %", &["churn", "cpu_pct_mean"]),
        ("RR CPU churn %", &["churn", "rr_cpu_pct_mean"]),
        ("etcd req start-up", &["startup", "etcd", "requests"]),
        ("etcd events start-up", &["startup", "etcd", "watch_events"]),
        ("etcd req/s churn", &["churn", "etcd", "requests_per_s"]),
        (
            "etcd events/s churn",
            &["churn", "etcd", "watch_events_per_s"],
        ),
        ("pods/s", &["churn", "rate_per_s"]),
    ];
    let mut t = String::from("| shape | N |");
    for (h, _) in cols {
        let _ = write!(t, " {h} |");
    }
    t.push_str(" load avg |\n|---|---:|");
    for _ in cols {
        t.push_str("---:|");
    }
    t.push_str("---|\n");
    let mut sorted: Vec<&Value> = points.iter().collect();
    sorted.sort_by_key(|p| {
        (
            p["shape"].as_str().unwrap_or("").to_owned(),
            p["nodes"].as_u64(),
        )
    });
    for p in sorted {
        let _ = write!(
            t,
            "| {} | {} |",
            p["shape"].as_str().unwrap_or("?"),
            p["nodes"]
        );
        for (_, path) in cols {
            match num(p, path) {
                Some(v) if v.fract() == 0.0 => {
                    let _ = write!(t, " {v} |");
                }
                Some(v) => {
                    let _ = write!(t, " {v:.2} |");
                }
                None => t.push_str(" – |"),
            }
        }
        let _ = writeln!(
            t,
            " {} → {} |",
            p["load_before"].as_str().unwrap_or("?"),
            p["load_after"].as_str().unwrap_or("?")
        );
    }
    t
}

/// One PNG: the figures' points per shape and their fitted curves.
fn plot(
    points: &[Value],
    dir: &Path,
    file: &str,
    title: &str,
    ylabel: &str,
    figs: &[(&[&str], &str)],
) -> anyhow::Result<()> {
    let data = dir.join(format!("{file}.dat"));
    let mut d = String::new();
    let mut plots = Vec::new();
    let mut block = 0;
    let mut max_n: f64 = 10.0;
    for (path, label) in figs {
        for shape in ["mesh", "rr"] {
            let s = series(points, shape, path);
            if s.is_empty() {
                continue;
            }
            let _ = writeln!(d, "# {shape} {label}");
            for (x, y) in &s {
                max_n = max_n.max(*x);
                let _ = writeln!(d, "{x} {y}");
            }
            d.push_str("\n\n");
            let color = plots.len() / 2 + 1;
            let _ = color;
            plots.push(format!(
                "'{}' index {block} with points pt 7 ps 1.3 title '{label}, {shape}'",
                data.display()
            ));
            if let Some(f) = best_fit(points, shape, path) {
                plots.push(format!(
                    "{} with lines dt 2 title '{} fit'",
                    f.gnuplot(),
                    f.model.name()
                ));
            }
            block += 1;
        }
    }
    if plots.is_empty() {
        return Ok(());
    }
    std::fs::write(&data, d)?;
    let png = dir.join(format!("{file}.png"));
    let script = format!(
        "set terminal pngcairo size 900,560 font 'sans,10'\nset output '{}'\n\
         set title '{title}'\nset xlabel 'nodes (N)'\nset ylabel '{ylabel}'\n\
         set key left top\nset grid\nset xrange [0:{}]\nset yrange [0:*]\nset samples 400\n\
         plot {}\n",
        png.display(),
        (max_n * 1.1).ceil(),
        plots.join(", \\\n     ")
    );
    let gp = dir.join(format!("{file}.gp"));
    std::fs::write(&gp, &script)?;
    let out = std::process::Command::new("gnuplot")
        .arg(&gp)
        .output()
        .context("running gnuplot")?;
    if !out.status.success() {
        bail!(
            "gnuplot {}: {}",
            gp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let _ = std::fs::remove_file(&gp);
    let _ = std::fs::remove_file(&data);
    Ok(())
}

/// Fails naming the package when gnuplot is missing.
pub fn require_gnuplot() -> anyhow::Result<()> {
    if serval_integration::tools::require("gnuplot").is_err() {
        bail!("gnuplot not found: install the Debian package gnuplot-nox (apt-get install gnuplot-nox), or run with --no-plots");
    }
    Ok(())
}

/// A plot: its file name, title, y label, and the figures on it (JSON path, label).
type PlotSpec<'a> = (&'a str, &'a str, &'a str, &'a [(&'a [&'a str], &'a str)]);

/// Every plot into `dir`.
pub fn plots(points: &[Value], dir: &Path) -> anyhow::Result<Vec<String>> {
    require_gnuplot()?;
    std::fs::create_dir_all(dir)?;
    let specs: &[PlotSpec] = &[
        (
            "cluster-sim-startup",
            "Start-up: all agents started until every node routes every block",
            "seconds",
            &[(&["startup", "all_routes_s"], "start-up")],
        ),
        (
            "cluster-sim-claims",
            "A block claimed on one node until every other kernel routes it",
            "milliseconds",
            &[
                (&["claims", "p50_ms"], "p50"),
                (&["claims", "p99_ms"], "p99"),
            ],
        ),
        (
            "cluster-sim-withdraw",
            "A node lost until every other node withdrew its block",
            "seconds",
            &[
                (
                    &["kill_graceful_restart", "withdrawn_s"],
                    "killed (graceful restart)",
                ),
                (&["hang_hold_expiry", "withdrawn_s"], "hung (hold expiry)"),
            ],
        ),
        (
            "cluster-sim-memory",
            "Agent memory (VmRSS)",
            "MiB",
            &[
                (&["idle", "rss_mib_mean"], "idle"),
                (&["churn", "rss_mib_mean"], "churn"),
                (&["churn", "rr_rss_mib_mean"], "reflector, churn"),
            ],
        ),
        (
            "cluster-sim-cpu",
            "Agent CPU (per agent, % of one core)",
            "% of a core",
            &[
                (&["idle", "cpu_pct_mean"], "idle"),
                (&["churn", "cpu_pct_mean"], "churn, 20 pods/s"),
                (&["churn", "rr_cpu_pct_mean"], "reflector, churn"),
            ],
        ),
        (
            "cluster-sim-etcd",
            "etcd: watch events sent",
            "events (start-up) or events/s (churn)",
            &[
                (&["startup", "etcd", "watch_events"], "start-up, total"),
                (
                    &["churn", "etcd", "watch_events_per_s"],
                    "churn, per second",
                ),
            ],
        ),
    ];
    let mut made = Vec::new();
    for (file, title, ylabel, figs) in specs {
        plot(points, dir, file, title, ylabel, figs)?;
        if dir.join(format!("{file}.png")).exists() {
            made.push(format!("{file}.png"));
        }
    }
    Ok(made)
}
