//! `serval lab` driven as a user drives it: up in a temporary directory, down on drop
//! (which must succeed and leave no namespace behind), agent logs for failure messages.
//! The lab's namespaces have fixed names (`svlab-*`): one lab at a time.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn serval() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_serval"))
}

pub fn cni_plugin_built() {
    let cni = serval().with_file_name("serval-cni");
    assert!(
        cni.exists(),
        "the CNI plugin {} is missing: run `cargo build --bins` first",
        cni.display()
    );
}

pub struct Lab {
    dir: tempfile::TempDir,
    down: bool,
}

impl Lab {
    /// `serval lab up --dir DIR ARGS`, which must succeed; returns the lab and what
    /// `lab up` printed.
    pub fn up(args: &[&str]) -> (Lab, String) {
        cni_plugin_built();
        let others = lab_namespaces();
        assert!(
            others.is_empty(),
            "another serval lab is up (its namespaces: {others:?}); the lab's names are fixed"
        );
        let dir = tempfile::Builder::new()
            .prefix("serval-lab-test")
            .tempdir()
            .expect("temp dir");
        let lab = Lab { dir, down: false };
        let out = Command::new(serval())
            .args(["lab", "up", "--dir"])
            .arg(lab.path())
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

    /// A lab started in `dir/lab` some other way (a `serval lab up` the test runs
    /// itself): it is taken down on drop like any other.
    pub fn adopt(dir: tempfile::TempDir) -> Lab {
        Lab { dir, down: false }
    }

    /// The temporary directory the lab lives in (the lab itself is `path()`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lab's directory, as given to `serval lab up --dir`.
    pub fn path(&self) -> PathBuf {
        self.dir().join("lab")
    }

    /// `serval lab down`, which must succeed.
    pub fn down(&mut self) {
        self.down = true;
        let out = Command::new(serval())
            .args(["lab", "down", "--dir"])
            .arg(self.path())
            .output()
            .expect("serval lab down");
        assert!(
            out.status.success(),
            "lab down: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `serval node status --json` of one node.
    pub fn status(&self, node: &str) -> serde_json::Value {
        let sock = self.path().join(node).join("node.sock");
        let out = Command::new(serval())
            .args(["node", "status", "--json", "--socket"])
            .arg(&sock)
            .output()
            .expect("serval node status");
        assert!(
            out.status.success(),
            "{node} status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{node} status is not JSON: {e}"))
    }

    /// The last lines of every log in the lab, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for entry in walk(&self.path()) {
            if entry.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&entry).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                s.push_str(&format!("===== {} =====\n{tail}\n", entry.display()));
            }
        }
        s
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
        if self.down {
            return;
        }
        let out = Command::new(serval())
            .args(["lab", "down", "--dir"])
            .arg(self.path())
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

pub fn lab_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("svlab-"))
        .map(str::to_string)
        .collect()
}

/// serval's routes (protocol 83) in `netns`, as `ip -j route` prints them.
pub fn routes(netns: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-j", "route", "show", "proto", "83"])
        .output()
        .expect("ip route");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::json!([]))
}
