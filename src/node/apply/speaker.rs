//! The difference between what the speaker runs and what the desired state wants, as
//! the calls to make: pure, so a reconcile touches only the peers and prefixes that
//! changed (an unchanged peer's session is never reset).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bgp::config::{Announcement, PeerConfig};
use ipnet::IpNet;

/// One call on the speaker.
#[derive(Clone, Debug, PartialEq)]
pub enum SpeakerOp {
    AddPeer(Box<PeerConfig>),
    UpdatePeer(Box<PeerConfig>),
    RemovePeer(IpAddr),
    Announce(Box<Announcement>),
    Withdraw(IpNet),
}

/// The calls that turn (`peers`, `announced`) into (`want_peers`, `want_announced`):
/// removals first (a peer moving between resources is re-added), then changes.
pub fn ops(
    peers: &BTreeMap<IpAddr, PeerConfig>,
    want_peers: &BTreeMap<IpAddr, PeerConfig>,
    announced: &BTreeMap<IpNet, Announcement>,
    want_announced: &BTreeMap<IpNet, Announcement>,
) -> Vec<SpeakerOp> {
    let mut out = Vec::new();
    for addr in peers.keys() {
        if !want_peers.contains_key(addr) {
            out.push(SpeakerOp::RemovePeer(*addr));
        }
    }
    for p in announced.keys() {
        if !want_announced.contains_key(p) {
            out.push(SpeakerOp::Withdraw(*p));
        }
    }
    for (addr, want) in want_peers {
        match peers.get(addr) {
            None => out.push(SpeakerOp::AddPeer(Box::new(want.clone()))),
            Some(have) if have != want => out.push(SpeakerOp::UpdatePeer(Box::new(want.clone()))),
            Some(_) => {}
        }
    }
    for (p, want) in want_announced {
        if announced.get(p) != Some(want) {
            out.push(SpeakerOp::Announce(Box::new(want.clone())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp::Asn;

    fn peer(a: &str, asn: u32) -> (IpAddr, PeerConfig) {
        let ip: IpAddr = a.parse().unwrap();
        (ip, PeerConfig::new(ip, Asn(asn)))
    }

    fn ann(p: &str, med: Option<u32>) -> (IpNet, Announcement) {
        let net: IpNet = p.parse().unwrap();
        let mut a = Announcement::new(net);
        a.med = med;
        (net, a)
    }

    #[test]
    fn only_changes_become_calls() {
        let have_p: BTreeMap<_, _> = [
            peer("10.0.0.1", 1),
            peer("10.0.0.2", 2),
            peer("10.0.0.3", 3),
        ]
        .into();
        let want_p: BTreeMap<_, _> = [
            peer("10.0.0.1", 1),
            peer("10.0.0.2", 22),
            peer("10.0.0.4", 4),
        ]
        .into();
        let have_a: BTreeMap<_, _> = [ann("10.65.0.0/26", None), ann("10.65.0.64/26", None)].into();
        let want_a: BTreeMap<_, _> =
            [ann("10.65.0.0/26", Some(5)), ann("10.65.1.0/26", None)].into();
        let got = ops(&have_p, &want_p, &have_a, &want_a);
        let shown: Vec<String> = got
            .iter()
            .map(|o| match o {
                SpeakerOp::AddPeer(p) => format!("add {}", p.address),
                SpeakerOp::UpdatePeer(p) => format!("update {} as {}", p.address, p.asn),
                SpeakerOp::RemovePeer(a) => format!("remove {a}"),
                SpeakerOp::Announce(a) => format!("announce {}", a.prefix),
                SpeakerOp::Withdraw(p) => format!("withdraw {p}"),
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                "remove 10.0.0.3",
                "withdraw 10.65.0.64/26",
                "update 10.0.0.2 as 22",
                "add 10.0.0.4",
                "announce 10.65.0.0/26",
                "announce 10.65.1.0/26",
            ]
        );
        assert!(ops(&want_p, &want_p, &want_a, &want_a).is_empty());
    }
}
