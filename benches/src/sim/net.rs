//! The simulated cluster's network: `svsim-<pid>-…` namespaces on one bridge.
//!
//! Every namespace the harness makes is named `svsim-<pid>-<what>`, the pid of the harness,
//! so a later run removes what a crashed one left (owner gone) and leaves alone a run
//! still going. Dropping a [`SimNs`] kills what runs inside and deletes it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serval_integration::NsHandle;

pub const PREFIX: &str = "svsim-";

/// Runs `ip ARGS…` to completion, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {args:?} (Debian package iproute2)"))?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS -batch -` with `lines` on standard input: many link and address changes in
/// one process.
pub fn ip_batch(ns: &str, lines: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch (Debian package iproute2)")?;
    child
        .stdin
        .take()
        .context("ip -batch stdin")?
        .write_all(lines.as_bytes())
        .context("writing to ip -batch")?;
    let out = child.wait_with_output().context("waiting for ip -batch")?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} -batch: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A namespace of this run, deleted (with everything inside killed) on drop.
#[derive(Debug)]
pub struct SimNs {
    name: String,
}

impl SimNs {
    /// `svsim-<pid>-<what>`, with `lo` up.
    pub fn new(what: &str) -> anyhow::Result<SimNs> {
        let name = format!("{PREFIX}{}-{what}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = SimNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn handle(&self) -> NsHandle {
        NsHandle::named(&self.name)
    }
}

impl Drop for SimNs {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.name) {
            eprintln!("cluster-sim: removing {}: {e}", self.name);
        }
    }
}

/// Kills what runs in `name` and deletes it. The harness itself is left alone: its main
/// thread lives in etcd's namespace.
fn remove(name: &str) -> anyhow::Result<()> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = ip(&["netns", "pids", name])?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|p| *p != me)
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["netns", "del", name]).map(drop)
}

/// Removes the `svsim-` namespaces of runs whose process is gone.
pub fn sweep_stale() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Ok(removed);
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove(&name)?;
        removed.push(name);
    }
    Ok(removed)
}
