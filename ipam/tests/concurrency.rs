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
use ipam::store::select::{self, Datastore};
use ipam::Ipam;
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
        let ipam = Ipam::new(store);
        let node_name = NodeName::new(node.clone()).expect("node name");
        for i in 0..count {
            let handle = format!("{node}-h{i}");
            let req = AutoAssignRequest::new(
                HandleId::new(handle.clone()).expect("handle"),
                NodeInfo::new(node_name.clone()),
                1,
                0,
            );
            let line = match ipam.auto_assign(req).await {
                Ok(got) if got.v4.len() == 1 => format!("ok {handle} {}\n", got.v4[0]),
                Ok(got) => format!("err {handle} wrong number of addresses: {got:?}\n"),
                Err(e) => format!("err {handle} {}\n", e.to_string().replace('\n', " ")),
            };
            out.write_all(line.as_bytes()).expect("record");
        }
    });
}

struct Children {
    procs: Vec<(String, Child)>,
    records: Vec<PathBuf>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_children(datastore: &str, dir: &Path) -> Children {
    let exe = std::env::current_exe().expect("test binary");
    let mut ch = Children {
        procs: Vec::new(),
        records: Vec::new(),
    };
    for n in 0..NODES {
        let node = format!("node-{n}");
        let out = dir.join(format!("{node}.records"));
        let child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SERVAL_DATASTORE", datastore)
            .env(ENV_NODE, &node)
            .env(ENV_OUT, &out)
            .env(ENV_COUNT, PER_NODE.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        ch.procs.push((node, child));
        ch.records.push(out);
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

/// Waits until the children recorded `n` attempts in total.
fn wait_for_progress(ch: &mut Children, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done = lines_done(&ch.records);
        if done >= n {
            return;
        }
        for (node, c) in &mut ch.procs {
            if let Ok(Some(st)) = c.try_wait() {
                if !st.success() {
                    panic!("{node} exited with {st} after {done} attempts in total");
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} attempts within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_exit(ch: &mut Children, within: Duration) {
    let deadline = Instant::now() + within;
    for (node, c) in &mut ch.procs {
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                assert!(st.success(), "{node} exited with {st}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node} still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
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

/// Checks the records against the store; returns (successes, failures).
fn verify(datastore: &str, records: &[PathBuf]) -> (usize, usize) {
    let mut ok: BTreeMap<HandleId, IpAddr> = BTreeMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for p in records {
        let text = std::fs::read_to_string(p).expect("records");
        assert_eq!(
            text.lines().count(),
            PER_NODE,
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
        let report = ipam.check(false, Some(live)).await.expect("check");
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
    let started = Instant::now();
    let mut ch = spawn_children(&ds, dir.path());
    let total = NODES * PER_NODE;
    wait_for_progress(&mut ch, total / 4, Duration::from_secs(300));
    // A frozen etcd: connections stay up, nothing answers.
    etcd.pause();
    std::thread::sleep(Duration::from_secs(2));
    etcd.resume();
    wait_for_progress(&mut ch, total / 2, Duration::from_secs(300));
    // A crashed etcd, down for a while, back on the same data dir.
    etcd.kill9();
    std::thread::sleep(Duration::from_secs(2));
    etcd.restart();
    wait_for_exit(&mut ch, Duration::from_secs(600));
    let elapsed = started.elapsed();
    let (ok, failed) = verify(&ds, &ch.records);
    eprintln!("etcd: {ok} allocated, {failed} failed clearly, in {elapsed:?}");
    assert!(ok >= total * 99 / 100, "too many failures: {failed}");
}

#[test]
fn eight_processes_on_the_file_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ds = format!("file:{}", dir.path().join("ipam.json").display());
    add_pool(&ds);
    let started = Instant::now();
    let mut ch = spawn_children(&ds, dir.path());
    wait_for_exit(&mut ch, Duration::from_secs(900));
    let elapsed = started.elapsed();
    let (ok, failed) = verify(&ds, &ch.records);
    eprintln!("file: {ok} allocated, {failed} failed clearly, in {elapsed:?}");
    assert_eq!(
        failed, 0,
        "the file store has no outage to excuse a failure"
    );
}
