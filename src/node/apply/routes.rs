//! serval's kernel routes: a wanted route set (after a snapshot change) or a difference
//! (after a batch of best paths) made true in the kernel, and the routes the kernel
//! refused or another protocol holds, for status.
//!
//! The route set itself is the [`Dataplane`]'s ([`RouteIo::wanted`]): the differences
//! are computed against it and applied to it, so the agent, the dataplane and this
//! applier never disagree about what is programmed.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::node::dataplane::{self, Dataplane, DesiredRoutes, RouteDiff, SyncReport};
use crate::node::desired;

/// How the route applier reaches the kernel; the route set lives behind it.
pub(crate) trait RouteIo {
    /// The routes last asked for.
    fn wanted(&self) -> &DesiredRoutes;
    /// Applies `diff` to the kernel and to [`RouteIo::wanted`].
    async fn apply_changes(&mut self, diff: &RouteDiff) -> Result<SyncReport, dataplane::Error>;
    /// Makes the kernel hold exactly [`RouteIo::wanted`].
    async fn resync(&mut self) -> Result<SyncReport, dataplane::Error>;
}

impl RouteIo for Dataplane {
    fn wanted(&self) -> &DesiredRoutes {
        Dataplane::wanted(self)
    }

    async fn apply_changes(&mut self, diff: &RouteDiff) -> Result<SyncReport, dataplane::Error> {
        Dataplane::apply_changes(self, diff).await.map(|r| r.routes)
    }

    async fn resync(&mut self) -> Result<SyncReport, dataplane::Error> {
        Dataplane::resync(self).await.map(|r| r.routes)
    }
}

/// The routes' errors, by prefix.
#[derive(Debug, Default)]
pub struct RouteApplier {
    errors: BTreeMap<IpNet, String>,
}

impl RouteApplier {
    /// Makes the kernel hold `want`: applies the difference from what was asked for
    /// last, and returns it (`None` when there was none, and nothing was done).
    pub(crate) async fn apply(
        &mut self,
        want: &DesiredRoutes,
        io: &mut impl RouteIo,
    ) -> Option<RouteDiff> {
        let diff = desired::route_diff(io.wanted(), want);
        self.apply_diff(&diff, io).await.then_some(diff)
    }

    /// Applies `diff`, the change at some prefixes; returns false, doing nothing, when
    /// it is empty. The route set takes the change even when the kernel refused it: the
    /// error is kept, and the periodic resync tries again.
    pub(crate) async fn apply_diff(&mut self, diff: &RouteDiff, io: &mut impl RouteIo) -> bool {
        if diff.upsert.is_empty() && diff.withdraw.is_empty() {
            return false;
        }
        debug!(
            upsert = diff.upsert.len(),
            withdraw = diff.withdraw.len(),
            "routes"
        );
        match io.apply_changes(diff).await {
            Ok(report) => {
                for p in diff.upsert.keys().chain(diff.withdraw.iter()) {
                    self.errors.remove(p);
                }
                self.record(&report);
            }
            Err(e) => {
                warn!(error = %e, "applying routes");
                for p in diff.upsert.keys() {
                    self.errors.insert(*p, e.to_string());
                }
            }
        }
        true
    }

    /// Makes the kernel's serval routes exactly the route set: removes stale ones,
    /// repairs drift, tries failed ones again.
    pub(crate) async fn resync(&mut self, io: &mut impl RouteIo) {
        match io.resync().await {
            Ok(report) => {
                if !report.deleted.is_empty() {
                    info!(removed = ?report.deleted, "stale routes removed");
                }
                self.errors.clear();
                self.record(&report);
            }
            Err(e) => warn!(error = %e, "full route sync"),
        }
    }

    fn record(&mut self, report: &SyncReport) {
        for f in &report.failures {
            warn!(prefix = %f.prefix, error = %f.error, "route");
            self.errors.insert(f.prefix, f.error.to_string());
        }
        for c in &report.conflicts {
            let why = format!(
                "another route (protocol {}) holds {}; serval leaves it alone",
                c.protocol, c.prefix
            );
            warn!(prefix = %c.prefix, protocol = c.protocol, "route conflict");
            self.errors.insert(c.prefix, why);
        }
    }

    /// The errors of the routes not in place, by prefix.
    pub fn errors(&self) -> &BTreeMap<IpNet, String> {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::dataplane::{Conflict, RouteFailure, RouteTarget};

    /// A kernel that refuses the prefixes in `refuse` and records every call.
    #[derive(Default)]
    struct Fake {
        wanted: DesiredRoutes,
        refuse: Vec<IpNet>,
        applied: Vec<RouteDiff>,
        resyncs: usize,
    }

    impl Fake {
        fn report(&self, prefixes: impl Iterator<Item = IpNet>) -> SyncReport {
            let mut r = SyncReport::default();
            for p in prefixes.filter(|p| self.refuse.contains(p)) {
                r.failures.push(RouteFailure {
                    prefix: p,
                    error: dataplane::Error::NoSuchDevice {
                        name: "vxlan.serval".into(),
                        purpose: "a route".into(),
                    },
                });
            }
            r
        }
    }

    impl RouteIo for Fake {
        fn wanted(&self) -> &DesiredRoutes {
            &self.wanted
        }
        async fn apply_changes(
            &mut self,
            diff: &RouteDiff,
        ) -> Result<SyncReport, dataplane::Error> {
            self.applied.push(diff.clone());
            self.wanted.apply(diff);
            Ok(self.report(diff.upsert.keys().copied()))
        }
        async fn resync(&mut self) -> Result<SyncReport, dataplane::Error> {
            self.resyncs += 1;
            Ok(self.report(self.wanted.routes.keys().copied()))
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn routes(r: &[(&str, &str)]) -> DesiredRoutes {
        DesiredRoutes {
            routes: r
                .iter()
                .map(|(p, gw)| (net(p), RouteTarget::direct(gw.parse().unwrap())))
                .collect(),
        }
    }

    #[tokio::test]
    async fn the_same_routes_twice_touch_the_kernel_once_a_change_only_its_difference() {
        let (mut a, mut io) = (RouteApplier::default(), Fake::default());
        let one = routes(&[("10.65.0.0/26", "192.0.2.2"), ("10.65.1.0/26", "192.0.2.3")]);
        assert!(a.apply(&one, &mut io).await.is_some());
        assert!(a.apply(&one, &mut io).await.is_none());
        assert_eq!(io.applied.len(), 1);
        let two = routes(&[("10.65.0.0/26", "192.0.2.9"), ("10.65.2.0/26", "192.0.2.4")]);
        let diff = a.apply(&two, &mut io).await.unwrap();
        assert_eq!(
            diff.upsert.keys().copied().collect::<Vec<_>>(),
            vec![net("10.65.0.0/26"), net("10.65.2.0/26")]
        );
        assert_eq!(diff.withdraw, [net("10.65.1.0/26")].into());
        assert_eq!(io.applied.len(), 2);
        assert_eq!(io.wanted, two, "the route set is the dataplane's");
    }

    #[tokio::test]
    async fn a_refused_route_is_an_error_until_a_resync_puts_it_in() {
        let mut a = RouteApplier::default();
        let mut io = Fake {
            refuse: vec![net("10.65.1.0/26")],
            ..Fake::default()
        };
        let want = routes(&[("10.65.0.0/26", "192.0.2.2"), ("10.65.1.0/26", "192.0.2.3")]);
        a.apply(&want, &mut io).await;
        assert_eq!(
            a.errors().keys().copied().collect::<Vec<_>>(),
            vec![net("10.65.1.0/26")]
        );
        // The route set holds it nonetheless: the resync tries it again.
        assert!(a.apply(&want, &mut io).await.is_none());
        io.refuse.clear();
        a.resync(&mut io).await;
        assert_eq!(io.resyncs, 1);
        assert!(a.errors().is_empty());
    }

    #[tokio::test]
    async fn a_conflict_names_the_other_protocol() {
        let mut a = RouteApplier::default();
        let mut report = SyncReport::default();
        report.conflicts.push(Conflict {
            prefix: net("10.65.0.0/26"),
            protocol: 186,
        });
        a.record(&report);
        assert!(a.errors()[&net("10.65.0.0/26")].contains("protocol 186"));
    }
}
