//! Route installation speed against `ip -batch`, each in fresh namespaces.
//!
//!     cargo test --release -p serval --test dataplane_perf -- --ignored --nocapture
//!
//! Runs `examples/route_install` (serval's route programmer) and `ip -batch` with the
//! same routes (100,000 /32s via a gateway on a veth, proto 83; `SERVAL_PERF_ROUTES`
//! overrides the count) five times each, prints the medians and asserts serval installs
//! at least as fast. Ignored by default: it wants a release build and a quiet machine.

mod dataplane_support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use dataplane_support::{veth, NetNs};

const RUNS: usize = 5;

fn node() -> NetNs {
    let ns = NetNs::new("perf");
    veth(&ns, "eth0", &["192.0.2.1/24"], &ns, "peer0", &[]);
    ns
}

fn example() -> PathBuf {
    // target/<profile>/deps/dataplane_perf-… → target/<profile>/examples/route_install
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/route_install");
    assert!(
        path.is_file(),
        "build the example first (cargo test builds it): {}",
        path.display()
    );
    path
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Seconds the example reported for installing and for removing.
fn serval_run(count: u32) -> (f64, f64) {
    let ns = node();
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(example())
        .args(["--count", &count.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "route_install: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds = |verb: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(verb))
            .unwrap_or_else(|| panic!("no {verb} line: {text}"));
        line.split(": ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    (seconds("install"), seconds("remove"))
}

/// Seconds `ip -batch` took to add, then to delete, the same routes.
fn ip_batch_run(count: u32) -> (f64, f64) {
    let ns = node();
    let dir = std::env::temp_dir();
    let add = dir.join(format!("{}-add.batch", ns.name()));
    let del = dir.join(format!("{}-del.batch", ns.name()));
    let mut add_text = String::new();
    let mut del_text = String::new();
    for i in 0..count {
        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
        add_text.push_str(&format!("route add {addr}/32 via 192.0.2.2 proto 83\n"));
        del_text.push_str(&format!("route del {addr}/32 via 192.0.2.2 proto 83\n"));
    }
    std::fs::write(&add, add_text).unwrap();
    std::fs::write(&del, del_text).unwrap();
    let time = |file: &PathBuf| {
        let start = Instant::now();
        let status = Command::new("ip")
            .args(["-n", ns.name(), "-batch"])
            .arg(file)
            .status()
            .unwrap();
        assert!(status.success());
        start.elapsed().as_secs_f64()
    };
    let result = (time(&add), time(&del));
    std::fs::remove_file(add).unwrap();
    std::fs::remove_file(del).unwrap();
    result
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn route_install_is_at_least_as_fast_as_ip_batch() {
    let count: u32 = std::env::var("SERVAL_PERF_ROUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut serval = (Vec::new(), Vec::new());
    let mut ip = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (i, r) = serval_run(count);
        serval.0.push(i);
        serval.1.push(r);
        let (i, r) = ip_batch_run(count);
        ip.0.push(i);
        ip.1.push(r);
    }
    let rate = |s: f64| f64::from(count) / s;
    let (si, sr, ii, ir) = (
        median(serval.0),
        median(serval.1),
        median(ip.0),
        median(ip.1),
    );
    println!("{count} routes, median of {RUNS} runs each:");
    println!(
        "  serval   install {si:.3} s ({:.0}/s)  remove {sr:.3} s ({:.0}/s)",
        rate(si),
        rate(sr)
    );
    println!(
        "  ip -batch install {ii:.3} s ({:.0}/s)  remove {ir:.3} s ({:.0}/s)",
        rate(ii),
        rate(ir)
    );
    println!(
        "  ratio (serval rate / ip -batch rate): install {:.2}x  remove {:.2}x",
        ii / si,
        ir / sr
    );
    assert!(
        ii / si >= 1.0,
        "serval installs slower than ip -batch: {si:.3} s vs {ii:.3} s"
    );
}
