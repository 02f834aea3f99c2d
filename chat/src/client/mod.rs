//! The client library: everything a chat UI needs (TDLib-like), behind one
//! type, [`ChatClient`].
//!
//! * Identity: a root key (owns the `@name` record), a device key (signs
//!   events, logs in), medium-term key-agreement keys (rotated, old ones
//!   kept until they expire), all in the local store.
//! * Lookups go through the light client only: every record the client
//!   acts on is a [`VerifiedUser`] or [`VerifiedServer`].
//! * Sending: the message is stored and queued in one batch, then
//!   delivered (encrypt once, wrap per device, deposit, check the server's
//!   signed receipt). Failures stay queued with backoff, across restarts;
//!   a retry re-resolves the recipient.
//! * Receiving: long-poll the current server and, for a grace period after
//!   a move, the previous one; decrypt, check the signing device against
//!   the sender's verified record, drop duplicates, store the batch and the
//!   cursor in one batch, then acknowledge to the server.

pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::http_client::HttpClient;
use xirtam_lightclient::{HttpSource, LightClient};
use xirtam_proofs::name::NameKind;
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, SecretKey, decode, encode};

use crate::api::{self, ConciergeApiClient, Cursor, code};
use crate::crypto::{
    self, CryptoError, DeviceKeys, Event, KIND_PASS, KIND_TEXT, MediumKey, MediumSecret, Recipient,
    Sealer, SignedEvent,
};
use crate::records::{Device, RecordError, UserRecord, VerifiedServer, VerifiedUser};
use store::{Identity, LocalStore, Message, Pending, Servers, StoreError, StoredMedium};

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

/// The devices to wrap to, and what was learnt choosing their keys.
struct Recipients {
    to: Vec<Recipient>,
    refused: Vec<String>,
    long_term: Vec<xirtam_proofs::PublicKey>,
}

/// State key of the last valid medium-term key seen for `user`'s `device`.
fn medium_key_name(user: &Name, device: &xirtam_proofs::PublicKey) -> String {
    format!("medium/{user}/{device}")
}

/// Result of [`ChatClient::flush`].
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    /// Messages delivered now.
    pub delivered: Vec<Delivery>,
    /// Messages still queued, with the last error.
    pub queued: Vec<(u64, Name, String)>,
}

/// Result of [`ChatClient::poll`].
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
    /// Envelopes kept aside because their sender could not be verified now
    /// (retried on the next polls, for `hold_unverified`).
    pub held: Vec<String>,
    /// Servers that could not be read now.
    pub errors: Vec<String>,
}

struct Conn {
    server: VerifiedServer,
    url: String,
    rpc: HttpClient,
    poll: HttpClient,
    token: Option<(String, Instant)>,
    /// The server's postage difficulty, once asked.
    postage_bits: Option<u32>,
}

/// A chat client on one device.
pub struct ChatClient {
    config: ClientConfig,
    dir: PathBuf,
    store: LocalStore,
    lc: LightClient<HttpSource>,
    identity: Identity,
    device: DeviceKeys,
    mediums: Vec<MediumSecret>,
    /// Remembers recipients' keys: repeat wraps to them are cheaper.
    sealer: Sealer,
    conns: HashMap<Name, Conn>,
    users: HashMap<Name, (Instant, VerifiedUser)>,
    /// The peers this device granted a pass (its contacts), read once from
    /// the store: every received message is checked against it.
    contacts: parking_lot::Mutex<Option<HashSet<Name>>>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChatClient({:?}, {})",
            self.identity.name,
            self.dir.display()
        )
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

/// Backoff before retry `attempts` (1 s doubling, at most 5 min).
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(8)).min(Duration::from_secs(300))
}

fn head_key(peer: &Name) -> String {
    format!("head/{peer}")
}

/// Most envelopes kept aside for a later verification; past it, new ones
/// are rejected at once (a flood of unverifiable envelopes must not grow
/// the store without bound).
pub const MAX_HELD: usize = 256;
/// Most rejections remembered for [`ChatClient::rejected`].
pub const MAX_REJECTED_LOG: usize = 100;
/// State key of a move whose record is not confirmed yet (the server).
const MOVING_KEY: &str = "moving";
/// State key of the envelopes held for verification.
const HELD_KEY: &str = "held";
/// State key of the rejection log.
const REJECTED_KEY: &str = "rejected";

/// An envelope received but not verified yet (its sender could not be
/// looked up): kept in the local store, so the server can be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
struct Held {
    /// The server it came from.
    via: String,
    /// Its sequence number there.
    seq: u64,
    /// The envelope, hex.
    envelope: String,
    /// When it was first seen (Unix ms).
    first_ms: u64,
    /// Why it could not be verified, last time.
    reason: String,
    /// It came through the requests lane.
    request: bool,
}

/// A rejected envelope, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Rejection {
    /// When it was rejected (Unix ms).
    pub time_ms: u64,
    /// `~server #seq: reason`.
    pub what: String,
}

fn cursor_key(server: &Name, requests: bool) -> String {
    if requests {
        format!("cursor-requests/{server}")
    } else {
        format!("cursor/{server}")
    }
}

/// State key of the contact pass `peer` gave us (to deposit into their
/// contacts lane); ours to ourselves, for copies to our other devices.
fn pass_key(peer: &Name) -> String {
    format!("pass/{peer}")
}

/// State key of the passes this device granted: `Vec<Grant>`.
const GRANTED_KEY: &str = "granted";

/// A contact pass this device granted (registered on our servers).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Grant {
    /// Who holds it (our own name: the pass our other devices' copies use).
    pub peer: Name,
    /// The pass.
    pub pass: [u8; 32],
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

impl ChatClient {
    fn open_parts(
        dir: &Path,
        config: &ClientConfig,
    ) -> Result<(LocalStore, LightClient<HttpSource>)> {
        crate::create_private_dir(dir)
            .map_err(|e| ClientError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let store = LocalStore::open(&dir.join("store"))?;
        let lc = crate::light_client(
            config.params,
            dir.join("headers"),
            config.depth,
            &config.nodes,
        )?;
        Ok((store, lc))
    }

    /// Create a new identity (root and device keys) in `dir`.
    pub fn init(dir: &Path, config: ClientConfig) -> Result<Self> {
        let (store, lc) = Self::open_parts(dir, &config)?;
        if store.state::<Identity>("identity")?.is_some() {
            return Err(ClientError::Exists(dir.to_path_buf()));
        }
        let root_path = Self::root_path(dir, &config);
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
        Self::from_parts(dir, config, store, lc, identity)
    }

    /// Open the identity in `dir`.
    pub fn open(dir: &Path, config: ClientConfig) -> Result<Self> {
        let (store, lc) = Self::open_parts(dir, &config)?;
        let identity: Identity = store
            .state("identity")?
            .ok_or_else(|| ClientError::NoIdentity(dir.to_path_buf()))?;
        Self::from_parts(dir, config, store, lc, identity)
    }

    fn from_parts(
        dir: &Path,
        config: ClientConfig,
        store: LocalStore,
        lc: LightClient<HttpSource>,
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
        Ok(ChatClient {
            device: DeviceKeys::from_seed(identity.device_seed),
            config,
            dir: dir.to_path_buf(),
            store,
            lc,
            identity,
            mediums,
            sealer: Sealer::new(),
            conns: HashMap::new(),
            users: HashMap::new(),
            contacts: parking_lot::Mutex::new(None),
        })
    }

    /// The registered name, if any.
    pub fn name(&self) -> Option<&Name> {
        self.identity.name.as_ref()
    }

    /// This device's public keys (as listed in the record).
    pub fn device(&self) -> Device {
        self.device.device()
    }

    /// The root key's public half (owner of the record).
    pub fn root_key(&self) -> xirtam_proofs::PublicKey {
        self.identity.root
    }

    /// Where this client looks for its root key file.
    pub fn root_key_path(&self) -> PathBuf {
        Self::root_path(&self.dir, &self.config)
    }

    /// Where the root key file is looked for.
    fn root_path(dir: &Path, config: &ClientConfig) -> PathBuf {
        config
            .root_key_file
            .clone()
            .unwrap_or_else(|| dir.join("root.key"))
    }

    /// The root key, read from its file when an operation needs it (and
    /// checked against the identity's public root key).
    fn root(&self) -> Result<SecretKey> {
        let path = Self::root_path(&self.dir, &self.config);
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
        let key = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(SecretKey::from_seed)
            .filter(|k| k.public() == self.identity.root)
            .ok_or_else(|| ClientError::WrongRootKey(path.clone()))?;
        Ok(key)
    }

    /// The servers this device reads from.
    pub fn servers(&self) -> Result<Servers> {
        Ok(self.store.state("servers")?.unwrap_or_default())
    }

    /// The light client (tip, sources).
    pub fn light_client(&self) -> &LightClient<HttpSource> {
        &self.lc
    }

    fn me(&self) -> Result<Name> {
        self.identity.name.clone().ok_or(ClientError::NotRegistered)
    }

    /// Look up a user's verified record (always fresh).
    pub async fn whois(&mut self, name: &Name) -> Result<VerifiedUser> {
        self.user(name, true).await
    }

    async fn user(&mut self, name: &Name, fresh: bool) -> Result<VerifiedUser> {
        if name.kind() != NameKind::User {
            return Err(ClientError::Invalid(format!(
                "{name} is not a user name (user names start with @)"
            )));
        }
        if !fresh
            && let Some((at, v)) = self.users.get(name)
            && at.elapsed() < self.config.record_ttl
        {
            return Ok(v.clone());
        }
        let v = VerifiedUser::from_lookup(self.lc.resolve(name).await?)?;
        self.users.insert(name.clone(), (Instant::now(), v.clone()));
        Ok(v)
    }

    /// Look up a server's verified record.
    pub async fn server(&mut self, name: &Name) -> Result<VerifiedServer> {
        if name.kind() != NameKind::Server {
            return Err(ClientError::Invalid(format!(
                "{name} is not a server name (server names start with ~)"
            )));
        }
        Ok(VerifiedServer::from_lookup(self.lc.resolve(name).await?)?)
    }

    /// Wait until `name`'s confirmed record carries `value`.
    async fn wait_value(&mut self, name: &Name, value: &[u8]) -> Result<VerifiedUser> {
        let deadline = Instant::now() + self.config.confirm_timeout;
        loop {
            match self.lc.resolve(name).await {
                Ok(l) if l.record().is_some_and(|r| r.value.as_bytes() == value) => {
                    let v = VerifiedUser::from_lookup(l)?;
                    self.users.insert(name.clone(), (Instant::now(), v.clone()));
                    return Ok(v);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(target: "client", error = %e, "waiting for confirmation"),
            }
            if Instant::now() > deadline {
                return Err(ClientError::NotConfirmed {
                    name: name.clone(),
                    secs: self.config.confirm_timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Register `name` with concierge `server`: claim the name with this
    /// device in its record, wait for confirmation, then set up a mailbox
    /// and a medium-term key on the server.
    pub async fn register(&mut self, name: &Name, server: &Name) -> Result<VerifiedUser> {
        let root = self.root()?;
        if name.kind() != NameKind::User {
            return Err(ClientError::Invalid(format!(
                "{name} is not a user name (user names start with @)"
            )));
        }
        if let Some(n) = &self.identity.name
            && n != name
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
        let latest = self.lc.resolve_latest(name).await?;
        if latest.record().is_none_or(|r| r.value.as_bytes() != value) {
            self.lc.publish(&root, name, value.clone(), None).await?;
        }
        let v = self.wait_value(name, &value).await?;
        self.take_name(name, server)?;
        self.setup_server(server).await?;
        Ok(v)
    }

    /// Store `name` as this device's, on `server`.
    fn take_name(&mut self, name: &Name, server: &Name) -> Result<()> {
        self.identity.name = Some(name.clone());
        let mut b = self.store.batch();
        b.state("identity", &self.identity)?;
        b.state(
            "servers",
            &Servers {
                current: Some(server.clone()),
                previous: None,
            },
        )?;
        Ok(b.commit()?)
    }

    /// Take `name` on this device: the owner's root key (kept elsewhere,
    /// e.g. on the first device) has already listed this device in the
    /// name's record. Checks that the *verified* record lists it, then
    /// logs in to the record's server. No root key is needed here.
    pub async fn join(&mut self, name: &Name) -> Result<VerifiedUser> {
        if let Some(n) = &self.identity.name
            && n != name
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
    pub async fn move_to(&mut self, server: &Name) -> Result<VerifiedUser> {
        let me = self.me()?;
        let root = self.root()?;
        let servers = self.servers()?;
        if servers.current.as_ref() == Some(server) {
            return Err(ClientError::Invalid(format!("{me} is already on {server}")));
        }
        self.server(server).await?;
        self.setup_server(server).await?;
        let mine = self.user(&me, true).await?;
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
        self.lc.publish(&root, &me, value.clone(), None).await?;
        let v = self.wait_value(&me, &value).await?;
        self.switch_to(server)?;
        Ok(v)
    }

    /// Make `server` current; the old one is still read for the grace
    /// period. Clears a pending move.
    fn switch_to(&mut self, server: &Name) -> Result<()> {
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

    async fn conn(&mut self, server: &Name) -> Result<&mut Conn> {
        if !self.conns.contains_key(server) {
            let sv = self.server(server).await?;
            let url = sv
                .record()
                .urls
                .first()
                .cloned()
                .ok_or_else(|| ClientError::Invalid(format!("{server} lists no URL")))?;
            // TLS whose server key must be the key of the verified record
            // (crate::tls).
            let key = sv.record().key;
            let build = |timeout: Duration| {
                crate::tls::concierge_client(
                    &url,
                    &key,
                    timeout,
                    (2 * api::MAX_BATCH_BYTES * api::MAX_CURSORS + 65536) as u32,
                )
                .map_err(|e| ClientError::Unreachable {
                    server: server.clone(),
                    url: url.clone(),
                    reason: e.to_string(),
                })
            };
            let rpc = build(self.config.rpc_timeout)?;
            let poll = build(self.config.rpc_timeout + Duration::from_secs(35))?;
            self.conns.insert(
                server.clone(),
                Conn {
                    server: sv,
                    url: url.clone(),
                    rpc,
                    poll,
                    token: None,
                    postage_bits: None,
                },
            );
        }
        self.conns
            .get_mut(server)
            .ok_or_else(|| ClientError::Invalid("connection vanished".into()))
    }

    fn rpc_err(server: &Name, url: &str, what: &'static str, e: RpcError) -> ClientError {
        match e {
            RpcError::Call(c) => ClientError::Refused {
                server: server.clone(),
                what,
                code: c.code(),
                message: c.message().to_owned(),
            },
            other => ClientError::Unreachable {
                server: server.clone(),
                url: url.to_owned(),
                reason: other.to_string(),
            },
        }
    }

    /// A valid token for `server` (logging in when needed).
    async fn token(&mut self, server: &Name) -> Result<String> {
        let me = self.me()?;
        let device = self.device.device().sign;
        let conn = self.conn(server).await?;
        if let Some((t, exp)) = &conn.token
            && *exp > Instant::now() + Duration::from_secs(30)
        {
            return Ok(t.clone());
        }
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        if crate::tls::plain_remote(&url) {
            return Err(ClientError::Invalid(format!(
                "{server} publishes a plain http:// URL ({url}) for a host that is not loopback: a login token would travel in the clear, so this client does not log in there; the server must publish an https:// URL"
            )));
        }
        let ch = rpc
            .auth_challenge(me.to_string())
            .await
            .map_err(|e| Self::rpc_err(server, &url, "a login challenge", e))?;
        let challenge: [u8; 32] = hex::decode(&ch.challenge)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::Misbehaved {
                server: server.clone(),
                reason: "challenge is not 32 bytes of hex".into(),
            })?;
        let sig = self
            .device
            .sign(api::AUTH_TAG, &api::auth_payload(server, &me, &challenge));
        let t = rpc
            .auth_login(
                me.to_string(),
                device.to_hex(),
                ch.challenge,
                hex::encode(sig.0),
            )
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the login", e))?;
        let exp = Instant::now() + Duration::from_secs(t.valid_secs);
        let conn = self.conn(server).await?;
        conn.token = Some((t.token.clone(), exp));
        Ok(t.token)
    }

    /// Forget a token the server no longer accepts.
    fn drop_token(&mut self, server: &Name, e: &ClientError) {
        if let ClientError::Refused {
            code: code::UNAUTHORIZED,
            ..
        } = e
            && let Some(c) = self.conns.get_mut(server)
        {
            c.token = None;
        }
    }

    /// Make a fresh medium-term key when the newest is past half its
    /// lifetime; drop expired ones. Returns whether a new key was made.
    fn rotate_medium(&mut self) -> Result<bool> {
        let now = unix_ms() / 1000;
        let life = self.config.medium_lifetime.as_secs().max(2);
        let fresh = self
            .mediums
            .iter()
            .any(|m| m.key.created + life / 2 > now && m.key.expires > now);
        // Keep expired secrets a day longer for messages still in flight.
        self.mediums.retain(|m| m.key.expires + 86_400 > now);
        if fresh {
            return Ok(false);
        }
        self.mediums.push(
            self.device
                .medium_key(&self.config.params.genesis_hash, now, life)?,
        );
        let stored: Vec<StoredMedium> = self
            .mediums
            .iter()
            .map(|m| StoredMedium {
                key: m.key.clone(),
                secret: m.secret_bytes(),
            })
            .collect();
        self.store.put_state("mediums", &stored)?;
        Ok(true)
    }

    async fn publish_medium(&mut self, server: &Name) -> Result<()> {
        let Some(key) = self.mediums.iter().max_by_key(|m| m.key.created) else {
            return Ok(());
        };
        let hex_key = hex::encode(encode(&key.key));
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        rpc.keys_publish(token, hex_key)
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the medium-term key", e))?;
        Ok(())
    }

    async fn setup_server(&mut self, server: &Name) -> Result<()> {
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        rpc.mailbox_create(token)
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the mailbox", e))?;
        // Our own pass first (copies to our other devices use it), then
        // every pass granted so far: a move carries the contacts over.
        let me = self.me()?;
        let mut granted = self.granted()?;
        if !granted.iter().any(|g| g.peer == me) {
            let pass = random32()?;
            let mut b = self.store.batch();
            granted.push(Grant {
                peer: me.clone(),
                pass,
            });
            b.state(GRANTED_KEY, &granted)?;
            b.state(&pass_key(&me), &pass)?;
            b.commit()?;
            *self.contacts.lock() = None;
        }
        let passes: Vec<[u8; 32]> = granted.iter().map(|g| g.pass).collect();
        self.register_passes(server, &passes).await?;
        self.rotate_medium()?;
        self.publish_medium(server).await
    }

    /// The contact passes this device granted.
    pub fn granted(&self) -> Result<Vec<Grant>> {
        Ok(self.store.state(GRANTED_KEY)?.unwrap_or_default())
    }

    /// Is `peer` a contact (this device granted them a pass)?
    pub fn is_contact(&self, peer: &Name) -> Result<bool> {
        let mut contacts = self.contacts.lock();
        if contacts.is_none() {
            *contacts = Some(self.granted()?.into_iter().map(|g| g.peer).collect());
        }
        Ok(contacts.as_ref().is_some_and(|c| c.contains(peer)))
    }

    async fn register_passes(&mut self, server: &Name, passes: &[[u8; 32]]) -> Result<()> {
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        let hashes = passes.iter().map(|p| api::pass_hash(p).to_hex()).collect();
        rpc.mailbox_passes(token, hashes, Vec::new())
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the contact passes", e))?;
        Ok(())
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

    /// Accept `peer` as a contact: grant them a pass to our contacts lane
    /// (registered on the servers we read) and queue it to them, end to
    /// end encrypted. Their messages then skip the requests lane and its
    /// postage. Sending to someone accepts them. Returns `false` when they
    /// were a contact already.
    pub async fn accept(&mut self, peer: &Name) -> Result<bool> {
        let me = self.me()?;
        if self.is_contact(peer)? {
            return Ok(false);
        }
        self.user(peer, false).await?;
        let pass = random32()?;
        // Registered on the current server first (an error leaves nothing
        // half done); the others are best effort.
        let servers = self.read_servers()?;
        for (i, s) in servers.iter().enumerate() {
            match self.register_passes(s, &[pass]).await {
                Ok(()) => {}
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "client::contacts", server = %s, error = %e, "pass not registered")
                }
            }
        }
        let mut granted = self.granted()?;
        granted.push(Grant {
            peer: peer.clone(),
            pass,
        });
        let after: Hash = self.store.state(&head_key(peer))?.unwrap_or_default();
        let event = SignedEvent::sign(
            &self.device,
            &self.config.params.genesis_hash,
            Event {
                sender: me,
                device: self.device.device().sign,
                recipient: peer.clone(),
                time: unix_ms(),
                after,
                kind: KIND_PASS,
                body: pass.to_vec(),
            },
        );
        let mut b = self.store.batch();
        b.state(GRANTED_KEY, &granted)?;
        b.pending(&Pending {
            local: self.store.next_local()?,
            event: encode(&event),
            to: peer.clone(),
            attempts: 0,
            next_try_ms: 0,
            last_error: String::new(),
        })?;
        b.commit()?;
        *self.contacts.lock() = None;
        Ok(true)
    }

    /// Send `text` to `to`: verify the recipient exists, store and queue
    /// the message, then try to deliver everything queued.
    pub async fn send(&mut self, to: &Name, text: &str) -> Result<(Message, FlushReport)> {
        let me = self.me()?;
        if text.len() > crypto::MAX_BODY {
            return Err(ClientError::Invalid(format!(
                "message of {} bytes; at most {}",
                text.len(),
                crypto::MAX_BODY
            )));
        }
        self.user(to, false).await?;
        // Writing to someone accepts them as a contact.
        self.accept(to).await?;
        let after: Hash = self.store.state(&head_key(to))?.unwrap_or_default();
        let event = SignedEvent::sign(
            &self.device,
            &self.config.params.genesis_hash,
            Event {
                sender: me.clone(),
                device: self.device.device().sign,
                recipient: to.clone(),
                time: unix_ms(),
                after,
                kind: KIND_TEXT,
                body: text.as_bytes().to_vec(),
            },
        );
        let local = self.store.next_local()?;
        let msg = Message {
            local,
            id: event.id(),
            from: me,
            to: to.clone(),
            time_ms: event.event.time,
            after,
            text: text.to_owned(),
            delivered: false,
            verified_at: 0,
            via: None,
            request: false,
        };
        let mut b = self.store.batch();
        b.message(&msg)?;
        b.pending(&Pending {
            local,
            event: encode(&event),
            to: to.clone(),
            attempts: 0,
            next_try_ms: 0,
            last_error: String::new(),
        })?;
        b.state(&head_key(to), &msg.id)?;
        b.commit()?;
        let report = self.flush().await?;
        let msg = self.store.message(local)?.unwrap_or(msg);
        Ok((msg, report))
    }

    /// Messages still queued.
    pub fn outbox(&self) -> Result<Vec<Pending>> {
        Ok(self.store.outbox()?)
    }

    /// Try to deliver every queued message that is due. If one gets
    /// through, the others waiting out a backoff get one early try too: a
    /// server that answers again (after a restart, or a network that came
    /// back) should not leave them queued until their backoff ends, a
    /// minute or more later. A failed early try keeps its schedule.
    pub async fn flush(&mut self) -> Result<FlushReport> {
        let mut report = FlushReport::default();
        let now = unix_ms();
        let mut waiting = Vec::new();
        let mut got_through = false;
        for p in self.store.outbox()? {
            if p.next_try_ms > now {
                waiting.push(p);
                continue;
            }
            got_through |= self.try_deliver(p, true, &mut report).await?;
        }
        for p in waiting {
            if got_through {
                self.try_deliver(p, false, &mut report).await?;
            } else {
                report
                    .queued
                    .push((p.local, p.to.clone(), p.last_error.clone()));
            }
        }
        Ok(report)
    }

    /// Try to deliver queued message `p`; on failure it stays queued, with
    /// its backoff grown if `due` (an early try leaves it as it was).
    /// Returns whether it was delivered.
    async fn try_deliver(
        &mut self,
        mut p: Pending,
        due: bool,
        report: &mut FlushReport,
    ) -> Result<bool> {
        match self.deliver(&p).await {
            Ok(d) => {
                let mut b = self.store.batch();
                b.sent(p.local)?;
                // Control events (contact passes) have no message and
                // are not reported.
                if let Some(mut m) = self.store.message(p.local)? {
                    m.delivered = true;
                    m.via = Some(d.server.clone());
                    m.verified_at = d.record_height;
                    b.message(&m)?;
                    report.delivered.push(d);
                }
                b.commit()?;
                Ok(true)
            }
            Err(e) => {
                if due {
                    p.attempts += 1;
                    p.next_try_ms = unix_ms() + backoff(p.attempts).as_millis() as u64;
                    p.last_error = e.to_string();
                    tracing::warn!(target: "client::send", to = %p.to, attempts = p.attempts, error = %e, "delivery failed; will retry");
                    let mut b = self.store.batch();
                    b.pending(&p)?;
                    b.commit()?;
                }
                report
                    .queued
                    .push((p.local, p.to.clone(), p.last_error.clone()));
                Ok(false)
            }
        }
    }

    /// The devices of `user` to wrap to: each with its newest valid
    /// medium-term key from `server`, or the long-term key from the
    /// verified record.
    async fn recipients(
        &mut self,
        user: &VerifiedUser,
        server: &Name,
        skip: Option<&xirtam_proofs::PublicKey>,
    ) -> Result<Recipients> {
        let name = user.lookup().name().clone();
        let conn = self.conn(server).await?;
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        let fetched = rpc
            .keys_fetch(name.to_string())
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the key fetch", e))?;
        let now = unix_ms() / 1000;
        let mut best: HashMap<xirtam_proofs::PublicKey, MediumKey> = HashMap::new();
        let mut refused = Vec::new();
        for h in fetched.iter().take(crate::records::MAX_DEVICES * 2) {
            let key = hex::decode(h)
                .ok()
                .filter(|b| b.len() <= 512)
                .and_then(|b| decode::<MediumKey>(&b).ok());
            let Some(key) = key else {
                refused.push(format!("{server} sent a malformed key for {name}"));
                continue;
            };
            match key.check(&self.config.params.genesis_hash, &name, user.record(), now) {
                Ok(()) => {
                    if best
                        .get(&key.device)
                        .is_none_or(|b| b.created < key.created)
                    {
                        best.insert(key.device, key);
                    }
                }
                Err(e) => refused.push(format!("{server}'s key {:?} for {name}: {e}", key.kx)),
            }
        }
        if !refused.is_empty() {
            tracing::warn!(target: "client::send", %server, refused = ?refused, "refused medium-term keys");
        }
        // Forward secrecy is never lost silently: a device's last valid
        // medium-term key is remembered, and used while it is valid if the
        // server offers none; a device whose key was seen but is no longer
        // valid gets nothing (the message stays queued); only a device
        // whose key was never seen gets its long-term key, and the
        // delivery says so.
        let mut to = Vec::new();
        let mut long_term = Vec::new();
        let mut b = self.store.batch();
        for d in user
            .record()
            .devices
            .iter()
            .filter(|d| Some(&d.sign) != skip)
        {
            let key_name = medium_key_name(&name, &d.sign);
            let remembered: Option<MediumKey> = self.store.state(&key_name)?;
            let kx = if let Some(k) = best.get(&d.sign) {
                if remembered.as_ref().is_none_or(|r| r.created < k.created) {
                    b.state(&key_name, k)?;
                }
                k.kx
            } else if let Some(k) = remembered {
                if k.check(&self.config.params.genesis_hash, &name, user.record(), now)
                    .is_err()
                {
                    return Err(ClientError::NoForwardSecrecy {
                        user: name,
                        device: d.sign,
                        server: server.clone(),
                    });
                }
                k.kx
            } else {
                long_term.push(d.sign);
                d.kx
            };
            to.push(Recipient { device: d.sign, kx });
        }
        b.commit()?;
        Ok(Recipients {
            to,
            refused,
            long_term,
        })
    }

    /// Deposit into `to`'s contacts lane with the pass they gave us, or
    /// (no pass, or refused) into their requests lane with postage.
    async fn deposit(&mut self, server: &Name, to: &Name, bytes: &[u8]) -> Result<api::Receipt> {
        let pass: Option<[u8; 32]> = self.store.state(&pass_key(to))?;
        if let Some(pass) = pass {
            match self.deposit_lane(server, to, bytes, Some(pass)).await {
                Err(ClientError::Refused {
                    code: code::PASS_REFUSED,
                    ..
                }) => {
                    tracing::info!(target: "client::send", %to, %server, "contact pass refused; paying postage")
                }
                other => return other,
            }
        }
        self.deposit_lane(server, to, bytes, None).await
    }

    async fn deposit_lane(
        &mut self,
        server: &Name,
        to: &Name,
        bytes: &[u8],
        pass: Option<[u8; 32]>,
    ) -> Result<api::Receipt> {
        let (mailbox, postage) = match pass {
            Some(_) => (api::mailbox_id(to), None),
            None => {
                let id = api::requests_id(to);
                (id, Some(self.postage(server, &id, bytes).await?))
            }
        };
        let conn = self.conn(server).await?;
        let (rpc, url, key) = (conn.rpc.clone(), conn.url.clone(), conn.server.record().key);
        let r = rpc
            .mailbox_deposit(
                to.to_string(),
                hex::encode(bytes),
                pass.map(hex::encode),
                postage,
            )
            .await
            .map_err(|e| Self::rpc_err(server, &url, "the deposit", e))?;
        api::check_receipt(server, &key, &mailbox, bytes, &r).map_err(|reason| {
            ClientError::Misbehaved {
                server: server.clone(),
                reason,
            }
        })?;
        Ok(r)
    }

    /// Postage for depositing `bytes` into requests mailbox `mailbox` on
    /// `server`: proof of work on a block a little under our verified tip
    /// (so the server, a block or two behind, knows it too).
    async fn postage(
        &mut self,
        server: &Name,
        mailbox: &Hash,
        bytes: &[u8],
    ) -> Result<api::Postage> {
        let conn = self.conn(server).await?;
        let (rpc, url) = (conn.rpc.clone(), conn.url.clone());
        let bits = match conn.postage_bits {
            Some(b) => b,
            None => {
                let info = rpc
                    .server_info()
                    .await
                    .map_err(|e| Self::rpc_err(server, &url, "the server info", e))?;
                self.conn(server).await?.postage_bits = Some(info.postage_bits);
                info.postage_bits
            }
        };
        if bits > api::MAX_POSTAGE_BITS {
            return Err(ClientError::Misbehaved {
                server: server.clone(),
                reason: format!(
                    "it asks for postage of {bits} bits (at most {} are paid)",
                    api::MAX_POSTAGE_BITS
                ),
            });
        }
        let height = self.lc.tip().height.saturating_sub(2);
        let block = self.lc.hash_at(height).ok_or_else(|| {
            ClientError::Invalid(format!("no verified block at height {height} for postage"))
        })?;
        let (m, env) = (*mailbox, api::envelope_hash(bytes));
        let nonce = tokio::task::spawn_blocking(move || api::solve_postage(&m, &env, &block, bits))
            .await
            .map_err(|e| ClientError::Invalid(format!("postage worker failed: {e}")))?;
        Ok(api::Postage {
            height,
            block: block.to_hex(),
            nonce,
        })
    }

    async fn deliver(&mut self, p: &Pending) -> Result<Delivery> {
        let me = self.me()?;
        let event: SignedEvent = decode(&p.event)
            .map_err(|e| ClientError::Invalid(format!("queued event does not decode: {e}")))?;
        // A retry looks the recipient up again: the record may have moved.
        let user = self.user(&p.to, p.attempts > 0).await?;
        let server = user.record().server.clone();
        if p.attempts > 0 {
            self.conns.remove(&server);
        }
        let Recipients {
            to,
            refused,
            long_term,
        } = self.recipients(&user, &server, None).await?;
        let envelope = self.sealer.seal(&event, &to)?;
        let bytes = encode(&envelope);
        let receipt = self.deposit(&server, &p.to, &bytes).await?;
        let server_height = self
            .conns
            .get(&server)
            .map_or(0, |c| c.server.lookup().height());
        // A copy for our own other devices, through our own server.
        if let Ok(mine) = self.user(&me, false).await
            && mine.record().devices.len() > 1
        {
            let own_server = mine.record().server.clone();
            let skip = self.device.device().sign;
            let copy = async {
                let own = self.recipients(&mine, &own_server, Some(&skip)).await?.to;
                let env = self.sealer.seal(&event, &own)?;
                self.deposit(&own_server, &me, &encode(&env)).await
            };
            if let Err(e) = copy.await {
                tracing::warn!(target: "client::send", error = %e, "could not deposit the copy for our other devices");
            }
        }
        Ok(Delivery {
            local: p.local,
            to: p.to.clone(),
            server,
            seq: receipt.seq,
            record_height: user.lookup().height(),
            server_height,
            devices: to.len(),
            refused_keys: refused,
            long_term,
        })
    }

    /// Read every server we read from once, waiting up to `wait` for
    /// something to arrive; also delivers due queued messages and rotates
    /// the medium-term key when due.
    pub async fn poll(&mut self, wait: Duration) -> Result<PollReport> {
        let me = self.me()?;
        let mut report = PollReport::default();
        let mut servers = self.servers()?;
        let now = unix_ms() / 1000;
        if servers
            .previous
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            servers.previous = None;
            self.store.put_state("servers", &servers)?;
        }
        // Our verified record decides which server is current: a move made
        // by this device once it confirms, or by another device of ours.
        let moving: Option<Name> = self.store.state(MOVING_KEY)?;
        if let Ok(mine) = self.user(&me, false).await {
            let named = mine.record().server.clone();
            if servers.current.as_ref() != Some(&named) {
                if moving.as_ref() != Some(&named)
                    && let Err(e) = self.setup_server(&named).await
                {
                    report
                        .errors
                        .push(format!("following our record to {named}: {e}"));
                }
                self.switch_to(&named)?;
            }
        }
        let list = self.read_servers()?;
        if self.rotate_medium()? {
            for s in &list {
                if let Err(e) = self.publish_medium(s).await {
                    report
                        .errors
                        .push(format!("{s}: publishing the new key: {e}"));
                }
            }
        }
        self.retry_held(&me, &mut report).await?;
        // Two lanes per server: contacts and requests, each with this
        // device's own cursor.
        let lanes = [(api::mailbox_id(&me), false), (api::requests_id(&me), true)];
        let mut calls = Vec::new();
        for s in &list {
            let mut cursors = Vec::new();
            for (id, requests) in &lanes {
                cursors.push(Cursor {
                    mailbox: id.to_hex(),
                    after: self.store.state(&cursor_key(s, *requests))?.unwrap_or(0),
                    // Covers an acknowledgement that failed below.
                    ack: true,
                });
            }
            match self.token(s).await {
                Ok(token) => {
                    let conn = self.conn(s).await?;
                    calls.push((
                        s.clone(),
                        conn.poll.clone(),
                        conn.url.clone(),
                        token,
                        cursors,
                    ));
                }
                Err(e) => {
                    report.errors.push(e.to_string());
                    self.drop_token(s, &e);
                }
            }
        }
        let wait_ms = wait.as_millis() as u64;
        let mut pending: Vec<_> = calls
            .into_iter()
            .map(|(s, rpc, url, token, cursors)| {
                Box::pin(async move {
                    let r = rpc
                        .mailbox_receive(token.clone(), cursors, wait_ms)
                        .await
                        .map_err(|e| Self::rpc_err(&s, &url, "the receive", e));
                    (s, rpc, url, token, r)
                })
            })
            .collect();
        // Long-poll every server at once; as soon as one has something,
        // stop waiting for the others (the next poll reads them).
        let mut results = Vec::new();
        while !pending.is_empty() {
            let (done, _, rest) = futures::future::select_all(pending).await;
            let has = matches!(&done.4, Ok(b) if b.iter().any(|x| !x.messages.is_empty()));
            results.push(done);
            pending = rest;
            if has {
                break;
            }
        }
        for (s, _, url, token, r) in results {
            let batches = match r {
                Ok(b) => b,
                Err(e) => {
                    self.drop_token(&s, &e);
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            for batch in batches {
                let Some(&(id, requests)) =
                    lanes.iter().find(|(id, _)| id.to_hex() == batch.mailbox)
                else {
                    report
                        .errors
                        .push(format!("{s} answered for a mailbox we did not ask for"));
                    continue;
                };
                let Some(last) = batch.messages.iter().map(|m| m.seq).max() else {
                    continue;
                };
                let mut processed = Vec::new();
                for d in &batch.messages {
                    let p = self.process(&me, &s, &d.envelope, requests).await?;
                    processed.push((s.clone(), d.seq, d.envelope.clone(), None, p));
                }
                let held = self.store.state(HELD_KEY)?.unwrap_or_default();
                let mut b = self.file(&me, processed, held, &mut report)?;
                b.state(&cursor_key(&s, requests), &last)?;
                b.commit()?;
                let conn = self.conn(&s).await?;
                let rpc = conn.rpc.clone();
                if let Err(e) = rpc.mailbox_ack(token.clone(), id.to_hex(), last).await {
                    let e = Self::rpc_err(&s, &url, "the acknowledgement", e);
                    tracing::warn!(target: "client::receive", error = %e, "ack failed; the next one covers it");
                }
            }
        }
        match self.flush().await {
            Ok(f) => {
                for (_, to, e) in f.queued {
                    report
                        .errors
                        .push(format!("message to {to} still queued: {e}"));
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        Ok(report)
    }

    /// Try again the envelopes held for verification: those that verify
    /// now are delivered, those held longer than `hold_unverified` are
    /// rejected. After the first one that still cannot be verified the rest
    /// wait for the next poll (the directory is likely unreachable).
    async fn retry_held(&mut self, me: &Name, report: &mut PollReport) -> Result<()> {
        let held: Vec<Held> = self.store.state(HELD_KEY)?.unwrap_or_default();
        if held.is_empty() {
            return Ok(());
        }
        let now = unix_ms();
        let limit = self.config.hold_unverified.as_millis() as u64;
        let mut processed = Vec::new();
        let mut blocked = false;
        for h in held {
            let Ok(via) = Name::new(&h.via) else {
                continue; // not from this software: drop it
            };
            let expired = now.saturating_sub(h.first_ms) >= limit;
            let p = if blocked && !expired {
                Processed::Held(h.reason.clone(), h.request)
            } else {
                match self.process(me, &via, &h.envelope, h.request).await? {
                    Processed::Held(why, _) if expired => Processed::Rejected(format!(
                        "{why}; gave up after {} s",
                        now.saturating_sub(h.first_ms) / 1000
                    )),
                    Processed::Held(why, r) => {
                        blocked = true;
                        Processed::Held(why, r)
                    }
                    other => other,
                }
            };
            processed.push((via, h.seq, h.envelope, Some(h.first_ms), p));
        }
        // The held list is rebuilt from what is still held.
        Ok(self.file(me, processed, Vec::new(), report)?.commit()?)
    }

    /// File the outcome of processing envelopes into a store batch (for
    /// the caller to add to and commit): new messages stored (a message
    /// twice in one round counts as a duplicate), rejections logged,
    /// envelopes that cannot be verified yet appended to `held`, which
    /// becomes the held list.
    fn file(
        &self,
        me: &Name,
        processed: Vec<(Name, u64, String, Option<u64>, Processed)>,
        mut held: Vec<Held>,
        report: &mut PollReport,
    ) -> Result<store::Batch<'_>> {
        let mut b = self.store.batch();
        let mut local = self.store.next_local()?;
        let mut batch_seen = HashSet::new();
        let mut rejected: Vec<Rejection> = self.store.state(REJECTED_KEY)?.unwrap_or_default();
        let now = unix_ms();
        for (via, seq, envelope, first_ms, p) in processed {
            match p {
                Processed::New(mut m) => {
                    if !batch_seen.insert(m.id) {
                        report.duplicates += 1;
                        continue;
                    }
                    m.local = local;
                    local += 1;
                    b.message(&m)?;
                    let peer = if &m.from == me { &m.to } else { &m.from };
                    b.state(&head_key(peer), &m.id)?;
                    report.messages.push(m);
                }
                Processed::Duplicate => report.duplicates += 1,
                Processed::Skipped => report.skipped += 1,
                Processed::Pass { from, pass, id } => {
                    if !batch_seen.insert(id) {
                        report.duplicates += 1;
                        continue;
                    }
                    b.state(&pass_key(&from), &pass)?;
                    b.seen(&id)?;
                    report.passes.push(from);
                }
                Processed::Rejected(why) => {
                    let what = format!("{via} #{seq}: {why}");
                    report.rejected.push(what.clone());
                    rejected.push(Rejection { time_ms: now, what });
                }
                Processed::Held(why, request) => {
                    let what = format!("{via} #{seq}: {why}");
                    if held.len() >= MAX_HELD {
                        let what = format!("{what}; rejected: {MAX_HELD} envelopes already wait");
                        report.rejected.push(what.clone());
                        rejected.push(Rejection { time_ms: now, what });
                        continue;
                    }
                    report.held.push(what);
                    held.push(Held {
                        via: via.to_string(),
                        seq,
                        envelope,
                        first_ms: first_ms.unwrap_or(now),
                        reason: why,
                        request,
                    });
                }
            }
        }
        let excess = rejected.len().saturating_sub(MAX_REJECTED_LOG);
        rejected.drain(..excess);
        b.state(REJECTED_KEY, &rejected)?;
        b.state(HELD_KEY, &held)?;
        Ok(b)
    }

    /// The most recent rejected envelopes (at most [`MAX_REJECTED_LOG`]),
    /// oldest first.
    pub fn rejected(&self) -> Result<Vec<Rejection>> {
        Ok(self.store.state(REJECTED_KEY)?.unwrap_or_default())
    }

    /// How many envelopes wait for their sender to be verified.
    pub fn held(&self) -> Result<usize> {
        Ok(self
            .store
            .state::<Vec<Held>>(HELD_KEY)?
            .map_or(0, |h| h.len()))
    }

    /// Open and check one envelope (`requests`: it came through the
    /// requests lane).
    async fn process(
        &mut self,
        me: &Name,
        via: &Name,
        envelope_hex: &str,
        requests: bool,
    ) -> Result<Processed> {
        let Some(env) = hex::decode(envelope_hex)
            .ok()
            .and_then(|b| decode::<crypto::Envelope>(&b).ok())
        else {
            return Ok(Processed::Rejected("not an envelope".into()));
        };
        let ev = match crypto::open(&env, &self.device, &self.mediums) {
            Ok(ev) => ev,
            // A copy for our other devices (or junk not meant for anyone
            // here): nothing to show.
            Err(CryptoError::NotForMe) => return Ok(Processed::Skipped),
            Err(e) => return Ok(Processed::Rejected(format!("cannot decrypt: {e}"))),
        };
        let id = ev.id();
        if self.store.seen(&id)? {
            return Ok(Processed::Duplicate);
        }
        let sender = ev.event.sender.clone();
        if sender.kind() != NameKind::User {
            return Ok(Processed::Rejected(format!(
                "sender {sender} is not a user"
            )));
        }
        let peer_me = if &sender == me {
            ev.event.recipient.clone()
        } else {
            me.clone()
        };
        // Cached record first; a device we do not know may be new, so look
        // again once before refusing. A lookup that gives no verified
        // answer, or a sender not registered (yet), holds the envelope back
        // for a later try; a record that is verified and wrong rejects it.
        let mut user = match self.user(&sender, false).await {
            Ok(u) => u,
            Err(e) => return unverified(&sender, e, requests),
        };
        if user.record().device(&ev.event.device).is_none() {
            user = match self.user(&sender, true).await {
                Ok(u) => u,
                Err(e) => return unverified(&sender, e, requests),
            };
        }
        if let Err(e) = ev.check(
            &self.config.params.genesis_hash,
            &sender,
            user.record(),
            &peer_me,
        ) {
            return Ok(Processed::Rejected(format!(
                "event claiming to be from {sender}: {e} (record at height {})",
                user.lookup().height()
            )));
        }
        match ev.event.kind {
            KIND_TEXT => {}
            // Our own grant, copied to our other devices: nothing to do.
            KIND_PASS if &sender == me => return Ok(Processed::Skipped),
            KIND_PASS => {
                return Ok(match <[u8; 32]>::try_from(ev.event.body.as_slice()) {
                    Ok(pass) => Processed::Pass {
                        from: sender,
                        pass,
                        id,
                    },
                    Err(_) => {
                        Processed::Rejected(format!("contact pass from {sender} is not 32 bytes"))
                    }
                });
            }
            k => {
                return Ok(Processed::Rejected(format!(
                    "event of unknown kind {k} from {sender}"
                )));
            }
        }
        // A request is a message from someone this device has not
        // accepted, whatever lane it came through: a contact's pass, reused
        // by someone else, must not make a stranger look like a contact.
        let request = &sender != me && !self.is_contact(&sender)?;
        let text = String::from_utf8_lossy(&ev.event.body).into_owned();
        Ok(Processed::New(Message {
            local: 0,
            id,
            from: sender,
            to: ev.event.recipient.clone(),
            time_ms: ev.event.time,
            after: ev.event.after,
            text,
            delivered: true,
            verified_at: user.lookup().height(),
            via: Some(via.clone()),
            request,
        }))
    }

    /// Every stored message, each after the one it follows.
    pub fn inbox(&self) -> Result<Vec<Message>> {
        Ok(order_by_after(self.store.messages()?))
    }
}

enum Processed {
    New(Message),
    Duplicate,
    Rejected(String),
    /// The sender could not be verified now: try again later.
    Held(String, bool),
    /// A contact pass from a peer: our deposits to them use it.
    Pass {
        from: Name,
        pass: [u8; 32],
        id: Hash,
    },
    /// Not for this device (a copy for our other devices), or a control
    /// event with nothing to do here.
    Skipped,
}

/// What a failed sender lookup means for an envelope.
fn unverified(sender: &Name, e: ClientError, requests: bool) -> Result<Processed> {
    match e {
        ClientError::Lookup(e) => Ok(Processed::Held(
            format!("sender {sender} cannot be verified now: {e}"),
            requests,
        )),
        ClientError::Record(RecordError::NotRegistered(_)) => Ok(Processed::Held(
            format!("sender {sender} is not registered (not yet confirmed, or a stranger)"),
            requests,
        )),
        ClientError::Record(e) => Ok(Processed::Rejected(format!("sender {sender}: {e}"))),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert!(backoff(3) > backoff(2));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
