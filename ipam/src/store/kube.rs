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
//! - [`Store::watch`] lists, sends a `Resync`, then watches each kind from the list's
//!   resourceVersion, re-watching from the last version seen when the server ends a watch;
//!   a `410 Gone` (the version is too old) lists again and sends a new `Resync`.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
    PostParams, Preconditions, WatchEvent as KubeEvent, WatchParams,
};
use kube::core::ClusterResourceScope;
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
        Key::Resource { name, .. } => name.clone(),
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
    let mut o = DynamicObject::new(&r.name, &api_resource(&r.kind))
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
        let list = self
            .api::<K>()
            .list(lp)
            .await
            .map_err(|e| map_err(&format!("list {}", K::plural(&())), e))?;
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
        let list = self
            .dyn_api(kind)
            .list(lp)
            .await
            .map_err(|e| map_err(&format!("list {}", api_resource(kind).plural), e))?;
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

    fn watch_kind(
        &self,
        kind: Kind,
        rv: String,
    ) -> BoxStream<'static, Result<WatchEvent, Restart>> {
        match kind {
            Kind::Pool => watch_k(self.api::<IPPool>(), rv),
            Kind::Block => watch_k(self.api::<IPAMBlock>(), rv),
            Kind::Affinity => watch_k(self.api::<BlockAffinity>(), rv),
            Kind::Handle => watch_k(self.api::<IPAMHandle>(), rv),
            Kind::Config => watch_k(self.api::<IPAMConfig>(), rv),
            Kind::Resource => futures::stream::empty().boxed(),
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

    async fn list_source(
        &self,
        s: &Source,
    ) -> Result<(Vec<Versioned<Object>>, String), StoreError> {
        match s {
            Source::Typed(k) => self.list_kind(*k, &ListParams::default()).await,
            Source::Dyn(kind) => self.list_dyn(kind, &ListParams::default()).await,
        }
    }

    fn watch_source(
        &self,
        s: &Source,
        rv: String,
    ) -> BoxStream<'static, Result<WatchEvent, Restart>> {
        match s {
            Source::Typed(k) => self.watch_kind(*k, rv),
            Source::Dyn(kind) => {
                let kind = kind.clone();
                let what = api_resource(&kind).plural;
                watch_api(self.dyn_api(&kind), rv, what, move |o| decode_dyn(&kind, o))
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

/// Why a watch must list again.
enum Restart {
    /// 410 Gone: the version is too old.
    Gone,
    Failed(StoreError),
}

/// Watches one kind from `rv`, re-watching from the last version seen when the server
/// ends the watch.
fn watch_k<K: Crd>(api: Api<K>, rv: String) -> BoxStream<'static, Result<WatchEvent, Restart>> {
    watch_api(api, rv, K::plural(&()).to_string(), decode::<K>)
}

/// Watches one collection from `rv` (named `what` in errors), decoding with `decode`.
fn watch_api<K, D>(
    api: Api<K>,
    rv: String,
    what: String,
    decode: D,
) -> BoxStream<'static, Result<WatchEvent, Restart>>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    D: Fn(&K) -> Result<Versioned<Object>, StoreError> + Send + Sync + 'static,
{
    type Inner<K> = BoxStream<'static, Result<KubeEvent<K>, kube::Error>>;
    let decode = std::sync::Arc::new(decode);
    let state: (Api<K>, String, Option<Inner<K>>) = (api, rv, None);
    futures::stream::unfold(state, move |(api, mut rv, mut cur)| {
        let decode = decode.clone();
        let what = what.clone();
        async move {
            loop {
                let stream = match cur.as_mut() {
                    Some(s) => s,
                    None => match api.watch(&WatchParams::default().timeout(290), &rv).await {
                        Ok(s) => cur.insert(s.boxed()),
                        Err(e) => {
                            let err = map_err(&format!("watch {what}"), e);
                            return Some((Err(Restart::Failed(err)), (api, rv, None)));
                        }
                    },
                };
                let item = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => {
                        cur = None;
                        continue;
                    }
                    Err(e) => {
                        let err = map_err(&format!("watch {what}"), e);
                        return Some((Err(Restart::Failed(err)), (api, rv, None)));
                    }
                };
                let out = match item {
                    KubeEvent::Added(o) | KubeEvent::Modified(o) => {
                        rv = o.resource_version().unwrap_or(rv);
                        (*decode)(&o).map(WatchEvent::Put)
                    }
                    KubeEvent::Deleted(o) => {
                        rv = o.resource_version().unwrap_or(rv);
                        (*decode)(&o).map(|v| WatchEvent::Deleted(v.value.key()))
                    }
                    KubeEvent::Bookmark(b) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    KubeEvent::Error(s) if s.code == 410 => {
                        return Some((Err(Restart::Gone), (api, rv, None)))
                    }
                    KubeEvent::Error(s) => {
                        let err = map_err(&format!("watch {what}"), kube::Error::Api(s));
                        return Some((Err(Restart::Failed(err)), (api, rv, None)));
                    }
                };
                return Some((out.map_err(Restart::Failed), (api, rv, cur)));
            }
        }
    })
    .boxed()
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
                Key::Resource { kind, name } => self.get_dyn(kind, name).await,
                _ => Ok(None),
            },
        }
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        match filter {
            ListFilter::Kind(k) => Ok(self.list_kind(*k, &ListParams::default()).await?.0),
            ListFilter::Resources(kind) => Ok(self.list_dyn(kind, &ListParams::default()).await?.0),
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
                    Key::Resource { kind, name } => self.write_dyn(w, kind, name).await?,
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
        let store = self.clone();
        let kinds = self.sources(kinds);
        // Phase: None = list and resync next; Some(stream) = forwarding changes.
        type Merged = futures::stream::SelectAll<BoxStream<'static, Result<WatchEvent, Restart>>>;
        let state: (KubeStore, Vec<Source>, Option<Merged>) = (store, kinds, None);
        let stream = futures::stream::unfold(state, |(store, kinds, mut merged)| async move {
            loop {
                let Some(m) = merged.as_mut() else {
                    let mut objs = Vec::new();
                    let mut streams = Vec::new();
                    for k in &kinds {
                        match store.list_source(k).await {
                            Ok((o, rv)) => {
                                objs.extend(o);
                                streams.push(store.watch_source(k, rv));
                            }
                            Err(e) => {
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                                return Some((Err(e), (store, kinds, None)));
                            }
                        }
                    }
                    let m = futures::stream::select_all(streams);
                    return Some((Ok(WatchEvent::Resync(objs)), (store, kinds, Some(m))));
                };
                match m.next().await {
                    Some(Ok(ev)) => return Some((Ok(ev), (store, kinds, merged))),
                    Some(Err(Restart::Failed(e))) => return Some((Err(e), (store, kinds, None))),
                    // 410 Gone: list again; the next item is a Resync.
                    Some(Err(Restart::Gone)) | None => merged = None,
                }
            }
        });
        Ok(Box::pin(stream))
    }
}
