//! A store wrapper that counts what the IPAM asks of the store it wraps and how long each
//! request took, so that a slow test can say where its time went: round trips per
//! operation, time per request, conflicts and unavailability.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipam::error::StoreError;
use ipam::store::{
    Key, Kind, ListFilter, Object, Read, Revision, Store, Versioned, WatchStream, Write,
};

/// What the wrapped store was asked, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Read requests (get, get_many, list, read_many) and the time spent in them.
    pub reads: u64,
    pub read_time: Duration,
    /// Commits, and the time spent in them.
    pub commits: u64,
    pub commit_time: Duration,
    /// Requests that failed with a lost compare-and-swap.
    pub conflicts: u64,
    /// Requests that failed because the store did not answer.
    pub unavailable: u64,
    /// The slowest single request.
    pub slowest: Duration,
}

impl Counts {
    /// One line, `key=value` pairs, for a stats file; [`Counts::parse`] reads it back.
    pub fn to_line(&self) -> String {
        format!(
            "reads={} read_us={} commits={} commit_us={} conflicts={} unavailable={} slowest_us={}",
            self.reads,
            self.read_time.as_micros(),
            self.commits,
            self.commit_time.as_micros(),
            self.conflicts,
            self.unavailable,
            self.slowest.as_micros()
        )
    }

    pub fn parse(line: &str) -> Option<Counts> {
        let mut c = Counts::default();
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            let us = Duration::from_micros(v);
            match k {
                "reads" => c.reads = v,
                "read_us" => c.read_time = us,
                "commits" => c.commits = v,
                "commit_us" => c.commit_time = us,
                "conflicts" => c.conflicts = v,
                "unavailable" => c.unavailable = v,
                "slowest_us" => c.slowest = us,
                _ => return None,
            }
        }
        Some(c)
    }

    pub fn add(&mut self, o: &Counts) {
        self.reads += o.reads;
        self.read_time += o.read_time;
        self.commits += o.commits;
        self.commit_time += o.commit_time;
        self.conflicts += o.conflicts;
        self.unavailable += o.unavailable;
        self.slowest = self.slowest.max(o.slowest);
    }
}

/// Wraps a store and counts its requests.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    counts: Arc<Mutex<Counts>>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> (Arc<CountingStore>, Arc<Mutex<Counts>>) {
        let counts = Arc::new(Mutex::new(Counts::default()));
        (
            Arc::new(CountingStore {
                inner,
                counts: counts.clone(),
            }),
            counts,
        )
    }

    fn record<T>(&self, commit: bool, took: Duration, r: &Result<T, StoreError>) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        if commit {
            c.commits += 1;
            c.commit_time += took;
        } else {
            c.reads += 1;
            c.read_time += took;
        }
        c.slowest = c.slowest.max(took);
        match r {
            Err(StoreError::Conflict { .. }) => c.conflicts += 1,
            Err(StoreError::Unavailable { .. }) => c.unavailable += 1,
            _ => {}
        }
    }
}

#[async_trait]
impl Store for CountingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.record(false, t.elapsed(), &r);
        r
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Versioned<Object>>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get_many(keys).await;
        self.record(false, t.elapsed(), &r);
        r
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(filter).await;
        self.record(false, t.elapsed(), &r);
        r
    }

    async fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<Versioned<Object>>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.read_many(reads).await;
        self.record(false, t.elapsed(), &r);
        r
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let t = Instant::now();
        let r = self.inner.commit(writes).await;
        self.record(true, t.elapsed(), &r);
        r
    }

    fn atomic_commit(&self) -> bool {
        self.inner.atomic_commit()
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        self.inner.watch(kinds).await
    }
}
