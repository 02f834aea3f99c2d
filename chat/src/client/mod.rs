//! The client library: everything a chat UI needs (TDLib-like).
//!
//! [`Client`] is a cheap, cloneable handle to one device's client core;
//! any number of tasks may use it at once (send while a long-poll is
//! open). [`Client::start`] runs the background work (keep polling, flush
//! the outbox when messages are due or a server answers again, rotate
//! keys), and [`Client::events`] is a stream of typed [`ClientEvent`]s for
//! a user interface. The core is split along its seams:
//!
//! * [`connection`]: the server connection ([`ServerConn`], made by a
//!   [`Connector`]), login tokens;
//! * [`directory`]: verified lookups ([`Directory`], a light client), the
//!   record cache, contact changes;
//! * [`keys`]: medium-term keys, and which key of a recipient's device to
//!   wrap to;
//! * [`outbox`]: queue, deliver, retry;
//! * [`inbox`]: receive, verify, file, acknowledge;
//! * [`contacts`]: passes granted and received;
//! * [`devices`]: link, provision, list and remove devices;
//! * [`read`]: read state, the same on every device;
//! * [`store`]: the local store (RocksDB).
//!
//! The core is generic over [`Directory`] and [`Connector`], so the whole
//! client runs in one process against an in-memory chain and server
//! (`chat/tests/it/client.rs`); [`ChatClient`] is the production pairing:
//! a light client over HTTP nodes and JSON-RPC over pinned TLS.
//!
//! * Identity: a root key (owns the `@name` record), a device key (signs
//!   events, logs in), medium-term key-agreement keys (rotated, old ones
//!   kept until they expire), all in the local store.
//! * Lookups go through the light client only: every record the client
//!   acts on is a [`VerifiedUser`] or [`crate::records::VerifiedServer`].

pub mod connection;
pub mod contacts;
pub mod devices;
pub mod directory;
pub mod groups;
pub mod inbox;
pub mod keys;
pub mod outbox;
pub mod read;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xirtam_lightclient::{HttpSource, LightClient};
use xirtam_proofs::name::NameKind;
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, PublicKey, SecretKey};

use crate::api::code;
use crate::crypto::{CryptoError, DeviceKeys, MediumSecret, Sealer};
use crate::records::{Device, RecordError, UserRecord, VerifiedUser};
pub use connection::{CallError, Connector, HttpConnector, ServerConn};
pub use contacts::Grant;
pub use devices::{Approved, LinkCode, PendingLink, SyncPart};
pub use directory::Directory;
pub use inbox::{MAX_HELD, MAX_REJECTED_LOG, Rejection};
use store::{Identity, LocalStore, Message, Servers, StoreError, StoredMedium};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The network.
    pub params: &'static Params,
    /// Directory node RPC URLs (the light client's sources).
    pub nodes: Vec<String>,
    /// Blocks under the tip lookups are proven at (default: the network's).
    pub depth: Option<u64>,
    /// A cached recipient record older than this is looked up again before
    /// sending.
    pub record_ttl: Duration,
    /// How long the previous server is still polled after a move.
    pub grace: Duration,
    /// Where the root key is (a file of 64 hex digits, mode 0600); default
    /// `DATADIR/root.key`. It is needed only to register, move or change
    /// devices, so it can be kept apart (another device, a USB stick) and
    /// given only for those.
    pub root_key_file: Option<PathBuf>,
    /// How long to wait for an own record write to be confirmed.
    pub confirm_timeout: Duration,
    /// Timeout of one server call (long-polls add their wait).
    pub rpc_timeout: Duration,
    /// Lifetime of a medium-term key (a new one after half of it).
    pub medium_lifetime: Duration,
    /// An envelope whose sender cannot be verified now (no verified answer
    /// from the directory, or a sender not registered yet: a new record
    /// takes a few blocks to confirm) is kept aside and retried on each
    /// poll for this long, then rejected. Other envelopes are not held up.
    pub hold_unverified: Duration,
    /// Delay before the first retry of a failed delivery; it doubles with
    /// each attempt, up to 256 times this.
    pub retry_backoff: Duration,
}

impl ClientConfig {
    /// Defaults for `params` and `nodes`.
    pub fn new(params: &'static Params, nodes: Vec<String>) -> Self {
        ClientConfig {
            params,
            nodes,
            depth: None,
            root_key_file: None,
            record_ttl: Duration::from_secs(30),
            grace: Duration::from_secs(7 * 24 * 3600),
            confirm_timeout: Duration::from_secs(120),
            rpc_timeout: Duration::from_secs(10),
            medium_lifetime: Duration::from_secs(7 * 24 * 3600),
            hold_unverified: Duration::from_secs(600),
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// What went wrong, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The light client gave no verified answer.
    #[error("directory lookup failed: {0}")]
    Lookup(#[from] xirtam_lightclient::Error),
    /// A record is absent or does not parse.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Cryptography.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// No identity in the data directory.
    #[error("no identity in {0}; run `xirtam-chat init` first")]
    NoIdentity(PathBuf),
    /// An identity already exists.
    #[error("an identity already exists in {0}")]
    Exists(PathBuf),
    /// The identity is for another network.
    #[error("the identity in {dir} is for network {theirs}, not {ours}")]
    WrongNetwork {
        /// Data directory.
        dir: PathBuf,
        /// Its network.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// The root key is needed and not where it was looked for.
    #[error(
        "the root key (owner of this identity's name) is not at {0}: pass --root-key FILE where you keep it; it is needed only to register, move or change devices"
    )]
    NoRootKey(PathBuf),
    /// The root key file holds another key, or no key.
    #[error("{0} does not hold this identity's root key")]
    WrongRootKey(PathBuf),
    /// A device's medium-term key was seen before but none is valid now:
    /// sending to its long-term key would silently lose forward secrecy.
    #[error(
        "no valid medium-term key for device {device} of {user} from {server} (the last one seen expired or is no longer valid; the server may be withholding new ones): the message stays queued rather than lose forward secrecy"
    )]
    NoForwardSecrecy {
        /// The recipient.
        user: Name,
        /// Its device.
        device: xirtam_proofs::PublicKey,
        /// The server asked.
        server: Name,
    },
    /// Not registered yet.
    #[error("this device has no name yet; run `xirtam-chat register @name --server ~server`")]
    NotRegistered,
    /// A server could not be reached.
    #[error("server {server} ({url}) is unreachable: {reason}")]
    Unreachable {
        /// The server.
        server: Name,
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A server refused a call.
    #[error("server {server} refused {what}: {message} (code {code})")]
    Refused {
        /// The server.
        server: Name,
        /// The call.
        what: &'static str,
        /// JSON-RPC error code.
        code: i32,
        /// Its message.
        message: String,
    },
    /// A server answered something that fails verification.
    #[error("server {server} misbehaved: {reason}")]
    Misbehaved {
        /// The server.
        server: Name,
        /// What it did.
        reason: String,
    },
    /// An own record write was not confirmed in time.
    #[error(
        "{name} was not confirmed within {secs} s; is the network mining? The write may still land"
    )]
    NotConfirmed {
        /// The name.
        name: Name,
        /// The wait.
        secs: u64,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// Linking a device failed (nothing was added to the record).
    #[error("device link failed: {0}")]
    LinkFailed(String),
    /// Our verified record no longer lists this device: it was removed
    /// (with the root key, from another device).
    #[error(
        "this device ({device}) was removed from {name}'s record; it can no longer send or receive as {name}"
    )]
    Removed {
        /// Our name.
        name: Name,
        /// This device's signing key.
        device: PublicKey,
    },
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Delivery of one queued message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Local sequence of the message.
    pub local: u64,
    /// Recipient.
    pub to: Name,
    /// The server that signed the receipt.
    pub server: Name,
    /// The sequence number it assigned.
    pub seq: u64,
    /// Height of the recipient's verified record used.
    pub record_height: u64,
    /// Height of the server's verified record used.
    pub server_height: u64,
    /// Devices the key was wrapped to.
    pub devices: usize,
    /// Medium-term keys refused (forged, stale, or for unknown devices).
    pub refused_keys: Vec<String>,
    /// Devices wrapped to with their long-term key, because no medium-term
    /// key of theirs was ever seen: this message has no forward secrecy
    /// for them (a UI should say so).
    pub long_term: Vec<xirtam_proofs::PublicKey>,
}

/// Result of [`Core::flush`].
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    /// Messages delivered now.
    pub delivered: Vec<Delivery>,
    /// Messages still queued, with the last error.
    pub queued: Vec<(u64, Name, String)>,
}

/// Result of [`Core::poll`].
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// New messages, in arrival order.
    pub messages: Vec<Message>,
    /// Envelopes dropped, and why (undecryptable, bad signature, device not
    /// in the sender's record).
    pub rejected: Vec<String>,
    /// Envelopes already seen (replays).
    pub duplicates: usize,
    /// Envelopes not for this device (copies for our other devices).
    pub skipped: usize,
    /// Peers whose contact pass arrived (our messages to them now skip
    /// their requests lane).
    pub passes: Vec<Name>,
    /// Messages added by provisioning bundles from our other devices.
    pub synced: usize,
    /// Envelopes kept aside because their sender could not be verified now
    /// (retried on the next polls, for `hold_unverified`).
    pub held: Vec<String>,
    /// Servers that could not be read now.
    pub errors: Vec<String>,
}

/// What happened, for a user interface. Everything an event reports is
/// already in the local store when it is emitted: a UI that missed events
/// ([`ClientEvent::Lagged`]) reloads from the store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A message arrived from a contact, or was sent by another of our
    /// devices.
    Message(Message),
    /// A message arrived from someone this device has not accepted (a
    /// request: show it apart, [`Core::accept`] to answer).
    Request(Message),
    /// A queued message was delivered: a server signed its receipt.
    Delivered(Delivery),
    /// A delivery failed; the message stays queued and is retried.
    Retrying {
        /// Local sequence of the message.
        local: u64,
        /// Recipient.
        to: Name,
        /// Attempts so far.
        attempts: u32,
        /// Why.
        error: String,
    },
    /// The event `message` follows (`after`) has not arrived: a message is
    /// missing before it (dropped by a server, rejected, or sent before
    /// this device joined).
    Missing {
        /// The message that arrived.
        message: Hash,
        /// The one missing before it.
        after: Hash,
    },
    /// A user's verified record now names another server.
    Moved {
        /// The user (may be us: another of our devices moved).
        user: Name,
        /// The server before.
        from: Name,
        /// The server now.
        to: Name,
    },
    /// A user's verified record lists other devices (for our own name:
    /// a device was linked or removed).
    Devices {
        /// The user.
        user: Name,
        /// Signing keys added.
        added: Vec<PublicKey>,
        /// Signing keys removed.
        removed: Vec<PublicKey>,
    },
    /// A peer's contact pass arrived: our messages to them skip their
    /// requests lane.
    Pass(Name),
    /// Another of our devices read the conversation with `peer` up to
    /// message `id`.
    Read {
        /// The other side of the conversation.
        peer: Name,
        /// The last message read.
        id: Hash,
    },
    /// An envelope was rejected (`~server #seq: reason`).
    Rejected(String),
    /// Part of a provisioning bundle from another of our devices was
    /// stored (history: reload the conversations).
    Synced {
        /// The part's number, from 0.
        part: u32,
        /// How many parts the bundle has.
        parts: u32,
        /// Messages it added.
        messages: usize,
    },
    /// The background task hit an error; it keeps trying.
    Error(String),
    /// The background work stopped for good (this device was removed
    /// from our record).
    Stopped(String),
    /// This many events were dropped because the stream was read too
    /// slowly; reload from the store.
    Lagged(u64),
    /// A group message arrived (or was sent by another of our devices).
    GroupMessage(store::GroupMsg),
    /// An invitation to a group arrived ([`Core::group_join`] accepts it).
    GroupInvite {
        /// Who invited us.
        from: Name,
        /// The group.
        group: Hash,
        /// Its name.
        name: String,
    },
    /// A group's log has a new entry.
    GroupChanged {
        /// The group.
        group: Hash,
        /// What changed.
        change: String,
    },
    /// A group's hosting server showed us a log that does not agree with
    /// what another member saw (or broke the log's rule): the group is
    /// marked, and a UI should say so and offer to move it.
    GroupForked {
        /// The group.
        group: Hash,
        /// What was seen.
        reason: String,
    },
}

/// A stream of [`ClientEvent`]s (from [`Client::events`]).
#[derive(Debug)]
pub struct Events(tokio::sync::broadcast::Receiver<ClientEvent>);

impl Events {
    /// The next event; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        use tokio::sync::broadcast::error::RecvError;
        match self.0.recv().await {
            Ok(e) => Some(e),
            Err(RecvError::Lagged(n)) => Some(ClientEvent::Lagged(n)),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        use tokio::sync::broadcast::error::TryRecvError;
        match self.0.try_recv() {
            Ok(e) => Some(e),
            Err(TryRecvError::Lagged(n)) => Some(ClientEvent::Lagged(n)),
            Err(_) => None,
        }
    }
}

/// Events buffered per subscriber before the slowest one lags.
const EVENT_BUFFER: usize = 4096;

/// One device's client core, shared by every [`Client`] handle. Its
/// methods take `&self`: state that changes is behind locks held for short
/// synchronous steps, and the steps that must not interleave (two
/// receives, two flushes, two grants) are serialised each on its own.
pub struct Core<D, C: Connector> {
    config: ClientConfig,
    data_dir: PathBuf,
    store: LocalStore,
    dir: D,
    connector: C,
    identity: parking_lot::RwLock<Identity>,
    device: DeviceKeys,
    mediums: parking_lot::RwLock<Vec<MediumSecret>>,
    /// Remembers recipients' keys: repeat wraps to them are cheaper.
    sealer: parking_lot::Mutex<Sealer>,
    conns: parking_lot::Mutex<HashMap<Name, Arc<connection::Conn<C::Conn>>>>,
    users: parking_lot::Mutex<HashMap<Name, (Instant, VerifiedUser)>>,
    /// The peers this device granted a pass (its contacts), read once from
    /// the store: every received message is checked against it.
    contacts: parking_lot::Mutex<Option<HashSet<Name>>>,
    /// Next local sequence number (messages and outbox entries).
    local: parking_lot::Mutex<u64>,
    /// Held while a conversation head is read and moved.
    heads: parking_lot::Mutex<()>,
    /// One receive at a time.
    receiving: tokio::sync::Mutex<()>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    /// One contact grant at a time.
    grants: tokio::sync::Mutex<()>,
    /// Held by whoever reads and writes group states.
    groups: tokio::sync::Mutex<()>,
    /// Woken when a group is added (the group loop starts reading it).
    groups_wake: tokio::sync::Notify,
    /// Group changes that lost a compare-and-swap and were made again.
    group_retries: std::sync::atomic::AtomicU64,
    /// One write of our own record at a time (each starts from the latest
    /// record, so a link and a removal do not undo each other).
    record_writes: tokio::sync::Mutex<()>,
    /// Wakes the background flusher (a message was queued).
    outbox_wake: tokio::sync::Notify,
    /// The next background flush tries every queued message early.
    flush_early: AtomicBool,
    events: tokio::sync::broadcast::Sender<ClientEvent>,
}

/// A handle to a client core: clone it into every task that needs it.
pub struct Client<D, C: Connector>(Arc<Core<D, C>>);

impl<D, C: Connector> Clone for Client<D, C> {
    fn clone(&self) -> Self {
        Client(self.0.clone())
    }
}

impl<D, C: Connector> std::ops::Deref for Client<D, C> {
    type Target = Core<D, C>;
    fn deref(&self) -> &Core<D, C> {
        &self.0
    }
}

/// The production client: a light client over HTTP directory nodes, and
/// JSON-RPC over TLS pinned to each server's verified key.
pub type ChatClient = Client<LightClient<HttpSource>, HttpConnector>;

impl<D, C: Connector> std::fmt::Debug for Core<D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Client({:?}, {})",
            self.identity.read().name,
            self.data_dir.display()
        )
    }
}

impl<D, C: Connector> std::fmt::Debug for Client<D, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

pub(crate) fn head_key(peer: &Name) -> String {
    format!("head/{peer}")
}

/// State key of a move whose record is not confirmed yet (the server).
const MOVING_KEY: &str = "moving";

impl ChatClient {
    /// Create a new identity (root and device keys) in `dir`, with a light
    /// client over `config.nodes`.
    pub fn init(dir: &Path, config: ClientConfig) -> Result<Self> {
        let lc = Self::make_light_client(dir, &config)?;
        Self::init_with(dir, config, lc, HttpConnector)
    }

    /// Open the identity in `dir`, with a light client over `config.nodes`.
    pub fn open(dir: &Path, config: ClientConfig) -> Result<Self> {
        let lc = Self::make_light_client(dir, &config)?;
        Self::open_with(dir, config, lc, HttpConnector)
    }

    fn make_light_client(dir: &Path, config: &ClientConfig) -> Result<LightClient<HttpSource>> {
        crate::create_private_dir(dir)
            .map_err(|e| ClientError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        Ok(crate::light_client(
            config.params,
            dir.join("headers"),
            config.depth,
            &config.nodes,
        )?)
    }

    /// The light client (tip, sources).
    pub fn light_client(&self) -> &LightClient<HttpSource> {
        &self.dir
    }
}

impl<D: Directory, C: Connector> Client<D, C> {
    fn open_store(dir: &Path) -> Result<LocalStore> {
        crate::create_private_dir(dir)
            .map_err(|e| ClientError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        Ok(LocalStore::open(&dir.join("store"))?)
    }

    /// Create a new identity (root and device keys) in `dir`, looking
    /// names up in `directory` and reaching servers through `connector`.
    pub fn init_with(dir: &Path, config: ClientConfig, directory: D, connector: C) -> Result<Self> {
        let store = Self::open_store(dir)?;
        if store.state::<Identity>("identity")?.is_some() {
            return Err(ClientError::Exists(dir.to_path_buf()));
        }
        let root_path = root_path(dir, &config);
        if root_path.exists() {
            return Err(ClientError::Exists(root_path));
        }
        let root_seed = random32()?;
        if let Some(parent) = root_path.parent() {
            crate::create_private_dir(parent).map_err(|e| {
                ClientError::Invalid(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        crate::write_secret_file(&root_path, hex::encode(root_seed).as_bytes()).map_err(|e| {
            ClientError::Invalid(format!("cannot write {}: {e}", root_path.display()))
        })?;
        let identity = Identity {
            network: config.params.name.to_string(),
            root: SecretKey::from_seed(root_seed).public(),
            device_seed: random32()?,
            name: None,
        };
        store.put_state("identity", &identity)?;
        Self::from_parts(dir, config, store, directory, connector, identity)
    }

    /// Open the identity in `dir` (see [`Client::init_with`]).
    pub fn open_with(dir: &Path, config: ClientConfig, directory: D, connector: C) -> Result<Self> {
        let store = Self::open_store(dir)?;
        let identity: Identity = store
            .state("identity")?
            .ok_or_else(|| ClientError::NoIdentity(dir.to_path_buf()))?;
        Self::from_parts(dir, config, store, directory, connector, identity)
    }

    fn from_parts(
        dir: &Path,
        config: ClientConfig,
        store: LocalStore,
        directory: D,
        connector: C,
        identity: Identity,
    ) -> Result<Self> {
        if identity.network != config.params.name {
            return Err(ClientError::WrongNetwork {
                dir: dir.to_path_buf(),
                theirs: identity.network.clone(),
                ours: config.params.name.to_string(),
            });
        }
        let stored: Vec<StoredMedium> = store.state("mediums")?.unwrap_or_default();
        let mediums = stored
            .into_iter()
            .map(|m| MediumSecret::from_parts(m.key, m.secret))
            .collect::<Result<Vec<_>, _>>()?;
        let local = store.next_local()?;
        Ok(Client(Arc::new(Core {
            device: DeviceKeys::from_seed(identity.device_seed),
            config,
            data_dir: dir.to_path_buf(),
            store,
            dir: directory,
            connector,
            identity: parking_lot::RwLock::new(identity),
            mediums: parking_lot::RwLock::new(mediums),
            sealer: parking_lot::Mutex::new(Sealer::new()),
            conns: parking_lot::Mutex::new(HashMap::new()),
            users: parking_lot::Mutex::new(HashMap::new()),
            contacts: parking_lot::Mutex::new(None),
            local: parking_lot::Mutex::new(local),
            heads: parking_lot::Mutex::new(()),
            receiving: tokio::sync::Mutex::new(()),
            flushing: tokio::sync::Mutex::new(()),
            grants: tokio::sync::Mutex::new(()),
            groups: tokio::sync::Mutex::new(()),
            groups_wake: tokio::sync::Notify::new(),
            group_retries: std::sync::atomic::AtomicU64::new(0),
            record_writes: tokio::sync::Mutex::new(()),
            outbox_wake: tokio::sync::Notify::new(),
            flush_early: AtomicBool::new(false),
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
        })))
    }

    /// A stream of what happens from now on.
    pub fn events(&self) -> Events {
        Events(self.0.events.subscribe())
    }

    /// Run the background work until the returned [`Running`] is stopped
    /// or dropped: keep long-polling (`wait` per poll), deliver queued
    /// messages as soon as they are due or a server we read answers again,
    /// rotate keys. Outcomes are [`ClientEvent`]s.
    pub fn start(&self, wait: Duration) -> Running {
        let (stop, _) = tokio::sync::watch::channel(false);
        let receiver = {
            let c = self.clone();
            let mut stop = stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    () = c.receive_loop(wait) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        };
        let flusher = {
            let c = self.clone();
            let mut stop = stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    () = c.flush_loop() => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        };
        let grouper = {
            let c = self.clone();
            let mut stop = stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    () = c.group_loop(wait) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            })
        };
        Running {
            stop,
            tasks: vec![receiver, flusher, grouper],
        }
    }

    async fn receive_loop(&self, wait: Duration) {
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            let got = self.receive(wait).await;
            if matches!(&got, Ok(r) if r.messages.is_empty() && r.errors.is_empty()) {
                // A server that answers a long-poll at once with nothing is
                // not asked again at once.
                tokio::time::sleep_until(started + Duration::from_millis(250)).await;
            }
            match got {
                Ok(r) if r.errors.is_empty() => {
                    if failures > 0 {
                        // A server answers again: what waits out a backoff
                        // gets an early try.
                        self.flush_early.store(true, Ordering::Relaxed);
                        self.outbox_wake.notify_one();
                    }
                    failures = 0;
                }
                Ok(r) => {
                    for e in r.errors {
                        self.emit(ClientEvent::Error(e));
                    }
                    failures += 1;
                }
                Err(e @ ClientError::Removed { .. }) => {
                    self.emit(ClientEvent::Stopped(e.to_string()));
                    return;
                }
                Err(e) => {
                    self.emit(ClientEvent::Error(e.to_string()));
                    failures += 1;
                }
            }
            if failures > 0 {
                // 250 ms doubling, at most 8 s: a server that comes back is
                // read again within seconds.
                let pause = Duration::from_millis(250 << failures.min(5));
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn flush_loop(&self) {
        loop {
            let early = self.flush_early.swap(false, Ordering::Relaxed);
            if let Err(e) = self.flush_with(early).await {
                self.emit(ClientEvent::Error(e.to_string()));
            }
            // Sleep until the next message is due (at most a minute), or a
            // message is queued, or a server answers again.
            let wait = match self.next_due() {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(unix_ms())),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_millis(50), Duration::from_secs(60));
            let _ = tokio::time::timeout(wait, self.outbox_wake.notified()).await;
        }
    }
}

/// The background work of a client ([`Client::start`]); stops when
/// dropped.
#[derive(Debug)]
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop the background work and wait for it to end (an operation in
    /// flight is abandoned; everything acknowledged is already stored).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where the root key file is looked for.
fn root_path(dir: &Path, config: &ClientConfig) -> PathBuf {
    config
        .root_key_file
        .clone()
        .unwrap_or_else(|| dir.join("root.key"))
}

impl<D: Directory, C: Connector> Core<D, C> {
    pub(crate) fn emit(&self, e: ClientEvent) {
        // No subscriber is fine: everything is in the store.
        let _ = self.events.send(e);
    }

    /// An event from this device of `me` to `to`, signed.
    pub(crate) fn sign_event(
        &self,
        me: &Name,
        to: &Name,
        after: Hash,
        kind: u8,
        body: Vec<u8>,
    ) -> crate::crypto::SignedEvent {
        crate::crypto::SignedEvent::sign(
            &self.device,
            &self.config.params.genesis_hash,
            crate::crypto::Event {
                sender: me.clone(),
                device: self.device.device().sign,
                recipient: to.clone(),
                time: unix_ms(),
                after,
                kind,
                body,
            },
        )
    }

    pub(crate) fn next_local(&self) -> u64 {
        let mut l = self.local.lock();
        let n = *l;
        *l += 1;
        n
    }

    /// The registered name, if any.
    pub fn name(&self) -> Option<Name> {
        self.identity.read().name.clone()
    }

    /// This device's public keys (as listed in the record).
    pub fn device(&self) -> Device {
        self.device.device()
    }

    /// The root key's public half (owner of the record).
    pub fn root_key(&self) -> PublicKey {
        self.identity.read().root
    }

    /// Where this client looks for its root key file.
    pub fn root_key_path(&self) -> PathBuf {
        root_path(&self.data_dir, &self.config)
    }

    /// The directory (verified lookups).
    pub fn directory(&self) -> &D {
        &self.dir
    }

    /// The root key, read from its file when an operation needs it (and
    /// checked against the identity's public root key).
    fn root(&self) -> Result<SecretKey> {
        let path = self.root_key_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NoRootKey(path));
            }
            Err(e) => {
                return Err(ClientError::Invalid(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let root = self.root_key();
        let key = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(SecretKey::from_seed)
            .filter(|k| k.public() == root)
            .ok_or_else(|| ClientError::WrongRootKey(path.clone()))?;
        Ok(key)
    }

    /// The servers this device reads from.
    pub fn servers(&self) -> Result<Servers> {
        Ok(self.store.state("servers")?.unwrap_or_default())
    }

    pub(crate) fn me(&self) -> Result<Name> {
        self.name().ok_or(ClientError::NotRegistered)
    }

    /// Register `name` with concierge `server`: claim the name with this
    /// device in its record, wait for confirmation, then set up a mailbox
    /// and a medium-term key on the server.
    pub async fn register(&self, name: &Name, server: &Name) -> Result<VerifiedUser> {
        let root = self.root()?;
        if name.kind() != NameKind::User {
            return Err(ClientError::Invalid(format!(
                "{name} is not a user name (user names start with @)"
            )));
        }
        if let Some(n) = self.name()
            && &n != name
        {
            return Err(ClientError::Invalid(format!(
                "this device is already registered as {n}"
            )));
        }
        self.server(server).await?;
        let record = UserRecord {
            server: server.clone(),
            devices: vec![self.device.device()],
        };
        let value = record.to_value().map_err(ClientError::Invalid)?;
        let latest = self.dir.resolve_latest(name).await?;
        if latest.record().is_none_or(|r| r.value.as_bytes() != value) {
            self.dir.publish(&root, name, value.clone()).await?;
        }
        let v = self.wait_value(name, &value).await?;
        self.take_name(name, server)?;
        self.setup_server(server).await?;
        Ok(v)
    }

    /// Store `name` as this device's, on `server`.
    fn take_name(&self, name: &Name, server: &Name) -> Result<()> {
        let mut identity = self.identity.read().clone();
        identity.name = Some(name.clone());
        let mut b = self.store.batch();
        b.state("identity", &identity)?;
        b.state(
            "servers",
            &Servers {
                current: Some(server.clone()),
                previous: None,
            },
        )?;
        b.commit()?;
        *self.identity.write() = identity;
        Ok(())
    }

    /// Take `name` on this device: the owner's root key (kept elsewhere,
    /// e.g. on the first device) has already listed this device in the
    /// name's record. Checks that the *verified* record lists it, then
    /// logs in to the record's server. No root key is needed here.
    pub async fn join(&self, name: &Name) -> Result<VerifiedUser> {
        if let Some(n) = self.name()
            && &n != name
        {
            return Err(ClientError::Invalid(format!(
                "this device is already registered as {n}"
            )));
        }
        let v = self.user(name, true).await?;
        let me = self.device.device().sign;
        if v.record().device(&me).is_none() {
            return Err(ClientError::Invalid(format!(
                "{name}'s verified record (height {}) does not list this device ({me}); add it with the root key first",
                v.lookup().height()
            )));
        }
        let server = v.record().server.clone();
        self.take_name(name, &server)?;
        // The server's light client may not have seen the new record yet.
        let deadline = Instant::now() + self.config.confirm_timeout;
        loop {
            match self.setup_server(&server).await {
                Err(ClientError::Refused {
                    code: code::UNAUTHORIZED,
                    ..
                }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => break other?,
            }
        }
        Ok(v)
    }

    /// Move to another concierge: set up a mailbox there, update the
    /// record, and keep reading the old server for the grace period.
    pub async fn move_to(&self, server: &Name) -> Result<VerifiedUser> {
        let me = self.me()?;
        let root = self.root()?;
        let servers = self.servers()?;
        if servers.current.as_ref() == Some(server) {
            return Err(ClientError::Invalid(format!("{me} is already on {server}")));
        }
        self.server(server).await?;
        self.setup_server(server).await?;
        let _writes = self.record_writes.lock().await;
        // The devices as they are now, unconfirmed writes included.
        let mine = VerifiedUser::from_lookup(self.dir.resolve_latest(&me).await?)?;
        let record = UserRecord {
            server: server.clone(),
            devices: mine.record().devices.clone(),
        };
        let value = record.to_value().map_err(ClientError::Invalid)?;
        // Read the new server at once (senders switch as soon as they see
        // the new record), but switch to it only once the record is
        // confirmed: until then the current server stays current, and a
        // move that never confirms loses nothing.
        self.store.put_state(MOVING_KEY, server)?;
        self.dir.publish(&root, &me, value.clone()).await?;
        let v = self.wait_value(&me, &value).await?;
        self.switch_to(server)?;
        Ok(v)
    }

    /// Make `server` current; the old one is still read for the grace
    /// period. Clears a pending move.
    fn switch_to(&self, server: &Name) -> Result<()> {
        let mut servers = self.servers()?;
        if servers.current.as_ref() != Some(server) {
            let until = unix_ms() / 1000 + self.config.grace.as_secs();
            servers.previous = servers.current.take().map(|old| (old, until));
            servers.current = Some(server.clone());
        }
        let mut b = self.store.batch();
        b.state("servers", &servers)?;
        b.delete_state(MOVING_KEY)?;
        Ok(b.commit()?)
    }

    /// Set up our mailbox on `server`: create it, register every contact
    /// pass granted so far (a move carries the contacts over), publish a
    /// medium-term key.
    async fn setup_server(&self, server: &Name) -> Result<()> {
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        conn.rpc
            .mailbox_create(&token)
            .await
            .map_err(|e| connection::to_client_error(server, conn.rpc.label(), "the mailbox", e))?;
        let me = self.me()?;
        let granted = {
            let _grants = self.grants.lock().await;
            self.own_pass(&me)?
        };
        let passes: Vec<[u8; 32]> = granted.iter().map(|g| g.pass).collect();
        self.register_passes(server, &passes).await?;
        self.rotate_medium()?;
        self.publish_medium(server).await
    }

    /// The servers this device reads: current, the previous one during the
    /// grace period, and the one a pending move goes to.
    fn read_servers(&self) -> Result<Vec<Name>> {
        let servers = self.servers()?;
        let moving: Option<Name> = self.store.state(MOVING_KEY)?;
        let mut list: Vec<Name> = servers
            .current
            .iter()
            .cloned()
            .chain(servers.previous.iter().map(|(s, _)| s.clone()))
            .collect();
        if let Some(m) = moving
            && !list.contains(&m)
        {
            list.push(m);
        }
        Ok(list)
    }
}

/// The messages whose `after` link names an event that is not among
/// `messages`: something sent before them in their conversation never
/// arrived here (dropped by a server, rejected, or sent before this device
/// joined). A UI says "a message is missing" before each.
pub fn gaps(messages: &[Message]) -> HashSet<Hash> {
    let ids: HashSet<Hash> = messages.iter().map(|m| m.id).collect();
    messages
        .iter()
        .filter(|m| m.after != Hash::ZERO && !ids.contains(&m.after))
        .map(|m| m.id)
        .collect()
}

/// Order messages so that each comes after the event its `after` link
/// names (when that event is known), keeping local order otherwise.
pub fn order_by_after(messages: Vec<Message>) -> Vec<Message> {
    let index: HashMap<Hash, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id, i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); messages.len()];
    let mut roots = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match index.get(&m.after) {
            Some(&p) if p != i => children[p].push(i),
            _ => roots.push(i),
        }
    }
    // Depth-first from the roots in local order; a parent's children follow
    // it, earliest first. Messages on a cycle (impossible with hashes) are
    // appended at the end.
    let mut out = Vec::with_capacity(messages.len());
    let mut done = vec![false; messages.len()];
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        roots.into_iter().map(std::cmp::Reverse).collect();
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        if done[i] {
            continue;
        }
        done[i] = true;
        out.push(i);
        for &c in &children[i] {
            ready.push(std::cmp::Reverse(c));
        }
    }
    out.extend((0..messages.len()).filter(|&i| !done[i]));
    let mut slots: Vec<Option<Message>> = messages.into_iter().map(Some).collect();
    out.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::outbox::backoff;
    use super::*;

    fn msg(local: u64, id: u8, after: u8) -> Message {
        Message {
            local,
            id: Hash([id; 32]),
            from: Name::new("@a").expect("valid"),
            to: Name::new("@b").expect("valid"),
            time_ms: 0,
            after: Hash([after; 32]),
            text: String::new(),
            delivered: true,
            verified_at: 0,
            via: None,
            request: false,
        }
    }

    #[test]
    fn after_links_order_messages() {
        // 3 follows 2 follows 1, but they arrived 3, 1, 2.
        let got = order_by_after(vec![msg(1, 3, 2), msg(2, 1, 0), msg(3, 2, 1)]);
        let ids: Vec<u8> = got.iter().map(|m| m.id.0[0]).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }

    #[test]
    fn unknown_after_keeps_local_order() {
        let got = order_by_after(vec![msg(1, 5, 9), msg(2, 6, 8)]);
        let ids: Vec<u8> = got.iter().map(|m| m.id.0[0]).collect();
        assert_eq!(ids, vec![5, 6]);
    }

    #[test]
    fn a_missing_link_is_a_gap() {
        // 1 <- 2, then 4 follows 3, which never arrived; 5 starts afresh.
        let m = vec![msg(1, 1, 0), msg(2, 2, 1), msg(3, 4, 3), msg(4, 5, 0)];
        assert_eq!(gaps(&m), HashSet::from([Hash([4; 32])]));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff(1, s), Duration::from_secs(2));
        assert!(backoff(3, s) > backoff(2, s));
        assert_eq!(backoff(30, s), Duration::from_secs(256));
    }
}
