//! Allocations per second for the file and etcd stores, one node and eight concurrent
//! nodes. The eight nodes are eight tokio tasks in this process, each with its own store
//! connection (its own etcd client; its own file handle and lock), allocating one address
//! per handle as the CNI plugin does. etcd is started here on loopback with a temp data
//! dir (Debian's `etcd-server`), fsync on as in production.
//!
//! ```text
//! cargo run --release -p serval-benches --bin ipam-alloc-rate -- [--per-node N] [--store file|etcd|all]
//! ```

// Shared with the tests; the example uses only part of it.
#[allow(dead_code)]
#[path = "../../../ipam/tests/support/etcd.rs"]
mod etcd_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::store::etcd::EtcdStore;
use ipam::store::file::FileStore;
use ipam::store::select::EtcdConfig;
use ipam::store::Store;
use ipam::Ipam;

#[derive(Clone)]
enum Target {
    File(std::path::PathBuf),
    Etcd(String, String),
}

impl Target {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Target::File(p) => Arc::new(FileStore::new(p)),
            Target::Etcd(ep, prefix) => {
                let mut c = EtcdConfig::new(vec![ep.clone()]);
                c.prefix = prefix.clone();
                Arc::new(EtcdStore::connect(c).await.expect("connect to etcd"))
            }
        }
    }
}

/// Runs `nodes` tasks allocating `per_node` addresses each; returns allocations/s.
async fn measure(target: Target, nodes: usize, per_node: usize) -> f64 {
    let store = target.open().await;
    let mut p = IpPool::new(
        PoolName::new("bench").unwrap(),
        "10.128.0.0/14".parse().unwrap(),
    );
    p.block_size = 26;
    Ipam::new(store).add_pool(p).await.expect("pool");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..nodes {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let ipam = Ipam::new(target.open().await);
            let node = NodeInfo::new(NodeName::new(format!("node-{n}")).unwrap());
            let mut got: Vec<IpAddr> = Vec::with_capacity(per_node);
            for i in 0..per_node {
                let h = HandleId::new(format!("node-{n}-{i}")).unwrap();
                let a = ipam
                    .auto_assign(AutoAssignRequest::new(h, node.clone(), 1, 0))
                    .await
                    .expect("allocation");
                got.extend(a.v4);
            }
            got
        }));
    }
    let mut all = BTreeSet::new();
    let mut total = 0;
    for t in tasks {
        for ip in t.await.expect("task") {
            total += 1;
            assert!(all.insert(ip), "{ip} handed out twice");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(total, nodes * per_node);
    total as f64 / secs
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let per_node: usize = arg("--per-node")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let which = arg("--store").unwrap_or_else(|| "all".into());
    println!(
        "{:<6} {:>6} {:>10} {:>12} {:>10}",
        "store", "nodes", "allocs", "allocs/s", "dups"
    );
    // `measure` panics on a duplicate, so a printed row had none.
    let run = |name: &'static str, nodes: usize, rate: f64| {
        println!(
            "{name:<6} {nodes:>6} {:>10} {rate:>12.0} {:>10}",
            nodes * per_node,
            0
        );
    };
    if which == "all" || which == "file" {
        for nodes in [1, 8] {
            let dir = tempfile::tempdir().expect("temp dir");
            let rate = measure(Target::File(dir.path().join("ipam.json")), nodes, per_node).await;
            run("file", nodes, rate);
        }
    }
    if which == "all" || which == "etcd" {
        let etcd = etcd_support::Etcd::start();
        for (i, nodes) in [1, 8].into_iter().enumerate() {
            let rate = measure(
                Target::Etcd(etcd.endpoint(), format!("/bench{i}/ipam/v1")),
                nodes,
                per_node,
            )
            .await;
            run("etcd", nodes, rate);
        }
    }
}
