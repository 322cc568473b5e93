//! The BGP speaker: started with the wanted settings (and started anew when the AS,
//! router id, cluster id or port change), then given the peers and announcements that
//! differ from what it runs, so an unchanged peer's session is never reset.
//!
//! The difference is pure ([`ops`], [`SpeakerApplier::plan`]); [`SpeakerApplier::apply`]
//! makes the calls and keeps what the speaker accepted. A call that failed stays in the
//! difference and is made again at the next reconcile.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use bgp::config::{diff_peers, Announcement, PeerConfig, PeerOp, SpeakerConfig};
use bgp::speaker::{BestPathStream, Speaker, SpeakerError};
use bgp::{Asn, RouterId};
use ipnet::IpNet;
use tracing::{debug, info};

/// The most paths installed per prefix (ECMP).
const MAX_PATHS: u8 = 8;

/// Speaker settings that need a new speaker when they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpeakerParams {
    pub asn: Asn,
    pub router_id: Ipv4Addr,
    pub cluster_id: Option<Ipv4Addr>,
    pub port: u16,
}

/// What the speaker should run.
#[derive(Clone, Copy, Debug)]
pub struct SpeakerWant<'a> {
    pub params: SpeakerParams,
    /// Listen on IPv6 too.
    pub v6: bool,
    /// Where the speaker keeps its graceful-restart state.
    pub state_dir: &'a Path,
    pub peers: &'a BTreeMap<IpAddr, PeerConfig>,
    pub announcements: &'a BTreeMap<IpNet, Announcement>,
}

impl SpeakerWant<'_> {
    /// The configuration a new speaker starts with.
    fn config(&self) -> SpeakerConfig {
        let p = self.params;
        let mut c = SpeakerConfig::new(p.asn, RouterId(p.router_id));
        c.listen = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p.port)];
        if self.v6 {
            c.listen
                .push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p.port));
        }
        c.cluster_id = p.cluster_id;
        c.max_paths = MAX_PATHS;
        c.state_dir = Some(self.state_dir.to_owned());
        c.peers = self.peers.values().cloned().collect();
        c.announce = self.announcements.values().cloned().collect();
        c
    }
}

/// What an apply did that the agent reacts to.
#[derive(Default)]
pub struct SpeakerOutcome {
    /// The running speaker was shut down for new settings: its best paths are gone and
    /// BGP has to converge again.
    pub stopped: bool,
    /// A speaker was started: its handle and best-path stream.
    pub started: Option<(Speaker, BestPathStream)>,
    /// Calls that failed, each naming what it was for.
    pub problems: Vec<String>,
}

/// What it takes to bring the speaker to a wanted state.
#[derive(Debug, PartialEq)]
pub enum SpeakerStep {
    /// None runs: start one with the whole configuration.
    Start,
    /// Its AS, router id, cluster id or port changed: stop it and start anew.
    Restart,
    /// These calls on the running speaker (none when nothing changed).
    Calls(Vec<SpeakerOp>),
}

/// The running speaker and what it was given.
#[derive(Default)]
pub struct SpeakerApplier {
    speaker: Option<Speaker>,
    params: Option<SpeakerParams>,
    peers: BTreeMap<IpAddr, PeerConfig>,
    announced: BTreeMap<IpNet, Announcement>,
}

impl SpeakerApplier {
    /// The running speaker.
    pub fn speaker(&self) -> Option<&Speaker> {
        self.speaker.as_ref()
    }

    /// The peers the speaker runs.
    pub fn peers(&self) -> &BTreeMap<IpAddr, PeerConfig> {
        &self.peers
    }

    /// The calls that bring the running speaker to `want`'s peers and announcements.
    pub fn plan(&self, want: &SpeakerWant<'_>) -> Vec<SpeakerOp> {
        ops(&self.peers, want.peers, &self.announced, want.announcements)
    }

    /// Takes note that the speaker accepted `op`.
    pub fn record(&mut self, op: SpeakerOp) {
        match op {
            SpeakerOp::AddPeer(p) | SpeakerOp::UpdatePeer(p) => {
                info!(peer = %p.address, name = ?p.name, "peer configured");
                self.peers.insert(p.address, *p);
            }
            SpeakerOp::RemovePeer(a) => {
                info!(peer = %a, "peer removed");
                self.peers.remove(&a);
            }
            SpeakerOp::Announce(a) => {
                debug!(prefix = %a.prefix, "announced");
                self.announced.insert(a.prefix, *a);
            }
            SpeakerOp::Withdraw(p) => {
                debug!(prefix = %p, "withdrawn");
                self.announced.remove(&p);
            }
        }
    }

    /// What bringing the speaker to `want` takes: pure.
    pub fn step(&self, want: &SpeakerWant<'_>) -> SpeakerStep {
        match self.params {
            None => SpeakerStep::Start,
            Some(p) if p != want.params => SpeakerStep::Restart,
            Some(_) => SpeakerStep::Calls(self.plan(want)),
        }
    }

    /// Takes note that a speaker started with `want`'s configuration.
    fn started(&mut self, want: &SpeakerWant<'_>) {
        self.params = Some(want.params);
        self.peers = want.peers.clone();
        self.announced = want.announcements.clone();
    }

    /// Makes the speaker run `want`: starts it (anew when its settings changed), else
    /// makes the calls of [`SpeakerApplier::plan`].
    pub async fn apply(&mut self, want: &SpeakerWant<'_>) -> SpeakerOutcome {
        let mut out = SpeakerOutcome::default();
        let ops = match (self.step(want), self.speaker.clone()) {
            (SpeakerStep::Calls(ops), Some(speaker)) => Some((ops, speaker)),
            (SpeakerStep::Restart, _) => {
                info!(params = ?want.params, "speaker settings changed: restarting the speaker");
                if let Err(e) = self.stop().await {
                    debug!(error = %e, "stopping the speaker");
                }
                out.stopped = true;
                None
            }
            _ => None,
        };
        let Some((ops, speaker)) = ops else {
            match Speaker::start(want.config()).await {
                Ok(s) => match s.subscribe().await {
                    Ok(best) => {
                        info!(asn = %want.params.asn, port = want.params.port, peers = want.peers.len(), "BGP speaker started");
                        self.speaker = Some(s.clone());
                        self.started(want);
                        out.started = Some((s, best));
                    }
                    Err(e) => out.problems.push(format!("BGP speaker: {e}")),
                },
                Err(e) => out.problems.push(format!("BGP speaker: {e}")),
            }
            return out;
        };
        for op in ops {
            match call(&speaker, &op).await {
                Ok(()) => self.record(op),
                Err(e) => out
                    .problems
                    .push(format!("BGP speaker, {}: {e}", label(&op))),
            }
        }
        out
    }

    /// Shuts the speaker down for a graceful restart: peers keep our routes.
    pub async fn stop(&mut self) -> Result<(), SpeakerError> {
        self.params = None;
        match self.speaker.take() {
            Some(s) => s.shutdown(true).await,
            None => Ok(()),
        }
    }
}

fn label(op: &SpeakerOp) -> String {
    match op {
        SpeakerOp::AddPeer(p) => format!("adding peer {}", p.address),
        SpeakerOp::UpdatePeer(p) => format!("changing peer {}", p.address),
        SpeakerOp::RemovePeer(a) => format!("removing peer {a}"),
        SpeakerOp::Announce(a) => format!("announcing {}", a.prefix),
        SpeakerOp::Withdraw(p) => format!("withdrawing {p}"),
    }
}

/// One call; a peer already there is changed, a peer already gone is fine.
async fn call(speaker: &Speaker, op: &SpeakerOp) -> Result<(), SpeakerError> {
    match op {
        SpeakerOp::AddPeer(p) => match speaker.add_peer((**p).clone()).await {
            Err(SpeakerError::DuplicatePeer(_)) => speaker.update_peer((**p).clone()).await,
            other => other,
        },
        SpeakerOp::UpdatePeer(p) => speaker.update_peer((**p).clone()).await,
        SpeakerOp::RemovePeer(a) => match speaker.remove_peer(*a).await {
            Err(SpeakerError::UnknownPeer(_)) => Ok(()),
            other => other,
        },
        SpeakerOp::Announce(a) => speaker.announce((**a).clone()).await,
        SpeakerOp::Withdraw(p) => speaker.withdraw(*p).await.map(drop),
    }
}

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
/// removals first (a peer moving between resources is re-added), then changes. The peer
/// part is the speaker's own diff, [`diff_peers`].
pub fn ops(
    peers: &BTreeMap<IpAddr, PeerConfig>,
    want_peers: &BTreeMap<IpAddr, PeerConfig>,
    announced: &BTreeMap<IpNet, Announcement>,
    want_announced: &BTreeMap<IpNet, Announcement>,
) -> Vec<SpeakerOp> {
    let (removals, changes): (Vec<PeerOp>, Vec<PeerOp>) =
        diff_peers(peers.values(), want_peers.values())
            .into_iter()
            .partition(|op| matches!(op, PeerOp::Remove(_)));
    let peer_op = |op| match op {
        PeerOp::Add(p) => SpeakerOp::AddPeer(Box::new(p)),
        PeerOp::Update(p, _) => SpeakerOp::UpdatePeer(Box::new(p)),
        PeerOp::Remove(a) => SpeakerOp::RemovePeer(a),
    };
    let mut out: Vec<SpeakerOp> = removals.into_iter().map(peer_op).collect();
    for p in announced.keys() {
        if !want_announced.contains_key(p) {
            out.push(SpeakerOp::Withdraw(*p));
        }
    }
    out.extend(changes.into_iter().map(peer_op));
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

    fn want<'a>(
        peers: &'a BTreeMap<IpAddr, PeerConfig>,
        announcements: &'a BTreeMap<IpNet, Announcement>,
    ) -> SpeakerWant<'a> {
        SpeakerWant {
            params: SpeakerParams {
                asn: Asn(64512),
                router_id: Ipv4Addr::new(192, 0, 2, 1),
                cluster_id: None,
                port: 179,
            },
            v6: false,
            state_dir: Path::new("/nonexistent"),
            peers,
            announcements,
        }
    }

    #[test]
    fn what_the_speaker_accepted_is_not_asked_again_what_failed_is() {
        let mut a = SpeakerApplier::default();
        let peers: BTreeMap<_, _> = [peer("10.0.0.1", 1), peer("10.0.0.2", 2)].into();
        let anns: BTreeMap<_, _> = [ann("10.65.0.0/26", None)].into();
        let w = want(&peers, &anns);
        let first = a.plan(&w);
        assert_eq!(first.len(), 3);
        // The second peer's call fails: only the others are recorded.
        for op in first {
            if !matches!(&op, SpeakerOp::AddPeer(p) if p.address.to_string() == "10.0.0.2") {
                a.record(op);
            }
        }
        assert_eq!(
            a.plan(&w),
            vec![SpeakerOp::AddPeer(Box::new(
                peers[&"10.0.0.2".parse::<IpAddr>().unwrap()].clone()
            ))],
            "the failed call is made again"
        );
        for op in a.plan(&w) {
            a.record(op);
        }
        assert!(
            a.plan(&w).is_empty(),
            "the same wanted value twice: no call"
        );
        assert_eq!(a.peers(), &peers);
    }

    #[test]
    fn new_settings_restart_the_speaker_new_peers_do_not() {
        let mut a = SpeakerApplier::default();
        let peers: BTreeMap<_, _> = [peer("10.0.0.1", 1)].into();
        let anns = BTreeMap::new();
        let w = want(&peers, &anns);
        assert_eq!(a.step(&w), SpeakerStep::Start);
        a.started(&w);
        assert_eq!(a.step(&w), SpeakerStep::Calls(vec![]));
        let more: BTreeMap<_, _> = [peer("10.0.0.1", 1), peer("10.0.0.2", 2)].into();
        assert!(matches!(
            &a.step(&want(&more, &anns)),
            SpeakerStep::Calls(ops) if ops.len() == 1
        ));
        let mut port = w;
        port.params.port = 1179;
        assert_eq!(a.step(&port), SpeakerStep::Restart);
        let mut asn = w;
        asn.params.asn = Asn(65000);
        assert_eq!(a.step(&asn), SpeakerStep::Restart);
    }
}
