//! Read-only views for the status commands: per-peer counters, the Loc-RIB with every
//! path, which one is best and which are in the multipath set.

use super::family::FamilyRib;
use super::loc::Dest;
use super::prefix::PrefixKey;
use super::{PeerId, Rib};
use crate::types::Family;
use crate::wire::attr::PathAttrs;
use ipnet::IpNet;
use std::sync::Arc;

/// Counters of one peer in one family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Routes received and held (accepted + filtered).
    pub received: u32,
    /// Routes the import policy accepted.
    pub accepted: u32,
    /// Routes the import policy rejected (kept, not used).
    pub filtered: u32,
    /// Routes kept stale across a restart or refresh.
    pub stale: u32,
    /// Prefixes (paths, with add-path) currently advertised to the peer.
    pub sent: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathView {
    pub peer: PeerId,
    pub path_id: u32,
    pub attrs: Arc<PathAttrs>,
    pub best: bool,
    pub multipath: bool,
    pub stale: bool,
    pub filtered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteView {
    pub prefix: IpNet,
    /// Best first, then the rest of the multipath set, then the others.
    pub paths: Vec<PathView>,
}

fn view<K: PrefixKey>(d: &Dest<K>) -> RouteView {
    RouteView {
        prefix: d.prefix.to_net(),
        paths: d
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| PathView {
                peer: p.peer(),
                path_id: p.path_id,
                attrs: p.attrs.clone(),
                best: i == 0 && d.best_len > 0,
                multipath: i < usize::from(d.best_len),
                stale: p.stale(),
                filtered: p.filtered(),
            })
            .collect(),
    }
}

fn routes_in<K: PrefixKey>(fam: &FamilyRib<K>) -> impl Iterator<Item = RouteView> + '_ {
    fam.table
        .ids()
        .map(|id| &fam.table.dests[id as usize])
        .filter(|d| !d.paths.is_empty())
        .map(view)
}

fn lookup_in<K: PrefixKey>(fam: &FamilyRib<K>, prefix: &IpNet, longest: bool) -> Option<RouteView> {
    let key = K::from_net(prefix)?;
    let id = if longest {
        fam.table.longest_match(key)?
    } else {
        fam.table.find(key)?
    };
    let d = &fam.table.dests[id as usize];
    (!d.paths.is_empty()).then(|| view(d))
}

impl Rib {
    pub fn peer_counters(&self, peer: PeerId, family: Family) -> Option<PeerCounters> {
        let ps = self.shared.peer(peer)?;
        let c = ps.counts[family.index()];
        let sent = match family {
            Family::Ipv4Unicast => self.v4.adj_out.get(peer.0 as usize),
            Family::Ipv6Unicast => self.v6.adj_out.get(peer.0 as usize),
        }
        .and_then(Option::as_ref)
        .map_or(0, |a| a.sent);
        Some(PeerCounters {
            received: c.received,
            accepted: c.accepted,
            filtered: c.filtered,
            stale: c.stale,
            sent,
        })
    }

    /// Every destination of `family` that has at least one path.
    pub fn routes(&self, family: Family) -> Box<dyn Iterator<Item = RouteView> + '_> {
        match family {
            Family::Ipv4Unicast => Box::new(routes_in(&self.v4)),
            Family::Ipv6Unicast => Box::new(routes_in(&self.v6)),
        }
    }

    /// The destination `prefix` exactly.
    pub fn route(&self, prefix: &IpNet) -> Option<RouteView> {
        match prefix {
            IpNet::V4(_) => lookup_in(&self.v4, prefix, false),
            IpNet::V6(_) => lookup_in(&self.v6, prefix, false),
        }
    }

    /// The most specific destination with a usable route covering `prefix` (a host
    /// prefix for an address).
    pub fn longest_match(&self, prefix: &IpNet) -> Option<RouteView> {
        match prefix {
            IpNet::V4(_) => lookup_in(&self.v4, prefix, true),
            IpNet::V6(_) => lookup_in(&self.v6, prefix, true),
        }
    }

    /// Number of destinations of `family` with at least one path.
    pub fn len(&self, family: Family) -> usize {
        self.routes_count(family)
    }

    fn routes_count(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self
                .v4
                .table
                .ids()
                .filter(|&id| !self.v4.table.dests[id as usize].paths.is_empty())
                .count(),
            Family::Ipv6Unicast => self
                .v6
                .table
                .ids()
                .filter(|&id| !self.v6.table.dests[id as usize].paths.is_empty())
                .count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        Family::ALL.iter().all(|f| self.len(*f) == 0)
    }

    /// Destinations held, with or without paths (those without wait for their
    /// withdrawals to be drained).
    pub fn destinations(&self, family: Family) -> usize {
        match family {
            Family::Ipv4Unicast => self.v4.table.len(),
            Family::Ipv6Unicast => self.v6.table.len(),
        }
    }
}
