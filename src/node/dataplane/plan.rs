//! The difference between the routes serval wants and the routes the kernel has: pure,
//! so every case is a table test and `routes.rs` only performs what this returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// A route in the form both sides are compared in: what the kernel reports for one of
/// its routes, or what a desired target resolves to once device names are indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// `blackhole PREFIX`.
    Blackhole,
    /// One or more next hops (more than one is ECMP).
    Via(BTreeSet<Hop>),
    /// A route of serval's protocol in a shape serval never installs (e.g. `unreachable`,
    /// or a device route without gateway): always replaced when desired.
    Foreign,
}

/// One next hop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hop {
    /// Gateway address.
    pub gateway: IpAddr,
    /// Outgoing interface; `None` in a desired hop means "whichever the kernel picks".
    pub ifindex: Option<u32>,
    /// `RTNH_F_ONLINK`: the gateway is taken as on-link without a connected route.
    pub onlink: bool,
}

impl Installed {
    /// Whether the kernel's `actual` route already does what `self` (desired) asks.
    pub fn satisfied_by(&self, actual: &Installed) -> bool {
        match (self, actual) {
            (Installed::Blackhole, Installed::Blackhole) => true,
            (Installed::Via(want), Installed::Via(have)) => {
                want.len() == have.len()
                    && want.iter().all(|w| {
                        have.iter().any(|h| {
                            w.gateway == h.gateway
                                && w.onlink == h.onlink
                                && (w.ifindex.is_none() || w.ifindex == h.ifindex)
                        })
                    })
            }
            _ => false,
        }
    }
}

/// Another protocol's route sits at a prefix serval wants: serval leaves it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The prefix.
    pub prefix: IpNet,
    /// The protocol number of the route that is there.
    pub protocol: u8,
}

/// What a sync does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Desired, absent from the kernel: add (`NLM_F_EXCL`, so a route that appeared
    /// meanwhile is not overwritten).
    pub add: Vec<IpNet>,
    /// Serval's route is there but differs: replace in place.
    pub replace: Vec<IpNet>,
    /// Serval's route is there and not desired: delete.
    pub delete: Vec<IpNet>,
    /// Serval's route is there and right: left alone, so traffic does not flap.
    pub unchanged: usize,
    /// Desired, but another protocol's route holds the prefix.
    pub conflicts: Vec<Conflict>,
}

/// Compares the desired routes with serval's routes in the kernel (`ours`) and the
/// prefixes other protocols hold in the same table (`others`).
pub fn plan(
    desired: &BTreeMap<IpNet, Installed>,
    ours: &BTreeMap<IpNet, Installed>,
    others: &BTreeMap<IpNet, u8>,
) -> RoutePlan {
    let mut out = RoutePlan::default();
    for (prefix, want) in desired {
        match ours.get(prefix) {
            Some(have) if want.satisfied_by(have) => out.unchanged += 1,
            Some(_) => out.replace.push(*prefix),
            None => match others.get(prefix) {
                Some(protocol) => out.conflicts.push(Conflict {
                    prefix: *prefix,
                    protocol: *protocol,
                }),
                None => out.add.push(*prefix),
            },
        }
    }
    out.delete = ours
        .keys()
        .filter(|prefix| !desired.contains_key(prefix))
        .copied()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn via(hops: &[(&str, Option<u32>, bool)]) -> Installed {
        Installed::Via(
            hops.iter()
                .map(|(gw, ifindex, onlink)| Hop {
                    gateway: gw.parse().unwrap(),
                    ifindex: *ifindex,
                    onlink: *onlink,
                })
                .collect(),
        )
    }

    #[test]
    fn satisfied_by_table() {
        let cases = [
            (Installed::Blackhole, Installed::Blackhole, true),
            (
                Installed::Blackhole,
                via(&[("192.0.2.1", Some(2), false)]),
                false,
            ),
            (
                via(&[("192.0.2.1", None, false)]),
                via(&[("192.0.2.1", Some(2), false)]),
                true,
            ),
            (
                via(&[("192.0.2.1", Some(3), false)]),
                via(&[("192.0.2.1", Some(2), false)]),
                false,
            ),
            (
                via(&[("192.0.2.1", Some(2), true)]),
                via(&[("192.0.2.1", Some(2), false)]),
                false,
            ),
            (
                via(&[("192.0.2.1", None, false)]),
                via(&[("192.0.2.9", Some(2), false)]),
                false,
            ),
            (
                via(&[("192.0.2.1", None, false), ("192.0.2.2", None, false)]),
                via(&[("192.0.2.2", Some(2), false), ("192.0.2.1", Some(2), false)]),
                true,
            ),
            (
                via(&[("192.0.2.1", None, false), ("192.0.2.2", None, false)]),
                via(&[("192.0.2.1", Some(2), false)]),
                false,
            ),
            (
                via(&[("192.0.2.1", None, false)]),
                Installed::Foreign,
                false,
            ),
            (Installed::Blackhole, Installed::Foreign, false),
        ];
        for (i, (want, have, expected)) in cases.iter().enumerate() {
            assert_eq!(
                want.satisfied_by(have),
                *expected,
                "case {i}: {want:?} by {have:?}"
            );
        }
    }

    #[test]
    fn plan_adds_replaces_deletes_and_keeps() {
        let desired: BTreeMap<_, _> = [
            (net("10.0.0.0/26"), Installed::Blackhole),
            (net("10.0.1.0/26"), via(&[("192.0.2.1", None, false)])),
            (net("10.0.2.0/26"), via(&[("192.0.2.2", None, false)])),
            (net("10.0.3.0/26"), via(&[("192.0.2.3", None, false)])),
        ]
        .into();
        let ours: BTreeMap<_, _> = [
            (net("10.0.0.0/26"), Installed::Blackhole),
            (net("10.0.1.0/26"), via(&[("192.0.2.9", Some(2), false)])),
            (net("10.0.9.0/26"), Installed::Blackhole),
        ]
        .into();
        let others: BTreeMap<_, _> = [(net("10.0.3.0/26"), 4u8), (net("10.0.9.0/26"), 4u8)].into();
        let p = plan(&desired, &ours, &others);
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.replace, vec![net("10.0.1.0/26")]);
        assert_eq!(p.add, vec![net("10.0.2.0/26")]);
        assert_eq!(p.delete, vec![net("10.0.9.0/26")]);
        assert_eq!(
            p.conflicts,
            vec![Conflict {
                prefix: net("10.0.3.0/26"),
                protocol: 4
            }]
        );
    }

    #[test]
    fn empty_desired_deletes_everything_of_ours_only() {
        let ours: BTreeMap<_, _> = [(net("10.0.0.0/26"), Installed::Blackhole)].into();
        let others: BTreeMap<_, _> = [(net("10.0.5.0/26"), 186u8)].into();
        let p = plan(&BTreeMap::new(), &ours, &others);
        assert_eq!(p.delete, vec![net("10.0.0.0/26")]);
        assert!(p.add.is_empty() && p.replace.is_empty() && p.conflicts.is_empty());
    }

    #[test]
    fn ours_beside_another_protocol_at_the_same_prefix_is_still_managed() {
        let desired: BTreeMap<_, _> = [(net("10.0.0.0/26"), Installed::Blackhole)].into();
        let ours: BTreeMap<_, _> =
            [(net("10.0.0.0/26"), via(&[("192.0.2.1", Some(2), false)]))].into();
        let others: BTreeMap<_, _> = [(net("10.0.0.0/26"), 4u8)].into();
        let p = plan(&desired, &ours, &others);
        assert_eq!(p.replace, vec![net("10.0.0.0/26")]);
        assert!(p.conflicts.is_empty());
    }
}
