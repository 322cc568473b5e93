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
