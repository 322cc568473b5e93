//! Adj-RIB-Out: per peer and family, what was advertised and what is to be reconsidered,
//! and the drain that turns the latter into UPDATE contents.
//!
//! The pending set is a bitset over destination ids, so a prefix that changes ten times
//! while the peer's socket is busy is looked at once, in its latest state (BIRD's bucket
//! behaviour). The drain runs the export rules and the export policy, caching the result
//! per (source attributes, source peer, policy outcome) so a table of a million prefixes
//! sharing fifty thousand attribute sets costs fifty thousand transforms, and groups the
//! prefixes by outgoing attribute set so the codec packs many into one UPDATE.

use super::bitset::BitSet;
use super::decision;
use super::export::{export_attrs, self_next_hop, ExportCtx};
use super::family::{candidate, FamilyRib};
use super::intern::Flat;
use super::loc::Path;
use super::prefix::PrefixKey;
use super::{with_family, PeerId, Rib, RibError, SessionInfo, Shared};
use crate::policy::{ActionEnv, Outcome, RouteCtx};
use crate::types::Family;
use crate::wire::attr::PathAttrs;
use crate::wire::update::Nlri;
use hashbrown::HashTable;
use rustc_hash::FxHashMap as HashMap;
use smallvec::SmallVec;
use std::hash::BuildHasher;
use std::sync::Arc;

/// What to send to a peer, in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutUpdate {
    pub family: Family,
    pub body: OutBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutBody {
    /// These prefixes with these attributes (`attrs.next_hop` is the next hop to encode,
    /// in NEXT_HOP or MP_REACH_NLRI as the family requires).
    Announce {
        attrs: Arc<PathAttrs>,
        nlri: Vec<Nlri>,
    },
    Withdraw {
        nlri: Vec<Nlri>,
    },
    /// RFC 4724 §2: the initial table has been sent.
    EndOfRib,
    /// The table asked for by a ROUTE-REFRESH has been sent: End-of-Route-Refresh
    /// (RFC 7313 §4) when enhanced route refresh was negotiated, else End-of-RIB or
    /// nothing, as the speaker prefers.
    EndOfRefresh,
}

/// A path sent to an add-path peer: our path id and the Loc-RIB attributes it was made
/// from (`None` to force a re-send after a refresh).
type SentPath = (u16, Option<Arc<PathAttrs>>);

pub(crate) struct AdjOut {
    /// Destinations advertised to the peer (single-path peers).
    pub advertised: BitSet,
    /// Destinations to reconsider.
    pub pending: BitSet,
    /// Paths per prefix to send (add-path send negotiated and configured above 1), else 1.
    pub add_path: u8,
    /// Add-path peers: what was sent, per destination.
    pub sent_paths: HashMap<u32, SmallVec<[SentPath; 2]>>,
    /// Send End-of-RIB once `pending` is empty.
    pub eor_pending: Option<EndMarker>,
    /// Prefixes (paths, for add-path) currently advertised.
    pub sent: u32,
    /// The peer's export policy rejects everything: nothing new is ever queued for it,
    /// only the withdrawal of what it was sent before (a route server's feeders, which
    /// would otherwise each walk the whole table only to send nothing).
    pub silent: bool,
}

impl AdjOut {
    pub fn new(add_path: u8, silent: bool) -> Self {
        AdjOut {
            advertised: BitSet::default(),
            pending: BitSet::default(),
            add_path: add_path.max(1),
            sent_paths: HashMap::default(),
            eor_pending: None,
            sent: 0,
            silent,
        }
    }

    pub fn has_sent(&self, id: u32) -> bool {
        self.advertised.contains(id) || self.sent_paths.contains_key(&id)
    }

    /// Whether a new best path of destination `id`, from peer `best_source` (`None`: no
    /// best path any more), may change what this peer (`me`) is sent. A path is never
    /// sent back to the peer it came from, and a silent peer gets nothing: for them only
    /// a prefix advertised before needs looking at (to be withdrawn or replaced).
    /// Add-path peers may be sent other paths than the best and always look.
    pub fn concerned(&self, me: usize, id: u32, best_source: Option<u16>) -> bool {
        self.add_path > 1
            || self.advertised.contains(id)
            || (!self.silent && best_source.is_some_and(|s| usize::from(s) != me))
    }

    pub fn heap_bytes(&self) -> usize {
        self.advertised.heap_bytes() + self.pending.heap_bytes() + self.sent_paths.capacity() * 48
    }
}

/// Which marker ends the current dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndMarker {
    EndOfRib,
    EndOfRefresh,
}

/// Per-drain state: the transform cache and the grouping of prefixes by outgoing
/// attributes.
struct Drain {
    family: Family,
    /// (source attributes, source peer, policy outcome when it depends on the prefix) →
    /// index of the group of its outgoing attributes in `announce`, or not exported.
    cache: HashMap<(usize, u16, Option<Outcome>), Option<usize>>,
    /// Outgoing attribute sets by content, so that different sources that come out equal
    /// (say, after next-hop-self) share one group.
    out_sets: HashTable<(u64, Arc<PathAttrs>)>,
    hasher: foldhash::fast::RandomState,
    /// Outgoing attributes pointer → index in `announce`.
    groups: HashMap<usize, usize>,
    announce: Vec<(Arc<PathAttrs>, Vec<Nlri>)>,
    withdraw: Vec<Nlri>,
}

impl Drain {
    fn new(family: Family) -> Self {
        Drain {
            family,
            cache: HashMap::default(),
            out_sets: HashTable::new(),
            hasher: Default::default(),
            groups: HashMap::default(),
            announce: Vec::new(),
            withdraw: Vec::new(),
        }
    }

    fn unify(&mut self, attrs: PathAttrs) -> Arc<PathAttrs> {
        let h = self.hasher.hash_one(Flat::of(&attrs));
        if let Some((_, a)) = self.out_sets.find(h, |(_, x)| **x == attrs) {
            return a.clone();
        }
        let a = Arc::new(attrs);
        self.out_sets.insert_unique(h, (h, a.clone()), |(h, _)| *h);
        a
    }

    /// The group (outgoing attributes) for `path` of `prefix` towards `target`, or `None`
    /// when it is not exported.
    fn transform(
        &mut self,
        shared: &Shared,
        target: PeerId,
        session: &SessionInfo,
        prefix: ipnet::IpNet,
        path: &Path,
    ) -> Option<usize> {
        let tps = shared.peer(target)?;
        let policy = &tps.export;
        // The cache key holds the source peer, so an outcome that depends on it is safe
        // to share.
        let learned_from = if path.peer() == PeerId::LOCAL {
            None
        } else {
            shared.peer(path.peer()).map(|s| s.info.address)
        };
        let outcome = if policy.prefix_dependent() {
            Some(policy.evaluate(&RouteCtx {
                prefix,
                attrs: &path.attrs,
                peer_address: Some(tps.info.address),
                learned_from,
            }))
        } else {
            None
        };
        let key = (Arc::as_ptr(&path.attrs) as usize, path.peer, outcome);
        if let Some(r) = self.cache.get(&key) {
            return *r;
        }
        let result = (|| {
            let source = shared.peer(path.peer())?;
            let ctx = ExportCtx {
                cfg: &shared.cfg,
                family: self.family,
                source_id: path.peer(),
                source,
                target_id: target,
                target: tps,
                session,
            };
            let mut out = export_attrs(&ctx, &path.attrs)?;
            let outcome = outcome.unwrap_or_else(|| {
                policy.evaluate(&RouteCtx {
                    prefix,
                    attrs: &path.attrs,
                    peer_address: Some(tps.info.address),
                    learned_from,
                })
            });
            let env = ActionEnv {
                local_as: tps.info.local_as,
                self_next_hop: self_next_hop(session, self.family),
            };
            policy.apply(outcome, &mut out, &env).then_some(out)
        })()
        .map(|out| self.group(out));
        self.cache.insert(key, result);
        result
    }

    fn group(&mut self, out: PathAttrs) -> usize {
        let attrs = self.unify(out);
        let key = Arc::as_ptr(&attrs) as usize;
        match self.groups.get(&key) {
            Some(&i) => i,
            None => {
                self.groups.insert(key, self.announce.len());
                self.announce.push((attrs, Vec::new()));
                self.announce.len() - 1
            }
        }
    }

    fn add(&mut self, group: usize, nlri: Nlri) {
        self.announce[group].1.push(nlri);
    }

    fn finish(self, eor: Option<EndMarker>) -> Vec<OutUpdate> {
        let family = self.family;
        let mut out = Vec::with_capacity(self.announce.len() + 2);
        if !self.withdraw.is_empty() {
            out.push(OutUpdate {
                family,
                body: OutBody::Withdraw {
                    nlri: self.withdraw,
                },
            });
        }
        out.extend(self.announce.into_iter().map(|(attrs, nlri)| OutUpdate {
            family,
            body: OutBody::Announce { attrs, nlri },
        }));
        if let Some(m) = eor {
            let body = match m {
                EndMarker::EndOfRib => OutBody::EndOfRib,
                EndMarker::EndOfRefresh => OutBody::EndOfRefresh,
            };
            out.push(OutUpdate { family, body });
        }
        out
    }
}

fn drain_in<K: PrefixKey>(
    fam: &mut FamilyRib<K>,
    shared: &Shared,
    peer: PeerId,
    budget: usize,
) -> Vec<OutUpdate> {
    let Some(session) = shared.peer(peer).and_then(|p| p.session.clone()) else {
        return Vec::new();
    };
    let Some(adj) = fam
        .adj_out
        .get_mut(peer.0 as usize)
        .and_then(Option::as_mut)
    else {
        return Vec::new();
    };
    let mut drain = Drain::new(K::FAMILY);
    let mut touched: Vec<u32> = Vec::new();
    let mut left = budget;
    while left > 0 {
        let Some(id) = adj.pending.pop_next() else {
            break;
        };
        let d = &fam.table.dests[id as usize];
        let prefix = d.prefix.to_net();
        if adj.add_path <= 1 {
            let out = d
                .best()
                .and_then(|p| drain.transform(shared, peer, &session, prefix, p));
            match out {
                Some(a) => {
                    if adj.advertised.insert(id) {
                        adj.sent += 1;
                    }
                    drain.add(a, Nlri::new(prefix));
                }
                None => {
                    if adj.advertised.remove(id) {
                        adj.sent -= 1;
                        drain.withdraw.push(Nlri::new(prefix));
                    }
                }
            }
            left -= 1;
        } else {
            // RFC 7911: the best `add_path` paths that may go to this peer, each under our
            // own path id.
            let cands: decision::CandStore = d
                .paths
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.filtered())
                .map(|(i, p)| candidate(shared, i, p))
                .collect();
            let ranked = decision::rank(&cands, &shared.cfg.decision());
            let mut now: SmallVec<[SentPath; 2]> = SmallVec::new();
            let before = adj.sent_paths.remove(&id).unwrap_or_default();
            for i in ranked {
                if now.len() >= usize::from(adj.add_path) {
                    break;
                }
                let p = &d.paths[i];
                let Some(a) = drain.transform(shared, peer, &session, prefix, p) else {
                    continue;
                };
                let unchanged = before.iter().any(|(lid, src)| {
                    *lid == p.local_id() && src.as_ref().is_some_and(|s| Arc::ptr_eq(s, &p.attrs))
                });
                if !unchanged {
                    drain.add(
                        a,
                        Nlri {
                            prefix,
                            path_id: u32::from(p.local_id()),
                        },
                    );
                }
                now.push((p.local_id(), Some(p.attrs.clone())));
            }
            for (lid, _) in &before {
                if !now.iter().any(|(l, _)| l == lid) {
                    drain.withdraw.push(Nlri {
                        prefix,
                        path_id: u32::from(*lid),
                    });
                }
            }
            adj.sent = adj.sent - before.len() as u32 + now.len() as u32;
            if !now.is_empty() {
                adj.sent_paths.insert(id, now);
            }
            left -= 1;
        }
        if d.paths.is_empty() {
            touched.push(id);
        }
    }
    let eor = if adj.pending.is_empty() {
        adj.eor_pending.take()
    } else {
        None
    };
    for id in touched {
        fam.maybe_release(id);
    }
    drain.finish(eor)
}

/// True for an export policy that rejects every route whatever its content.
pub(crate) fn exports_nothing(p: &crate::policy::Policy) -> bool {
    p.rules.is_empty() && p.default == crate::policy::Verdict::Reject
}

/// Queues every destination for `peer` and `marker` after them (an initial dump still
/// under way keeps its End-of-RIB).
fn requeue_all<K: PrefixKey>(fam: &mut FamilyRib<K>, peer: PeerId, marker: EndMarker) {
    let ids: Vec<u32> = fam.table.ids().collect();
    fam.export_queued.insert(peer.0);
    let Some(adj) = fam.adj_out_mut(peer) else {
        return;
    };
    for id in ids {
        if !adj.silent || adj.add_path > 1 || adj.advertised.contains(id) {
            adj.pending.insert(id);
        }
    }
    for sent in adj.sent_paths.values_mut() {
        for (_, src) in sent.iter_mut() {
            *src = None;
        }
    }
    if adj.eor_pending != Some(EndMarker::EndOfRib) {
        adj.eor_pending = Some(marker);
    }
}

impl Rib {
    /// The session with `peer` is established: its routes are accepted from now on, and
    /// the whole table for each negotiated family is queued for it, followed by
    /// End-of-RIB.
    pub fn peer_up(&mut self, peer: PeerId, session: SessionInfo) -> Result<(), RibError> {
        if peer == PeerId::LOCAL {
            return Err(RibError::LocalPeer(peer));
        }
        let ps = self
            .shared
            .peer_mut(peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        let add_path = [0, 1].map(|i| {
            if session.add_path_tx[i] {
                ps.info.add_path_send[i].max(1)
            } else {
                1
            }
        });
        let families = session.families;
        let silent = exports_nothing(&ps.info.export);
        ps.session = Some(session);
        ps.up = true;
        ps.max_prefix_signalled = [false; 2];
        for family in Family::ALL {
            let i = family.index();
            with_family!(self, family, |fam, _shared| {
                if fam.adj_out.len() <= peer.0 as usize {
                    fam.adj_out.resize_with(peer.0 as usize + 1, || None);
                }
                fam.adj_out[peer.0 as usize] =
                    families[i].then(|| AdjOut::new(add_path[i], silent));
                requeue_all(fam, peer, EndMarker::EndOfRib);
            });
        }
        Ok(())
    }

    /// Up to `budget` prefixes of what is to be sent to `peer` in `family`, grouped by
    /// attributes; an End-of-RIB marker ends the initial table and each refresh. Empty
    /// while deferring ([`RibConfig::defer_until_released`](super::RibConfig)).
    pub fn drain_export(&mut self, peer: PeerId, family: Family, budget: usize) -> Vec<OutUpdate> {
        if self.shared.deferring {
            return Vec::new();
        }
        with_family!(self, family, |fam, shared| drain_in(
            fam, shared, peer, budget
        ))
    }

    /// The peers that had something queued for them, either family, since the last call
    /// (a superset of those with something pending now: a peer drained since, or gone,
    /// may be among them). Empty while deferring: what accumulates is taken after.
    pub fn take_export_queued(&mut self) -> Vec<PeerId> {
        if self.shared.deferring {
            return Vec::new();
        }
        let mut out = Vec::new();
        for set in [&mut self.v4.export_queued, &mut self.v6.export_queued] {
            while let Some(i) = set.pop_next() {
                out.push(PeerId(i));
            }
        }
        out.sort_unstable_by_key(|p| p.0);
        out.dedup();
        out
    }

    /// Whether anything is queued for `peer` in `family`.
    pub fn export_pending(&self, peer: PeerId, family: Family) -> bool {
        let adj = match family {
            Family::Ipv4Unicast => self.v4.adj_out.get(peer.0 as usize),
            Family::Ipv6Unicast => self.v6.adj_out.get(peer.0 as usize),
        };
        adj.and_then(Option::as_ref)
            .is_some_and(|a| !a.pending.is_empty() || a.eor_pending.is_some())
    }

    /// The peer asked for the table again (RFC 2918 ROUTE-REFRESH): queue all of it,
    /// followed by [`OutBody::EndOfRefresh`]. With enhanced route refresh (RFC 7313 §4)
    /// the speaker sends BoRR when it calls this and EoRR at the marker.
    pub fn refresh_out(&mut self, peer: PeerId, family: Family) -> Result<(), RibError> {
        with_family!(self, family, |fam, _shared| {
            if fam.adj_out_mut(peer).is_none() {
                return Err(RibError::NotUp { peer, family });
            }
            requeue_all(fam, peer, EndMarker::EndOfRefresh);
            Ok(())
        })
    }
}
