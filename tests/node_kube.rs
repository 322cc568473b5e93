//! The agent's Kubernetes IO against kube's `tower_test` mock API server: the Lease
//! writes (create, renew, a lost race answered 409), the ServalNodeStatus server-side
//! apply request, password Secrets (found, missing, forbidden, changed), the Node read
//! for the node's settings, and the node collector's release of a deleted node's
//! addresses, blocks and ServalNode through the IPAM store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::store::memory::MemStore;
use ipam::store::{Object, Store, StoreExt as _, Write};
use ipam::Ipam;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::client::Body;
use serde_json::{json, Value};
use serval::node::kube::lease::{LeaseAction, LeaseState};
use serval::node::kube::{
    gc, gc_pass, node_settings, read_lease, read_node, secrets, status_report, write_lease,
};
use serval::node::status::NodeStatus;
use serval::resources::node_status::ServalNodeStatus;
use serval::resources::{ClusterResource, ResourceKind};

/// One request as the mock saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    content_type: Option<String>,
    body: Option<Value>,
}

type Handler = dyn Fn(&Seen) -> (u16, Value) + Send + Sync;

/// A kube client whose requests `handler` answers; every request is recorded.
fn mock(handler: Arc<Handler>) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.expect("request body");
            let s = Seen {
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: (!bytes.is_empty())
                    .then(|| serde_json::from_slice(&bytes).expect("json body")),
            };
            let (code, answer) = handler(&s);
            log.lock().unwrap().push(s);
            send.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(svc, "default"), seen)
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn lease_json(holder: &str, rv: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "serval-node-gc", "namespace": "kube-system", "resourceVersion": rv},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 1}})
}

#[tokio::test]
async fn lease_is_created_renewed_and_a_lost_race_is_not_leadership() {
    let handler: Arc<Handler> = Arc::new(|s: &Seen| match (s.method.clone(), s.uri.as_str()) {
        (Method::POST, u)
            if u.starts_with("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases") =>
        {
            let mut b = s.body.clone().unwrap();
            b["metadata"]["resourceVersion"] = json!("1");
            (201, b)
        }
        (Method::PUT, u)
            if u.starts_with(
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/serval-node-gc",
            ) =>
        {
            let b = s.body.clone().unwrap();
            if b["metadata"]["resourceVersion"] == "1" {
                let mut b = b;
                b["metadata"]["resourceVersion"] = json!("2");
                (200, b)
            } else {
                (409, status(409, "Conflict"))
            }
        }
        (
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/serval-node-gc",
        ) => (200, lease_json("node-a", "2")),
        _ => (404, status(404, "NotFound")),
    });
    let (client, seen) = mock(handler);
    let api: Api<Lease> = Api::namespaced(client, "kube-system");
    let t0 = Instant::now();
    let mut a = LeaseState::new("node-a", Duration::from_secs(15), Duration::from_secs(5));
    a.observe(None, t0);
    let made = write_lease(&api, "serval-node-gc", &a, &LeaseAction::Create, None)
        .await
        .expect("create");
    a.written(made, t0);
    assert!(a.is_leader(t0));
    let create = seen.lock().unwrap()[0].clone();
    assert_eq!(
        create.body.as_ref().unwrap()["spec"]["holderIdentity"],
        "node-a"
    );
    assert_eq!(
        create.body.as_ref().unwrap()["spec"]["leaseDurationSeconds"],
        15
    );
    // Renewal with the version read, keeping the labels and annotations of the Lease
    // read (Helm knows the Lease the chart creates by them).
    let renew = LeaseAction::Take {
        version: "1".into(),
        transition: false,
    };
    let read = kube::api::ObjectMeta {
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "Helm".to_owned(),
        )])),
        annotations: Some(BTreeMap::from([(
            "meta.helm.sh/release-name".to_owned(),
            "serval".to_owned(),
        )])),
        ..Default::default()
    };
    let got = write_lease(&api, "serval-node-gc", &a, &renew, Some(&read))
        .await
        .expect("renew");
    assert_eq!(got.map(|r| r.version), Some("2".into()));
    let put = seen.lock().unwrap().last().cloned().expect("the renewal");
    let meta = &put.body.as_ref().unwrap()["metadata"];
    assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], "Helm");
    assert_eq!(meta["annotations"]["meta.helm.sh/release-name"], "serval");
    // Another node writing over a version that is gone loses: 409, nothing held.
    let mut b = LeaseState::new("node-b", Duration::from_secs(15), Duration::from_secs(5));
    b.observe(
        Some(serval::node::kube::lease::LeaseRecord {
            holder: Some("node-a".into()),
            duration: Duration::from_secs(15),
            // Read before node-a's renewal: stale.
            version: "0".into(),
            transitions: 1,
        }),
        t0,
    );
    let steal = b.decide(t0 + Duration::from_secs(16));
    assert!(
        matches!(
            steal,
            LeaseAction::Take {
                transition: true,
                ..
            }
        ),
        "{steal:?}"
    );
    let lost = write_lease(&api, "serval-node-gc", &b, &steal, None)
        .await
        .expect("a 409 is an answer");
    assert_eq!(lost, None);
    b.written(lost, t0 + Duration::from_secs(16));
    assert!(!b.is_leader(t0 + Duration::from_secs(16)));
    let reqs = seen.lock().unwrap().clone();
    let last = reqs.last().unwrap();
    assert_eq!(last.method, Method::PUT);
    assert_eq!(
        last.body.as_ref().unwrap()["spec"]["holderIdentity"],
        "node-b"
    );
    assert_eq!(last.body.as_ref().unwrap()["spec"]["leaseTransitions"], 2);
    assert_eq!(
        last.body.as_ref().unwrap()["metadata"]["resourceVersion"],
        "0"
    );
    let read = read_lease(&api, "serval-node-gc").await.expect("read");
    let read = read.expect("the lease exists");
    assert_eq!(read.holder.as_deref(), Some("node-a"));
    assert_eq!((read.version.as_str(), read.transitions), ("2", 1));
}

#[tokio::test]
async fn status_is_server_side_applied_on_the_status_subresource() {
    let handler: Arc<Handler> = Arc::new(|s: &Seen| {
        let mut obj = s.body.clone().unwrap_or(json!({}));
        obj["spec"] = json!({"node": "n1"});
        obj["metadata"]["resourceVersion"] = json!("5");
        (200, obj)
    });
    let (client, seen) = mock(handler);
    let api: Api<ServalNodeStatus> = Api::all(client);
    let st = NodeStatus {
        node: "n1".into(),
        ready: true,
        ..NodeStatus::default()
    };
    let now: Timestamp = "2024-05-01T10:00:00Z".parse().unwrap();
    let body = status_report::build(&st, &[], now, None, "0.1.0");
    status_report::write(&api, "n1", &body)
        .await
        .expect("apply");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.method, Method::PATCH);
    let (path, query) = req.uri.split_once('?').expect("query");
    assert_eq!(path, "/apis/serval.dev/v1/servalnodestatuses/n1/status");
    assert!(query.contains("fieldManager=serval-agent"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let sent = req.body.unwrap();
    assert_eq!(sent, status_report::apply_body("n1", &body));
    assert_eq!(sent["status"]["agent"]["state"], "Ready");
    assert!(sent.get("spec").is_none());
}

#[tokio::test]
async fn passwords_from_secrets_found_missing_forbidden_and_changed() {
    let value = Arc::new(Mutex::new("czNjcmV0")); // "s3cret"
    let v = value.clone();
    let handler: Arc<Handler> = Arc::new(move |s: &Seen| {
        match s
            .uri
            .trim_start_matches("/api/v1/namespaces/kube-system/secrets/")
        {
            "bgp" => (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp"},
                       "data": {"tor": *v.lock().unwrap()}}),
            ),
            "hidden" => (403, status(403, "Forbidden")),
            _ => (404, status(404, "NotFound")),
        }
    });
    let (client, seen) = mock(handler);
    let mut cache = secrets::SecretCache::new(client, "kube-system");
    let names: BTreeSet<String> = ["bgp", "gone", "hidden"].map(str::to_owned).into();
    let t0 = Instant::now();
    assert!(cache.due(&names, t0));
    assert!(cache.refresh(&names, t0).await, "first read is a change");
    let data = cache.data();
    assert_eq!(data["bgp"].as_ref().unwrap()["tor"], "s3cret");
    assert!(data["gone"]
        .as_ref()
        .unwrap_err()
        .contains("does not exist"));
    assert!(data["hidden"]
        .as_ref()
        .unwrap_err()
        .contains("bgpPasswordSecrets"));
    // Every request is a GET by name: the agent never lists Secrets.
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.method == Method::GET
            && r.uri.starts_with("/api/v1/namespaces/kube-system/secrets/")));
    let n = seen.lock().unwrap().len();
    assert!(!cache.due(&names, t0 + Duration::from_secs(1)));
    assert!(!cache.refresh(&names, t0 + Duration::from_secs(1)).await);
    assert_eq!(
        seen.lock().unwrap().len(),
        n,
        "nothing read before it is due"
    );
    *value.lock().unwrap() = "bjN3"; // "n3w"
    let later = t0 + secrets::REREAD;
    assert!(
        cache.refresh(&names, later).await,
        "the new password is noticed"
    );
    assert_eq!(cache.data()["bgp"].as_ref().unwrap()["tor"], "n3w");
}

#[tokio::test]
async fn node_settings_from_the_kubernetes_node() {
    let handler: Arc<Handler> = Arc::new(|s: &Seen| {
        assert_eq!(s.uri, "/api/v1/nodes/worker-1");
        (
            200,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "worker-1", "labels": {"rack": "r7"},
                                "annotations": {"projectcalico.org/IPv4Address": "10.0.0.5/24",
                                                "serval.dev/as-number": "65007"}},
                   "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.5"}]}}),
        )
    });
    let (client, _) = mock(handler);
    let n = read_node(&client, "worker-1").await.expect("node");
    let s = node_settings::from_node(&n);
    assert_eq!(
        s.v4,
        Some(node_settings::NodeAddress::Net(
            "10.0.0.5/24".parse().unwrap()
        ))
    );
    assert_eq!(s.as_number, Some(65007));
    assert_eq!(s.labels["rack"], "r7");
}

fn serval_node(name: &str) -> Write {
    let r = ClusterResource::from_parts(
        ResourceKind::ServalNode,
        name,
        BTreeMap::new(),
        json!({"bgp": {"ipv4Address": "192.0.2.1/24"}}),
    )
    .unwrap();
    Write::create(Object::Resource(r.to_stored()))
}

#[tokio::test]
async fn a_deleted_nodes_addresses_blocks_and_serval_node_are_released() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ipam = Ipam::new(store.clone());
    let mut pool = IpPool::new(
        PoolName::new("pods").unwrap(),
        "10.65.0.0/24".parse().unwrap(),
    );
    pool.block_size = 26;
    ipam.add_pool(pool).await.unwrap();
    for (node, handle) in [("live", "pod-a"), ("gone", "pod-b"), ("gone", "pod-c")] {
        ipam.auto_assign(AutoAssignRequest::new(
            HandleId::new(handle).unwrap(),
            NodeInfo::new(NodeName::new(node).unwrap()),
            1,
            0,
        ))
        .await
        .unwrap();
    }
    store
        .commit(&[serval_node("live"), serval_node("gone")])
        .await
        .unwrap();
    let (registered, affine) = gc::holders(&*store).await.unwrap();
    assert_eq!(registered, ["gone", "live"].map(str::to_owned).into());
    assert_eq!(affine, ["gone", "live"].map(str::to_owned).into());
    // No Node listed: a bad read, nothing is collected.
    assert!(gc_pass(&ipam, &BTreeSet::new()).await.unwrap().is_empty());
    let live: BTreeSet<String> = ["live".to_owned()].into();
    let done = gc_pass(&ipam, &live).await.unwrap();
    assert_eq!(done, ["gone"]);
    let gone = NodeName::new("gone").unwrap();
    assert!(store.affinities_of(&gone).await.unwrap().is_empty());
    assert!(store
        .get_handle(&HandleId::new("pod-b").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_handle(&HandleId::new("pod-c").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_resource("ServalNode", "gone")
        .await
        .unwrap()
        .is_none());
    // The live node keeps everything.
    assert!(store
        .get_handle(&HandleId::new("pod-a").unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get_resource("ServalNode", "live")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store
            .affinities_of(&NodeName::new("live").unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(ipam.check(false, None).await.unwrap().is_clean());
    // A second pass finds nothing left.
    assert!(gc_pass(&ipam, &live).await.unwrap().is_empty());
}
