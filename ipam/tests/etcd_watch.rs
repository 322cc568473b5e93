//! What the etcd store's watch costs etcd, read from etcd's own metrics: a watcher is sent
//! only the kinds it asked for, and an idle watch stays one gRPC stream.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use ipam::model::{Block, Handle, HandleId, NodeName};
use ipam::store::etcd::EtcdStore;
use ipam::store::select::EtcdConfig;
use ipam::store::{Kind, Object, Store, WatchEvent, WatchStream, Write};
use support::etcd::Etcd;

fn config(etcd: &Etcd) -> EtcdConfig {
    let mut c = EtcdConfig::new(vec![etcd.endpoint()]);
    c.prefix = "/serval/ipam/v1".to_owned();
    c.timeout = Duration::from_millis(1500);
    c
}

async fn next(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch event within 20 s")
        .expect("stream open")
        .expect("no watch error")
}

fn handle(i: usize) -> Object {
    Object::Handle(Handle {
        handle_id: HandleId::new(format!("k8s-pod-network.pod{i}")).unwrap(),
        block: BTreeMap::new(),
    })
}

/// Watch events etcd has sent to its watchers so far.
fn events_sent(etcd: &Etcd) -> f64 {
    etcd.metric("etcd_debugging_mvcc_events_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_blocks_is_sent_no_handle_event() {
    let etcd = Etcd::start();
    let store = Arc::new(EtcdStore::connect(config(&etcd)).await.expect("connect"));
    let mut w = store.watch(&[Kind::Block]).await.expect("watch");
    assert_eq!(next(&mut w).await, WatchEvent::Resync(vec![]));
    let before = events_sent(&etcd);
    for i in 0..20 {
        store
            .commit(&[Write::create(handle(i))])
            .await
            .expect("handle write");
    }
    let block = Block::new(
        "10.65.0.64/26".parse().unwrap(),
        Some(NodeName::new("node-1").unwrap()),
    );
    store
        .commit(&[Write::create(Object::Block(block.clone()))])
        .await
        .expect("block write");
    // The watch is ordered: the block's event comes after anything the handles caused.
    match next(&mut w).await {
        WatchEvent::Put(v) => assert_eq!(v.value, Object::Block(block)),
        other => panic!("expected the block's Put first, got {other:?}"),
    }
    let sent = events_sent(&etcd) - before;
    assert_eq!(
        sent, 1.0,
        "etcd sent {sent} watch events for 20 handle writes and 1 block write to a watcher \
         of blocks only: it should send the block's alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_stays_one_stream() {
    let etcd = Etcd::start();
    let store = Arc::new(EtcdStore::connect(config(&etcd)).await.expect("connect"));
    let mut w = store
        .watch(&[Kind::Pool, Kind::Block, Kind::Affinity])
        .await
        .expect("watch");
    assert_eq!(next(&mut w).await, WatchEvent::Resync(vec![]));
    let streams = |etcd: &Etcd| {
        etcd.metric(
            "grpc_server_started_total",
            &[
                r#"grpc_method="Watch""#,
                r#"grpc_service="etcdserverpb.Watch""#,
            ],
        )
    };
    let ranges =
        |etcd: &Etcd| etcd.metric("grpc_server_started_total", &[r#"grpc_method="Range""#]);
    let (streams0, ranges0) = (streams(&etcd), ranges(&etcd));
    assert_eq!(streams0, 1.0, "one Watch stream opened");
    // Longer than the request timeout, the keepalive interval and etcd's keepalive
    // enforcement (a client pinging more often than every 5 s is sent away).
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        if let Ok(ev) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
            panic!("an idle watch reported {ev:?}");
        }
        let (s, r) = (streams(&etcd), ranges(&etcd));
        assert!(
            s == streams0 && r == ranges0,
            "an idle watch opened {} more Watch streams and made {} more Range requests \
             after {:?}",
            s - streams0,
            r - ranges0,
            Duration::from_secs(12) - until.saturating_duration_since(Instant::now()),
        );
    }
    assert_eq!(
        etcd.metric("etcd_debugging_mvcc_watch_stream_total", &[]),
        1.0,
        "one watch stream open at the end"
    );
}
