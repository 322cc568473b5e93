//! The etcd v3 store.
//!
//! ## Key layout
//! Under a prefix `P` (default `/serval/ipam/v1`, see [`super::select`]), values are the
//! objects' JSON (the same JSON as the file store and the CRD specs):
//!
//! ```text
//! P/pools/<pool name>                 IpPool
//! P/blocks/<block cidr>               Block          e.g. P/blocks/10.65.0.64/26
//! P/affinity/<node>/<block cidr>      BlockAffinity  e.g. P/affinity/node-1/fd00::40/122
//! P/handles/<handle id>               Handle
//! P/config                            IpamConfig
//! P/resources/<kind>/<name>           Resource       e.g. P/resources/BGPPeer/tor-1
//! ```
//!
//! With the default prefix a BGP peer is `/serval/ipam/v1/resources/BGPPeer/tor-1`: the
//! resources share the IPAM's prefix so that one watch and one transaction cover both.
//!
//! A node's affinities share the prefix `P/affinity/<node>/`, so reading them is one range
//! request. Node names and handle ids contain no `/` (they are DNS subdomains).
//!
//! ## Reads
//! [`Store::read_many`] (and [`Store::get_many`]) make up to 64 gets and prefix ranges in
//! one transaction: one round trip, and every object read at the same revision. The
//! allocator reads the pools, the configuration, the handle and the node's affinities of
//! an allocation this way, then the node's blocks, then commits: three round trips.
//!
//! ## Writes
//! Every [`Store::commit`] is one etcd transaction: for each write a compare — `version == 0`
//! to create, `mod_revision == R` to update or delete — and the puts and deletes only if all
//! compares hold. A batch is therefore atomic, and the revision of every object it wrote is
//! the transaction's header revision.
//!
//! ## Failures
//! Requests carry a deadline ([`EtcdConfig::timeout`]); a request that times out or
//! cannot reach a member is [`StoreError::Unavailable`], after which a write's outcome is
//! unknown and the caller reads again. gRPC keepalives notice a dead connection, and the
//! client reconnects when etcd comes back.
//!
//! ## Watch
//! [`Store::watch`] lists the watched kinds, sends a [`WatchEvent::Resync`], then watches
//! each kind's key range from the next revision, all on one gRPC stream: etcd sends a
//! watcher only the kinds it watches. The stream has no deadline (requests do): an idle
//! watch stays open for as long as the connection does. After a compaction, a cancelled
//! watch or a lost connection it lists again and sends a new `Resync`, so the agent never
//! misses a change silently.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, TlsOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt as _;
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::resource::{ResourceKind, ResourceName};
use super::select::EtcdConfig;
use super::{
    Expect, Key, Kind, ListFilter, Object, Op, Read, Revision, Store, Versioned, WatchEvent,
    WatchStream, Write,
};
use crate::error::StoreError;
use crate::model::{HandleId, NodeName, PoolName};

/// Most reads in one transaction: etcd refuses transactions of more than 128 operations
/// by default (`--max-txn-ops`).
const MAX_TXN_READS: usize = 64;

/// The etcd store.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    config: EtcdConfig,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.config)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to etcd. Fails with [`StoreError::Unavailable`] if no member answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        config.validate()?;
        // No per-request timeout on the connection: gRPC would send it as the deadline of
        // the watch stream too, and etcd would end an idle watch after that long. Each
        // request gets its deadline from `deadline` instead. Keepalive pings only while a
        // stream is open (the watch) and no more often than etcd's enforcement allows
        // (`--grpc-keepalive-min-time`, 5 s): a client pinging faster, or pinging with no
        // stream open, is sent a GOAWAY and loses its watch.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, config.timeout)
            .with_keep_alive_while_idle(false);
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if config.uses_tls() {
            let mut tls = TlsOptions::new();
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| StoreError::Io {
                    path: p.display().to_string(),
                    source: e,
                })
            };
            if let Some(ca) = &config.tls.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&config.tls.cert_file, &config.tls.key_file) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            opts = opts.with_tls(tls);
        }
        let client = tokio::time::timeout(
            config.timeout,
            Client::connect(config.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| StoreError::Unavailable {
            store: format!("etcd:{}", config.endpoints.join(",")),
            detail: format!("no answer within {:?}", config.timeout),
        })?
        .map_err(|e| map_err(&config, e))?;
        Ok(EtcdStore { client, config })
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    fn key(&self, key: &Key) -> String {
        key_of(&self.config.prefix, key)
    }

    fn kind_prefix(&self, kind: Kind) -> String {
        let p = &self.config.prefix;
        match kind {
            Kind::Pool => format!("{p}/pools/"),
            Kind::Block => format!("{p}/blocks/"),
            Kind::Affinity => format!("{p}/affinity/"),
            Kind::Handle => format!("{p}/handles/"),
            Kind::Config => format!("{p}/config"),
            Kind::Resource => format!("{p}/resources/"),
        }
    }

    /// The kind and the key prefix that a list filter covers.
    fn filter_prefix(&self, filter: &ListFilter) -> (Kind, String) {
        match filter {
            ListFilter::Kind(k) => (*k, self.kind_prefix(*k)),
            ListFilter::AffinitiesOf(n) => (
                Kind::Affinity,
                format!("{}/affinity/{n}/", self.config.prefix),
            ),
            ListFilter::Resources(k) => (
                Kind::Resource,
                format!("{}/resources/{k}/", self.config.prefix),
            ),
        }
    }

    fn parse_key(&self, raw: &str) -> Option<Key> {
        parse_key_of(&self.config.prefix, raw)
    }

    fn decode(&self, kind: Kind, kv: &KeyValue) -> Result<Versioned<Object>, StoreError> {
        let raw = String::from_utf8_lossy(kv.key()).into_owned();
        let location = format!("etcd key {raw}");
        let value: serde_json::Value =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                location: location.clone(),
                detail: e.to_string(),
            })?;
        let obj = Object::from_json(kind, value, &location)?;
        if self.key(&obj.key()) != raw {
            return Err(StoreError::Corrupt {
                location,
                detail: format!("holds {} under the wrong key", obj.key()),
            });
        }
        Ok(Versioned::new(obj, Revision(kv.mod_revision().to_string())))
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new().with_prefix();
        let mut resp = self.deadline(kv.get(prefix, Some(opts))).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.take_kvs(), rev))
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        // The request's deadline; it also covers a stuck connect.
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(&self.config, e)),
            Err(_) => Err(StoreError::Unavailable {
                store: self.describe(),
                detail: format!("no answer within {:?}", self.config.timeout),
            }),
        }
    }

    async fn list_kinds(
        &self,
        kinds: &[Kind],
    ) -> Result<(Vec<Versioned<Object>>, i64), StoreError> {
        let mut out = Vec::new();
        let mut rev = i64::MAX;
        for k in kinds {
            let (kvs, r) = self.range(&self.kind_prefix(*k)).await?;
            rev = rev.min(r);
            for kv in &kvs {
                out.push(self.decode(*k, kv)?);
            }
        }
        Ok((out, if rev == i64::MAX { 0 } else { rev }))
    }
}

/// The etcd key of `key` under prefix `p`.
fn key_of(p: &str, key: &Key) -> String {
    match key {
        Key::Pool(n) => format!("{p}/pools/{n}"),
        Key::Block(c) => format!("{p}/blocks/{c}"),
        Key::Affinity { node, cidr } => format!("{p}/affinity/{node}/{cidr}"),
        Key::Handle(h) => format!("{p}/handles/{h}"),
        Key::Config => format!("{p}/config"),
        Key::Resource { kind, name } => format!("{p}/resources/{kind}/{name}"),
    }
}

/// The key an etcd key names, if it is one of ours.
fn parse_key_of(prefix: &str, raw: &str) -> Option<Key> {
    let rest = raw.strip_prefix(prefix)?.strip_prefix('/')?;
    if rest == "config" {
        return Some(Key::Config);
    }
    let (kind, name) = rest.split_once('/')?;
    match kind {
        "pools" => PoolName::new(name).ok().map(Key::Pool),
        "blocks" => name.parse::<IpNet>().ok().map(Key::Block),
        "affinity" => {
            let (node, cidr) = name.split_once('/')?;
            Some(Key::Affinity {
                node: NodeName::new(node).ok()?,
                cidr: cidr.parse().ok()?,
            })
        }
        "handles" => HandleId::new(name).ok().map(Key::Handle),
        "resources" => {
            let (kind, name) = name.split_once('/')?;
            Some(Key::Resource {
                kind: ResourceKind::new(kind).ok()?,
                name: ResourceName::new(name).ok()?,
            })
        }
        _ => None,
    }
}

fn map_err(config: &EtcdConfig, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let store = format!("etcd:{}", config.endpoints.join(","));
    match e {
        E::GRpcStatus(s) => match s.code() {
            tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::ResourceExhausted
            | tonic::Code::OutOfRange
            | tonic::Code::Unimplemented => StoreError::Rejected {
                store,
                detail: format!("{}: {}", s.code(), s.message()),
            },
            _ => StoreError::Unavailable {
                store,
                detail: format!("{}: {}", s.code(), s.message()),
            },
        },
        E::InvalidArgs(m) => StoreError::Config(m),
        E::InvalidUri(u) => StoreError::Config(format!("invalid etcd endpoint: {u}")),
        other => StoreError::Unavailable {
            store,
            detail: other.to_string(),
        },
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd:{}", self.config.endpoints.join(","))
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self.deadline(kv.get(self.key(key), None)).await?;
        resp.kvs()
            .first()
            .map(|v| self.decode(key.kind(), v))
            .transpose()
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned<Object>>>, StoreError> {
        let reads: Vec<Read> = keys.iter().cloned().map(Read::Get).collect();
        Ok(self
            .read_many(&reads)
            .await?
            .into_iter()
            .map(|objs| objs.into_iter().next())
            .collect())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        let (kind, prefix) = self.filter_prefix(filter);
        let (kvs, _) = self.range(&prefix).await?;
        kvs.iter().map(|kv| self.decode(kind, kv)).collect()
    }

    async fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Object>>>, StoreError> {
        if let [one] = reads {
            // A plain range costs etcd less than a transaction around it.
            return Ok(vec![match one {
                Read::Get(k) => self.get(k).await?.into_iter().collect(),
                Read::List(f) => self.list(f).await?,
            }]);
        }
        let mut out = Vec::with_capacity(reads.len());
        // One transaction of range requests per chunk: one round trip, one consistent view.
        for chunk in reads.chunks(MAX_TXN_READS) {
            let mut kinds = Vec::with_capacity(chunk.len());
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|r| match r {
                    Read::Get(k) => {
                        kinds.push(k.kind());
                        TxnOp::get(self.key(k), None)
                    }
                    Read::List(f) => {
                        let (kind, prefix) = self.filter_prefix(f);
                        kinds.push(kind);
                        TxnOp::get(prefix, Some(GetOptions::new().with_prefix()))
                    }
                })
                .collect();
            let mut kv = self.client.kv_client();
            let resp = self.deadline(kv.txn(Txn::new().and_then(ops))).await?;
            let responses = resp.op_responses();
            if responses.len() != chunk.len() {
                return Err(StoreError::Unavailable {
                    store: self.describe(),
                    detail: format!(
                        "made {} reads, got {} answers",
                        chunk.len(),
                        responses.len()
                    ),
                });
            }
            for (kind, r) in kinds.into_iter().zip(responses) {
                let got = match r {
                    etcd_client::TxnOpResponse::Get(g) => g
                        .kvs()
                        .iter()
                        .map(|kv| self.decode(kind, kv))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => Vec::new(),
                };
                out.push(got);
            }
        }
        Ok(out)
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let mut compares = Vec::with_capacity(writes.len());
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            let k = self.key(&w.key);
            compares.push(match &w.expect {
                Expect::Absent => Compare::version(k.clone(), CompareOp::Equal, 0),
                Expect::Revision(r) => {
                    let rev: i64 = r.0.parse().map_err(|_| StoreError::Conflict {
                        key: w.key.to_string(),
                    })?;
                    Compare::mod_revision(k.clone(), CompareOp::Equal, rev)
                }
            });
            ops.push(match &w.op {
                Op::Put(obj) => {
                    let bytes =
                        serde_json::to_vec(&obj.to_json()).map_err(|e| StoreError::Rejected {
                            store: self.describe(),
                            detail: e.to_string(),
                        })?;
                    TxnOp::put(k, bytes, None)
                }
                Op::Delete => TxnOp::delete(k, None),
            });
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let mut kv = self.client.kv_client();
        let resp = self.deadline(kv.txn(txn)).await?;
        if !resp.succeeded() {
            let keys: Vec<String> = writes.iter().map(|w| w.key.to_string()).collect();
            return Err(StoreError::Conflict {
                key: keys.join(", "),
            });
        }
        let rev = Revision(resp.header().map_or(0, |h| h.revision()).to_string());
        Ok(writes
            .iter()
            .map(|w| matches!(w.op, Op::Put(_)).then(|| rev.clone()))
            .collect())
    }

    fn atomic_commit(&self) -> bool {
        true
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        let (objs, rev) = self.list_kinds(kinds).await?;
        let (tx, rx) = mpsc::channel(256);
        let store = self.clone();
        let kinds = kinds.to_vec();
        let task = tokio::spawn(async move {
            if tx.send(Ok(WatchEvent::Resync(objs))).await.is_err() {
                return;
            }
            let mut from = rev + 1;
            loop {
                // Ok(None): the receiver is gone. Otherwise (compaction, a lost stream)
                // list again.
                if let Ok(None) = store.watch_from(&kinds, from, &tx).await {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match store.list_kinds(&kinds).await {
                        Ok((objs, rev)) => {
                            if tx.send(Ok(WatchEvent::Resync(objs))).await.is_err() {
                                return;
                            }
                            from = rev + 1;
                            break;
                        }
                        Err(e) => {
                            if tx.send(Err(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let guard = AbortOnDrop(task);
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            let item = rx.recv().await?;
            Some((item, (rx, guard)))
        });
        Ok(Box::pin(stream))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EtcdStore {
    /// Forwards changes from `from` on. `Ok(None)`: the receiver is gone; `Ok(Some(()))`:
    /// the watch ended (compaction, cancel) and the caller must list again.
    ///
    /// One gRPC stream carries one etcd watch per kind, each on that kind's key range, so
    /// etcd sends this watcher only the kinds it asked for: an agent watching pools and
    /// blocks is not sent every handle written for every pod in the cluster.
    async fn watch_from(
        &self,
        kinds: &[Kind],
        from: i64,
        tx: &mpsc::Sender<Result<WatchEvent, StoreError>>,
    ) -> Result<Option<()>, StoreError> {
        let Some((first, rest)) = kinds.split_first() else {
            // Nothing to watch: wait for the receiver to go.
            tx.closed().await;
            return Ok(None);
        };
        let mut client = self.client.clone();
        let opts = |kind: Kind| {
            let o = WatchOptions::new().with_start_revision(from);
            // The configuration is one key; every other kind is a prefix.
            if kind == Kind::Config {
                o
            } else {
                o.with_prefix()
            }
        };
        let mut stream = self
            .deadline(client.watch(self.kind_prefix(*first), Some(opts(*first))))
            .await?;
        for k in rest {
            self.deadline(stream.watch(self.kind_prefix(*k), Some(opts(*k))))
                .await?;
        }
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|e| map_err(&self.config, e))?;
            if msg.canceled() || msg.compact_revision() != 0 {
                return Ok(Some(()));
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let raw = String::from_utf8_lossy(kv.key()).into_owned();
                let Some(key) = self.parse_key(&raw) else {
                    continue;
                };
                if !kinds.contains(&key.kind()) {
                    continue;
                }
                let item = match ev.event_type() {
                    EventType::Put => self.decode(key.kind(), kv).map(WatchEvent::Put),
                    EventType::Delete => Ok(WatchEvent::Deleted(key)),
                };
                if tx.send(item).await.is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    }
}

/// How often gRPC pings etcd while the watch stream is open; a ping unanswered within the
/// request timeout ends the connection, and the watch lists again once etcd is back.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        // The layout is what the module documentation promises; parse_key inverts it.
        let cfg = EtcdConfig::new(vec!["http://127.0.0.1:1".into()]);
        let keys = [
            (
                Key::Pool(PoolName::new("default").unwrap()),
                "/serval/ipam/v1/pools/default",
            ),
            (
                Key::Block("10.65.0.64/26".parse().unwrap()),
                "/serval/ipam/v1/blocks/10.65.0.64/26",
            ),
            (
                Key::Affinity {
                    node: NodeName::new("node-1").unwrap(),
                    cidr: "fd00::40/122".parse().unwrap(),
                },
                "/serval/ipam/v1/affinity/node-1/fd00::40/122",
            ),
            (
                Key::Handle(HandleId::new("k8s-pod-network.ab").unwrap()),
                "/serval/ipam/v1/handles/k8s-pod-network.ab",
            ),
            (Key::Config, "/serval/ipam/v1/config"),
            (
                Key::Resource {
                    kind: ResourceKind::from_static("BGPPeer"),
                    name: ResourceName::new("tor-1").unwrap(),
                },
                "/serval/ipam/v1/resources/BGPPeer/tor-1",
            ),
        ];
        for (k, s) in keys {
            assert_eq!(key_of(&cfg.prefix, &k), s);
            assert_eq!(parse_key_of(&cfg.prefix, s), Some(k));
        }
        assert_eq!(parse_key_of(&cfg.prefix, "/other/pools/x"), None);
    }
}
