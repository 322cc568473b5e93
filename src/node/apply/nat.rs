//! serval's nftables tables: natOutgoing for the pools that ask for it, and the guard
//! that keeps pods off the node's BGP port and its peers' ports.
//!
//! A failure is an error of natOutgoing when a pool masquerades (a readiness problem:
//! pods cannot reach the outside), else of the guard alone (a reconcile problem: a
//! kernel without nftables still routes). Either is tried again at the periodic resync.

use std::net::SocketAddr;

use tracing::{error, warn};

use crate::node::dataplane::{BgpGuard, Dataplane, NatPool};
use crate::node::desired::Desired;

/// The wanted tables: the pools (sorted) and the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatWant {
    pub pools: Vec<NatPool>,
    pub guard: BgpGuard,
}

impl NatWant {
    /// What `d` asks of nftables.
    pub fn from_desired(d: &Desired) -> Self {
        let mut pools = d.nat.clone();
        pools.sort();
        let peers = d.peers.values().map(|p| SocketAddr::new(p.address, p.port));
        NatWant {
            pools,
            guard: BgpGuard::new(d.listen_port, peers),
        }
    }

    fn masquerades(&self) -> bool {
        self.pools.iter().any(|p| p.nat_outgoing)
    }
}

/// How the NAT applier reaches nftables.
pub(crate) trait NatIo {
    async fn sync(&mut self, want: &NatWant) -> Result<(), String>;
}

impl NatIo for &Dataplane {
    async fn sync(&mut self, want: &NatWant) -> Result<(), String> {
        self.sync_nat(&want.pools, &want.guard)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The tables last applied and what went wrong.
#[derive(Debug, Default)]
pub struct NatApplier {
    applied: Option<NatWant>,
    nat_error: Option<String>,
    guard_error: Option<String>,
}

impl NatApplier {
    /// Applies `want` unless it was the last value applied (whatever its outcome).
    pub(crate) async fn apply(&mut self, want: &NatWant, io: &mut impl NatIo) {
        if self.applied.as_ref() == Some(want) {
            return;
        }
        self.nat_error = None;
        self.guard_error = None;
        if let Err(e) = io.sync(want).await {
            if want.masquerades() {
                error!(error = %e, "natOutgoing");
                self.nat_error = Some(format!("natOutgoing: {e}"));
            } else {
                warn!(error = %e, "BGP guard");
                self.guard_error = Some(format!(
                    "pods are not kept off the BGP port and the peers' ports: {e}"
                ));
            }
        }
        self.applied = Some(want.clone());
    }

    /// natOutgoing's error: a dataplane (readiness) problem.
    pub fn nat_error(&self) -> Option<&String> {
        self.nat_error.as_ref()
    }

    /// The guard's error: a reconcile problem, not a readiness one.
    pub fn guard_error(&self) -> Option<&String> {
        self.guard_error.as_ref()
    }

    /// Whether the last apply failed.
    pub fn failed(&self) -> bool {
        self.nat_error.is_some() || self.guard_error.is_some()
    }

    /// Forgets what was applied, so the next [`NatApplier::apply`] applies again.
    pub fn forget(&mut self) {
        self.applied = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        synced: Vec<NatWant>,
        fail: bool,
    }

    impl NatIo for Fake {
        async fn sync(&mut self, want: &NatWant) -> Result<(), String> {
            self.synced.push(want.clone());
            if self.fail {
                Err("nft missing".into())
            } else {
                Ok(())
            }
        }
    }

    fn want(nat_outgoing: bool, port: u16) -> NatWant {
        NatWant {
            pools: vec![NatPool {
                cidr: "10.65.0.0/16".parse().unwrap(),
                nat_outgoing,
            }],
            guard: BgpGuard::new(port, []),
        }
    }

    #[tokio::test]
    async fn same_tables_twice_are_written_once_a_change_again() {
        let (mut a, mut io) = (NatApplier::default(), Fake::default());
        a.apply(&want(true, 179), &mut io).await;
        a.apply(&want(true, 179), &mut io).await;
        assert_eq!(io.synced.len(), 1);
        a.apply(&want(true, 1179), &mut io).await;
        assert_eq!(io.synced, vec![want(true, 179), want(true, 1179)]);
        assert!(!a.failed());
    }

    #[tokio::test]
    async fn a_failure_names_natoutgoing_or_the_guard_and_is_retried_once_forgotten() {
        let mut a = NatApplier::default();
        let mut io = Fake {
            fail: true,
            ..Fake::default()
        };
        a.apply(&want(true, 179), &mut io).await;
        assert_eq!(
            a.nat_error().map(String::as_str),
            Some("natOutgoing: nft missing")
        );
        assert!(a.guard_error().is_none());
        a.apply(&want(true, 179), &mut io).await;
        assert_eq!(io.synced.len(), 1, "not retried at every reconcile");
        a.forget();
        a.apply(&want(false, 179), &mut io).await;
        assert_eq!(io.synced.len(), 2);
        assert!(a.nat_error().is_none());
        assert!(a.guard_error().is_some_and(|e| e.contains("nft missing")));
        io.fail = false;
        a.forget();
        a.apply(&want(false, 179), &mut io).await;
        assert!(!a.failed());
    }
}
