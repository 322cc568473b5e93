//! The watch on Services and EndpointSlices (kubernetes datastore only): each event
//! reduced to what [`crate::node::services`] decides with, and sent to the agent loop.
//!
//! kube's watcher lists, then watches; it retries with back-off while the API server is
//! away and lists afresh after a `410 Gone` ([`super::watch_objects`]). A list is
//! buffered and sent whole once complete, so a re-list replaces the table at once and
//! the agent never sees half of one. While the API server is away nothing is sent: the
//! agent keeps advertising what it last decided.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use kube::ResourceExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::node::services::{local_service_of, ObjectKey, Service, ServiceChange};

/// Watches Services and EndpointSlices in every namespace until `stop` or until the
/// agent drops the receiver.
pub async fn run(
    client: kube::Client,
    node: String,
    tx: mpsc::Sender<ServiceChange>,
    stop: CancellationToken,
) {
    let services = watch(
        Api::<K8sService>::all(client.clone()),
        tx.clone(),
        |s: &K8sService| Service::from_k8s(s),
        ServiceChange::ServicesListed,
        ServiceChange::Service,
    );
    let slices = watch(
        Api::<EndpointSlice>::all(client),
        tx,
        move |s: &EndpointSlice| local_service_of(s, &node),
        ServiceChange::SlicesListed,
        ServiceChange::Slice,
    );
    tokio::select! {
        () = stop.cancelled() => {}
        () = services => {}
        () = slices => {}
    }
}

fn key_of<K: kube::Resource>(o: &K) -> ObjectKey {
    ObjectKey::new(o.namespace().unwrap_or_default(), o.name_any())
}

/// One kind's watch: `reduce` keeps what the table needs of an object (`None`: nothing
/// of it), `listed` makes a complete list's change, `one` a single object's.
async fn watch<K, T>(
    api: Api<K>,
    tx: mpsc::Sender<ServiceChange>,
    reduce: impl Fn(&K) -> Option<T>,
    listed: fn(Vec<(ObjectKey, T)>) -> ServiceChange,
    one: fn(ObjectKey, Option<T>) -> ServiceChange,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let mut stream = super::watch_objects(api, watcher::Config::default());
    let mut buffer: Vec<(ObjectKey, T)> = Vec::new();
    let mut failing = false;
    while let Some(ev) = stream.next().await {
        if failing && ev.is_ok() {
            failing = false;
            if tx
                .send(ServiceChange::WatchError(kind.clone(), None))
                .await
                .is_err()
            {
                return;
            }
        }
        let change = match ev {
            Ok(watcher::Event::Init) => {
                buffer.clear();
                None
            }
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(t) = reduce(&o) {
                    buffer.push((key_of(&o), t));
                }
                None
            }
            Ok(watcher::Event::InitDone) => {
                debug!(kind = %kind, kept = buffer.len(), "listed");
                Some(listed(std::mem::take(&mut buffer)))
            }
            Ok(watcher::Event::Apply(o)) => Some(one(key_of(&o), reduce(&o))),
            Ok(watcher::Event::Delete(o)) => Some(one(key_of(&o), None)),
            Err(e) => {
                warn!(kind = %kind, error = %e, "watch; keeping the advertised Service addresses");
                failing = true;
                Some(ServiceChange::WatchError(kind.clone(), Some(e.to_string())))
            }
        };
        if let Some(c) = change {
            if tx.send(c).await.is_err() {
                return;
            }
        }
    }
}
