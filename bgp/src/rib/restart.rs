//! Graceful restart (RFC 4724) and enhanced route refresh (RFC 7313) on the receiving
//! side: a peer's routes are marked stale instead of removed, kept in use (forwarding is
//! preserved), and swept when the peer says it has sent everything again (End-of-RIB,
//! End-of-RIB-Refresh) or when the restart timer runs out.
//!
//! As the restarting speaker, the RIB can hold its best-path results (no export, no kernel
//! changes) until every peer has sent its table: see `RibConfig::defer_until_released`
//! and [`Rib::release_deferral`](super::Rib::release_deferral).

use super::family::FamilyRib;
use super::loc::pflag;
use super::prefix::PrefixKey;
use super::{with_family, PeerId, Rib, RibError, Shared};
use crate::types::Family;

fn mark_stale<K: PrefixKey>(fam: &mut FamilyRib<K>, shared: &mut Shared, peer: PeerId) -> usize {
    let peer16 = peer.0 as u16;
    let mut n = 0;
    for id in fam.table.ids().collect::<Vec<_>>() {
        for p in fam.table.dests[id as usize].paths.iter_mut() {
            if p.peer == peer16 && !p.stale() {
                p.set_flags(p.flags() | pflag::STALE);
                n += 1;
            }
        }
    }
    if let Some(ps) = shared.peer_mut(peer) {
        ps.counts[K::FAMILY.index()].stale += n as u32;
    }
    n
}

impl Rib {
    /// The session with `peer` went down. With `graceful` (the peer can restart
    /// gracefully, RFC 4724 §4.2), its routes in `families` (those it preserved forwarding
    /// for) are kept and marked stale; all its other routes are removed at once. Withdrawals
    /// and new best paths are queued for the other peers.
    pub fn peer_down(
        &mut self,
        peer: PeerId,
        graceful: bool,
        families: &[Family],
    ) -> Result<(), RibError> {
        if peer == PeerId::LOCAL {
            return Err(RibError::LocalPeer(peer));
        }
        let ps = self
            .shared
            .peer_mut(peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        ps.up = false;
        for family in Family::ALL {
            let keep = graceful && families.contains(&family);
            with_family!(self, family, |fam, shared| {
                if let Some(slot) = fam.adj_out.get_mut(peer.0 as usize) {
                    *slot = None;
                }
                if keep {
                    mark_stale(fam, shared, peer);
                } else {
                    fam.remove_paths_where(shared, peer, |_| true);
                }
                // Destinations waiting only for this peer's withdrawals can go.
                for id in fam.table.ids().collect::<Vec<_>>() {
                    fam.maybe_release(id);
                }
            });
        }
        Ok(())
    }

    /// Removes `peer`'s routes in `family` still marked stale; returns how many.
    pub fn sweep_stale(&mut self, peer: PeerId, family: Family) -> usize {
        with_family!(self, family, |fam, shared| fam.remove_paths_where(
            shared,
            peer,
            |p| p.stale()
        ))
    }

    /// `peer` sent End-of-RIB for `family` (RFC 4724 §4.2): its routes not re-announced
    /// since it came back are gone.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family) -> Result<usize, RibError> {
        self.shared.peer(peer).ok_or(RibError::UnknownPeer(peer))?;
        Ok(self.sweep_stale(peer, family))
    }

    /// The restart time (or the stale-routes time) for `peer` ran out: every stale route
    /// of it goes.
    pub fn stale_expired(&mut self, peer: PeerId) -> Result<usize, RibError> {
        self.shared.peer(peer).ok_or(RibError::UnknownPeer(peer))?;
        Ok(Family::ALL
            .into_iter()
            .map(|f| self.sweep_stale(peer, f))
            .sum())
    }

    /// `peer` announced the start of a refresh (RFC 7313 BoRR): its routes in `family`
    /// are stale until [`Rib::end_refresh`].
    pub fn begin_refresh(&mut self, peer: PeerId, family: Family) -> Result<usize, RibError> {
        self.shared.peer(peer).ok_or(RibError::UnknownPeer(peer))?;
        Ok(with_family!(self, family, |fam, shared| mark_stale(
            fam, shared, peer
        )))
    }

    /// `peer` ended the refresh (RFC 7313 EoRR): routes it did not re-send are removed.
    pub fn end_refresh(&mut self, peer: PeerId, family: Family) -> Result<usize, RibError> {
        self.end_of_rib(peer, family)
    }
}
