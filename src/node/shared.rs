//! What the agent loop publishes for the status socket, the health endpoints and the
//! metrics: a snapshot behind a mutex that is never held across an `.await`, and the
//! speaker handle, asked for live peer state at query time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bgp::speaker::Speaker;
use bgp::status::PeerStatus;
use ipnet::IpNet;

use crate::node::dataplane::DesiredRoutes;
use crate::node::desired::PeerType;
use crate::node::health::{readiness, HealthInput};
use crate::node::metrics::{Metrics, ScrapeInput};
use crate::node::status::{peer_rows, route_row, NodeStatus};

use super::index::PoolUsage;

/// The published state.
#[derive(Default)]
pub struct Published {
    /// Everything but peers and routes, which are filled in at query time.
    pub status: NodeStatus,
    pub peer_types: BTreeMap<IpAddr, PeerType>,
    pub speaker: Option<Speaker>,
    /// The routes serval asked the kernel for, and the errors of those it refused.
    pub routes: DesiredRoutes,
    pub route_errors: BTreeMap<IpNet, String>,
    /// Each local subnet with the interface it is on, to name a direct route's device.
    pub subnets: Vec<(IpNet, String)>,
    pub usage: BTreeMap<String, PoolUsage>,
    /// What readiness depends on.
    pub health: HealthInput,
    /// When the agent loop last turned.
    pub last_turn: Option<Instant>,
    /// What the LoadBalancer allocator could not do, while this node runs it.
    pub load_balancer_problems: Vec<String>,
}

/// Shared between the agent loop and its servers.
#[derive(Default)]
pub struct Shared {
    inner: Mutex<Published>,
    pub metrics: Metrics,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Shared::default())
    }

    /// The published state, for a short synchronous update or read.
    pub fn lock(&self) -> MutexGuard<'_, Published> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running speaker, if any.
    pub fn speaker(&self) -> Option<Speaker> {
        self.lock().speaker.clone()
    }

    /// The speaker's peers, empty when it is not running.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        match self.speaker() {
            Some(s) => s.peers().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The text of a metrics scrape.
    pub async fn scrape(&self) -> String {
        let peers = self.peers().await;
        let input = {
            let p = self.lock();
            let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
            for (prefix, t) in &p.routes.routes {
                let row = route_row(*prefix, t, &|_| None, None);
                *by_kind.entry(row.kind).or_default() += 1;
            }
            ScrapeInput {
                peers: peer_rows(&peers, &p.peer_types),
                routes_by_kind: by_kind,
                route_errors: p.route_errors.len() as u64,
                usage: p
                    .usage
                    .iter()
                    .map(|(k, u)| (k.clone(), (u.blocks, u.addresses_used)))
                    .collect(),
                ready: readiness(&p.health).is_ok(),
                datastore_up: p.health.datastore_ok,
            }
        };
        crate::node::metrics::render(&self.metrics, &input)
    }

    /// The full status; `with_routes`: list every route (the count is always there).
    pub async fn status(&self, with_routes: bool) -> NodeStatus {
        let peers = self.peers().await;
        let p = self.lock();
        let mut s = p.status.clone();
        s.ready = readiness(&p.health).is_ok();
        s.datastore_ok = p.health.datastore_ok;
        s.problems.extend(p.load_balancer_problems.iter().cloned());
        if let Err(why) = readiness(&p.health) {
            for w in why {
                if !s.problems.contains(&w) {
                    s.problems.push(w);
                }
            }
        }
        s.peers = peer_rows(&peers, &p.peer_types);
        s.routes_programmed = p.routes.routes.len();
        if with_routes {
            let dev = |ip: IpAddr| {
                p.subnets
                    .iter()
                    .find(|(n, _)| n.contains(&ip))
                    .map(|(_, d)| d.clone())
            };
            s.routes = p
                .routes
                .routes
                .iter()
                .map(|(prefix, t)| route_row(*prefix, t, &dev, p.route_errors.get(prefix).cloned()))
                .collect();
        }
        s
    }
}
