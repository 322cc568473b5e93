//! `serval ipam check --repair --live-handles` against what must never be freed.
//!
//! A list of live handles is a picture of one moment. The repair frees the addresses of
//! handles missing from it, but never:
//! - a node's tunnel address (the agent's own handles, not a pod's);
//! - an address given after the list was taken (a pod started meanwhile), judged by
//!   the time recorded with each allocation, less the clock skew allowed;
//!
//! and it holds the CNI plugin's node lock while it decides and writes, so a plugin
//! holding the lock makes it wait, then fail with an error that names the lock, having
//! changed nothing.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ipam::check::is_tunnel_handle;
use ipam::model::HandleId;

use cli_support::{json, ok, serval, TempDir};

fn assign(store: &Path, handle: &str) -> String {
    ok(
        store,
        &["ipam", "assign", "--node", "n1", "--handle", handle],
    )
    .trim()
    .to_owned()
}

/// The addresses `handle` holds, read by releasing them (the last step of a test).
fn held_by(store: &Path, handle: &str) -> Vec<String> {
    let rel = json(&ok(
        store,
        &["ipam", "release", "--handle", handle, "--json"],
    ));
    rel["released"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The leaked handles a check report names.
fn leaks(report: &serde_json::Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["problem"] == "leak")
                .filter_map(|p| p["handle"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The store with a pool; the live list is written after `old-leak` and before
/// `new-pod` were given their addresses, a second apart (allocation times are seconds).
struct Scene {
    _dir: TempDir,
    store: PathBuf,
    live: PathBuf,
    lock: PathBuf,
}

fn scene(tag: &str) -> Scene {
    let dir = TempDir::new(tag);
    let store = dir.0.join("ipam.json");
    let live = dir.0.join("live-handles");
    let lock = dir.0.join("run").join("ipam.lock");
    ok(&store, &["pool", "add", "10.70.0.0/16", "--name", "pods"]);
    assign(&store, "old-leak");
    assign(&store, "pod-a");
    for h in ["ipip-tunnel-addr-n1", "vxlan-tunnel-addr-n1"] {
        assign(&store, h);
    }
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&live, "pod-a\n").expect("live handles");
    std::thread::sleep(Duration::from_millis(1100));
    assign(&store, "new-pod");
    Scene {
        _dir: dir,
        store,
        live,
        lock,
    }
}

impl Scene {
    fn repair(&self, extra: &[&str]) -> Output {
        let live = self.live.display().to_string();
        let lock = self.lock.display().to_string();
        let mut args = vec![
            "ipam",
            "check",
            "--repair",
            "--live-handles",
            &live,
            "--ipam-lock-file",
            &lock,
            "--json",
        ];
        args.extend_from_slice(extra);
        serval(Some(&self.store), &args)
    }
}

#[test]
fn repair_spares_tunnel_addresses_and_allocations_newer_than_the_live_list() {
    let s = scene("spares");
    // With the default clock skew (a minute) every allocation here is too recent to judge.
    let out = s.repair(&[]);
    assert!(out.status.success(), "{out:?}");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(leaks(&report), Vec::<String>::new(), "{report:#}");

    // With no skew allowed: only the allocation older than the list is a leak.
    let out = s.repair(&["--max-clock-skew", "0"]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{report:#} {out:?}");
    assert_eq!(leaks(&report), vec!["old-leak".to_owned()], "{report:#}");

    // What the repair left: the tunnel addresses, the new pod, the live pod.
    for h in [
        "ipip-tunnel-addr-n1",
        "vxlan-tunnel-addr-n1",
        "new-pod",
        "pod-a",
    ] {
        assert_eq!(held_by(&s.store, h).len(), 1, "{h} lost its address");
    }
    assert_eq!(held_by(&s.store, "old-leak"), Vec::<String>::new());
    let check = json(&ok(&s.store, &["ipam", "check", "--json"]));
    assert_eq!(check["problems"], serde_json::json!([]), "{check:#}");
}

#[test]
fn repair_waits_for_the_cni_lock_and_fails_naming_it() {
    let s = scene("lock");
    std::fs::create_dir_all(s.lock.parent().expect("lock dir")).expect("lock dir");
    let held = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&s.lock)
        .expect("lock file");
    held.lock().expect("hold the CNI lock");

    let t0 = Instant::now();
    let out = s.repair(&["--max-clock-skew", "0", "--lock-timeout", "2"]);
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the repair ran under a held lock: {out:?}"
    );
    assert!(
        err.contains("IPAM lock stayed busy")
            && err.contains("ipam.lock")
            && err.contains("nothing was repaired"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "the repair should wait its 2 s bound, took {took:?}"
    );

    // Released: the repair runs.
    drop(held);
    let out = s.repair(&["--max-clock-skew", "0"]);
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{report:#}");
    assert_eq!(leaks(&report), vec!["old-leak".to_owned()]);
    assert_eq!(held_by(&s.store, "old-leak"), Vec::<String>::new());
    assert_eq!(held_by(&s.store, "new-pod").len(), 1);
}

/// The agent's tunnel handles are the ones the repair recognises.
#[test]
fn the_agents_tunnel_handles_are_recognised() {
    use serval::node::register::TunnelKind;
    for k in TunnelKind::ALL {
        let h = HandleId::new(k.handle("node-1")).expect("handle");
        assert!(
            is_tunnel_handle(&h),
            "{h} is not recognised as a tunnel handle"
        );
    }
    for pod in ["k8s-pod-network.0123abcd", "ipip-tunnel-addr", "pod-a"] {
        let h = HandleId::new(pod).expect("handle");
        assert!(!is_tunnel_handle(&h), "{h}");
    }
}
