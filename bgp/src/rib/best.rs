//! The best-path change stream the node agent turns into kernel routes: per destination
//! whose best path or multipath set changed, its new state, coalesced (a prefix that
//! changed ten times since the last drain is reported once, as it is now).

use super::family::FamilyRib;
use super::prefix::PrefixKey;
use super::{PeerId, Rib};
use crate::wire::attr::{NextHop, PathAttrs};
use ipnet::IpNet;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::Arc;

/// One path of a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedPath {
    pub peer: PeerId,
    /// The peer's address; `None` for locally originated routes.
    pub peer_address: Option<IpAddr>,
    pub path_id: u32,
    pub attrs: Arc<PathAttrs>,
}

/// The selected route of a destination: `paths[0]` is the best path, all of `paths` the
/// multipath (ECMP) set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestRoute {
    pub paths: SmallVec<[SelectedPath; 1]>,
}

impl BestRoute {
    pub fn best(&self) -> &SelectedPath {
        &self.paths[0]
    }

    /// Next hops of the multipath set, best first, without repeats.
    pub fn next_hops(&self) -> Vec<NextHop> {
        let mut out: Vec<NextHop> = Vec::with_capacity(self.paths.len());
        for nh in self.paths.iter().filter_map(|p| p.attrs.next_hop) {
            if !out.contains(&nh) {
                out.push(nh);
            }
        }
        out
    }

    pub fn is_local(&self) -> bool {
        self.best().peer == PeerId::LOCAL
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestChange {
    pub prefix: IpNet,
    /// `None`: no route any more.
    pub route: Option<BestRoute>,
}

fn drain_in<K: PrefixKey>(
    fam: &mut FamilyRib<K>,
    shared: &super::Shared,
    max: usize,
    out: &mut Vec<BestChange>,
) {
    while out.len() < max {
        let Some(id) = fam.best_dirty.pop_next() else {
            break;
        };
        let d = &fam.table.dests[id as usize];
        let route = (d.best_len > 0).then(|| BestRoute {
            paths: d
                .multipath()
                .iter()
                .map(|p| SelectedPath {
                    peer: p.peer(),
                    peer_address: (p.peer != 0)
                        .then(|| shared.peer(p.peer()).map(|s| s.info.address))
                        .flatten(),
                    path_id: p.path_id,
                    attrs: p.attrs.clone(),
                })
                .collect(),
        });
        out.push(BestChange {
            prefix: d.prefix.to_net(),
            route,
        });
        if d.paths.is_empty() {
            fam.maybe_release(id);
        }
    }
}

impl Rib {
    /// Every destination whose best path or multipath set changed since it was last
    /// reported, both families. Empty while deferring.
    pub fn drain_best_changes(&mut self) -> Vec<BestChange> {
        self.drain_best_changes_upto(usize::MAX)
    }

    /// As [`Rib::drain_best_changes`], at most `max` at a time: after a table load the
    /// node agent takes the changes in slices instead of one vector of a million.
    pub fn drain_best_changes_upto(&mut self, max: usize) -> Vec<BestChange> {
        let mut out = Vec::new();
        if self.shared.deferring {
            return out;
        }
        out.reserve(max.min(self.v4.best_dirty.len() + self.v6.best_dirty.len()));
        drain_in(&mut self.v4, &self.shared, max, &mut out);
        drain_in(&mut self.v6, &self.shared, max, &mut out);
        out
    }

    /// Whether best-path changes are waiting to be drained.
    pub fn best_changes_pending(&self) -> bool {
        !self.v4.best_dirty.is_empty() || !self.v6.best_dirty.is_empty()
    }
}
