//! The swarm task: one event loop owning the libp2p [`Swarm`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, allow_block_list, connection_limits, gossipsub, identify, identity,
    kad, noise, ping, tcp, yamux,
};
use tokio::sync::{Semaphore, mpsc};
use xirtam_proofs::block::Block;
use xirtam_proofs::op::Op;
use xirtam_proofs::params::Params;
use xirtam_proofs::pow::U256;
use xirtam_proofs::{Hash, OpError, decode, encode};

use super::protocol::{
    self, MAX_BLOCKS_PER_REQUEST, MAX_HEADERS, MAX_LOCATOR, Status, SyncCodec, SyncRequest,
    SyncResponse,
};
use super::sync::Session;
use super::{
    BAN_SCORE, Command, NetInfo, NetStats, P2pConfig, P2pError, P2pHandle, PeerView, penalty,
};
use crate::chain::{BlockStatus, ChainError, Origin};
use crate::mempool::MempoolError;
use crate::node::{ANNOUNCE_QUEUE, Announce, Node};
use crate::store::KvStore;

/// How often peers are asked for their status (and bans expire).
const TICK: Duration = Duration::from_secs(3);
/// Gossip messages validated at once; further ones wait.
const VALIDATION_SLOTS: usize = 4;
/// Gossip messages waiting or in validation at once; further ones are
/// dropped unvalidated (and not forwarded): sync recovers what matters.
const GOSSIP_QUEUE: usize = 512;
/// ... of which one peer may occupy at most this many.
const GOSSIP_QUEUE_PER_PEER: usize = 64;
/// Bytes of gossip messages waiting or in validation at once (a block may
/// be 2 MiB: counting messages alone would let 512 of them hold 1 GiB) ...
const GOSSIP_QUEUE_BYTES: usize = 24 * 1024 * 1024;
/// ... of which one peer may occupy at most this many (two maximal
/// blocks and change).
const GOSSIP_QUEUE_BYTES_PER_PEER: usize = 6 * 1024 * 1024;
/// Headers and blocks requests a peer may make per second, sustained
/// (an honest session makes one at a time, ~100/s at full speed on
/// loopback) ...
const REQUESTS_PER_SEC: f64 = 200.0;
/// ... and in a burst.
const REQUEST_BURST: f64 = 400.0;
/// Headers and blocks requests of one peer being answered at once.
const REQUESTS_IN_FLIGHT: usize = 4;
/// Connection slots kept for peers we dial ourselves.
const OUTBOUND_RESERVED: u32 = 8;
/// Orphan blocks (parent unknown) one peer may have held per
/// [`ORPHAN_WINDOW`]; further ones it gossips are dropped unheld, so no
/// peer can fill the shared pool of held blocks alone.
const ORPHANS_PER_PEER: usize = 16;
/// The window over which a peer's orphans are counted.
const ORPHAN_WINDOW: Duration = Duration::from_secs(60);
/// Held orphans awaiting judgement at once (16 per peer keeps it far
/// lower in practice).
const MAX_ORPHANS_JUDGED: usize = 4096;
/// A sync peer's pause after its first strike (doubling with each).
const SYNC_BACKOFF: Duration = Duration::from_secs(30);
/// Score a peer regains per tick (a misdemeanour fades in minutes; only a
/// steady stream of them leads to a ban).
const SCORE_DECAY_PER_TICK: i32 = 1;
/// Commands waiting for the task.
const COMMAND_QUEUE: usize = 64;

/// Connection slots for peers that dial us: all but the reserved
/// outbound ones (at least one).
fn inbound_slots(max_peers: u32) -> u32 {
    max_peers.saturating_sub(OUTBOUND_RESERVED).max(1)
}

/// The libp2p behaviour of a Xirtam node (public so tests can build a peer
/// with the same stack).
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Banned peers.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Connection limits.
    pub limits: connection_limits::Behaviour,
    /// Identify (protocol version per network, listen addresses).
    pub identify: identify::Behaviour,
    /// Ping (keeps connections alive, measures latency).
    pub ping: ping::Behaviour,
    /// Gossip of blocks and ops.
    pub gossipsub: gossipsub::Behaviour,
    /// Sync requests.
    pub sync: request_response::Behaviour<SyncCodec>,
    /// Discovery.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Behaviour")
    }
}

/// Build the swarm for `params` (TCP + noise + yamux and [`Behaviour`]).
pub fn build_swarm(
    params: &'static Params,
    keypair: identity::Keypair,
    max_peers: u32,
) -> Result<Swarm<Behaviour>, P2pError> {
    let build = |e: &dyn std::fmt::Display| P2pError::Build(e.to_string());
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| build(&e))?
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(params.max_block_bytes + 64 * 1024)
                .heartbeat_interval(Duration::from_millis(500))
                // One id per publication (origin, sequence number, data):
                // relays of it are de-duplicated, while a node can announce
                // the same op again (after a reorg returned it) and be
                // heard. Identical data from several origins is
                // de-duplicated by the chain and mempool instead.
                .message_id_fn(|m: &gossipsub::Message| {
                    let mut h = blake3::Hasher::new();
                    if let Some(src) = &m.source {
                        h.update(&src.to_bytes());
                    }
                    h.update(&m.sequence_number.unwrap_or(0).to_le_bytes());
                    h.update(&m.data);
                    gossipsub::MessageId::from(h.finalize().as_bytes().to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            let mut kad_config = kad::Config::new(protocol::kad_protocol(params));
            kad_config.set_query_timeout(Duration::from_secs(30));
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            kad.set_mode(Some(kad::Mode::Server));
            // Inbound connections may fill all but the reserved outbound
            // slots, so strangers connecting to us can never crowd out
            // the peers we chose (an eclipse needs our dials too).
            // One inbound connection more than the inbound slots is let
            // through, so that a newcomer can replace a misbehaving peer
            // (`make_inbound_room`).
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(max_peers + 1))
                .with_max_established_incoming(Some(inbound_slots(max_peers) + 1))
                .with_max_established_per_peer(Some(2))
                .with_max_pending_incoming(Some(32))
                .with_max_pending_outgoing(Some(32));
            Ok(Behaviour {
                blocked: Default::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    protocol::identify_version(params),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new()),
                gossipsub,
                sync: request_response::Behaviour::with_codec(
                    SyncCodec,
                    [(protocol::sync_protocol(params), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(protocol::REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(32),
                ),
                kad,
            })
        })
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Start the network: listen, dial the bootstrap peers, and run the event
/// loop on the current tokio runtime. Returns the handle and the addresses
/// it listens on (each ending in `/p2p/<peer id>`).
pub async fn start<S: KvStore>(
    node: Arc<Node<S>>,
    config: P2pConfig,
) -> Result<(P2pHandle, Vec<Multiaddr>, tokio::task::JoinHandle<()>), P2pError> {
    let params = node.params();
    let peer_id = config.keypair.public().to_peer_id();
    let mut swarm = build_swarm(params, config.keypair.clone(), config.max_peers)?;
    let blocks_topic = gossipsub::IdentTopic::new(protocol::blocks_topic(params));
    let ops_topic = gossipsub::IdentTopic::new(protocol::ops_topic(params));
    for t in [&blocks_topic, &ops_topic] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(t)
            .map_err(|e| P2pError::Build(e.to_string()))?;
    }
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    // Wait until every listener has an address (port 0 resolved).
    let mut listening = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listening.len() < config.listen.len() {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| P2pError::Listen {
                addr: config.listen[0].clone(),
                reason: "no listen address within 10 s".into(),
            })?;
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                listening.push(address.with(Protocol::P2p(peer_id)));
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(P2pError::Listen {
                    addr: config.listen[0].clone(),
                    reason: error.to_string(),
                });
            }
            _ => {}
        }
    }
    for addr in &listening {
        tracing::info!(target: "p2p", %addr, "listening");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (announce_tx, announce_rx) = mpsc::channel(ANNOUNCE_QUEUE);
    node.set_announcer(announce_tx);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(None);
    let mut service = Service {
        swarm,
        node,
        params,
        blocks_topic: blocks_topic.hash(),
        ops_topic: ops_topic.hash(),
        blocks_topic_ident: blocks_topic,
        ops_topic_ident: ops_topic,
        peers: HashMap::new(),
        scores: HashMap::new(),
        banned: HashMap::new(),
        ban_duration: config.ban_duration,
        pending: HashMap::new(),
        session: None,
        done_tx,
        slots: Arc::new(Semaphore::new(VALIDATION_SLOTS)),
        stats: NetStats::default(),
        listening: listening.clone(),
        bootstrap: config.bootstrap.clone(),
        max_peers: config.max_peers,
        fruitless: HashSet::new(),
        progress_tx,
        gossip_queued: HashMap::new(),
        request_buckets: HashMap::new(),
        requests_in_flight: HashMap::new(),
        status_pending: HashSet::new(),
        orphans: HashMap::new(),
        orphans_to_judge: VecDeque::new(),
        inbound: HashMap::new(),
        sync_backoff: HashMap::new(),
    };
    service.dial_bootstrap();
    let task = tokio::spawn(service.run(cmd_rx, announce_rx, done_rx));
    Ok((
        P2pHandle {
            tx: cmd_tx,
            peer_id,
            sync_target: progress_rx,
        },
        listening,
        task,
    ))
}

/// A verdict on a gossip message.
enum Verdict {
    Accept,
    Ignore,
    Reject(i32, String),
}

/// Results of work done off the event loop.
enum Done {
    Gossip {
        id: gossipsub::MessageId,
        source: PeerId,
        size: usize,
        is_block: bool,
        verdict: Verdict,
        orphan: Orphan,
    },
    Respond {
        peer: PeerId,
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    Locator {
        peer: PeerId,
        locator: Vec<Hash>,
    },
    Headers {
        peer: PeerId,
        result: Result<Checked, (i32, String)>,
    },
    Connected {
        peer: PeerId,
        result: Result<u64, (i32, String)>,
    },
    /// Senders of orphans that never connected.
    NeverConnected(Vec<PeerId>),
}

/// Gossip messages of one sender waiting or in validation.
#[derive(Debug, Clone, Copy, Default)]
struct Queued {
    messages: usize,
    bytes: usize,
}

/// Whether a gossiped block was an orphan (its parent unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orphan {
    /// Its parent is known (or it did not decode).
    No,
    /// Held until its parent arrives.
    Held(Hash),
    /// Dropped unheld: its sender was over its orphan allowance.
    Dropped,
}

/// A checked batch of sync headers.
struct Checked {
    /// Does the checked header chain carry more work than our tip and the
    /// network's minimum (so its bodies should be fetched now)?
    enough: bool,
    /// Does this batch hold the network's assumed-valid block?
    checkpoint: bool,
    /// Bodies we lack, in chain order: to fetch now when `enough`, else to
    /// hold until it is.
    hashes: Vec<Hash>,
    /// State after the last header.
    state: Box<xirtam_proofs::ChainState>,
}

/// What an outbound request asked.
enum Pending {
    Status,
    Headers { max: usize, last: Option<Hash> },
    Blocks(Vec<Hash>),
}

struct PeerState {
    addr: Multiaddr,
    status: Option<Status>,
}

struct Service<S: KvStore> {
    swarm: Swarm<Behaviour>,
    node: Arc<Node<S>>,
    params: &'static Params,
    blocks_topic: gossipsub::TopicHash,
    ops_topic: gossipsub::TopicHash,
    blocks_topic_ident: gossipsub::IdentTopic,
    ops_topic_ident: gossipsub::IdentTopic,
    peers: HashMap<PeerId, PeerState>,
    scores: HashMap<PeerId, i32>,
    banned: HashMap<PeerId, Instant>,
    ban_duration: Duration,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    session: Option<Session>,
    done_tx: mpsc::UnboundedSender<Done>,
    slots: Arc<Semaphore>,
    stats: NetStats,
    listening: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    max_peers: u32,
    /// Peers whose last sync session delivered nothing despite claiming
    /// more work: not synced from again until they report a new tip.
    fruitless: HashSet<(PeerId, Hash)>,
    /// Height the current sync session aims at (for progress bars).
    progress_tx: tokio::sync::watch::Sender<Option<u64>>,
    /// Gossip messages queued or in validation, per sender.
    gossip_queued: HashMap<PeerId, Queued>,
    /// Token buckets for inbound sync requests: (tokens, last refill).
    request_buckets: HashMap<PeerId, (f64, Instant)>,
    /// Inbound headers and blocks requests being answered, per peer.
    requests_in_flight: HashMap<PeerId, usize>,
    /// Peers with a status request outstanding (one at a time each).
    status_pending: HashSet<PeerId>,
    /// When each peer's recent orphans arrived (within ORPHAN_WINDOW).
    orphans: HashMap<PeerId, VecDeque<Instant>>,
    /// Orphans held, oldest first, with their sender: judged once
    /// ORPHAN_WINDOW old.
    orphans_to_judge: VecDeque<(Instant, Hash, PeerId)>,
    /// Connected peers that dialed us, and since when.
    inbound: HashMap<PeerId, Instant>,
    /// Sync strikes per peer and until when it is not synced from.
    sync_backoff: HashMap<PeerId, (u32, Instant)>,
}

fn is_stateless_failure(e: &OpError) -> bool {
    matches!(
        e,
        OpError::NameTooLong { .. }
            | OpError::ValueTooLong { .. }
            | OpError::TooManyOwners { .. }
            | OpError::ZeroNonce
            | OpError::Signature(_)
            | OpError::StampPow
    )
}

impl<S: KvStore> Service<S> {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut announce_rx: mpsc::Receiver<Announce>,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        let mut kad_tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(done) = done_rx.recv() => self.on_done(done),
                Some(a) = announce_rx.recv() => self.on_announce(a),
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(),
                _ = kad_tick.tick() => {
                    if self.swarm.behaviour_mut().kad.bootstrap().is_err() {
                        tracing::debug!(target: "p2p", "no known peers for a DHT bootstrap");
                    }
                }
            }
            let target = self.session.as_ref().map(|s| s.target_height);
            self.progress_tx.send_if_modified(|v| {
                let changed = *v != target;
                *v = target;
                changed
            });
        }
        tracing::info!(target: "p2p", "network task stopped");
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                let mut plain = addr.clone();
                plain.pop();
                self.swarm.behaviour_mut().kad.add_address(&peer, plain);
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(target: "p2p", %addr, error = %e, "cannot dial bootstrap peer");
            }
        }
    }

    // ---- commands and announcements ----

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Info(tx) => {
                let _ = tx.send(self.info());
            }
            Command::Dial(addr, tx) => {
                let r = self.swarm.dial(addr).map_err(|e| e.to_string());
                let _ = tx.send(r);
            }
            Command::Ban(peer, tx) => {
                self.ban(peer, "banned by the operator");
                let _ = tx.send(());
            }
        }
    }

    fn info(&self) -> NetInfo {
        let now = Instant::now();
        NetInfo {
            peer_id: self.swarm.local_peer_id().to_string(),
            listen: self.listening.iter().map(ToString::to_string).collect(),
            peers: self
                .peers
                .iter()
                .map(|(p, st)| PeerView {
                    peer_id: p.to_string(),
                    addr: st.addr.to_string(),
                    score: self.scores.get(p).copied().unwrap_or(0),
                    height: st.status.map(|s| s.height),
                })
                .collect(),
            banned: self
                .banned
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(p, _)| p.to_string())
                .collect(),
            syncing_from: self.session.as_ref().map(|s| s.peer.to_string()),
            stats: self.stats.clone(),
        }
    }

    fn on_announce(&mut self, a: Announce) {
        let (topic, data, what) = match a {
            Announce::Block(b) => (self.blocks_topic_ident.clone(), encode(&b), "block"),
            Announce::Op(o) => (self.ops_topic_ident.clone(), encode(&o), "op"),
        };
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(_) => tracing::debug!(target: "p2p", what, "published"),
            Err(e) => tracing::debug!(target: "p2p", what, error = %e, "not published"),
        }
    }

    // ---- scoring ----

    fn penalise(&mut self, peer: PeerId, points: i32, reason: &str) {
        if self.banned.contains_key(&peer) {
            // Work it started before the ban may still report: one ban is
            // enough.
            return;
        }
        let score = self.scores.entry(peer).or_insert(0);
        *score -= points;
        let score = *score;
        tracing::warn!(target: "p2p", %peer, points, score, reason, "peer penalised");
        if score <= BAN_SCORE {
            self.ban(peer, reason);
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(target: "p2p", %peer, reason, "peer banned");
        self.banned.insert(peer, Instant::now() + self.ban_duration);
        self.stats.bans += 1;
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.peers.remove(&peer);
        if self.syncing_from(peer) {
            self.session = None;
            self.maybe_start_sync();
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.banned.remove(&p);
            self.scores.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
            tracing::info!(target: "p2p", peer = %p, "ban expired");
        }
        self.judge_orphans();
        // Forget old per-peer records (they outlive disconnections, so that
        // reconnecting does not reset them, but not forever).
        for times in self.orphans.values_mut() {
            while times.front().is_some_and(|t| t.elapsed() > ORPHAN_WINDOW) {
                times.pop_front();
            }
        }
        self.orphans.retain(|_, t| !t.is_empty());
        let forget_after = SYNC_BACKOFF * 32;
        self.sync_backoff
            .retain(|_, (_, until)| until.elapsed() < forget_after);
        // Misdemeanours fade: scores of peers not banned drift back to 0.
        self.scores.retain(|p, score| {
            if self.banned.contains_key(p) {
                return true;
            }
            *score = (*score + SCORE_DECAY_PER_TICK).min(0);
            *score < 0
        });
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.request(p, SyncRequest::Status, Pending::Status);
        }
        if self.peers.is_empty() && !self.bootstrap.is_empty() {
            self.dial_bootstrap();
        }
    }

    /// Inbound slots are all taken (the connection limit lets one more in
    /// than [`inbound_slots`]): make room for `newcomer` by evicting the
    /// inbound peer with the lowest score when that score is below zero
    /// (newer first among equals; never the peer we sync from), or else
    /// turn the newcomer away. Returns whether the newcomer stays.
    fn make_inbound_room(&mut self, newcomer: PeerId) -> bool {
        if self.inbound.len() as u32 <= inbound_slots(self.max_peers) {
            return true;
        }
        let syncing = self.session.as_ref().map(|s| s.peer);
        let worst = self
            .inbound
            .iter()
            .filter(|(p, _)| **p != newcomer && Some(**p) != syncing)
            .map(|(p, since)| {
                (
                    self.scores.get(p).copied().unwrap_or(0),
                    std::cmp::Reverse(*since),
                    *p,
                )
            })
            .min();
        let evict = match worst {
            Some((score, _, p)) if score < 0 => p,
            _ => newcomer,
        };
        tracing::info!(target: "p2p", peer = %evict, "inbound slots full; disconnecting");
        self.stats.evicted += 1;
        self.inbound.remove(&evict);
        let _ = self.swarm.disconnect_peer_id(evict);
        evict != newcomer
    }

    fn request(&mut self, peer: PeerId, req: SyncRequest, what: Pending) {
        if matches!(what, Pending::Status) && !self.status_pending.insert(peer) {
            // One status request per peer at a time (a burst of gossiped
            // orphans would otherwise send one each).
            return;
        }
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, req);
        self.pending.insert(id, (peer, what));
    }

    // ---- swarm events ----

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                tracing::info!(target: "p2p", peer = %peer_id, %addr, "connected");
                if !self.peers.contains_key(&peer_id) && !endpoint.is_dialer() {
                    self.inbound.insert(peer_id, Instant::now());
                    if !self.make_inbound_room(peer_id) {
                        return;
                    }
                }
                self.peers
                    .entry(peer_id)
                    .or_insert(PeerState { addr, status: None });
                self.request(peer_id, SyncRequest::Status, Pending::Status);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(target: "p2p", peer = %peer_id, "disconnected");
                self.peers.remove(&peer_id);
                self.inbound.remove(&peer_id);
                self.fruitless.retain(|(p, _)| *p != peer_id);
                // Gossip and request counters stay until the work they
                // count finishes (they drop to zero and are removed then),
                // so reconnecting does not reset them.
                self.request_buckets.remove(&peer_id);
                self.status_pending.remove(&peer_id);
                if self.syncing_from(peer_id) {
                    self.session = None;
                    self.maybe_start_sync();
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let a = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                if !self.listening.contains(&a) {
                    self.listening.push(a);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(target: "p2p", peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour(b),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Sync(e) => self.on_sync_event(e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != protocol::identify_version(self.params) {
                    tracing::info!(target: "p2p", peer = %peer_id, version = %info.protocol_version, "peer on another network; disconnecting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                for a in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => {
                let connected = self.swarm.connected_peers().count() as u32;
                if connected < self.max_peers / 2
                    && !self.swarm.is_connected(&peer)
                    && !self.banned.contains_key(&peer)
                    && peer != *self.swarm.local_peer_id()
                {
                    let _ = self.swarm.dial(peer);
                }
            }
            _ => {}
        }
    }

    // ---- gossip ----

    /// Tell gossipsub what became of a message (forward, drop, or drop and
    /// penalise).
    fn report(
        &mut self,
        id: &gossipsub::MessageId,
        source: &PeerId,
        acceptance: gossipsub::MessageAcceptance,
    ) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, acceptance);
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let is_block = if message.topic == self.blocks_topic {
            true
        } else if message.topic == self.ops_topic {
            false
        } else {
            self.report(&id, &source, gossipsub::MessageAcceptance::Reject);
            return;
        };
        // Bounded work: a full queue, or a sender over its share, means the
        // message is dropped unvalidated (and so not forwarded).
        let (total, total_bytes) = self
            .gossip_queued
            .values()
            .fold((0, 0), |(n, b), q| (n + q.messages, b + q.bytes));
        let mine = self.gossip_queued.get(&source).copied().unwrap_or_default();
        let size = message.data.len();
        if total >= GOSSIP_QUEUE
            || mine.messages >= GOSSIP_QUEUE_PER_PEER
            || total_bytes + size > GOSSIP_QUEUE_BYTES
            || mine.bytes + size > GOSSIP_QUEUE_BYTES_PER_PEER
        {
            self.stats.gossip_dropped += 1;
            self.report(&id, &source, gossipsub::MessageAcceptance::Ignore);
            return;
        }
        let q = self.gossip_queued.entry(source).or_default();
        q.messages += 1;
        q.bytes += size;
        // Messages of this sender still queued count against its orphan
        // allowance: they may all be orphans.
        let may_hold_orphan = self.orphan_allowance(source, mine.messages);
        let node = self.node.clone();
        let done = self.done_tx.clone();
        let slots = self.slots.clone();
        let data = message.data;
        tokio::spawn(async move {
            // The semaphore is never closed.
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let work = tokio::task::spawn_blocking(move || {
                if is_block {
                    judge_block(&node, &data, may_hold_orphan)
                } else {
                    (judge_op(&node, &data), Orphan::No)
                }
            })
            .await;
            let (verdict, orphan) = work.unwrap_or_else(|e| {
                tracing::error!(target: "p2p", error = %e, "validation task failed");
                (Verdict::Ignore, Orphan::No)
            });
            let _ = done.send(Done::Gossip {
                id,
                source,
                size,
                is_block,
                verdict,
                orphan,
            });
        });
    }

    fn on_gossip_done(
        &mut self,
        id: gossipsub::MessageId,
        source: PeerId,
        size: usize,
        is_block: bool,
        verdict: Verdict,
        orphan: Orphan,
    ) {
        if let Some(q) = self.gossip_queued.get_mut(&source) {
            q.messages = q.messages.saturating_sub(1);
            q.bytes = q.bytes.saturating_sub(size);
            if q.messages == 0 {
                self.gossip_queued.remove(&source);
            }
        }
        let acceptance = match &verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
            Verdict::Reject(..) => gossipsub::MessageAcceptance::Reject,
        };
        self.report(&id, &source, acceptance);
        match verdict {
            Verdict::Accept if is_block => self.stats.blocks_accepted += 1,
            Verdict::Accept => self.stats.ops_accepted += 1,
            Verdict::Ignore => {}
            Verdict::Reject(points, reason) => {
                if points >= penalty::GARBAGE && reason.starts_with("undecodable") {
                    self.stats.garbage += 1;
                } else if is_block {
                    self.stats.blocks_rejected += 1;
                } else {
                    self.stats.ops_rejected += 1;
                }
                self.penalise(source, points, &reason);
            }
        }
        match orphan {
            Orphan::No => {}
            Orphan::Held(hash) => {
                self.stats.orphans_held += 1;
                self.orphans
                    .entry(source)
                    .or_default()
                    .push_back(Instant::now());
                // Judged a minute from now: an honest orphan's parent
                // arrives by then (sync catches up); junk never connects.
                if self.orphans_to_judge.len() < MAX_ORPHANS_JUDGED {
                    self.orphans_to_judge
                        .push_back((Instant::now(), hash, source));
                }
            }
            // Over its allowance: not held, and not blamed (a peer far
            // ahead of us gossips many orphans honestly).
            Orphan::Dropped => self.stats.orphans_dropped += 1,
        }
        if orphan != Orphan::No && self.peers.contains_key(&source) {
            // We lack its parent: the peer knows a chain we do not.
            self.request(source, SyncRequest::Status, Pending::Status);
        }
    }

    /// Orphans held ORPHAN_WINDOW ago that are still not stored never
    /// connected: their senders are blamed (on the blocking pool, since it
    /// reads the chain).
    fn judge_orphans(&mut self) {
        let mut due = Vec::new();
        while let Some((at, hash, peer)) = self.orphans_to_judge.front().copied()
            && at.elapsed() > ORPHAN_WINDOW
        {
            self.orphans_to_judge.pop_front();
            due.push((hash, peer));
        }
        if due.is_empty() {
            return;
        }
        let node = self.node.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let core = node.lock();
            let blamed = due
                .into_iter()
                .filter(|(h, _)| core.chain.meta(h).is_none())
                .map(|(_, p)| p)
                .collect();
            drop(core);
            let _ = done.send(Done::NeverConnected(blamed));
        });
    }

    /// May `peer` have another orphan held? (Fewer than ORPHANS_PER_PEER
    /// in the last ORPHAN_WINDOW, counting its `queued` messages.)
    fn orphan_allowance(&mut self, peer: PeerId, queued: usize) -> bool {
        let Some(times) = self.orphans.get_mut(&peer) else {
            return queued < ORPHANS_PER_PEER;
        };
        while times.front().is_some_and(|t| t.elapsed() > ORPHAN_WINDOW) {
            times.pop_front();
        }
        if times.is_empty() {
            self.orphans.remove(&peer);
            return queued < ORPHANS_PER_PEER;
        }
        times.len() + queued < ORPHANS_PER_PEER
    }

    // ---- sync protocol: serving ----

    fn on_sync_event(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.serve(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((from, what)) = self.pending.remove(&request_id) {
                        if matches!(what, Pending::Status) {
                            self.status_pending.remove(&from);
                        }
                        self.on_response(from, what, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, what)) = self.pending.remove(&request_id) {
                    if matches!(what, Pending::Status) {
                        self.status_pending.remove(&peer);
                    }
                    tracing::debug!(target: "p2p", %peer, error = %error, "sync request failed");
                    if !matches!(what, Pending::Status) && self.syncing_from(peer) {
                        tracing::info!(target: "p2p", %peer, error = %error, "sync peer failed; trying another");
                        self.strike(peer, "did not answer a sync request");
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(target: "p2p", %peer, error = %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Take one token from `peer`'s request bucket; false when empty.
    fn request_allowed(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let (tokens, last) = self
            .request_buckets
            .entry(peer)
            .or_insert((REQUEST_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * REQUESTS_PER_SEC)
            .min(REQUEST_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn serve(&mut self, peer: PeerId, req: SyncRequest, channel: ResponseChannel<SyncResponse>) {
        // Status is answered inline from memory; only the requests that
        // read the chain are limited (rate, and answers in progress).
        let busy = self.requests_in_flight.get(&peer).copied().unwrap_or(0);
        if !matches!(req, SyncRequest::Status)
            && (busy >= REQUESTS_IN_FLIGHT || !self.request_allowed(peer))
        {
            self.stats.requests_limited += 1;
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, SyncResponse::Refused("rate limited".into()));
            self.penalise(peer, penalty::FLOOD, "sync requests above the rate limit");
            return;
        }
        let refuse = match &req {
            SyncRequest::Headers { locator, .. } if locator.len() > MAX_LOCATOR => Some(format!(
                "locator of {} hashes (max {MAX_LOCATOR})",
                locator.len()
            )),
            SyncRequest::Blocks { hashes } if hashes.len() > MAX_BLOCKS_PER_REQUEST => {
                Some(format!(
                    "{} blocks asked (max {MAX_BLOCKS_PER_REQUEST})",
                    hashes.len()
                ))
            }
            _ => None,
        };
        if let Some(reason) = refuse {
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, SyncResponse::Refused(reason.clone()));
            self.penalise(peer, penalty::BAD_REQUEST, &reason);
            return;
        }
        if let SyncRequest::Status = req {
            let response = SyncResponse::Status(self.local_status());
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, response);
            return;
        }
        *self.requests_in_flight.entry(peer).or_default() += 1;
        let node = self.node.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let response = answer(&node, req);
            let _ = done.send(Done::Respond {
                peer,
                channel,
                response,
            });
        });
    }

    fn local_status(&self) -> Status {
        let t = self.node.tip_summary();
        Status {
            genesis: self.params.genesis_hash,
            height: t.height,
            tip: t.hash,
            work: t.work.to_be_bytes(),
        }
    }

    // ---- sync protocol: syncing ----

    fn on_response(&mut self, peer: PeerId, what: Pending, response: SyncResponse) {
        match (what, response) {
            (Pending::Status, SyncResponse::Status(st)) => {
                if st.genesis != self.params.genesis_hash {
                    self.ban(peer, "peer follows another genesis");
                    return;
                }
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.status = Some(st);
                }
                self.maybe_start_sync();
            }
            (Pending::Headers { max, last }, SyncResponse::Headers(headers)) => {
                if !self.syncing_from(peer) {
                    return;
                }
                if headers.len() > max {
                    self.sync_failed(peer, penalty::BAD_RESPONSE, "more headers than asked");
                    return;
                }
                if headers.is_empty() {
                    self.finish_sync();
                    return;
                }
                let (from, held) = match self.session.as_mut() {
                    Some(s) => {
                        s.more_headers = headers.len() == max;
                        s.last_header = headers.last().map(|h| h.hash()).or(last);
                        s.headers += headers.len() as u64;
                        (s.checked.take(), std::mem::take(&mut s.unfetched))
                    }
                    None => return,
                };
                let node = self.node.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = check_headers(&node, from, held, &headers);
                    let _ = done.send(Done::Headers { peer, result });
                });
            }
            (Pending::Blocks(asked), SyncResponse::Blocks(blocks)) => {
                if !self.syncing_from(peer) {
                    return;
                }
                let matches = !blocks.is_empty()
                    && blocks.len() <= asked.len()
                    && blocks
                        .iter()
                        .zip(&asked)
                        .all(|(b, h)| b.header.hash() == *h);
                if !matches {
                    self.sync_failed(
                        peer,
                        penalty::BAD_RESPONSE,
                        "blocks response does not match the request",
                    );
                    return;
                }
                if let Some(s) = self.session.as_mut() {
                    // Ask again for what did not fit.
                    for h in asked[blocks.len()..].iter().rev() {
                        s.queue.push_front(*h);
                    }
                }
                let assumed_valid = self.session.as_ref().is_some_and(|s| s.through_checkpoint);
                let node = self.node.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = connect_blocks(&node, blocks, assumed_valid);
                    let _ = done.send(Done::Connected { peer, result });
                });
            }
            (what, SyncResponse::Refused(reason)) => {
                tracing::info!(target: "p2p", %peer, reason, "peer refused a sync request");
                if !matches!(what, Pending::Status) && self.syncing_from(peer) {
                    self.strike(peer, "refused to serve the chain it advertised");
                }
            }
            (_, _) => {
                self.sync_failed(peer, penalty::BAD_RESPONSE, "response of the wrong kind");
            }
        }
    }

    /// Ask `peer` for a full batch of headers after `locator`; `last` is
    /// the last header already received this session.
    fn request_headers(&mut self, peer: PeerId, locator: Vec<Hash>, last: Option<Hash>) {
        self.request(
            peer,
            SyncRequest::Headers {
                locator,
                max: MAX_HEADERS as u32,
            },
            Pending::Headers {
                max: MAX_HEADERS,
                last,
            },
        );
    }

    fn syncing_from(&self, peer: PeerId) -> bool {
        self.session.as_ref().is_some_and(|s| s.peer == peer)
    }

    /// End the session with `peer` after a failed step. `points == 0`
    /// means it was not the peer's fault (e.g. a timestamp ahead of our
    /// clock, a storage error): the session pauses until the next status.
    fn sync_failed(&mut self, peer: PeerId, points: i32, reason: &str) {
        if points == 0 {
            // Not provably its fault (a header ahead of our clock, say),
            // but its chain is of no use now: a strike, so that sync moves
            // on to the next candidate instead of asking it again.
            self.strike(peer, reason);
            return;
        }
        if self.syncing_from(peer) {
            self.session = None;
        }
        self.penalise(peer, points, reason);
        self.maybe_start_sync();
    }

    /// A peer that advertised more work withheld it (refused, timed out,
    /// or its headers ran out short of its claim): penalise it, end the
    /// session, and do not sync from it again until it reports another
    /// tip, so the next candidate gets its turn.
    fn strike(&mut self, peer: PeerId, reason: &str) {
        if self.syncing_from(peer) {
            self.session = None;
        }
        if let Some(st) = self.peers.get(&peer).and_then(|p| p.status) {
            self.fruitless.insert((peer, st.tip));
        }
        // And a pause that does not depend on the tip it reports next
        // (a new tip every status would otherwise clear the strike):
        // 30 s, doubling with each strike up to 8 minutes.
        let (n, until) = self.sync_backoff.entry(peer).or_insert((0, Instant::now()));
        *n = (*n + 1).min(5);
        *until = Instant::now() + SYNC_BACKOFF * (1 << (*n - 1));
        self.penalise(peer, penalty::FRUITLESS_SYNC, reason);
        self.maybe_start_sync();
    }

    /// Start a session with the connected peer that claims the most work,
    /// if it is more than ours.
    fn maybe_start_sync(&mut self) {
        if self.session.is_some() {
            return;
        }
        let ours = self.node.tip_summary().work;
        let best = self
            .peers
            .iter()
            .filter_map(|(p, st)| st.status.map(|s| (*p, s)))
            .filter(|(p, s)| !self.fruitless.contains(&(*p, s.tip)))
            .filter(|(p, _)| {
                self.sync_backoff
                    .get(p)
                    .is_none_or(|(_, until)| *until <= Instant::now())
            })
            .filter(|(_, s)| U256::from_be_bytes(s.work) > ours)
            .max_by(|a, b| {
                U256::from_be_bytes(a.1.work)
                    .cmp(&U256::from_be_bytes(b.1.work))
                    .then_with(|| b.0.cmp(&a.0))
            });
        let Some((peer, status)) = best else {
            return;
        };
        tracing::info!(target: "p2p", %peer, height = status.height, "syncing from peer");
        self.session = Some(Session::new(
            peer,
            status.height,
            U256::from_be_bytes(status.work),
        ));
        let node = self.node.clone();
        let done = self.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let locator = node.lock().chain.locator();
            let _ = done.send(Done::Locator { peer, locator });
        });
    }

    fn continue_sync(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let peer = s.peer;
        if s.last_log.elapsed() > Duration::from_secs(2) {
            s.last_log = Instant::now();
            tracing::info!(
                target: "p2p",
                %peer,
                height = self.node.tip_summary().height,
                target = s.target_height,
                blocks_per_s = format!("{:.0}", s.rate()),
                "sync progress"
            );
        }
        if !s.queue.is_empty() {
            let hashes = s.next_bodies();
            self.request(
                peer,
                SyncRequest::Blocks {
                    hashes: hashes.clone(),
                },
                Pending::Blocks(hashes),
            );
        } else if s.more_headers {
            let last = s.last_header;
            self.request_headers(peer, last.into_iter().collect(), last);
        } else {
            self.finish_sync();
        }
    }

    fn finish_sync(&mut self) {
        let Some(s) = self.session.take() else {
            return;
        };
        let tip = self.node.tip_summary();
        let claimed = self.peers.get(&s.peer).and_then(|p| p.status);
        tracing::info!(
            target: "p2p",
            peer = %s.peer,
            blocks = s.blocks,
            height = tip.height,
            secs = format!("{:.1}", s.started.elapsed().as_secs_f64()),
            blocks_per_s = format!("{:.0}", s.rate()),
            "sync session finished"
        );
        if let Some(c) = claimed
            && s.target_work > tip.work
        {
            // It claimed more work (when we chose it) than it delivered. A
            // peer that kept mining meanwhile delivered its claim and more.
            self.fruitless.insert((s.peer, c.tip));
            self.penalise(
                s.peer,
                penalty::FRUITLESS_SYNC,
                "claimed more work than its headers hold",
            );
        }
        if self.peers.contains_key(&s.peer) {
            self.request(s.peer, SyncRequest::Status, Pending::Status);
        }
        self.maybe_start_sync();
    }

    // ---- results from the blocking pool ----

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Gossip {
                id,
                source,
                size,
                is_block,
                verdict,
                orphan,
            } => self.on_gossip_done(id, source, size, is_block, verdict, orphan),
            Done::Respond {
                peer,
                channel,
                response,
            } => {
                if let Some(n) = self.requests_in_flight.get_mut(&peer) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.requests_in_flight.remove(&peer);
                    }
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            Done::Locator { peer, locator } => {
                if self.syncing_from(peer) {
                    self.request_headers(peer, locator, None);
                }
            }
            Done::Headers { peer, result } => {
                if !self.syncing_from(peer) {
                    return;
                }
                match result {
                    Ok(c) => {
                        let Some(s) = self.session.as_mut() else {
                            return;
                        };
                        s.checked = Some(*c.state);
                        s.through_checkpoint |= c.checkpoint;
                        if c.enough {
                            s.queue.extend(c.hashes);
                        } else {
                            s.unfetched = c.hashes;
                            if s.unfetched.len() > super::sync::MAX_UNFETCHED {
                                self.strike(peer, "too many headers without more work than ours");
                                return;
                            }
                        }
                        self.continue_sync();
                    }
                    Err((points, reason)) => self.sync_failed(peer, points, &reason),
                }
            }
            Done::NeverConnected(peers) => {
                let ours = self.node.tip_summary().work;
                for p in peers {
                    // A peer that claims a heavier chain than ours may be
                    // right, with our sync stalled (by someone else): not
                    // blamed; sync holds it to its claim.
                    let ahead = self
                        .peers
                        .get(&p)
                        .and_then(|st| st.status)
                        .is_some_and(|st| U256::from_be_bytes(st.work) > ours);
                    if ahead {
                        continue;
                    }
                    self.stats.orphans_never_connected += 1;
                    self.penalise(
                        p,
                        penalty::ORPHAN_NEVER_CONNECTED,
                        "gossiped an orphan that never connected",
                    );
                }
            }
            Done::Connected { peer, result } => {
                if !self.syncing_from(peer) {
                    return;
                }
                match result {
                    Ok(n) => {
                        self.stats.synced_blocks += n;
                        if let Some(s) = self.session.as_mut() {
                            s.blocks += n;
                        }
                        self.continue_sync();
                    }
                    Err((points, reason)) => self.sync_failed(peer, points, &reason),
                }
            }
        }
    }
}

// ---- blocking work (chain lock held) ----

/// Judge a gossiped block. `may_hold_orphan`: is its sender within its
/// orphan allowance? (If not, a block whose parent we lack is dropped
/// without being held.)
fn judge_block<S: KvStore>(
    node: &Node<S>,
    data: &[u8],
    may_hold_orphan: bool,
) -> (Verdict, Orphan) {
    let block: Block = match decode(data) {
        Ok(b) => b,
        Err(e) => {
            return (
                Verdict::Reject(penalty::GARBAGE, format!("undecodable block: {e}")),
                Orphan::No,
            );
        }
    };
    // An orphan here is any block whose parent is not stored: one whose
    // parent is unknown, and one that builds on a held orphan.
    let parent_stored = node.lock().chain.meta(&block.header.prev).is_some();
    if !may_hold_orphan && !parent_stored {
        return (Verdict::Ignore, Orphan::Dropped);
    }
    let hash = block.header.hash();
    match node.submit_block(block) {
        Ok(s) => match s.status {
            BlockStatus::Tip | BlockStatus::SideBranch => (Verdict::Accept, Orphan::No),
            BlockStatus::AlreadyKnown => (Verdict::Ignore, Orphan::No),
            BlockStatus::Orphan => (Verdict::Ignore, Orphan::Held(hash)),
            BlockStatus::Held if !parent_stored => (Verdict::Ignore, Orphan::Held(hash)),
            // A lighter branch: held, not relayed.
            BlockStatus::Held => (Verdict::Ignore, Orphan::No),
        },
        Err(e) if e.is_peer_fault() => (
            Verdict::Reject(penalty::INVALID_BLOCK, format!("invalid block: {e}")),
            Orphan::No,
        ),
        Err(e) => {
            tracing::debug!(target: "p2p", error = %e, "gossiped block not accepted now");
            (Verdict::Ignore, Orphan::No)
        }
    }
}

fn judge_op<S: KvStore>(node: &Node<S>, data: &[u8]) -> Verdict {
    let op: Op = match decode(data) {
        Ok(o) => o,
        Err(e) => return Verdict::Reject(penalty::GARBAGE, format!("undecodable op: {e}")),
    };
    match node.submit_op(op) {
        Ok(_) => Verdict::Accept,
        Err(MempoolError::Invalid(e)) if is_stateless_failure(&e) => {
            Verdict::Reject(penalty::INVALID_OP, format!("invalid op: {e}"))
        }
        Err(_) => Verdict::Ignore,
    }
}

fn answer<S: KvStore>(node: &Node<S>, req: SyncRequest) -> SyncResponse {
    match req {
        SyncRequest::Status => SyncResponse::Refused("status is answered inline".into()),
        SyncRequest::Headers { locator, max } => {
            let max = (max as usize).min(MAX_HEADERS);
            SyncResponse::Headers(node.lock().chain.headers_after(&locator, max))
        }
        SyncRequest::Blocks { hashes } => {
            // Stored blocks never change: read them without the chain lock,
            // so that serving a large response never stalls validation or
            // RPC.
            let store = node.lock().chain.store().clone();
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for h in hashes {
                match crate::chain::read_block(&*store, &h) {
                    Ok(Some(b)) => {
                        bytes += encode(&b).len();
                        out.push(b);
                        if bytes >= protocol::BLOCKS_RESPONSE_SOFT_BYTES {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(target: "p2p", error = %e, "cannot read a block to serve");
                        break;
                    }
                }
            }
            SyncResponse::Blocks(out)
        }
    }
}

/// Check headers from a peer, continuing `from` (the state after the
/// previous batch of the session: the batch must build on it, so that a
/// session's headers are one chain). `held` are earlier checked hashes
/// whose bodies were not fetched yet. Once the header chain carries more
/// work than our tip and the network's minimum, every body we lack is
/// returned for fetching. `Err((0, _))` means "not the peer's fault" (e.g.
/// a timestamp ahead of our clock).
fn check_headers<S: KvStore>(
    node: &Node<S>,
    from: Option<xirtam_proofs::ChainState>,
    mut held: Vec<Hash>,
    headers: &[xirtam_proofs::Header],
) -> Result<Checked, (i32, String)> {
    if let (Some(f), Some(first)) = (&from, headers.first())
        && first.prev != f.tip_hash
    {
        // An honest peer whose chain reorganised between two batches
        // answers this way too: a small penalty and a new session (from
        // our full locator), which costs a peer that keeps doing it a ban.
        return Err((
            penalty::DISCONTINUOUS,
            "headers do not continue the previous batch".into(),
        ));
    }
    let core = node.lock();
    let checkpoint = core.chain.params().assume_valid.is_some_and(|cp| {
        headers
            .iter()
            .any(|h| h.height == cp.height && h.hash() == cp.hash)
    });
    match core
        .chain
        .check_headers(from.as_ref(), headers, crate::node::unix_now())
    {
        Ok(Some(state)) => {
            held.extend(
                headers
                    .iter()
                    .map(|h| h.hash())
                    .filter(|h| core.chain.meta(h).is_none()),
            );
            Ok(Checked {
                enough: core.chain.outweighs(state.total_work()),
                checkpoint,
                hashes: held,
                state: Box::new(state),
            })
        }
        Ok(None) => Err((penalty::BAD_RESPONSE, "empty headers batch".into())),
        Err(ChainError::NotFound(what)) => Err((
            penalty::BAD_RESPONSE,
            format!("headers do not connect to our chain ({what})"),
        )),
        Err(e) if e.is_peer_fault() => {
            Err((penalty::INVALID_BLOCK, format!("invalid header: {e}")))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

/// Connect synced blocks in order; returns how many were connected.
/// `assumed_valid`: the session's header chain passes through the
/// network's assumed-valid block.
fn connect_blocks<S: KvStore>(
    node: &Node<S>,
    blocks: Vec<Block>,
    assumed_valid: bool,
) -> Result<u64, (i32, String)> {
    let mut n = 0;
    for b in blocks {
        match node.submit_block_from(b, Origin::Synced { assumed_valid }) {
            // Credit only for blocks that joined the chain: a block held on
            // a lighter branch earns a syncing peer nothing.
            Ok(s) if !matches!(s.status, BlockStatus::Orphan | BlockStatus::Held) => n += 1,
            Ok(_) => {}
            Err(e) if e.is_peer_fault() => {
                return Err((penalty::INVALID_BLOCK, format!("invalid block: {e}")));
            }
            Err(e) => return Err((0, e.to_string())),
        }
    }
    Ok(n)
}
