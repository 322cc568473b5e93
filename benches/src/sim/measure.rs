//! The figures of one cluster: each phase as the module of the harness describes it,
//! returned as JSON.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use ipam::allocator::AutoAssignRequest;
use ipam::model::HandleId;
use ipnet::Ipv4Net;
use serde_json::json;

use super::cluster::{Cluster, Shape};
use super::etcd::{self, round};
use super::routes::NodeRoutes;

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub claims: usize,
    pub idle_secs: u64,
    pub churn_secs: u64,
    pub churn_rate: f64,
    pub hang: bool,
    pub log_level: String,
}

/// A small deterministic generator (xorshift64*): the same run picks the same nodes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The `p`th percentile (nearest rank) of sorted `v`.
pub fn pct(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

/// When every node but the owner routes each of `blocks`: the latest of those moments.
fn routed_everywhere(s: &[NodeRoutes], blocks: &[(usize, Ipv4Net)]) -> Option<Instant> {
    let mut last: Option<Instant> = None;
    for (j, n) in s.iter().enumerate() {
        for (owner, b) in blocks {
            if *owner == j {
                continue;
            }
            let at = n.routed(b)?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    last
}

fn missing(s: &[NodeRoutes], blocks: &[(usize, Ipv4Net)]) -> String {
    let mut count = 0;
    let mut first = None;
    for (j, n) in s.iter().enumerate() {
        for (owner, b) in blocks {
            if *owner != j && n.routed(b).is_none() {
                count += 1;
                first.get_or_insert(format!("n{j} lacks {b} of n{owner}"));
            }
        }
    }
    format!("{count} routes missing, e.g. {}", first.unwrap_or_default())
}

/// When no node but `victim` routes any of `blocks` any more.
fn gone_everywhere(s: &[NodeRoutes], victim: usize, blocks: &[Ipv4Net]) -> Option<Instant> {
    let mut last: Option<Instant> = None;
    for (j, n) in s.iter().enumerate() {
        if j == victim {
            continue;
        }
        for b in blocks {
            let at = n.gone(b)?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    last
}

fn still_routed(s: &[NodeRoutes], victim: usize, blocks: &[Ipv4Net]) -> String {
    let n = s
        .iter()
        .enumerate()
        .filter(|(j, n)| *j != victim && blocks.iter().any(|b| n.routed(b).is_some()))
        .count();
    format!("{n} nodes still route the victim's blocks")
}

/// CPU ticks (user + system) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn rss_kib(pid: u32) -> u64 {
    crate::agent_lab::memory_kib(pid).map(|m| m.0).unwrap_or(0)
}

/// Per-agent CPU and memory over a window.
struct Usage {
    pids: Vec<(u32, bool)>,
    ticks: Vec<u64>,
    etcd: (u32, u64),
    at: Instant,
}

impl Usage {
    fn start(c: &Cluster) -> Usage {
        let pids: Vec<(u32, bool)> = (0..c.nodes.len())
            .filter_map(|i| c.pid(i).map(|p| (p, c.nodes[i].reflector)))
            .collect();
        Usage {
            ticks: pids.iter().map(|(p, _)| cpu_ticks(*p)).collect(),
            pids,
            etcd: (c.etcd_pid(), cpu_ticks(c.etcd_pid())),
            at: Instant::now(),
        }
    }

    fn finish(&self) -> serde_json::Value {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        let (mut rr_cpu, mut rr_rss) = (Vec::new(), Vec::new());
        for ((pid, rr), t0) in self.pids.iter().zip(&self.ticks) {
            let c = (cpu_ticks(*pid).saturating_sub(*t0)) as f64 / hz / secs * 100.0;
            let r = rss_kib(*pid) as f64 / 1024.0;
            if *rr {
                rr_cpu.push(c);
                rr_rss.push(r);
            } else {
                cpu.push(c);
                rss.push(r);
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let etcd_cpu =
            (cpu_ticks(self.etcd.0).saturating_sub(self.etcd.1)) as f64 / hz / secs * 100.0;
        json!({
            "window_s": round(secs),
            "cpu_pct_mean": round(mean(&cpu)),
            "cpu_pct_max": round(max(&cpu)),
            "cpu_pct_total": round(cpu.iter().chain(&rr_cpu).sum::<f64>()),
            "rss_mib_mean": round(mean(&rss)),
            "rss_mib_max": round(max(&rss)),
            "rr_cpu_pct_mean": round(mean(&rr_cpu)),
            "rr_rss_mib_mean": round(mean(&rr_rss)),
            "etcd_cpu_pct": round(etcd_cpu),
            "etcd_rss_mib": round(rss_kib(self.etcd.0) as f64 / 1024.0),
        })
    }
}

/// Runs every phase on a built cluster whose agents have not started.
pub fn run(c: &mut Cluster, plan: &Plan, rng: &mut Rng) -> anyhow::Result<serde_json::Value> {
    let n = c.nodes.len();
    let mut out = serde_json::Map::new();
    let shape = c_shape(c);
    let say = move |what: &str| {
        eprintln!(
            "cluster-sim: {shape} N={n}: {what} (load {})",
            crate::agent_lab::load_average()
        )
    };

    // (1) Start-up: every agent at once, until every node routes every other's block.
    say("starting the agents");
    let e0 = etcd::scrape()?;
    let t0 = Instant::now();
    for i in 0..n {
        c.start_agent(i, &plan.log_level)?;
    }
    let spawned = t0.elapsed();
    let blocks = c.all_blocks();
    let timeout = Duration::from_secs(120 + 2 * n as u64);
    // An agent that gives up at start-up (its first datastore read timing out, say) is
    // started again, as the kubelet would, and counted.
    let mut restarts: Vec<usize> = Vec::new();
    let deadline = Instant::now() + timeout;
    let done = loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        match c.watch.wait(
            step,
            "every node routes every other node's block",
            |s| routed_everywhere(s, &blocks),
            |s| missing(s, &blocks),
        ) {
            Ok(at) => break at,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                let again = c.restart_exited(&plan.log_level)?;
                if !again.is_empty() {
                    say(&format!(
                        "{} agents exited and were started again",
                        again.len()
                    ));
                }
                restarts.extend(again);
                if let Some(i) = (0..n).find(|i| restarts.iter().filter(|r| *r == i).count() > 5) {
                    anyhow::bail!(
                        "the agent of n{i} exited six times:\n{}",
                        super::cluster::log_tail(&c.nodes[i].dir.join("agent.log"))
                    );
                }
            }
        }
    };
    let first_exit = restarts.first().map(|&i| {
        let log = std::fs::read_to_string(c.nodes[i].dir.join("agent.log")).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("Error") || l.contains("unavailable"))
            .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
            .unwrap_or_default()
    });
    let converge = done.saturating_duration_since(t0);
    let mut per_node: Vec<Duration> = {
        let s = c.watch.lock();
        (0..n)
            .map(|j| {
                blocks
                    .iter()
                    .filter(|(o, _)| *o != j)
                    .filter_map(|(_, b)| s[j].routed(b))
                    .max()
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(t0))
            })
            .collect()
    };
    per_node.sort();
    let e1 = etcd::scrape()?;
    out.insert(
        "startup".into(),
        json!({
            "all_routes_s": secs(converge),
            "node_p50_s": secs(pct(&per_node, 50)),
            "first_node_s": secs(per_node.first().copied().unwrap_or_default()),
            "spawn_s": secs(spawned),
            "agent_restarts": restarts.len(),
            "agents_restarted": restarts.iter().collect::<std::collections::BTreeSet<_>>().len(),
            "first_exit": first_exit,
            "etcd": etcd::load(&e0, &e1).json(),
        }),
    );
    say(&format!("converged in {:.2} s", converge.as_secs_f64()));

    // The ToR: BIRD learns every node's block (from the nodes, or from the reflectors).
    let want = blocks.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tor = c.tor_routes()?;
    while tor < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        tor = c.tor_routes()?;
    }
    out.insert("tor_routes".into(), json!({"have": tor, "want": want}));

    // (4, 5) Idle.
    std::thread::sleep(Duration::from_secs(3));
    say("idle");
    let e0 = etcd::scrape()?;
    let u = Usage::start(c);
    std::thread::sleep(Duration::from_secs(plan.idle_secs));
    c.check_alive()?;
    let mut idle = u.finish();
    idle["etcd"] = etcd::load(&e0, &etcd::scrape()?).json();
    out.insert("idle".into(), idle);

    // (2) A block claimed on one node until every other kernel routes it.
    say(&format!("{} claims", plan.claims));
    let e0 = etcd::scrape()?;
    let mut writes = Vec::with_capacity(plan.claims);
    let mut routed = Vec::with_capacity(plan.claims);
    for _ in 0..plan.claims {
        let owner = rng.below(n);
        let (b, write) = c.claim_block(owner)?;
        let t0 = Instant::now() - write;
        let one = [(owner, b)];
        let at = wait_checked(
            c,
            Duration::from_secs(30),
            &format!("{b} of n{owner} routed everywhere"),
            |s| routed_everywhere(s, &one),
            |s| missing(s, &one),
        )?;
        writes.push(write);
        routed.push(at.saturating_duration_since(t0));
    }
    writes.sort();
    routed.sort();
    let e1 = etcd::scrape()?;
    out.insert(
        "claims".into(),
        json!({
            "count": plan.claims,
            "p50_ms": ms(pct(&routed, 50)),
            "p99_ms": ms(pct(&routed, 99)),
            "max_ms": ms(routed.last().copied().unwrap_or_default()),
            "store_write_p50_ms": ms(pct(&writes, 50)),
            "etcd": etcd::load(&e0, &e1).json(),
        }),
    );

    // (4, 5) Churn: pods created at `churn_rate` on random nodes, released as more come.
    say("churn");
    let e0 = etcd::scrape()?;
    let u = Usage::start(c);
    let t0 = Instant::now();
    let total = (plan.churn_rate * plan.churn_secs as f64).round() as usize;
    let nodes: Vec<_> = (0..total)
        .map(|_| c.node_info(rng.below(n)))
        .collect::<anyhow::Result<_>>()?;
    let (ops, created, released) = c.rt.block_on(churn(&c.ipam, nodes, plan.churn_rate));
    let mut ops = ops?;
    ops.sort();
    let churn_secs = t0.elapsed().as_secs_f64();
    c.check_alive()?;
    let mut churn = u.finish();
    churn["etcd"] = etcd::load(&e0, &etcd::scrape()?).json();
    churn["pods_created"] = json!(created);
    churn["pods_released"] = json!(released);
    churn["rate_per_s"] = json!(round(created as f64 / churn_secs));
    churn["pod_create_p50_ms"] = json!(ms(pct(&ops, 50)));
    churn["pod_create_p99_ms"] = json!(ms(pct(&ops, 99)));
    out.insert("churn".into(), churn);

    // (3) A node killed (SIGKILL): its peers keep its routes for the restart time it
    // announced, then withdraw them.
    let victim = n - 1;
    let vblocks = c.nodes[victim].blocks.clone();
    say("killing the last node's agent");
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    if let Some(mut a) = c.nodes[victim].agent.take() {
        a.kill();
    }
    let at = wait_checked(
        c,
        Duration::from_secs(c.timers.restart_secs + 60),
        "the killed node's routes withdrawn everywhere",
        |s| gone_everywhere(s, victim, &vblocks),
        |s| still_routed(s, victim, &vblocks),
    )?;
    let gr = at.saturating_duration_since(t0);
    let rejoin = restart(c, victim, plan)?;
    out.insert(
        "kill_graceful_restart".into(),
        json!({
            "withdrawn_s": secs(gr),
            "restart_time_s": c.timers.restart_secs,
            "back_after_restart_s": secs(rejoin),
        }),
    );

    // (3) A node that hangs (SIGSTOP): its sessions stay open until the hold timer.
    if plan.hang {
        let hold = c.timers.hold_secs(c.shape);
        say(&format!("stopping the last node's agent (hold {hold} s)"));
        std::thread::sleep(Duration::from_secs(2));
        let pid = c.pid(victim).context("the victim's agent")? as i32;
        let t0 = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let res = wait_checked(
            c,
            Duration::from_secs(hold + 60),
            "the hung node's routes withdrawn everywhere",
            |s| gone_everywhere(s, victim, &vblocks),
            |s| still_routed(s, victim, &vblocks),
        );
        let t1 = Instant::now();
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let at = res?;
        let others: Vec<(usize, Ipv4Net)> = vblocks.iter().map(|b| (victim, *b)).collect();
        let back = wait_checked(
            c,
            Duration::from_secs(120),
            "the resumed node's blocks routed again",
            |s| routed_everywhere(s, &others),
            |s| missing(s, &others),
        )?;
        out.insert(
            "hang_hold_expiry".into(),
            json!({
                "withdrawn_s": secs(at.saturating_duration_since(t0)),
                "hold_time_s": hold,
                "back_after_resume_s": secs(back.saturating_duration_since(t1)),
            }),
        );
    }
    out.insert("route_watch_overflows".into(), json!(c.watch.overflows()));
    Ok(serde_json::Value::Object(out))
}

/// Pods created at `rate` on `nodes` (one each, in order), each in its own task so that a
/// slow store does not slow the rate; once 40 run, each new pod releases the oldest.
/// Returns each creation's time, and how many were created and released.
async fn churn(
    ipam: &ipam::Ipam,
    nodes: Vec<ipam::allocator::NodeInfo>,
    rate: f64,
) -> (anyhow::Result<Vec<Duration>>, usize, usize) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut live: std::collections::VecDeque<HandleId> = Default::default();
    let mut released = 0;
    for (k, node) in nodes.into_iter().enumerate() {
        tokio::time::sleep_until(start + period * k as u32).await;
        let Ok(handle) = HandleId::new(format!("sim-pod-{k}")) else {
            continue;
        };
        let old = if live.len() >= 40 {
            live.pop_front()
        } else {
            None
        };
        live.push_back(handle.clone());
        let ipam = ipam.clone();
        released += usize::from(old.is_some());
        tasks.spawn(async move {
            let t0 = Instant::now();
            ipam.auto_assign(AutoAssignRequest::new(handle, node, 1, 0))
                .await
                .map_err(|e| anyhow!("creating a pod: {e}"))?;
            let took = t0.elapsed();
            if let Some(h) = old {
                ipam.release_handle(h)
                    .await
                    .map_err(|e| anyhow!("releasing a pod: {e}"))?;
            }
            Ok::<Duration, anyhow::Error>(took)
        });
    }
    let mut took = Vec::new();
    let mut created = 0;
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(d)) => {
                created += 1;
                took.push(d);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow!("a churn task: {e}"));
            }
        }
    }
    match first_err {
        Some(e) => (Err(e), created, released),
        None => (Ok(took), created, released),
    }
}

fn c_shape(c: &Cluster) -> &'static str {
    match c.shape {
        Shape::Mesh => "mesh",
        Shape::Rr => "rr",
    }
}

/// Restarts node `i`'s agent; the time until every other node routes its blocks again.
fn restart(c: &mut Cluster, i: usize, plan: &Plan) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    c.start_agent(i, &plan.log_level)?;
    let mine: Vec<(usize, Ipv4Net)> = c.nodes[i].blocks.iter().map(|b| (i, *b)).collect();
    let at = wait_checked(
        c,
        Duration::from_secs(120),
        "the restarted node's blocks routed again",
        |s| routed_everywhere(s, &mine),
        |s| missing(s, &mine),
    )?;
    Ok(at.saturating_duration_since(t0))
}

/// [`RouteWatch::wait`](super::routes::RouteWatch::wait), failing early when an agent exits.
fn wait_checked(
    c: &mut Cluster,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[NodeRoutes]) -> Option<Instant>,
    pending: impl Fn(&[NodeRoutes]) -> String,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = left.min(Duration::from_secs(1));
        match c.watch.wait(step, what, &done, &pending) {
            Ok(at) => return Ok(at),
            Err(e) if left <= step => return Err(e),
            Err(_) => c.check_alive()?,
        }
    }
}
