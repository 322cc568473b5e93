//! The Kubernetes store against a real kube-apiserver (the test bed's, built from the
//! pinned Kubernetes release, with serval's CRDs from `crds/` applied):
//!
//! - the conformance suite as cluster admin, each case on emptied collections;
//! - the same suite as the Helm chart's ServiceAccount, with exactly the RBAC that
//!   `helm template` renders from `charts/serval` (pools, the IPAM config and the suite's
//!   own resource kinds are written by an admin, as people write them in a cluster);
//!   and what that account must not do, refused;
//! - optimistic concurrency on `resourceVersion`: a stale update or delete is the
//!   server's 409, and writers racing on one object lose no update;
//! - a watch resumed after a server restart and an etcd compaction lists again;
//! - the names the model accepts are the object names the server accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt as _;
use ipam::model::{HandleId, IpPool, IpamConfig, PoolName};
use ipam::store::kube::KubeStore;
use ipam::store::{
    conformance, Key, Kind, ListFilter, Object, Revision, Store, Versioned, WatchEvent,
    WatchStream, Write,
};
use ipam::{Ipam, StoreError};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serval_integration::kube::ApiServer;
use serval_integration::{scenario, wait_until, Poll};

#[path = "support/kube.rs"]
mod kube_support;

use kube_support::{plural, IPAM_KINDS};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A server with serval's CRDs and the suite's resource kinds.
fn start(dir: &Path) -> serval_integration::Result<ApiServer> {
    kube_support::start(dir, &conformance::RESOURCE_KINDS)
}

/// Every kind the store reads or writes in these tests: (kind, plural).
fn kinds() -> Vec<(String, String)> {
    IPAM_KINDS
        .iter()
        .map(|(k, p)| ((*k).to_owned(), (*p).to_owned()))
        .chain(
            conformance::RESOURCE_KINDS
                .iter()
                .map(|k| ((*k).to_owned(), plural(k))),
        )
        .collect()
}

/// A kube client from a kubeconfig file, as `KUBECONFIG` would give the agent.
async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    kube::Client::try_from(config).expect("kube client")
}

fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("serval.dev", "v1", kind), plural)
}

/// Deletes every object of [`kinds`] (no finalizers and no controllers here: a delete
/// is immediate) and checks that nothing is left.
async fn empty_every_kind(admin: &kube::Client) {
    for (kind, plural) in kinds() {
        let api: Api<DynamicObject> = Api::all_with(admin.clone(), &api_resource(&kind, &plural));
        api.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete every {plural}: {e}"));
        let left = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {plural}: {e}"));
        assert!(left.items.is_empty(), "{plural} left: {:?}", left.items);
    }
}

fn kube_store(client: &kube::Client) -> KubeStore {
    KubeStore::new(client.clone())
        .with_resource_kinds(conformance::RESOURCE_KINDS.map(str::to_owned))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn conformance_as_cluster_admin() {
    scenario("kube-real-conformance", |test| {
        let api = start(test.path())?;
        let kubeconfig = api.admin_kubeconfig().to_path_buf();
        runtime().block_on(async {
            let admin = client(&kubeconfig).await;
            let cases = AtomicUsize::new(0);
            let t = Instant::now();
            conformance::run(|| {
                cases.fetch_add(1, Ordering::SeqCst);
                let admin = admin.clone();
                async move {
                    empty_every_kind(&admin).await;
                    Arc::new(kube_store(&admin)) as Arc<dyn Store>
                }
            })
            .await;
            eprintln!(
                "conformance as admin: {} cases in {:?}",
                cases.load(Ordering::SeqCst),
                t.elapsed()
            );
        });
        Ok(())
    });
}

/// helm: `SERVAL_HELM`, else what `scripts/chart-check.sh tools` fetches once.
fn helm() -> String {
    if let Ok(h) = std::env::var("SERVAL_HELM") {
        return h;
    }
    let script = repo().join("scripts/chart-check.sh");
    let out = Command::new("sh")
        .arg(&script)
        .arg("tools")
        .output()
        .unwrap_or_else(|e| panic!("helm: cannot run {} tools: {e}", script.display()));
    assert!(
        out.status.success(),
        "helm is missing and scripts/chart-check.sh could not fetch it:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The chart's ServiceAccount and RBAC as `helm template` renders them for the
/// kubernetes datastore, in kube-system.
fn chart_rbac() -> String {
    let helm = helm();
    let out = Command::new(&helm)
        .args(["template", "serval"])
        .arg(repo().join("charts/serval"))
        .args([
            "--namespace",
            "kube-system",
            "--set",
            "datastore.type=kubernetes",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .unwrap_or_else(|e| panic!("helm ({helm}): {e}"));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}

/// Applies the chart's RBAC and returns a kubeconfig with a token of its ServiceAccount.
fn chart_service_account(api: &ApiServer) -> serval_integration::Result<PathBuf> {
    // The API server creates kube-system itself, shortly after it is ready.
    wait_until(
        Duration::from_secs(60),
        "namespace kube-system",
        || match api.kubectl(&["get", "namespace", "kube-system", "-o", "name"]) {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )?;
    let applied = api.kubectl_stdin(
        &["apply", "--server-side", "-f", "-", "-o", "name"],
        &chart_rbac(),
    )?;
    let sa = applied
        .lines()
        .find_map(|l| l.strip_prefix("serviceaccount/"))
        .unwrap_or_else(|| panic!("the chart renders no ServiceAccount: {applied}"))
        .to_owned();
    api.service_account_kubeconfig("kube-system", &sa, Duration::from_secs(3600))
}

/// The store as a node agent uses it: everything through the chart's ServiceAccount,
/// except what people write — pools, the IPAM config — and the suite's own resource
/// kinds (not serval's), which go through the admin.
struct AsAgent {
    agent: KubeStore,
    admin: KubeStore,
}

impl AsAgent {
    fn for_key(&self, key: &Key) -> &KubeStore {
        match key.kind() {
            Kind::Resource => &self.admin,
            _ => &self.agent,
        }
    }
}

#[async_trait]
impl Store for AsAgent {
    fn describe(&self) -> String {
        "kubernetes as the chart's ServiceAccount".into()
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        self.for_key(key).get(key).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        match filter {
            ListFilter::Kind(Kind::Resource) | ListFilter::Resources(_) => {
                self.admin.list(filter).await
            }
            _ => self.agent.list(filter).await,
        }
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        // The Kubernetes store applies a batch write by write too: the same semantics.
        let mut revs = Vec::with_capacity(writes.len());
        for w in writes {
            let store = match w.key.kind() {
                Kind::Pool | Kind::Config | Kind::Resource => &self.admin,
                Kind::Block | Kind::Affinity | Kind::Handle => &self.agent,
            };
            revs.extend(store.commit(std::slice::from_ref(w)).await?);
        }
        Ok(revs)
    }

    fn atomic_commit(&self) -> bool {
        false
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        if kinds.contains(&Kind::Resource) {
            self.admin.watch(kinds).await
        } else {
            self.agent.watch(kinds).await
        }
    }
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Rejected { detail, .. }) if detail.contains("403") => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[test]
fn conformance_as_the_charts_service_account() {
    scenario("kube-real-chart-rbac", |test| {
        let api = start(test.path())?;
        let sa_kubeconfig = chart_service_account(&api)?;
        let admin_kubeconfig = api.admin_kubeconfig().to_path_buf();
        runtime().block_on(async {
            let admin = client(&admin_kubeconfig).await;
            let agent = client(&sa_kubeconfig).await;
            let t = Instant::now();
            conformance::run(|| {
                let (admin, agent) = (admin.clone(), agent.clone());
                async move {
                    empty_every_kind(&admin).await;
                    Arc::new(AsAgent {
                        agent: kube_store(&agent),
                        admin: kube_store(&admin),
                    }) as Arc<dyn Store>
                }
            })
            .await;
            eprintln!(
                "conformance as the chart's ServiceAccount: {:?}",
                t.elapsed()
            );

            // What people write, the agent may read but not write.
            empty_every_kind(&admin).await;
            let agent = kube_store(&agent);
            let pool = IpPool::new(PoolName::new("p").unwrap(), "10.1.0.0/16".parse().unwrap());
            assert_forbidden(
                "the agent creates a pool",
                agent
                    .commit(&[Write::create(Object::Pool(pool.clone()))])
                    .await,
            );
            let rev = kube_store(&admin)
                .commit(&[Write::create(Object::Pool(pool.clone()))])
                .await
                .expect("admin creates the pool")[0]
                .clone()
                .expect("revision");
            let read = agent
                .get(&Key::Pool(pool.name.clone()))
                .await
                .expect("agent reads");
            assert_eq!(read.map(|v| v.revision), Some(rev.clone()));
            assert_forbidden(
                "the agent deletes a pool",
                agent
                    .commit(&[Write::delete(Key::Pool(pool.name.clone()), rev)])
                    .await,
            );
            assert_forbidden(
                "the agent writes the IPAM config",
                agent
                    .commit(&[Write::create(Object::Config(IpamConfig::default()))])
                    .await,
            );
        });
        Ok(())
    });
}

/// A CAS increment of the IPAM config's `maxBlocksPerHost`, retried on conflict;
/// returns how many conflicts it met.
async fn increment(store: &KubeStore) -> usize {
    let mut conflicts = 0;
    loop {
        let cur = store
            .get(&Key::Config)
            .await
            .expect("read the config")
            .expect("config exists");
        let Object::Config(mut c) = cur.value else {
            panic!("not a config: {:?}", cur.value)
        };
        c.max_blocks_per_host += 1;
        match store
            .commit(&[Write::update(Object::Config(c), cur.revision)])
            .await
        {
            Ok(_) => return conflicts,
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("increment: {e}"),
        }
    }
}

#[test]
fn stale_resource_versions_are_conflicts() {
    scenario("kube-real-conflicts", |test| {
        let api = start(test.path())?;
        let kubeconfig = api.admin_kubeconfig().to_path_buf();
        runtime().block_on(async {
            // Two writers, each with its own client and connections.
            let (ca, cb) = (client(&kubeconfig).await, client(&kubeconfig).await);
            let (a, b) = (KubeStore::new(ca.clone()), KubeStore::new(cb.clone()));
            let config = Object::Config(IpamConfig::default());
            let r0 = a
                .commit(&[Write::create(config.clone())])
                .await
                .expect("create")[0]
                .clone()
                .expect("revision");
            let err = b
                .commit(&[Write::create(config.clone())])
                .await
                .expect_err("create over an existing object");
            assert!(matches!(err, StoreError::Conflict { .. }), "{err}");

            // Both read revision r0; a writes first, b's write from r0 is refused.
            let seen_by_b = b.get(&Key::Config).await.expect("get").expect("present");
            assert_eq!(seen_by_b.revision, r0);
            let by_a = IpamConfig {
                max_blocks_per_host: 7,
                ..IpamConfig::default()
            };
            let r1 = a
                .commit(&[Write::update(Object::Config(by_a.clone()), r0.clone())])
                .await
                .expect("a's update")[0]
                .clone()
                .expect("revision");
            assert_ne!(r1, r0);
            let by_b = IpamConfig {
                strict_affinity: true,
                ..IpamConfig::default()
            };
            let err = b
                .commit(&[Write::update(Object::Config(by_b), r0.clone())])
                .await
                .expect_err("b's update from a stale revision");
            assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            let err = b
                .commit(&[Write::delete(Key::Config, r0.clone())])
                .await
                .expect_err("b's delete from a stale revision");
            assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            // What the server answered: 409 Conflict for the stale PUT.
            let raw: Api<DynamicObject> =
                Api::all_with(cb.clone(), &api_resource("IPAMConfig", "ipamconfigs"));
            let mut stale = raw.get("default").await.expect("raw get");
            stale.metadata.resource_version = Some(r0.0.clone());
            match raw.replace("default", &PostParams::default(), &stale).await {
                Err(kube::Error::Api(s)) => {
                    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"), "{s:?}")
                }
                other => panic!("a stale PUT was answered {other:?}"),
            }
            let now = a.get(&Key::Config).await.expect("get").expect("present");
            assert_eq!(
                now,
                Versioned::new(Object::Config(by_a), r1.clone()),
                "a's write stands"
            );

            // Deleted, then written from its last revision: a conflict, not a re-create.
            a.commit(&[Write::delete(Key::Config, r1.clone())])
                .await
                .expect("delete at the current revision");
            let err = b
                .commit(&[Write::update(config.clone(), r1)])
                .await
                .expect_err("update of a deleted object");
            assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            assert_eq!(a.get(&Key::Config).await.expect("get"), None);

            // Writers racing on one object: every increment lands, conflicts are met.
            a.commit(&[Write::create(config)]).await.expect("create");
            const WRITERS: usize = 6;
            const EACH: usize = 20;
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..WRITERS {
                let store = KubeStore::new(client(&kubeconfig).await);
                tasks.push(tokio::spawn(async move {
                    let mut conflicts = 0;
                    for _ in 0..EACH {
                        conflicts += increment(&store).await;
                    }
                    conflicts
                }));
            }
            let mut conflicts = 0;
            for task in tasks {
                conflicts += task.await.expect("writer");
            }
            let Some(Versioned {
                value: Object::Config(c),
                ..
            }) = a.get(&Key::Config).await.expect("get")
            else {
                panic!("the config is gone")
            };
            eprintln!(
                "{WRITERS} writers × {EACH} increments in {:?}: {conflicts} conflicts, retried",
                t.elapsed()
            );
            assert_eq!(
                c.max_blocks_per_host as usize,
                WRITERS * EACH,
                "no lost update"
            );
            assert!(conflicts > 0, "the writers never met a conflict");
        });
        Ok(())
    });
}

async fn next_item(w: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(Duration::from_secs(60), w.next())
        .await
        .expect("a watch item within 60 s")
        .expect("the watch stream never ends")
}

fn has_pool(objs: &[Versioned<Object>], name: &str) -> bool {
    objs.iter()
        .any(|o| matches!(&o.value, Object::Pool(p) if p.name.as_str() == name))
}

#[test]
fn watch_lists_again_after_an_api_server_restart_and_a_compaction() {
    scenario("kube-real-watch-restart", |test| {
        let mut api = start(test.path())?;
        let kubeconfig = api.admin_kubeconfig().to_path_buf();
        let rt = runtime();
        let store = Arc::new(rt.block_on(async { KubeStore::new(client(&kubeconfig).await) }));
        let ipam = Ipam::new(store.clone());
        let pool = |name: &str, cidr: &str| {
            IpPool::new(PoolName::new(name).unwrap(), cidr.parse().unwrap())
        };
        let mut w = rt.block_on(async {
            ipam.add_pool(pool("a", "10.1.0.0/16"))
                .await
                .expect("pool a");
            let mut w = store
                .watch(&[Kind::Pool, Kind::Block])
                .await
                .expect("watch");
            match next_item(&mut w).await.expect("first item") {
                WatchEvent::Resync(objs) => assert!(has_pool(&objs, "a"), "{objs:?}"),
                other => panic!("the watch begins with a Resync: {other:?}"),
            }
            w
        });
        // The control plane goes away; etcd's history up to now goes too.
        api.stop_apiserver()?;
        let compacted = api.compact_etcd()?;
        api.start_apiserver()?;
        let t = Instant::now();
        rt.block_on(async {
            ipam.add_pool(pool("b", "10.2.0.0/16"))
                .await
                .expect("pool b");
            // The watch resumes from a version the restarted server no longer has: it is
            // told 410 Gone and lists again, which reaches the receiver as a Resync.
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "no Resync with pool b after the restart; errors: {errors:?}"
                );
                match next_item(&mut w).await {
                    Ok(WatchEvent::Resync(objs)) if has_pool(&objs, "b") => {
                        assert!(has_pool(&objs, "a"), "{objs:?}");
                        break;
                    }
                    Ok(WatchEvent::Put(v)) if v.value.key().to_string() == "pool b" => panic!(
                        "pool b arrived as a change after etcd was compacted to {compacted}: \
                         the watch resumed from a version that no longer exists"
                    ),
                    Ok(_) => {}
                    Err(e @ StoreError::Unavailable { .. }) => errors.push(e.to_string()),
                    Err(e) => panic!("watch error: {e}"),
                }
            }
            eprintln!(
                "resynced {:?} after the restart; {} errors while the server was away",
                t.elapsed(),
                errors.len()
            );
        });
        Ok(())
    });
}

/// The names the model accepts for handles (and nodes, pools) are the object names the
/// API server accepts, and the other way round: the store uses them unchanged.
#[test]
fn model_names_are_the_names_the_server_accepts() {
    scenario("kube-real-names", |test| {
        let api = start(test.path())?;
        let kubeconfig = api.admin_kubeconfig().to_path_buf();
        runtime().block_on(async {
            let raw: Api<DynamicObject> = Api::all_with(
                client(&kubeconfig).await,
                &api_resource("IPAMHandle", "ipamhandles"),
            );
            let long = format!("{}.{}", "a".repeat(63), "b".repeat(189));
            let names = [
                "a",
                "0",
                "a-b",
                "a.b",
                "k8s-pod-network.0123abcdef",
                &long,
                "",
                "A",
                "a_b",
                "-a",
                "a-",
                ".a",
                "a.",
                "a..b",
                "a.-b",
                "a-.b",
                "a/b",
            ];
            for name in names {
                let model = HandleId::new(name).is_ok();
                let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "serval.dev/v1",
                    "kind": "IPAMHandle",
                    "metadata": {"name": name},
                    "spec": {"handleId": name, "block": {}},
                }))
                .expect("object");
                let server = match raw.create(&PostParams::default(), &obj).await {
                    Ok(_) => true,
                    Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => false,
                    Err(e) => panic!("{name:?}: {e}"),
                };
                assert_eq!(
                    model, server,
                    "{name:?}: the model says {model}, the API server says {server}"
                );
            }
        });
        Ok(())
    });
}
