//! Eight processes acting as eight nodes allocate 1,000 addresses each, on etcd (stopped
//! and restarted in the middle) and on the embedded file store.
//!
//! The parent re-executes this test binary as children (`--exact child_process_entry`),
//! passing the node name, the datastore (through `SERVAL_DATASTORE`, as the agent and the
//! CNI plugin get it) and a record file. Each child allocates one address per handle and
//! appends `ok HANDLE IP` or `err HANDLE MESSAGE` for every attempt. The parent then checks,
//! from the store and the records: no address twice, every success in the store, every
//! failure a clear error, GC with the live handles leaves no leak, and check is clean.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::ops::RetryPolicy;
use ipam::store::select::{self, Datastore};
use ipam::Ipam;
use support::counting::{CountingStore, Counts};
use support::etcd::Etcd;

const NODES: usize = 8;
const PER_NODE: usize = 1000;

const ENV_NODE: &str = "SERVAL_TEST_CHILD_NODE";
const ENV_OUT: &str = "SERVAL_TEST_CHILD_OUT";
const ENV_COUNT: &str = "SERVAL_TEST_CHILD_COUNT";

/// Entry point of a child process; does nothing when run by the test harness itself.
#[test]
fn child_process_entry() {
    let (Ok(node), Ok(out)) = (std::env::var(ENV_NODE), std::env::var(ENV_OUT)) else {
        return;
    };
    let count: usize = std::env::var(ENV_COUNT)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(PER_NODE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let out_path = out.clone();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .expect("record file");
        let ds = Datastore::from_env_or_default().expect("SERVAL_DATASTORE");
        // Connecting may itself fail while etcd is down: retry for a while, as the agent does.
        let deadline = Instant::now() + Duration::from_secs(60);
        let store = loop {
            match select::open(&ds).await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{node}: connect: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{node}: cannot connect: {e}"),
            }
        };
        let (store, counts) = CountingStore::new(store);
        let ipam = Ipam::new(store);
        let node_name = NodeName::new(node.clone()).expect("node name");
        let stats_path = stats_path(Path::new(&out_path));
        let mut alloc_time = Duration::ZERO;
        let mut slowest = Duration::ZERO;
        for i in 0..count {
            let handle = format!("{node}-h{i}");
            let req = AutoAssignRequest::new(
                HandleId::new(handle.clone()).expect("handle"),
                NodeInfo::new(node_name.clone()),
                1,
                0,
            );
            let t = Instant::now();
            let got = ipam.auto_assign(req).await;
            let took = t.elapsed();
            alloc_time += took;
            slowest = slowest.max(took);
            let line = match got {
                Ok(got) if got.v4.len() == 1 => format!("ok {handle} {}\n", got.v4[0]),
                Ok(got) => format!("err {handle} wrong number of addresses: {got:?}\n"),
                Err(e) => format!("err {handle} {}\n", e.to_string().replace('\n', " ")),
            };
            out.write_all(line.as_bytes()).expect("record");
            if i % 25 == 24 || i + 1 == count {
                let c = counts.lock().map(|c| c.clone()).unwrap_or_default();
                let stats = ChildStats {
                    allocations: i as u64 + 1,
                    alloc_time,
                    slowest_alloc: slowest,
                    store: c,
                };
                std::fs::write(&stats_path, stats.to_line()).expect("stats file");
            }
        }
    });
}

/// What one child measured: its allocations, the time they took, and its store requests.
#[derive(Clone, Debug, Default)]
struct ChildStats {
    allocations: u64,
    alloc_time: Duration,
    slowest_alloc: Duration,
    store: Counts,
}

impl ChildStats {
    fn to_line(&self) -> String {
        format!(
            "allocations={} alloc_us={} slowest_alloc_us={} {}\n",
            self.allocations,
            self.alloc_time.as_micros(),
            self.slowest_alloc.as_micros(),
            self.store.to_line()
        )
    }

    fn parse(line: &str) -> Option<ChildStats> {
        let mut rest = line.trim().splitn(4, ' ');
        let mut field = |name: &str| -> Option<u64> {
            let (k, v) = rest.next()?.split_once('=')?;
            (k == name).then_some(())?;
            v.parse().ok()
        };
        let allocations = field("allocations")?;
        let alloc_time = Duration::from_micros(field("alloc_us")?);
        let slowest_alloc = Duration::from_micros(field("slowest_alloc_us")?);
        let store = Counts::parse(rest.next()?)?;
        Some(ChildStats {
            allocations,
            alloc_time,
            slowest_alloc,
            store,
        })
    }
}

fn stats_path(records: &Path) -> PathBuf {
    records.with_extension("stats")
}

/// The children's measurements so far, summed, as one line for the test's output.
fn summary(records: &[PathBuf], elapsed: Duration) -> String {
    let mut all = ChildStats::default();
    for p in records {
        let Some(s) = std::fs::read_to_string(stats_path(p))
            .ok()
            .and_then(|t| ChildStats::parse(&t))
        else {
            continue;
        };
        all.allocations += s.allocations;
        all.alloc_time += s.alloc_time;
        all.slowest_alloc = all.slowest_alloc.max(s.slowest_alloc);
        all.store.add(&s.store);
    }
    let n = all.allocations.max(1) as f64;
    let c = &all.store;
    let per = |d: Duration, k: u64| d.as_secs_f64() * 1000.0 / k.max(1) as f64;
    format!(
        "{} attempts in {:.1}s ({:.1}/s); per attempt {:.1} ms (slowest {:?}), {:.2} reads and \
         {:.2} commits; a read {:.2} ms, a commit {:.2} ms (slowest request {:?}); \
         {} conflicts, {} unavailable",
        all.allocations,
        elapsed.as_secs_f64(),
        all.allocations as f64 / elapsed.as_secs_f64(),
        per(all.alloc_time, all.allocations),
        all.slowest_alloc,
        c.reads as f64 / n,
        c.commits as f64 / n,
        per(c.read_time, c.reads),
        per(c.commit_time, c.commits),
        c.slowest,
        c.conflicts,
        c.unavailable,
    )
}

struct Children {
    procs: Vec<(String, Child)>,
    records: Vec<PathBuf>,
    started: Instant,
    /// Attempts each child had recorded when its count last grew, and when that was.
    seen: Vec<(usize, Instant)>,
    /// Attempts each child makes.
    count: usize,
    /// What the store says about itself, for the summary (etcd: its disk's speed).
    store_report: Box<dyn Fn() -> String>,
}

impl Children {
    fn summary(&self) -> String {
        let report = (self.store_report)();
        let sep = if report.is_empty() { "" } else { "; " };
        format!(
            "{}{sep}{report}",
            summary(&self.records, self.started.elapsed())
        )
    }

    /// Attempts recorded so far; panics when a child failed or stalled.
    fn check(&mut self) -> usize {
        let now = Instant::now();
        let mut total = 0;
        let mut stalled = None;
        for (i, (node, c)) in self.procs.iter_mut().enumerate() {
            let done = lines_done(std::slice::from_ref(&self.records[i]));
            total += done;
            if done > self.seen[i].0 {
                self.seen[i] = (done, now);
            }
            if let Ok(Some(st)) = c.try_wait() {
                assert!(
                    st.success(),
                    "{node} exited with {st} after {done} attempts"
                );
                continue;
            }
            let silent = now - self.seen[i].1;
            if done < self.count && silent >= stall_limit() {
                stalled = Some(format!(
                    "{node} recorded no attempt for {silent:?} (at {done})"
                ));
            }
        }
        if let Some(what) = stalled {
            panic!(
                "{what}: an attempt must end, with an address or a clear error, within the \
                 retry budget; {}",
                self.summary()
            );
        }
        total
    }

    fn running(&mut self) -> bool {
        self.procs
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The longest a child may go without recording an attempt. Every attempt ends, with an
/// address or a clear error, within the retry budget plus the requests in flight when it
/// runs out; a child silent for longer is stuck, however busy the machine is.
fn stall_limit() -> Duration {
    RetryPolicy::default().budget * 2
}

fn spawn_children(datastore: &str, dir: &Path) -> Children {
    let nodes: Vec<String> = (0..NODES).map(|n| format!("node-{n}")).collect();
    spawn(datastore, dir, &nodes, PER_NODE)
}

/// Starts one child per node, each making `count` attempts.
fn spawn(datastore: &str, dir: &Path, nodes: &[String], count: usize) -> Children {
    let exe = std::env::current_exe().expect("test binary");
    let mut ch = Children {
        procs: Vec::new(),
        records: Vec::new(),
        started: Instant::now(),
        seen: Vec::new(),
        count,
        store_report: Box::new(String::new),
    };
    for node in nodes {
        let out = dir.join(format!("{node}.records"));
        let child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SERVAL_DATASTORE", datastore)
            .env(ENV_NODE, node)
            .env(ENV_OUT, &out)
            .env(ENV_COUNT, count.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        ch.procs.push((node.clone(), child));
        ch.records.push(out);
        ch.seen.push((0, Instant::now()));
    }
    ch
}

fn lines_done(records: &[PathBuf]) -> usize {
    records
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        })
        .sum()
}

/// How fast this machine allocates on this store right now, measured rather than assumed,
/// so that the time budgets follow the machine's speed and load.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// One allocation by one process alone, on average.
    single: Duration,
}

/// Attempts the calibrating process makes.
const CALIBRATION: usize = 100;

/// The share of one lone process's rate that eight processes together must at least reach.
/// They share one store that batches their writes, so together they do better than one
/// alone; a quarter leaves room for the machine's load to change during the test, while a
/// collapse (a thundering herd, backoff that grows without bound, a lock held across
/// requests) falls far below it.
const FLOOR: f64 = 0.25;

impl Pace {
    /// One process allocates [`CALIBRATION`] addresses as node `calibration`, then they and
    /// its blocks are released so that the store is as before.
    fn measure(datastore: &str, cal_dir: &Path) -> Pace {
        std::fs::create_dir_all(cal_dir).expect("calibration dir");
        let mut ch = spawn(datastore, cal_dir, &["calibration".into()], CALIBRATION);
        while ch.running() {
            ch.check();
            std::thread::sleep(Duration::from_millis(50));
        }
        ch.check();
        let stats = std::fs::read_to_string(stats_path(&ch.records[0]))
            .ok()
            .and_then(|t| ChildStats::parse(&t))
            .expect("calibration stats");
        assert_eq!(stats.allocations as usize, CALIBRATION, "calibration ran");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Only the calibration's own handles: the store may hold other nodes' addresses
        // (the file store's pace is measured again after the run).
        let records = std::fs::read_to_string(&ch.records[0]).expect("calibration records");
        let handles: Vec<HandleId> = records
            .lines()
            .filter_map(|l| l.strip_prefix("ok "))
            .filter_map(|l| l.split(' ').next())
            .map(|h| HandleId::new(h).expect("handle"))
            .collect();
        assert_eq!(handles.len(), CALIBRATION, "calibration allocated");
        rt.block_on(async {
            let store = select::open(&datastore.parse().expect("datastore"))
                .await
                .expect("open");
            let ipam = Ipam::new(store);
            for h in handles {
                ipam.release_handle(h).await.expect("release calibration");
            }
            ipam.release_node(NodeName::new("calibration").unwrap())
                .await
                .expect("release calibration blocks");
        });
        let pace = Pace {
            single: stats.alloc_time / CALIBRATION as u32,
        };
        eprintln!(
            "calibration: one process alone, {:?} per allocation ({:.0}/s)",
            pace.single,
            1.0 / pace.single.as_secs_f64()
        );
        pace
    }

    /// The time `n` attempts of all the children together may take.
    fn budget(&self, n: usize) -> Duration {
        (self.single.mul_f64(n as f64 / FLOOR)).max(Duration::from_secs(30))
    }
}

/// Waits until the children recorded `n` attempts in total, at no less than the
/// [`FLOOR`] rate (plus `extra` for an outage in between), each child making progress.
fn wait_for_progress(ch: &mut Children, n: usize, pace: Pace, extra: Duration) {
    let from = lines_done(&ch.records);
    let started = Instant::now();
    let within = pace.budget(n.saturating_sub(from)) + extra;
    loop {
        let done = ch.check();
        if done >= n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "only {done} of {n} attempts within {within:?} (one process alone allocates \
             in {:?}): {}",
            pace.single,
            ch.summary()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits, without a deadline, until every child made all its attempts and exited: each
/// must keep making progress ([`stall_limit`]).
fn wait_for_all(ch: &mut Children) {
    while ch.running() {
        ch.check();
        std::thread::sleep(Duration::from_millis(100));
    }
    ch.check();
}

/// Waits until every child made all its attempts and exited.
fn wait_for_exit(ch: &mut Children, pace: Pace, extra: Duration) {
    wait_for_progress(ch, ch.count * ch.procs.len(), pace, extra);
    wait_for_all(ch);
}

fn add_pool(datastore: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = select::open(&datastore.parse().expect("datastore"))
            .await
            .expect("open");
        let mut p = IpPool::new(
            PoolName::new("pods").unwrap(),
            "10.128.0.0/16".parse().unwrap(),
        );
        p.block_size = 26;
        Ipam::new(store).add_pool(p).await.expect("pool");
    });
}

/// Checks the records of `per_node` attempts each against the store; returns
/// (successes, failures).
fn verify(datastore: &str, records: &[PathBuf], per_node: usize) -> (usize, usize) {
    let mut ok: BTreeMap<HandleId, IpAddr> = BTreeMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for p in records {
        let text = std::fs::read_to_string(p).expect("records");
        assert_eq!(
            text.lines().count(),
            per_node,
            "{}: every attempt recorded",
            p.display()
        );
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("ok"), Some(h), Some(ip)) => {
                    let prev = ok.insert(HandleId::new(h).unwrap(), ip.parse().expect("ip"));
                    assert!(prev.is_none(), "{h} recorded twice");
                }
                (Some("err"), Some(h), Some(msg)) => failed.push((h.to_owned(), msg.to_owned())),
                _ => panic!("bad record line {line:?}"),
            }
        }
    }
    // 0 duplicates among the successes.
    let mut seen: BTreeMap<IpAddr, &HandleId> = BTreeMap::new();
    for (h, ip) in &ok {
        if let Some(other) = seen.insert(*ip, h) {
            panic!("{ip} given to both {other} and {h}");
        }
    }
    // Every failure is a clear error: the operation named with its last cause.
    for (h, msg) in &failed {
        assert!(
            msg.contains("gave up after") || msg.contains("unavailable"),
            "{h}: unclear failure {msg:?}"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = select::open(&datastore.parse().expect("datastore"))
            .await
            .expect("open");
        let snap = ipam::ops::full_snapshot(store.as_ref())
            .await
            .expect("snapshot");
        let mut held: BTreeMap<IpAddr, HandleId> = BTreeMap::new();
        for b in snap.blocks.values().flatten() {
            for (ip, a) in b.value.allocated() {
                assert!(
                    held.insert(ip, a.handle_id.clone()).is_none(),
                    "{ip} allocated twice in the store"
                );
            }
        }
        for (h, ip) in &ok {
            assert_eq!(
                held.get(ip),
                Some(h),
                "success {h} → {ip} is not in the store"
            );
        }
        let ipam = Ipam::new(store.clone());
        let live: BTreeSet<HandleId> = ok.keys().cloned().collect();
        // Failed attempts whose write landed anyway are leaks; GC frees exactly those.
        let freed = ipam.gc(live.clone()).await.expect("gc");
        let failed_handles: BTreeSet<&str> = failed.iter().map(|(h, _)| h.as_str()).collect();
        for (ip, h) in &freed {
            assert!(
                failed_handles.contains(h.as_str()),
                "gc freed {ip} of live-looking {h}"
            );
        }
        let report = ipam.check(false, Some(live.into())).await.expect("check");
        assert!(report.is_clean(), "check after gc: {:#?}", report.problems);
        let usage = ipam.usage().await.expect("usage");
        let in_use: u64 = usage.pools.iter().map(|p| p.in_use).sum();
        assert_eq!(in_use as usize, ok.len(), "0 leaks: allocated = successes");
    });
    (ok.len(), failed.len())
}

#[test]
fn eight_processes_on_etcd_through_a_stop_and_a_restart() {
    let mut etcd = Etcd::start();
    let ds = etcd.datastore();
    add_pool(&ds);
    let dir = tempfile::tempdir().expect("temp dir");
    let pace = Pace::measure(&ds, &dir.path().join("calibration"));
    // An outage costs the children at most one retry budget on top of their pace.
    let outage = RetryPolicy::default().budget;
    let started = Instant::now();
    let mut ch = spawn_children(&ds, dir.path());
    ch.store_report = Box::new(etcd.disk_reporter());
    let total = NODES * PER_NODE;
    wait_for_progress(&mut ch, total / 4, pace, Duration::ZERO);
    eprintln!("etcd, before the pause: {}", ch.summary());
    // A frozen etcd: connections stay up, nothing answers.
    etcd.pause();
    std::thread::sleep(Duration::from_secs(2));
    etcd.resume();
    wait_for_progress(&mut ch, total / 2, pace, outage);
    eprintln!("etcd, before the crash: {}", ch.summary());
    // A crashed etcd, down for a while, back on the same data dir.
    etcd.kill9();
    std::thread::sleep(Duration::from_secs(2));
    etcd.restart();
    wait_for_exit(&mut ch, pace, outage);
    let elapsed = started.elapsed();
    let (ok, failed) = verify(&ds, &ch.records, ch.count);
    eprintln!("etcd: {ok} allocated, {failed} failed clearly, in {elapsed:?}");
    eprintln!("etcd: {}", ch.summary());
    assert!(ok >= total * 99 / 100, "too many failures: {failed}");
}

#[test]
fn eight_processes_on_the_file_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ds = format!("file:{}", dir.path().join("ipam.json").display());
    add_pool(&ds);
    // Every write rewrites the whole file under one lock: the children take turns, and a
    // write costs more as the file grows. So the pace to compare with is one process's
    // alone on the empty store and on the full one, measured after the run.
    let before = Pace::measure(&ds, &dir.path().join("calibration-empty"));
    let started = Instant::now();
    let mut ch = spawn_children(&ds, dir.path());
    wait_for_all(&mut ch);
    let elapsed = started.elapsed();
    eprintln!("file: {}", ch.summary());
    let after = Pace::measure(&ds, &dir.path().join("calibration-full"));
    let pace = Pace {
        single: (before.single + after.single) / 2,
    };
    let total = NODES * PER_NODE;
    assert!(
        elapsed <= pace.budget(total),
        "{total} attempts took {elapsed:?}, more than {:?}: {}",
        pace.budget(total),
        ch.summary()
    );
    let (ok, failed) = verify(&ds, &ch.records, ch.count);
    eprintln!("file: {ok} allocated, {failed} failed clearly, in {elapsed:?}");
    assert_eq!(
        failed, 0,
        "the file store has no outage to excuse a failure"
    );
}

#[path = "support/kube.rs"]
mod kube_support;

/// Eight nodes on the Kubernetes datastore: a real kube-apiserver with serval's CRDs,
/// which every child reaches through `KUBECONFIG`, as the agent and the CNI plugin do.
/// The pool has four blocks for eight nodes, so that at least four of them borrow from
/// blocks other nodes are writing: the children meet `resourceVersion` conflicts (the
/// server's 409) and retry them, and no address may be given twice.
#[test]
fn eight_processes_on_kubernetes() {
    const PER_NODE_KUBE: usize = 60;
    serval_integration::scenario("ipam-concurrency-kube", |test| {
        let api = kube_support::start(test.path(), &[])?;
        // This process's own store (pool, calibration, verify) and the children it starts
        // read it. No other test of this binary looks at KUBECONFIG.
        std::env::set_var("KUBECONFIG", api.admin_kubeconfig());
        let ds = "kubernetes";
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = select::open(&ds.parse().expect("datastore"))
                .await
                .expect("open");
            // 512 addresses, 94% of them allocated in the end.
            let mut p = IpPool::new(
                PoolName::new("pods").unwrap(),
                "10.128.0.0/23".parse().unwrap(),
            );
            p.block_size = 25;
            Ipam::new(store).add_pool(p).await.expect("pool");
        });
        let pace = Pace::measure(ds, &test.path().join("calibration"));
        let nodes: Vec<String> = (0..NODES).map(|n| format!("node-{n}")).collect();
        let mut ch = spawn(ds, test.path(), &nodes, PER_NODE_KUBE);
        wait_for_exit(&mut ch, pace, Duration::ZERO);
        let elapsed = ch.started.elapsed();
        eprintln!("kubernetes: {}", ch.summary());
        let (ok, failed) = verify(ds, &ch.records, ch.count);
        let conflicts: u64 = ch
            .records
            .iter()
            .filter_map(|r| std::fs::read_to_string(stats_path(r)).ok())
            .filter_map(|t| ChildStats::parse(&t))
            .map(|s| s.store.conflicts)
            .sum();
        eprintln!(
            "kubernetes: {ok} allocated, {failed} failed clearly, in {elapsed:?} \
             ({:.1}/s); {conflicts} conflicts met and retried",
            ok as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(failed, 0, "no outage here to excuse a failure");
        assert!(
            conflicts > 0,
            "eight nodes on four blocks never met a conflict"
        );
        Ok(())
    });
}
