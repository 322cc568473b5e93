//! The conformance suite on the embedded file store, each case in a fresh file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ipam::store::{conformance, file::FileStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = AtomicUsize::new(0);
    conformance::run(|| {
        let path = dir
            .path()
            .join(format!("case-{}", n.fetch_add(1, Ordering::SeqCst)))
            .join("ipam.json");
        async move { Arc::new(FileStore::new(path)) as Arc<dyn Store> }
    })
    .await;
}
