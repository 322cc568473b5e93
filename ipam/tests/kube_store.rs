//! The Kubernetes store against a scripted API server: kube's client talks to a
//! `tower_test::mock` service whose other end is a small in-memory API server for the
//! `serval.dev/v1` resources (resourceVersion, 409 on a stale PUT or DELETE or an existing
//! POST, 404, label selectors, watches that wait for changes, 410 Gone on demand). Tests
//! can script failures for the next matching requests and inspect every request made.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use ipam::allocator::{AutoAssignRequest, NodeInfo};
use ipam::model::{HandleId, IpPool, NodeName, PoolName};
use ipam::store::kube::KubeStore;
use ipam::store::{conformance, Key, Kind, Store, StoreExt, WatchEvent, Write};
use ipam::{Ipam, StoreError};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    rv: u64,
    /// (plural, name) → object.
    objects: BTreeMap<(String, String), Value>,
    /// Every change: (rv, plural, event type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    /// Failures to return for the next requests matching (method, plural).
    script: VecDeque<(Method, String, u16)>,
    /// Every request: (method, path and query).
    requests: Vec<(Method, String)>,
    /// Watches from a version older than this get 410 Gone.
    expired_before: u64,
}

#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "ippools" => "IPPool",
        "ipamblocks" => "IPAMBlock",
        "blockaffinities" => "BlockAffinity",
        "ipamhandles" => "IPAMHandle",
        "ipamconfigs" => "IPAMConfig",
        _ => "Unknown",
    }
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake api state")
    }

    /// A kube client wired to this fake, and the server task.
    fn client(&self) -> kube::Client {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let api = api.clone();
                tokio::spawn(async move {
                    match api.serve(req).await {
                        Some(resp) => send.send_response(resp),
                        // A dropped connection: the client sees its request fail.
                        None => drop(send),
                    }
                });
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Makes the next request of `method` on `plural` fail with `code`; code 0 drops the
    /// connection without an answer.
    fn fail_next(&self, method: Method, plural: &str, code: u16) {
        self.lock()
            .script
            .push_back((method, plural.to_owned(), code));
    }

    fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests.clone()
    }

    /// Makes every watch from the current version on answer 410 Gone.
    fn expire_watches(&self) {
        let mut st = self.lock();
        // Like a compaction: versions before now are gone, the current one is fine.
        st.rv += 1;
        st.expired_before = st.rv;
        drop(st);
        self.changed.notify_waiters();
    }

    async fn serve(&self, req: Request<Body>) -> Option<Response<Body>> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.expect("request body");
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), urldecode(v)))
            .collect();
        let rest = path
            .strip_prefix("/apis/serval.dev/v1/")
            .unwrap_or_else(|| panic!("unexpected path {path}"));
        let (plural, name) = match rest.split_once('/') {
            Some((p, n)) => (p.to_owned(), Some(n.to_owned())),
            None => (rest.to_owned(), None),
        };
        {
            let mut st = self.lock();
            st.requests
                .push((parts.method.clone(), parts.uri.to_string()));
            let scripted = st
                .script
                .front()
                .is_some_and(|(m, p, _)| *m == parts.method && *p == plural);
            if scripted {
                let (_, _, code) = st.script.pop_front().expect("scripted failure");
                if code == 0 {
                    return None;
                }
                let reason = match code {
                    404 => "NotFound",
                    409 => "Conflict",
                    500 => "InternalError",
                    _ => "Scripted",
                };
                return Some(respond(code, &status(code, reason, "scripted failure")));
            }
        }
        if query.get("watch").map(String::as_str) == Some("true") {
            return Some(self.watch(&plural, &query).await);
        }
        let body: Option<Value> =
            (!body.is_empty()).then(|| serde_json::from_slice(&body).expect("json body"));
        let mut st = self.lock();
        let key = |n: &str| (plural.clone(), n.to_owned());
        let out = match (parts.method.clone(), name) {
            (Method::GET, None) => {
                let selector = query.get("labelSelector").cloned();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((p, _), _)| *p == plural)
                    .map(|(_, o)| o.clone())
                    .filter(|o| match &selector {
                        None => true,
                        Some(sel) => {
                            let (k, v) = sel.split_once('=').expect("k=v selector");
                            o["metadata"]["labels"][k] == v
                        }
                    })
                    .collect();
                let list = json!({"apiVersion": "serval.dev/v1", "kind": format!("{}List", kind_of(&plural)),
                                  "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
                respond(200, &list)
            }
            (Method::GET, Some(n)) => match st.objects.get(&key(&n)) {
                Some(o) => respond(200, o),
                None => respond(404, &status(404, "NotFound", "not found")),
            },
            (Method::POST, None) => {
                let mut obj = body.expect("POST body");
                let n = obj["metadata"]["name"].as_str().expect("name").to_owned();
                if st.objects.contains_key(&key(&n)) {
                    respond(409, &status(409, "AlreadyExists", "already exists"))
                } else {
                    st.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                    obj["metadata"]["uid"] = json!(format!("uid-{}", st.rv));
                    st.objects.insert(key(&n), obj.clone());
                    let rv = st.rv;
                    st.log.push((rv, plural.clone(), "ADDED", obj.clone()));
                    respond(201, &obj)
                }
            }
            (Method::PUT, Some(n)) => {
                let mut obj = body.expect("PUT body");
                match st.objects.get(&key(&n)) {
                    None => respond(404, &status(404, "NotFound", "not found")),
                    Some(cur)
                        if cur["metadata"]["resourceVersion"]
                            != obj["metadata"]["resourceVersion"] =>
                    {
                        respond(
                            409,
                            &status(409, "Conflict", "the object has been modified"),
                        )
                    }
                    Some(_) => {
                        st.rv += 1;
                        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                        st.objects.insert(key(&n), obj.clone());
                        let rv = st.rv;
                        st.log.push((rv, plural.clone(), "MODIFIED", obj.clone()));
                        respond(200, &obj)
                    }
                }
            }
            (Method::DELETE, Some(n)) => {
                let want = body.as_ref().and_then(|b| {
                    b["preconditions"]["resourceVersion"]
                        .as_str()
                        .map(str::to_owned)
                });
                match st.objects.get(&key(&n)).cloned() {
                    None => respond(404, &status(404, "NotFound", "not found")),
                    Some(cur)
                        if want.is_some()
                            && cur["metadata"]["resourceVersion"].as_str() != want.as_deref() =>
                    {
                        respond(409, &status(409, "Conflict", "precondition failed"))
                    }
                    Some(mut cur) => {
                        st.objects.remove(&key(&n));
                        st.rv += 1;
                        cur["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                        let rv = st.rv;
                        st.log.push((rv, plural.clone(), "DELETED", cur.clone()));
                        respond(200, &cur)
                    }
                }
            }
            (m, n) => panic!("unexpected request {m} {plural}/{n:?}"),
        };
        drop(st);
        self.changed.notify_waiters();
        Some(out)
    }

    /// Answers with the changes after the given version, waiting for one if there is none.
    async fn watch(&self, plural: &str, query: &BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        loop {
            let notified = self.changed.notified();
            {
                let st = self.lock();
                if from < st.expired_before {
                    let ev = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
                    return Response::new(Body::from(format!("{ev}\n").into_bytes()));
                }
                let lines: Vec<String> = st
                    .log
                    .iter()
                    .filter(|(rv, p, _, _)| *rv > from && p == plural)
                    .map(|(_, _, t, o)| json!({"type": t, "object": o}).to_string() + "\n")
                    .collect();
                if !lines.is_empty() {
                    return Response::new(Body::from(lines.concat().into_bytes()));
                }
            }
            notified.await;
        }
    }
}

fn urldecode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_store_conforms() {
    conformance::run(|| async {
        let api = FakeApi::default();
        let kinds = conformance::RESOURCE_KINDS.map(str::to_owned);
        Arc::new(KubeStore::new(api.client()).with_resource_kinds(kinds)) as Arc<dyn Store>
    })
    .await;
}

fn pool() -> IpPool {
    let mut p = IpPool::new(
        PoolName::new("pods").unwrap(),
        "10.65.0.0/24".parse().unwrap(),
    );
    p.block_size = 26;
    p
}

#[tokio::test]
async fn requests_use_resource_versions_and_labels() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()));
    let ipam = Ipam::new(store.clone());
    ipam.add_pool(pool()).await.expect("pool");
    let req = AutoAssignRequest::new(
        HandleId::new("h1").unwrap(),
        NodeInfo::new(NodeName::new("node-1").unwrap()),
        1,
        0,
    );
    let got = ipam.auto_assign(req).await.expect("assign");
    let reqs = api.requests();
    let shown: Vec<String> = reqs.iter().map(|(m, u)| format!("{m} {u}")).collect();
    // The claim: a pending affinity (POST), the block (POST), the confirmation (PUT).
    assert!(
        shown
            .iter()
            .any(|r| r.starts_with("POST /apis/serval.dev/v1/blockaffinities")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|r| r.starts_with("POST /apis/serval.dev/v1/ipamblocks")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|r| r.starts_with("PUT /apis/serval.dev/v1/blockaffinities/10-65-0-")),
        "{shown:#?}"
    );
    // A node's affinities are listed by label.
    assert!(
        shown.iter().any(|r| r.contains("blockaffinities?")
            && r.contains("labelSelector=serval.dev%2Fnode%3Dnode-1")),
        "{shown:#?}"
    );
    // The allocation: handle first, then the block, replaced with the version it read.
    let handle_post = shown
        .iter()
        .position(|r| r.starts_with("POST /apis/serval.dev/v1/ipamhandles"))
        .expect("handle created");
    let block_put = shown
        .iter()
        .rposition(|r| r.starts_with("PUT /apis/serval.dev/v1/ipamblocks/"))
        .expect("block updated");
    assert!(handle_post < block_put, "{shown:#?}");
    let st = api.lock();
    let block = st
        .objects
        .values()
        .find(|o| o["kind"] == "IPAMBlock")
        .expect("block object");
    assert_eq!(block["spec"]["affinity"], "node-1");
    assert_eq!(block["spec"]["attributes"][0]["handleId"], "h1");
    let aff = st
        .objects
        .values()
        .find(|o| o["kind"] == "BlockAffinity")
        .expect("affinity object");
    assert_eq!(aff["spec"]["state"], "confirmed");
    assert_eq!(aff["metadata"]["labels"]["serval.dev/node"], "node-1");
    let pool_obj = st
        .objects
        .values()
        .find(|o| o["kind"] == "IPPool")
        .expect("pool object");
    assert_eq!(pool_obj["metadata"]["name"], "pods");
    assert_eq!(pool_obj["spec"]["disableBGPExport"], false);
    assert!(
        pool_obj["spec"].get("name").is_none(),
        "the name lives in metadata"
    );
    assert_eq!(got.v4.len(), 1);
}

#[tokio::test]
async fn conflict_then_success_is_retried() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()));
    let ipam = Ipam::new(store.clone());
    ipam.add_pool(pool()).await.expect("pool");
    let node = NodeInfo::new(NodeName::new("node-1").unwrap());
    ipam.auto_assign(AutoAssignRequest::new(
        HandleId::new("h1").unwrap(),
        node.clone(),
        1,
        0,
    ))
    .await
    .expect("first");
    let before = api.requests().len();
    // The next handle create, then the next block update, answer 409 once each.
    api.fail_next(Method::POST, "ipamhandles", 409);
    api.fail_next(Method::PUT, "ipamblocks", 409);
    let got = ipam
        .auto_assign(AutoAssignRequest::new(
            HandleId::new("h2").unwrap(),
            node,
            1,
            0,
        ))
        .await
        .expect("succeeds after conflicts");
    assert_eq!(got.v4.len(), 1);
    let after: Vec<(Method, String)> = api.requests()[before..].to_vec();
    let posts = after
        .iter()
        .filter(|(m, u)| *m == Method::POST && u.contains("ipamhandles"))
        .count();
    let puts = after
        .iter()
        .filter(|(m, u)| *m == Method::PUT && u.contains("ipamblocks"))
        .count();
    assert_eq!(
        (posts, puts),
        (2, 2),
        "each refused write was read again and repeated: {after:#?}"
    );
    assert!(
        api.lock().script.is_empty(),
        "every scripted failure was met"
    );
    assert!(ipam.check(false, None).await.expect("check").is_clean());
    // A server error is retryable too.
    api.fail_next(Method::GET, "ippools", 500);
    ipam.pools().await.expect("list after a 500");
}

#[tokio::test]
async fn missing_objects_and_stale_writes() {
    let api = FakeApi::default();
    let store = KubeStore::new(api.client());
    let key = Key::Pool(PoolName::new("nope").unwrap());
    assert_eq!(store.get(&key).await.expect("404 is absent"), None);
    let obj = ipam::store::Object::Pool(pool());
    let rev = store
        .commit(&[Write::create(obj.clone())])
        .await
        .expect("create")[0]
        .clone()
        .expect("rev");
    let err = store
        .commit(&[Write::create(obj.clone())])
        .await
        .expect_err("exists");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    store
        .commit(&[Write::delete(obj.key(), rev.clone())])
        .await
        .expect("delete");
    let err = store
        .commit(&[Write::update(obj.clone(), rev.clone())])
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .commit(&[Write::delete(obj.key(), rev)])
        .await
        .expect_err("gone");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    api.fail_next(Method::GET, "ippools", 403);
    let err = store.list_pools().await.expect_err("forbidden");
    assert!(matches!(err, StoreError::Rejected { .. }), "{err}");
}

async fn next(w: &mut ipam::store::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn watch_relists_after_410_gone() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()));
    let ipam = Ipam::new(store.clone());
    let mut w = store.watch(&[Kind::Pool]).await.expect("watch");
    assert_eq!(next(&mut w).await, WatchEvent::Resync(vec![]));
    ipam.add_pool(pool()).await.expect("pool");
    match next(&mut w).await {
        WatchEvent::Put(v) => assert_eq!(v.value.key(), Key::Pool(PoolName::new("pods").unwrap())),
        other => panic!("{other:?}"),
    }
    api.expire_watches();
    match next(&mut w).await {
        WatchEvent::Resync(objs) => assert_eq!(objs.len(), 1, "{objs:?}"),
        other => panic!("expected a Resync after 410 Gone, got {other:?}"),
    }
    let mut p2 = IpPool::new(
        PoolName::new("more").unwrap(),
        "10.66.0.0/24".parse().unwrap(),
    );
    p2.block_size = 26;
    ipam.add_pool(p2).await.expect("pool");
    match next(&mut w).await {
        WatchEvent::Put(v) => assert_eq!(v.value.key(), Key::Pool(PoolName::new("more").unwrap())),
        other => panic!("{other:?}"),
    }
    let watches = api
        .requests()
        .iter()
        .filter(|(_, u)| u.contains("watch=true"))
        .count();
    assert!(
        watches >= 3,
        "watched again after each answer and after the relist"
    );
}

/// Every watch request so far.
fn watch_requests(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|(_, u)| u.contains("watch=true"))
        .count()
}

#[tokio::test]
async fn watch_goes_on_after_a_dropped_connection() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()));
    let ipam = Ipam::new(store.clone());
    ipam.add_pool(pool()).await.expect("pool");
    let mut w = store.watch(&[Kind::Pool]).await.expect("watch");
    match next(&mut w).await {
        WatchEvent::Resync(objs) => assert_eq!(objs.len(), 1),
        other => panic!("{other:?}"),
    }
    // The watch that follows the list loses its connection without an answer.
    api.fail_next(Method::GET, "ippools", 0);
    let item = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an item within 10 s")
        .expect("stream open");
    let err = item.expect_err("the dropped connection is reported");
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "a dropped connection is retryable: {err}"
    );
    let mut p2 = IpPool::new(
        PoolName::new("more").unwrap(),
        "10.66.0.0/24".parse().unwrap(),
    );
    p2.block_size = 26;
    ipam.add_pool(p2).await.expect("pool");
    // After the back-off the watch starts again from the listed version: the change
    // arrives as a change, without a relist.
    match next(&mut w).await {
        WatchEvent::Put(v) => assert_eq!(v.value.key(), Key::Pool(PoolName::new("more").unwrap())),
        other => panic!("expected the change after the re-watch, got {other:?}"),
    }
    assert!(
        api.lock().script.is_empty(),
        "the drop was scripted and met"
    );
    let lists = api
        .requests()
        .iter()
        // The watcher's lists are paged; the IPAM's own reads are not.
        .filter(|(m, u)| *m == Method::GET && u.contains("ippools?") && u.contains("limit="))
        .count();
    assert_eq!(
        lists,
        1,
        "no relist after a dropped connection: {:#?}",
        api.requests()
    );
    assert!(watch_requests(&api) >= 2, "watched again");
}

#[tokio::test]
async fn a_missing_crd_is_named_at_start() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()).with_resource_kinds(["BGPPeer".to_owned()]));
    // The API server does not know bgppeers.serval.dev.
    api.fail_next(Method::GET, "bgppeers", 404);
    let mut w = store
        .watch(&[Kind::Pool, Kind::Resource])
        .await
        .expect("watch");
    let item = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an item within 10 s")
        .expect("stream open");
    let err = item.expect_err("the missing CRD is the first item");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Config(_)), "{text}");
    assert!(text.contains("bgppeers.serval.dev"), "{text}");
    assert!(text.contains("charts/serval/crds"), "{text}");
    // A plain list says the same.
    api.fail_next(Method::GET, "ippools", 404);
    let err = store.list_pools().await.expect_err("404 on the list");
    assert!(err.to_string().contains("ippools.serval.dev"), "{err}");
}

#[tokio::test]
async fn a_410_during_a_multi_kind_watch_resyncs_every_kind() {
    let api = FakeApi::default();
    let store = Arc::new(KubeStore::new(api.client()));
    let ipam = Ipam::new(store.clone());
    ipam.add_pool(pool()).await.expect("pool");
    ipam.auto_assign(AutoAssignRequest::new(
        HandleId::new("h1").unwrap(),
        NodeInfo::new(NodeName::new("node-1").unwrap()),
        1,
        0,
    ))
    .await
    .expect("assign");
    let mut w = store
        .watch(&[Kind::Pool, Kind::Block])
        .await
        .expect("watch");
    let first = match next(&mut w).await {
        WatchEvent::Resync(objs) => objs,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.len(), 2, "the pool and its block: {first:?}");
    // Both watches start from a version that is now too old: 410 Gone for each.
    api.expire_watches();
    // Each kind lists again; every Resync carries both kinds, never a partial set.
    let mut resyncs = 0;
    while resyncs < 2 {
        match next(&mut w).await {
            WatchEvent::Resync(objs) => {
                let kinds: std::collections::BTreeSet<Kind> =
                    objs.iter().map(|o| o.value.kind()).collect();
                assert_eq!(kinds, [Kind::Pool, Kind::Block].into(), "{objs:?}");
                resyncs += 1;
            }
            other => panic!("only resyncs expected after 410 Gone: {other:?}"),
        }
    }
}
