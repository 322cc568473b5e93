//! The conformance suite on a real etcd, each case under its own key prefix, plus what
//! only etcd does: the documented key layout, watch across a restart, requests while etcd
//! is stopped.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::store::etcd::EtcdStore;
use ipam::store::select::EtcdConfig;
use ipam::store::{conformance, Kind, Store, WatchEvent};
use ipam::{Ipam, StoreError};
use support::etcd::Etcd;

fn config(etcd: &Etcd, prefix: &str) -> EtcdConfig {
    let mut c = EtcdConfig::new(vec![etcd.endpoint()]);
    c.prefix = prefix.to_owned();
    c.timeout = Duration::from_millis(1500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let etcd = Etcd::start();
    let n = AtomicUsize::new(0);
    conformance::run(|| {
        let c = config(
            &etcd,
            &format!("/conformance/{}/ipam/v1", n.fetch_add(1, Ordering::SeqCst)),
        );
        async move { Arc::new(EtcdStore::connect(c).await.expect("connect")) as Arc<dyn Store> }
    })
    .await;
}

fn etcdctl_get_keys(etcd: &Etcd, prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            "--prefix",
            "--keys-only",
            prefix,
        ])
        .output()
        .expect("etcdctl is missing: install Debian's `etcd-client` package");
    assert!(
        out.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_follow_the_documented_layout() {
    let etcd = Etcd::start();
    let store = Arc::new(
        EtcdStore::connect(config(&etcd, "/serval/ipam/v1"))
            .await
            .expect("connect"),
    );
    let ipam = Ipam::new(store);
    let mut p = IpPool::new(
        PoolName::new("default").unwrap(),
        "10.65.0.0/16".parse().unwrap(),
    );
    p.block_size = 26;
    ipam.add_pool(p).await.expect("pool");
    let req = AutoAssignRequest::new(
        HandleId::new("k8s-pod-network.abc").unwrap(),
        NodeInfo::new(NodeName::new("node-1").unwrap()),
        1,
        0,
    );
    let got = ipam.auto_assign(req).await.expect("assign");
    let block = format!("{}", ipnet::IpNet::new(got.v4[0], 26).unwrap().trunc());
    let mut keys = etcdctl_get_keys(&etcd, "/serval/ipam/v1/");
    keys.sort();
    assert_eq!(
        keys,
        vec![
            format!("/serval/ipam/v1/affinity/node-1/{block}"),
            format!("/serval/ipam/v1/blocks/{block}"),
            "/serval/ipam/v1/handles/k8s-pod-network.abc".to_owned(),
            "/serval/ipam/v1/pools/default".to_owned(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_etcd_is_unavailable_then_recovers() {
    let mut etcd = Etcd::start();
    let store = Arc::new(
        EtcdStore::connect(config(&etcd, "/t/ipam/v1"))
            .await
            .expect("connect"),
    );
    let ipam = Ipam::new(store.clone());
    ipam.add_pool(IpPool::new(
        PoolName::new("p").unwrap(),
        "10.1.0.0/16".parse().unwrap(),
    ))
    .await
    .expect("pool");
    etcd.pause();
    let err = store
        .list(&ipam::store::ListFilter::Kind(Kind::Pool))
        .await
        .expect_err("paused etcd answers nothing");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    etcd.resume();
    etcd.kill9();
    let err = store
        .list(&ipam::store::ListFilter::Kind(Kind::Pool))
        .await
        .expect_err("dead etcd");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    // An allocation started while etcd is down completes once it is back.
    let ipam2 = ipam.clone();
    let pending = tokio::spawn(async move {
        ipam2
            .auto_assign(AutoAssignRequest::new(
                HandleId::new("h").unwrap(),
                NodeInfo::new(NodeName::new("n").unwrap()),
                1,
                0,
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.restart();
    let got = pending
        .await
        .expect("task")
        .expect("allocation after restart");
    assert_eq!(got.v4.len(), 1);
    assert!(ipam.check(false, None).await.expect("check").is_clean());
}

async fn next(w: &mut ipam::store::WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch event within 20 s")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resyncs_after_restart() {
    let mut etcd = Etcd::start();
    let store = Arc::new(
        EtcdStore::connect(config(&etcd, "/w/ipam/v1"))
            .await
            .expect("connect"),
    );
    let ipam = Ipam::new(store.clone());
    let mut w = store.watch(&[Kind::Pool]).await.expect("watch");
    assert_eq!(
        next(&mut w).await.expect("event"),
        WatchEvent::Resync(vec![])
    );
    ipam.add_pool(IpPool::new(
        PoolName::new("a").unwrap(),
        "10.1.0.0/16".parse().unwrap(),
    ))
    .await
    .expect("pool");
    assert!(matches!(
        next(&mut w).await.expect("event"),
        WatchEvent::Put(_)
    ));
    etcd.kill9();
    etcd.restart();
    ipam.add_pool(IpPool::new(
        PoolName::new("b").unwrap(),
        "10.2.0.0/16".parse().unwrap(),
    ))
    .await
    .expect("pool after restart");
    // Either the watch carried on (a Put for b) or it listed again (a Resync holding b).
    loop {
        match next(&mut w).await {
            Ok(WatchEvent::Put(v)) if v.value.key().to_string() == "pool b" => break,
            Ok(WatchEvent::Resync(objs))
                if objs.iter().any(|o| o.value.key().to_string() == "pool b") =>
            {
                break
            }
            Ok(_) | Err(StoreError::Unavailable { .. }) => continue,
            Err(e) => panic!("watch error: {e}"),
        }
    }
}
