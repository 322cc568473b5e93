//! Node agents in namespaces for the measuring programs (`benches/src/bin/agent-*.rs`):
//! starting `serval node run` with its files in one directory, asking its speaker, and
//! reading its memory. Included by path, like the other support files the benches share;
//! the tests have `mod.rs`, which finds the binary through Cargo instead.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serval_integration::{Netns, NsChild};

/// The `serval` binary: `--serval`, else the one built next to this program.
pub fn serval_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()
            .context("where this program is")?
            .with_file_name("serval"),
    };
    if !path.is_file() {
        bail!(
            "{}: no serval binary (cargo build --release -p serval, or --serval PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `serval ARGS` on the host and returns its standard output.
pub fn serval(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env_remove("SERVAL_DATASTORE")
        .output()
        .with_context(|| format!("running {} {args:?}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "serval {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One `serval node run` inside `ns`, its sockets and files under `dir`.
pub struct LabAgent {
    pub name: String,
    pub dir: PathBuf,
    pub child: NsChild,
}

/// `serval node run` for node `name` with its sockets and files in `dir`.
pub fn agent_argv(bin: &Path, name: &str, store: &str, dir: &Path, log_level: &str) -> Vec<String> {
    let d = |f: &str| dir.join(f).display().to_string();
    let mut argv = vec![bin.display().to_string()];
    argv.extend(["node", "run", "--node", name, "--datastore", store].map(str::to_owned));
    for (flag, file) in [
        ("--state-dir", "state"),
        ("--socket", "node.sock"),
        ("--bgp-socket", "bgp.sock"),
        ("--ready-file", "ready"),
        ("--mtu-file", "mtu"),
        ("--nodename-file", "nodename"),
    ] {
        argv.push(flag.to_owned());
        argv.push(d(file));
    }
    argv.push("--log-level".to_owned());
    argv.push(log_level.to_owned());
    argv
}

impl LabAgent {
    pub fn start(
        bin: &Path,
        ns: &Netns,
        name: &str,
        store: &str,
        dir: &Path,
        log_level: &str,
    ) -> anyhow::Result<LabAgent> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let argv = agent_argv(bin, name, store, dir, log_level);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = ns
            .spawn(&argv, Some(&dir.join("agent.log")))
            .map_err(|e| anyhow!("starting the agent {name}: {e}"))?;
        Ok(LabAgent {
            name: name.to_owned(),
            dir: dir.to_owned(),
            child,
        })
    }

    /// The embedded speaker's peers (`serval bgp status --json`).
    pub fn peers(&self, bin: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
        let sock = self.dir.join("bgp.sock").display().to_string();
        let text = serval(bin, &["bgp", "status", "--json", "--socket", &sock])?;
        let v: serde_json::Value = serde_json::from_str(&text).context("bgp status JSON")?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Waits until `want` peers are Established, failing with the agent's log tail.
    pub fn wait_established(
        &mut self,
        bin: &Path,
        want: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{}: the agent exited ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            match self.peers(bin) {
                Ok(p) => {
                    let up = p.iter().filter(|p| p["state"] == "Established").count();
                    if up >= want {
                        return Ok(t0.elapsed());
                    }
                    last = format!("{up} of {} Established", p.len());
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{}: {want} peers not Established within {timeout:?} ({last}):\n{}",
            self.name,
            self.log_tail()
        )
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// (VmRSS, VmHWM) of the agent's process, in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        memory_kib(self.child.pid())
    }
}

/// (VmRSS, VmHWM) of process `pid`, in KiB, from `/proc/PID/status`.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The machine's load averages (1, 5, 15 min) as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
