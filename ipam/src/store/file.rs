//! The embedded store: every object in one JSON file, for a single machine and the lab.
//!
//! - Writes take an exclusive lock on `PATH.lock` (so the agent and concurrent CNI
//!   invocations on one host are serialized), read the file afresh, check every
//!   compare-and-swap of the batch, then write `PATH.tmp.PID`, fsync it, rename it over
//!   `PATH` and fsync the directory. A batch is all-or-nothing; a crash leaves the old or
//!   the new file, never a torn one.
//! - Reads take no lock: a rename is atomic, so a reader sees one whole file. Parsed
//!   contents are cached per file identity (inode, size, mtime); writes never use the cache.
//! - A file that does not parse is reported as [`StoreError::Corrupt`] with its path and
//!   the parser's message, and is never overwritten: writes fail the same way until an
//!   operator repairs or restores it. A missing file is an empty store.
//! - Revisions are a generation counter kept in the file: each write batch bumps it and
//!   stamps the objects it writes.
//!
//! Layout: `{"format": "serval-ipam/1", "generation": N, "pools": {NAME: ENTRY},
//! "blocks": {CIDR: ENTRY}, "affinities": {"NODE/CIDR": ENTRY}, "handles": {ID: ENTRY},
//! "config": {"config": ENTRY}}` with `ENTRY = {"revision": N, "value": OBJECT}`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Expect, Key, Kind, ListFilter, Object, Op, Revision, Store, Versioned, WatchEvent, WatchStream,
    Write,
};
use crate::error::StoreError;

const FORMAT: &str = "serval-ipam/1";

/// How often [`FileStore::watch`] looks at the file.
const WATCH_POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: String,
    generation: u64,
    #[serde(default)]
    pools: BTreeMap<String, Entry>,
    #[serde(default)]
    blocks: BTreeMap<String, Entry>,
    #[serde(default)]
    affinities: BTreeMap<String, Entry>,
    #[serde(default)]
    handles: BTreeMap<String, Entry>,
    #[serde(default)]
    config: BTreeMap<String, Entry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    revision: u64,
    value: serde_json::Value,
}

fn kind_key(key: &Key) -> (Kind, String) {
    let s = match key {
        Key::Pool(n) => n.to_string(),
        Key::Block(c) => c.to_string(),
        Key::Affinity { node, cidr } => format!("{node}/{cidr}"),
        Key::Handle(h) => h.to_string(),
        Key::Config => "config".to_owned(),
    };
    (key.kind(), s)
}

impl Doc {
    fn empty() -> Doc {
        Doc {
            format: FORMAT.to_owned(),
            ..Doc::default()
        }
    }

    fn table(&self, kind: Kind) -> &BTreeMap<String, Entry> {
        match kind {
            Kind::Pool => &self.pools,
            Kind::Block => &self.blocks,
            Kind::Affinity => &self.affinities,
            Kind::Handle => &self.handles,
            Kind::Config => &self.config,
        }
    }

    fn table_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Entry> {
        match kind {
            Kind::Pool => &mut self.pools,
            Kind::Block => &mut self.blocks,
            Kind::Affinity => &mut self.affinities,
            Kind::Handle => &mut self.handles,
            Kind::Config => &mut self.config,
        }
    }
}

/// Identity of the file's current version, to know when the cache is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The embedded single-file store.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
    cache: Arc<Mutex<Option<(FileId, Arc<Doc>)>>>,
}

/// Where the embedded store lives unless told otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/serval/ipam.json";

impl FileStore {
    /// A store at `path`; nothing is touched until the first read or write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: path.into(),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    fn io_err(&self, path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source: e,
        }
    }

    /// Reads the file; `None` if it does not exist.
    fn read_doc(&self) -> Result<Option<(FileId, Doc)>, StoreError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err(&self.path, e)),
        };
        let meta = file.metadata().map_err(|e| self.io_err(&self.path, e))?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        let bytes = std::io::read_to_string(file).map_err(|e| match e.kind() {
            ErrorKind::InvalidData => StoreError::Corrupt {
                location: self.path.display().to_string(),
                detail: "not UTF-8 text".into(),
            },
            _ => self.io_err(&self.path, e),
        })?;
        let doc: Doc = serde_json::from_str(&bytes).map_err(|e| StoreError::Corrupt {
            location: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        if doc.format != FORMAT {
            return Err(StoreError::Corrupt {
                location: self.path.display().to_string(),
                detail: format!("format is {:?}, expected {FORMAT:?}", doc.format),
            });
        }
        Ok(Some((id, doc)))
    }

    /// The current contents, through the cache.
    fn snapshot(&self) -> Result<Arc<Doc>, StoreError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(self.io_err(&self.path, e)),
        };
        let Some(meta) = meta else {
            return Ok(Arc::new(Doc::empty()));
        };
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        if let Ok(cache) = self.cache.lock() {
            if let Some((cid, doc)) = cache.as_ref() {
                if *cid == id {
                    return Ok(doc.clone());
                }
            }
        }
        let Some((id, doc)) = self.read_doc()? else {
            return Ok(Arc::new(Doc::empty()));
        };
        let doc = Arc::new(doc);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((id, doc.clone()));
        }
        Ok(doc)
    }

    fn decode(&self, kind: Kind, name: &str, e: &Entry) -> Result<Versioned<Object>, StoreError> {
        let location = format!("{} ({kind:?} {name})", self.path.display());
        let obj = Object::from_json(kind, e.value.clone(), &location)?;
        Ok(Versioned::new(obj, Revision(e.revision.to_string())))
    }

    fn get_blocking(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let doc = self.snapshot()?;
        let (kind, name) = kind_key(key);
        doc.table(kind)
            .get(&name)
            .map(|e| self.decode(kind, &name, e))
            .transpose()
    }

    fn list_blocking(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        let doc = self.snapshot()?;
        let (kind, prefix) = match filter {
            ListFilter::Kind(k) => (*k, String::new()),
            ListFilter::AffinitiesOf(n) => (Kind::Affinity, format!("{n}/")),
        };
        doc.table(kind)
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, e)| self.decode(kind, k, e))
            .collect()
    }

    fn commit_blocking(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| self.io_err(dir, e))?;
        }
        let lock_path = self.lock_path();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io_err(&lock_path, e))?;
        lock.lock().map_err(|e| self.io_err(&lock_path, e))?;
        let mut doc = self.read_doc()?.map(|(_, d)| d).unwrap_or_else(Doc::empty);
        let generation = doc.generation + 1;
        let mut revs = Vec::with_capacity(writes.len());
        for w in writes {
            let (kind, name) = kind_key(&w.key);
            let table = doc.table_mut(kind);
            let current = table.get(&name).map(|e| e.revision.to_string());
            let ok = match (&w.expect, &current) {
                (Expect::Absent, None) => true,
                (Expect::Revision(r), Some(c)) => r.0 == *c,
                _ => false,
            };
            if !ok {
                return Err(StoreError::Conflict {
                    key: w.key.to_string(),
                });
            }
            match &w.op {
                Op::Put(obj) => {
                    table.insert(
                        name,
                        Entry {
                            revision: generation,
                            value: obj.to_json(),
                        },
                    );
                    revs.push(Some(Revision(generation.to_string())));
                }
                Op::Delete => {
                    table.remove(&name);
                    revs.push(None);
                }
            }
        }
        doc.generation = generation;
        self.replace(&doc)?;
        drop(lock);
        Ok(revs)
    }

    /// Atomically replaces the file: temp file, fsync, rename, fsync the directory.
    fn replace(&self, doc: &Doc) -> Result<(), StoreError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let bytes = serde_json::to_vec(doc).map_err(|e| StoreError::Io {
            path: tmp.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        result.map_err(|e: std::io::Error| {
            let _ = fs::remove_file(&tmp);
            self.io_err(&self.path, e)
        })
    }
}

async fn blocking<T: Send + 'static>(
    store: &FileStore,
    f: impl FnOnce(FileStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(s))
        .await
        .map_err(|e| StoreError::Io {
            path: store.path.display().to_string(),
            source: std::io::Error::other(e),
        })?
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let key = key.clone();
        blocking(self, move |s| s.get_blocking(&key)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        let filter = filter.clone();
        blocking(self, move |s| s.list_blocking(&filter)).await
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let writes = writes.to_vec();
        blocking(self, move |s| s.commit_blocking(&writes)).await
    }

    fn atomic_commit(&self) -> bool {
        true
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        let kinds = kinds.to_vec();
        let store = self.clone();
        let first = blocking(self, |s| s.snapshot()).await?;
        let state = (store, kinds, first, true);
        let stream = futures::stream::unfold(state, |(store, kinds, prev, first)| async move {
            if first {
                let objs = collect(&store, &prev, &kinds);
                let ev = objs.map(WatchEvent::Resync);
                return Some((vec![ev], (store, kinds, prev, false)));
            }
            loop {
                tokio::time::sleep(WATCH_POLL).await;
                let next = match blocking(&store, |s| s.snapshot()).await {
                    Ok(d) => d,
                    Err(e) => return Some((vec![Err(e)], (store, kinds, prev, false))),
                };
                if next.generation == prev.generation {
                    continue;
                }
                let events = diff(&store, &prev, &next, &kinds);
                if !events.is_empty() {
                    return Some((events, (store, kinds, next, false)));
                }
            }
        })
        .flat_map(futures::stream::iter);
        Ok(Box::pin(stream))
    }
}

use futures::StreamExt as _;

fn collect(
    store: &FileStore,
    doc: &Doc,
    kinds: &[Kind],
) -> Result<Vec<Versioned<Object>>, StoreError> {
    let mut out = Vec::new();
    for k in kinds {
        for (name, e) in doc.table(*k) {
            out.push(store.decode(*k, name, e)?);
        }
    }
    Ok(out)
}

fn diff(
    store: &FileStore,
    prev: &Doc,
    next: &Doc,
    kinds: &[Kind],
) -> Vec<Result<WatchEvent, StoreError>> {
    let mut out = Vec::new();
    for k in kinds {
        let (a, b) = (prev.table(*k), next.table(*k));
        for (name, e) in b {
            if a.get(name).map(|x| x.revision) != Some(e.revision) {
                out.push(store.decode(*k, name, e).map(WatchEvent::Put));
            }
        }
        for (name, e) in a {
            if !b.contains_key(name) {
                out.push(
                    store
                        .decode(*k, name, e)
                        .map(|v| WatchEvent::Deleted(v.value.key())),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpPool, PoolName};

    fn pool(name: &str, cidr: &str) -> Object {
        Object::Pool(IpPool::new(
            PoolName::new(name).unwrap(),
            cidr.parse().unwrap(),
        ))
    }

    #[tokio::test]
    async fn corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        fs::write(&path, b"{\"format\": \"serval-ipam/1\", \"generation\": ").unwrap();
        let store = FileStore::new(&path);
        let err = store.list(&ListFilter::Kind(Kind::Pool)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("ipam.json"), "{err}");
        let err = store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"{\"format\": \"serval-ipam/1\", \"generation\": "
        );
    }

    #[tokio::test]
    async fn batch_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("sub/ipam.json"));
        store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap();
        let err = store
            .commit(&[
                Write::create(pool("b", "10.1.0.0/16")),
                Write::create(pool("a", "10.0.0.0/16")),
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }));
        assert_eq!(
            store
                .list(&ListFilter::Kind(Kind::Pool))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn watch_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("ipam.json"));
        let mut w = store.watch(&[Kind::Pool]).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap(), WatchEvent::Resync(vec![]));
        let revs = store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            ev,
            WatchEvent::Put(Versioned::new(
                pool("a", "10.0.0.0/16"),
                revs[0].clone().unwrap()
            ))
        );
        let key = Key::Pool(PoolName::new("a").unwrap());
        store
            .commit(&[Write::delete(key.clone(), revs[0].clone().unwrap())])
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev, WatchEvent::Deleted(key));
    }
}
