//! The speaker's public handle: start it, add and remove peers, originate prefixes,
//! subscribe to best-path changes, ask for status. Every call is a message to the core
//! task (`core.rs`), which owns the RIB and the sessions.
//!
//! ```text
//!    Speaker (cloneable handle)
//!        │ Command (bounded)                       best-path changes
//!        ▼                                     ┌──────────────────────► subscribers
//!   ┌─────────┐  SessionCmd  ┌────────────┐    │                        (the node agent)
//!   │  core   │─────────────►│ session ×N │◄───┼── TCP (reader, writer tasks per connection)
//!   │ (RIB)   │◄─────────────│ (FSM)      │    │
//!   └─────────┘ SessionEvent └────────────┘    │
//!        ▲   encoded UPDATEs ───────────────► writer of the established connection
//!        │ accepted connections
//!   listener task per listen address
//! ```

use crate::config::{Announcement, ConfigError, PeerConfig, SpeakerConfig};
use crate::core::{Command, Core};
use crate::rib::BestChange;
use crate::status::{PeerStatus, RouteEntry};
use crate::types::Family;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("peer {0} is not configured")]
    UnknownPeer(IpAddr),
    #[error("peer {0} is already configured")]
    DuplicatePeer(IpAddr),
    #[error("{0}")]
    Rejected(String),
    #[error("the speaker has stopped")]
    Stopped,
}

/// Which routes to list.
#[derive(Clone, Debug, Default)]
pub struct RouteQuery {
    /// Only this prefix, or with `longest_match` the most specific route covering it.
    pub prefix: Option<IpNet>,
    pub longest_match: bool,
    pub family: Option<Family>,
    /// Stop after this many destinations.
    pub limit: Option<usize>,
}

/// A handle on a running speaker; cheap to clone.
#[derive(Clone)]
pub struct Speaker {
    cmd: mpsc::Sender<Command>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Best-path changes, coalesced: each batch holds at most one change per prefix, the
/// latest. The first batch after subscribing is the whole table.
pub type BestPathStream = mpsc::Receiver<Vec<BestChange>>;

impl Speaker {
    /// Check the configuration, bind the listening sockets, start the core and the
    /// configured peers and announcements.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        config.validate()?;
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let core = Core::new(config, cmd_rx).await?;
        let task = tokio::spawn(core.run());
        Ok(Speaker {
            cmd: cmd_tx,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Add a peer and start its session (unless it is configured `shutdown`).
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.call(|r| Command::AddPeer(Box::new(peer), r)).await?
    }

    /// Change a peer. Policy changes apply in place (the peer is asked for a route
    /// refresh, or re-sent our routes); changes to the session itself restart it, and
    /// no other peer is touched.
    pub async fn update_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.call(|r| Command::UpdatePeer(Box::new(peer), r))
            .await?
    }

    /// Stop a peer's session with Cease/Peer De-configured and forget its routes.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.call(|r| Command::RemovePeer(address, r)).await?
    }

    /// Originate a prefix (or change the attributes of one already originated).
    pub async fn announce(&self, a: Announcement) -> Result<(), SpeakerError> {
        self.call(|r| Command::Announce(Box::new(a), r)).await?
    }

    /// Stop originating a prefix; `false` when it was not originated.
    pub async fn withdraw(&self, prefix: IpNet) -> Result<bool, SpeakerError> {
        self.call(|r| Command::Withdraw(prefix, r)).await?
    }

    /// Receive best-path changes from now on, starting with the whole table.
    pub async fn subscribe(&self) -> Result<BestPathStream, SpeakerError> {
        let (tx, rx) = mpsc::channel(16);
        self.call(|r| Command::Subscribe(tx, r)).await?;
        Ok(rx)
    }

    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        let rx = self.call(Command::Peers).await?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    pub async fn routes(&self, query: RouteQuery) -> Result<Vec<RouteEntry>, SpeakerError> {
        self.call(|r| Command::Routes(query, r)).await
    }

    /// Ask a peer to send its routes again (ROUTE-REFRESH, RFC 2918 / RFC 7313).
    pub async fn refresh(
        &self,
        address: IpAddr,
        family: Option<Family>,
    ) -> Result<(), SpeakerError> {
        self.call(|r| Command::Refresh(address, family, r)).await?
    }

    /// Restart a peer's session (Cease/Administrative Reset).
    pub async fn reset(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.call(|r| Command::Reset(address, r)).await?
    }

    /// Stop the speaker. `graceful`: close sessions without a NOTIFICATION and remember
    /// it, so peers keep our routes (RFC 4724) until we are back; otherwise send
    /// Cease/Administrative Shutdown to every peer.
    pub async fn shutdown(&self, graceful: bool) -> Result<(), SpeakerError> {
        let r = self.call(|r| Command::Shutdown { graceful, done: r }).await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    //! Whole speakers on loopback addresses: what the status reports about real sessions.

    use super::*;
    use crate::types::{Asn, RouterId};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn free_port(ip: Ipv4Addr) -> u16 {
        std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on loopback")
    }

    fn config(ip: Ipv4Addr, asn: u32, listen: Option<u16>) -> SpeakerConfig {
        let mut c = SpeakerConfig::new(Asn(asn), RouterId(ip));
        c.listen = listen
            .map(|port| vec![SocketAddr::new(ip.into(), port)])
            .unwrap_or_default();
        c.connect_retry = 1;
        c.graceful_restart.enabled = false;
        c
    }

    async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
        for _ in 0..400 {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// UPDATEs leave through the core's data queue, not the FSM: the status must count
    /// them all the same (it showed 0 sent while the peer counted every one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_counts_the_updates_sent() {
        let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 21), Ipv4Addr::new(127, 0, 0, 22));
        let b_port = free_port(b_ip);
        let mut a_cfg = config(a_ip, 65001, None);
        let mut to_b = PeerConfig::new(b_ip.into(), Asn(65002));
        to_b.port = b_port;
        to_b.source_address = Some(a_ip.into());
        a_cfg.peers.push(to_b);
        for p in ["10.0.0.0/24", "10.0.1.0/24"] {
            a_cfg.announce.push(Announcement::new(p.parse().unwrap()));
        }
        let mut b_cfg = config(b_ip, 65002, Some(b_port));
        let mut to_a = PeerConfig::new(a_ip.into(), Asn(65001));
        to_a.passive = true;
        b_cfg.peers.push(to_a);
        let b = Speaker::start(b_cfg).await.unwrap();
        let a = Speaker::start(a_cfg).await.unwrap();

        let (sent, received) = eventually(
            "B to hold both prefixes and both counts to agree",
            async || {
                let routes = b.routes(RouteQuery::default()).await.ok()?;
                let sent = a.peers().await.ok()?.first()?.updates_sent;
                let received = b.peers().await.ok()?.first()?.updates_received;
                (routes.len() == 2 && sent == received).then_some((sent, received))
            },
        )
        .await;
        assert!(sent >= 1, "A sent {sent} UPDATEs, B received {received}");
        a.shutdown(false).await.unwrap();
        b.shutdown(false).await.unwrap();
    }

    /// The Restart Time A advertises to B comes from A's peer entry when it has one: B
    /// keeps A's routes, stale, for those 2 s after A stops for a restart, then drops them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_peer_restart_time_bounds_how_long_stale_routes_stay() {
        let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 41), Ipv4Addr::new(127, 0, 0, 42));
        let b_port = free_port(b_ip);
        let mut a_cfg = config(a_ip, 65001, None);
        a_cfg.graceful_restart.enabled = true;
        let mut to_b = PeerConfig::new(b_ip.into(), Asn(65002));
        to_b.port = b_port;
        to_b.source_address = Some(a_ip.into());
        to_b.restart_time = Some(2);
        a_cfg.peers.push(to_b);
        a_cfg
            .announce
            .push(Announcement::new("10.9.0.0/24".parse().unwrap()));
        let mut b_cfg = config(b_ip, 65002, Some(b_port));
        b_cfg.graceful_restart.enabled = true;
        let mut to_a = PeerConfig::new(a_ip.into(), Asn(65001));
        to_a.passive = true;
        b_cfg.peers.push(to_a);
        let b = Speaker::start(b_cfg).await.unwrap();
        let a = Speaker::start(a_cfg).await.unwrap();
        eventually("B to learn A's prefix", async || {
            let routes = b.routes(RouteQuery::default()).await.ok()?;
            (routes.len() == 1).then_some(())
        })
        .await;
        a.shutdown(true).await.unwrap();
        let down = tokio::time::Instant::now();
        eventually("B to mark A's route stale", async || {
            let routes = b.routes(RouteQuery::default()).await.ok()?;
            routes.first()?.paths.iter().any(|p| p.stale).then_some(())
        })
        .await;
        eventually("B to drop A's stale route", async || {
            let routes = b.routes(RouteQuery::default()).await.ok()?;
            routes.is_empty().then_some(())
        })
        .await;
        let gone = down.elapsed();
        assert!(
            gone >= Duration::from_millis(1500) && gone < Duration::from_secs(10),
            "the stale route went after {gone:?}, the restart time is 2 s"
        );
        b.shutdown(false).await.unwrap();
    }

    /// A peer whose kernel drops our SYNs for a wrong TCP MD5 password never answers;
    /// the status says so instead of showing no error at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_connections_with_md5_say_so() {
        let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 31), Ipv4Addr::new(127, 0, 0, 32));
        let b_port = free_port(b_ip);
        let listener = crate::transport::listen(SocketAddr::new(b_ip.into(), b_port)).unwrap();
        crate::transport::set_md5_key(listener.as_raw_fd(), a_ip.into(), Some(b"theirs")).unwrap();
        let mut a_cfg = config(a_ip, 65001, None);
        let mut to_b = PeerConfig::new(b_ip.into(), Asn(65002));
        to_b.port = b_port;
        to_b.source_address = Some(a_ip.into());
        to_b.password = Some("ours".into());
        a_cfg.peers.push(to_b);
        let a = Speaker::start(a_cfg).await.unwrap();
        let err = eventually(
            "the status to explain the unanswered connection",
            async || a.peers().await.ok()?.first()?.last_error.clone(),
        )
        .await;
        assert!(err.contains("MD5"), "{err}");
        a.shutdown(false).await.unwrap();
        drop(listener);
    }

    /// Two nodes of a full mesh: both dial each other, no passive side.
    fn mesh_node(
        me: Ipv4Addr,
        my_port: u16,
        other: Ipv4Addr,
        other_port: u16,
        state_dir: Option<&std::path::Path>,
    ) -> SpeakerConfig {
        let mut c = config(me, 64512, Some(my_port));
        c.graceful_restart.enabled = true;
        c.state_dir = state_dir.map(std::path::Path::to_path_buf);
        let mut p = PeerConfig::new(other.into(), Asn(64512));
        p.port = other_port;
        p.source_address = Some(me.into());
        c.peers.push(p);
        c
    }

    /// How long the session took to be Established at both ends, or `None` after `limit`.
    async fn both_established(a: &Speaker, b: &Speaker, limit: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        while start.elapsed() < limit {
            let up = |s: Vec<PeerStatus>| s.first().is_some_and(|p| p.state.is_established());
            if up(a.peers().await.ok()?) && up(b.peers().await.ok()?) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The mesh scenario: two speakers that both connect at the same moment, one of them
    /// restarted again and again — with a Cease (the other side goes into its idle hold),
    /// as a graceful restart (RFC 4724), and by dropping its TCP connections without a
    /// NOTIFICATION. The session must be Established again within a few seconds each time,
    /// whatever the collision and idle-hold timing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mesh_pair_dialling_each_other_comes_back_after_every_restart() {
        #[derive(Clone, Copy, Debug)]
        enum Restart {
            Cease,
            Graceful,
            DropTcp,
        }
        let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 41), Ipv4Addr::new(127, 0, 0, 42));
        let (a_port, b_port) = (free_port(a_ip), free_port(b_ip));
        let dir = std::env::temp_dir().join(format!("serval-mesh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a_cfg = mesh_node(a_ip, a_port, b_ip, b_port, None);
        let (a, b) = tokio::join!(
            Speaker::start(a_cfg),
            Speaker::start(mesh_node(b_ip, b_port, a_ip, a_port, None))
        );
        let (a, mut b) = (a.unwrap(), b.unwrap());
        let took = both_established(&a, &b, Duration::from_secs(10)).await;
        assert!(took.is_some(), "no session after both dialled at once");

        let limit = Duration::from_secs(5);
        for round in 0..3 {
            for how in [Restart::Cease, Restart::Graceful, Restart::DropTcp] {
                let state_dir = matches!(how, Restart::Graceful).then_some(dir.as_path());
                b.shutdown(!matches!(how, Restart::Cease)).await.unwrap();
                // With no state directory a silent shutdown is a crash to the peer: the
                // connections end without a NOTIFICATION and nothing says it restarted.
                b = Speaker::start(mesh_node(b_ip, b_port, a_ip, a_port, state_dir))
                    .await
                    .unwrap();
                let took = both_established(&a, &b, limit).await;
                let a_status = a.peers().await.unwrap();
                assert!(
                    took.is_some(),
                    "round {round}, {how:?}: not Established within {limit:?}: {a_status:?}"
                );
            }
        }
        // The session went down once per restart, and only then.
        let flaps = a.peers().await.unwrap()[0].flaps;
        assert_eq!(flaps, 9, "A saw {flaps} session ends for 9 restarts");
        a.shutdown(false).await.unwrap();
        b.shutdown(false).await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
