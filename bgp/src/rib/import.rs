//! Import: what an UPDATE from a peer does to the Loc-RIB. Loop detection (RFC 4271 §9.1.2
//! for eBGP, RFC 4456 §8 for route reflection), the peer's import policy (rejected routes
//! are kept flagged "filtered"), interning, and the maximum-prefix limit (RFC 4486 §4).

use super::family::{FamilyRib, PathOp};
use super::prefix::PrefixKey;
use super::{with_family, PeerId, PeerState, Rib, RibError, Shared};
use crate::policy::{ActionEnv, Outcome, RouteCtx};
use crate::types::{Afi, Family, Safi};
use crate::wire::attr::{NextHop, PathAttrs};
use crate::wire::update::{Nlri, Update};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// A peer went over its maximum-prefix limit. Unless `warn_only`, the speaker closes the
/// session with Cease / Maximum Number of Prefixes Reached, data from
/// [`MaxPrefixExceeded::notification_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPrefixExceeded {
    pub family: Family,
    pub limit: u32,
    pub count: u32,
    pub warn_only: bool,
}

impl MaxPrefixExceeded {
    /// RFC 4486 §4: AFI (2 octets), SAFI (1 octet), upper bound (4 octets).
    pub fn notification_data(&self) -> [u8; 7] {
        let fs = self.family.afi_safi();
        let mut d = [0u8; 7];
        d[0..2].copy_from_slice(&fs.afi.0.to_be_bytes());
        d[2] = fs.safi.0;
        d[3..7].copy_from_slice(&self.limit.to_be_bytes());
        d
    }

    pub fn afi(&self) -> Afi {
        self.family.afi_safi().afi
    }

    pub fn safi(&self) -> Safi {
        self.family.afi_safi().safi
    }
}

/// What one UPDATE did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Prefixes announced and accepted.
    pub accepted: usize,
    /// Prefixes announced and rejected by the import policy (kept as filtered).
    pub filtered: usize,
    /// Prefixes announced whose AS_PATH, ORIGINATOR_ID or CLUSTER_LIST shows a loop,
    /// treated as withdrawn.
    pub looped: usize,
    pub withdrawn: usize,
    /// End-of-RIB markers the UPDATE carried (RFC 4724 §2); stale routes of that family
    /// have been swept.
    pub end_of_rib: Vec<Family>,
    pub max_prefix: Option<MaxPrefixExceeded>,
}

/// True when the route must be treated as withdrawn because it looped back to us.
pub(crate) fn is_loop(
    peer: &PeerState,
    attrs: &PathAttrs,
    router_id: std::net::Ipv4Addr,
    cluster_id: std::net::Ipv4Addr,
) -> bool {
    let info = &peer.info;
    if info.is_ebgp() {
        // RFC 4271 §9.1.2: our own AS in the path; `allowas-in` tolerates that many.
        let ours = attrs
            .as_path
            .segments
            .iter()
            .flat_map(|s| s.asns.iter())
            .filter(|a| **a == info.local_as)
            .count();
        ours > usize::from(info.allowas_in)
    } else {
        // RFC 4456 §8.
        attrs.originator_id == Some(router_id) || attrs.cluster_list.contains(&cluster_id)
    }
}

fn check_max_prefix(
    shared: &mut Shared,
    peer: PeerId,
    family: Family,
) -> Option<MaxPrefixExceeded> {
    let ps = shared.peer_mut(peer)?;
    let mp = ps.info.max_prefix[family.index()]?;
    let c = ps.counts[family.index()];
    let count = if mp.count_received {
        c.received
    } else {
        c.accepted
    };
    if count <= mp.limit || ps.max_prefix_signalled[family.index()] {
        return None;
    }
    ps.max_prefix_signalled[family.index()] = true;
    Some(MaxPrefixExceeded {
        family,
        limit: mp.limit,
        count,
        warn_only: mp.warn_only,
    })
}

/// NLRI are worked on in batches of this many: first their index slots are fetched
/// together, so that the cache misses of a table load overlap.
const BATCH: usize = 32;

fn keys_of<K: PrefixKey>(nlri: &[Nlri]) -> Result<SmallVec<[K; BATCH]>, RibError> {
    nlri.iter()
        .map(|n| {
            K::from_net(&n.prefix).ok_or(RibError::WrongFamily {
                prefix: n.prefix,
                family: K::FAMILY,
            })
        })
        .collect()
}

fn announce_in<K: PrefixKey>(
    fam: &mut FamilyRib<K>,
    shared: &mut Shared,
    peer: PeerId,
    attrs: PathAttrs,
    nlri: &[Nlri],
    report: &mut ImportReport,
) -> Result<(), RibError> {
    let family = K::FAMILY;
    let ps = shared.peer(peer).ok_or(RibError::UnknownPeer(peer))?;
    let (router_id, cluster_id) = (shared.cfg.router_id.0, shared.cfg.cluster_id());
    if is_loop(ps, &attrs, router_id, cluster_id) {
        report.looped += nlri.len();
        let mut ignored = ImportReport::default();
        return withdraw_in(fam, shared, peer, nlri, &mut ignored);
    }
    let accept_all = ps.import.is_accept_all();
    let prefix_dependent = ps.import.prefix_dependent();
    let address = ps.info.address;
    let env = ActionEnv {
        local_as: ps.info.local_as,
        self_next_hop: Some(peer_next_hop(ps)),
    };
    let mut attrs = attrs;
    if ps.info.is_ebgp() {
        // RFC 4271 §5.1.5 and RFC 4456 §8: not to be taken from an external peer (the
        // codec discards them too, RFC 7606 §7.5, §7.9, §7.10).
        attrs.local_pref = None;
        attrs.originator_id = None;
        attrs.cluster_list.clear();
    }
    let received = shared.interner.intern(attrs);
    // Per policy outcome, the attributes it produces (accepted) or `None` (filtered).
    let mut by_outcome: HashMap<Outcome, Option<Arc<PathAttrs>>> = HashMap::new();
    // The result for every prefix, once known not to depend on the prefix.
    let mut fixed: Option<Option<Arc<PathAttrs>>> = accept_all.then(|| Some(received.clone()));
    for chunk in nlri.chunks(BATCH) {
        let keys = keys_of::<K>(chunk)?;
        fam.table.touch(&keys);
        for (n, &prefix) in chunk.iter().zip(&keys) {
            let result = match &fixed {
                Some(r) => r.clone(),
                None => {
                    let Some(ps) = shared.peer(peer) else {
                        return Err(RibError::UnknownPeer(peer));
                    };
                    let outcome = ps.import.evaluate(&RouteCtx {
                        prefix: n.prefix,
                        attrs: &received,
                        peer_address: Some(address),
                        learned_from: Some(address),
                    });
                    let r = match by_outcome.get(&outcome) {
                        Some(r) => r.clone(),
                        None => {
                            let mut out = (*received).clone();
                            let r = if ps.import.apply(outcome, &mut out, &env) {
                                Some(shared.interner.intern(out))
                            } else {
                                None
                            };
                            by_outcome.insert(outcome, r.clone());
                            r
                        }
                    };
                    if !prefix_dependent {
                        fixed = Some(r.clone());
                    }
                    r
                }
            };
            let id = fam
                .table
                .get_or_insert(prefix)
                .ok_or(RibError::TableFull(family))?;
            let op = match result {
                Some(a) => {
                    report.accepted += 1;
                    PathOp::Set {
                        attrs: a,
                        filtered: false,
                    }
                }
                None => {
                    report.filtered += 1;
                    PathOp::Set {
                        attrs: received.clone(),
                        filtered: true,
                    }
                }
            };
            fam.set_path(shared, id, peer, n.path_id, op);
        }
    }
    for a in fixed
        .into_iter()
        .flatten()
        .chain(by_outcome.into_values().flatten())
    {
        shared.interner.release(a);
    }
    shared.interner.release(received);
    Ok(())
}

fn withdraw_in<K: PrefixKey>(
    fam: &mut FamilyRib<K>,
    shared: &mut Shared,
    peer: PeerId,
    nlri: &[Nlri],
    report: &mut ImportReport,
) -> Result<(), RibError> {
    for chunk in nlri.chunks(BATCH) {
        let keys = keys_of::<K>(chunk)?;
        fam.table.touch(&keys);
        let ids: SmallVec<[Option<u32>; BATCH]> = keys.iter().map(|k| fam.table.find(*k)).collect();
        for (n, id) in chunk.iter().zip(ids) {
            let Some(id) = id else { continue };
            if fam.set_path(shared, id, peer, n.path_id, PathOp::Remove) {
                report.withdrawn += 1;
            }
        }
    }
    Ok(())
}

impl Rib {
    fn check_up(&self, peer: PeerId, family: Family) -> Result<(), RibError> {
        let ps = self.shared.peer(peer).ok_or(RibError::UnknownPeer(peer))?;
        let negotiated = ps
            .session
            .as_ref()
            .is_some_and(|s| s.families[family.index()]);
        if peer == PeerId::LOCAL || !ps.up || !negotiated {
            return Err(RibError::NotUp { peer, family });
        }
        Ok(())
    }

    /// Routes announced by `peer` in `family` with `attrs` (whose `next_hop` is the
    /// routes' next hop, whichever attribute carried it).
    pub fn announce(
        &mut self,
        peer: PeerId,
        family: Family,
        attrs: PathAttrs,
        nlri: &[Nlri],
    ) -> Result<ImportReport, RibError> {
        self.check_up(peer, family)?;
        let mut report = ImportReport::default();
        with_family!(self, family, |fam, shared| announce_in(
            fam,
            shared,
            peer,
            attrs,
            nlri,
            &mut report
        ))?;
        report.max_prefix = check_max_prefix(&mut self.shared, peer, family);
        Ok(report)
    }

    /// Routes withdrawn by `peer` in `family`. Unknown routes are ignored.
    pub fn withdraw(
        &mut self,
        peer: PeerId,
        family: Family,
        nlri: &[Nlri],
    ) -> Result<ImportReport, RibError> {
        self.check_up(peer, family)?;
        let mut report = ImportReport::default();
        with_family!(self, family, |fam, shared| withdraw_in(
            fam,
            shared,
            peer,
            nlri,
            &mut report
        ))?;
        Ok(report)
    }

    /// Everything a decoded UPDATE from `peer` says: IPv4 withdrawals and NLRI in the
    /// message body, MP_UNREACH_NLRI and MP_REACH_NLRI (RFC 4760), End-of-RIB markers
    /// (RFC 4724 §2), which also sweep the peer's stale routes of that family.
    pub fn apply_update(
        &mut self,
        peer: PeerId,
        update: &Update,
    ) -> Result<ImportReport, RibError> {
        let mut report = ImportReport::default();
        let v4 = Family::Ipv4Unicast;
        let merge = |report: &mut ImportReport, r: ImportReport| {
            report.accepted += r.accepted;
            report.filtered += r.filtered;
            report.looped += r.looped;
            report.withdrawn += r.withdrawn;
            report.end_of_rib.extend(r.end_of_rib);
            if report.max_prefix.is_none() {
                report.max_prefix = r.max_prefix;
            }
        };
        if update.attrs.is_none()
            && update.withdrawn.is_empty()
            && update.nlri.is_empty()
            && update.mp_reach.is_none()
        {
            match &update.mp_unreach {
                None => {
                    self.end_of_rib(peer, v4)?;
                    report.end_of_rib.push(v4);
                    return Ok(report);
                }
                Some(u) if u.withdrawn.is_empty() => {
                    if let Some(f) = u.afi_safi.family() {
                        self.end_of_rib(peer, f)?;
                        report.end_of_rib.push(f);
                    }
                    return Ok(report);
                }
                Some(_) => {}
            }
        }
        if !update.withdrawn.is_empty() {
            let r = self.withdraw(peer, v4, &update.withdrawn)?;
            merge(&mut report, r);
        }
        if let Some(u) = &update.mp_unreach {
            if let Some(f) = u.afi_safi.family() {
                let r = self.withdraw(peer, f, &u.withdrawn)?;
                merge(&mut report, r);
            }
        }
        if let Some(attrs) = &update.attrs {
            if !update.nlri.is_empty() {
                let r = self.announce(peer, v4, attrs.clone(), &update.nlri)?;
                merge(&mut report, r);
            }
            if let Some(m) = &update.mp_reach {
                if let Some(f) = m.afi_safi.family() {
                    let mut a = attrs.clone();
                    a.next_hop = Some(m.next_hop);
                    let r = self.announce(peer, f, a, &m.nlri)?;
                    merge(&mut report, r);
                }
            }
        }
        Ok(report)
    }
}

/// What `next-hop-self` means in an import policy: the peer's own address (overriding a
/// third-party next hop it sent).
fn peer_next_hop(ps: &PeerState) -> NextHop {
    match ps.info.address {
        std::net::IpAddr::V4(a) => NextHop::V4(a),
        std::net::IpAddr::V6(a) => NextHop::V6 {
            global: a,
            link_local: None,
        },
    }
}
