//! Peer-to-peer networking (libp2p): gossip of blocks and ops, headers-first
//! sync, discovery, peer scoring.
//!
//! One task owns the [`Swarm`]; the rest of the node talks to it through a
//! cloneable [`P2pHandle`] over a bounded channel, and feeds it local blocks
//! and ops through the node's announcement queue. Everything that touches
//! the chain (validating a gossiped block, serving headers, reading blocks)
//! runs on the blocking pool and reports back to the task, so the event
//! loop never waits on the chain lock.
//!
//! Nothing is forwarded before it is validated: gossipsub runs with
//! `validate_messages`, and each message is accepted, ignored or rejected
//! after the chain or mempool has checked it. A peer that sends something
//! provably bad (an invalid block, bad proof of work, undecodable bytes, an
//! op with a bad signature or stamp) loses score; at [`BAN_SCORE`] it is
//! disconnected and banned for a while.

pub mod protocol;
mod service;
mod sync;

use std::time::Duration;

use libp2p::{Multiaddr, PeerId, identity};
use tokio::sync::{mpsc, oneshot};

pub use service::{Behaviour, BehaviourEvent, build_swarm, start};

/// Score at or below which a peer is banned.
pub const BAN_SCORE: i32 = -100;

/// Penalties (subtracted from a peer's score).
pub mod penalty {
    /// Bytes that do not decode as what the topic or protocol carries.
    pub const GARBAGE: i32 = 100;
    /// A block or header that breaks a consensus rule (bad PoW included).
    pub const INVALID_BLOCK: i32 = 100;
    /// An op that fails a rule checkable without state (signature, stamp,
    /// limits).
    pub const INVALID_OP: i32 = 25;
    /// A sync response that does not answer the request.
    pub const BAD_RESPONSE: i32 = 50;
    /// A request over the protocol limits.
    pub const BAD_REQUEST: i32 = 25;
    /// Claimed more work than its headers delivered, or withheld it
    /// (refused or did not answer while we synced from it).
    pub const FRUITLESS_SYNC: i32 = 25;
    /// A sync request above the per-peer rate.
    pub const FLOOD: i32 = 5;
    /// A headers batch that does not continue the session's previous one
    /// (an honest peer may have reorganised meanwhile; the session starts
    /// again).
    pub const DISCONTINUOUS: i32 = 5;
    /// A gossiped orphan block that did not connect within a minute (its
    /// parent never arrived: junk, or a chain the sender does not have).
    pub const ORPHAN_NEVER_CONNECTED: i32 = 10;
}

/// Network settings.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Addresses to listen on (e.g. `/ip4/0.0.0.0/tcp/8646`; port 0 picks
    /// a free port).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (`/ip4/…/tcp/…/p2p/<peer id>`; the `/p2p`
    /// part is optional).
    pub bootstrap: Vec<Multiaddr>,
    /// Most established connections (in and out together).
    pub max_peers: u32,
    /// This node's identity.
    pub keypair: identity::Keypair,
    /// How long a banned peer stays banned.
    pub ban_duration: Duration,
}

impl P2pConfig {
    /// Defaults with this identity and listen address.
    pub fn new(keypair: identity::Keypair, listen: Multiaddr) -> Self {
        P2pConfig {
            listen: vec![listen],
            bootstrap: Vec::new(),
            max_peers: 50,
            keypair,
            ban_duration: Duration::from_secs(3600),
        }
    }
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// Building the transport or behaviour failed.
    #[error("cannot build the libp2p stack: {0}")]
    Build(String),
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// A dial failed.
    #[error("cannot dial {0}")]
    Dial(String),
}

pub use xirtam_node_api::{NetInfo, NetStats, PeerView};

pub(crate) enum Command {
    Info(oneshot::Sender<NetInfo>),
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    Ban(PeerId, oneshot::Sender<()>),
}

/// Cloneable handle to the network task.
#[derive(Debug, Clone)]
pub struct P2pHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    sync_target: tokio::sync::watch::Receiver<Option<u64>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Info(_) => f.write_str("Info"),
            Command::Dial(a, _) => write!(f, "Dial({a})"),
            Command::Ban(p, _) => write!(f, "Ban({p})"),
        }
    }
}

impl P2pHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The height the current sync session aims at (`None` when not
    /// syncing); changes are signalled (for progress bars).
    pub fn sync_target(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.sync_target.clone()
    }

    /// Network status.
    pub async fn info(&self) -> Result<NetInfo, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Info(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Dial a peer (a node operator's `addnode`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Dial(addr, tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await
            .map_err(|_| P2pError::Stopped)?
            .map_err(P2pError::Dial)
    }

    /// Disconnect and ban a peer for the configured duration.
    pub async fn ban(&self, peer: PeerId) -> Result<(), P2pError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Ban(peer, tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }
}
