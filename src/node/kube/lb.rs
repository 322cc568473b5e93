//! The LoadBalancer address allocator: the IO around [`crate::node::lb::plan`]. Every
//! agent watches Services; only the holder of the node collector's Lease (see
//! [`super::run_gc`]) allocates, so one allocator acts at a time, and it may write the
//! IPAM blocks of the LoadBalancer pools, whose addresses belong to no node.
//!
//! ```text
//!   Service watch ──Seen::from_k8s──▶ table ──────┐
//!   IPAM blocks (on becoming leader) ──────────────┤ lb::plan ──▶ Ipam::release_handle
//!   IPPools (LoadBalancer), BGPConfiguration ──────┘           ──▶ Ipam::auto_assign / assign_ip
//!                                                              ──▶ Service status (merge patch)
//! ```
//!
//! On becoming leader it adopts what the IPAM holds under the Service handles before it
//! decides anything, so a restart or a new leader keeps every Service's address. What it
//! cannot do for a Service (a pool full, an address taken or outside every LoadBalancer
//! pool, an annotation it cannot read) is logged once and shown in `serval node status`
//! of this node while it leads. An
//! address has one owner in its block and a Service's handle is idempotent, so even two
//! allocators at once (a leader that has not noticed its term ending) cannot give one
//! address to two Services.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipam::allocator::{AssignIpRequest, AutoAssignRequest, NodeInfo};
use ipam::model::{AllowedUse, NodeName, PoolName};
use ipam::store::StoreExt as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service as K8sService;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::ResourceExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::lb::{self, Action, AssignIps, ObjectKey, Owner, Seen, Want};
use crate::node::shared::Shared;
use crate::resources::{BGPConfigurationSpec, ResourceKind};

/// A pass this often while leading, besides Service events: retries what failed (a pool
/// full, the IPAM unreachable) and follows pool and setting changes.
pub const RETRY: Duration = Duration::from_secs(10);

type Table = BTreeMap<ObjectKey, Seen>;
type Allocations = BTreeMap<Owner, Vec<IpAddr>>;

/// Runs the allocator until `stop`; acts while `leading` says so. Its problems go to
/// `shared` for the node status.
pub async fn run(
    client: kube::Client,
    ipam: ipam::Ipam,
    mut leading: watch::Receiver<bool>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let api: Api<K8sService> = Api::all(client);
    let mut services = super::watch_objects(api.clone(), watcher::Config::default());
    let mut table = Table::new();
    let mut listing: Option<Table> = None;
    let mut listed = false;
    // What the IPAM holds under Service handles; read afresh on becoming leader.
    let mut held: Option<Allocations> = None;
    let mut reported: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut pass = false;
        tokio::select! {
            () = stop.cancelled() => break,
            r = leading.changed() => {
                if r.is_err() {
                    break;
                }
                held = None;
                pass = true;
                if !*leading.borrow() {
                    report(BTreeMap::new(), &mut reported, &shared);
                }
            }
            _ = tick.tick() => pass = true,
            ev = services.next() => match ev {
                Some(Ok(watcher::Event::Init)) => listing = Some(Table::new()),
                Some(Ok(watcher::Event::InitApply(s))) => {
                    let seen = Seen::from_k8s(&s);
                    if let Some(l) = listing.as_mut().filter(|_| seen.relevant()) {
                        l.insert(key_of(&s), seen);
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    table = listing.take().unwrap_or_default();
                    listed = true;
                    pass = true;
                }
                Some(Ok(watcher::Event::Apply(s))) => {
                    let seen = Seen::from_k8s(&s);
                    if seen.relevant() {
                        table.insert(key_of(&s), seen);
                    } else {
                        table.remove(&key_of(&s));
                    }
                    pass = true;
                }
                Some(Ok(watcher::Event::Delete(s))) => {
                    table.remove(&key_of(&s));
                    pass = true;
                }
                Some(Err(e)) => warn!(error = %e, "watching Services for LoadBalancer addresses"),
                None => break,
            },
        }
        if !(pass && listed && *leading.borrow()) {
            continue;
        }
        if held.is_none() {
            match adopt(&ipam).await {
                Ok(h) => {
                    debug!(
                        services = h.len(),
                        "LoadBalancer allocator: adopted the addresses held"
                    );
                    held = Some(h);
                }
                Err(e) => {
                    warn!(error = %e, "LoadBalancer allocator: reading the IPAM");
                    continue;
                }
            }
        }
        if let Some(h) = held.as_mut() {
            match turn(&api, &ipam, &mut table, h, &mut reported, &shared).await {
                Ok(false) => {}
                Ok(true) => held = None,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "LoadBalancer allocator");
                    held = None;
                }
            }
        }
    }
}

fn key_of(s: &K8sService) -> ObjectKey {
    ObjectKey::new(s.namespace().unwrap_or_default(), s.name_any())
}

/// The addresses the IPAM holds under Service handles.
pub async fn adopt(ipam: &ipam::Ipam) -> Result<Allocations, ipam::StoreError> {
    let mut out = Allocations::new();
    for b in ipam.store().list_blocks().await? {
        for (ip, attr) in b.value.allocated() {
            if let Some(k) = Owner::of_handle(&attr.handle_id) {
                out.entry(k).or_default().push(ip);
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(out)
}

/// The LoadBalancer pools' CIDRs by name, and the setting.
async fn inputs(ipam: &ipam::Ipam) -> anyhow::Result<(BTreeMap<PoolName, IpNet>, AssignIps)> {
    let pools = ipam
        .pools()
        .await?
        .into_iter()
        .filter(|p| p.allowed_uses.contains(&AllowedUse::LoadBalancer))
        .map(|p| (p.name, p.cidr))
        .collect();
    let mode = match ipam
        .store()
        .get_resource(ResourceKind::BgpConfiguration.as_str(), "default")
        .await?
    {
        None => AssignIps::default(),
        Some(r) => serde_json::from_value::<BGPConfigurationSpec>(r.value.spec)
            .map(|s| s.load_balancer_assign_ips.unwrap_or_default())
            .unwrap_or_else(|e| {
                debug!(error = %e, "BGPConfiguration default: unreadable, assigning to all Services");
                AssignIps::default()
            }),
    };
    Ok((pools, mode))
}

/// Decides and acts until nothing is left to do (a few rounds: a release and its
/// allocation, then the status). `Ok(true)`: an allocation failed, and what its handle
/// got before the error is unknown: read the IPAM again before deciding anew.
async fn turn(
    api: &Api<K8sService>,
    ipam: &ipam::Ipam,
    table: &mut Table,
    held: &mut Allocations,
    reported: &mut BTreeMap<ObjectKey, String>,
    shared: &Shared,
) -> anyhow::Result<bool> {
    let (pools, mode) = inputs(ipam).await?;
    let mut problems: BTreeMap<ObjectKey, String> = BTreeMap::new();
    let mut stale = false;
    for _ in 0..3 {
        let actions = lb::plan(table, held, &pools, mode);
        let mut changed = false;
        for a in actions {
            match a {
                Action::Problem(k, p) => {
                    problems.insert(k, p);
                }
                Action::Release(o) => {
                    let released = ipam.release_handle(o.handle()?).await?;
                    info!(service = %o.key, uid = %o.uid, ?released, "released LoadBalancer addresses");
                    held.remove(&o);
                    changed = true;
                }
                Action::Allocate(o, want) => match allocate(ipam, &o, &want).await {
                    Ok(ips) => {
                        info!(service = %o.key, uid = %o.uid, ?ips, "allocated LoadBalancer addresses");
                        held.insert(o, ips);
                        changed = true;
                    }
                    Err(e) => {
                        problems.insert(o.key, format!("{e:#}"));
                        stale = true;
                    }
                },
                Action::Status(k, ips) => {
                    write_status(api, &k, &ips).await?;
                    if let Some(s) = table.get_mut(&k) {
                        s.status_ips = ips;
                        if !s.relevant() {
                            table.remove(&k);
                        }
                    }
                }
            }
        }
        if !changed || stale {
            break;
        }
    }
    report(problems, reported, shared);
    Ok(stale)
}

/// Logs each Service's problem once, and when it clears, and shows the current ones in
/// the node status.
fn report(
    now: BTreeMap<ObjectKey, String>,
    reported: &mut BTreeMap<ObjectKey, String>,
    shared: &Shared,
) {
    for (k, p) in &now {
        if reported.get(k) != Some(p) {
            warn!(service = %k, problem = %p, "LoadBalancer address");
        }
    }
    for k in reported.keys() {
        if !now.contains_key(k) {
            info!(service = %k, "LoadBalancer address: problem cleared");
        }
    }
    shared.lock().load_balancer_problems = now
        .iter()
        .map(|(k, p)| format!("LoadBalancer Service {k}: {p}"))
        .collect();
    *reported = now;
}

async fn allocate(ipam: &ipam::Ipam, o: &Owner, want: &Want) -> anyhow::Result<Vec<IpAddr>> {
    let k = &o.key;
    let handle = o.handle()?;
    let node = NodeInfo::new(NodeName::new(lb::LB_NODE)?);
    let mut out = Vec::new();
    match want {
        Want::Addresses(ips) => {
            for ip in ips {
                let got = ipam
                    .assign_ip(AssignIpRequest {
                        ip: *ip,
                        handle: handle.clone(),
                        node: node.clone(),
                        namespace: Some(k.namespace.clone()),
                        pod: None,
                    })
                    .await?;
                out.push(got);
            }
        }
        Want::Auto {
            v4,
            v6,
            v4_pools,
            v6_pools,
        } => {
            // One request per family: each family's pools are named on their own.
            for (wanted, num_v4, pools) in [(*v4, 1, v4_pools), (*v6, 0, v6_pools)] {
                if !wanted {
                    continue;
                }
                let mut req =
                    AutoAssignRequest::new(handle.clone(), node.clone(), num_v4, 1 - num_v4);
                req.use_ = AllowedUse::LoadBalancer;
                req.namespace = Some(k.namespace.clone());
                req.pools = pools.clone();
                let got = ipam.auto_assign(req).await?;
                out = got.v4.into_iter().chain(got.v6).collect();
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

async fn write_status(api: &Api<K8sService>, k: &ObjectKey, ips: &[IpAddr]) -> anyhow::Result<()> {
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    let body = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let api: Api<K8sService> = Api::namespaced(api.clone().into_client(), &k.namespace);
    api.patch_status(&k.name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    debug!(service = %k, ?ips, "wrote status.loadBalancer.ingress");
    Ok(())
}
