//! The datastore trait every IPAM store implements, and the objects it stores.
//!
//! A store holds five kinds of IPAM objects and opaque cluster [resources](Resource) ([`Kind`]), each under a [`Key`] derived from the
//! object itself. Every write is a compare-and-swap ([`Write`] with an [`Expect`]): create
//! only if absent, update or delete only if the object still has the [`Revision`] it was
//! read with. A lost swap is [`StoreError::Conflict`]; an unreachable store is
//! [`StoreError::Unavailable`], after which a write's outcome is unknown. The retry loop
//! in [`crate::ops`] handles both by reading again.
//!
//! Stores: [`file::FileStore`] (one file, one machine), `etcd::EtcdStore` (feature `etcd`),
//! `kube::KubeStore` (feature `kubernetes`); [`select`] picks one from a string.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::{
    Block, BlockAffinity, Handle, HandleId, IpPool, IpamConfig, NodeName, PoolName,
};

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod memory;
pub mod resource;
pub mod select;

pub use resource::{Resource, ResourceKind, ResourceName};

/// An opaque compare-and-swap token: a file generation, an etcd `mod_revision`, a
/// Kubernetes `resourceVersion`. Only equality means anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value as read from a store, with the revision to compare against when writing it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

impl<T> Versioned<T> {
    pub fn new(value: T, revision: Revision) -> Self {
        Versioned { value, revision }
    }
}

/// The kinds of stored objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pool,
    Block,
    Affinity,
    Handle,
    Config,
    /// Opaque resources of every kind ([`Resource`]).
    Resource,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Pool,
        Kind::Block,
        Kind::Affinity,
        Kind::Handle,
        Kind::Config,
        Kind::Resource,
    ];
}

/// Where an object lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Pool(PoolName),
    Block(IpNet),
    Affinity {
        node: NodeName,
        cidr: IpNet,
    },
    Handle(HandleId),
    /// The cluster's single IPAM configuration.
    Config,
    /// A [`Resource`] of `kind` called `name`, both checked when they were made.
    Resource {
        kind: ResourceKind,
        name: ResourceName,
    },
}

impl Key {
    pub fn kind(&self) -> Kind {
        match self {
            Key::Pool(_) => Kind::Pool,
            Key::Block(_) => Kind::Block,
            Key::Affinity { .. } => Kind::Affinity,
            Key::Handle(_) => Kind::Handle,
            Key::Config => Kind::Config,
            Key::Resource { .. } => Kind::Resource,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Pool(n) => write!(f, "pool {n}"),
            Key::Block(c) => write!(f, "block {c}"),
            Key::Affinity { node, cidr } => write!(f, "affinity {node}/{cidr}"),
            Key::Handle(h) => write!(f, "handle {h}"),
            Key::Config => f.write_str("ipam config"),
            Key::Resource { kind, name } => write!(f, "{kind} {name}"),
        }
    }
}

/// Any stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Pool(IpPool),
    Block(Block),
    Affinity(BlockAffinity),
    Handle(Handle),
    Config(IpamConfig),
    Resource(Resource),
}

impl Object {
    pub fn key(&self) -> Key {
        match self {
            Object::Pool(p) => Key::Pool(p.name.clone()),
            Object::Block(b) => Key::Block(b.cidr),
            Object::Affinity(a) => Key::Affinity {
                node: a.node.clone(),
                cidr: a.cidr,
            },
            Object::Handle(h) => Key::Handle(h.handle_id.clone()),
            Object::Config(_) => Key::Config,
            Object::Resource(r) => Key::Resource {
                kind: r.kind.clone(),
                name: r.name.clone(),
            },
        }
    }

    pub fn kind(&self) -> Kind {
        self.key().kind()
    }

    /// The object as JSON, the representation every store keeps.
    pub fn to_json(&self) -> serde_json::Value {
        let r = match self {
            Object::Pool(v) => serde_json::to_value(v),
            Object::Block(v) => serde_json::to_value(v),
            Object::Affinity(v) => serde_json::to_value(v),
            Object::Handle(v) => serde_json::to_value(v),
            Object::Config(v) => serde_json::to_value(v),
            Object::Resource(v) => serde_json::to_value(v),
        };
        // These types serialize to JSON infallibly: no maps with non-string keys.
        r.unwrap_or(serde_json::Value::Null)
    }

    /// Decodes an object of `kind` from JSON; `location` names it in the error.
    pub fn from_json(
        kind: Kind,
        value: serde_json::Value,
        location: &str,
    ) -> Result<Object, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            location: location.to_owned(),
            detail: format!("cannot decode {kind:?}: {e}"),
        };
        Ok(match kind {
            Kind::Pool => Object::Pool(serde_json::from_value(value).map_err(corrupt)?),
            Kind::Block => Object::Block(serde_json::from_value(value).map_err(corrupt)?),
            Kind::Affinity => Object::Affinity(serde_json::from_value(value).map_err(corrupt)?),
            Kind::Handle => Object::Handle(serde_json::from_value(value).map_err(corrupt)?),
            Kind::Config => Object::Config(serde_json::from_value(value).map_err(corrupt)?),
            Kind::Resource => Object::Resource(serde_json::from_value(value).map_err(corrupt)?),
        })
    }
}

/// What a write expects to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (create).
    Absent,
    /// The object must still be at this revision (update, delete).
    Revision(Revision),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(Object),
    Delete,
}

/// One compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub key: Key,
    pub op: Op,
    pub expect: Expect,
}

impl Write {
    /// Create `obj`; fails with a conflict if its key exists.
    pub fn create(obj: Object) -> Self {
        Write {
            key: obj.key(),
            op: Op::Put(obj),
            expect: Expect::Absent,
        }
    }

    /// Replace the object read at `rev` with `obj`.
    pub fn update(obj: Object, rev: Revision) -> Self {
        Write {
            key: obj.key(),
            op: Op::Put(obj),
            expect: Expect::Revision(rev),
        }
    }

    /// Create or update depending on whether it was read.
    pub fn put(obj: Object, rev: Option<Revision>) -> Self {
        match rev {
            Some(rev) => Write::update(obj, rev),
            None => Write::create(obj),
        }
    }

    /// Delete the object read at `rev`.
    pub fn delete(key: Key, rev: Revision) -> Self {
        Write {
            key,
            op: Op::Delete,
            expect: Expect::Revision(rev),
        }
    }
}

/// What to list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListFilter {
    /// Every object of a kind.
    Kind(Kind),
    /// The block affinities of one node.
    AffinitiesOf(NodeName),
    /// The resources of one kind (`ListFilter::Kind(Kind::Resource)` lists every kind).
    Resources(ResourceKind),
}

/// One read of a [`Store::read_many`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Get(Key),
    List(ListFilter),
}

/// A change seen by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete current set of watched objects. Sent first, and again whenever the
    /// store could not deliver every change (etcd compaction, Kubernetes 410 Gone): the
    /// receiver replaces what it knew.
    Resync(Vec<Versioned<Object>>),
    /// An object was created or changed.
    Put(Versioned<Object>),
    /// An object was deleted.
    Deleted(Key),
}

/// A stream of watch events; it ends only when the receiver drops it.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A datastore for IPAM objects.
#[async_trait]
pub trait Store: Send + Sync {
    /// How the store was named (`file:/var/lib/serval/ipam.json`, `etcd:…`), for messages.
    fn describe(&self) -> String;

    /// Reads one object.
    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError>;

    /// Reads several objects, in the order of `keys`. Stores that can read them in one
    /// round trip (etcd: one transaction) override this.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned<Object>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Lists objects.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError>;

    /// Makes several reads, returning each one's objects in the order of `reads` (a
    /// [`Read::Get`] gives zero or one). Stores that can make them in one round trip and
    /// from one consistent view (etcd: one transaction) override this; the allocator reads
    /// what an operation needs through it, so each round trip saved is saved on every
    /// allocation.
    async fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Object>>>, StoreError> {
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            out.push(match r {
                Read::Get(k) => self.get(k).await?.into_iter().collect(),
                Read::List(f) => self.list(f).await?,
            });
        }
        Ok(out)
    }

    /// Applies `writes` in order, each a compare-and-swap, and returns each object's new
    /// revision (`None` for a delete).
    ///
    /// If [`Store::atomic_commit`] is true the batch is all-or-nothing. Otherwise the writes
    /// are applied one after the other and the first failure stops the batch with the
    /// earlier writes in place: every batch the allocator produces is ordered so that each
    /// of its prefixes is a safe state.
    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError>;

    /// Whether [`Store::commit`] applies a batch atomically.
    fn atomic_commit(&self) -> bool;

    /// Watches objects of `kinds`: first a [`WatchEvent::Resync`], then changes.
    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError>;
}

fn wrong_kind(key: &Key, got: Kind) -> StoreError {
    StoreError::Corrupt {
        location: key.to_string(),
        detail: format!("holds a {got:?}, not a {:?}", key.kind()),
    }
}

/// The object types, to read them typed.
pub trait FromObject: Sized + Send {
    const KIND: Kind;
    /// The value if `o` is of this type, else the kind it is.
    fn from_object(o: Object) -> Result<Self, Kind>;
}

macro_rules! from_object {
    ($ty:ty, $variant:ident) => {
        impl FromObject for $ty {
            const KIND: Kind = Kind::$variant;
            fn from_object(o: Object) -> Result<Self, Kind> {
                match o {
                    Object::$variant(v) => Ok(v),
                    other => Err(other.kind()),
                }
            }
        }
    };
}

from_object!(IpPool, Pool);
from_object!(Block, Block);
from_object!(BlockAffinity, Affinity);
from_object!(Handle, Handle);
from_object!(IpamConfig, Config);
from_object!(Resource, Resource);

fn typed<T: FromObject>(key: &Key, v: Versioned<Object>) -> Result<Versioned<T>, StoreError> {
    match T::from_object(v.value) {
        Ok(t) => Ok(Versioned::new(t, v.revision)),
        Err(other) => Err(wrong_kind(key, other)),
    }
}

fn typed_all<T: FromObject>(objs: Vec<Versioned<Object>>) -> Result<Vec<Versioned<T>>, StoreError> {
    objs.into_iter()
        .map(|o| {
            let key = o.value.key();
            typed(&key, o)
        })
        .collect()
}

/// Typed reads over any [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Reads one object of type `T`.
    async fn get_as<T: FromObject>(&self, key: &Key) -> Result<Option<Versioned<T>>, StoreError> {
        match self.get(key).await? {
            Some(v) => typed(key, v).map(Some),
            None => Ok(None),
        }
    }

    /// Lists every object of type `T`.
    async fn list_as<T: FromObject>(&self) -> Result<Vec<Versioned<T>>, StoreError> {
        typed_all(self.list(&ListFilter::Kind(T::KIND)).await?)
    }

    async fn get_pool(&self, name: &PoolName) -> Result<Option<Versioned<IpPool>>, StoreError> {
        self.get_as(&Key::Pool(name.clone())).await
    }

    async fn list_pools(&self) -> Result<Vec<Versioned<IpPool>>, StoreError> {
        self.list_as().await
    }

    async fn get_block(&self, cidr: &IpNet) -> Result<Option<Versioned<Block>>, StoreError> {
        self.get_as(&Key::Block(*cidr)).await
    }

    async fn list_blocks(&self) -> Result<Vec<Versioned<Block>>, StoreError> {
        self.list_as().await
    }

    async fn get_handle(&self, id: &HandleId) -> Result<Option<Versioned<Handle>>, StoreError> {
        self.get_as(&Key::Handle(id.clone())).await
    }

    async fn list_handles(&self) -> Result<Vec<Versioned<Handle>>, StoreError> {
        self.list_as().await
    }

    async fn list_affinities(&self) -> Result<Vec<Versioned<BlockAffinity>>, StoreError> {
        self.list_as().await
    }

    /// The block affinities of one node.
    async fn affinities_of(
        &self,
        node: &NodeName,
    ) -> Result<Vec<Versioned<BlockAffinity>>, StoreError> {
        typed_all(self.list(&ListFilter::AffinitiesOf(node.clone())).await?)
    }

    /// One resource; none is stored under a kind or name that is not valid.
    async fn get_resource(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<Versioned<Resource>>, StoreError> {
        let (Ok(kind), Ok(name)) = (ResourceKind::new(kind), ResourceName::new(name)) else {
            return Ok(None);
        };
        self.get_as(&Key::Resource { kind, name }).await
    }

    /// Every resource of one kind; none is stored under a kind that is not valid.
    async fn list_resources(&self, kind: &str) -> Result<Vec<Versioned<Resource>>, StoreError> {
        let Ok(kind) = ResourceKind::new(kind) else {
            return Ok(Vec::new());
        };
        typed_all(self.list(&ListFilter::Resources(kind)).await?)
    }

    /// The IPAM configuration, if one was stored.
    async fn get_config(&self) -> Result<Option<Versioned<IpamConfig>>, StoreError> {
        self.get_as(&Key::Config).await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
