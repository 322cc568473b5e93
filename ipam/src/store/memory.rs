//! An in-memory store: the reference implementation of the [`Store`] contract, for
//! property tests and for tests of the crates built on this one (agent, CNI plugin).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt as _;

use super::{
    Expect, Key, Kind, ListFilter, Object, Op, Revision, Store, Versioned, WatchEvent, WatchStream,
    Write,
};
use crate::error::StoreError;

#[derive(Default)]
struct State {
    generation: u64,
    objects: BTreeMap<Key, (u64, Object)>,
}

/// A store in a `BTreeMap`; batches are atomic.
#[derive(Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore {
            state: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied batch: batches are
        // checked before anything is changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn objects_of(&self, kinds: &[Kind]) -> BTreeMap<Key, (u64, Object)> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| kinds.contains(&k.kind()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn versioned((rev, obj): &(u64, Object)) -> Versioned<Object> {
    Versioned::new(obj.clone(), Revision(rev.to_string()))
}

#[async_trait]
impl Store for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn get(&self, key: &Key) -> Result<Option<Versioned<Object>>, StoreError> {
        Ok(self.lock().objects.get(key).map(versioned))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Versioned<Object>>, StoreError> {
        let st = self.lock();
        Ok(st
            .objects
            .iter()
            .filter(|(k, _)| match filter {
                ListFilter::Kind(kind) => k.kind() == *kind,
                ListFilter::AffinitiesOf(n) => matches!(k, Key::Affinity { node, .. } if node == n),
                ListFilter::Resources(want) => {
                    matches!(k, Key::Resource { kind, .. } if kind == want)
                }
            })
            .map(|(_, v)| versioned(v))
            .collect())
    }

    async fn commit(&self, writes: &[Write]) -> Result<Vec<Option<Revision>>, StoreError> {
        let mut st = self.lock();
        for w in writes {
            let current = st.objects.get(&w.key).map(|(r, _)| r.to_string());
            let ok = match (&w.expect, current) {
                (Expect::Absent, None) => true,
                (Expect::Revision(r), Some(c)) => r.0 == c,
                _ => false,
            };
            if !ok {
                return Err(StoreError::Conflict {
                    key: w.key.to_string(),
                });
            }
        }
        st.generation += 1;
        let g = st.generation;
        let revs = writes
            .iter()
            .map(|w| match &w.op {
                Op::Put(obj) => {
                    st.objects.insert(w.key.clone(), (g, obj.clone()));
                    Some(Revision(g.to_string()))
                }
                Op::Delete => {
                    st.objects.remove(&w.key);
                    None
                }
            })
            .collect();
        drop(st);
        self.changed.send_replace(g);
        Ok(revs)
    }

    fn atomic_commit(&self) -> bool {
        true
    }

    async fn watch(&self, kinds: &[Kind]) -> Result<WatchStream, StoreError> {
        let kinds = kinds.to_vec();
        let rx = self.changed.subscribe();
        let first = self.objects_of(&kinds);
        let resync = WatchEvent::Resync(first.values().map(versioned).collect());
        let store = self.clone();
        let changes = futures::stream::unfold((rx, first), move |(mut rx, prev)| {
            let store = store.clone();
            let kinds = kinds.clone();
            async move {
                rx.changed().await.ok()?;
                let next = store.objects_of(&kinds);
                let mut events = Vec::new();
                for (k, v) in &next {
                    if prev.get(k).map(|p| p.0) != Some(v.0) {
                        events.push(Ok(WatchEvent::Put(versioned(v))));
                    }
                }
                for k in prev.keys().filter(|k| !next.contains_key(k)) {
                    events.push(Ok(WatchEvent::Deleted(k.clone())));
                }
                Some((futures::stream::iter(events), (rx, next)))
            }
        })
        .flatten();
        Ok(Box::pin(futures::stream::iter([Ok(resync)]).chain(changes)))
    }
}
