//! What the hostile tests share: acting as an unprivileged local user, one agent in a
//! namespace, file modes, sockets opened inside a namespace, and the process limits.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use serval_integration::{tools, Error, Netns, Result, TestDir};

use crate::node_support::Node;

/// The user the tests act as: `nobody`.
pub const NOBODY: u32 = 65534;

/// Runs `argv` as uid/gid 65534 with no supplementary groups (util-linux's `setpriv`,
/// else `runuser -u nobody`); fails naming the tool when neither is installed.
pub fn as_nobody(argv: &[&str]) -> Result<Output> {
    let mut cmd = if tools::require("setpriv").is_ok() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ]);
        c
    } else if tools::require("runuser").is_ok() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]);
        c
    } else {
        return Err(Error::MissingTool {
            tool: "setpriv (or runuser)".into(),
            package: "util-linux".into(),
        });
    };
    cmd.args(argv);
    cmd.output()
        .map_err(|e| Error::InvalidSpec(format!("running {argv:?} as nobody: {e}")))
}

/// Fails unless `argv` run as nobody fails; returns what it said.
pub fn refused_to_nobody(argv: &[&str], what: &str) -> Result<String> {
    let out = as_nobody(argv)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Err(Error::InvalidSpec(format!(
            "an unprivileged user could {what}: `{}` succeeded: {said}",
            argv.join(" ")
        )));
    }
    Ok(said)
}

/// The permission bits of `path` (not following a symbolic link).
pub fn mode(path: &Path) -> Result<u32> {
    std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| Error::InvalidSpec(format!("{}: {e}", path.display())))
}

/// Fails unless `path` has mode `want`.
pub fn expect_mode(path: &Path, want: u32) -> Result<()> {
    let got = mode(path)?;
    if got != want {
        return Err(Error::InvalidSpec(format!(
            "{} has mode {got:04o}, expected {want:04o}",
            path.display()
        )));
    }
    Ok(())
}

/// Makes `dir` mode 0755, as a DaemonSet's `hostPath: DirectoryOrCreate` leaves
/// `/var/lib/serval` and `/run/serval`: what a local user may traverse.
pub fn open_dir(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::InvalidSpec(format!("chmod {}: {e}", dir.display())))
}

/// One node with 192.0.2.11/24 on `eth0`, its agent not yet started.
pub fn one_node(test: &TestDir, name: &str) -> Result<Node> {
    tools::require_all(&["ip", "curl"])?;
    tools::require_root()?;
    let n = Node::new(name, test)?;
    // The other end in the node's (otherwise unused) pod namespace: a link that is up.
    n.ns.veth("eth0", &n.pod, "uplink")?;
    n.ns.ip(&["addr", "add", "192.0.2.11/24", "dev", "eth0"])?;
    open_dir(&n.dir)?;
    Ok(n)
}

/// Runs `f` on a thread that has entered `ns`'s network namespace: sockets it opens
/// live in that namespace (and stay there when handed back).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> std::io::Result<T> + Send) -> Result<T> {
    ns.in_thread(f)?
        .map_err(|e| Error::InvalidSpec(format!("in namespace {}: {e}", ns.name())))
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit);
/// fails when the hard limit is lower.
pub fn raise_fd_limit(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(Error::InvalidSpec(format!(
            "getrlimit: {}",
            std::io::Error::last_os_error()
        )));
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < want {
        // Root may raise the hard limit too.
        lim.rlim_max = want;
    }
    lim.rlim_cur = want;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(Error::InvalidSpec(format!(
            "the open-file limit cannot be raised to {want} (ulimit -n): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(want)
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::InvalidSpec(format!("/proc/{pid}/status: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::InvalidSpec(format!("no VmRSS for {pid}")))
}
