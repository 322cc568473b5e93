//! UPDATE message (RFC 4271 §4.3) with multiprotocol reachability (RFC 4760), add-path
//! NLRI (RFC 7911), End-of-RIB (RFC 4724 §2) and the revised error handling of RFC 7606.

use crate::types::{AfiSafi, Family};
use crate::wire::attr::{self, code, NextHop, PathAttrs};
use crate::wire::error::{AttrAction, AttrError, AttrFault, EncodeError, UpdateError};
use crate::wire::mp;
use crate::wire::nlri::{decode_prefixes, encode_prefix};
use crate::wire::parse;
use crate::wire::CodecParams;
use bytes::{BufMut, BytesMut};
use ipnet::IpNet;

/// One NLRI entry: a prefix and, where add-path is negotiated for its family in the
/// direction it travels, its path identifier (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    pub prefix: IpNet,
    pub path_id: u32,
}

impl Nlri {
    pub fn new(prefix: IpNet) -> Self {
        Nlri { prefix, path_id: 0 }
    }

    pub fn with_path_id(prefix: IpNet, path_id: u32) -> Self {
        Nlri { prefix, path_id }
    }
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    pub afi_safi: AfiSafi,
    pub next_hop: NextHop,
    pub nlri: Vec<Nlri>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4). An empty list for a family is its End-of-RIB
/// (RFC 4724 §2).
///
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Withdrawn Routes (variable)                             |
/// +---------------------------------------------------------+
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi_safi: AfiSafi,
    pub withdrawn: Vec<Nlri>,
}

/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
///
/// `withdrawn` and `nlri` are the IPv4 unicast fields of the message body; other families
/// travel in `mp_reach` / `mp_unreach`. `attrs` is `None` when the message carried no
/// path attributes other than MP_UNREACH_NLRI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Nlri>,
    pub attrs: Option<PathAttrs>,
    pub nlri: Vec<Nlri>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
}

/// An UPDATE as decoded and the RFC 7606 errors that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedUpdate {
    /// `None` when treat-as-withdraw left nothing to withdraw.
    pub update: Option<Update>,
    pub errors: Vec<AttrError>,
}

impl DecodedUpdate {
    /// True when the UPDATE's routes were turned into withdrawals (RFC 7606 §2).
    pub fn treated_as_withdraw(&self) -> bool {
        self.errors.iter().any(|e| e.action == AttrAction::Withdraw)
    }
}

impl Update {
    /// The End-of-RIB marker of a family (RFC 4724 §2): an empty UPDATE for IPv4 unicast,
    /// an MP_UNREACH_NLRI without withdrawals otherwise.
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            Family::Ipv6Unicast => Update {
                mp_unreach: Some(MpUnreach {
                    afi_safi: family.afi_safi(),
                    withdrawn: Vec::new(),
                }),
                ..Update::default()
            },
        }
    }

    /// The family whose End-of-RIB this is, if it is one (RFC 4724 §2).
    pub fn is_end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty()
            || !self.nlri.is_empty()
            || self.attrs.is_some()
            || self.mp_reach.is_some()
        {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() => u.afi_safi.family(),
            Some(_) => None,
        }
    }

    /// Decode the message body (after the 19-octet header), applying RFC 7606.
    pub fn decode(body: &[u8], params: &CodecParams) -> Result<DecodedUpdate, UpdateError> {
        let v4 = Family::Ipv4Unicast;
        // RFC 7606 §4: inconsistent Withdrawn Routes / Total Path Attribute Lengths leave
        // no way to find the NLRI: the session is reset (RFC 4271 §6.3).
        let (rest, wlen) = parse::u16(body).map_err(|_| UpdateError::WithdrawnLength(0))?;
        let (rest, wfield) =
            parse::take(rest, usize::from(wlen)).map_err(|_| UpdateError::WithdrawnLength(wlen))?;
        let (rest, alen) = parse::u16(rest).map_err(|_| UpdateError::WithdrawnLength(wlen))?;
        let (nlri_field, afield) = parse::take(rest, usize::from(alen))
            .map_err(|_| UpdateError::AttributesLength(alen))?;

        let mut withdrawn = Vec::new();
        decode_prefixes(wfield, v4, params.add_path_rx[v4.index()], &mut withdrawn)
            .map_err(UpdateError::Withdrawn)?;
        let mut decoded = attr::decode_attributes(afield, params)?;
        let mut nlri = Vec::new();
        decode_prefixes(nlri_field, v4, params.add_path_rx[v4.index()], &mut nlri)
            .map_err(UpdateError::Nlri)?;

        // RFC 7606 §3 (d): well-known mandatory attributes, required when there is
        // something to reach; NEXT_HOP only for the NLRI field (RFC 4760 §3); LOCAL_PREF
        // on internal sessions (RFC 4271 §5.1.5).
        let mp_nlri = decoded
            .mp_reach
            .as_ref()
            .is_some_and(|r| !r.nlri.is_empty());
        if !nlri.is_empty() || mp_nlri {
            let mut required: [(u8, bool); 4] = [
                (code::ORIGIN, true),
                (code::AS_PATH, true),
                (code::NEXT_HOP, !nlri.is_empty()),
                (code::LOCAL_PREF, !params.ebgp),
            ];
            for (c, needed) in required.iter_mut() {
                if *needed && !decoded.seen.contains(*c) {
                    decoded
                        .errors
                        .push(AttrError::new(*c, AttrFault::Missing, &[]));
                }
            }
        }

        let attrs = decoded.any.then_some(decoded.attrs);
        let update = Update {
            withdrawn,
            attrs,
            nlri,
            mp_reach: decoded.mp_reach,
            mp_unreach: decoded.mp_unreach,
        };
        let withdraw = decoded
            .errors
            .iter()
            .any(|e| e.action == AttrAction::Withdraw);
        if withdraw {
            let nothing = update.nlri.is_empty()
                && update.withdrawn.is_empty()
                && update.mp_reach.as_ref().is_none_or(|r| r.nlri.is_empty())
                && update
                    .mp_unreach
                    .as_ref()
                    .is_none_or(|u| u.withdrawn.is_empty());
            let update = (!nothing).then(|| update.into_withdraw());
            return Ok(DecodedUpdate {
                update,
                errors: decoded.errors,
            });
        }
        // Discarded attributes were never stored: each is set only once decoded whole.
        Ok(DecodedUpdate {
            update: Some(update),
            errors: decoded.errors,
        })
    }

    /// RFC 7606 §2 treat-as-withdraw: every route this UPDATE carries becomes a
    /// withdrawal: IPv4 into `withdrawn`, IPv6 into `mp_unreach`; no attributes.
    pub fn into_withdraw(self) -> Update {
        let mut v4 = self.withdrawn;
        let mut v6 = Vec::new();
        let mut add = |n: Nlri| match n.prefix {
            IpNet::V4(_) => v4.push(n),
            IpNet::V6(_) => v6.push(n),
        };
        self.nlri.into_iter().for_each(&mut add);
        if let Some(r) = self.mp_reach {
            r.nlri.into_iter().for_each(&mut add);
        }
        if let Some(u) = self.mp_unreach {
            u.withdrawn.into_iter().for_each(&mut add);
        }
        let mp_unreach = (!v6.is_empty()).then(|| MpUnreach {
            afi_safi: Family::Ipv6Unicast.afi_safi(),
            withdrawn: v6,
        });
        Update {
            withdrawn: v4,
            attrs: None,
            nlri: Vec::new(),
            mp_reach: None,
            mp_unreach,
        }
    }

    /// Write the message body. MP_REACH_NLRI and MP_UNREACH_NLRI come first (RFC 7606
    /// §5.1), the other attributes after them in type code order.
    pub fn encode(&self, params: &CodecParams, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v4 = Family::Ipv4Unicast;
        let add_path = params.add_path_tx[v4.index()];
        let start = out.len();
        out.put_u16(0);
        for n in &self.withdrawn {
            check_v4(n)?;
            encode_prefix(out, n, add_path);
        }
        let wlen = out.len() - start - 2;
        patch_u16(out, start, wlen, "withdrawn routes length")?;

        let attr_start = out.len();
        out.put_u16(0);
        if let Some(r) = &self.mp_reach {
            attr::put_header(
                out,
                attr::flag::OPTIONAL,
                code::MP_REACH_NLRI,
                mp::reach_len(r, params),
            )?;
            mp::encode_reach(r, params, out)?;
        }
        if let Some(u) = &self.mp_unreach {
            attr::put_header(
                out,
                attr::flag::OPTIONAL,
                code::MP_UNREACH_NLRI,
                mp::unreach_len(u, params),
            )?;
            mp::encode_unreach(u, params, out)?;
        }
        if let Some(a) = &self.attrs {
            attr::encode_attributes(a, params, out)?;
        }
        let alen = out.len() - attr_start - 2;
        patch_u16(out, attr_start, alen, "total path attribute length")?;

        for n in &self.nlri {
            check_v4(n)?;
            encode_prefix(out, n, add_path);
        }
        Ok(())
    }
}

fn check_v4(n: &Nlri) -> Result<(), EncodeError> {
    match n.prefix {
        IpNet::V4(_) => Ok(()),
        IpNet::V6(_) => Err(EncodeError::Family(Family::Ipv6Unicast.afi_safi())),
    }
}

pub(crate) fn patch_u16(
    out: &mut BytesMut,
    at: usize,
    v: usize,
    what: &'static str,
) -> Result<(), EncodeError> {
    let v = u16::try_from(v).map_err(|_| EncodeError::Field(what))?;
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    Ok(())
}
