//! What two OPEN messages agree on.
//!
//! `negotiate` is pure: it applies the OPEN checks of RFC 4271 §6.2 (with RFC 6286 for
//! the BGP Identifier, RFC 6793 and RFC 7607 for the AS number) and returns either the
//! NOTIFICATION to send or the `Negotiated` parameters of the session: the peer's identity,
//! hold and keepalive times, the families and capabilities both sides support, graceful
//! restart as each side announced it, and the `CodecParams` the codec needs.

use crate::fsm::notify::{self, open as sub, OPEN_MESSAGE_ERROR};
use crate::types::{Afi, AfiSafi, Asn, Family, RouterId};
use crate::wire::open::{AddPathMode, Capability, GracefulRestartFamily};
use crate::wire::{CodecParams, Notification, Open};
use bytes::Bytes;
use std::time::Duration;

/// The only BGP version this speaker implements (RFC 4271).
pub const BGP_VERSION: u8 = 4;

/// What the local configuration expects of the peer's OPEN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NegotiationPolicy {
    /// The AS the peer must claim; `None` accepts any (dynamic peers).
    pub peer_asn: Option<Asn>,
    /// Configured keepalive interval in seconds; `None` uses a third of the hold time.
    pub keepalive: Option<u16>,
}

/// A Graceful Restart capability as one side announced it (RFC 4724 §3, N bit RFC 8538 §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R bit: the sender has just restarted.
    pub restart_state: bool,
    /// N bit: the sender applies graceful restart to NOTIFICATIONs too (RFC 8538).
    pub notification: bool,
    /// Seconds the sender expects to take to re-establish the session.
    pub restart_time: u16,
    /// Families whose routes the peer should keep, with the F bit (forwarding preserved).
    pub families: Vec<GracefulRestartFamily>,
}

impl GracefulRestart {
    /// The first Graceful Restart capability in the list (RFC 4724 gives no meaning to a
    /// second one).
    pub fn from_capabilities(caps: &[Capability]) -> Option<Self> {
        caps.iter().find_map(|c| match c {
            Capability::GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families,
            } => Some(GracefulRestart {
                restart_state: *restart_state,
                notification: *notification,
                restart_time: *restart_time,
                families: families.clone(),
            }),
            _ => None,
        })
    }

    /// The F bit for `family`, or `None` when the family is not listed.
    pub fn forwarding_preserved(&self, family: Family) -> Option<bool> {
        self.families
            .iter()
            .find(|f| f.afi_safi == family.afi_safi())
            .map(|f| f.forwarding_preserved)
    }
}

/// Add-path directions for one family (RFC 7911 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddPath {
    /// We send path identifiers.
    pub send: bool,
    /// We receive path identifiers.
    pub receive: bool,
}

/// What the session runs with once both OPENs are exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS: its 4-octet capability value when present, else the OPEN field.
    pub peer_asn: Asn,
    pub peer_id: RouterId,
    pub ibgp: bool,
    /// The hold time the peer proposed, for display.
    pub peer_hold_time: u16,
    /// min(ours, theirs); 0 means neither hold timer nor keepalives (RFC 4271 §4.2).
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs; 0 when `hold_time` is 0.
    pub keepalive: u16,
    /// RFC 2918, both sides.
    pub route_refresh: bool,
    /// RFC 7313, both sides (and route refresh itself).
    pub enhanced_route_refresh: bool,
    /// Our Graceful Restart capability as sent in this session's OPEN.
    pub local_gr: Option<GracefulRestart>,
    /// The peer's Graceful Restart capability.
    pub peer_gr: Option<GracefulRestart>,
    /// How the codec reads and writes this session's messages.
    pub codec: CodecParams,
    /// Everything the peer announced, known or not, for `status`.
    pub peer_capabilities: Vec<Capability>,
}

impl Negotiated {
    /// The families both sides announced, in `Family::ALL` order.
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        Family::ALL
            .into_iter()
            .filter(|f| self.codec.families[f.index()])
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.codec.families[family.index()]
    }

    pub fn add_path(&self, family: Family) -> AddPath {
        AddPath {
            send: self.codec.add_path_tx[family.index()],
            receive: self.codec.add_path_rx[family.index()],
        }
    }

    /// The negotiated hold time; `None` when it is 0.
    pub fn hold(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time)))
    }

    /// The keepalive interval before jitter; `None` when no KEEPALIVEs are to be sent.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive > 0).then(|| Duration::from_secs(u64::from(self.keepalive)))
    }

    /// RFC 4724 §4.2, receiving side: both sides sent the capability, so when the peer's
    /// session ends without a NOTIFICATION we keep its routes (marked stale) for the
    /// families it listed. A peer that lists no family cannot preserve forwarding (§3), so
    /// there is nothing to keep.
    pub fn graceful_restart_helper(&self) -> bool {
        self.local_gr.is_some() && !self.stale_families().is_empty()
    }

    /// RFC 8538 §2: both sides set the N bit, so NOTIFICATIONs other than Hard Reset end
    /// the session gracefully too.
    pub fn notification_graceful(&self) -> bool {
        matches!((&self.local_gr, &self.peer_gr), (Some(l), Some(p)) if l.notification && p.notification)
    }

    /// Families whose routes are kept stale when the peer restarts: negotiated here and
    /// listed in the peer's capability.
    pub fn stale_families(&self) -> Vec<Family> {
        let Some(gr) = &self.peer_gr else {
            return Vec::new();
        };
        self.families()
            .filter(|f| gr.forwarding_preserved(*f).is_some())
            .collect()
    }

    /// How long the peer's stale routes are kept while it restarts; `None` when the
    /// session does not end gracefully at all.
    pub fn restart_time(&self) -> Option<Duration> {
        let gr = self.peer_gr.as_ref()?;
        (self.graceful_restart_helper() && gr.restart_time > 0)
            .then(|| Duration::from_secs(u64::from(gr.restart_time)))
    }

    /// RFC 4724 §3: the peer set the Restart State bit in this OPEN and not in the one of
    /// `earlier`, a session still Established: it says it restarted since that session
    /// came up, so that session's TCP connection has no speaker behind it any more. A
    /// peer that keeps the bit set over several sessions (it is still restarting) proves
    /// nothing this way.
    pub fn peer_restarted_since(&self, earlier: &Negotiated) -> bool {
        let restarting = |n: &Negotiated| n.peer_gr.as_ref().is_some_and(|g| g.restart_state);
        restarting(self) && !restarting(earlier)
    }
}

/// Checks `remote` against `local` and the policy; on success, what the session uses.
///
/// The checks run in the order of RFC 4271 §6.2: version, peer AS, hold time, BGP
/// Identifier, then the capabilities (RFC 5492 §3: no family in common).
pub fn negotiate(
    local: &Open,
    remote: &Open,
    policy: &NegotiationPolicy,
) -> Result<Negotiated, Notification> {
    if remote.version != BGP_VERSION {
        // RFC 4271 §6.2: the data is the largest locally supported version below the
        // one bid, or the smallest we support; either way, 4.
        return Err(Notification {
            code: OPEN_MESSAGE_ERROR,
            subcode: sub::UNSUPPORTED_VERSION,
            data: Bytes::from_static(&[0, BGP_VERSION]),
        });
    }

    let peer_asn = four_octet_asn(&remote.capabilities).unwrap_or(remote.asn);
    // RFC 7607 §2: AS 0 in an OPEN is Bad Peer AS. RFC 6793 §9: AS_TRANS stands in for an
    // AS that does not fit two octets, it is no speaker's own AS.
    if peer_asn.0 == 0 || peer_asn == Asn::TRANS {
        return Err(open_error(sub::BAD_PEER_AS));
    }
    if policy.peer_asn.is_some_and(|want| want != peer_asn) {
        return Err(open_error(sub::BAD_PEER_AS));
    }

    if matches!(remote.hold_time, 1 | 2) {
        return Err(open_error(sub::UNACCEPTABLE_HOLD_TIME));
    }

    let local_asn = four_octet_asn(&local.capabilities).unwrap_or(local.asn);
    let ibgp = peer_asn == local_asn;
    // RFC 6286 §2.2: any non-zero 4-octet value is a valid identifier, unique within
    // the AS; an eBGP peer may share ours.
    if remote.router_id.0.is_unspecified() || (ibgp && remote.router_id == local.router_id) {
        return Err(open_error(sub::BAD_BGP_IDENTIFIER));
    }

    let local_fams = mp_families(&local.capabilities);
    let remote_fams = mp_families(&remote.capabilities);
    let mut families = [false; 2];
    for f in Family::ALL {
        families[f.index()] =
            local_fams.contains(&f.afi_safi()) && remote_fams.contains(&f.afi_safi());
    }
    if !families.iter().any(|x| *x) {
        return Err(Notification {
            code: OPEN_MESSAGE_ERROR,
            subcode: sub::UNSUPPORTED_CAPABILITY,
            data: multiprotocol_tlvs(&local_fams),
        });
    }

    let mut add_path_tx = [false; 2];
    let mut add_path_rx = [false; 2];
    for f in Family::ALL.into_iter().filter(|f| families[f.index()]) {
        let (Some(ours), Some(theirs)) = (
            add_path_mode(&local.capabilities, f),
            add_path_mode(&remote.capabilities, f),
        ) else {
            continue;
        };
        add_path_tx[f.index()] = ours.can_send() && theirs.can_receive();
        add_path_rx[f.index()] = ours.can_receive() && theirs.can_send();
    }

    let both = |pred: fn(&Capability) -> bool| {
        local.capabilities.iter().any(pred) && remote.capabilities.iter().any(pred)
    };
    let route_refresh = both(|c| matches!(c, Capability::RouteRefresh));
    let codec = CodecParams {
        four_octet_asn: both(|c| matches!(c, Capability::FourOctetAsn(_))),
        add_path_rx,
        add_path_tx,
        extended_message: both(|c| matches!(c, Capability::ExtendedMessage)),
        families,
        ipv4_extended_next_hop: families[Family::Ipv4Unicast.index()]
            && both(|c| matches!(c, Capability::ExtendedNextHop(v) if v.contains(&IPV4_OVER_IPV6))),
        ebgp: !ibgp,
    };

    let hold_time = local.hold_time.min(remote.hold_time);
    let keepalive = if hold_time == 0 {
        0
    } else {
        // RFC 4271 §4.4: a third of the hold time unless configured lower; never so long
        // that the peer's hold timer could expire between two of ours.
        let third = hold_time / 3;
        policy.keepalive.unwrap_or(third).clamp(1, third)
    };

    Ok(Negotiated {
        peer_asn,
        peer_id: remote.router_id,
        ibgp,
        peer_hold_time: remote.hold_time,
        hold_time,
        keepalive,
        route_refresh,
        enhanced_route_refresh: route_refresh
            && both(|c| matches!(c, Capability::EnhancedRouteRefresh)),
        local_gr: GracefulRestart::from_capabilities(&local.capabilities),
        peer_gr: GracefulRestart::from_capabilities(&remote.capabilities),
        codec,
        peer_capabilities: remote.capabilities.clone(),
    })
}

/// RFC 8950 §3: IPv4 unicast NLRI with IPv6 next hops.
const IPV4_OVER_IPV6: (AfiSafi, Afi) = (AfiSafi::new(1, 1), Afi::IPV6);

fn open_error(subcode: u8) -> Notification {
    notify::notification(OPEN_MESSAGE_ERROR, subcode)
}

fn four_octet_asn(caps: &[Capability]) -> Option<Asn> {
    caps.iter().find_map(|c| match c {
        Capability::FourOctetAsn(a) => Some(*a),
        _ => None,
    })
}

/// RFC 4760 §8: a speaker that sends no Multiprotocol capability carries IPv4 unicast only.
fn mp_families(caps: &[Capability]) -> Vec<AfiSafi> {
    let listed: Vec<AfiSafi> = caps
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol(fam) => Some(*fam),
            _ => None,
        })
        .collect();
    if listed.is_empty() {
        vec![Family::Ipv4Unicast.afi_safi()]
    } else {
        listed
    }
}

/// The first add-path entry for the family (RFC 7911 does not define repeats).
fn add_path_mode(caps: &[Capability], family: Family) -> Option<AddPathMode> {
    caps.iter().find_map(|c| match c {
        Capability::AddPath(list) => list
            .iter()
            .find(|(fam, _)| *fam == family.afi_safi())
            .map(|(_, mode)| *mode),
        _ => None,
    })
}

/// RFC 5492 §3: the Unsupported Capability data lists the capabilities at fault, here our
/// Multiprotocol ones (code 1, length 4, AFI, reserved, SAFI) that the peer matched none of.
fn multiprotocol_tlvs(families: &[AfiSafi]) -> Bytes {
    let mut data = Vec::with_capacity(families.len() * 6);
    for fam in families {
        let afi = fam.afi.0.to_be_bytes();
        data.extend_from_slice(&[
            crate::wire::open::cap_code::MULTIPROTOCOL,
            4,
            afi[0],
            afi[1],
            0,
            fam.safi.0,
        ]);
    }
    Bytes::from(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const V4: AfiSafi = AfiSafi::new(1, 1);
    const V6: AfiSafi = AfiSafi::new(2, 1);
    const LOCAL_AS: u32 = 64512;

    fn open(asn: u32, id: [u8; 4], hold: u16, capabilities: Vec<Capability>) -> Open {
        Open {
            version: 4,
            asn: Asn(asn),
            hold_time: hold,
            router_id: RouterId(Ipv4Addr::from(id)),
            capabilities,
        }
    }

    fn local() -> Open {
        open(
            LOCAL_AS,
            [10, 0, 0, 1],
            90,
            vec![
                Capability::Multiprotocol(V4),
                Capability::Multiprotocol(V6),
                Capability::RouteRefresh,
                Capability::FourOctetAsn(Asn(LOCAL_AS)),
            ],
        )
    }

    fn remote(asn: u32) -> Open {
        open(
            asn,
            [10, 0, 0, 2],
            90,
            vec![
                Capability::Multiprotocol(V4),
                Capability::Multiprotocol(V6),
                Capability::RouteRefresh,
                Capability::FourOctetAsn(Asn(asn)),
            ],
        )
    }

    fn policy(peer_asn: Option<u32>) -> NegotiationPolicy {
        NegotiationPolicy {
            peer_asn: peer_asn.map(Asn),
            keepalive: None,
        }
    }

    fn gr(n: bool, time: u16, fams: &[AfiSafi]) -> Capability {
        Capability::GracefulRestart {
            restart_state: false,
            notification: n,
            restart_time: time,
            families: fams
                .iter()
                .map(|f| GracefulRestartFamily {
                    afi_safi: *f,
                    forwarding_preserved: true,
                })
                .collect(),
        }
    }

    /// Each case changes the two OPENs and the policy from a valid baseline and names the
    /// (code, subcode) it must be rejected with.
    #[test]
    fn open_checks_reject_with_the_rfc_notification() {
        type Edit = fn(&mut Open, &mut Open, &mut NegotiationPolicy);
        let cases: &[(&str, Edit, (u8, u8))] = &[
            ("version 3", |_, r, _| r.version = 3, (2, 1)),
            ("version 5", |_, r, _| r.version = 5, (2, 1)),
            (
                "configured peer AS differs",
                |_, r, p| p.peer_asn = Some(Asn(r.asn.0 + 1)),
                (2, 2),
            ),
            (
                "4-octet capability differs from configured AS, 2-octet field matches",
                |_, r, p| {
                    p.peer_asn = Some(r.asn);
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                    r.capabilities
                        .push(Capability::FourOctetAsn(Asn(4_200_000_000)));
                },
                (2, 2),
            ),
            (
                "AS_TRANS without the 4-octet capability",
                |_, r, _| {
                    r.asn = Asn::TRANS;
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                },
                (2, 2),
            ),
            (
                "AS_TRANS inside the 4-octet capability",
                |_, r, _| {
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                    r.capabilities.push(Capability::FourOctetAsn(Asn::TRANS));
                },
                (2, 2),
            ),
            (
                "AS 0",
                |_, r, _| {
                    r.asn = Asn(0);
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                },
                (2, 2),
            ),
            ("hold time 1", |_, r, _| r.hold_time = 1, (2, 6)),
            ("hold time 2", |_, r, _| r.hold_time = 2, (2, 6)),
            (
                "BGP identifier 0.0.0.0",
                |_, r, _| r.router_id = RouterId(Ipv4Addr::UNSPECIFIED),
                (2, 3),
            ),
            (
                "iBGP peer with our identifier",
                |l, r, p| {
                    *r = remote(LOCAL_AS);
                    r.router_id = l.router_id;
                    p.peer_asn = Some(Asn(LOCAL_AS));
                },
                (2, 3),
            ),
            (
                "peer has no MP capability, we carry IPv6 only",
                |l, r, _| {
                    l.capabilities
                        .retain(|c| *c != Capability::Multiprotocol(V4));
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                },
                (2, 7),
            ),
            (
                "only families we do not carry in common",
                |l, r, _| {
                    l.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                    l.capabilities.push(Capability::Multiprotocol(V6));
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                    r.capabilities.push(Capability::Multiprotocol(V4));
                    r.capabilities
                        .push(Capability::Multiprotocol(AfiSafi::new(25, 70)));
                },
                (2, 7),
            ),
        ];
        for (name, edit, want) in cases {
            let (mut l, mut r, mut p) = (local(), remote(65001), policy(Some(65001)));
            edit(&mut l, &mut r, &mut p);
            match negotiate(&l, &r, &p) {
                Ok(_) => panic!("{name}: accepted"),
                Err(n) => assert_eq!((n.code, n.subcode), *want, "{name}"),
            }
        }
    }

    #[test]
    fn unsupported_version_data_names_version_4() {
        let mut r = remote(65001);
        r.version = 3;
        let n = negotiate(&local(), &r, &policy(None)).err();
        assert_eq!(n.map(|n| n.data), Some(Bytes::from_static(&[0, 4])));
    }

    #[test]
    fn unsupported_capability_data_lists_our_families() {
        let mut l = local();
        l.capabilities
            .retain(|c| *c != Capability::Multiprotocol(V4));
        let mut r = remote(65001);
        r.capabilities
            .retain(|c| *c != Capability::Multiprotocol(V6));
        let n = negotiate(&l, &r, &policy(None)).err();
        assert_eq!(
            n.map(|n| n.data),
            Some(Bytes::from_static(&[1, 4, 0, 2, 0, 1]))
        );
    }

    /// Cases that must be accepted, with what they must produce.
    #[test]
    fn accepted_opens_produce_the_rfc_values() {
        type Edit = fn(&mut Open, &mut Open, &mut NegotiationPolicy);
        type Check = fn(&Negotiated) -> bool;
        let cases: &[(&str, Edit, Check)] = &[
            (
                "hold 0 is acceptable and turns keepalives off",
                |_, r, _| r.hold_time = 0,
                |n| {
                    n.hold_time == 0
                        && n.keepalive == 0
                        && n.hold().is_none()
                        && n.keepalive_interval().is_none()
                },
            ),
            (
                "hold 3 is acceptable",
                |_, r, _| r.hold_time = 3,
                |n| n.hold_time == 3 && n.keepalive == 1,
            ),
            (
                "hold is the smaller of both",
                |_, r, _| r.hold_time = 30,
                |n| n.hold_time == 30 && n.keepalive == 10 && n.peer_hold_time == 30,
            ),
            (
                "peer proposes longer hold",
                |_, r, _| r.hold_time = 240,
                |n| n.hold_time == 90 && n.keepalive == 30,
            ),
            (
                "configured keepalive below a third is kept",
                |_, _, p| p.keepalive = Some(10),
                |n| n.keepalive == 10,
            ),
            (
                "configured keepalive above a third is capped",
                |_, r, p| {
                    p.keepalive = Some(60);
                    r.hold_time = 9;
                },
                |n| n.hold_time == 9 && n.keepalive == 3,
            ),
            (
                "dynamic peer: any AS",
                |_, r, p| {
                    *r = remote(4_200_000_001);
                    p.peer_asn = None;
                },
                |n| n.peer_asn == Asn(4_200_000_001) && !n.ibgp && n.codec.ebgp,
            ),
            (
                "iBGP",
                |_, r, p| {
                    *r = remote(LOCAL_AS);
                    p.peer_asn = Some(Asn(LOCAL_AS));
                },
                |n| n.ibgp && !n.codec.ebgp,
            ),
            (
                "eBGP peer may share our identifier (RFC 6286)",
                |l, r, _| r.router_id = l.router_id,
                |n| !n.ibgp,
            ),
            (
                "4-octet ASN on both sides",
                |_, _, _| {},
                |n| n.codec.four_octet_asn,
            ),
            (
                "4-octet ASN on one side only",
                |_, r, _| {
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                },
                |n| !n.codec.four_octet_asn && n.peer_asn == Asn(65001),
            ),
            (
                "the 4-octet capability names the AS",
                |_, r, p| {
                    r.asn = Asn::TRANS;
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::FourOctetAsn(_)));
                    r.capabilities
                        .push(Capability::FourOctetAsn(Asn(4_200_000_000)));
                    p.peer_asn = Some(Asn(4_200_000_000));
                },
                |n| n.peer_asn == Asn(4_200_000_000),
            ),
            (
                "both families",
                |_, _, _| {},
                |n| n.families().collect::<Vec<_>>() == Family::ALL,
            ),
            (
                "no MP capability on either side: IPv4 unicast",
                |l, r, _| {
                    l.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                },
                |n| n.families().collect::<Vec<_>>() == [Family::Ipv4Unicast],
            ),
            (
                "peer without MP capability: IPv4 unicast only",
                |_, r, _| {
                    r.capabilities
                        .retain(|c| !matches!(c, Capability::Multiprotocol(_)));
                },
                |n| n.families().collect::<Vec<_>>() == [Family::Ipv4Unicast],
            ),
            (
                "peer IPv6 only",
                |_, r, _| {
                    r.capabilities
                        .retain(|c| *c != Capability::Multiprotocol(V4));
                },
                |n| {
                    n.families().collect::<Vec<_>>() == [Family::Ipv6Unicast]
                        && !n.has_family(Family::Ipv4Unicast)
                },
            ),
            (
                "unknown families are kept for display only",
                |_, r, _| {
                    r.capabilities
                        .push(Capability::Multiprotocol(AfiSafi::new(25, 70)));
                },
                |n| {
                    n.families().count() == 2
                        && n.peer_capabilities
                            .contains(&Capability::Multiprotocol(AfiSafi::new(25, 70)))
                },
            ),
            (
                "route refresh on both",
                |_, _, _| {},
                |n| n.route_refresh && !n.enhanced_route_refresh,
            ),
            (
                "route refresh on one side",
                |l, _, _| {
                    l.capabilities.retain(|c| *c != Capability::RouteRefresh);
                },
                |n| !n.route_refresh,
            ),
            (
                "enhanced route refresh on both",
                |l, r, _| {
                    l.capabilities.push(Capability::EnhancedRouteRefresh);
                    r.capabilities.push(Capability::EnhancedRouteRefresh);
                },
                |n| n.route_refresh && n.enhanced_route_refresh,
            ),
            (
                "enhanced route refresh on one side",
                |l, _, _| {
                    l.capabilities.push(Capability::EnhancedRouteRefresh);
                },
                |n| !n.enhanced_route_refresh,
            ),
            (
                "enhanced route refresh without route refresh",
                |l, r, _| {
                    l.capabilities.retain(|c| *c != Capability::RouteRefresh);
                    l.capabilities.push(Capability::EnhancedRouteRefresh);
                    r.capabilities.push(Capability::EnhancedRouteRefresh);
                },
                |n| !n.enhanced_route_refresh,
            ),
            (
                "extended message on both",
                |l, r, _| {
                    l.capabilities.push(Capability::ExtendedMessage);
                    r.capabilities.push(Capability::ExtendedMessage);
                },
                |n| n.codec.extended_message,
            ),
            (
                "extended message on one side",
                |_, r, _| {
                    r.capabilities.push(Capability::ExtendedMessage);
                },
                |n| !n.codec.extended_message,
            ),
            (
                "extended next hop IPv4 over IPv6 on both",
                |l, r, _| {
                    l.capabilities
                        .push(Capability::ExtendedNextHop(vec![(V4, Afi::IPV6)]));
                    r.capabilities.push(Capability::ExtendedNextHop(vec![
                        (V6, Afi::IPV4),
                        (V4, Afi::IPV6),
                    ]));
                },
                |n| n.codec.ipv4_extended_next_hop,
            ),
            (
                "extended next hop on one side",
                |l, _, _| {
                    l.capabilities
                        .push(Capability::ExtendedNextHop(vec![(V4, Afi::IPV6)]));
                },
                |n| !n.codec.ipv4_extended_next_hop,
            ),
            (
                "extended next hop for another family only",
                |l, r, _| {
                    l.capabilities
                        .push(Capability::ExtendedNextHop(vec![(V4, Afi::IPV6)]));
                    r.capabilities.push(Capability::ExtendedNextHop(vec![(
                        AfiSafi::new(1, 128),
                        Afi::IPV6,
                    )]));
                },
                |n| !n.codec.ipv4_extended_next_hop,
            ),
            (
                "graceful restart on both",
                |l, r, _| {
                    l.capabilities.push(gr(true, 120, &[V4, V6]));
                    r.capabilities.push(gr(true, 90, &[V4]));
                },
                |n| {
                    n.graceful_restart_helper()
                        && n.notification_graceful()
                        && n.stale_families() == [Family::Ipv4Unicast]
                        && n.restart_time() == Some(Duration::from_secs(90))
                        && n.peer_gr
                            .as_ref()
                            .and_then(|g| g.forwarding_preserved(Family::Ipv4Unicast))
                            == Some(true)
                },
            ),
            (
                "graceful restart, N bit on one side only",
                |l, r, _| {
                    l.capabilities.push(gr(false, 120, &[V4]));
                    r.capabilities.push(gr(true, 90, &[V4]));
                },
                |n| n.graceful_restart_helper() && !n.notification_graceful(),
            ),
            (
                "peer graceful restart without families: nothing to keep",
                |l, r, _| {
                    l.capabilities.push(gr(true, 120, &[V4]));
                    r.capabilities.push(gr(true, 90, &[]));
                },
                |n| {
                    !n.graceful_restart_helper()
                        && n.peer_gr.is_some()
                        && n.restart_time().is_none()
                },
            ),
            (
                "peer graceful restart, we did not announce it",
                |_, r, _| {
                    r.capabilities.push(gr(true, 90, &[V4]));
                },
                |n| !n.graceful_restart_helper() && n.local_gr.is_none(),
            ),
            (
                "peer restart time 0: no stale window",
                |l, r, _| {
                    l.capabilities.push(gr(false, 120, &[V4]));
                    r.capabilities.push(gr(false, 0, &[V4]));
                },
                |n| n.graceful_restart_helper() && n.restart_time().is_none(),
            ),
            (
                "peer restart bit is reported",
                |l, r, _| {
                    l.capabilities.push(gr(false, 120, &[V4]));
                    r.capabilities.push(Capability::GracefulRestart {
                        restart_state: true,
                        notification: false,
                        restart_time: 60,
                        families: vec![GracefulRestartFamily {
                            afi_safi: V4,
                            forwarding_preserved: false,
                        }],
                    });
                },
                |n| {
                    let g = n.peer_gr.as_ref();
                    g.is_some_and(|g| g.restart_state)
                        && g.and_then(|g| g.forwarding_preserved(Family::Ipv4Unicast))
                            == Some(false)
                        && g.and_then(|g| g.forwarding_preserved(Family::Ipv6Unicast))
                            .is_none()
                },
            ),
            (
                "unknown capabilities are kept for display",
                |_, r, _| {
                    r.capabilities.push(Capability::Unknown {
                        code: 73,
                        value: Bytes::from_static(b"\x04host"),
                    });
                },
                |n| {
                    n.peer_capabilities
                        .iter()
                        .any(|c| matches!(c, Capability::Unknown { code: 73, .. }))
                },
            ),
        ];
        for (name, edit, check) in cases {
            let (mut l, mut r, mut p) = (local(), remote(65001), policy(Some(65001)));
            edit(&mut l, &mut r, &mut p);
            match negotiate(&l, &r, &p) {
                Ok(n) => assert!(check(&n), "{name}: {n:#?}"),
                Err(e) => panic!("{name}: rejected with {}/{}", e.code, e.subcode),
            }
        }
    }

    /// RFC 7911 §4: a direction is on only where one side sends and the other receives,
    /// and only for a negotiated family.
    #[test]
    fn add_path_directions() {
        use AddPathMode::{Both, Receive, Send};
        let cases: &[(Option<AddPathMode>, Option<AddPathMode>, AddPath)] = &[
            (
                None,
                None,
                AddPath {
                    send: false,
                    receive: false,
                },
            ),
            (
                Some(Both),
                None,
                AddPath {
                    send: false,
                    receive: false,
                },
            ),
            (
                Some(Both),
                Some(Both),
                AddPath {
                    send: true,
                    receive: true,
                },
            ),
            (
                Some(Send),
                Some(Receive),
                AddPath {
                    send: true,
                    receive: false,
                },
            ),
            (
                Some(Send),
                Some(Send),
                AddPath {
                    send: false,
                    receive: false,
                },
            ),
            (
                Some(Receive),
                Some(Send),
                AddPath {
                    send: false,
                    receive: true,
                },
            ),
            (
                Some(Receive),
                Some(Receive),
                AddPath {
                    send: false,
                    receive: false,
                },
            ),
            (
                Some(Both),
                Some(Receive),
                AddPath {
                    send: true,
                    receive: false,
                },
            ),
            (
                Some(Receive),
                Some(Both),
                AddPath {
                    send: false,
                    receive: true,
                },
            ),
        ];
        for (ours, theirs, want) in cases {
            let mut l = local();
            let mut r = remote(65001);
            if let Some(m) = ours {
                l.capabilities.push(Capability::AddPath(vec![(V6, *m)]));
            }
            if let Some(m) = theirs {
                r.capabilities.push(Capability::AddPath(vec![(V6, *m)]));
            }
            let n = negotiate(&l, &r, &policy(None)).map_err(|e| (e.code, e.subcode));
            let n = match n {
                Ok(n) => n,
                Err(e) => panic!("{ours:?}/{theirs:?}: rejected {e:?}"),
            };
            assert_eq!(
                n.add_path(Family::Ipv6Unicast),
                *want,
                "{ours:?}/{theirs:?}"
            );
            assert_eq!(
                n.add_path(Family::Ipv4Unicast),
                AddPath::default(),
                "{ours:?}/{theirs:?}"
            );
        }
    }

    #[test]
    fn add_path_ignored_for_a_family_not_negotiated() {
        let mut l = local();
        l.capabilities
            .retain(|c| *c != Capability::Multiprotocol(V6));
        l.capabilities
            .push(Capability::AddPath(vec![(V6, AddPathMode::Both)]));
        let mut r = remote(65001);
        r.capabilities
            .push(Capability::AddPath(vec![(V6, AddPathMode::Both)]));
        let n = negotiate(&l, &r, &policy(None));
        assert_eq!(
            n.map(|n| n.add_path(Family::Ipv6Unicast)),
            Ok(AddPath::default())
        );
    }

    /// RFC 4724 §3: only a Restart State bit that appeared since the Established
    /// session's OPEN says the peer restarted.
    #[test]
    fn restart_state_bit_new_since_the_established_session_means_a_restart() {
        let with_gr = |r_bit: bool| {
            let mut cap = gr(false, 120, &[V4, V6]);
            if let Capability::GracefulRestart { restart_state, .. } = &mut cap {
                *restart_state = r_bit;
            }
            let mut l = local();
            l.capabilities.push(gr(false, 120, &[V4, V6]));
            let mut r = remote(65001);
            r.capabilities.push(cap);
            negotiate(&l, &r, &policy(None)).expect("accepted")
        };
        let without_gr = negotiate(&local(), &remote(65001), &policy(None)).expect("accepted");
        let (clear, set) = (with_gr(false), with_gr(true));
        // (earlier session, new OPEN, restarted?)
        let cases = [
            (&clear, &set, true),
            (&without_gr, &set, true),
            (&clear, &clear, false),
            // Still restarting when the first session came up: a second connection with
            // the bit set is a collision, not a second restart.
            (&set, &set, false),
            (&set, &clear, false),
            (&clear, &without_gr, false),
        ];
        for (i, (earlier, new, want)) in cases.into_iter().enumerate() {
            assert_eq!(new.peer_restarted_since(earlier), want, "case {i}");
        }
    }
}
