//! Export rules: whether a Loc-RIB path goes to a peer and with which attributes, before
//! the peer's export policy.
//!
//! * never back to the peer it came from;
//! * NO_ADVERTISE to nobody, NO_EXPORT and NO_EXPORT_SUBCONFED not to eBGP peers
//!   (RFC 1997; without confederations the two behave alike);
//! * iBGP split horizon, unless we reflect (RFC 4456 §6): a client's route goes to every
//!   iBGP peer, a non-client's only to clients; reflecting sets ORIGINATOR_ID when absent
//!   and prepends our cluster id to CLUSTER_LIST, and changes nothing else (§10);
//! * towards a route-server client (RFC 7947 §2.2): our AS not prepended, next hop and
//!   MED passed unchanged;
//! * towards eBGP: prepend our AS, next hop ourselves (unless keep-original, or the
//!   original next hop is on the peer's subnet, RFC 4271 §5.1.3), no LOCAL_PREF, no MED
//!   that came from another AS (§5.1.4), no ORIGINATOR_ID or CLUSTER_LIST (RFC 4456 §8);
//! * towards iBGP: LOCAL_PREF set when missing (§5.1.5), next hop kept unless
//!   next-hop-self;
//! * locally originated routes without a next hop get ours;
//! * IPv6 next hops (RFC 2545 §3): our global address, or the IPv4-mapped form of our IPv4
//!   address when the session has no IPv6 one, plus our link-local address when the peer
//!   is on a shared subnet.

use super::{NextHopMode, PeerId, PeerState, RibConfig, SessionInfo};
use crate::types::Family;
use crate::wire::attr::{Community, NextHop, PathAttrs};
use std::net::IpAddr;

/// Everything the rules look at besides the attributes.
pub(crate) struct ExportCtx<'a> {
    pub cfg: &'a RibConfig,
    pub family: Family,
    pub source_id: PeerId,
    pub source: &'a PeerState,
    pub target_id: PeerId,
    pub target: &'a PeerState,
    pub session: &'a SessionInfo,
}

/// The next hop "ourselves" means on this session for this family, if we have an address
/// for it.
pub fn self_next_hop(session: &SessionInfo, family: Family) -> Option<NextHop> {
    match family {
        Family::Ipv4Unicast => match (session.local_v4, session.local_v6) {
            (Some(a), _) => Some(NextHop::V4(a)),
            // RFC 8950.
            (None, Some(g)) if session.ipv4_extended_next_hop => Some(NextHop::V6 {
                global: g,
                link_local: on_link(session)
                    .then_some(session.local_link_local)
                    .flatten(),
            }),
            _ => None,
        },
        Family::Ipv6Unicast => {
            let global = session
                .local_v6
                .or_else(|| session.local_v4.map(|a| a.to_ipv6_mapped()))?;
            let link_local = if on_link(session) {
                session.local_link_local
            } else {
                None
            };
            Some(NextHop::V6 { global, link_local })
        }
    }
}

fn on_link(session: &SessionInfo) -> bool {
    !session.shared_subnets.is_empty()
}

fn next_hop_on_subnet(nh: &NextHop, session: &SessionInfo) -> bool {
    let addr = match nh {
        NextHop::V4(a) => IpAddr::V4(*a),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    };
    session.shared_subnets.iter().any(|n| n.contains(&addr))
}

/// The attributes to send, or `None` when the path must not go to this peer.
pub(crate) fn export_attrs(ctx: &ExportCtx<'_>, attrs: &PathAttrs) -> Option<PathAttrs> {
    if ctx.source_id == ctx.target_id {
        return None;
    }
    let target_ebgp = ctx.target.info.is_ebgp();
    if attrs.communities.contains(&Community::NO_ADVERTISE) {
        return None;
    }
    if target_ebgp
        && (attrs.communities.contains(&Community::NO_EXPORT)
            || attrs.communities.contains(&Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let local = ctx.source_id == PeerId::LOCAL;
    let source_ibgp = !local && !ctx.source.info.is_ebgp();
    let reflected = source_ibgp && !target_ebgp;
    if reflected && !ctx.source.info.rr_client && !ctx.target.info.rr_client {
        // RFC 4271 §9.2.1 split horizon; RFC 4456 §6 non-client to non-client.
        return None;
    }
    let own_nh = self_next_hop(ctx.session, ctx.family);
    let mut out = attrs.clone();
    if reflected {
        if out.originator_id.is_none() {
            out.originator_id = Some(ctx.source.router_id());
        }
        out.cluster_list.insert(0, ctx.cfg.cluster_id());
        if out.local_pref.is_none() {
            out.local_pref = Some(ctx.cfg.default_local_pref);
        }
        return encodable_next_hop(ctx, out, own_nh);
    }
    if target_ebgp {
        let rs = ctx.target.info.route_server_client;
        if !rs {
            out.as_path.prepend(ctx.target.info.local_as, 1);
        }
        out.local_pref = None;
        out.originator_id = None;
        out.cluster_list.clear();
        let foreign_med =
            !local && (ctx.source.info.is_ebgp() || attrs.as_path.neighbor_as().is_some());
        if foreign_med && !ctx.target.info.send_foreign_med && !rs {
            out.med = None;
        }
        let mode = if rs {
            NextHopMode::KeepOriginal
        } else {
            ctx.target.info.next_hop
        };
        let keep = match (mode, &attrs.next_hop) {
            (_, None) => false,
            (NextHopMode::KeepOriginal, Some(_)) => true,
            (NextHopMode::SelfAlways, Some(_)) => false,
            (NextHopMode::Auto, Some(nh)) => next_hop_on_subnet(nh, ctx.session),
        };
        if !keep {
            out.next_hop = Some(own_nh?);
        }
    } else {
        if out.local_pref.is_none() {
            out.local_pref = Some(ctx.cfg.default_local_pref);
        }
        if attrs.next_hop.is_none() || ctx.target.info.next_hop == NextHopMode::SelfAlways {
            out.next_hop = Some(own_nh?);
        }
    }
    encodable_next_hop(ctx, out, own_nh)
}

/// Gives `out` a next hop the session can carry: ours when it has none, or when it is an
/// IPv6 next hop of an IPv4 route (RFC 8950) and the peer lacks the extended next hop
/// capability.
fn encodable_next_hop(
    ctx: &ExportCtx<'_>,
    mut out: PathAttrs,
    own_nh: Option<NextHop>,
) -> Option<PathAttrs> {
    let v6_hop_on_v4 =
        ctx.family == Family::Ipv4Unicast && matches!(out.next_hop, Some(NextHop::V6 { .. }));
    if out.next_hop.is_none() || (v6_hop_on_v4 && !ctx.session.ipv4_extended_next_hop) {
        out.next_hop = Some(own_nh?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CompiledPolicy;
    use crate::rib::{PeerInfo, RibConfig};
    use crate::types::{Asn, RouterId};
    use crate::wire::attr::AsPath;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const US: Asn = Asn(64512);

    fn cfg() -> RibConfig {
        RibConfig::new(US, RouterId(Ipv4Addr::new(10, 0, 0, 1)))
    }

    fn peer(asn: u32, rr_client: bool, last: u8) -> PeerState {
        let mut info = PeerInfo::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), Asn(asn), US);
        info.rr_client = rr_client;
        PeerState {
            info,
            import: CompiledPolicy::default(),
            export: CompiledPolicy::default(),
            session: Some(SessionInfo::ipv4(
                RouterId(Ipv4Addr::new(10, 9, 9, last)),
                Ipv4Addr::new(192, 0, 2, 254),
            )),
            up: true,
            counts: Default::default(),
            max_prefix_signalled: [false; 2],
        }
    }

    fn route() -> PathAttrs {
        PathAttrs {
            as_path: AsPath::from_sequence([Asn(65001), Asn(65002)]),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(198, 51, 100, 1))),
            med: Some(50),
            local_pref: Some(120),
            ..PathAttrs::default()
        }
    }

    fn run(src: (u32, &PeerState), dst: (u32, &PeerState), a: &PathAttrs) -> Option<PathAttrs> {
        let cfg = cfg();
        let session = dst.1.session.clone().unwrap();
        export_attrs(
            &ExportCtx {
                cfg: &cfg,
                family: Family::Ipv4Unicast,
                source_id: PeerId(src.0),
                source: src.1,
                target_id: PeerId(dst.0),
                target: dst.1,
                session: &session,
            },
            a,
        )
    }

    #[test]
    fn never_back_to_the_source() {
        let e = peer(65001, false, 1);
        assert_eq!(run((1, &e), (1, &e), &route()), None);
    }

    #[test]
    fn split_horizon_and_reflection_table() {
        let client_a = peer(64512, true, 1);
        let client_b = peer(64512, true, 2);
        let non_a = peer(64512, false, 3);
        let non_b = peer(64512, false, 4);
        let ebgp = peer(65001, false, 5);
        // (source, target, exported)
        type Case<'a> = ((u32, &'a PeerState), (u32, &'a PeerState), bool);
        let cases: [Case<'_>; 7] = [
            ((1, &client_a), (2, &client_b), true),
            ((1, &client_a), (3, &non_a), true),
            ((3, &non_a), (1, &client_a), true),
            ((3, &non_a), (4, &non_b), false),
            ((5, &ebgp), (3, &non_a), true),
            ((5, &ebgp), (1, &client_a), true),
            ((3, &non_a), (5, &ebgp), true),
        ];
        for (i, (s, t, want)) in cases.into_iter().enumerate() {
            assert_eq!(run(s, t, &route()).is_some(), want, "case {i}");
        }
    }

    #[test]
    fn reflection_sets_originator_and_cluster_only() {
        let client_a = peer(64512, true, 1);
        let non_a = peer(64512, false, 3);
        let out = run((1, &client_a), (3, &non_a), &route()).unwrap();
        assert_eq!(out.originator_id, Some(Ipv4Addr::new(10, 9, 9, 1)));
        assert_eq!(out.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(out.next_hop, route().next_hop);
        assert_eq!(out.as_path, route().as_path);
        assert_eq!(out.med, Some(50));
        // An existing ORIGINATOR_ID is kept, our cluster id goes in front.
        let mut a = route();
        a.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        a.cluster_list = vec![Ipv4Addr::new(2, 2, 2, 2)];
        let out = run((1, &client_a), (3, &non_a), &a).unwrap();
        assert_eq!(out.originator_id, Some(Ipv4Addr::new(1, 1, 1, 1)));
        assert_eq!(
            out.cluster_list,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(2, 2, 2, 2)]
        );
    }

    #[test]
    fn ebgp_attribute_handling() {
        let src = peer(65001, false, 1);
        let dst = peer(65100, false, 2);
        let mut a = route();
        a.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        a.cluster_list = vec![Ipv4Addr::new(2, 2, 2, 2)];
        let out = run((1, &src), (2, &dst), &a).unwrap();
        assert_eq!(
            out.as_path,
            AsPath::from_sequence([US, Asn(65001), Asn(65002)])
        );
        assert_eq!(
            out.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
        );
        assert_eq!(out.local_pref, None);
        assert_eq!(out.med, None, "MED from another AS is not passed on");
        assert_eq!(out.originator_id, None);
        assert!(out.cluster_list.is_empty());
        // Configurable MED pass-through.
        let mut dst2 = peer(65100, false, 2);
        dst2.info.send_foreign_med = true;
        assert_eq!(run((1, &src), (2, &dst2), &a).unwrap().med, Some(50));
        // A MED set on a route we originate goes out.
        let local = peer(64512, false, 0);
        let mut mine = route();
        mine.as_path = AsPath::default();
        assert_eq!(run((0, &local), (2, &dst), &mine).unwrap().med, Some(50));
    }

    #[test]
    fn ebgp_next_hop_modes() {
        let src = peer(65001, false, 1);
        let mut dst = peer(65100, false, 2);
        dst.info.next_hop = NextHopMode::KeepOriginal;
        assert_eq!(
            run((1, &src), (2, &dst), &route()).unwrap().next_hop,
            route().next_hop
        );
        let mut dst = peer(65100, false, 2);
        dst.session.as_mut().unwrap().shared_subnets = vec!["198.51.100.0/24".parse().unwrap()];
        assert_eq!(
            run((1, &src), (2, &dst), &route()).unwrap().next_hop,
            route().next_hop,
            "third-party next hop"
        );
        dst.info.next_hop = NextHopMode::SelfAlways;
        assert_eq!(
            run((1, &src), (2, &dst), &route()).unwrap().next_hop,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
        );
    }

    #[test]
    fn route_server_clients_get_the_route_unchanged() {
        let src = peer(65001, false, 1);
        let mut dst = peer(65100, false, 2);
        dst.info.route_server_client = true;
        let out = run((1, &src), (2, &dst), &route()).unwrap();
        assert_eq!(out.as_path, route().as_path, "RFC 7947: no AS of ours");
        assert_eq!(out.next_hop, route().next_hop);
        assert_eq!(out.med, Some(50));
        assert_eq!(out.local_pref, None);
    }

    #[test]
    fn ibgp_attribute_handling() {
        let src = peer(65001, false, 1);
        let mut dst = peer(64512, false, 2);
        let mut a = route();
        a.local_pref = None;
        let out = run((1, &src), (2, &dst), &a).unwrap();
        assert_eq!(out.local_pref, Some(100));
        assert_eq!(out.next_hop, route().next_hop);
        assert_eq!(out.as_path, route().as_path);
        assert_eq!(out.med, Some(50));
        assert_eq!(
            run((1, &src), (2, &dst), &route()).unwrap().local_pref,
            Some(120)
        );
        dst.info.next_hop = NextHopMode::SelfAlways;
        assert_eq!(
            run((1, &src), (2, &dst), &a).unwrap().next_hop,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
        );
        // Reflected routes keep their next hop even with next-hop-self.
        let client = peer(64512, true, 3);
        assert_eq!(
            run((3, &client), (2, &dst), &a).unwrap().next_hop,
            route().next_hop
        );
    }

    #[test]
    fn well_known_communities() {
        let src = peer(65001, false, 1);
        let ibgp = peer(64512, false, 2);
        let ebgp = peer(65100, false, 3);
        let with = |c: Community| PathAttrs {
            communities: [c].into_iter().collect(),
            ..route()
        };
        assert!(run((1, &src), (2, &ibgp), &with(Community::NO_EXPORT)).is_some());
        assert!(run((1, &src), (3, &ebgp), &with(Community::NO_EXPORT)).is_none());
        assert!(run((1, &src), (3, &ebgp), &with(Community::NO_EXPORT_SUBCONFED)).is_none());
        assert!(run((1, &src), (2, &ibgp), &with(Community::NO_ADVERTISE)).is_none());
        assert!(run((1, &src), (3, &ebgp), &with(Community::NO_ADVERTISE)).is_none());
    }

    #[test]
    fn local_routes_get_our_next_hop() {
        let local = peer(64512, false, 0);
        let ibgp = peer(64512, false, 2);
        let a = PathAttrs {
            next_hop: None,
            ..PathAttrs::default()
        };
        let out = run((0, &local), (2, &ibgp), &a).unwrap();
        assert_eq!(
            out.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
        );
        assert_eq!(out.local_pref, Some(100));
        assert!(out.as_path.is_empty());
    }

    #[test]
    fn ipv6_next_hop_of_an_ipv4_route_needs_the_capability() {
        let src = peer(64512, true, 1);
        let dst = peer(64512, true, 2);
        let v6 = NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        };
        let a = PathAttrs {
            next_hop: Some(v6),
            ..route()
        };
        let out = run((1, &src), (2, &dst), &a).unwrap();
        assert_eq!(
            out.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 254)))
        );
    }

    #[test]
    fn ipv6_next_hops() {
        let mut s = SessionInfo::ipv4(
            RouterId(Ipv4Addr::new(1, 1, 1, 1)),
            Ipv4Addr::new(192, 0, 2, 254),
        );
        assert_eq!(
            self_next_hop(&s, Family::Ipv6Unicast),
            Some(NextHop::V6 {
                global: Ipv4Addr::new(192, 0, 2, 254).to_ipv6_mapped(),
                link_local: None
            })
        );
        let g: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        s.local_v6 = Some(g);
        s.local_link_local = Some(ll);
        assert_eq!(
            self_next_hop(&s, Family::Ipv6Unicast),
            Some(NextHop::V6 {
                global: g,
                link_local: None
            })
        );
        s.shared_subnets = vec!["2001:db8::/64".parse().unwrap()];
        assert_eq!(
            self_next_hop(&s, Family::Ipv6Unicast),
            Some(NextHop::V6 {
                global: g,
                link_local: Some(ll)
            })
        );
        // IPv4 routes over an IPv6-only session need RFC 8950.
        s.local_v4 = None;
        assert_eq!(self_next_hop(&s, Family::Ipv4Unicast), None);
        s.ipv4_extended_next_hop = true;
        assert_eq!(
            self_next_hop(&s, Family::Ipv4Unicast),
            Some(NextHop::V6 {
                global: g,
                link_local: Some(ll)
            })
        );
    }
}
