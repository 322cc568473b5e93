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
//! Layout: text, one object per line, so that reading the file costs a scan rather than a
//! JSON parse of everything (objects are decoded only when asked for):
//!
//! ```text
//! serval-ipam/1 generation=42
//! pool<TAB>default<TAB>3<TAB>{"name":"default","cidr":"10.65.0.0/16",…}
//! block<TAB>10.65.0.0/26<TAB>41<TAB>{"cidr":"10.65.0.0/26","affinity":"node-1",…}
//! affinity<TAB>node-1/10.65.0.0/26<TAB>7<TAB>{…}
//! handle<TAB>k8s-pod-network.ab12<TAB>42<TAB>{…}
//! config<TAB>config<TAB>2<TAB>{…}
//! resource<TAB>BGPPeer/tor-1<TAB>40<TAB>{"kind":"BGPPeer","name":"tor-1","spec":{…}}
//! end 6
//! ```
//!
//! Each line is `KIND NAME REVISION JSON`; the trailer counts the objects, so that a
//! truncated or hand-damaged file is reported as corrupt rather than read short.
//!
//! Local users: the file holds BGP passwords and its lock serializes every IPAM write
//! on the host, so both are the owner's alone (mode 0600; a looser mode on a file this
//! process owns is tightened). A directory the store creates is made 0700; an existing
//! one keeps its mode (it may be shared, e.g. `/var/lib/serval` with the agent's other
//! files), with a warning in the log when others may write into it, and a file in it
//! that belongs to another user (or is a symbolic link) is refused rather than
//! trusted. A write waits at most [`LOCK_TIMEOUT`] for the lock: a process that holds
//! it longer (stuck, or hostile) makes the write fail with an error naming the lock
//! ([`StoreError::Io`] of kind `TimedOut`; nothing was written) instead of hanging.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Expect, Key, Kind, ListFilter, Object, Op, Revision, Store, Versioned, WatchEvent, WatchStream,
    Write,
};
use crate::error::StoreError;

const FORMAT: &str = "serval-ipam/1";

/// How often [`FileStore::watch`] looks at the file unless told otherwise.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a write waits for the store's lock. A write holds it for milliseconds (read,
/// write, fsync, rename), but eight writers taking turns on a loaded machine have been
/// seen to wait 5 s (the lock is polled, not queued); one that waits this long is blocked
/// by a stuck or hostile process, and fails rather than hanging its caller (the agent's
/// loop, a CNI ADD, whose runtime gives up after 30 s or more).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates `dir` and its missing parents with mode 0700. A directory that exists keeps
/// its mode; when users other than its owner may write into it (and so replace or
/// pre-create the files serval keeps there) that is logged as a warning naming it.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!("{} is not a directory", dir.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 && first_warning(dir) {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:04o}", meta.mode() & 0o7777),
            "users other than its owner may write into this directory: serval's files \
             there are 0600 and files owned by others are refused, but make it 0700 (or \
             0755) to keep them from being replaced"
        );
    }
    Ok(())
}

/// Whether `dir` was not warned about yet by this process (one warning each).
fn first_warning(dir: &Path) -> bool {
    static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let Ok(mut warned) = WARNED.lock() else {
        return true;
    };
    if warned.iter().any(|d| d == dir) {
        return false;
    }
    warned.push(dir.to_owned());
    true
}

/// The effective user of this process.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Checks a file serval is about to trust: owned by this process's user (or root), and
/// tightened to 0600 when this process owns it and its mode lets others in.
fn check_private(path: &Path, file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to this process's user (uid {me}): refusing to use it",
                path.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 && meta.uid() == me {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Opens `path` for writing, creating it with mode 0600 (and its directory with 0700,
/// see [`ensure_private_dir`]). A symbolic link or a file of another user is refused; a
/// looser mode on a file this process owns is tightened to 0600. For lock files: with
/// mode 0600 no other user can open it, so none can hold its lock.
pub fn open_private(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_private_dir(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link: refusing to follow it",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    check_private(path, &file)?;
    Ok(file)
}

/// Takes an exclusive lock on `file`, waiting at most `timeout`; past it, an error of
/// kind `TimedOut`. Blocking: for threads that may sleep.
pub fn lock_within(file: &File, timeout: Duration) -> io::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if started.elapsed() >= timeout {
            return Err(lock_busy(timeout));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The error of a lock that stayed busy for `waited` (the caller names the lock).
pub fn lock_busy(waited: Duration) -> io::Error {
    io::Error::new(
        ErrorKind::TimedOut,
        format!(
            "the lock stayed busy for {waited:?}: another process holds it (a stuck \
             serval, or something else on the host); nothing was written"
        ),
    )
}

/// The file's contents, with objects still as JSON text.
#[derive(Clone, Debug, Default)]
struct Doc {
    generation: u64,
    tables: [BTreeMap<String, Entry>; 6],
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    revision: u64,
    json: String,
}

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Pool => 0,
        Kind::Block => 1,
        Kind::Affinity => 2,
        Kind::Handle => 3,
        Kind::Config => 4,
        Kind::Resource => 5,
    }
}

fn kind_tag(kind: Kind) -> &'static str {
    match kind {
        Kind::Pool => "pool",
        Kind::Block => "block",
        Kind::Affinity => "affinity",
        Kind::Handle => "handle",
        Kind::Config => "config",
        Kind::Resource => "resource",
    }
}

fn kind_of_tag(tag: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_tag(*k) == tag)
}

fn kind_key(key: &Key) -> (Kind, String) {
    let s = match key {
        Key::Pool(n) => n.to_string(),
        Key::Block(c) => c.to_string(),
        Key::Affinity { node, cidr } => format!("{node}/{cidr}"),
        Key::Handle(h) => h.to_string(),
        Key::Config => "config".to_owned(),
        // Kinds hold no `/`, so the first one separates kind from name.
        Key::Resource { kind, name } => format!("{kind}/{name}"),
    };
    (key.kind(), s)
}

impl Doc {
    fn table(&self, kind: Kind) -> &BTreeMap<String, Entry> {
        &self.tables[kind_index(kind)]
    }

    fn table_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Entry> {
        &mut self.tables[kind_index(kind)]
    }

    /// Parses the text format; the error says which line is wrong and how.
    fn parse(text: &str) -> Result<Doc, String> {
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or_default();
        let generation = header
            .strip_prefix(FORMAT)
            .and_then(|r| r.strip_prefix(" generation="))
            .and_then(|g| g.parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "line 1: expected \"{FORMAT} generation=N\", found {:?}",
                    truncate(header)
                )
            })?;
        let mut doc = Doc {
            generation,
            ..Doc::default()
        };
        let mut count = 0usize;
        let mut numbered = lines.enumerate();
        while let Some((i, line)) = numbered.next() {
            let n = i + 2;
            if let Some(end) = line.strip_prefix("end ") {
                let want: usize = end
                    .parse()
                    .map_err(|_| format!("line {n}: bad trailer {:?}", truncate(line)))?;
                if want != count {
                    return Err(format!(
                        "trailer counts {want} objects, the file holds {count}"
                    ));
                }
                if let Some((j, _)) = numbered.find(|(_, l)| !l.is_empty()) {
                    return Err(format!("text after the trailer on line {}", j + 2));
                }
                return Ok(doc);
            }
            let mut f = line.splitn(4, '\t');
            let (Some(tag), Some(name), Some(rev), Some(json)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(format!(
                    "line {n}: expected KIND NAME REVISION JSON, found {:?}",
                    truncate(line)
                ));
            };
            let kind = kind_of_tag(tag).ok_or_else(|| format!("line {n}: unknown kind {tag:?}"))?;
            let revision = rev
                .parse()
                .map_err(|_| format!("line {n}: bad revision {rev:?}"))?;
            let prev = doc.table_mut(kind).insert(
                name.to_owned(),
                Entry {
                    revision,
                    json: json.to_owned(),
                },
            );
            if prev.is_some() {
                return Err(format!("line {n}: {tag} {name} appears twice"));
            }
            count += 1;
        }
        Err("no \"end N\" trailer: the file is truncated".into())
    }

    fn render(&self) -> String {
        let mut out = format!("{FORMAT} generation={}\n", self.generation);
        let mut count = 0;
        for kind in Kind::ALL {
            for (name, e) in self.table(kind) {
                out.push_str(kind_tag(kind));
                out.push('\t');
                out.push_str(name);
                out.push('\t');
                out.push_str(&e.revision.to_string());
                out.push('\t');
                out.push_str(&e.json);
                out.push('\n');
                count += 1;
            }
        }
        out.push_str(&format!("end {count}\n"));
        out
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(60) {
        Some((i, _)) => &s[..i],
        None => s,
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

fn file_id(meta: &fs::Metadata) -> FileId {
    FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    }
}

/// The parsed file, by the identity of the version it was parsed from.
type Cache = Arc<Mutex<Option<(FileId, Arc<Doc>)>>>;

/// The embedded single-file store.
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
    cache: Cache,
    watch_interval: Duration,
    lock_timeout: Duration,
}

/// Where the embedded store lives unless told otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/serval/ipam.json";

impl FileStore {
    /// A store at `path`; nothing is touched until the first read or write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: path.into(),
            cache: Arc::new(Mutex::new(None)),
            watch_interval: DEFAULT_WATCH_INTERVAL,
            lock_timeout: LOCK_TIMEOUT,
        }
    }

    /// How long a write waits for the lock (default [`LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How often a watch looks at the file. A look is one `stat` unless the file
    /// changed, so the node agent polls often to route a new block within milliseconds.
    pub fn with_watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = interval;
        self
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
        check_private(&self.path, &file).map_err(|e| self.io_err(&self.path, e))?;
        let meta = file.metadata().map_err(|e| self.io_err(&self.path, e))?;
        let id = file_id(&meta);
        let bytes = std::io::read_to_string(file).map_err(|e| match e.kind() {
            ErrorKind::InvalidData => StoreError::Corrupt {
                location: self.path.display().to_string(),
                detail: "not UTF-8 text".into(),
            },
            _ => self.io_err(&self.path, e),
        })?;
        let doc = Doc::parse(&bytes).map_err(|detail| StoreError::Corrupt {
            location: self.path.display().to_string(),
            detail,
        })?;
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
            return Ok(Arc::new(Doc::default()));
        };
        let id = file_id(&meta);
        if let Ok(cache) = self.cache.lock() {
            if let Some((cid, doc)) = cache.as_ref() {
                if *cid == id {
                    return Ok(doc.clone());
                }
            }
        }
        let Some((id, doc)) = self.read_doc()? else {
            return Ok(Arc::new(Doc::default()));
        };
        let doc = Arc::new(doc);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((id, doc.clone()));
        }
        Ok(doc)
    }

    fn decode(&self, kind: Kind, name: &str, e: &Entry) -> Result<Versioned<Object>, StoreError> {
        let location = format!("{} ({} {name})", self.path.display(), kind_tag(kind));
        let value: serde_json::Value =
            serde_json::from_str(&e.json).map_err(|err| StoreError::Corrupt {
                location: location.clone(),
                detail: err.to_string(),
            })?;
        let obj = Object::from_json(kind, value, &location)?;
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
            ListFilter::Resources(k) => (Kind::Resource, format!("{k}/")),
        };
        doc.table(kind)
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, e)| self.decode(kind, k, e))
            .collect()
    }

    fn commit_blocking(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let lock_path = self.lock_path();
        let lock = open_private(&lock_path).map_err(|e| self.io_err(&lock_path, e))?;
        lock_within(&lock, self.lock_timeout).map_err(|e| self.io_err(&lock_path, e))?;
        let mut doc = self.read_doc()?.map(|(_, d)| d).unwrap_or_default();
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
                            json: obj.to_json().to_string(),
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
        // Our own write need not be read back: cache it under the new file's identity.
        if let (Ok(meta), Ok(mut cache)) = (fs::metadata(&self.path), self.cache.lock()) {
            *cache = Some((file_id(&meta), Arc::new(doc)));
        }
        drop(lock);
        Ok(revs)
    }

    /// Atomically replaces the file: temp file, fsync, rename, fsync the directory.
    fn replace(&self, doc: &Doc) -> Result<(), StoreError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let bytes = doc.render().into_bytes();
        let result = (|| {
            // A temporary file of a process that died with this pid would make
            // `create_new` fail; it is ours to remove (the lock is held).
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
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

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned<Object>>>, StoreError> {
        let keys = keys.to_vec();
        blocking(self, move |s| {
            keys.iter().map(|k| s.get_blocking(k)).collect()
        })
        .await
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
                tokio::time::sleep(store.watch_interval).await;
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
        let damaged = "serval-ipam/1 generation=3\npool\ta\t3\t{}\n";
        fs::write(&path, damaged).unwrap();
        let store = FileStore::new(&path);
        let err = store.list(&ListFilter::Kind(Kind::Pool)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("ipam.json"), "{err}");
        let err = store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), damaged);
    }

    #[test]
    fn format_round_trip_and_damage() {
        let mut doc = Doc {
            generation: 7,
            ..Doc::default()
        };
        doc.table_mut(Kind::Pool).insert(
            "a".into(),
            Entry {
                revision: 7,
                json: "{\"x\":1}".into(),
            },
        );
        let text = doc.render();
        assert_eq!(
            text,
            "serval-ipam/1 generation=7\npool\ta\t7\t{\"x\":1}\nend 1\n"
        );
        assert_eq!(
            Doc::parse(&text).unwrap().table(Kind::Pool),
            doc.table(Kind::Pool)
        );
        for bad in [
            "",
            "serval-ipam/2 generation=1\nend 0\n",
            "serval-ipam/1 generation=1\n",
            "serval-ipam/1 generation=1\nend 1\n",
            "serval-ipam/1 generation=1\nthing\ta\t1\t{}\nend 1\n",
            "serval-ipam/1 generation=1\npool\ta\tx\t{}\nend 1\n",
            "serval-ipam/1 generation=1\npool\ta\t1\t{}\npool\ta\t1\t{}\nend 2\n",
            "serval-ipam/1 generation=1\nend 0\ngarbage\n",
        ] {
            assert!(Doc::parse(bad).is_err(), "{bad:?}");
        }
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

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn files_are_private_and_a_held_lock_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/ipam.json");
        let store = FileStore::new(&path).with_lock_timeout(Duration::from_millis(200));
        store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap();
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&store.lock_path()), 0o600);

        let held = open_private(&store.lock_path()).unwrap();
        held.lock().unwrap();
        let t0 = Instant::now();
        let err = store
            .commit(&[Write::create(pool("b", "10.1.0.0/16"))])
            .await
            .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        match &err {
            StoreError::Io { path, source } => {
                assert!(path.ends_with("ipam.json.lock"), "{path}");
                assert_eq!(source.kind(), ErrorKind::TimedOut);
            }
            other => panic!("{other}"),
        }
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("stayed busy"), "{err}");
        drop(held);
        store
            .commit(&[Write::create(pool("b", "10.1.0.0/16"))])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn loose_modes_are_tightened_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let store = FileStore::new(&path);
        store
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap();
        // As an older serval left them.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(store.lock_path(), fs::Permissions::from_mode(0o644)).unwrap();
        let again = FileStore::new(&path);
        assert_eq!(
            again
                .list(&ListFilter::Kind(Kind::Pool))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(mode(&path), 0o600);
        again
            .commit(&[Write::create(pool("b", "10.1.0.0/16"))])
            .await
            .unwrap();
        assert_eq!(mode(&store.lock_path()), 0o600);

        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "").unwrap();
        let linked = dir.path().join("linked.json");
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("linked.json.lock")).unwrap();
        let err = FileStore::new(&linked)
            .commit(&[Write::create(pool("a", "10.0.0.0/16"))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
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
