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
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never reported pool b"
        );
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

fn etcdctl(etcd: &Etcd, args: &[&str]) -> String {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(etcd.endpoint())
        .args(args)
        .output()
        .expect("etcdctl is missing: install Debian's `etcd-client` package");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_authentication() {
    let etcd = Etcd::start();
    etcdctl(
        &etcd,
        &["user", "add", "root:rootpw", "--interactive=false"],
    );
    etcdctl(&etcd, &["user", "grant-role", "root", "root"]);
    etcdctl(
        &etcd,
        &["user", "add", "serval:s3cret", "--interactive=false"],
    );
    etcdctl(&etcd, &["role", "add", "ipam"]);
    etcdctl(
        &etcd,
        &[
            "role",
            "grant-permission",
            "ipam",
            "--prefix=true",
            "readwrite",
            "/serval/",
        ],
    );
    etcdctl(&etcd, &["user", "grant-role", "serval", "ipam"]);
    etcdctl(&etcd, &["auth", "enable"]);

    let mut c = config(&etcd, "/serval/ipam/v1");
    c.username = Some("serval".into());
    c.password = Some("wrong".into());
    let err = EtcdStore::connect(c.clone())
        .await
        .expect_err("a wrong password is refused");
    assert!(matches!(err, StoreError::Rejected { .. }), "{err}");

    c.password = Some("s3cret".into());
    let store = Arc::new(
        EtcdStore::connect(c.clone())
            .await
            .expect("connect with the right password"),
    );
    let ipam = Ipam::new(store);
    ipam.add_pool(IpPool::new(
        PoolName::new("p").unwrap(),
        "10.1.0.0/16".parse().unwrap(),
    ))
    .await
    .expect("write with permission");

    // Outside the granted prefix the role has no permission.
    c.prefix = "/elsewhere/ipam/v1".into();
    let other = Ipam::new(Arc::new(EtcdStore::connect(c).await.expect("connect")));
    let err = other
        .add_pool(IpPool::new(
            PoolName::new("p").unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ))
        .await
        .expect_err("no permission");
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let etcd = Etcd::start_tls();
    let tls = etcd.tls().expect("tls files").clone();
    let mut c = config(&etcd, "/serval/ipam/v1");
    c.tls.ca_file = Some(tls.ca.clone());
    // Without a client certificate the server refuses the handshake.
    let refused = async {
        let store = EtcdStore::connect(c.clone()).await?;
        store.list(&ipam::store::ListFilter::Kind(Kind::Pool)).await
    };
    assert!(refused.await.is_err(), "etcd requires a client certificate");
    c.tls.cert_file = Some(tls.client_cert.clone());
    c.tls.key_file = Some(tls.client_key.clone());
    let ipam = Ipam::new(Arc::new(
        EtcdStore::connect(c).await.expect("connect over TLS"),
    ));
    ipam.add_pool(IpPool::new(
        PoolName::new("p").unwrap(),
        "10.1.0.0/16".parse().unwrap(),
    ))
    .await
    .expect("write over TLS");
    assert_eq!(ipam.pools().await.expect("read over TLS").len(), 1);
}
