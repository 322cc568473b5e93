//! `cluster-sim` end to end at N = 4, full mesh: four agents on etcd with a BIRD ToR,
//! every phase but the hung node (the mesh's 90 s hold time), plots off. The figures are
//! only checked for being there and plausible; the measuring is the sweep's business.

use std::process::Command;

use serval_integration::tools;

#[test]
fn four_node_mesh_end_to_end() {
    if let Err(e) = tools::require_all(&["ip", "etcd", "bird", "birdc"]) {
        panic!("cluster_sim needs {e}");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("points.json");
    let serval = std::path::Path::new(env!("CARGO_BIN_EXE_cluster-sim")).with_file_name("serval");
    assert!(
        serval.is_file(),
        "{}: build serval first (cargo build -p serval; scripts/test.sh does)",
        serval.display()
    );
    let run = Command::new(env!("CARGO_BIN_EXE_cluster-sim"))
        .args([
            "--nodes",
            "4",
            "--shape",
            "mesh",
            "--claims",
            "10",
            "--idle-secs",
            "2",
            "--churn-secs",
            "3",
            "--no-hang",
            "--no-plots",
            "--out",
        ])
        .arg(&out)
        .arg("--serval")
        .arg(&serval)
        .output()
        .expect("running cluster-sim");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "cluster-sim failed:\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the JSON")).expect("JSON");
    let p = &v["points"][0];
    assert_eq!(
        (p["shape"].as_str(), p["nodes"].as_u64()),
        (Some("mesh"), Some(4))
    );
    let f = |path: &[&str]| {
        path.iter()
            .try_fold(p, |v, k| v.get(*k))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{path:?} missing in {p:#}"))
    };
    assert!(f(&["startup", "all_routes_s"]) > 0.0);
    assert!(f(&["claims", "p50_ms"]) > 0.0);
    assert!(f(&["claims", "p99_ms"]) >= f(&["claims", "p50_ms"]));
    // Killed with graceful restart: the routes stay for the restart time (5 s), no less.
    let gr = f(&["kill_graceful_restart", "withdrawn_s"]);
    assert!((4.5..30.0).contains(&gr), "withdrawn after {gr} s");
    assert!(f(&["idle", "rss_mib_mean"]) > 1.0);
    assert!(f(&["churn", "etcd", "requests_per_s"]) > 0.0);
    assert!(f(&["startup", "etcd", "watch_events"]) > 0.0);
    assert_eq!(
        p["tor_routes"]["have"], p["tor_routes"]["want"],
        "the ToR has every block"
    );
    // Every namespace the run made is gone: none of a `svsim-` owner that has exited.
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix("svsim-")
                        .and_then(|r| r.split('-').next())
                        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
