//! Locally originated routes: the node agent announces its pod CIDR blocks (and anything
//! else it originates) through [`Rib::originate`]. They belong to the pseudo-peer
//! `PeerId::LOCAL`, win the decision over learned routes, skip import policy and loop
//! detection, and get our next hop at export when they carry none.

use super::family::PathOp;
use super::prefix::PrefixKey;
use super::{with_family, PeerId, Rib, RibError};
use crate::types::Family;
use crate::wire::attr::PathAttrs;
use ipnet::IpNet;

impl Rib {
    /// Announces `prefix` with `attrs` (usually ORIGIN IGP, an empty AS_PATH, no next hop,
    /// and whatever communities the operator configured). Replaces an earlier origination
    /// of the same prefix.
    pub fn originate(&mut self, prefix: IpNet, attrs: PathAttrs) -> Result<(), RibError> {
        let family = Family::of_prefix(&prefix);
        with_family!(self, family, |fam, shared| {
            let key =
                PrefixKey::from_net(&prefix).ok_or(RibError::WrongFamily { prefix, family })?;
            let id = fam
                .table
                .get_or_insert(key)
                .ok_or(RibError::TableFull(family))?;
            let attrs = shared.interner.intern(attrs);
            fam.set_path(
                shared,
                id,
                PeerId::LOCAL,
                0,
                PathOp::Set {
                    attrs,
                    filtered: false,
                },
            );
            Ok(())
        })
    }

    /// Stops originating `prefix`; returns whether it was.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Result<bool, RibError> {
        let family = Family::of_prefix(&prefix);
        with_family!(self, family, |fam, shared| {
            let key =
                PrefixKey::from_net(&prefix).ok_or(RibError::WrongFamily { prefix, family })?;
            let Some(id) = fam.table.find(key) else {
                return Ok(false);
            };
            Ok(fam.set_path(shared, id, PeerId::LOCAL, 0, PathOp::Remove))
        })
    }
}
