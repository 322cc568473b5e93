//! `serval lab` end to end, as the README runs it: nodes in namespaces on two subnets, one
//! agent each on an embedded store, a real BIRD or FRR top-of-rack router, pods wired by
//! the CNI plugin. VXLAN across subnets on this machine's kernel (no ipip); IP-in-IP
//! inside the project's User-Mode Linux runner.
//!
//! Needs root, bird2, frr, iproute2, nftables and the CNI plugin built beside serval
//! (`cargo build --bins`). The lab's namespaces have fixed names, so these tests run one
//! at a time.

use serval_integration::uml::Uml;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static ONE_LAB: Mutex<()> = Mutex::new(());

fn serval() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serval"))
}

fn cni_plugin_built() {
    let cni = serval().with_file_name("serval-cni");
    assert!(
        cni.exists(),
        "the CNI plugin {} is missing: run `cargo build --bins` first",
        cni.display()
    );
}

struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn up(args: &[&str]) -> (Lab, String) {
        cni_plugin_built();
        let dir = tempfile::Builder::new()
            .prefix("serval-lab-test")
            .tempdir()
            .expect("temp dir");
        let lab = Lab { dir };
        let labdir = lab.dir().join("lab");
        let out = Command::new(serval())
            .args(["lab", "up", "--dir"])
            .arg(&labdir)
            .args(args)
            .output()
            .expect("running serval lab up");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            let logs = lab.logs();
            panic!("serval lab up {args:?} failed:\n{text}\n{logs}");
        }
        (lab, text)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        let lab = self.dir().join("lab");
        for entry in walk(&lab) {
            if entry.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&entry).unwrap_or_default();
                let tail: String = text
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                s.push_str(&format!("===== {} =====\n{tail}\n", entry.display()));
            }
        }
        s
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new(serval())
            .args(["lab", "down", "--dir"])
            .arg(self.dir().join("lab"))
            .output();
        if std::thread::panicking() {
            return;
        }
        let out = out.expect("serval lab down");
        assert!(
            out.status.success(),
            "lab down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left = lab_namespaces();
        assert!(left.is_empty(), "lab down left namespaces: {left:?}");
    }
}

fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("svlab-"))
        .map(str::to_string)
        .collect()
}

fn routes(netns: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "route", "show", "proto", "83"])
        .output()
        .expect("ip route");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]))
}

/// The devices serval's routes in `netns` use for destinations other than blackholes.
fn route_devices(netns: &str) -> Vec<(String, String)> {
    routes(netns)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] != "blackhole")
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or_default().to_string(),
                r["dev"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn check_report(text: &str) {
    assert!(text.contains("all checks passed"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("same subnet, direct"), "{text}");
}

#[test]
fn lab_with_bird_tor_crosses_subnets_over_vxlan() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, text) = Lab::up(&[]);
    check_report(&text);
    assert!(
        text.contains("no IP-in-IP (ipip) support"),
        "the lab must say why it uses VXLAN: {text}"
    );
    assert!(text.contains("across subnets, VXLAN"), "{text}");
    assert!(
        text.contains("masqueraded"),
        "egress through natOutgoing: {text}"
    );
    // node1 and node2 share 10.10.1.0/24: direct routes on eth0, no tunnel device;
    // node3 is on 10.10.2.0/24: through the VXLAN device.
    let devs = route_devices("svlab-node1");
    assert!(
        devs.iter().any(|(_, d)| d == "eth0"),
        "node1 has no direct route: {devs:?}"
    );
    assert!(
        devs.iter().any(|(_, d)| d.starts_with("vxlan")),
        "node1 has no VXLAN route: {devs:?}"
    );
    // The ToR learned every node's blocks with the node as next hop (one of the paths
    // BIRD holds for the block), and installed a route for each in its kernel.
    let ctl = lab.dir().join("lab/tor/bird.ctl");
    let tor_kernel = Command::new("ip")
        .args([
            "-n",
            "svlab-tor",
            "-j",
            "route",
            "show",
            "root",
            "10.244.0.0/16",
        ])
        .output()
        .expect("ip route on the ToR");
    let tor_kernel: serde_json::Value = serde_json::from_slice(&tor_kernel.stdout).expect("json");
    for (node, addr) in [
        ("svlab-node1", "10.10.1.11"),
        ("svlab-node2", "10.10.1.12"),
        ("svlab-node3", "10.10.2.11"),
    ] {
        let blocks: Vec<String> = routes(node)
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["type"] == "blackhole")
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect();
        assert!(!blocks.is_empty(), "{node} has no block of its own");
        for block in blocks {
            let shown = Command::new("ip")
                .args(["netns", "exec", "svlab-tor", "birdc", "-s"])
                .arg(&ctl)
                .args(["show", "route", &block])
                .output()
                .expect("birdc");
            let shown = String::from_utf8_lossy(&shown.stdout);
            assert!(
                shown.contains(&format!("via {addr} ")),
                "the ToR has no path for {node}'s block {block} via {addr}:\n{shown}"
            );
            assert!(
                tor_kernel
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["dst"] == block.as_str()),
                "the ToR's kernel has no route for {block}: {tor_kernel}"
            );
        }
    }
    // `lab status` prints the same report again.
    let status = Command::new(serval())
        .args(["lab", "status", "--dir"])
        .arg(lab.dir().join("lab"))
        .output()
        .expect("lab status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    check_report(&String::from_utf8_lossy(&status.stdout));
}

#[test]
fn lab_with_frr_tor() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (_lab, text) = Lab::up(&["--tor", "frr", "--pods", "1"]);
    check_report(&text);
    assert!(text.contains("across subnets, VXLAN"), "{text}");
}

/// Inside a kernel with ipip: the same lab with IP-in-IP across subnets. The guest's
/// nftables lacks the ip family, so masquerading is left to the host-kernel test.
#[test]
fn lab_crosses_subnets_over_ipip_inside_uml() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    cni_plugin_built();
    let dir = tempfile::Builder::new()
        .prefix("serval-lab-uml")
        .tempdir()
        .expect("temp dir");
    let labdir = dir.path().join("lab");
    let labdir = labdir.to_string_lossy();
    let exe = serval();
    let exe = exe.to_string_lossy();
    let script = format!(
        "{exe} lab up --dir {labdir} --encap ipip --no-nat --pods 1; rc=$?; {exe} lab down --dir {labdir} >/dev/null; exit $rc"
    );
    let run = Uml::new()
        .unwrap_or_else(|e| panic!("{e}"))
        .mem("1G")
        .timeout(std::time::Duration::from_secs(240))
        .run(&["sh", "-c", &script])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        run.success(),
        "lab inside UML (status {}):\n{}",
        run.status,
        run.output
    );
    check_report(&run.output);
    assert!(
        run.output.contains("across subnets, IP-in-IP"),
        "{}",
        run.output
    );
}
