//! The concierge server: mailboxes, device login, medium-term keys, over
//! JSON-RPC (docs/chat.md, "Concierge RPC").
//!
//! * Users are known only through the server's own light client: a device
//!   logs in by signing a fresh challenge, and the server checks that its
//!   key is listed in the user's **verified** record. Tokens expire.
//! * Anyone may deposit into a user's mailbox, within a size limit and a
//!   per-mailbox rate limit; each deposit is one RocksDB `WriteBatch`,
//!   written before the signed receipt is returned.
//! * Receivers long-poll with server-assigned sequence numbers as cursors.
//! * On start the server makes its own `~name` record match its
//!   configuration (claim or update through the light client), and keeps
//!   checking until the record is confirmed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::core::{RpcResult, async_trait};
use jsonrpsee::server::{Server, ServerHandle, StopHandle};
use jsonrpsee::types::ErrorObjectOwned;
use parking_lot::Mutex;
use tokio::sync::Notify;
use xirtam_lightclient::{HttpSource, LightClient};
use xirtam_proofs::name::NameKind;
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, PublicKey, SecretKey, Signature, decode, encode};

use crate::api::{self, Batch, Challenge, ConciergeApiServer, Cursor, Delivered, code};

mod groups;
use crate::crypto::MediumKey;
use crate::mailbox::{MailboxError, MailboxStore};
use crate::records::{RecordError, ServerRecord, UserRecord, VerifiedUser};

/// Limits a server enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest envelope accepted (bytes).
    pub max_envelope: usize,
    /// Most unacknowledged envelopes in a user's contacts lane.
    pub max_stored: u64,
    /// Most unacknowledged envelopes in a user's requests lane (first
    /// contact, with postage).
    pub max_requests: u64,
    /// Envelopes older than this are deleted even if some device never
    /// acknowledged them.
    pub retention: Duration,
    /// Postage difficulty of a deposit without a contact pass (leading
    /// zero bits of the postage digest).
    pub postage_bits: u32,
    /// How many blocks old the block named by postage may be.
    pub postage_window: u64,
    /// Most contact passes per mailbox.
    pub max_passes: u64,
    /// Sustained deposits per second into one mailbox.
    pub deposit_rate: f64,
    /// Deposits one mailbox accepts in a burst.
    pub deposit_burst: f64,
    /// How long a login token stays valid.
    pub token_lifetime: Duration,
    /// Longest long-poll wait.
    pub max_wait: Duration,
    /// Most concurrent HTTP connections.
    pub max_connections: u32,
    /// Most concurrent connections from one IP address.
    pub max_connections_per_ip: u32,
    /// A connection with no byte in either direction for this long is
    /// closed (longer than `max_wait`, so long-polls are not cut).
    pub idle_timeout: Duration,
    /// How long a verified user record is reused for logins.
    pub record_ttl: Duration,
    /// How long deposits are still taken for a user whose verified record
    /// names another server (counted from when this server first sees it);
    /// after that they are refused with `MOVED`.
    pub moved_grace: Duration,
    /// Most messages a group's lane keeps (the oldest are dropped: nobody
    /// acknowledges a group lane).
    pub max_group_messages: u64,
    /// Most entries a hosted group log segment holds.
    pub max_log_entries: u64,
    /// Most bytes of entries a hosted group log segment holds.
    pub max_log_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope: 128 * 1024,
            max_stored: 10_000,
            max_requests: 1_000,
            retention: Duration::from_secs(30 * 24 * 3600),
            postage_bits: DEFAULT_POSTAGE_BITS,
            postage_window: 64,
            max_passes: 10_000,
            deposit_rate: 200.0,
            deposit_burst: 1_000.0,
            token_lifetime: Duration::from_secs(3600),
            max_wait: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            idle_timeout: Duration::from_secs(60),
            record_ttl: Duration::from_secs(10),
            moved_grace: Duration::from_secs(7 * 24 * 3600),
            max_group_messages: 10_000,
            max_log_entries: 100_000,
            max_log_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Default postage difficulty: about a second of one core
/// (docs/BENCHMARKS.md, "Postage").
pub const DEFAULT_POSTAGE_BITS: u32 = 22;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's `~name`.
    pub name: Name,
    /// The network.
    pub params: &'static Params,
    /// Data directory (keys, mailboxes, the light client's headers).
    pub datadir: PathBuf,
    /// Directory node RPC URLs for the light client.
    pub nodes: Vec<String>,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// URL published in the record (default: `https://` + the bound
    /// address, or `http://` with `plain_http`).
    pub public_url: Option<String>,
    /// Serve plain HTTP instead of TLS: only behind the operator's own TLS
    /// terminator (whose URL the record then gives as `https+ca://`), or on
    /// loopback.
    pub plain_http: bool,
    /// Blocks under the tip lookups are proven at (default: the network's).
    pub depth: Option<u64>,
    /// Limits.
    pub limits: Limits,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The name is not a `~server` name.
    #[error("{0} is not a server name (server names start with ~)")]
    NotServerName(Name),
    /// Files in the data directory.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is damaged.
    #[error("key file {0} is damaged")]
    BadKeys(PathBuf),
    /// Mailbox storage.
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    /// The light client.
    #[error("light client: {0}")]
    LightClient(#[from] xirtam_lightclient::Error),
    /// The operating system's random number generator failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The RPC server.
    #[error("cannot serve RPC on {addr}: {reason}")]
    Rpc {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// The server's keys: the root key owns the `~name` record, the server
/// key signs receipts.
#[derive(Debug)]
pub struct ServerKeys {
    /// Owner of the `~name` record.
    pub root: SecretKey,
    /// Signs deposit receipts; published in the record.
    pub server: SecretKey,
}

impl ServerKeys {
    /// Load `dir/server.keys`, creating it (mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, ServerError> {
        let path = dir.join("server.keys");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let seeds: Vec<[u8; 32]> = s
                    .lines()
                    .filter_map(|l| hex::decode(l.trim()).ok())
                    .filter_map(|b| <[u8; 32]>::try_from(b).ok())
                    .collect();
                match seeds.as_slice() {
                    [root, server] => Ok(ServerKeys {
                        root: SecretKey::from_seed(*root),
                        server: SecretKey::from_seed(*server),
                    }),
                    _ => Err(ServerError::BadKeys(path)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seeds = [[0u8; 32]; 2];
                for s in &mut seeds {
                    getrandom::fill(s).map_err(|e| ServerError::Io {
                        what: "random key".into(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                }
                let text = format!("{}\n{}\n", hex::encode(seeds[0]), hex::encode(seeds[1]));
                crate::write_secret_file(&path, text.as_bytes())
                    .map_err(io(format!("write {}", path.display())))?;
                Ok(ServerKeys {
                    root: SecretKey::from_seed(seeds[0]),
                    server: SecretKey::from_seed(seeds[1]),
                })
            }
            Err(e) => Err(io(format!("read {}", path.display()))(e)),
        }
    }
}

struct Session {
    user: Name,
    device: PublicKey,
    expires: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Shared state behind the RPC methods.
struct Concierge {
    name: Name,
    params: &'static Params,
    keys: ServerKeys,
    store: MailboxStore,
    /// Shared by every connection: lookups run while a sync is in
    /// progress, so one hanging node does not stall them.
    lc: LightClient<HttpSource>,
    limits: Limits,
    /// Key of the challenge MACs: challenges are stateless, so no number
    /// of `auth_challenge` calls can fill a table. New at each start.
    challenge_key: [u8; 32],
    /// Challenges already used in a successful login, until they expire
    /// (only a device in a verified record can add one).
    used_challenges: Mutex<HashMap<[u8; 32], u64>>,
    /// Users whose verified record names another server, since when this
    /// server has seen that (bounded: only users with a mailbox here).
    moved_since: Mutex<HashMap<Name, Instant>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    users: Mutex<HashMap<Name, (Instant, VerifiedUser)>>,
    waiters: Mutex<HashMap<Hash, Arc<Notify>>>,
    buckets: Mutex<HashMap<Hash, Bucket>>,
    /// Per requests mailbox, the postage digests already used, with the
    /// height of the block they name (dropped once it leaves the window).
    used_postage: Mutex<HashMap<Hash, HashMap<Hash, u64>>>,
    /// When postage last made the light client sync (at most once a
    /// second).
    postage_sync: tokio::sync::Mutex<Option<Instant>>,
    registered_at: Mutex<Option<u64>>,
    /// The device-linking relay.
    links: Links,
    /// To the receipt signer (see [`sign_receipts`]).
    receipts: tokio::sync::mpsc::Sender<ReceiptRequest>,
}

/// A deposit's receipt leaf, and where its signature and path go.
type ReceiptRequest = (
    Hash,
    tokio::sync::oneshot::Sender<(Signature, Vec<(bool, Hash)>)>,
);

/// Most deposits one receipt signature covers (a path of at most 8 steps).
const MAX_RECEIPT_BATCH: usize = 256;

/// Sign receipts in batches: take every leaf waiting, sign the root of
/// their tree once, and hand each deposit its path. Deposits answered by
/// one group commit arrive together, so one Ed25519 signature serves
/// several (it was the largest single cost of a deposit). Ends when the
/// server is dropped.
async fn sign_receipts(
    name: Name,
    key: SecretKey,
    mut rx: tokio::sync::mpsc::Receiver<ReceiptRequest>,
) {
    while let Some(first) = rx.recv().await {
        // The deposits of a group commit are woken together, but the first
        // would have this task run before the others send (tokio runs a
        // task woken by the running one next): let them run first.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_RECEIPT_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let leaves: Vec<Hash> = batch.iter().map(|(leaf, _)| *leaf).collect();
        tracing::trace!(target: "server::receipts", batch = leaves.len(), "signing");
        let (root, paths) = api::receipt_tree(&leaves);
        let sig = key.sign(
            api::RECEIPT_ROOT_TAG,
            &api::receipt_root_payload(&name, &root),
        );
        for ((_, reply), path) in batch.into_iter().zip(paths) {
            // The deposit may have been dropped: nothing to tell.
            let _ = reply.send((sig, path));
        }
    }
}

/// Unix time in seconds.
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Concierge {
    /// A login challenge for `user`: `expiry (8, big-endian) ‖ nonce (8) ‖
    /// mac (16)`, the mac being the first 16 bytes of
    /// `BLAKE3(tag ‖ challenge_key ‖ expiry ‖ nonce ‖ user)`. Nothing is
    /// stored: the server recognises its own challenges by the mac.
    fn challenge(&self, user: &Name, expiry: u64, nonce: [u8; 8]) -> [u8; 32] {
        let mac = self.challenge_mac(user, expiry, &nonce);
        let mut c = [0u8; 32];
        c[..8].copy_from_slice(&expiry.to_be_bytes());
        c[8..16].copy_from_slice(&nonce);
        c[16..].copy_from_slice(&mac);
        c
    }

    fn challenge_mac(&self, user: &Name, expiry: u64, nonce: &[u8; 8]) -> [u8; 16] {
        let h = xirtam_proofs::hash::hash_parts(
            "xirtam/concierge/challenge",
            &[
                &self.challenge_key,
                &expiry.to_be_bytes(),
                nonce,
                user.as_str().as_bytes(),
            ],
        );
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&h.0[..16]);
        mac
    }

    /// The challenge's expiry, if it is one of ours for `user` and has not
    /// expired.
    fn check_challenge(&self, user: &Name, c: &[u8; 32]) -> Option<u64> {
        let expiry = u64::from_be_bytes(c[..8].try_into().ok()?);
        let nonce: [u8; 8] = c[8..16].try_into().ok()?;
        let now = unix_secs();
        let fresh = expiry > now && expiry <= now.saturating_add(CHALLENGE_SECS);
        let ours = self.challenge_mac(user, expiry, &nonce)[..] == c[16..];
        (fresh && ours).then_some(expiry)
    }
}

/// Bound on pending challenges and live sessions (oldest dropped first
/// when expired; refused beyond).
const MAX_PENDING: usize = 100_000;
/// How long a challenge may be answered.
const CHALLENGE_SECS: u64 = 60;

fn err(code: i32, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg, None::<()>)
}

fn invalid(msg: impl Into<String>) -> ErrorObjectOwned {
    err(code::INVALID_PARAMS, msg)
}

fn parse_user(s: &str) -> RpcResult<Name> {
    let n = Name::new(s).map_err(|e| invalid(format!("invalid name {s:?}: {e}")))?;
    if n.kind() != NameKind::User {
        return Err(invalid(format!(
            "{n} is not a user name (user names start with @)"
        )));
    }
    Ok(n)
}

fn parse_hex32(what: &str, s: &str) -> RpcResult<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| invalid(format!("{what} must be 32 bytes of hex")))
}

fn parse_hex_capped(what: &str, s: &str, max: usize) -> RpcResult<Vec<u8>> {
    if s.len() > 2 * max {
        return Err(err(
            code::TOO_LARGE,
            format!("{what} is larger than {max} bytes"),
        ));
    }
    hex::decode(s).map_err(|e| invalid(format!("{what} is not hex: {e}")))
}

fn store_err(e: MailboxError) -> ErrorObjectOwned {
    match e {
        MailboxError::NotFound(id) => err(code::NOT_FOUND, format!("no mailbox {id}")),
        MailboxError::Full(id) => err(
            code::MAILBOX_FULL,
            format!("mailbox {id} is full; the owner must read and acknowledge first"),
        ),
        MailboxError::Taken { .. } => err(code::FORBIDDEN, e.to_string()),
        MailboxError::TooManyPasses(_) => err(code::TOO_LARGE, e.to_string()),
        other => {
            tracing::error!(target: "server", error = %other, "storage failure");
            err(code::INTERNAL, format!("internal error: {other}"))
        }
    }
}

impl Concierge {
    fn session(&self, token: &str) -> RpcResult<(Name, PublicKey)> {
        let t = parse_hex32("token", token)?;
        let mut sessions = self.sessions.lock();
        match sessions.get(&t) {
            Some(s) if s.expires > Instant::now() => Ok((s.user.clone(), s.device)),
            Some(_) => {
                sessions.remove(&t);
                Err(err(code::UNAUTHORIZED, "token expired; log in again"))
            }
            None => Err(err(code::UNAUTHORIZED, "unknown token; log in again")),
        }
    }

    /// [`Concierge::session`], and the session's device is still in the
    /// user's verified record (cached for `record_ttl`): a device removed
    /// from the record loses its session on its next call after that.
    async fn live_session(&self, token: &str) -> RpcResult<(Name, PublicKey, VerifiedUser)> {
        let (user, device) = self.session(token)?;
        let v = self.user(&user).await?;
        if v.record().device(&device).is_none() {
            if let Ok(t) = parse_hex32("token", token) {
                self.sessions.lock().remove(&t);
            }
            return Err(err(
                code::UNAUTHORIZED,
                format!(
                    "device {device} is no longer in {user}'s verified record (height {}); log in from a listed device",
                    v.lookup().height()
                ),
            ));
        }
        Ok((user, device, v))
    }

    /// Check postage on a deposit of `bytes` into requests mailbox `id`:
    /// a recent block of the chain this server follows, enough work, not
    /// used before. Returns its digest and block height, for
    /// [`Concierge::claim_postage`].
    async fn check_postage(
        &self,
        id: &Hash,
        bytes: &[u8],
        postage: Option<api::Postage>,
    ) -> RpcResult<(Hash, u64)> {
        let (bits, window) = (self.limits.postage_bits, self.limits.postage_window);
        let refuse = |why: String| {
            ErrorObjectOwned::owned(
                code::POSTAGE_REQUIRED,
                format!(
                    "{why}; a deposit without a contact pass needs postage of {bits} bits on a block at most {window} blocks old"
                ),
                Some(serde_json::json!({ "bits": bits, "window": window })),
            )
        };
        let p = postage.ok_or_else(|| refuse("no postage".into()))?;
        let block = Hash(parse_hex32("postage block", &p.block)?);
        let digest = api::postage_digest(id, &api::envelope_hash(bytes), &block, p.nonce);
        if api::leading_zero_bits(&digest) < bits {
            return Err(refuse("postage too weak".into()));
        }
        let ahead = p.height > self.lc.tip().height
            && p.height <= self.lc.tip().height.saturating_add(window);
        if ahead && self.lc.hash_at(p.height) != Some(block) {
            // The sender is ahead of us (its light client saw blocks ours
            // has not yet): catch up. Callers queue here and share one sync
            // a second, whatever they claim; only postage with the work
            // done gets this far.
            let mut last = self.postage_sync.lock().await;
            if self.lc.hash_at(p.height) != Some(block) {
                if let Some(t) = *last {
                    let wait = Duration::from_secs(1).saturating_sub(t.elapsed());
                    tokio::time::sleep(wait).await;
                }
                *last = Some(Instant::now());
                if let Err(e) = self.lc.sync().await {
                    tracing::debug!(target: "server::postage", error = %e, "sync for postage failed");
                }
            }
        }
        let tip = self.lc.tip().height;
        if self.lc.hash_at(p.height) != Some(block) {
            return Err(refuse(format!(
                "block {block} at height {} is not on this server's chain (tip {tip})",
                p.height
            )));
        }
        if p.height.saturating_add(window) < tip {
            return Err(refuse(format!("block {} is too old (tip {tip})", p.height)));
        }
        if self
            .used_postage
            .lock()
            .get(id)
            .is_some_and(|lane| lane.contains_key(&digest))
        {
            return Err(refuse("this postage was used already".into()));
        }
        Ok((digest, p.height))
    }

    /// Spend postage (from [`Concierge::check_postage`]) on requests
    /// mailbox `id`, after the rate limit: each mailbox keeps its own
    /// record of used postage, bounded by what its lane can take in a
    /// window, so no flood aimed at one user can refuse postage to others.
    fn claim_postage(&self, id: &Hash, digest: Hash, height: u64) -> RpcResult<()> {
        let (window, tip) = (self.limits.postage_window, self.lc.tip().height);
        let cap = usize::try_from(self.limits.max_requests.saturating_mul(4))
            .unwrap_or(usize::MAX)
            .max(64);
        let mut used = self.used_postage.lock();
        let lane = used.entry(*id).or_default();
        if lane.len() >= cap {
            lane.retain(|_, h| h.saturating_add(window) >= tip);
            if lane.len() >= cap {
                let wait_ms = self.params.block_interval.max(1) * 1000;
                return Err(ErrorObjectOwned::owned(
                    code::RATE_LIMITED,
                    format!(
                        "too many first-contact deposits to this user in the last {window} blocks; retry in {wait_ms} ms"
                    ),
                    Some(serde_json::json!({ "retry_after_ms": wait_ms })),
                ));
            }
        }
        if lane.insert(digest, height).is_some() {
            return Err(ErrorObjectOwned::owned(
                code::POSTAGE_REQUIRED,
                "this postage was used already",
                Some(serde_json::json!({ "bits": self.limits.postage_bits, "window": window })),
            ));
        }
        Ok(())
    }

    /// Refuse a deposit for `user` once their verified record has named
    /// another server for longer than `moved_grace`, so that senders look
    /// the record up again instead of getting a receipt from a server the
    /// user no longer reads. A lookup that fails accepts the deposit (the
    /// mailbox exists; availability first).
    async fn check_not_moved(&self, user: &Name) -> RpcResult<()> {
        let Ok(v) = self.user(user).await else {
            return Ok(());
        };
        let named = &v.record().server;
        let mut moved = self.moved_since.lock();
        if named == &self.name {
            moved.remove(user);
            return Ok(());
        }
        let since = *moved.entry(user.clone()).or_insert_with(Instant::now);
        if since.elapsed() >= self.limits.moved_grace {
            return Err(ErrorObjectOwned::owned(
                code::MOVED,
                format!("{user} moved to {named}; look the record up again and deposit there"),
                Some(serde_json::json!({ "server": named.to_string() })),
            ));
        }
        Ok(())
    }

    /// The signature and path of the receipt for `leaf` (from the batch
    /// signer).
    async fn receipt(&self, leaf: Hash) -> RpcResult<(Signature, Vec<(bool, Hash)>)> {
        let gone = || err(code::INTERNAL, "the receipt signer stopped".to_string());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.receipts
            .send((leaf, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    fn waiter(&self, id: &Hash) -> Arc<Notify> {
        self.waiters.lock().entry(*id).or_default().clone()
    }

    /// The user's verified record (cached for `record_ttl`).
    async fn user(&self, user: &Name) -> RpcResult<VerifiedUser> {
        if let Some((at, v)) = self.users.lock().get(user)
            && at.elapsed() < self.limits.record_ttl
        {
            return Ok(v.clone());
        }
        let lookup = self.lc.resolve(user).await.map_err(|e| {
            err(
                code::LOOKUP_FAILED,
                format!("cannot verify {user}'s record now: {e}"),
            )
        })?;
        let v = VerifiedUser::from_lookup(lookup).map_err(|e| match e {
            RecordError::NotRegistered(_) => err(code::NOT_FOUND, e.to_string()),
            other => err(code::UNAUTHORIZED, other.to_string()),
        })?;
        let mut users = self.users.lock();
        if users.len() >= MAX_PENDING {
            users.clear();
        }
        users.insert(user.clone(), (Instant::now(), v.clone()));
        Ok(v)
    }

    /// Forget the cached record of `user` if it is older than `age`;
    /// returns whether it was.
    fn evict_cached(&self, user: &Name, age: Duration) -> bool {
        let mut users = self.users.lock();
        let old = users.get(user).is_some_and(|(at, _)| at.elapsed() >= age);
        if old {
            users.remove(user);
        }
        old
    }

    fn rate_check(&self, id: &Hash) -> RpcResult<()> {
        let mut buckets = self.buckets.lock();
        let now = Instant::now();
        if buckets.len() >= MAX_PENDING {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = buckets.entry(*id).or_insert(Bucket {
            tokens: self.limits.deposit_burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.limits.deposit_rate;
        b.tokens = (b.tokens + refill).min(self.limits.deposit_burst);
        b.at = now;
        if b.tokens < 1.0 {
            let wait_ms = ((1.0 - b.tokens) / self.limits.deposit_rate * 1000.0).ceil() as u64;
            return Err(ErrorObjectOwned::owned(
                code::RATE_LIMITED,
                format!("too many deposits to this mailbox; retry in {wait_ms} ms"),
                Some(serde_json::json!({ "retry_after_ms": wait_ms })),
            ));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    fn read_batches(&self, ids: &[(Hash, u64)]) -> RpcResult<Vec<Batch>> {
        let mut out = Vec::with_capacity(ids.len());
        for (id, after) in ids {
            let msgs = self
                .store
                .read(id, *after, api::MAX_BATCH as usize, api::MAX_BATCH_BYTES)
                .map_err(store_err)?;
            out.push(Batch {
                mailbox: id.to_hex(),
                messages: msgs
                    .into_iter()
                    .map(|m| Delivered {
                        seq: m.seq,
                        envelope: envelope_hex(&m.bytes),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }
}

/// Hex of an envelope, byte by byte (`hex::encode` goes through `char`s,
/// which showed in the server's profile for every delivered envelope).
fn envelope_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // The output is exactly twice the input, so this cannot fail.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The signing keys of the devices in a verified record: the devices that
/// must acknowledge an envelope before it is deleted.
fn listed_devices(v: &VerifiedUser) -> Vec<PublicKey> {
    v.record().devices.iter().map(|d| d.sign).collect()
}

/// The RPC front of a [`Concierge`].
#[derive(Clone)]
struct Rpc(Arc<Concierge>);

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Concierge({})", self.0.name)
    }
}

#[async_trait]
impl ConciergeApiServer for Rpc {
    fn server_info(&self) -> RpcResult<api::ServerInfo> {
        let c = &self.0;
        Ok(api::ServerInfo {
            name: c.name.to_string(),
            key: c.keys.server.public().to_hex(),
            network: c.params.name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            registered_at: *c.registered_at.lock(),
            postage_bits: c.limits.postage_bits,
            postage_window: c.limits.postage_window,
        })
    }

    fn auth_challenge(&self, user: String) -> RpcResult<Challenge> {
        let user = parse_user(&user)?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| err(code::INTERNAL, e.to_string()))?;
        let expiry = unix_secs().saturating_add(CHALLENGE_SECS);
        let challenge = self.0.challenge(&user, expiry, nonce);
        Ok(Challenge {
            challenge: hex::encode(challenge),
            valid_secs: CHALLENGE_SECS,
        })
    }

    async fn auth_login(
        &self,
        user: String,
        device: String,
        challenge: String,
        sig: String,
    ) -> RpcResult<api::Token> {
        let c = &self.0;
        let user = parse_user(&user)?;
        let device = PublicKey(parse_hex32("device", &device)?);
        let challenge = parse_hex32("challenge", &challenge)?;
        let sig = hex::decode(&sig)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(Signature)
            .ok_or_else(|| invalid("sig must be 64 bytes of hex"))?;
        // Ours, for this user, not expired, not used before.
        let expiry = c.check_challenge(&user, &challenge).ok_or_else(|| {
            err(
                code::UNAUTHORIZED,
                "unknown, expired or foreign challenge; ask for a new one",
            )
        })?;
        if c.used_challenges.lock().contains_key(&challenge) {
            return Err(err(
                code::UNAUTHORIZED,
                "this challenge was used already; ask for a new one",
            ));
        }
        device
            .verify(
                api::AUTH_TAG,
                &api::auth_payload(&c.name, &user, &challenge),
                &sig,
            )
            .map_err(|_| err(code::UNAUTHORIZED, "the signature does not verify"))?;
        let mut v = c.user(&user).await?;
        // A device just added to the record: look again once, if the
        // cached record is more than a second old.
        if v.record().device(&device).is_none() && c.evict_cached(&user, Duration::from_secs(1)) {
            v = c.user(&user).await?;
        }
        if v.record().device(&device).is_none() {
            return Err(err(
                code::UNAUTHORIZED,
                format!(
                    "device {device} is not in {user}'s verified record (height {})",
                    v.lookup().height()
                ),
            ));
        }
        {
            // Single use. Entries come only from verified logins and leave
            // when their challenge expires.
            let mut used = c.used_challenges.lock();
            let now_secs = unix_secs();
            if used.len() >= MAX_PENDING {
                used.retain(|_, exp| *exp > now_secs);
            }
            if used.len() >= MAX_PENDING || used.insert(challenge, expiry).is_some() {
                return Err(err(
                    code::RATE_LIMITED,
                    "too many logins in the last minute; retry later",
                ));
            }
        }
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).map_err(|e| err(code::INTERNAL, e.to_string()))?;
        let now = Instant::now();
        let mut sessions = c.sessions.lock();
        if sessions.len() >= MAX_PENDING {
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_PENDING {
                return Err(err(code::RATE_LIMITED, "too many sessions; retry later"));
            }
        }
        sessions.insert(
            token,
            Session {
                user: user.clone(),
                device,
                expires: now + c.limits.token_lifetime,
            },
        );
        tracing::info!(target: "server::auth", %user, %device, "login");
        Ok(api::Token {
            token: hex::encode(token),
            valid_secs: c.limits.token_lifetime.as_secs(),
            record_height: v.lookup().height(),
        })
    }

    async fn mailbox_create(&self, token: String) -> RpcResult<api::MailboxInfo> {
        let c = &self.0;
        let (user, _, _) = c.live_session(&token).await?;
        let id = api::mailbox_id(&user);
        let requests = api::requests_id(&user);
        let created = c
            .store
            .create(&id, &user, c.limits.max_stored)
            .map_err(store_err)?;
        c.store
            .create(&requests, &user, c.limits.max_requests)
            .map_err(store_err)?;
        let meta = c
            .store
            .meta(&id)
            .map_err(store_err)?
            .ok_or_else(|| err(code::INTERNAL, "mailbox vanished"))?;
        if created {
            tracing::info!(target: "server::mailbox", %user, "mailbox created");
        }
        Ok(api::MailboxInfo {
            mailbox: id.to_hex(),
            created,
            next_seq: meta.next_seq,
            requests: requests.to_hex(),
        })
    }

    async fn mailbox_deposit(
        &self,
        recipient: String,
        envelope: String,
        pass: Option<String>,
        postage: Option<api::Postage>,
    ) -> RpcResult<api::Receipt> {
        let c = &self.0;
        let recipient = parse_user(&recipient)?;
        let bytes = parse_hex_capped("envelope", &envelope, c.limits.max_envelope)?;
        // Opaque to the server, but it must at least be an envelope.
        decode::<crate::crypto::Envelope>(&bytes)
            .map_err(|e| invalid(format!("not an envelope: {e}")))?;
        // Two lanes: contacts (with a pass the recipient registered) and
        // requests (with postage), each with its own quota and rate, so
        // strangers can never crowd out contacts.
        let id = if pass.is_some() {
            api::mailbox_id(&recipient)
        } else {
            api::requests_id(&recipient)
        };
        // Rate-limit state only for mailboxes that exist: deposits to
        // made-up names cannot grow the table.
        if c.store.meta(&id).map_err(store_err)?.is_none() {
            return Err(err(
                code::NOT_FOUND,
                format!("{recipient} has no mailbox on {}", c.name),
            ));
        }
        let postage = match pass {
            Some(pass) => {
                let pass = parse_hex32("pass", &pass)?;
                if !c
                    .store
                    .has_pass(&id, &api::pass_hash(&pass))
                    .map_err(store_err)?
                {
                    return Err(err(
                        code::PASS_REFUSED,
                        format!(
                            "{recipient} has not registered this contact pass here; deposit with postage"
                        ),
                    ));
                }
                None
            }
            // Checked before the rate limit: only valid postage spends
            // the lane's tokens.
            None => Some(c.check_postage(&id, &bytes, postage).await?),
        };
        c.rate_check(&id)?;
        if let Some((digest, height)) = postage {
            c.claim_postage(&id, digest, height)?;
        }
        c.check_not_moved(&recipient).await?;
        let seq = c
            .store
            .append_async(&id, &bytes)
            .await
            .map_err(|e| match e {
                MailboxError::NotFound(_) => err(
                    code::NOT_FOUND,
                    format!("{recipient} has no mailbox on {}", c.name),
                ),
                other => store_err(other),
            })?;
        c.waiter(&id).notify_waiters();
        let (sig, path) = c
            .receipt(api::receipt_leaf(
                &c.name,
                &id,
                seq,
                &api::envelope_hash(&bytes),
            ))
            .await?;
        Ok(api::Receipt {
            mailbox: id.to_hex(),
            seq,
            sig: hex::encode(sig.0),
            path: path
                .into_iter()
                .map(|(left, h)| api::ReceiptStep {
                    left,
                    hash: h.to_hex(),
                })
                .collect(),
        })
    }

    async fn mailbox_receive(
        &self,
        token: String,
        cursors: Vec<Cursor>,
        wait_ms: u64,
    ) -> RpcResult<Vec<Batch>> {
        let c = &self.0;
        let (user, device, v) = c.live_session(&token).await?;
        if cursors.is_empty() || cursors.len() > api::MAX_CURSORS {
            return Err(invalid(format!(
                "between 1 and {} cursors",
                api::MAX_CURSORS
            )));
        }
        let mut ids = Vec::with_capacity(cursors.len());
        let mut acks = Vec::new();
        for cur in &cursors {
            let id = Hash(parse_hex32("mailbox", &cur.mailbox)?);
            if ids.iter().any(|(seen, _)| *seen == id) {
                return Err(invalid(format!("mailbox {id} is named twice")));
            }
            match c.store.meta(&id).map_err(store_err)? {
                None => return Err(err(code::NOT_FOUND, format!("no mailbox {id}"))),
                Some(m) if m.owner != user => {
                    return Err(err(code::FORBIDDEN, format!("mailbox {id} is not yours")));
                }
                Some(m) => {
                    // Never past the mailbox's end: a cursor ahead of it
                    // (a server restored from a backup) must not delete
                    // envelopes the device has not seen.
                    if cur.ack && cur.after > m.acked(&device) && cur.after < m.next_seq {
                        acks.push((id, cur.after));
                    }
                    ids.push((id, cur.after));
                }
            }
        }
        if !acks.is_empty() {
            let listed = listed_devices(&v);
            let pending: Vec<_> = acks
                .iter()
                .map(|(id, up_to)| c.store.ack_async(id, &device, &listed, *up_to))
                .collect();
            // Best effort: a failed write must not stop the device from
            // reading what is stored; its next poll acknowledges again.
            for r in futures::future::join_all(pending).await {
                if let Err(e) = r {
                    tracing::warn!(target: "server", error = %e, "acknowledgement in a cursor failed");
                }
            }
        }
        let wait = Duration::from_millis(wait_ms).min(c.limits.max_wait);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notifies: Vec<Arc<Notify>> = ids.iter().map(|(id, _)| c.waiter(id)).collect();
            let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                notifies.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let batches = c.read_batches(&ids)?;
            if batches.iter().any(|b| !b.messages.is_empty())
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(batches);
            }
            let _ = tokio::time::timeout_at(deadline, futures::future::select_all(waits)).await;
        }
    }

    async fn mailbox_ack(&self, token: String, mailbox: String, up_to: u64) -> RpcResult<u64> {
        let c = &self.0;
        let (user, device, v) = c.live_session(&token).await?;
        let id = Hash(parse_hex32("mailbox", &mailbox)?);
        match c.store.meta(&id).map_err(store_err)? {
            None => Err(err(code::NOT_FOUND, format!("no mailbox {id}"))),
            Some(m) if m.owner != user => {
                Err(err(code::FORBIDDEN, format!("mailbox {id} is not yours")))
            }
            Some(_) => {
                let listed = listed_devices(&v);
                c.store
                    .ack_async(&id, &device, &listed, up_to)
                    .await
                    .map_err(store_err)
            }
        }
    }

    async fn mailbox_passes(
        &self,
        token: String,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> RpcResult<u64> {
        let c = &self.0;
        let (user, _, _) = c.live_session(&token).await?;
        let max = c.limits.max_passes as usize;
        if add.len() > max || remove.len() > max {
            return Err(err(
                code::TOO_LARGE,
                format!("at most {max} passes per call"),
            ));
        }
        let parse = |v: &[String]| -> RpcResult<Vec<Hash>> {
            v.iter()
                .map(|h| parse_hex32("pass hash", h).map(Hash))
                .collect()
        };
        let (add, remove) = (parse(&add)?, parse(&remove)?);
        c.store
            .update_passes(&api::mailbox_id(&user), &add, &remove, c.limits.max_passes)
            .map_err(|e| match e {
                MailboxError::NotFound(_) => err(
                    code::NOT_FOUND,
                    format!("{user} has no mailbox on {}; create it first", c.name),
                ),
                other => store_err(other),
            })
    }

    async fn keys_publish(&self, token: String, key: String) -> RpcResult<bool> {
        let c = &self.0;
        let (user, device, _) = c.live_session(&token).await?;
        let bytes = parse_hex_capped("key", &key, 512)?;
        let mk: MediumKey =
            decode(&bytes).map_err(|e| invalid(format!("not a medium-term key: {e}")))?;
        if mk.device != device {
            return Err(err(
                code::UNAUTHORIZED,
                "the key is for another device than the one logged in",
            ));
        }
        // Check the signature and validity against a record holding just
        // this device (which the login checked against the verified one).
        let only = UserRecord {
            server: c.name.clone(),
            devices: vec![crate::records::Device {
                sign: device,
                kx: mk.kx,
            }],
        };
        mk.check(&c.params.genesis_hash, &user, &only, crate::unix_now())
            .map_err(|e| invalid(format!("refused medium-term key: {e}")))?;
        c.store
            .put_medium_key(&user, &device, &encode(&mk))
            .map_err(store_err)?;
        Ok(true)
    }

    fn keys_fetch(&self, user: String) -> RpcResult<Vec<String>> {
        let user = parse_user(&user)?;
        let keys = self
            .0
            .store
            .medium_keys(&user, crate::records::MAX_DEVICES)
            .map_err(store_err)?;
        Ok(keys.into_iter().map(hex::encode).collect())
    }

    async fn group_append(
        &self,
        segment: String,
        entry: String,
        anchor: Option<String>,
    ) -> RpcResult<api::GroupHead> {
        self.0.group_append(segment, entry, anchor).await
    }

    fn group_log(&self, segment: String, from: u64, limit: u32) -> RpcResult<api::GroupEntries> {
        self.0.group_log(segment, from, limit)
    }

    async fn group_post(&self, segment: String, access: String, message: String) -> RpcResult<u64> {
        self.0.group_post(segment, access, message).await
    }

    async fn group_receive(
        &self,
        cursors: Vec<api::GroupCursor>,
        wait_ms: u64,
    ) -> RpcResult<Vec<api::GroupBatch>> {
        self.0.group_receive(cursors, wait_ms).await
    }

    fn link_post(&self, slot: String, side: u8, payload: String) -> RpcResult<bool> {
        let slot = Hash(parse_hex32("slot", &slot)?);
        let side = link_side(side)?;
        if payload.len() > 2 * api::MAX_LINK_PAYLOAD {
            return Err(err(
                code::TOO_LARGE,
                format!("a link message is at most {} bytes", api::MAX_LINK_PAYLOAD),
            ));
        }
        let payload = hex::decode(&payload).map_err(|_| invalid("payload must be hex"))?;
        self.0.links.post(slot, side, payload)?;
        Ok(true)
    }

    async fn link_read(
        &self,
        slot: String,
        side: u8,
        after: u32,
        wait_ms: u64,
    ) -> RpcResult<Vec<String>> {
        let slot = Hash(parse_hex32("slot", &slot)?);
        let side = link_side(side)?;
        let deadline = Instant::now() + Duration::from_millis(wait_ms.min(30_000));
        loop {
            let posted = self.0.links.posted.notified();
            let got = self.0.links.read(&slot, side, after as usize);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got.iter().map(hex::encode).collect());
            }
            // A post to any slot wakes every reader, which looks again.
            let _ = tokio::time::timeout_at(deadline.into(), posted).await;
        }
    }
}

fn link_side(side: u8) -> RpcResult<usize> {
    match side {
        0 | 1 => Ok(side as usize),
        _ => Err(invalid("side is 0 (new device) or 1 (approving device)")),
    }
}

/// The device-linking relay: short-lived slots of a few small messages
/// each, in memory (a link that a restart interrupts is started again).
/// Bounded: at most [`api::MAX_LINK_SLOTS`] slots of
/// [`api::MAX_LINK_MESSAGES`] messages of [`api::MAX_LINK_PAYLOAD`] bytes
/// per side, each slot gone [`api::LINK_TTL_SECS`] after it was opened.
#[derive(Default)]
struct Links {
    slots: Mutex<HashMap<Hash, LinkSlot>>,
    posted: Notify,
}

struct LinkSlot {
    expires: Instant,
    sides: [Vec<Vec<u8>>; 2],
}

impl Links {
    fn post(&self, slot: Hash, side: usize, payload: Vec<u8>) -> RpcResult<()> {
        if payload.len() > api::MAX_LINK_PAYLOAD {
            return Err(err(
                code::TOO_LARGE,
                format!("a link message is at most {} bytes", api::MAX_LINK_PAYLOAD),
            ));
        }
        let now = Instant::now();
        let mut slots = self.slots.lock();
        slots.retain(|_, s| s.expires > now);
        if !slots.contains_key(&slot) && slots.len() >= api::MAX_LINK_SLOTS {
            return Err(err(
                code::RATE_LIMITED,
                "too many device links in progress here; try again in a few minutes",
            ));
        }
        let s = slots.entry(slot).or_insert_with(|| LinkSlot {
            expires: now + Duration::from_secs(api::LINK_TTL_SECS),
            sides: [Vec::new(), Vec::new()],
        });
        if s.sides[side].len() >= api::MAX_LINK_MESSAGES {
            return Err(err(
                code::TOO_LARGE,
                "this link slot is full: start the link again with a new code",
            ));
        }
        s.sides[side].push(payload);
        drop(slots);
        self.posted.notify_waiters();
        Ok(())
    }

    fn read(&self, slot: &Hash, side: usize, after: usize) -> Vec<Vec<u8>> {
        let now = Instant::now();
        self.slots
            .lock()
            .get(slot)
            .filter(|s| s.expires > now)
            .map(|s| s.sides[side].iter().skip(after).cloned().collect())
            .unwrap_or_default()
    }
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The URL in the record.
    pub url: String,
    /// The server key (receipts).
    pub key: PublicKey,
    handle: ServerHandle,
    register: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stop serving and wait until stopped.
    pub async fn stop(self) {
        self.register.abort();
        let _ = self.handle.stop();
        self.handle.stopped().await;
    }

    /// Wait until the server stops.
    pub async fn stopped(self) {
        self.handle.stopped().await;
    }
}

/// Start a server: open storage, bind, write `rpc.addr` in the data
/// directory, and keep its `~name` record matching its configuration in
/// the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.name.kind() != NameKind::Server {
        return Err(ServerError::NotServerName(config.name));
    }
    crate::create_private_dir(&config.datadir)
        .map_err(io(format!("create {}", config.datadir.display())))?;
    let keys = ServerKeys::load_or_create(&config.datadir)?;
    let store = MailboxStore::open(
        &config.datadir.join("mailboxes"),
        config.limits.retention.as_secs(),
    )?;
    let lc = crate::light_client(
        config.params,
        config.datadir.join("headers"),
        config.depth,
        &config.nodes,
    )?;
    let rpc_err = |reason: String| ServerError::Rpc {
        addr: config.listen,
        reason,
    };
    let rpc_config = jsonrpsee::server::ServerConfig::builder()
        .max_connections(config.limits.max_connections)
        .max_request_body_size(
            (2 * config.limits.max_envelope.max(2 * groups::MAX_ENTRY) + 4096) as u32,
        )
        .max_response_body_size((2 * api::MAX_BATCH_BYTES * api::MAX_CURSORS + 65536) as u32)
        .http_only()
        .build();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| rpc_err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| rpc_err(e.to_string()))?;
    let tls = if config.plain_http {
        None
    } else {
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(&keys.server)?,
        )))
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let server_key = keys.server.public();
    let (receipts, receipt_rx) = tokio::sync::mpsc::channel(4 * MAX_RECEIPT_BATCH);
    tokio::spawn(sign_receipts(
        config.name.clone(),
        SecretKey::from_seed(keys.server.to_seed()),
        receipt_rx,
    ));
    let concierge = Arc::new(Concierge {
        name: config.name.clone(),
        params: config.params,
        keys,
        store,
        lc,
        limits: config.limits.clone(),
        challenge_key: {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| ServerError::Random(e.to_string()))?;
            k
        },
        used_challenges: Mutex::new(HashMap::new()),
        moved_since: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        users: Mutex::new(HashMap::new()),
        waiters: Mutex::new(HashMap::new()),
        buckets: Mutex::new(HashMap::new()),
        used_postage: Mutex::new(HashMap::new()),
        postage_sync: tokio::sync::Mutex::new(None),
        registered_at: Mutex::new(None),
        links: Links::default(),
        receipts,
    });
    let (stop, handle) = jsonrpsee::server::stop_channel();
    tokio::spawn(serve(
        listener,
        tls,
        Server::builder()
            .set_config(rpc_config)
            .to_service_builder(),
        Rpc(concierge.clone()).into_rpc(),
        stop,
        ConnLimits {
            total: config.limits.max_connections as usize,
            per_ip: config.limits.max_connections_per_ip,
            idle: config
                .limits
                .idle_timeout
                .max(config.limits.max_wait + Duration::from_secs(5)),
        },
    ));
    let addr_file = config.datadir.join("rpc.addr");
    std::fs::write(&addr_file, addr.to_string())
        .map_err(io(format!("write {}", addr_file.display())))?;
    tracing::info!(target: "server", name = %config.name, %addr, %url, "serving");
    let record = ServerRecord {
        key: server_key,
        urls: vec![url.clone()],
    };
    let register = tokio::spawn(keep_registered(concierge, record));
    Ok(RunningServer {
        addr,
        url,
        key: server_key,
        handle,
        register,
    })
}

/// Connection limits of the accept loop.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    total: usize,
    per_ip: u32,
    idle: Duration,
}

/// A connection closed after `timeout` without a byte in either direction
/// (a peer that completes a handshake and then sits must not hold a slot
/// for ever).
struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.timeout;
        self.sleep.as_mut().reset(at);
    }

    /// Pending from the inner stream: an error once the idle time is up.
    fn idle_check(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Pending => this.idle_check(cx),
            other => other,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.touch();
                }
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Pending => match this.idle_check(cx) {
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                _ => std::task::Poll::Pending,
            },
            other => other,
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Counts a connection against its IP address while alive.
struct IpSlot {
    ip: std::net::IpAddr,
    counts: Arc<Mutex<HashMap<std::net::IpAddr, u32>>>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Accept connections until stopped: TLS (when `tls` is set: a handshake
/// must finish within 10 s) and then HTTP with the RPC methods; at most
/// `limits.total` at once and `limits.per_ip` from one address (more are
/// closed at once); a connection idle for `limits.idle` is closed.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    services: jsonrpsee::server::TowerServiceBuilder<
        tower::layer::util::Identity,
        tower::layer::util::Identity,
    >,
    methods: jsonrpsee::RpcModule<Rpc>,
    stop: StopHandle,
    limits: ConnLimits,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(limits.total));
    let per_ip: Arc<Mutex<HashMap<std::net::IpAddr, u32>>> = Arc::default();
    let methods: jsonrpsee::Methods = methods.into();
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(target: "server::net", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.clone().shutdown() => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(target: "server::net", %peer, "too many connections; closed");
            continue;
        };
        let slot = {
            let mut counts = per_ip.lock();
            let n = counts.entry(peer.ip()).or_insert(0);
            if *n >= limits.per_ip {
                tracing::debug!(target: "server::net", %peer, "too many connections from this address; closed");
                continue;
            }
            *n += 1;
            IpSlot {
                ip: peer.ip(),
                counts: per_ip.clone(),
            }
        };
        let sock = IdleTimeout::new(sock, limits.idle);
        let svc = services.clone().build(methods.clone(), stop.clone());
        let (tls, stop) = (tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _held = (permit, slot);
            let done = match tls {
                Some(tls) => {
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            jsonrpsee::server::serve_with_graceful_shutdown(
                                stream,
                                svc,
                                stop.shutdown(),
                            )
                            .await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
                None => {
                    jsonrpsee::server::serve_with_graceful_shutdown(sock, svc, stop.shutdown())
                        .await
                }
            };
            if let Err(e) = done {
                tracing::debug!(target: "server::net", %peer, error = %e, "connection ended");
            }
        });
    }
}

/// Make the `~name` record match `record`: publish when the newest
/// verified state differs (and nothing we sent is pending), then watch
/// until it is confirmed; re-check every so often afterwards.
async fn keep_registered(c: Arc<Concierge>, record: ServerRecord) {
    let value = match record.to_value() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(target: "server::register", error = %e, "invalid server record");
            return;
        }
    };
    let interval = Duration::from_secs(c.params.block_interval.clamp(1, 10));
    let mut sent: Option<(u64, Instant)> = None;
    loop {
        let step = async {
            let lc = &c.lc;
            let confirmed = lc.resolve(&c.name).await?;
            if confirmed
                .record()
                .is_some_and(|r| r.value.as_bytes() == value)
            {
                return Ok::<_, xirtam_lightclient::Error>(Some(confirmed.height()));
            }
            let latest = lc.resolve_latest(&c.name).await?;
            let latest_ok = latest.record().is_some_and(|r| r.value.as_bytes() == value);
            let pending = sent.is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(60));
            if !latest_ok && !pending {
                let op = lc
                    .publish(&c.keys.root, &c.name, value.clone(), None)
                    .await?;
                tracing::info!(target: "server::register", name = %c.name, nonce = op.nonce, "record submitted");
                sent = Some((op.nonce, Instant::now()));
            }
            Ok(None)
        };
        match step.await {
            Ok(Some(h)) => {
                let first = c.registered_at.lock().replace(h).is_none();
                if first {
                    tracing::info!(target: "server::register", name = %c.name, height = h, "record confirmed");
                }
                tokio::time::sleep(interval * 10).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target: "server::register", error = %e, "cannot check or publish the server record yet")
            }
        }
        tokio::time::sleep(interval).await;
    }
}
