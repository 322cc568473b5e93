//! Network namespaces that clean up after themselves.
//!
//! A [`Netns`] is named `sv-<pid>-<n>`: the pid of the test process that owns it, so a
//! later run can tell a crashed run's leftovers (owner gone) from a namespace a test
//! binary running in parallel still uses (owner alive). Dropping it — also while a test
//! panics — kills every process inside and deletes it.
//!
//! Links are veth pairs created directly inside their namespaces, so interface names
//! only need to be unique per namespace and parallel tests never collide on the host.
//! Links get no automatic IPv6 link-local address: every address on a test link is one
//! the test chose, and next hops stay deterministic (BIRD adds a link-local next hop
//! when it has one, and FRR's bgpd without zebra rejects such a next hop as it cannot
//! tie it to an interface). A namespace that forwards IPv6 needs one to solicit
//! neighbours from; [`crate::topology`] gives its routers fixed ones.

use crate::error::{Error, Result};
use crate::tools;
use ipnet::IpNet;
use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Every namespace and scratch directory the test bed creates starts with this.
pub const PREFIX: &str = "sv-";

const NETNS_DIR: &str = "/run/netns";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A named network namespace owned by this process, removed on drop.
#[derive(Debug)]
pub struct Netns {
    handle: NsHandle,
}

/// A cheap, clonable way to run things in a namespace. It does not own the namespace:
/// daemons keep one so they can be queried while the test keeps the [`Netns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsHandle {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up. The first call in a process also sweeps
    /// namespaces left behind by test processes that no longer exist.
    pub fn new() -> Result<Netns> {
        tools::require_root()?;
        tools::require("ip")?;
        SWEEP.call_once(|| {
            if let Err(err) = sweep_stale() {
                eprintln!("serval-integration: sweeping stale namespaces failed: {err}");
            }
        });
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop removes it, also if bringing lo up fails.
        let ns = Netns {
            handle: NsHandle { name },
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.handle.name
    }

    pub fn handle(&self) -> NsHandle {
        self.handle.clone()
    }

    /// Runs `argv` inside; see [`NsHandle::exec`].
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        self.handle.exec(argv)
    }

    /// Starts a long-running child inside; see [`NsHandle::spawn`].
    pub fn spawn(&self, argv: &[&str], log: Option<&Path>) -> Result<NsChild> {
        self.handle.spawn(argv, log)
    }

    /// Runs `f` on a thread inside; see [`NsHandle::in_thread`].
    pub fn in_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        self.handle.in_thread(f)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        self.handle.ip(args)
    }

    /// A veth pair: `ifname` here, `peer_ifname` in `peer`, both up. Works with a
    /// namespace holding a bridge too; see [`Bridge::connect`].
    pub fn veth(&self, ifname: &str, peer: &Netns, peer_ifname: &str) -> Result<()> {
        self.ip(&[
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            peer.name(),
        ])?;
        for (ns, dev) in [(self, ifname), (peer, peer_ifname)] {
            ns.ip(&["link", "set", dev, "addrgenmode", "none"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// Adds an address to `ifname`. IPv6 addresses get `nodad` so they are usable at
    /// once instead of after duplicate address detection.
    pub fn add_addr(&self, ifname: &str, addr: IpNet) -> Result<()> {
        let addr = addr.to_string();
        let mut args = vec!["addr", "add", addr.as_str(), "dev", ifname];
        if addr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// A route to `dest` through the gateway `via`.
    pub fn add_route(&self, dest: IpNet, via: IpAddr) -> Result<()> {
        let family = if dest.addr().is_ipv6() { "-6" } else { "-4" };
        self.ip(&[
            family,
            "route",
            "add",
            &dest.to_string(),
            "via",
            &via.to_string(),
        ])
        .map(drop)
    }

    /// A default route through `via`, in `via`'s family.
    pub fn add_default_route(&self, via: IpAddr) -> Result<()> {
        let family = if via.is_ipv6() { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", "default", "via", &via.to_string()])
            .map(drop)
    }

    /// Writes a sysctl inside the namespace (net.* keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        tools::require("sysctl")?;
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Makes this namespace a router for IPv4 and IPv6.
    pub fn enable_forwarding(&self) -> Result<()> {
        self.sysctl("net.ipv4.ip_forward", "1")?;
        self.sysctl("net.ipv6.conf.all.forwarding", "1")
    }

    /// Pids of every process whose network namespace this is.
    pub fn pids(&self) -> Result<Vec<u32>> {
        pids_in(self.name())
    }

    /// A kernel TCP counter of this namespace from /proc/net/netstat (`TcpExt:`
    /// names such as `TCPMD5Failure`): evidence of what the kernel dropped.
    pub fn tcp_ext_counter(&self, counter: &str) -> Result<u64> {
        let text = self.exec(&["cat", "/proc/net/netstat"])?;
        parse_netstat(&text, "TcpExt:", counter).ok_or_else(|| Error::Parse {
            daemon: "kernel",
            what: format!("TcpExt counter {counter}"),
            detail: "not in /proc/net/netstat".into(),
            output: text,
        })
    }
}

/// /proc/net/netstat pairs a header line of names with a line of values per group.
fn parse_netstat(text: &str, group: &str, counter: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(group));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    names
        .zip(values)
        .find(|(n, _)| *n == counter)
        .and_then(|(_, v)| v.parse().ok())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = remove(self.name()) {
            eprintln!(
                "serval-integration: removing namespace {}: {err}",
                self.name()
            );
        }
    }
}

impl NsHandle {
    /// A handle on a namespace made elsewhere (`ip netns add NAME`) and owned by whoever
    /// made it, such as the `svlab-` namespaces of `serval lab`.
    pub fn named(name: &str) -> NsHandle {
        NsHandle {
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace (through `ip netns exec`,
    /// which also gives it this namespace's view of /sys).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `argv` inside to completion and returns its stdout. On failure the error
    /// names the full command, its exit status, stdout and stderr.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = split(argv)?;
        let mut cmd = self.command(program);
        cmd.args(args);
        run(&mut cmd)
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        run(&mut cmd)
    }

    /// Runs `f` to completion on a new thread that has entered this namespace, for what
    /// a child process cannot do: sockets and netlink handles `f` opens live in the
    /// namespace, also once handed back, and an async body can run on a runtime `f`
    /// builds. `setns(2)` moves only that thread, never the test process. A panic in
    /// `f` is the caller's panic.
    pub fn in_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| -> Result<T> {
                let file = File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
                // SAFETY: setns on a namespace file descriptor this thread holds open; it
                // changes the network namespace of this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let err = std::io::Error::last_os_error();
                    return Err(Error::io("entering the network namespace", &path, err));
                }
                Ok(f())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts `argv` inside as a long-running child in its own process group, with
    /// stdout and stderr appended to `log` (or discarded). The child is killed when the
    /// returned handle is dropped, and in any case when the namespace is.
    pub fn spawn(&self, argv: &[&str], log: Option<&Path>) -> Result<NsChild> {
        let (program, args) = split(argv)?;
        let mut cmd = self.command(program);
        cmd.args(args);
        NsChild::spawn(cmd, log)
    }
}

/// Starts `argv` in the test process's own network namespace, with the same handle (and
/// the same kill on drop) as [`NsHandle::spawn`]: for servers on loopback.
pub fn spawn_here(argv: &[&str], log: Option<&Path>) -> Result<NsChild> {
    let (program, args) = split(argv)?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    NsChild::spawn(cmd, log)
}

impl NsChild {
    fn spawn(mut cmd: Command, log: Option<&Path>) -> Result<NsChild> {
        cmd.stdin(Stdio::null()).process_group(0);
        match log {
            Some(path) => {
                let out = append(path)?;
                let err = out
                    .try_clone()
                    .map_err(|e| Error::io("duplicating the handle of", path, e))?;
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        Ok(NsChild { child, command })
    }
}

/// A long-running process started inside a namespace. `ip netns exec` execs the program,
/// so the pid is the program's own, and the program leads its own process group.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
    command: String,
}

impl NsChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// The exit status if the process has ended (and reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::io("waiting for", &self.command, e))
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace` for it; whatever is
    /// left of its process group is then killed.
    pub fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.try_wait()? {
            self.kill_group();
            return Ok(Some(status));
        }
        signal(self.pid() as i32, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.kill_group();
        self.reap();
        Ok(status)
    }

    /// Kills the whole process group at once (SIGKILL): the process gets no chance to
    /// say goodbye, as in a crash.
    pub fn kill(&mut self) {
        self.kill_group();
        self.reap();
    }

    /// SIGKILL to the process group, then waits (up to 5 s) until none of its processes
    /// runs any more: a daemon's forked helpers (OpenBGPD's session engine, FRR's
    /// watchers) die a moment after the signal, and until then they hold its sockets, so
    /// a restart right away would find port 179 taken.
    fn kill_group(&self) {
        let pgid = self.pid() as i32;
        signal(-pgid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn reap(&mut self) {
        // SIGKILL cannot be ignored, so this wait is short.
        let _ = self.child.wait();
    }
}

/// Whether a process of group `pgid` still runs (zombies, whose sockets are closed, do
/// not count).
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the command name in parentheses: state, ppid, pgrp, …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An L2 segment: a namespace holding bridge `br0`, with a port per connected host.
#[derive(Debug)]
pub struct Bridge {
    ns: Netns,
    ports: u32,
}

impl Bridge {
    pub fn new() -> Result<Bridge> {
        let ns = Netns::new()?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Bridge { ns, ports: 0 })
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Connects `host` to the segment through a veth named `ifname` on the host side.
    pub fn connect(&mut self, host: &Netns, ifname: &str) -> Result<()> {
        let port = format!("p{}", self.ports);
        self.ports += 1;
        host.veth(ifname, &self.ns, &port)?;
        self.ns
            .ip(&["link", "set", &port, "master", "br0"])
            .map(drop)
    }
}

/// Removes `sv-` namespaces whose owning process no longer exists, killing what still
/// runs inside them. Namespaces of live processes (parallel test binaries) are left
/// alone. Returns the names removed.
pub fn sweep_stale() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", NETNS_DIR, e)),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = owner_pid(&name) else {
            continue;
        };
        if process_exists(owner) {
            continue;
        }
        remove(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

/// The pid encoded in a test bed name (`sv-<pid>-…`), if it is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

pub(crate) fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Names of the namespaces that currently exist (what `ip netns list` shows).
pub fn list() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn pids_in(name: &str) -> Result<Vec<u32>> {
    let out = run(Command::new("ip").args(["netns", "pids", name]))?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills everything inside `name`, waits for it to be gone, deletes the namespace.
fn remove(name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_in(name)?;
        if pids.is_empty() {
            break;
        }
        for pid in &pids {
            signal(*pid as i32, libc::SIGKILL);
        }
        if Instant::now() >= deadline {
            eprintln!("serval-integration: processes {pids:?} in {name} survived SIGKILL");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run(Command::new("ip").args(["netns", "del", name])).map(drop)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn split<'a>(argv: &'a [&'a str]) -> Result<(&'a str, &'a [&'a str])> {
    argv.split_first()
        .map(|(p, a)| (*p, a))
        .ok_or_else(|| Error::InvalidSpec("empty command line".into()))
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

/// The command line as a shell would show it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion, returning stdout or an error naming the command.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let command = describe(cmd);
    let output: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(Error::Command {
            command,
            status: output.status.to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_test_bed_names_only() {
        assert_eq!(owner_pid("sv-1234-0"), Some(1234));
        assert_eq!(owner_pid("sv-99-12"), Some(99));
        assert_eq!(owner_pid("sv-x-1"), None);
        assert_eq!(owner_pid("other-1234-0"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn netstat_counters_pair_names_with_values() {
        let text =
            "TcpExt: SyncookiesSent TCPMD5Failure\nTcpExt: 0 7\nIpExt: InNoRoutes\nIpExt: 3\n";
        assert_eq!(parse_netstat(text, "TcpExt:", "TCPMD5Failure"), Some(7));
        assert_eq!(parse_netstat(text, "IpExt:", "InNoRoutes"), Some(3));
        assert_eq!(parse_netstat(text, "TcpExt:", "Nope"), None);
    }

    /// The namespace of the calling thread, as an inode.
    fn current_netns() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn in_thread_runs_inside_and_leaves_the_caller_outside() {
        let ns = Netns::new().expect("a namespace (needs root and iproute2)");
        let here = current_netns();
        let inside = ns.in_thread(current_netns).unwrap();
        let want = std::fs::metadata(Path::new(NETNS_DIR).join(ns.name()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        assert_eq!(inside, want);
        assert_ne!(inside, here);
        assert_eq!(current_netns(), here);
    }

    #[test]
    fn in_thread_passes_a_panic_on() {
        let ns = Netns::new().expect("a namespace (needs root and iproute2)");
        let caught = std::panic::catch_unwind(|| ns.in_thread(|| panic!("inside")));
        let panic = caught.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"inside"));
    }

    #[test]
    fn in_thread_names_a_namespace_that_is_gone() {
        let err = NsHandle::named("sv-0-gone").in_thread(|| ()).unwrap_err();
        assert!(err.to_string().contains("/run/netns/sv-0-gone"), "{err}");
    }

    #[test]
    fn own_process_exists() {
        assert!(process_exists(std::process::id()));
    }

    #[test]
    fn failed_command_error_names_the_command() {
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c echo oops >&2; exit 3"), "{err}");
        assert!(err.contains("oops"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    }
}
