//! `bgp-race`: serval, BIRD, GoBGP and FRR fed the same table side by side.
//!
//! One run of one daemon in one shape:
//!
//! ```text
//!   feeder 1 ─┐                         fresh namespaces on one bridge (192.0.2.0/24):
//!   …         ├─ br0 ── daemon ── br0 ── monitor (route-server shape only)
//!   feeder n ─┘         192.0.2.1
//! ```
//!
//! 1. The daemon starts with its minimal configuration ([`daemons`]) and is polled until
//!    its client answers; its idle VmHWM is read.
//! 2. The monitor (route server shape) connects and establishes.
//! 3. Every feeder encodes its feed, says `ready`, and waits for a go file; the race
//!    creates it once all are ready, so no encoding competes with the daemon.
//! 4. t0 is the earliest `open-sent` of the feeders. Single feeder: the daemon's own
//!    count is polled every `poll` until it holds every prefix; the time is that of the
//!    first poll that saw them all (an upper bound; the previous poll gives the lower
//!    one). Route server: the time is the monitor's `complete` event.
//! 5. The daemon's peak RSS is the VmHWM of its process.

pub mod daemons;
pub mod report;
pub mod stats;

use crate::events::Event;
use crate::peer::mono_ns;
use daemons::{Daemon, Topology};
use serval_integration::netns::NsChild;
use serval_integration::{topology, TestDir};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The daemon's AS; feeders are 65001…, the monitor 65100.
pub const DAEMON_AS: u32 = 64512;
pub const MONITOR_AS: u32 = 65100;
const FIRST_FEEDER_AS: u32 = 65001;
/// Feeder `k`'s prefixes start at 16.0.0.0 + k × 32 Mi addresses: room for 131,072
/// prefixes each, distinct from every other feeder's.
const FEEDER_STRIDE: u32 = 0x0200_0000;

#[derive(Debug, thiserror::Error)]
pub enum RaceError {
    #[error(transparent)]
    Bed(#[from] serval_integration::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("timed out after {secs:.0} s waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        secs: f64,
        last: String,
    },
    #[error("{who} failed: {detail}")]
    Failed { who: String, detail: String },
    #[error("{0}")]
    Config(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RaceError {
    let what = what.into();
    move |source| RaceError::Io { what, source }
}

/// The two loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// One feeder with the whole table; time until the daemon holds it.
    Single,
    /// Ten feeders with a tenth each, one monitor; time until the monitor holds it all.
    RouteServer,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Single => "single",
            Shape::RouteServer => "route-server",
        }
    }

    pub fn parse(s: &str) -> Option<Shape> {
        [Shape::Single, Shape::RouteServer]
            .into_iter()
            .find(|x| x.name() == s || (s == "rs" && *x == Shape::RouteServer))
    }
}

/// What a race measures and with what.
#[derive(Clone, Debug)]
pub struct RaceOpts {
    pub serval_bin: PathBuf,
    pub feeder_bin: PathBuf,
    pub prefixes: u32,
    pub per_update: u32,
    pub rs_feeders: u32,
    pub poll: Duration,
    pub timeout: Duration,
    pub hold_time: u16,
    pub keepalive: u16,
}

impl RaceOpts {
    /// Feeders and prefixes per feeder of a shape.
    pub fn feeders(&self, shape: Shape) -> (u32, u32) {
        match shape {
            Shape::Single => (1, self.prefixes),
            Shape::RouteServer => (self.rs_feeders, self.prefixes / self.rs_feeders.max(1)),
        }
    }
}

/// One run's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds from the first feeder's OPEN to done (upper bound for polled counts).
    pub secs: f64,
    /// The previous poll (or the same as `secs` when measured by an event).
    pub lower_secs: f64,
    pub peak_rss_kib: u64,
    /// VmHWM before the feed.
    pub idle_rss_kib: u64,
    /// Seconds from t0 until the slowest feeder's last octet was taken by the kernel.
    pub feeder_written_secs: f64,
    /// CPU seconds the daemon used from before the feed until done.
    pub cpu_secs: f64,
    /// Median duration of one count query (ms); 0 when nothing was polled.
    pub poll_ms: f64,
    pub polls: usize,
    pub prefixes: u64,
    /// Prefixes the daemon sent to the feeders (as far as they had reported): with the
    /// equivalent configurations, none.
    pub feeders_received: u64,
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space separated.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name and state.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// VmHWM (peak resident set) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The event lines of a log so far.
fn events(log: &Path) -> Vec<Event> {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter_map(Event::parse).collect())
        .unwrap_or_default()
}

fn tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A feeder or monitor process with its log.
struct Peer {
    name: String,
    child: NsChild,
    log: PathBuf,
}

impl Peer {
    fn find(&self, event: &str) -> Option<Event> {
        events(&self.log).into_iter().find(|e| e.name == event)
    }

    /// Fails when the process died or reported a lost session.
    fn check(&mut self) -> Result<(), RaceError> {
        let failed = events(&self.log)
            .into_iter()
            .find(|e| e.name == "session-lost" || e.name == "error");
        let exited = self.child.try_wait()?;
        if failed.is_some() || exited.is_some() {
            return Err(RaceError::Failed {
                who: self.name.clone(),
                detail: tail(&self.log),
            });
        }
        Ok(())
    }
}

/// The daemon under test.
struct Running {
    daemon: Daemon,
    child: NsChild,
    log: PathBuf,
    count_argv: Vec<String>,
}

impl Running {
    fn check(&mut self) -> Result<(), RaceError> {
        if let Some(status) = self.child.try_wait()? {
            return Err(RaceError::Failed {
                who: self.daemon.name().to_string(),
                detail: format!("exited ({status}):\n{}", tail(&self.log)),
            });
        }
        Ok(())
    }

    /// One count query: (routes from the feeders, when the answer arrived, how long it
    /// took). `None` when the client failed or printed something unexpected.
    fn count(&self, t: &Topology) -> (Option<u64>, u64, Duration) {
        let start = Instant::now();
        let out = Command::new(&self.count_argv[0])
            .args(&self.count_argv[1..])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        let at = mono_ns();
        let took = start.elapsed();
        let n = out.ok().filter(|o| o.status.success()).and_then(|o| {
            daemons::parse_count(self.daemon, &String::from_utf8_lossy(&o.stdout), t)
        });
        (n, at, took)
    }
}

fn wait<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    f: impl FnMut() -> Result<Result<T, String>, RaceError>,
) -> Result<T, RaceError> {
    crate::poll::until(what, timeout, every, f, |t| RaceError::Timeout {
        what: t.what,
        secs: t.secs,
        last: t.last,
    })
}

/// Runs `daemon` once in `shape`.
pub fn run_once(daemon: Daemon, shape: Shape, opts: &RaceOpts) -> Result<Sample, RaceError> {
    serval_integration::tools::require_all(daemon.tools())?;
    let (n_feeders, per_feeder) = opts.feeders(shape);
    let monitor = shape == Shape::RouteServer;
    let hosts = 1 + n_feeders as u8 + u8::from(monitor);
    let seg = topology::segment(hosts)?;
    let dir = TestDir::new(&format!("race-{}-{}", daemon.name(), shape.name()))?;
    let sub = dir.subdir(daemon.name())?;
    let addr = |h: &topology::Host| h.v4;
    let topo = Topology {
        daemon_addr: addr(&seg.hosts[0]),
        daemon_as: DAEMON_AS,
        feeders: (0..n_feeders as usize)
            .map(|k| (addr(&seg.hosts[1 + k]), FIRST_FEEDER_AS + k as u32))
            .collect(),
        monitor: monitor.then(|| (addr(&seg.hosts[hosts as usize - 1]), MONITOR_AS)),
        hold_time: opts.hold_time,
        keepalive: opts.keepalive,
    };
    let launch = daemons::launch(daemon, &topo, &sub, &opts.serval_bin);
    for (name, text) in &launch.files {
        let p = sub.join(name);
        std::fs::write(&p, text).map_err(io(format!("writing {}", p.display())))?;
    }
    let argv: Vec<&str> = launch.argv.iter().map(String::as_str).collect();
    let log = sub.join("daemon.log");
    let mut running = Running {
        daemon,
        child: seg.hosts[0].ns.spawn(&argv, Some(&log))?,
        log,
        count_argv: launch.count_argv.clone(),
    };
    wait(
        &format!("{} to answer its client", daemon.name()),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            running.check()?;
            Ok(match running.count(&topo).0 {
                Some(_) => Ok(()),
                None => Err("no answer".into()),
            })
        },
    )?;
    let pid = running.child.pid();
    let idle_rss_kib = vm_hwm_kib(pid).unwrap_or(0);
    let idle_cpu = cpu_secs(pid).unwrap_or(0.0);
    let total = u64::from(n_feeders) * u64::from(per_feeder);
    let target = format!("{}:179", topo.daemon_addr);
    let feeder_bin = opts.feeder_bin.to_string_lossy().into_owned();

    let mut mon = match topo.monitor {
        None => None,
        Some((m, asn)) => {
            let host = &seg.hosts[hosts as usize - 1];
            let log = dir.path().join("monitor.log");
            let args = [
                feeder_bin.clone(),
                "monitor".into(),
                "--connect".into(),
                target.clone(),
                "--local-as".into(),
                asn.to_string(),
                "--router-id".into(),
                m.to_string(),
                "--hold-time".into(),
                opts.hold_time.to_string(),
                "--expect".into(),
                total.to_string(),
            ];
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut p = Peer {
                name: "monitor".into(),
                child: host.ns.spawn(&argv, Some(&log))?,
                log,
            };
            wait(
                "the monitor's session",
                Duration::from_secs(30),
                Duration::from_millis(20),
                || {
                    p.check()?;
                    running.check()?;
                    Ok(p.find("established").ok_or_else(|| tail(&p.log)))
                },
            )?;
            Some(p)
        }
    };

    let go = dir.path().join("go");
    let mut feeders = Vec::new();
    for (k, &(a, asn)) in topo.feeders.iter().enumerate() {
        let base = Ipv4Addr::from(0x1000_0000 + k as u32 * FEEDER_STRIDE);
        let log = dir.path().join(format!("feeder{k}.log"));
        let args = [
            feeder_bin.clone(),
            "feed".into(),
            "--connect".into(),
            target.clone(),
            "--local-as".into(),
            asn.to_string(),
            "--router-id".into(),
            a.to_string(),
            "--hold-time".into(),
            opts.hold_time.to_string(),
            "--next-hop".into(),
            a.to_string(),
            "--prefixes".into(),
            per_feeder.to_string(),
            "--per-update".into(),
            opts.per_update.to_string(),
            "--base".into(),
            base.to_string(),
            "--avoid-as".into(),
            DAEMON_AS.to_string(),
            "--avoid-as".into(),
            MONITOR_AS.to_string(),
            "--go-file".into(),
            go.to_string_lossy().into_owned(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        feeders.push(Peer {
            name: format!("feeder {k} ({a})"),
            child: seg.hosts[1 + k].ns.spawn(&argv, Some(&log))?,
            log,
        });
    }
    wait(
        "every feeder to encode its feed",
        Duration::from_secs(120),
        Duration::from_millis(10),
        || {
            let mut ready = 0;
            for f in feeders.iter_mut() {
                f.check()?;
                ready += usize::from(f.find("ready").is_some());
            }
            Ok(if ready == feeders.len() {
                Ok(())
            } else {
                Err(format!("{ready} of {} ready", feeders.len()))
            })
        },
    )?;
    std::fs::write(&go, b"go").map_err(io("writing the go file"))?;

    let mut poll_times: Vec<Duration> = Vec::new();
    let mut prev_end = mono_ns();
    let (done_ns, lower_ns) = match mon.as_mut() {
        None => wait(
            &format!("{} to hold {total} routes", daemon.name()),
            opts.timeout,
            opts.poll,
            || {
                running.check()?;
                for f in feeders.iter_mut() {
                    f.check()?;
                }
                let (n, at, took) = running.count(&topo);
                poll_times.push(took);
                if n.is_some_and(|n| n >= total) {
                    return Ok(Ok((at, prev_end)));
                }
                prev_end = at;
                Ok(Err(format!("{n:?}")))
            },
        )?,
        Some(m) => {
            let e = wait(
                "the monitor to hold every route",
                opts.timeout,
                Duration::from_millis(20),
                || {
                    running.check()?;
                    m.check()?;
                    for f in feeders.iter_mut() {
                        f.check()?;
                    }
                    Ok(m.find("complete").ok_or_else(|| {
                        m.find_last("progress")
                            .map(|e| e.line())
                            .unwrap_or_default()
                    }))
                },
            )?;
            let at = e.get_u64("mono_ns").unwrap_or_else(mono_ns);
            (at, at)
        }
    };
    let peak_rss_kib = vm_hwm_kib(pid).unwrap_or(0);
    let cpu = cpu_secs(pid).map_or(0.0, |c| c - idle_cpu);

    let opens: Vec<u64> = feeders
        .iter()
        .filter_map(|f| f.find("open-sent").and_then(|e| e.get_u64("mono_ns")))
        .collect();
    let t0 = opens
        .iter()
        .copied()
        .min()
        .ok_or_else(|| RaceError::Failed {
            who: "feeders".into(),
            detail: "no open-sent event".into(),
        })?;
    // The feeders may still be writing when the daemon is polled: wait for their reports.
    let written = wait(
        "the feeders' reports",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            let w: Vec<u64> = feeders
                .iter()
                .filter_map(|f| f.find("stream-written").and_then(|e| e.get_u64("mono_ns")))
                .collect();
            Ok(if w.len() == feeders.len() {
                Ok(w.into_iter().max().unwrap_or(t0))
            } else {
                Err(format!("{} of {} written", w.len(), feeders.len()))
            })
        },
    )?;
    poll_times.sort();
    let feeders_received = feeders
        .iter()
        .filter_map(|f| f.find_last("received").and_then(|e| e.get_u64("prefixes")))
        .sum();
    let secs = |ns: u64| ns.saturating_sub(t0) as f64 / 1e9;
    let sample = Sample {
        secs: secs(done_ns),
        lower_secs: secs(lower_ns),
        peak_rss_kib,
        idle_rss_kib,
        feeder_written_secs: secs(written),
        cpu_secs: cpu,
        poll_ms: poll_times
            .get(poll_times.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        polls: poll_times.len(),
        prefixes: total,
        feeders_received,
    };
    // Children first (they are killed on drop), then the namespaces.
    drop(feeders);
    drop(mon);
    drop(running);
    drop(seg);
    Ok(sample)
}

impl Peer {
    fn find_last(&self, event: &str) -> Option<Event> {
        events(&self.log)
            .into_iter()
            .rev()
            .find(|e| e.name == event)
    }
}

/// The feeder alone into a discarding peer: its top rate on this machine (prefixes/s).
pub fn feeder_selftest(feeder_bin: &Path, prefixes: u32) -> Result<f64, RaceError> {
    let out = Command::new(feeder_bin)
        .args(["selftest", "--prefixes", &prefixes.to_string()])
        .output()
        .map_err(io(format!("running {}", feeder_bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(Event::parse)
        .find(|e| e.name == "selftest")
        .and_then(|e| e.get("prefixes_per_sec").and_then(|v| v.parse().ok()))
        .ok_or_else(|| RaceError::Failed {
            who: "bgp-feeder selftest".into(),
            detail: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        })
}

/// The machine's load averages, as `uptime` shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
