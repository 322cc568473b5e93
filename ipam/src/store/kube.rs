//! The Kubernetes store: IPAM objects as `serval.dev/v1` custom resources ([`crate::crd`]).
//!
//! - The CAS token is `metadata.resourceVersion`: an update is a PUT carrying the version it
//!   read, a delete carries it as a precondition, a create is a POST. The API server answers
//!   409 when the object changed or already exists: [`StoreError::Conflict`].
//! - There are no multi-object transactions: [`Store::commit`] applies a batch write by
//!   write and stops at the first failure ([`Store::atomic_commit`] is false); the
//!   allocator orders its batches so that every prefix is safe.
//! - 5xx, 429 and transport errors are [`StoreError::Unavailable`]; 401, 403, 400 and 422
//!   are [`StoreError::Rejected`].
//! - A block affinity carries the label `serval.dev/node` so that one node's affinities are
//!   one labelled list (node names longer than a label value allows are listed and filtered).
//! - A [`Resource`](super::Resource) of kind `K` is a `serval.dev/v1` object of kind `K`
//!   (plural as Kubernetes forms it, e.g. `bgppeers`), reached through kube's dynamic
//!   API: its labels are the object's labels, its spec the object's `spec`. Listing or
//!   watching [`Kind::Resource`] covers the kinds named with
//!   [`KubeStore::with_resource_kinds`], as the API has no "every kind" request.
//! - [`Store::watch`] runs kube's `runtime::watcher` on each collection with its default
//!   back-off: it lists, watches from the list's resourceVersion, re-watches from the
//!   last version seen when a watch ends or the connection drops, and lists again after
//!   `410 Gone`. Once every collection is listed the stream sends a `Resync`, then
//!   changes; each relist sends a new `Resync` of every collection. Errors are passed on
//!   as items and the watch goes on after its back-off: the stream never ends, and the
//!   receiver keeps what it knew until the next `Resync`.
//! - A list answered with 404 means the CRD is not installed:
//!   [`StoreError::Config`] naming the CRD and how to install it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt as _;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
    PostParams, Preconditions,
};
use kube::core::ClusterResourceScope;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Resource as StoredResource;
use super::{
    Key, Kind, ListFilter, Object, Op, Revision, Store, Versioned, WatchEvent, WatchStream, Write,
};
use crate::crd::{
    BlockAffinity, BlockAffinitySpec, IPAMBlock, IPAMBlockSpec, IPAMConfig, IPAMConfigSpec,
    IPAMHandle, IPAMHandleSpec, IPPool, IPPoolSpec, GROUP, NODE_LABEL,
};
use crate::error::StoreError;
use crate::model::NodeName;

/// The Kubernetes CRD store.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    /// The resource kinds that listing and watching [`Kind::Resource`] cover.
    resource_kinds: std::sync::Arc<Vec<String>>,
}

impl Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeStore")
    }
}

impl KubeStore {
    /// A store over an existing client (tests build one on `tower_test::mock`).
    pub fn new(client: Client) -> Self {
        KubeStore {
            client,
            resource_kinds: std::sync::Arc::default(),
        }
    }

    /// Names the resource kinds (`BGPPeer`, …) that listing or watching
    /// [`Kind::Resource`] covers.
    pub fn with_resource_kinds(mut self, kinds: impl IntoIterator<Item = String>) -> Self {
        self.resource_kinds = std::sync::Arc::new(kinds.into_iter().collect());
        self
    }

    /// The in-cluster configuration, or `KUBECONFIG` / `~/.kube/config`.
    pub async fn from_environment() -> Result<Self, StoreError> {
        let client = Client::try_default()
            .await
            .map_err(|e| StoreError::Config(format!("kubernetes: {e}")))?;
        Ok(KubeStore::new(client))
    }

    fn api<K: Crd>(&self) -> Api<K> {
        Api::all(self.client.clone())
    }
}

/// The Kubernetes object name of a block CIDR: `10.65.0.64/26` → `10-65-0-64-26`.
pub fn block_object_name(cidr: &ipnet::IpNet) -> String {
    cidr.to_string().replace(['.', ':', '/'], "-")
}

/// The object name for a key; `None` if it does not fit Kubernetes' 253 characters.
pub fn object_name(key: &Key) -> Option<String> {
    let name = match key {
        Key::Pool(n) => n.to_string(),
        Key::Block(c) => block_object_name(c),
        // Block names hold no dots and node names are DNS subdomains, so the first dot
        // separates them unambiguously.
        Key::Affinity { node, cidr } => format!("{}.{node}", block_object_name(cidr)),
        Key::Handle(h) => h.to_string(),
        Key::Config => "default".to_owned(),
        Key::Resource { name, .. } => name.to_string(),
    };
    (name.len() <= 253).then_some(name)
}

fn node_label_fits(node: &NodeName) -> bool {
    node.as_str().len() <= 63
}

/// What the store needs of each custom resource type.
trait Crd:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn spec_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    fn from_spec(meta: ObjectMeta, spec: serde_json::Value) -> Result<Self, serde_json::Error>;
}

macro_rules! crd {
    ($ty:ty, $spec:ty, $kind:ident) => {
        impl Crd for $ty {
            const KIND: Kind = Kind::$kind;
            fn spec_json(&self) -> Result<serde_json::Value, serde_json::Error> {
                serde_json::to_value(&self.spec)
            }
            fn from_spec(
                meta: ObjectMeta,
                spec: serde_json::Value,
            ) -> Result<Self, serde_json::Error> {
                let spec: $spec = serde_json::from_value(spec)?;
                Ok(Self {
                    metadata: meta,
                    spec,
                })
            }
        }
    };
}

crd!(IPPool, IPPoolSpec, Pool);
crd!(IPAMBlock, IPAMBlockSpec, Block);
crd!(BlockAffinity, BlockAffinitySpec, Affinity);
crd!(IPAMHandle, IPAMHandleSpec, Handle);
crd!(IPAMConfig, IPAMConfigSpec, Config);

/// A custom resource as a model object with its revision.
fn decode<K: Crd>(cr: &K) -> Result<Versioned<Object>, StoreError> {
    let name = cr.name_any();
    let location = format!("{} {name}", K::kind(&()));
    let corrupt = |detail: String| StoreError::Corrupt {
        location: location.clone(),
        detail,
    };
    let mut spec = cr.spec_json().map_err(|e| corrupt(e.to_string()))?;
    if K::KIND == Kind::Pool {
        if let Some(m) = spec.as_object_mut() {
            m.insert("name".into(), serde_json::Value::String(name.clone()));
        }
    }
    let obj = Object::from_json(K::KIND, spec, &location)?;
    if object_name(&obj.key()).as_deref() != Some(name.as_str()) {
        return Err(corrupt(format!("holds {} under the wrong name", obj.key())));
    }
    let rv = cr
        .resource_version()
        .ok_or_else(|| corrupt("no resourceVersion".into()))?;
    Ok(Versioned::new(obj, Revision(rv)))
}

/// A model object as a custom resource of type `K`.
fn encode<K: Crd>(obj: &Object, rev: Option<&Revision>) -> Result<K, StoreError> {
    let key = obj.key();
    let name = object_name(&key).ok_or_else(|| StoreError::Rejected {
        store: "kubernetes".into(),
        detail: format!("{key}: the object name would exceed 253 characters"),
    })?;
    let mut spec = obj.to_json();
    if let (Object::Pool(_), Some(m)) = (obj, spec.as_object_mut()) {
        m.remove("name");
    }
    let mut labels = BTreeMap::new();
    if let Object::Affinity(a) = obj {
        if node_label_fits(&a.node) {
            labels.insert(NODE_LABEL.to_owned(), a.node.to_string());
        }
    }
    let meta = ObjectMeta {
        name: Some(name),
        resource_version: rev.map(|r| r.0.clone()),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    K::from_spec(meta, spec).map_err(|e| StoreError::Rejected {
        store: "kubernetes".into(),
        detail: format!("{key} does not fit its CRD: {e}"),
    })
}

fn map_err(what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict {
            key: what.to_owned(),
        },
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => StoreError::Unavailable {
            store: "kubernetes".into(),
            detail: format!("{what}: {} {}", s.code, s.message),
        },
        kube::Error::Api(s) => StoreError::Rejected {
            store: "kubernetes".into(),
            detail: format!("{what}: {} {} {}", s.code, s.reason, s.message),
        },
        other => StoreError::Unavailable {
            store: "kubernetes".into(),
            detail: format!("{what}: {other}"),
        },
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The API resource of a resource kind: `serval.dev/v1`, cluster-scoped.
fn api_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

/// A dynamic object as a stored resource of `kind`.
fn decode_dyn(kind: &str, o: &DynamicObject) -> Result<Versioned<Object>, StoreError> {
    let name = o.name_any();
    let location = format!("{kind} {name}");
    let corrupt = |detail: String| StoreError::Corrupt {
        location: location.clone(),
        detail,
    };
    let spec = o
        .data
        .get("spec")
        .cloned()
        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
    let labels = o.metadata.labels.clone().unwrap_or_default();
    let r = StoredResource::new(kind, name, labels, spec).map_err(|e| corrupt(e.to_string()))?;
    let rv = o
        .resource_version()
        .ok_or_else(|| corrupt("no resourceVersion".into()))?;
    Ok(Versioned::new(Object::Resource(r), Revision(rv)))
}

/// A stored resource as a dynamic object.
fn encode_dyn(r: &StoredResource, rev: Option<&Revision>) -> DynamicObject {
    let mut o = DynamicObject::new(r.name.as_str(), &api_resource(r.kind.as_str()))
        .data(serde_json::json!({ "spec": r.spec }));
    o.metadata.resource_version = rev.map(|r| r.0.clone());
    o.metadata.labels = (!r.labels.is_empty()).then(|| r.labels.clone());
    o
}

impl KubeStore {
    async fn get_k<K: Crd>(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let Some(name) = object_name(key) else {
            return Ok(None);
        };
        let got = self
            .api::<K>()
            .get_opt(&name)
            .await
            .map_err(|e| map_err(&key.to_string(), e))?;
        got.as_ref().map(decode).transpose()
    }

    async fn list_k<K: Crd>(
        &self,
        lp: &ListParams,
    ) -> Result<(Vec<Versioned<Object>>, String), StoreError> {
        let list = self.api::<K>().list(lp).await.map_err(|e| {
            let plural = K::plural(&());
            map_list_err(&crd_name(&plural), &format!("list {plural}"), e)
        })?;
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let objs = list
            .items
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((objs, rv))
    }

    async fn write_k<K: Crd>(&self, w: &Write) -> Result<Option<Revision>, StoreError> {
        let what = w.key.to_string();
        let name = object_name(&w.key).ok_or_else(|| StoreError::Rejected {
            store: "kubernetes".into(),
            detail: format!("{what}: the object name would exceed 253 characters"),
        })?;
        let api = self.api::<K>();
        let rev = match &w.expect {
            super::Expect::Absent => None,
            super::Expect::Revision(r) => Some(r),
        };
        match (&w.op, rev) {
            (Op::Put(obj), None) => {
                let cr: K = encode(obj, None)?;
                let made = api
                    .create(&PostParams::default(), &cr)
                    .await
                    .map_err(|e| map_err(&what, e))?;
                Ok(made.resource_version().map(Revision))
            }
            (Op::Put(obj), Some(r)) => {
                let cr: K = encode(obj, Some(r))?;
                match api.replace(&name, &PostParams::default(), &cr).await {
                    Ok(made) => Ok(made.resource_version().map(Revision)),
                    // Replacing what no longer exists: the revision we read is gone.
                    Err(e) if is_not_found(&e) => Err(StoreError::Conflict { key: what }),
                    Err(e) => Err(map_err(&what, e)),
                }
            }
            (Op::Delete, expect) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: expect.map(|r| r.0.clone()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Err(StoreError::Conflict { key: what }),
                    Err(e) => Err(map_err(&what, e)),
                }
            }
        }
    }

    fn dyn_api(&self, kind: &str) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &api_resource(kind))
    }

    async fn get_dyn(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<Versioned<Object>>, StoreError> {
        let got = self
            .dyn_api(kind)
            .get_opt(name)
            .await
            .map_err(|e| map_err(&format!("{kind} {name}"), e))?;
        got.as_ref().map(|o| decode_dyn(kind, o)).transpose()
    }

    async fn list_dyn(
        &self,
        kind: &str,
        lp: &ListParams,
    ) -> Result<(Vec<Versioned<Object>>, String), StoreError> {
        let list = self.dyn_api(kind).list(lp).await.map_err(|e| {
            let plural = api_resource(kind).plural;
            map_list_err(&crd_name(&plural), &format!("list {plural}"), e)
        })?;
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let objs = list
            .items
            .iter()
            .map(|o| decode_dyn(kind, o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((objs, rv))
    }

    async fn write_dyn(
        &self,
        w: &Write,
        kind: &str,
        name: &str,
    ) -> Result<Option<Revision>, StoreError> {
        let what = w.key.to_string();
        let api = self.dyn_api(kind);
        let rev = match &w.expect {
            super::Expect::Absent => None,
            super::Expect::Revision(r) => Some(r),
        };
        let resource = |obj: &Object| match obj {
            Object::Resource(r) => Ok(r.clone()),
            other => Err(StoreError::Rejected {
                store: "kubernetes".into(),
                detail: format!("{what}: holds a {:?}", other.kind()),
            }),
        };
        match (&w.op, rev) {
            (Op::Put(obj), None) => {
                let o = encode_dyn(&resource(obj)?, None);
                let made = api
                    .create(&PostParams::default(), &o)
                    .await
                    .map_err(|e| map_err(&what, e))?;
                Ok(made.resource_version().map(Revision))
            }
            (Op::Put(obj), Some(r)) => {
                let o = encode_dyn(&resource(obj)?, Some(r));
                match api.replace(name, &PostParams::default(), &o).await {
                    Ok(made) => Ok(made.resource_version().map(Revision)),
                    Err(e) if is_not_found(&e) => Err(StoreError::Conflict { key: what }),
                    Err(e) => Err(map_err(&what, e)),
                }
            }
            (Op::Delete, expect) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: expect.map(|r| r.0.clone()),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(name, &dp).await {
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Err(StoreError::Conflict { key: what }),
                    Err(e) => Err(map_err(&what, e)),
                }
            }
        }
    }

    async fn list_kind(
        &self,
        kind: Kind,
        lp: &ListParams,
    ) -> Result<(Vec<Versioned<Object>>, String), StoreError> {
        match kind {
            Kind::Pool => self.list_k::<IPPool>(lp).await,
            Kind::Block => self.list_k::<IPAMBlock>(lp).await,
            Kind::Affinity => self.list_k::<BlockAffinity>(lp).await,
            Kind::Handle => self.list_k::<IPAMHandle>(lp).await,
            Kind::Config => self.list_k::<IPAMConfig>(lp).await,
            // The caller lists resource kinds one by one (each has its own version).
            Kind::Resource => {
                let mut all = Vec::new();
                for k in self.resource_kinds.iter() {
                    all.extend(self.list_dyn(k, lp).await?.0);
                }
                Ok((all, String::new()))
            }
        }
    }

    /// What one watch source lists and watches: a typed kind, or one resource kind.
    fn sources(&self, kinds: &[Kind]) -> Vec<Source> {
        let mut out = Vec::new();
        for k in kinds {
            if *k == Kind::Resource {
                out.extend(self.resource_kinds.iter().cloned().map(Source::Dyn));
            } else {
                out.push(Source::Typed(*k));
            }
        }
        out
    }

    /// The decoded watcher stream of one source, tagged with its index.
    fn source_stream(&self, idx: usize, s: &Source) -> BoxStream<'static, (usize, Item)> {
        match s {
            Source::Typed(Kind::Pool) => typed_stream::<IPPool>(self.api(), idx),
            Source::Typed(Kind::Block) => typed_stream::<IPAMBlock>(self.api(), idx),
            Source::Typed(Kind::Affinity) => typed_stream::<BlockAffinity>(self.api(), idx),
            Source::Typed(Kind::Handle) => typed_stream::<IPAMHandle>(self.api(), idx),
            Source::Typed(Kind::Config) => typed_stream::<IPAMConfig>(self.api(), idx),
            // `sources` never yields it: resource kinds are `Source::Dyn`.
            Source::Typed(Kind::Resource) => futures::stream::empty().boxed(),
            Source::Dyn(kind) => {
                let k = kind.clone();
                let crd = crd_name(&api_resource(kind).plural);
                source_events(self.dyn_api(kind), idx, crd, move |o| decode_dyn(&k, o))
            }
        }
    }
}

/// One listed and watched collection.
#[derive(Clone)]
enum Source {
    Typed(Kind),
    Dyn(String),
}

/// The CRD's name (`ippools.serval.dev`), for the error when it is not installed.
fn crd_name(plural: &str) -> String {
    format!("{plural}.{GROUP}")
}

/// The error for a list answered with 404: the collection does not exist, so the CRD
/// is not installed.
fn missing_crd(crd: &str) -> StoreError {
    StoreError::Config(format!(
        "kubernetes: the CustomResourceDefinition {crd} is not installed; install the \
         CRDs of the serval chart (helm install installs charts/serval/crds, or \
         kubectl apply -f charts/serval/crds/)"
    ))
}

/// A list error, with 404 (the CRD is missing) named as such.
fn map_list_err(crd: &str, what: &str, e: kube::Error) -> StoreError {
    if is_not_found(&e) {
        missing_crd(crd)
    } else {
        map_err(what, e)
    }
}

/// One decoded watcher event of one source.
#[derive(Debug)]
enum Item {
    /// A (re)list begins.
    Init,
    /// An object of the (re)list.
    Listed(Versioned<Object>),
    /// The (re)list is complete.
    InitDone,
    Put(Versioned<Object>),
    Deleted(Key),
    /// The server answered 410 Gone: the watcher lists again (an `Init` follows).
    Gone,
    Error(StoreError),
}

fn typed_stream<K: Crd>(api: Api<K>, idx: usize) -> BoxStream<'static, (usize, Item)> {
    source_events(api, idx, crd_name(&K::plural(&())), decode::<K>)
}

/// kube's watcher over one collection with its default back-off (exponential from
/// 0.8 s to 30 s, reset after 2 min of health): it lists, watches from the list's
/// version, re-watches from the last version seen when a watch ends or breaks, and
/// lists again after 410 Gone. Its events are decoded into [`Item`]s.
fn source_events<K, D>(
    api: Api<K>,
    idx: usize,
    crd: String,
    decode: D,
) -> BoxStream<'static, (usize, Item)>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    D: Fn(&K) -> Result<Versioned<Object>, StoreError> + Send + Sync + 'static,
{
    let what = crd.split('.').next().unwrap_or_default().to_owned();
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |ev| {
            let item = match ev {
                Ok(watcher::Event::Init) => Item::Init,
                Ok(watcher::Event::InitApply(o)) => match decode(&o) {
                    Ok(v) => Item::Listed(v),
                    Err(e) => Item::Error(e),
                },
                Ok(watcher::Event::InitDone) => Item::InitDone,
                Ok(watcher::Event::Apply(o)) => match decode(&o) {
                    Ok(v) => Item::Put(v),
                    Err(e) => Item::Error(e),
                },
                Ok(watcher::Event::Delete(o)) => match decode(&o) {
                    Ok(v) => Item::Deleted(v.value.key()),
                    Err(e) => Item::Error(e),
                },
                Err(watcher::Error::WatchError(s)) if s.code == 410 => Item::Gone,
                Err(watcher::Error::InitialListFailed(e)) => {
                    Item::Error(map_list_err(&crd, &format!("list {what}"), e))
                }
                Err(watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e)) => {
                    Item::Error(map_err(&format!("watch {what}"), e))
                }
                Err(watcher::Error::WatchError(s)) => {
                    Item::Error(map_err(&format!("watch {what}"), kube::Error::Api(s)))
                }
                Err(e @ watcher::Error::NoResourceVersion) => {
                    Item::Error(StoreError::Unavailable {
                        store: "kubernetes".into(),
                        detail: format!("watch {what}: {e}"),
                    })
                }
            };
            (idx, item)
        })
        .boxed()
}

/// Merges the sources' events into one [`WatchEvent`] stream: pure, so the resync
/// rules are tested without a server.
///
/// Each source's current objects are kept, so that when one source lists again (after
/// 410 Gone) the `Resync` it causes holds every source's objects, as the trait wants.
/// The first `Resync` waits for every source's first list; changes before it are
/// folded into it.
#[derive(Debug, Default)]
struct Merge {
    current: Vec<BTreeMap<Key, Versioned<Object>>>,
    /// A source's list in progress.
    listing: Vec<Option<BTreeMap<Key, Versioned<Object>>>>,
    listed: Vec<bool>,
    started: bool,
}

impl Merge {
    fn new(sources: usize) -> Self {
        Merge {
            current: vec![BTreeMap::new(); sources],
            listing: vec![None; sources],
            listed: vec![false; sources],
            started: false,
        }
    }

    fn resync(&self) -> WatchEvent {
        WatchEvent::Resync(
            self.current
                .iter()
                .flat_map(|m| m.values().cloned())
                .collect(),
        )
    }

    /// Takes one source's item; returns what to pass on, if anything.
    fn on(&mut self, idx: usize, item: Item) -> Option<Result<WatchEvent, StoreError>> {
        if idx >= self.current.len() {
            return None;
        }
        match item {
            Item::Init => {
                self.listing[idx] = Some(BTreeMap::new());
                None
            }
            Item::Listed(v) => {
                let key = v.value.key();
                self.listing[idx]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, v);
                None
            }
            Item::InitDone => {
                self.current[idx] = self.listing[idx].take().unwrap_or_default();
                self.listed[idx] = true;
                if self.listed.iter().all(|l| *l) {
                    self.started = true;
                    Some(Ok(self.resync()))
                } else {
                    None
                }
            }
            Item::Put(v) => {
                self.current[idx].insert(v.value.key(), v.clone());
                self.started.then_some(Ok(WatchEvent::Put(v)))
            }
            Item::Deleted(k) => {
                self.current[idx].remove(&k);
                self.started.then_some(Ok(WatchEvent::Deleted(k)))
            }
            Item::Gone => {
                tracing::debug!("kubernetes watch: 410 Gone, listing again");
                None
            }
            Item::Error(e) => Some(Err(e)),
        }
    }
}

#[async_trait]
impl Store for KubeStore {
    fn describe(&self) -> String {
        "kubernetes".into()
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        match key.kind() {
            Kind::Pool => self.get_k::<IPPool>(key).await,
            Kind::Block => self.get_k::<IPAMBlock>(key).await,
            Kind::Affinity => self.get_k::<BlockAffinity>(key).await,
            Kind::Handle => self.get_k::<IPAMHandle>(key).await,
            Kind::Config => self.get_k::<IPAMConfig>(key).await,
            Kind::Resource => match key {
                Key::Resource { kind, name } => self.get_dyn(kind.as_str(), name.as_str()).await,
                _ => Ok(None),
            },
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        match filter {
            ListFilter::Kind(k) => Ok(self.list_kind(*k, &ListParams::default()).await?.0),
            ListFilter::Resources(kind) => Ok(self
                .list_dyn(kind.as_str(), &ListParams::default())
                .await?
                .0),
            ListFilter::AffinitiesOf(node) => {
                let lp = if node_label_fits(node) {
                    ListParams::default().labels(&format!("{NODE_LABEL}={node}"))
                } else {
                    ListParams::default()
                };
                let (all, _) = self.list_k::<BlockAffinity>(&lp).await?;
                Ok(all
                    .into_iter()
                    .filter(|o| matches!(&o.value, Object::Affinity(a) if a.node == *node))
                    .collect())
            }
        }
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let mut revs = Vec::with_capacity(writes.len());
        for w in writes {
            revs.push(match w.key.kind() {
                Kind::Pool => self.write_k::<IPPool>(w).await?,
                Kind::Block => self.write_k::<IPAMBlock>(w).await?,
                Kind::Affinity => self.write_k::<BlockAffinity>(w).await?,
                Kind::Handle => self.write_k::<IPAMHandle>(w).await?,
                Kind::Config => self.write_k::<IPAMConfig>(w).await?,
                Kind::Resource => match &w.key {
                    Key::Resource { kind, name } => {
                        self.write_dyn(w, kind.as_str(), name.as_str()).await?
                    }
                    _ => None,
                },
            });
        }
        Ok(revs)
    }

    fn atomic_commit(&self) -> bool {
        false
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        let sources = self.sources(kinds);
        let streams: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| self.source_stream(i, s))
            .collect();
        let mut merge = Merge::new(sources.len());
        let first = if sources.is_empty() {
            // Nothing to list: the empty set is complete at once.
            Some(Ok(WatchEvent::Resync(Vec::new())))
        } else {
            None
        };
        let merged = futures::stream::select_all(streams)
            .filter_map(move |(i, item)| futures::future::ready(merge.on(i, item)));
        Ok(Box::pin(
            futures::stream::iter(first)
                .chain(merged)
                .chain(futures::stream::pending()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpPool, PoolName};

    fn pool(name: &str, cidr: &str, rv: &str) -> Versioned<Object> {
        let p = IpPool::new(PoolName::new(name).unwrap(), cidr.parse().unwrap());
        Versioned::new(Object::Pool(p), Revision(rv.into()))
    }

    fn names(ev: &WatchEvent) -> Vec<String> {
        match ev {
            WatchEvent::Resync(objs) => {
                let mut n: Vec<String> = objs.iter().map(|o| o.value.key().to_string()).collect();
                n.sort();
                n
            }
            other => panic!("not a resync: {other:?}"),
        }
    }

    #[test]
    fn first_resync_waits_for_every_source() {
        let mut m = Merge::new(2);
        assert!(m.on(0, Item::Init).is_none());
        assert!(m
            .on(0, Item::Listed(pool("a", "10.0.0.0/24", "1")))
            .is_none());
        assert!(m.on(0, Item::InitDone).is_none(), "source 1 not listed yet");
        // A change of a listed source before the first resync is folded into it.
        assert!(m.on(0, Item::Put(pool("b", "10.0.1.0/24", "2"))).is_none());
        assert!(m.on(1, Item::Init).is_none());
        let ev = m.on(1, Item::InitDone).unwrap().unwrap();
        assert_eq!(names(&ev), ["pool a", "pool b"]);
        match m.on(1, Item::Put(pool("c", "10.0.2.0/24", "3"))) {
            Some(Ok(WatchEvent::Put(v))) => assert_eq!(v.revision.0, "3"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_relist_resyncs_every_source_and_drops_what_vanished() {
        let mut m = Merge::new(2);
        for (i, name, cidr) in [(0, "a", "10.0.0.0/24"), (1, "z", "10.9.0.0/24")] {
            m.on(i, Item::Init);
            m.on(i, Item::Listed(pool(name, cidr, "1")));
        }
        m.on(0, Item::InitDone);
        m.on(1, Item::InitDone).unwrap().unwrap();
        // 410 Gone on source 0, then its relist finds "b" instead of "a".
        assert!(m.on(0, Item::Gone).is_none(), "Gone is not an error");
        assert!(m.on(0, Item::Init).is_none());
        assert!(m
            .on(0, Item::Listed(pool("b", "10.0.1.0/24", "5")))
            .is_none());
        let ev = m.on(0, Item::InitDone).unwrap().unwrap();
        assert_eq!(names(&ev), ["pool b", "pool z"], "source 1's objects kept");
        match m.on(1, Item::Deleted(pool("z", "10.9.0.0/24", "6").value.key())) {
            Some(Ok(WatchEvent::Deleted(k))) => assert_eq!(k.to_string(), "pool z"),
            other => panic!("{other:?}"),
        }
        m.on(0, Item::Init);
        let ev = m.on(0, Item::InitDone).unwrap().unwrap();
        assert!(names(&ev).is_empty(), "{ev:?}");
    }

    #[test]
    fn errors_pass_through_and_keep_state() {
        let mut m = Merge::new(1);
        m.on(0, Item::Init);
        m.on(0, Item::Listed(pool("a", "10.0.0.0/24", "1")));
        m.on(0, Item::InitDone);
        let err = StoreError::Unavailable {
            store: "kubernetes".into(),
            detail: "connection reset".into(),
        };
        assert!(matches!(m.on(0, Item::Error(err)), Some(Err(_))));
        // A watch restart that lists nothing new resyncs to what was there.
        m.on(0, Item::Init);
        m.on(0, Item::Listed(pool("a", "10.0.0.0/24", "1")));
        assert_eq!(
            names(&m.on(0, Item::InitDone).unwrap().unwrap()),
            ["pool a"]
        );
        assert!(m.on(7, Item::InitDone).is_none(), "unknown source ignored");
    }

    #[test]
    fn missing_crd_names_it_and_the_fix() {
        let e = missing_crd(&crd_name("ippools"));
        let text = e.to_string();
        assert!(text.contains("ippools.serval.dev"), "{text}");
        assert!(text.contains("charts/serval/crds"), "{text}");
    }
}
