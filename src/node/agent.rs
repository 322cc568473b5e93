//! The agent loop: the IO shell around the pure decisions.
//!
//! ```text
//!   datastore watch ──events──▶ Index ─┐
//!   (file: stat every 10 ms;           │  register.rs writes the ServalNode and tunnel
//!    etcd: watch)                      │  addresses first, then every read is made
//!   password files, Secrets ───────────┤  (snapshot, files, Secrets)
//!   Services, EndpointSlices ──────────┤  (kubernetes datastore: ServiceTable)
//!                                      ▼
//!                          decide(): desired() + wanted routes, NAT, MTU   (pure)
//!                                      │
//!              ┌───────────────┬───────┴──────┬──────────────┬──────────────┐
//!              ▼               ▼              ▼              ▼              ▼
//!        apply::speaker  apply::tunnels  apply::routes   apply::nat     apply::mtu
//!        (peers, prefixes) (tunl0, vxlan)  (proto 83, FDB) (nftables)   (mtu file)
//!
//!   Speaker::subscribe() ──best paths──▶ learned ──route_changes()──▶ apply::routes
//!   tick (1 s) ── forwarding, initial-sync check, retries, periodic full route sync
//! ```
//!
//! A reconcile is "decide, then apply": the datastore writes and reads come first, the
//! decision is a pure function of what they gave, and each applier (see [`super::apply`])
//! owns what it last applied. The route set is the dataplane's. One task owns all of it;
//! the status socket, health and metrics read what it publishes in [`Shared`]. Start-up checks everything before it changes anything.
//! A restarted agent adopts the routes its previous run left, updates them in place as
//! routes are learned again, and removes the ones nobody announces only once BGP has
//! converged (every peer up and quiet) or `initial_sync_timeout` passed: pods lose
//! nothing across a restart, and a kill -9 leaves no stale route for long.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use bgp::config::PeerConfig;
use bgp::rib::BestRoute;
use bgp::speaker::BestPathStream;
use futures::{FutureExt as _, StreamExt as _};
use ipam::model::{IpPool, NodeName};
use ipam::ops::RetryPolicy;
use ipam::store::file::FileStore;
use ipam::store::select::{self, Datastore};
use ipam::store::{Kind, Store, WatchEvent, WatchStream};
use ipam::Ipam;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument as _};

use crate::node::dataplane::{Dataplane, DesiredRoutes, RouteConfig};
use crate::node::desired::{self, Desired, Snapshot};
use crate::resources::{ClusterResource, Spec};

use super::apply::forwarding::{Sysctls, SYSCTL_ROOT};
use super::apply::mtu::{write_file, MtuFile};
use super::apply::tunnels::{self, KernelTunnels};
use super::apply::{
    ForwardingApplier, MtuApplier, NatApplier, NatWant, RouteApplier, SpeakerApplier,
    SpeakerParams, SpeakerWant, TunnelApplier, Underlay,
};
use super::autodetect::{self, Interface};
use super::config::{AddressSource, NodeConfig};
use super::index::Index;
use super::kube::{self as on_kube, node_settings, secrets::SecretCache, KubeEnv};
use super::register::{self, Detected};
use super::services::{ServiceChange, ServiceTable};
use super::shared::Shared;
use super::startup;

/// How often the file store is looked at: one `stat` per look, so a block claimed on
/// another node is routed here within a few tens of milliseconds.
pub const FILE_WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// The loop's tick.
const TICK: Duration = Duration::from_secs(1);
/// After start, BGP counts as converged once every peer has been up this long and no
/// best path changed for [`QUIET`].
const SETTLE: u64 = 2;
const QUIET: Duration = Duration::from_secs(1);
/// Full route sync (repairs drift) and retries of failed tunnels and routes.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

const WATCHED: [Kind; 3] = [Kind::Pool, Kind::Block, Kind::Resource];

/// What one reconcile wants, decided from the snapshot alone.
struct Wants {
    desired: Desired,
    speaker: SpeakerParams,
    routes: DesiredRoutes,
    nat: NatWant,
    /// The pod MTU, when the underlay's MTU is known.
    mtu: Option<u32>,
}

/// The decision of a reconcile: pure over the snapshot, the best paths learned and the
/// node's fixed facts.
fn decide(
    snap: &Snapshot,
    learned: &BTreeMap<IpNet, BestRoute>,
    router_id: Ipv4Addr,
    underlay: Underlay,
) -> Wants {
    let d = desired::desired(snap);
    Wants {
        speaker: SpeakerParams {
            asn: d.asn,
            router_id,
            cluster_id: d.cluster_id,
            port: d.listen_port,
        },
        routes: desired::routes(&d, learned, snap),
        nat: NatWant::from_desired(&d),
        mtu: underlay
            .v4
            .or(underlay.v6)
            .map(|(_, u)| tunnels::pod_mtu(u, &snap.pools)),
        desired: d,
    }
}

/// The streams the loop waits on.
struct Inputs {
    watch: WatchStream,
    watch_broken: bool,
    best: Option<BestPathStream>,
    /// On the kubernetes datastore: the Service watch's changes.
    services: Option<tokio::sync::mpsc::Receiver<ServiceChange>>,
}

/// The agent's state; see the module docs.
pub struct Agent {
    cfg: NodeConfig,
    node: NodeName,
    store: Arc<dyn Store>,
    ipam: Ipam,
    index: Index,
    detected: Detected,
    router_id: Ipv4Addr,
    ifaces: Vec<Interface>,
    underlay: Underlay,
    /// The kernel, and the route set (see [`super::apply`]).
    dp: Dataplane,
    /// The best paths the speaker reported.
    learned: BTreeMap<IpNet, BestRoute>,
    snap: Snapshot,
    desired: Option<Desired>,
    speaker: SpeakerApplier,
    routes: RouteApplier,
    tunnels: TunnelApplier,
    nat: NatApplier,
    mtu: MtuApplier,
    forwarding: ForwardingApplier,
    datastore_ok: bool,
    /// This run has seen its ServalNode in the datastore: if it disappears after that,
    /// someone deleted the node, and the agent does not write it back.
    registered: bool,
    first_reconcile_done: bool,
    bgp_synced: bool,
    started: Instant,
    last_best: Instant,
    last_resync: Instant,
    problems: Vec<String>,
    /// The last watch error, until the watch delivers again.
    watch_error: Option<String>,
    /// On the kubernetes datastore: the API client and the password Secrets read.
    kube: Option<KubeParts>,
    shared: Arc<Shared>,
}

/// What the agent keeps on the kubernetes datastore.
struct KubeParts {
    env: KubeEnv,
    secrets: SecretCache,
    /// Problems of the Kubernetes Node's annotations, reported with every reconcile.
    node_problems: Vec<String>,
    /// The Secrets the last snapshot referred to.
    referenced: std::collections::BTreeSet<String>,
    /// Services and this node's ready endpoints, as the Service watch reports them.
    services: Arc<ServiceTable>,
}

/// Runs the agent until `stop` is cancelled, then stops gracefully: the speaker closes
/// its sessions for a graceful restart and every kernel route stays.
pub async fn run(
    cfg: NodeConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let span = info_span!("node", node = %cfg.node_name);
    async move {
        let Some((mut agent, mut inputs)) = Agent::start(cfg, shared, &stop).await? else {
            info!("stopped while waiting for the datastore");
            return Ok(());
        };
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(k) = &agent.kube {
            let (leader, leading) = tokio::sync::watch::channel(false);
            tasks.spawn(on_kube::run_gc(
                k.env.clone(),
                agent.node.to_string(),
                agent.ipam.clone(),
                leader,
                stop.clone(),
            ));
            tasks.spawn(on_kube::lb::run(
                k.env.client.clone(),
                agent.ipam.clone(),
                leading,
                agent.shared.clone(),
                stop.clone(),
            ));
            tasks.spawn(on_kube::run_status(
                k.env.client.clone(),
                agent.node.to_string(),
                agent.shared.clone(),
                stop.clone(),
            ));
            let (tx, rx) = tokio::sync::mpsc::channel(SERVICE_CHANGES);
            inputs.services = Some(rx);
            tasks.spawn(on_kube::services::run(
                k.env.client.clone(),
                agent.node.to_string(),
                tx,
                stop.clone(),
            ));
        }
        agent.reconcile(&mut inputs).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                ev = inputs.watch.next() => agent.on_watch(ev, &mut inputs).await,
                batch = next_best(&mut inputs.best) => agent.on_best(batch).await,
                change = next_service(&mut inputs.services) => {
                    agent.on_services(change, &mut inputs).await
                }
                _ = tick.tick() => agent.on_tick(&mut inputs).await,
            }
            agent.shared.lock().last_turn = Some(Instant::now());
        }
        agent.stop().await;
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
    .instrument(span)
    .await
}

/// Room for the Service watch's changes between two turns of the loop.
const SERVICE_CHANGES: usize = 256;

async fn next_service(
    rx: &mut Option<tokio::sync::mpsc::Receiver<ServiceChange>>,
) -> Option<ServiceChange> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_best(best: &mut Option<BestPathStream>) -> Option<Vec<bgp::rib::BestChange>> {
    match best {
        Some(b) => b.recv().await,
        None => std::future::pending().await,
    }
}

/// The datastore the configuration names, opened and watched, with its first snapshot.
struct Opened {
    store: Arc<dyn Store>,
    name: String,
    kube: Option<KubeEnv>,
    watch: WatchStream,
    first: WatchEvent,
}

/// Opens the datastore the configuration names (the file store is watched often), starts
/// its watch and reads the first snapshot. On the kubernetes datastore, also the API
/// client and namespace; the store there covers serval's resource kinds (BGPPeer, …) as
/// well as the IPAM's. A datastore that does not answer is tried again, with the pauses
/// of [`startup::pause`], until it does or `stop` is cancelled (`Ok(None)`); meanwhile
/// the status and readiness say what is awaited. A datastore named or configured wrongly
/// is an error at once.
async fn open_datastore(
    datastore: Option<&str>,
    node: &str,
    shared: &Shared,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Opened>> {
    let ds = Datastore::resolve(datastore).context("datastore")?;
    let name = ds.to_string();
    let kube = match ds {
        Datastore::Kubernetes => Some(KubeEnv::from_environment().await?),
        _ => None,
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let e = match try_open(&ds, &name, kube.as_ref()).await {
            Ok((store, mut watch)) => {
                match tokio::time::timeout(FIRST_READ_WITHIN, watch.next()).await {
                    Ok(Some(Ok(first))) => {
                        if attempt > 1 {
                            info!(datastore = %name, tries = attempt, "the datastore answers");
                        }
                        return Ok(Some(Opened {
                            store,
                            name,
                            kube,
                            watch,
                            first,
                        }));
                    }
                    Ok(Some(Err(e))) => anyhow::Error::new(e).context("first read"),
                    Ok(None) => anyhow!("the watch ended at once"),
                    Err(_) => anyhow!(
                        "first read: no answer within {} s",
                        FIRST_READ_WITHIN.as_secs()
                    ),
                }
            }
            Err(e) => e,
        };
        if !startup::worth_waiting(&e) {
            return Err(e.context(format!("datastore {name}")));
        }
        let next = startup::pause(attempt, node);
        let problem = startup::problem(&name, attempt, &e, next);
        warn!(datastore = %name, tries = attempt, next_in = ?next, error = %format!("{e:#}"), "datastore not answering, waiting");
        {
            let mut p = shared.lock();
            p.status.node = node.to_owned();
            p.status.datastore = name.clone();
            p.status.problems = vec![problem];
            p.health.datastore_ok = false;
            // Waiting is what the agent is meant to do now: it is alive.
            p.last_turn = Some(Instant::now());
        }
        let until = Instant::now() + next;
        // Keep liveness fresh through a long pause.
        while Instant::now() < until {
            let step = until.saturating_duration_since(Instant::now()).min(TICK);
            tokio::select! {
                () = stop.cancelled() => return Ok(None),
                () = tokio::time::sleep(step) => {}
            }
            shared.lock().last_turn = Some(Instant::now());
        }
    }
}

/// The first read after a watch opened must come within this.
const FIRST_READ_WITHIN: Duration = Duration::from_secs(30);

/// One try at opening the store and its watch.
async fn try_open(
    ds: &Datastore,
    name: &str,
    kube: Option<&KubeEnv>,
) -> anyhow::Result<(Arc<dyn Store>, WatchStream)> {
    let store: Arc<dyn Store> = match (ds, kube) {
        (Datastore::File(p), _) => {
            Arc::new(FileStore::new(p).with_watch_interval(FILE_WATCH_INTERVAL))
        }
        (Datastore::Kubernetes, Some(env)) => {
            let kinds = crate::resources::ResourceKind::ALL.map(|k| k.as_str().to_owned());
            Arc::new(
                ipam::store::kube::KubeStore::new(env.client.clone()).with_resource_kinds(kinds),
            )
        }
        (other, _) => select::open(other)
            .await
            .with_context(|| format!("opening {name}"))?,
    };
    let watch = store.watch(&WATCHED).await.context("watching")?;
    Ok((store, watch))
}

/// Detects the node's address of one family from its configuration.
async fn detect(
    source: &AddressSource,
    v4: bool,
    ifaces: &[Interface],
) -> anyhow::Result<Option<IpNet>> {
    let field = if v4 { "ip" } else { "ip6" };
    match source {
        AddressSource::None => Ok(None),
        AddressSource::Fixed(n) => Ok(Some(*n)),
        AddressSource::Address(a) => ifaces
            .iter()
            .flat_map(|i| i.addrs.iter())
            .find(|n| n.addr() == *a)
            .map(|n| Some(*n))
            .ok_or_else(|| anyhow!("{field}: no interface carries {a}")),
        AddressSource::Autodetect(m) => {
            let reach = match m {
                autodetect::Method::CanReach(dest) => {
                    Some(autodetect::source_for(*dest).with_context(|| {
                        format!("{field}-autodetection-method {m}: no route to {dest}")
                    })?)
                }
                _ => None,
            };
            autodetect::choose(m, v4, ifaces, reach)
                .map(Some)
                .map_err(|e| anyhow!("{field}-autodetection-method: {e}"))
        }
    }
}

/// The node's subnets (its L2 neighbours) with their interface: every interface
/// address but loopback, tunnels and host routes.
fn local_subnets(ifaces: &[Interface]) -> Vec<(IpNet, String)> {
    let skip = |name: &str| {
        name == "lo"
            || name == crate::node::dataplane::IPIP_DEVICE
            || name == crate::node::dataplane::VXLAN_DEVICE
            || name == crate::node::dataplane::VXLAN_V6_DEVICE
    };
    ifaces
        .iter()
        .filter(|i| !skip(&i.name))
        .flat_map(|i| i.addrs.iter().map(move |a| (a, &i.name)))
        .filter(|(a, _)| a.prefix_len() < a.max_prefix_len())
        .filter(|(a, _)| !matches!(a.addr(), IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|(a, n)| (a.trunc(), n.clone()))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether BGP has converged since the agent started (then routes nobody announces
/// may go): every configured peer Established for [`SETTLE`] seconds and no best-path
/// change for [`QUIET`]; or `timeout` passed since start, whatever the peers do.
/// `status`: the speaker's peers, `None` when it is not running or not asked.
pub fn converged(
    now: Instant,
    started: Instant,
    timeout: Duration,
    last_best: Instant,
    peers: &BTreeMap<IpAddr, PeerConfig>,
    status: Option<&[bgp::status::PeerStatus]>,
) -> bool {
    if now.duration_since(started) >= timeout {
        return true;
    }
    let Some(status) = status else {
        return false;
    };
    if now.duration_since(last_best) < QUIET {
        return false;
    }
    peers.values().filter(|p| !p.shutdown).all(|p| {
        status.iter().any(|s| {
            s.address == p.address
                && s.state.is_established()
                && s.uptime_secs.unwrap_or(0) >= SETTLE
        })
    })
}

impl Agent {
    /// Everything that can fail on bad configuration happens here, before anything is
    /// changed: datastore, addresses, router id. Then the first datastore read.
    /// `Ok(None)`: stopped while waiting for the datastore.
    async fn start(
        mut cfg: NodeConfig,
        shared: Arc<Shared>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<(Agent, Inputs)>> {
        let node = cfg.node_name.clone();
        let Some(Opened {
            store,
            name: datastore,
            kube: kube_env,
            watch,
            first,
        }) = open_datastore(cfg.datastore.as_deref(), node.as_str(), &shared, stop).await?
        else {
            return Ok(None);
        };
        let mut node_problems = Vec::new();
        if let Some(env) = &kube_env {
            // The Kubernetes Node's addresses, AS and labels, under what was given.
            match on_kube::read_node(&env.client, node.as_str()).await {
                Ok(n) => {
                    let from_node = node_settings::from_node(&n);
                    node_problems = from_node.problems.clone();
                    let merged = node_settings::merge(
                        &node_settings::Given {
                            ip: cfg.ip.clone(),
                            ip_explicit: cfg.ip_explicit,
                            ip6: cfg.ip6.clone(),
                            ip6_explicit: cfg.ip6_explicit,
                            as_number: cfg.as_number,
                            labels: cfg.labels.clone(),
                        },
                        &from_node,
                    );
                    info!(ip = ?merged.ip, ip6 = ?merged.ip6, as_number = ?merged.as_number, "settings from the Kubernetes Node");
                    cfg.ip = merged.ip;
                    cfg.ip6 = merged.ip6;
                    cfg.as_number = merged.as_number;
                    cfg.labels = merged.labels;
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "using the configured settings only");
                    node_problems.push(format!("{e:#}"));
                }
            }
        }
        let mut dp = Dataplane::connect(RouteConfig::default()).context("dataplane")?;
        let ifaces = autodetect::interfaces(dp.netlink())
            .await
            .context("listing interfaces")?;
        let v4 = detect(&cfg.ip, true, &ifaces).await?;
        let v6 = detect(&cfg.ip6, false, &ifaces).await?;
        if v4.is_none() && v6.is_none() {
            bail!("ip: the node has neither an IPv4 nor an IPv6 address");
        }
        let router_id = match (cfg.router_id, v4) {
            (Some(r), _) => r,
            (None, Some(IpNet::V4(n))) => n.addr(),
            _ => bail!("router-id: required when the node has no IPv4 address"),
        };
        let detected = Detected { v4, v6 };
        info!(ipv4 = ?v4, ipv6 = ?v6, %router_id, %datastore, "starting");
        let mut index = Index::default();
        index.apply(first);
        // From here on the agent changes things.
        write_file(&cfg.nodename_file, node.as_str())
            .with_context(|| format!("nodename-file {}", cfg.nodename_file.display()))?;
        let mut forwarding = ForwardingApplier::new(v6.is_some());
        forwarding.apply(&mut Sysctls(Path::new(SYSCTL_ROOT)));
        let adopted = dp.adopt().await.context("reading serval's routes")?;
        if adopted > 0 {
            info!(
                routes = adopted,
                "kept the routes of the previous run until BGP converges"
            );
        }
        let underlay = Underlay {
            v4: match v4 {
                Some(n) => dp.underlay(n.addr()).await.ok().map(|(i, _, m)| (i, m)),
                None => None,
            },
            v6: match v6 {
                Some(n) => dp.underlay(n.addr()).await.ok().map(|(i, _, m)| (i, m)),
                None => None,
            },
        };
        let ipam = Ipam::new(store.clone()).with_retry(RetryPolicy {
            max_attempts: 8,
            budget: Duration::from_secs(3),
            ..RetryPolicy::default()
        });
        {
            let mut p = shared.lock();
            p.status.node = node.to_string();
            p.status.datastore = datastore.clone();
            p.status.ipv4_address = v4;
            p.status.ipv6_address = v6;
            p.status.router_id = Some(router_id);
            p.health.datastore_ok = true;
            p.last_turn = Some(Instant::now());
        }
        let now = Instant::now();
        let agent = Agent {
            cfg,
            node,
            store,
            ipam,
            index,
            detected,
            router_id,
            ifaces,
            underlay,
            dp,
            learned: BTreeMap::new(),
            snap: Snapshot::default(),
            desired: None,
            speaker: SpeakerApplier::default(),
            routes: RouteApplier::default(),
            tunnels: TunnelApplier::default(),
            nat: NatApplier::default(),
            mtu: MtuApplier::default(),
            forwarding,
            datastore_ok: true,
            registered: false,
            first_reconcile_done: false,
            bgp_synced: false,
            started: now,
            last_best: now,
            last_resync: now,
            problems: Vec::new(),
            watch_error: None,
            kube: kube_env.map(|env| KubeParts {
                secrets: SecretCache::new(env.client.clone(), &env.namespace),
                env,
                node_problems,
                referenced: Default::default(),
                services: Arc::default(),
            }),
            shared,
        };
        Ok(Some((
            agent,
            Inputs {
                watch,
                watch_broken: false,
                best: None,
                services: None,
            },
        )))
    }

    async fn on_watch(
        &mut self,
        ev: Option<Result<WatchEvent, ipam::StoreError>>,
        inputs: &mut Inputs,
    ) {
        let mut ev = ev;
        loop {
            match ev {
                Some(Ok(e)) => {
                    self.index.apply(e);
                    self.datastore_ok = true;
                    self.watch_error = None;
                }
                // The index, and so the routes and sessions, stay as they were: the
                // store retries with back-off and resyncs when it is back.
                Some(Err(e)) => {
                    warn!(error = %e, "datastore watch; keeping the last known state");
                    self.datastore_ok = false;
                    self.watch_error = Some(format!("datastore watch: {e}"));
                }
                None => {
                    warn!("datastore watch ended; watching again");
                    inputs.watch = Box::pin(futures::stream::pending());
                    inputs.watch_broken = true;
                    self.datastore_ok = false;
                    break;
                }
            }
            // Take every event already there before deciding once.
            match inputs.watch.next().now_or_never() {
                Some(next) => ev = next,
                None => break,
            }
        }
        self.reconcile(inputs).await;
    }

    /// Applies the Service watch's changes (every one already there) and, when the
    /// table changed, reconciles: the speaker's announcement diff then touches only the
    /// prefixes of the Services that changed.
    async fn on_services(&mut self, change: Option<ServiceChange>, inputs: &mut Inputs) {
        let Some(k) = &mut self.kube else { return };
        let Some(first) = change else {
            warn!("the Service watch stopped; keeping the advertised Service addresses");
            inputs.services = None;
            return;
        };
        // The last snapshot's reference goes first, so the table changes in place
        // rather than being copied (the next reconcile gives the snapshot its own).
        self.snap.services = Arc::default();
        let table = Arc::make_mut(&mut k.services);
        let mut changed = table.apply(first);
        if let Some(rx) = &mut inputs.services {
            while let Ok(c) = rx.try_recv() {
                changed |= table.apply(c);
            }
        }
        if changed {
            self.reconcile(inputs).await;
        }
    }

    async fn on_best(&mut self, batch: Option<Vec<bgp::rib::BestChange>>) {
        let Some(batch) = batch else {
            error!("the BGP speaker stopped");
            return;
        };
        let changed = desired::learn(&mut self.learned, batch);
        self.last_best = Instant::now();
        self.shared.metrics.route_batches.inc();
        // Only the batch's prefixes: its cost does not grow with the table.
        if let Some(d) = &self.desired {
            let diff =
                desired::route_changes(d, &self.learned, &self.snap, self.dp.wanted(), &changed);
            if self.routes.apply_diff(&diff, &mut self.dp).await {
                self.shared.lock().routes.apply(&diff);
            }
        }
        self.publish();
    }

    async fn on_tick(&mut self, inputs: &mut Inputs) {
        // While forwarding is off: the host (or an operator) may have set it meanwhile.
        if self.forwarding.apply(&mut Sysctls(Path::new(SYSCTL_ROOT))) {
            info!("IP forwarding is on");
            self.publish();
        }
        if let Some(k) = &mut self.kube {
            let now = Instant::now();
            let names = k.referenced.clone();
            if k.secrets.due(&names, now) && k.secrets.refresh(&names, now).await {
                info!("a BGP password Secret changed");
                self.reconcile(inputs).await;
            }
        }
        if self.watch_error.is_some() {
            // Ask the store once a tick whether it answers again. When it does, watch
            // afresh (a full read, then changes) rather than wait for the broken watch:
            // its retries back off (up to 30 s on Kubernetes) and, after an API server
            // restart, come back to a version the server no longer has (410 Gone), which
            // costs one more back-off before the relist.
            if self.store.get(&ipam::store::Key::Config).await.is_ok() {
                info!("the datastore answers again: reading it afresh");
                self.watch_error = None;
                self.datastore_ok = true;
                inputs.watch_broken = true;
            }
        }
        if inputs.watch_broken {
            match self.store.watch(&WATCHED).await {
                Ok(w) => {
                    inputs.watch = w;
                    inputs.watch_broken = false;
                }
                Err(e) => warn!(error = %e, "datastore watch"),
            }
        }
        if !self.bgp_synced && self.first_reconcile_done && self.converged().await {
            info!(
                after_ms = self.started.elapsed().as_millis() as u64,
                "BGP converged: removing routes nobody announces any more"
            );
            self.bgp_synced = true;
            self.full_sync().await;
        } else if self.bgp_synced && self.last_resync.elapsed() >= RESYNC_EVERY {
            self.full_sync().await;
        }
        if self.last_resync.elapsed() >= RESYNC_EVERY {
            self.last_resync = Instant::now();
            if self.tunnels.failed() || self.nat.failed() {
                self.tunnels.forget();
                self.nat.forget();
                self.reconcile(inputs).await;
            }
        }
        self.publish();
    }

    /// Whether BGP has converged since start: every configured peer up for a while and
    /// no best-path change lately, or the initial sync timeout passed.
    async fn converged(&self) -> bool {
        let now = Instant::now();
        let status = match self.speaker.speaker() {
            Some(s) if now.duration_since(self.last_best) >= QUIET => s.peers().await.ok(),
            _ => None,
        };
        converged(
            now,
            self.started,
            self.cfg.initial_sync_timeout,
            self.last_best,
            self.speaker.peers(),
            status.as_deref(),
        )
    }

    /// Makes serval's kernel routes exactly what is wanted: removes stale ones.
    async fn full_sync(&mut self) {
        self.last_resync = Instant::now();
        if let Ok(ifaces) = autodetect::interfaces(self.dp.netlink()).await {
            self.ifaces = ifaces;
        }
        self.routes.resync(&mut self.dp).await;
    }

    /// Password files that resources name, read afresh.
    fn password_files(&self) -> BTreeMap<PathBuf, String> {
        self.index
            .password_files()
            .into_iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(&f).ok()?;
                Some((f, text.trim_end_matches(['\r', '\n']).to_owned()))
            })
            .collect()
    }

    /// Registers the node (tunnel addresses, ServalNode) when something changed.
    async fn register(&mut self, problems: &mut Vec<String>) {
        let stored = self.index.node_resource(self.node.as_str()).cloned();
        match (&stored, self.registered) {
            (Some(_), _) => self.registered = true,
            // Deleted while this agent runs: the node was removed from the cluster
            // (`serval delete servalnode`, or the node collector after its Kubernetes
            // Node went). Writing it back would undo that; the other nodes have dropped
            // their sessions to this one already.
            (None, true) => {
                problems.push(format!(
                    "ServalNode {} was deleted while this agent runs: the node no longer \
                     takes part in the cluster; restart the agent to register it again",
                    self.node
                ));
                return;
            }
            (None, false) => {}
        }
        let existing: Option<ClusterResource> = stored
            .as_ref()
            .and_then(|v| ClusterResource::from_stored(&v.value))
            .and_then(Result::ok);
        let existing_spec = match &existing {
            Some(ClusterResource {
                spec: Spec::ServalNode(s),
                ..
            }) => Some(s),
            _ => None,
        };
        let held = register::tunnel_addrs(existing_spec);
        let mut labels = existing
            .as_ref()
            .map(|e| e.labels.clone())
            .unwrap_or_default();
        labels.extend(self.cfg.labels.clone());
        let pools: Vec<IpPool> = self.index.pools().cloned().collect();
        let (tunnels, p) = register::ensure_tunnel_addrs(
            &self.ipam,
            &self.node,
            &labels,
            &pools,
            &self.detected,
            held,
        )
        .await;
        problems.extend(p);
        let want = register::node_resource(
            existing.as_ref(),
            &self.node,
            &self.detected,
            self.cfg.as_number,
            &self.cfg.labels,
            &tunnels,
        );
        match register::write_node(&*self.store, stored.as_ref(), &want).await {
            Ok(Some(obj)) => {
                info!(tunnels = ?tunnels, "ServalNode written");
                self.registered = true;
                self.index.apply(WatchEvent::Put(obj));
            }
            Ok(None) => {}
            // Someone else wrote it: the watch brings their version, and the next
            // reconcile writes ours over it.
            Err(ipam::StoreError::Conflict { .. }) => {}
            Err(e) => {
                self.datastore_ok = !matches!(e, ipam::StoreError::Unavailable { .. });
                problems.push(format!("writing ServalNode {}: {e}", self.node));
            }
        }
    }

    /// Registers the node, reads everything the decision needs, decides, then applies
    /// the decision everywhere.
    async fn reconcile(&mut self, inputs: &mut Inputs) {
        let t0 = Instant::now();
        let mut problems = Vec::new();
        self.register(&mut problems).await;
        let snap = self.read(&mut problems).await;
        let want = decide(&snap, &self.learned, self.router_id, self.underlay);
        problems.extend(want.desired.problems.iter().cloned());
        self.snap = snap;
        self.apply(want, inputs, &mut problems).await;
        if !self.first_reconcile_done && self.speaker.speaker().is_some() && self.datastore_ok {
            self.first_reconcile_done = true;
            match write_file(&self.cfg.ready_file, self.node.as_str()) {
                Ok(()) => info!(ready_file = %self.cfg.ready_file.display(), "node ready"),
                Err(e) => {
                    problems.push(format!("ready-file {}: {e}", self.cfg.ready_file.display()))
                }
            }
        }
        if self.first_reconcile_done && self.speaker.peers().is_empty() && !self.bgp_synced {
            // No peer to wait for: what we have is all there will be.
            self.bgp_synced = true;
            self.full_sync().await;
        }
        let elapsed = t0.elapsed();
        self.shared
            .metrics
            .reconcile_seconds
            .observe(elapsed.as_secs_f64());
        if !problems.is_empty() {
            self.shared.metrics.reconcile_errors.inc();
            if problems != self.problems {
                for p in &problems {
                    warn!(problem = %p, "reconcile");
                }
            }
        }
        self.problems = problems;
        {
            let mut p = self.shared.lock();
            p.status.last_reconcile_unix = Some(unix_now());
            p.status.last_reconcile_ms = Some(elapsed.as_secs_f64() * 1000.0);
        }
        self.publish();
    }

    /// Everything the decision reads: the snapshot of the index, the password files and,
    /// on Kubernetes, the password Secrets it refers to (fetched when due).
    async fn read(&mut self, problems: &mut Vec<String>) -> Snapshot {
        let subnets = local_subnets(&self.ifaces);
        let (mut snap, p) = self.index.snapshot(
            &self.node,
            Some(self.router_id),
            subnets.iter().map(|(n, _)| *n).collect(),
            self.password_files(),
        );
        problems.extend(p);
        problems.extend(self.watch_error.clone());
        if let Some(k) = &mut self.kube {
            snap.services = k.services.clone();
            problems.extend(k.services.problems());
            problems.extend(k.node_problems.iter().cloned());
            let names = on_kube::secrets::referenced(&snap);
            k.referenced = names.clone();
            let now = Instant::now();
            if k.secrets.due(&names, now) {
                k.secrets.refresh(&names, now).await;
            }
            problems.extend(on_kube::secrets::apply(
                &mut snap,
                &k.secrets.data(),
                k.secrets.namespace(),
            ));
        }
        snap
    }

    /// Hands each applier its part of `want`.
    async fn apply(&mut self, want: Wants, inputs: &mut Inputs, problems: &mut Vec<String>) {
        let d = &want.desired;
        let out = self
            .speaker
            .apply(&SpeakerWant {
                params: want.speaker,
                v6: self.detected.v6.is_some(),
                state_dir: &self.cfg.state_dir,
                peers: &d.peers,
                announcements: &d.announcements,
            })
            .await;
        if out.stopped {
            inputs.best = None;
            self.bgp_synced = false;
            self.started = Instant::now();
        }
        if let Some((s, best)) = out.started {
            inputs.best = Some(best);
            self.shared.lock().speaker = Some(s);
        }
        problems.extend(out.problems);
        let mut io = KernelTunnels {
            dp: &self.dp,
            detected: &self.detected,
            underlay: self.underlay,
        };
        let retouched = self.tunnels.apply(&d.tunnels, &mut io).await;
        if let Some(diff) = self.routes.apply(&want.routes, &mut self.dp).await {
            self.shared.lock().routes.apply(&diff);
        }
        self.desired = Some(want.desired);
        if retouched && self.bgp_synced {
            // A device the kernel had to recreate lost its routes and VXLAN entries.
            self.full_sync().await;
        }
        self.nat.apply(&want.nat, &mut &self.dp).await;
        problems.extend(self.nat.guard_error().cloned());
        problems.extend(self.mtu.apply(want.mtu, &mut MtuFile(&self.cfg.mtu_file)));
    }

    /// Publishes the state for status, health and metrics.
    fn publish(&self) {
        let mut p = self.shared.lock();
        if let Some(d) = &self.desired {
            p.status.asn = d.asn.0;
            p.status.cluster_id = d.cluster_id;
            p.peer_types = d.peer_types.clone();
            p.status.nat_pools = d
                .nat
                .iter()
                .filter(|n| n.nat_outgoing)
                .map(|n| n.cidr)
                .collect();
        }
        p.status.bgp_initial_sync_done = self.bgp_synced;
        p.status.tunnels = self.tunnels.rows().to_vec();
        p.status.mtu = self.mtu.applied();
        p.status.problems = self.problems.clone();
        p.status.last_reconcile_errors = self.problems.clone();
        p.route_errors = self.routes.errors().clone();
        p.subnets = local_subnets(&self.ifaces);
        p.usage = self.index.usage();
        let mut dataplane_errors: Vec<String> = self.tunnels.errors().collect();
        dataplane_errors.extend(self.nat.nat_error().cloned());
        dataplane_errors.extend(self.forwarding.errors().iter().cloned());
        p.health = crate::node::health::HealthInput {
            speaker_running: self.speaker.speaker().is_some(),
            datastore_ok: self.datastore_ok,
            first_reconcile_done: self.first_reconcile_done,
            dataplane_errors,
        };
    }

    /// Graceful stop: peers keep our routes (graceful restart), the kernel keeps
    /// serval's routes, the ready file goes.
    async fn stop(&mut self) {
        info!("stopping: sessions close for a graceful restart, kernel routes stay");
        if let Err(e) = self.speaker.stop().await {
            warn!(error = %e, "speaker shutdown");
        }
        self.shared.lock().speaker = None;
        let _ = std::fs::remove_file(&self.cfg.ready_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp::status::SessionState;
    use bgp::Asn;

    fn peer_status(
        addr: &str,
        state: bgp::status::SessionState,
        up: Option<u64>,
    ) -> bgp::status::PeerStatus {
        bgp::status::PeerStatus {
            address: addr.parse().unwrap(),
            name: None,
            asn: Asn(64512),
            kind: "ibgp".into(),
            state,
            uptime_secs: up,
            last_error: None,
            router_id: None,
            local_address: None,
            remote_address: None,
            hold_time: None,
            keepalive: None,
            capabilities: vec![],
            families: vec![],
            messages_received: 0,
            messages_sent: 0,
            updates_received: 0,
            updates_sent: 0,
            established_count: 0,
            flaps: 0,
            idle_hold_secs: None,
            bfd: None,
        }
    }

    #[test]
    fn convergence_table() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let peers: BTreeMap<IpAddr, PeerConfig> = ["192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|a| {
                let ip: IpAddr = a.parse().unwrap();
                (ip, PeerConfig::new(ip, Asn(64512)))
            })
            .collect();
        let mut down = peers.clone();
        down.values_mut().last().unwrap().shutdown = true;
        let up = |secs| {
            vec![
                peer_status("192.0.2.2", SessionState::Established, Some(secs)),
                peer_status("192.0.2.3", SessionState::Established, Some(secs)),
            ]
        };
        let one_down = vec![
            peer_status("192.0.2.2", SessionState::Established, Some(10)),
            peer_status("192.0.2.3", SessionState::Active, None),
        ];
        let s = Duration::from_secs;
        let none = BTreeMap::new();
        // (what, since start, since the last best-path change, peers, status, converged)
        type Case<'a> = (
            &'a str,
            Duration,
            Duration,
            &'a BTreeMap<IpAddr, PeerConfig>,
            Option<Vec<bgp::status::PeerStatus>>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "all up and settled, quiet",
                s(5),
                s(3),
                &peers,
                Some(up(3)),
                true,
            ),
            ("just came up", s(5), s(3), &peers, Some(up(1)), false),
            (
                "routes still arriving",
                s(5),
                Duration::from_millis(500),
                &peers,
                Some(up(3)),
                false,
            ),
            (
                "one peer down",
                s(5),
                s(3),
                &peers,
                Some(one_down.clone()),
                false,
            ),
            (
                "the down peer is shut down",
                s(5),
                s(3),
                &down,
                Some(one_down),
                true,
            ),
            ("speaker not asked", s(5), s(3), &peers, None, false),
            (
                "timeout, whatever the peers",
                s(30),
                s(30),
                &peers,
                None,
                true,
            ),
            ("no peers at all", s(5), s(3), &none, Some(vec![]), true),
        ];
        for (what, elapsed, since_best, p, status, want) in cases {
            let now = t0 + elapsed;
            let last_best = now - since_best;
            assert_eq!(
                converged(now, t0, timeout, last_best, p, status.as_deref()),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn the_decision_takes_the_speaker_settings_and_the_mtu_from_the_snapshot() {
        let rid = Ipv4Addr::new(192, 0, 2, 1);
        let snap = Snapshot::default();
        let none = decide(&snap, &BTreeMap::new(), rid, Underlay::default());
        assert_eq!(none.mtu, None, "no underlay known: no MTU to write");
        assert_eq!(none.speaker.router_id, rid);
        assert_eq!(none.speaker.asn, none.desired.asn);
        assert_eq!(none.speaker.port, none.desired.listen_port);
        assert!(none.routes.routes.is_empty());
        assert_eq!(none.nat, NatWant::from_desired(&none.desired));
        let v6_only = Underlay {
            v4: None,
            v6: Some((2, 9000)),
        };
        // No pool encapsulates: the pods get the underlay's MTU.
        assert_eq!(
            decide(&snap, &BTreeMap::new(), rid, v6_only).mtu,
            Some(9000)
        );
    }

    #[test]
    fn local_subnets_skip_loopback_tunnels_and_host_routes() {
        let i = |name: &str, addrs: &[&str]| Interface {
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let got = local_subnets(&[
            i("lo", &["127.0.0.1/8"]),
            i("eth0", &["192.0.2.10/24", "fe80::1/64", "2001:db8::10/64"]),
            i("vxlan.serval", &["10.67.0.1/32"]),
            i("tunl0", &["10.65.0.1/32"]),
            i("cali1", &["169.254.1.1/32"]),
        ]);
        let want: Vec<(IpNet, String)> = vec![
            ("192.0.2.0/24".parse().unwrap(), "eth0".into()),
            ("2001:db8::/64".parse().unwrap(), "eth0".into()),
        ];
        assert_eq!(got, want);
    }
}
