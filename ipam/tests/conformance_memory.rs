//! The conformance suite on the in-memory reference store.

use std::sync::Arc;

use ipam::store::{conformance, memory::MemStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run(|| async { Arc::new(MemStore::new()) as Arc<dyn Store> }).await;
}
