//! The agent on the Kubernetes datastore: what it reads from and writes to the API
//! server beyond the IPAM store.
//!
//! ```text
//!   Node (annotations, InternalIP, labels) ──node_settings::from_node──▶ addresses, AS, labels at start
//!   Secrets (by name, re-read every 30 s) ──secrets::apply──▶ passwords in the snapshot
//!   Lease serval-node-gc ──lease::LeaseState──▶ leader? ──▶ Node watch ──gc::stale_nodes──▶ gc::collect_node
//!                                                     └──▶ Service watch ──lb (node/lb.rs)──▶ LoadBalancer addresses, Service status
//!   Shared (NodeStatus) ──status_report::build + Limiter──▶ SSA ServalNodeStatus/status
//!   Services, EndpointSlices ──services::run (watch)──▶ ServiceChange ──▶ the agent's ServiceTable
//! ```
//!
//! Each decision is a pure function or state machine in its file; the tasks here are
//! the IO around them, each stopped by the agent's `CancellationToken`.

pub mod gc;
pub mod lb;
pub mod lease;
pub mod node_settings;
pub mod secrets;
pub mod services;
pub mod status_report;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::shared::Shared;
use crate::resources::node_status::ServalNodeStatus;

use lease::{LeaseAction, LeaseRecord, LeaseState};

/// `SERVAL_NAMESPACE`: where the Lease and the password Secrets live.
pub const ENV_NAMESPACE: &str = "SERVAL_NAMESPACE";
/// `SERVAL_GC_LEASE`: the node collector's Lease.
pub const ENV_GC_LEASE: &str = "SERVAL_GC_LEASE";
pub const DEFAULT_NAMESPACE: &str = "kube-system";
pub const DEFAULT_GC_LEASE: &str = "serval-node-gc";
/// The collector's term and how often its holder renews.
pub const LEASE_TERM: Duration = Duration::from_secs(15);
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// A full collection pass this often while leading, besides Node deletions.
pub const GC_FULL_PASS: Duration = Duration::from_secs(300);

/// Where the agent's Kubernetes objects are.
#[derive(Clone)]
pub struct KubeEnv {
    pub client: kube::Client,
    pub namespace: String,
    pub gc_lease: String,
}

impl KubeEnv {
    /// From the in-cluster configuration (or `KUBECONFIG`) and `SERVAL_NAMESPACE`,
    /// `SERVAL_GC_LEASE`.
    pub async fn from_environment() -> anyhow::Result<Self> {
        let client = kube::Client::try_default()
            .await
            .context("kubernetes: no in-cluster configuration or kubeconfig")?;
        let var = |n: &str, d: &str| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_owned())
        };
        Ok(KubeEnv {
            client,
            namespace: var(ENV_NAMESPACE, DEFAULT_NAMESPACE),
            gc_lease: var(ENV_GC_LEASE, DEFAULT_GC_LEASE),
        })
    }
}

/// kube's watcher with its default back-off, except after `410 Gone`: the server no
/// longer has the version the watch resumed from (every watch meets this when an API
/// server restarts, its watch cache rebuilt), the watcher has already dropped that
/// version, and its next poll lists again. Backing off there would add up to the
/// back-off's 30 s ceiling, reached during the outage, before the list.
pub fn watch_objects<K>(
    api: Api<K>,
    config: watcher::Config,
) -> futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watcher::watcher(api, config)
        .map(|r| match r {
            // Not an error to the back-off: it passes through as an item.
            Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                Ok(Err(watcher::Error::WatchError(s)))
            }
            other => other.map(Ok),
        })
        .default_backoff()
        .map(|r| r.and_then(|inner| inner))
        .boxed()
}

/// Reads this node's Kubernetes Node.
pub async fn read_node(client: &kube::Client, name: &str) -> anyhow::Result<Node> {
    Api::<Node>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("reading the Kubernetes Node {name}"))
}

fn record_of(l: &Lease) -> LeaseRecord {
    let spec = l.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        duration: Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        ),
        version: l.metadata.resource_version.clone().unwrap_or_default(),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Reads the Lease: `Ok(None)` when it does not exist.
pub async fn read_lease(api: &Api<Lease>, name: &str) -> Result<Option<LeaseRecord>, kube::Error> {
    Ok(api.get_opt(name).await?.as_ref().map(record_of))
}

/// Carries out a lease action; `Ok(None)` when the write lost a race (409). `read` is
/// the metadata of the Lease the decision was made on: its labels and annotations are
/// written back.
pub async fn write_lease(
    api: &Api<Lease>,
    name: &str,
    state: &LeaseState,
    action: &LeaseAction,
    read: Option<&ObjectMeta>,
) -> Result<Option<LeaseRecord>, kube::Error> {
    let Some(rec) = state.record_for(action) else {
        return Ok(None);
    };
    let now = MicroTime(Timestamp::now());
    let transition = matches!(
        action,
        LeaseAction::Create
            | LeaseAction::Take {
                transition: true,
                ..
            }
    );
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: (!rec.version.is_empty()).then(|| rec.version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: rec.holder.clone(),
            lease_duration_seconds: i32::try_from(rec.duration.as_secs()).ok(),
            acquire_time: transition.then(|| now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(rec.transitions),
            ..LeaseSpec::default()
        }),
    };
    let pp = PostParams::default();
    let res = match action {
        LeaseAction::Create => api.create(&pp, &lease).await,
        _ => {
            // Keep the acquire time of an ongoing term.
            let mut l = lease;
            if !transition {
                if let Some(spec) = l.spec.as_mut() {
                    spec.acquire_time = None;
                }
            }
            // Keep the labels and annotations others put on the Lease (the chart creates
            // it, and Helm knows its objects by them). The write goes over the version
            // read: a newer Lease fails it with 409.
            if let Some(m) = read {
                l.metadata.labels = m.labels.clone();
                l.metadata.annotations = m.annotations.clone();
            }
            api.replace(name, &pp, &l).await
        }
    };
    match res {
        Ok(l) => Ok(Some(record_of(&l))),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// One turn of the election: read, decide, write. Returns whether we lead and when to
/// turn again.
pub async fn lease_turn(api: &Api<Lease>, name: &str, state: &mut LeaseState) -> (bool, Instant) {
    let now = Instant::now();
    let read = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, lease = name, "reading the lease");
            state.written(None, now);
            return (state.is_leader(now), now + LEASE_RENEW);
        }
    };
    state.observe(read.as_ref().map(record_of), now);
    let action = state.decide(now);
    let next = match &action {
        LeaseAction::Wait { until } => *until,
        _ => {
            let outcome = match write_lease(
                api,
                name,
                state,
                &action,
                read.as_ref().map(|l| &l.metadata),
            )
            .await
            {
                Ok(o) => o,
                Err(e) => {
                    debug!(error = %e, lease = name, "writing the lease");
                    None
                }
            };
            state.written(outcome, now);
            now + LEASE_RENEW
        }
    };
    // Never sleep past a renewal of our own, nor longer than a renewal period.
    let next = next
        .max(now + Duration::from_millis(200))
        .min(now + LEASE_RENEW);
    (state.is_leader(Instant::now()), next)
}

/// One collection pass over `live` Nodes: collects every stale node.
pub async fn gc_pass(ipam: &ipam::Ipam, live: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    let (registered, affine) = gc::holders(&**ipam.store()).await?;
    let mut done = Vec::new();
    for n in gc::stale_nodes(live, &registered, &affine) {
        let c = gc::collect_node(ipam, &n)
            .await
            .with_context(|| format!("collecting node {n}"))?;
        info!(node = %n, released = ?c.handles_released, blocks_deleted = c.blocks_deleted,
              blocks_orphaned = c.blocks_orphaned, "released a deleted node's addresses and blocks");
        done.push(n);
    }
    Ok(done)
}

/// The node collector: runs the election and, while leading, collects deleted Nodes.
/// `leader` is told each change of leadership (the LoadBalancer allocator acts on it).
pub async fn run_gc(
    env: KubeEnv,
    identity: String,
    ipam: ipam::Ipam,
    leader: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let mut state = LeaseState::new(identity, LEASE_TERM, LEASE_RENEW);
    let mut nodes = watch_objects(
        Api::<Node>::all(env.client.clone()),
        watcher::Config::default(),
    );
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut listing: Option<BTreeSet<String>> = None;
    let mut listed = false;
    let mut leading = false;
    let mut next_turn = tokio::time::Instant::now();
    let mut last_full: Option<Instant> = None;
    loop {
        let mut pass = false;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next_turn) => {
                let (lead, next) = lease_turn(&leases, &env.gc_lease, &mut state).await;
                if lead != leading {
                    info!(lease = %env.gc_lease, leading = lead, "node collector");
                }
                pass = lead && (!leading || last_full.is_none_or(|t| t.elapsed() >= GC_FULL_PASS));
                leading = lead;
                leader.send_if_modified(|l| std::mem::replace(l, lead) != lead);
                next_turn = tokio::time::Instant::from_std(next);
            }
            ev = nodes.next() => match ev {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name) {
                        l.insert(name);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    live = listing.take().unwrap_or_default();
                    listed = true;
                    pass = leading;
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    if let Some(name) = n.metadata.name {
                        live.insert(name);
                    }
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    if let Some(name) = n.metadata.name {
                        live.remove(&name);
                        pass = leading;
                    }
                }
                Some(Err(e)) => warn!(error = %e, "watching Nodes"),
                None => break,
            },
        }
        if pass && listed && state.is_leader(Instant::now()) {
            last_full = Some(Instant::now());
            if let Err(e) = gc_pass(&ipam, &live).await {
                warn!(error = %format!("{e:#}"), "node collector");
            }
        }
    }
}

/// Writes the status of this node's ServalNodeStatus (the object named after the node)
/// while it exists, as [`status_report::Limiter`] allows.
pub async fn run_status(
    client: kube::Client,
    node: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let api: Api<ServalNodeStatus> = Api::all(client);
    let booted = Timestamp::now();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut objects = watch_objects(api.clone(), cfg);
    let mut spec = None;
    let mut limiter = status_report::Limiter::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            ev = objects.next() => match ev {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => spec = Some(o.spec),
                Some(Ok(watcher::Event::Delete(_))) => spec = None,
                Some(Ok(watcher::Event::Init)) => spec = None,
                Some(Ok(watcher::Event::InitDone)) => {}
                Some(Err(e)) => debug!(error = %e, "watching ServalNodeStatus"),
                None => break,
            },
            _ = tick.tick() => {
                let Some(spec) = &spec else { continue };
                let status = shared.status(spec.classes.contains(&crate::resources::node_status::NodeStatusClass::Routes)).await;
                let up = status_report::established(&status);
                let now = Instant::now();
                if !limiter.should_write(now, status_report::period(spec), &up) {
                    continue;
                }
                let body = status_report::build(&status, &spec.classes, Timestamp::now(), Some(booted), env!("CARGO_PKG_VERSION"));
                match status_report::write(&api, &node, &body).await {
                    Ok(()) => limiter.wrote(now, up),
                    Err(e) => {
                        // Try again after the least gap, not at every tick.
                        limiter.wrote(now, std::collections::BTreeMap::new());
                        warn!(error = %e, "writing ServalNodeStatus status");
                    }
                }
            }
        }
    }
}
