//! `rr-race`: one route reflector and 1,000 clients; serval (`serval bgp` and the node
//! agent as a reflector node), BIRD, FRR and GoBGP side by side.
//!
//! ```text
//!   svrr-…-clients                                 svrr-…-rr
//!   198.18.0.1 … 198.18.3.232 (/16) on cl0 ══ veth ══ rr0 198.18.255.254/16: the reflector
//!   one tokio runtime, one iBGP session per address
//! ```
//!
//! One run of one reflector, in fresh namespaces:
//!
//! 1. The reflector starts with its configuration ([`reflectors`]) and is polled every
//!    50 ms until its client answers (the node agent: until it lists every client as a
//!    peer); that is its start-up time.
//! 2. **Cold start**: every client connects at once; t0 is the first connection
//!    attempt; done when every client holds the other `n - 1` blocks ([`clients`]).
//!    The reflector's CPU seconds (utime + stime) over that phase, and the clients' own.
//! 3. **Churn**: `churn` clients, spread over the address range, close their
//!    connections without a NOTIFICATION (an agent killed, a node rebooted) and connect
//!    again at once with Restart State; done when every client holds every other block
//!    again over an Established session.
//! 4. **Withdraw**, `withdrawals` times with a different client each: the client
//!    withdraws its block; the time until no other client holds it. It announces it
//!    again and the next round waits until everyone has it back.
//! 5. Peak RSS is the VmHWM of the reflector's process at the end.
//!
//! Neighbour entries on both sides are static (`nud permanent`): 1,000 addresses would
//! otherwise fill the kernel's ARP table, which every namespace shares.

pub mod clients;
pub mod reflectors;
pub mod report;
pub mod selftest;

use crate::race::{cpu_secs, load_average, vm_hwm_kib};
use clients::{client_addr, Clients, ClientsSpec, Cmd, REFLECTOR, SUBNET_LEN};
use reflectors::Reflector;
use serval_integration::netns::{NsChild, NsHandle};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every namespace this bench makes starts with this.
pub const NS_PREFIX: &str = "svrr-";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum RrError {
    #[error(transparent)]
    Bed(#[from] serval_integration::Error),
    #[error("{what}: {detail}")]
    Setup { what: String, detail: String },
    #[error("timed out after {secs:.0} s waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        secs: f64,
        last: String,
    },
    #[error("{who} failed: {detail}")]
    Failed { who: String, detail: String },
}

fn setup(what: impl Into<String>) -> impl FnOnce(String) -> RrError {
    let what = what.into();
    move |detail| RrError::Setup { what, detail }
}

/// What a run measures and with what.
#[derive(Clone, Debug)]
pub struct RrOpts {
    pub serval_bin: PathBuf,
    pub clients: usize,
    /// Clients that drop and come back at once.
    pub churn: usize,
    /// Withdraw rounds.
    pub withdrawals: usize,
    /// Give up on a phase after this long.
    pub timeout: Duration,
}

/// One run's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// From the reflector's start until it answered its client (the node agent: until
    /// it had a session configured for every client).
    pub start_secs: f64,
    /// From the first connection attempt until every client holds every other block.
    pub cold_secs: f64,
    /// Reflector CPU seconds during the cold start.
    pub cold_cpu_secs: f64,
    /// The clients' CPU seconds during the cold start (the whole bench process).
    pub clients_cpu_secs: f64,
    /// Reflector CPU seconds over the whole run (cold start, churn, withdrawals).
    pub cpu_secs: f64,
    pub peak_rss_kib: u64,
    /// VmHWM once the reflector answered, before any client connected.
    pub idle_rss_kib: u64,
    /// From the drop until everyone is whole again; `None` when churn was not run.
    pub churn_secs: Option<f64>,
    /// Each withdrawal until the last other client lost the block, in ms.
    pub withdraw_ms: Vec<f64>,
    /// UPDATEs the clients received during the cold start.
    pub cold_updates: u64,
    /// Kernel routes the node agent programmed in its namespace (serval-node only).
    pub kernel_routes: Option<usize>,
    /// Sessions the reflector ended after they were Established (each client then
    /// connected again), over the whole run, and why the last one ended.
    pub sessions_lost: usize,
    pub last_loss: String,
    /// Connections the reflector's kernel dropped because its listen queue was full
    /// (`TcpExtListenDrops`) during the cold start: a backlog too short for the burst.
    pub listen_drops: u64,
}

/// A named namespace of this bench, removed (with everything in it) on drop.
struct RrNs {
    handle: NsHandle,
}

impl RrNs {
    fn new(role: &str) -> Result<RrNs, RrError> {
        serval_integration::tools::require_root()?;
        serval_integration::tools::require("ip")?;
        let name = format!(
            "{NS_PREFIX}{}-{}-{role}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = RrNs {
            handle: NsHandle::named(&name),
        };
        ns.handle.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for RrNs {
    fn drop(&mut self) {
        remove_ns(self.handle.name());
    }
}

fn remove_ns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a pid inside our own namespace; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Removes `svrr-` namespaces whose owning process is gone (a run that was killed).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(NS_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_ns(&name);
            }
        }
    }
}

fn run(cmd: &mut Command) -> Result<String, RrError> {
    let out = cmd.output().map_err(|e| RrError::Setup {
        what: format!("{cmd:?}"),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(RrError::Setup {
            what: format!("{cmd:?}"),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS -batch FILE` for many addresses or neighbours at once.
fn ip_batch(ns: &NsHandle, dir: &Path, name: &str, lines: &str) -> Result<(), RrError> {
    let f = dir.join(name);
    std::fs::write(&f, lines).map_err(|e| RrError::Setup {
        what: format!("writing {}", f.display()),
        detail: e.to_string(),
    })?;
    run(Command::new("ip").args(["-n", ns.name(), "-batch"]).arg(&f)).map(drop)
}

fn mac(ns: &NsHandle, dev: &str) -> Result<String, RrError> {
    let out = ns.ip(&["-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| RrError::Setup {
        what: format!("reading {dev}'s address"),
        detail: e.to_string(),
    })?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| RrError::Setup {
            what: format!("reading {dev}'s address"),
            detail: out,
        })
}

/// The link: the reflector's and the clients' namespaces, addresses and static
/// neighbour entries.
struct Link {
    clients: RrNs,
    rr: RrNs,
}

impl Link {
    fn new(n: usize, dir: &Path) -> Result<Link, RrError> {
        let rr = RrNs::new("rr")?;
        let clients = RrNs::new("clients")?;
        rr.handle.ip(&[
            "link",
            "add",
            "rr0",
            "type",
            "veth",
            "peer",
            "name",
            "cl0",
            "netns",
            clients.handle.name(),
        ])?;
        for (ns, dev) in [(&rr.handle, "rr0"), (&clients.handle, "cl0")] {
            ns.ip(&["link", "set", dev, "addrgenmode", "none"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        rr.handle.ip(&[
            "addr",
            "add",
            &format!("{REFLECTOR}/{SUBNET_LEN}"),
            "dev",
            "rr0",
        ])?;
        let cl_mac = mac(&clients.handle, "cl0")?;
        let rr_mac = mac(&rr.handle, "rr0")?;
        let mut addrs = String::new();
        let mut neigh = String::new();
        for i in 0..n {
            let a = client_addr(i);
            let _ = writeln!(addrs, "addr add {a}/{SUBNET_LEN} dev cl0");
            let _ = writeln!(
                neigh,
                "neigh replace {a} lladdr {cl_mac} dev rr0 nud permanent"
            );
        }
        ip_batch(&clients.handle, dir, "addrs.batch", &addrs)?;
        ip_batch(&rr.handle, dir, "neigh.batch", &neigh)?;
        clients.handle.ip(&[
            "neigh",
            "replace",
            &REFLECTOR.to_string(),
            "lladdr",
            &rr_mac,
            "dev",
            "cl0",
            "nud",
            "permanent",
        ])?;
        Ok(Link { clients, rr })
    }
}

/// Raises this process's open-file limit to its hard limit: 1,000 sessions need more
/// than the usual 1,024 descriptors, here and in the daemons started from here.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit to read into and from.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

fn tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The reflector under test.
struct Running {
    reflector: Reflector,
    child: NsChild,
    log: PathBuf,
}

impl Running {
    fn check(&mut self) -> Result<(), RrError> {
        if let Some(status) = self.child.try_wait()? {
            return Err(RrError::Failed {
                who: self.reflector.name().to_string(),
                detail: format!("exited ({status}):\n{}", tail(&self.log)),
            });
        }
        Ok(())
    }
}

fn wait<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    f: impl FnMut() -> Result<Result<T, String>, RrError>,
) -> Result<T, RrError> {
    crate::poll::until(what, timeout, every, f, |t| RrError::Timeout {
        what: t.what,
        secs: t.secs,
        last: t.last,
    })
}

/// CPU seconds this process (the clients) has used.
fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// Fails when the reflector died or a client failed for good (it could not establish
/// before the deadline).
fn check(running: &mut Running, c: &Clients) -> Result<(), RrError> {
    running.check()?;
    let f = c.board().failures();
    if !f.is_empty() {
        return Err(RrError::Failed {
            who: "clients".into(),
            detail: format!("{}\nreflector log:\n{}", f.join("\n"), tail(&running.log)),
        });
    }
    Ok(())
}

fn progress(c: &Clients) -> String {
    let b = c.board();
    format!(
        "{} of {} established, {} complete, {} UPDATEs received, {} sessions lost {}",
        b.established(),
        b.n,
        b.complete(),
        b.updates(),
        b.lost(),
        b.last_loss()
    )
}

/// `TcpExtListenDrops` of a namespace: SYNs and handshakes dropped at a full listen queue.
fn listen_drops(ns: &NsHandle) -> u64 {
    let text = ns.exec(&["cat", "/proc/net/netstat"]).unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenDrops")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The clients that drop or withdraw: spread over the range.
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k).map(|j| j * n / k.max(1)).collect()
}

/// Runs `reflector` once with `opts.clients` clients.
pub fn run_once(reflector: Reflector, opts: &RrOpts) -> Result<Sample, RrError> {
    let n = opts.clients;
    if !(2..=clients::MAX_CLIENTS).contains(&n) {
        return Err(RrError::Setup {
            what: "--clients".into(),
            detail: format!(
                "{n}: 2 to {} (one /26 each in 10.64.0.0/16)",
                clients::MAX_CLIENTS
            ),
        });
    }
    serval_integration::tools::require_all(reflector.tools())?;
    raise_nofile();
    sweep_stale();
    let dir = tempfile::Builder::new()
        .prefix(&format!("svrr-{}-", reflector.name()))
        .tempdir()
        .map_err(|e| RrError::Setup {
            what: "a temporary directory".into(),
            detail: e.to_string(),
        })?;
    // Removed below after a run that worked; kept with its logs otherwise.
    let dir = dir.keep();
    let result = run_in(reflector, opts, &dir);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("rr-race: logs kept in {}", dir.display());
    }
    result
}

fn run_in(reflector: Reflector, opts: &RrOpts, dir: &Path) -> Result<Sample, RrError> {
    let n = opts.clients;
    let link = Link::new(n, dir)?;
    let launch = reflectors::launch(reflector, n, dir, &opts.serval_bin);
    for (name, text) in &launch.files {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map_err(|e| e.to_string())
            .map_err(setup(format!("writing {}", p.display())))?;
    }
    for argv in &launch.setup {
        run(Command::new(&argv[0]).args(&argv[1..]))?;
    }
    let argv: Vec<&str> = launch.argv.iter().map(String::as_str).collect();
    let log = dir.join("reflector.log");
    let started = Instant::now();
    let mut running = Running {
        reflector,
        child: link.rr.handle.spawn(&argv, Some(&log))?,
        log,
    };
    let ready_argv = launch.ready_argv.clone();
    wait(
        &format!("{} to answer its client", reflector.name()),
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            running.check()?;
            let out = Command::new(&ready_argv[0])
                .args(&ready_argv[1..])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output();
            let text = out
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            Ok(if reflectors::ready(reflector, &text, n) {
                Ok(())
            } else {
                Err(text.chars().take(200).collect())
            })
        },
    )?;
    let start_secs = started.elapsed().as_secs_f64();
    let pid = running.child.pid();
    let idle_rss_kib = vm_hwm_kib(pid).unwrap_or(0);
    let cpu0 = cpu_secs(pid).unwrap_or(0.0);
    let own0 = own_cpu_secs();

    // Cold start.
    let spec = ClientsSpec {
        n,
        reflector: REFLECTOR,
        hold_time: 90,
        connect_timeout: opts.timeout,
    };
    let c = Clients::start(&link.clients.handle, spec).map_err(setup("the clients"))?;
    let rr_ns = link.rr.handle.clone();
    let done = wait(
        "every client to hold every other block",
        opts.timeout,
        Duration::from_millis(1),
        || {
            check(&mut running, &c)?;
            Ok(if c.board().converged() {
                Ok(crate::peer::mono_ns())
            } else {
                Err(progress(&c))
            })
        },
    )
    .map_err(|e| match e {
        // Why it is slow, when it is: the reflector's CPU and its kernel's listen queue.
        RrError::Timeout { what, secs, last } => RrError::Timeout {
            what,
            secs,
            last: format!(
                "{last}; reflector {:.1} CPU s, {} listen drops",
                cpu_secs(pid).unwrap_or(0.0) - cpu0,
                listen_drops(&rr_ns)
            ),
        },
        e => e,
    })?;
    let listen_drops = listen_drops(&rr_ns);
    let cold_secs = done.saturating_sub(c.board().first_connect_ns()) as f64 / 1e9;
    let cold_cpu_secs = cpu_secs(pid).unwrap_or(0.0) - cpu0;
    let clients_cpu_secs = own_cpu_secs() - own0;
    let cold_updates = c.board().updates();

    let kernel_routes = if reflector == Reflector::ServalNode {
        Some(kernel_routes(
            &link.rr.handle,
            n,
            opts.timeout,
            &mut running,
        )?)
    } else {
        None
    };

    // Churn.
    let churn_secs = if opts.churn > 0 {
        let who = spread(n, opts.churn);
        let t = Instant::now();
        for &i in &who {
            c.send(i, Cmd::Drop);
        }
        wait(
            "the dropped clients to forget their routes",
            opts.timeout,
            Duration::from_millis(1),
            || {
                check(&mut running, &c)?;
                Ok(if c.board().drops() >= who.len() {
                    Ok(())
                } else {
                    Err(format!("{} of {} dropped", c.board().drops(), who.len()))
                })
            },
        )?;
        let secs = wait(
            "every client to be whole again after the churn",
            opts.timeout,
            Duration::from_millis(1),
            || {
                check(&mut running, &c)?;
                Ok(if c.board().converged() {
                    Ok(t.elapsed().as_secs_f64())
                } else {
                    Err(progress(&c))
                })
            },
        )?;
        Some(secs)
    } else {
        None
    };

    // Withdrawals.
    let mut withdraw_ms = Vec::new();
    for i in spread(n, opts.withdrawals) {
        // A different client than the first ones that dropped: shift by one.
        let i = (i + 1) % n;
        let t = Instant::now();
        c.send(i, Cmd::Withdraw);
        let ms = wait(
            &format!("client {i}'s block to be gone everywhere"),
            opts.timeout,
            Duration::from_millis(1),
            || {
                check(&mut running, &c)?;
                let h = c.board().holders(i);
                Ok(if h == 0 {
                    Ok(t.elapsed().as_secs_f64() * 1e3)
                } else {
                    Err(format!("{h} clients still hold it"))
                })
            },
        )?;
        withdraw_ms.push(ms);
        c.send(i, Cmd::Announce);
        wait(
            &format!("client {i}'s block to be back everywhere"),
            opts.timeout,
            Duration::from_millis(1),
            || {
                check(&mut running, &c)?;
                Ok(if c.board().converged() {
                    Ok(())
                } else {
                    Err(progress(&c))
                })
            },
        )?;
    }
    let peak_rss_kib = vm_hwm_kib(pid).unwrap_or(0);
    let cpu_secs = cpu_secs(pid).unwrap_or(0.0) - cpu0;
    let sessions_lost = c.board().lost();
    let last_loss = c.board().last_loss();
    drop(c);
    drop(running);
    drop(link);
    Ok(Sample {
        start_secs,
        cold_secs,
        cold_cpu_secs,
        clients_cpu_secs,
        cpu_secs,
        peak_rss_kib,
        idle_rss_kib,
        churn_secs,
        withdraw_ms,
        cold_updates,
        kernel_routes,
        listen_drops,
        sessions_lost,
        last_loss,
    })
}

/// Waits until the node agent has a kernel route (its protocol, 83) for each of the
/// `n` blocks it reflects, and returns how many it has.
fn kernel_routes(
    ns: &NsHandle,
    n: usize,
    timeout: Duration,
    running: &mut Running,
) -> Result<usize, RrError> {
    let want: std::collections::BTreeSet<String> = reflectors::blocks(n).collect();
    wait(
        "the reflector node to program every block",
        timeout,
        Duration::from_millis(100),
        || {
            running.check()?;
            let out = ns.ip(&["-4", "route", "show", "proto", "83"])?;
            let have = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|p| want.contains(*p))
                .count();
            Ok(if have >= n {
                Ok(have)
            } else {
                Err(format!("{have} of {n}"))
            })
        },
    )
}

/// The machine's load averages, for the report.
pub fn load() -> String {
    load_average()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_picks_distinct_clients_across_the_range() {
        assert_eq!(spread(1000, 4), vec![0, 250, 500, 750]);
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
        let s = spread(1000, 100);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
