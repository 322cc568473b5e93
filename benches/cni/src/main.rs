//! ADD and DEL latency of serval's CNI plugin against the reference bridge + host-local
//! plugins, on the same machine in the same run.
//!
//! Each cycle creates a pod namespace, runs ADD, then DEL, then removes the namespace,
//! for serval and for bridge (with host-local IPAM) in alternating order, each plugin
//! started exactly as a runtime starts it (environment + stdin, inside a "node"
//! namespace the bench creates, so the host's own network is never touched). Both keep
//! their state on the same disk (serval's embedded file store, host-local's data dir).
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/tmp/serval-target-cni
//! cargo build --release -p cni -p serval-cni-bench
//! $CARGO_TARGET_DIR/release/serval-cni-bench --cycles 200
//! ```

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::model::{IpPool, PoolName};
use ipam::store::file::FileStore;
use serde_json::{json, Value};
use serval_integration::Netns;

struct Options {
    cycles: usize,
    warmup: usize,
    serval: PathBuf,
    cni_dir: PathBuf,
    state_dir: PathBuf,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        cycles: 200,
        warmup: 10,
        serval: exe.with_file_name("serval-cni"),
        cni_dir: PathBuf::from("/usr/lib/cni"),
        state_dir: PathBuf::from("/var/tmp"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--cycles" => o.cycles = value()?.parse().map_err(|e| format!("--cycles: {e}"))?,
            "--warmup" => o.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--serval" => o.serval = value()?.into(),
            "--cni-dir" => o.cni_dir = value()?.into(),
            "--state-dir" => o.state_dir = value()?.into(),
            other => return Err(format!("unknown argument {other}; see the file's docs")),
        }
    }
    for p in [
        &o.serval,
        &o.cni_dir.join("bridge"),
        &o.cni_dir.join("host-local"),
    ] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing (build serval-cni with `cargo build --release -p cni`; the reference plugins come with containernetworking-plugins)",
                p.display()
            ));
        }
    }
    Ok(o)
}

/// A plugin under test.
struct Subject {
    label: &'static str,
    bin: PathBuf,
    conf: Value,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// Runs `bin` inside the node namespace as a runtime would.
fn invoke(
    node: &std::fs::File,
    bin: &Path,
    cni_dir: &Path,
    verb: &str,
    pod: &Netns,
    id: &str,
    conf: &Value,
) -> Result<Duration, String> {
    let ns_fd = node.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_dir)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={id};K8S_POD_INFRA_CONTAINER_ID={id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns(2) is async-signal-safe and touches only the child's namespace.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let input = conf.to_string();
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {verb} failed: {}{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    if let Err(e) = bench() {
        eprintln!("serval-cni-bench: {e}");
        std::process::exit(1);
    }
}

fn bench() -> Result<(), String> {
    let o = options()?;
    let node = Netns::new().map_err(|e| e.to_string())?;
    node.enable_forwarding().map_err(|e| e.to_string())?;
    let node_fd =
        std::fs::File::open(format!("/run/netns/{}", node.name())).map_err(|e| e.to_string())?;
    let state = tempfile_dir(&o.state_dir)?;
    let store_path = state.join("ipam.json");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ipam = ipam::Ipam::new(Arc::new(FileStore::new(&store_path)));
        let pool = IpPool::new(
            PoolName::new("bench").map_err(|e| e.to_string())?,
            "10.200.0.0/16".parse().map_err(|e| format!("{e}"))?,
        );
        ipam.add_pool(pool).await.map_err(|e| e.to_string())
    })?;
    let version = "1.0.0";
    let serval_conf = json!({
        "cniVersion": version, "name": "bench", "type": "serval",
        "datastore": format!("file:{}", store_path.display()),
        "nodename": "bench-node", "mtu": 1500,
        "ipam_lock_file": state.join("ipam.lock"),
        "ready_file": state.join("ready"),
        "log_file_path": state.join("cni.log"),
        "ipam": {"type": "serval-ipam"},
    });
    let bridge_conf = json!({
        "cniVersion": version, "name": "bench-bridge", "type": "bridge",
        "bridge": "cni0", "isGateway": true, "mtu": 1500,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.0.0/16"}]],
                 "dataDir": state.join("host-local")},
    });
    let mut subjects = [
        Subject {
            label: "serval",
            bin: o.serval.clone(),
            conf: serval_conf,
            add: Vec::new(),
            del: Vec::new(),
        },
        Subject {
            label: "bridge+host-local",
            bin: o.cni_dir.join("bridge"),
            conf: bridge_conf,
            add: Vec::new(),
            del: Vec::new(),
        },
    ];
    let mut ns_times = Vec::new();
    for cycle in 0..o.warmup + o.cycles {
        // Alternate who goes first, so neither always runs on a warmer cache.
        let order: [usize; 2] = if cycle % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = &mut subjects[i];
            let t = Instant::now();
            let pod = Netns::new().map_err(|e| e.to_string())?;
            let ns_time = t.elapsed();
            let id = format!("bench{cycle:06}{i}");
            let add = invoke(&node_fd, &s.bin, &o.cni_dir, "ADD", &pod, &id, &s.conf)?;
            let del = invoke(&node_fd, &s.bin, &o.cni_dir, "DEL", &pod, &id, &s.conf)?;
            drop(pod);
            if cycle >= o.warmup {
                s.add.push(add);
                s.del.push(del);
                ns_times.push(ns_time);
            }
        }
    }
    ns_times.sort();
    println!(
        "{} cycles per plugin (after {} warm-up), CNI {version}, node and pods in network namespaces",
        o.cycles, o.warmup
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "ADD+DEL p50"
    );
    let mut rows = Vec::new();
    for s in &mut subjects {
        s.add.sort();
        s.del.sort();
        let mut both: Vec<Duration> = s.add.iter().zip(&s.del).map(|(a, d)| *a + *d).collect();
        both.sort();
        let row = [
            percentile(&s.add, 50),
            percentile(&s.add, 99),
            percentile(&s.del, 50),
            percentile(&s.del, 99),
            percentile(&both, 50),
        ];
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>12}   (ms)",
            s.label,
            ms(row[0]),
            ms(row[1]),
            ms(row[2]),
            ms(row[3]),
            ms(row[4])
        );
        rows.push(row);
    }
    let ratio = |k: usize| rows[0][k].as_secs_f64() / rows[1][k].as_secs_f64().max(1e-9);
    println!(
        "{:<20} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x {:>11.2}x   (serval / reference)",
        "ratio",
        ratio(0),
        ratio(1),
        ratio(2),
        ratio(3),
        ratio(4)
    );
    println!(
        "namespace creation (not in the figures above): p50 {} ms, p99 {} ms",
        ms(percentile(&ns_times, 50)),
        ms(percentile(&ns_times, 99))
    );
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn tempfile_dir(base: &Path) -> Result<PathBuf, String> {
    let dir = base.join(format!("serval-cni-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
