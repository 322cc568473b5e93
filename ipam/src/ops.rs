//! The IPAM operations: read → plan → compare-and-swap write, and again on a conflict.
//!
//! [`Ipam`] runs a [`Plan`] against a [`Store`]: it reads the pools and the configuration,
//! lets the plan ask for what else it needs, applies the writes the plan returns, and keeps
//! planning over its updated snapshot until the plan is done. A lost swap or an unreachable
//! store throws the snapshot away and starts over after a bounded exponential backoff with
//! jitter; the plans are state-based, so starting over after a write whose outcome is
//! unknown neither loses nor repeats it. When the budget ([`RetryPolicy`]) is spent the
//! operation fails with [`IpamError::RetriesExhausted`], naming the last store error.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::Rng;

use crate::allocator::{
    AddPool, AssignIpRequest, Assigned, AutoAssignRequest, DeletePool, Gc, Need, NodeReleased,
    Plan, ReleaseAffinity, ReleaseHandle, ReleaseIps, ReleaseNode, Released, SetConfig, Snapshot,
    Step,
};
use crate::check::{Check, CheckReport, LiveHandles};
use crate::error::{IpamError, StoreError};
use crate::model::{HandleId, IpPool, IpamConfig, NodeName, PoolName};
use crate::store::{Key, Kind, ListFilter, Object, Read, Store, Versioned};
use crate::usage::Usage;

/// How long and how often an operation retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts (reads from scratch) before giving up.
    pub max_attempts: u32,
    /// Give up when the next attempt would start later than this after the first.
    pub budget: Duration,
    /// Backoff before the second attempt; doubles each attempt.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Most writes one attempt may make; a plan that needs more is looping.
    pub max_writes_per_attempt: u32,
}

impl Default for RetryPolicy {
    /// Rides out an etcd restart or a leader election (a few seconds) but not an outage.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 64,
            budget: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(1000),
            max_writes_per_attempt: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1`: exponential, capped, with jitter in
    /// [half, full] so that nodes that collided do not collide again in lockstep.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        self.backoff_at(attempt, rng.random::<f64>())
    }

    /// [`RetryPolicy::backoff`] with its jitter given: `fraction`, in [0, 1), is where in
    /// [half, full] the pause falls (a caller that wants the same spread every time it
    /// runs derives it from something of its own, such as a node name).
    pub fn backoff_at(&self, attempt: u32, fraction: f64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        let half = exp / 2;
        half + exp.saturating_sub(half).mul_f64(fraction)
    }
}

/// The IPAM operations over one store.
#[derive(Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ipam {
            store,
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Ensures a handle holds the requested numbers of IPv4 and IPv6 addresses on a node:
    /// from the node's blocks, then a newly claimed block, then (unless strictAffinity) a
    /// block of another node. Returns every address the handle holds.
    pub async fn auto_assign(&self, req: AutoAssignRequest) -> Result<Assigned, IpamError> {
        self.run(req).await
    }

    /// Gives one specific address to a handle.
    pub async fn assign_ip(&self, req: AssignIpRequest) -> Result<IpAddr, IpamError> {
        self.run(req).await
    }

    /// Frees addresses; those not allocated are listed as such.
    pub async fn release_ips(&self, ips: Vec<IpAddr>) -> Result<Released, IpamError> {
        self.run(ReleaseIps::new(ips)).await
    }

    /// Frees every address of a handle and deletes its record; returns the addresses.
    pub async fn release_handle(&self, handle: HandleId) -> Result<Vec<IpAddr>, IpamError> {
        self.run(ReleaseHandle::new(handle)).await
    }

    /// Gives up a node's empty block.
    pub async fn release_block_affinity(
        &self,
        node: NodeName,
        cidr: IpNet,
    ) -> Result<(), IpamError> {
        self.run(ReleaseAffinity::new(node, cidr)).await
    }

    /// Drops every affinity of a deleted node: empty blocks go, others lose their affinity.
    pub async fn release_node(&self, node: NodeName) -> Result<NodeReleased, IpamError> {
        self.run(ReleaseNode::new(node)).await
    }

    /// Releases every allocation whose handle is not in `live`; see [`Gc`] for the race
    /// with allocations in flight.
    pub async fn gc(&self, live: BTreeSet<HandleId>) -> Result<Vec<(IpAddr, HandleId)>, IpamError> {
        self.run(Gc::new(live)).await
    }

    /// Checks consistency; with `repair`, fixes what can be fixed safely. With `live`,
    /// allocations it does not account for count as leaks ([`LiveHandles::leaked`]).
    pub async fn check(
        &self,
        repair: bool,
        live: Option<LiveHandles>,
    ) -> Result<CheckReport, IpamError> {
        self.run(Check::new(repair, live)).await
    }

    /// Adds a pool; refuses overlaps and invalid sizes without changing anything.
    pub async fn add_pool(&self, pool: IpPool) -> Result<(), IpamError> {
        self.run(AddPool(pool)).await
    }

    /// Deletes a pool that holds no allocations.
    pub async fn delete_pool(&self, name: PoolName) -> Result<(), IpamError> {
        self.run(DeletePool::new(name)).await
    }

    pub async fn set_config(&self, config: IpamConfig) -> Result<(), IpamError> {
        self.run(SetConfig(config)).await
    }

    /// The pools, sorted by CIDR.
    pub async fn pools(&self) -> Result<Vec<IpPool>, IpamError> {
        let snap = self
            .with_retries("list pools", || base(self.store.as_ref()))
            .await?;
        Ok(snap.pools.into_iter().map(|p| p.value).collect())
    }

    /// The configuration in force (defaults when none is stored).
    pub async fn config(&self) -> Result<IpamConfig, IpamError> {
        let snap = self
            .with_retries("read ipam config", || base(self.store.as_ref()))
            .await?;
        Ok(snap.config)
    }

    /// Pools, blocks and their usage, for `serval ipam show`.
    pub async fn usage(&self) -> Result<Usage, IpamError> {
        let snap = self
            .with_retries("read usage", || async {
                let mut snap = base(self.store.as_ref()).await?;
                fulfill(self.store.as_ref(), &mut snap, Need::AllBlocks).await?;
                fulfill(self.store.as_ref(), &mut snap, Need::AllAffinities).await?;
                Ok(snap)
            })
            .await?;
        Ok(Usage::of(&snap))
    }

    /// Runs a plan to completion.
    pub async fn run<P: Plan>(&self, mut plan: P) -> Result<P::Output, IpamError> {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let err = match self.attempt(&mut plan).await {
                Ok(out) => return Ok(out),
                Err(Failure::Ipam(e)) => return Err(e),
                Err(Failure::Store(e)) if e.is_retryable() => e,
                Err(Failure::Store(e)) => return Err(e.into()),
            };
            self.pause(plan.name(), attempt, started, err).await?;
        }
    }

    async fn pause(
        &self,
        op: &'static str,
        attempt: u32,
        started: Instant,
        last: StoreError,
    ) -> Result<(), IpamError> {
        let backoff = self.retry.backoff(attempt, &mut rand::rng());
        if attempt >= self.retry.max_attempts || started.elapsed() + backoff > self.retry.budget {
            return Err(IpamError::RetriesExhausted {
                op,
                attempts: attempt,
                last,
            });
        }
        tracing::debug!(op, attempt, error = %last, ?backoff, "retrying");
        tokio::time::sleep(backoff).await;
        Ok(())
    }

    async fn with_retries<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, IpamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => self.pause(op, attempt, started, e).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn attempt<P: Plan>(&self, plan: &mut P) -> Result<P::Output, Failure> {
        let mut snap = read_base(self.store.as_ref(), plan.prefetch()).await?;
        let mut writes = 0u32;
        loop {
            match plan.step(&snap).map_err(Failure::Ipam)? {
                Step::Done(out) => return Ok(out),
                Step::Need(need) => fulfill(self.store.as_ref(), &mut snap, need).await?,
                Step::Write(batch) => {
                    writes += batch.len() as u32;
                    if writes > self.retry.max_writes_per_attempt {
                        return Err(Failure::Ipam(IpamError::Invalid(format!(
                            "{} made {writes} writes without finishing; giving up",
                            plan.name()
                        ))));
                    }
                    let revs = self.store.commit(&batch).await?;
                    snap.apply(&batch, &revs);
                }
            }
        }
    }
}

/// Why one attempt stopped.
enum Failure {
    Store(StoreError),
    Ipam(IpamError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// Reads a whole store into a snapshot (for checks, tests and tools).
pub async fn full_snapshot(store: &dyn Store) -> Result<Snapshot, StoreError> {
    read_base(
        store,
        vec![Need::AllBlocks, Need::AllAffinities, Need::AllHandles],
    )
    .await
}

/// The pools and the configuration.
async fn base(store: &dyn Store) -> Result<Snapshot, StoreError> {
    read_base(store, Vec::new()).await
}

/// The pools, the configuration and what `needs` ask for, in one request where the store
/// can (see [`Store::read_many`]).
async fn read_base(store: &dyn Store, needs: Vec<Need>) -> Result<Snapshot, StoreError> {
    let mut reads = vec![
        Read::Get(Key::Config),
        Read::List(ListFilter::Kind(Kind::Pool)),
        Read::List(ListFilter::Resources(crate::reservation::KIND)),
    ];
    reads.extend(needs.iter().flat_map(reads_of));
    let mut answers = store.read_many(&reads).await?.into_iter();
    let mut snap = Snapshot {
        now_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        ..Snapshot::default()
    };
    for c in next_answer(&mut answers)? {
        snap.put(of_kind(Kind::Config, c.value)?, c.revision);
    }
    for p in next_answer(&mut answers)? {
        snap.put(of_kind(Kind::Pool, p.value)?, p.revision);
    }
    for r in next_answer(&mut answers)? {
        // A reservation that does not parse fails the operation: handing out an address
        // it meant to keep is worse than allocating nothing until it is fixed.
        let reserved = match of_kind(Kind::Resource, r.value)? {
            Object::Resource(res) => {
                crate::reservation::of_resource(&res).map_err(|detail| StoreError::Corrupt {
                    location: format!("IPReservation {}", res.name),
                    detail,
                })?
            }
            _ => Vec::new(),
        };
        snap.reserved.extend(reserved);
    }
    fill(&mut snap, needs, &mut answers)?;
    Ok(snap)
}

async fn fulfill(store: &dyn Store, snap: &mut Snapshot, need: Need) -> Result<(), StoreError> {
    let reads = reads_of(&need);
    let mut answers = store.read_many(&reads).await?.into_iter();
    fill(snap, vec![need], &mut answers)
}

/// The reads that answer `need`.
fn reads_of(need: &Need) -> Vec<Read> {
    match need {
        Need::Blocks(cidrs) => cidrs.iter().map(|c| Read::Get(Key::Block(*c))).collect(),
        Need::AllBlocks => vec![Read::List(ListFilter::Kind(Kind::Block))],
        Need::AffinitiesOf(node) => vec![Read::List(ListFilter::AffinitiesOf(node.clone()))],
        Need::AllAffinities => vec![Read::List(ListFilter::Kind(Kind::Affinity))],
        Need::Handles(ids) => ids
            .iter()
            .map(|h| Read::Get(Key::Handle(h.clone())))
            .collect(),
        Need::AllHandles => vec![Read::List(ListFilter::Kind(Kind::Handle))],
    }
}

type Answers = std::vec::IntoIter<Vec<Versioned<Object>>>;

fn next_answer(answers: &mut Answers) -> Result<Vec<Versioned<Object>>, StoreError> {
    answers.next().ok_or_else(|| StoreError::Corrupt {
        location: "read batch".into(),
        detail: "the store answered fewer reads than were made".into(),
    })
}

/// `obj` if it is of `kind`; a store that answers a read with another kind is corrupt.
fn of_kind(kind: Kind, obj: Object) -> Result<Object, StoreError> {
    if obj.kind() == kind {
        return Ok(obj);
    }
    Err(StoreError::Corrupt {
        location: obj.key().to_string(),
        detail: format!("holds a {:?} where a {kind:?} was read", obj.kind()),
    })
}

/// Puts the answers to `needs` (made in the order of [`reads_of`]) into `snap`.
fn fill(snap: &mut Snapshot, needs: Vec<Need>, answers: &mut Answers) -> Result<(), StoreError> {
    for need in needs {
        match need {
            Need::Blocks(cidrs) => {
                for c in cidrs {
                    snap.blocks.insert(c, None);
                    for b in next_answer(answers)? {
                        snap.put(of_kind(Kind::Block, b.value)?, b.revision);
                    }
                }
            }
            Need::AllBlocks => {
                snap.blocks.clear();
                for b in next_answer(answers)? {
                    snap.put(of_kind(Kind::Block, b.value)?, b.revision);
                }
                snap.all_blocks = true;
            }
            Need::AffinitiesOf(node) => {
                for a in next_answer(answers)? {
                    snap.put(of_kind(Kind::Affinity, a.value)?, a.revision);
                }
                snap.affinities_of.insert(node);
            }
            Need::AllAffinities => {
                snap.affinities.clear();
                for a in next_answer(answers)? {
                    snap.put(of_kind(Kind::Affinity, a.value)?, a.revision);
                }
                snap.all_affinities = true;
            }
            Need::Handles(ids) => {
                for id in ids {
                    snap.handles.insert(id, None);
                    for h in next_answer(answers)? {
                        snap.put(of_kind(Kind::Handle, h.value)?, h.revision);
                    }
                }
            }
            Need::AllHandles => {
                snap.handles.clear();
                for h in next_answer(answers)? {
                    snap.put(of_kind(Kind::Handle, h.value)?, h.revision);
                }
                snap.all_handles = true;
            }
        }
    }
    Ok(())
}
