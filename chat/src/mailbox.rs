//! Mailboxes: the concierge server's storage, on RocksDB.
//!
//! A mailbox holds envelopes (opaque ciphertext) under server-assigned,
//! gap-free sequence numbers starting at 1. Readers keep a cursor (the last
//! sequence number they processed) and ask for what comes after it. Cursors
//! are never clock times, so a clock step cannot lose messages. Every append
//! is one `WriteBatch` (the envelope and the mailbox's next sequence number
//! together), written through the WAL before it is acknowledged, so a
//! `kill -9` loses nothing that was acknowledged.
//!
//! Every device of the owner acknowledges on its own: the mailbox keeps each
//! device's acknowledged sequence number, and an envelope is deleted only
//! once every device listed in the owner's verified record (the caller
//! passes that list) has acknowledged it, or once it is older than the
//! store's retention.
//!
//! Column families: `mailboxes` (id → [`MailboxMeta`]), `messages`
//! (id ‖ u64be(seq) → u64be(deposit time, Unix s) ‖ envelope bytes), `keys`
//! (key hash of the user's name ‖ device signing key → the device's latest
//! signed medium-term key) and `passes` (id ‖ pass hash → empty: the
//! contact passes that open the mailbox to deposits, see docs/chat.md).
//! Group logs are stored here too ([`groups`]): `groups` (segment id →
//! [`GroupMeta`]) and `group_log` (segment id ‖ u64be(position) → entry);
//! a group's messages go to a mailbox the server owns (its lane).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bincode::{Decode, Encode};
use parking_lot::Mutex;
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
};
use xirtam_proofs::{Hash, Name, PublicKey, decode, encode};

const CF_MAILBOXES: &str = "mailboxes";
const CF_MESSAGES: &str = "messages";
const CF_KEYS: &str = "keys";
const CF_PASSES: &str = "passes";
const CF_GROUPS: &str = "groups";
const CF_GROUP_LOG: &str = "group_log";

mod groups;
pub use groups::GroupMeta;
/// Most envelopes one acknowledgement expires (the rest at the next).
const EXPIRE_BATCH: usize = 1024;
/// Seconds between looks for expired envelopes at acknowledgements.
const EXPIRY_CHECK_SECS: u64 = 60;
/// Most mailbox metadata entries kept in memory (about 200 bytes each).
const META_CACHE: usize = 65_536;

/// A mailbox's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MailboxMeta {
    /// The user whose devices may read and acknowledge.
    pub owner: Name,
    /// Sequence number the next envelope gets.
    pub next_seq: u64,
    /// Envelopes stored (not yet acknowledged by every device).
    pub stored: u64,
    /// Most envelopes it holds.
    pub cap: u64,
    /// Each device's acknowledged sequence number (only devices listed in
    /// the owner's record at the last acknowledgement).
    pub acks: Vec<(PublicKey, u64)>,
    /// Contact passes registered.
    pub passes: u64,
}

impl MailboxMeta {
    /// The sequence number `device` acknowledged (0: none).
    pub fn acked(&self, device: &PublicKey) -> u64 {
        self.acks
            .iter()
            .find(|(d, _)| d == device)
            .map_or(0, |(_, a)| *a)
    }
}

/// A mailbox operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// RocksDB failed.
    #[error("mailbox storage: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes do not decode (corruption).
    #[error("mailbox storage is corrupt: {0}")]
    Corrupt(String),
    /// No such mailbox.
    #[error("no mailbox {0}")]
    NotFound(Hash),
    /// The mailbox exists and belongs to someone else.
    #[error("mailbox {id} belongs to {owner}")]
    Taken {
        /// The mailbox.
        id: Hash,
        /// Its owner.
        owner: Name,
    },
    /// The mailbox holds too many envelopes.
    #[error("mailbox {0} is full")]
    Full(Hash),
    /// The mailbox has as many contact passes as it may.
    #[error("mailbox {0} has too many contact passes")]
    TooManyPasses(Hash),
}

/// One stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its sequence number.
    pub seq: u64,
    /// The envelope bytes.
    pub bytes: Vec<u8>,
}

/// The mailboxes of one server.
///
/// Every write is durable before it returns (`fsync` of the RocksDB WAL):
/// a receipt is signed, and an acknowledgement answered, only for what
/// survives a power loss. To keep that affordable, appends and
/// acknowledgements are group-committed by one writer thread: callers send
/// it their change and wait; it takes everything queued, applies it as one
/// `WriteBatch` with one `fsync`, and answers each caller. While one group
/// is being synced the next one gathers.
pub struct MailboxStore {
    core: Arc<Core>,
    /// To the writer thread (`None` once shut down, in `drop`).
    tx: Option<std::sync::mpsc::Sender<Queued>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// What the store and its writer thread share.
struct Core {
    /// The options the database was opened with (their statistics).
    #[cfg(test)]
    opts: Options,
    db: DB,
    /// Held by whoever writes metadata (the writer thread, `create`,
    /// `update_passes`).
    write: Mutex<()>,
    /// Metadata of recently used mailboxes, as written. Every deposit,
    /// long-poll and acknowledgement reads a mailbox's metadata, and under
    /// load the RocksDB key holding it has thousands of versions in the
    /// memtable; this keeps those reads off the skip list. Entries are
    /// inserted only while holding `write`, after the write is durable, so
    /// the cache never holds a value the database does not.
    metas: Mutex<HashMap<Hash, MailboxMeta>>,
    /// When each mailbox was last checked for expired envelopes at an
    /// acknowledgement (Unix s; used by the writer only).
    expiry_checked: Mutex<HashMap<Hash, u64>>,
    /// Envelopes older than this (seconds) are deleted even if a device
    /// never acknowledged them (a lost device must not fill the mailbox).
    retention: u64,
}

impl Drop for MailboxStore {
    fn drop(&mut self) {
        drop(self.tx.take()); // the writer's loop ends when the queue closes
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A change to a mailbox, applied in a group commit.
enum Change {
    Append {
        id: Hash,
        envelope: Vec<u8>,
        /// A full mailbox drops its oldest envelope instead of refusing
        /// (group lanes: nobody acknowledges them).
        evict: bool,
    },
    Ack {
        id: Hash,
        device: PublicKey,
        listed: Vec<PublicKey>,
        up_to: u64,
    },
}

impl Change {
    fn ack(id: &Hash, device: &PublicKey, listed: &[PublicKey], up_to: u64) -> Self {
        Change::Ack {
            id: *id,
            device: *device,
            listed: listed.to_vec(),
            up_to,
        }
    }
}

/// A queued change and where its outcome goes.
struct Queued {
    change: Change,
    outcome: tokio::sync::oneshot::Sender<Result<u64, MailboxError>>,
}

/// Write options of every mailbox write: synced.
fn durable() -> rocksdb::WriteOptions {
    let mut o = rocksdb::WriteOptions::default();
    o.set_sync(true);
    o
}

impl std::fmt::Debug for MailboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailboxStore({})", self.core.db.path().display())
    }
}

/// Options of column family `name`. Every key of `mailboxes` and
/// `messages` starts with a mailbox id, and every read stays inside one
/// mailbox, so their memtables are hashed by that id: an insert or a seek
/// walks the mailbox's own short skip list, not one holding every
/// mailbox's envelopes, tombstones and metadata versions (a third of the
/// writer thread's time under load went to that walk).
fn cf_options(name: &str) -> Options {
    let mut o = Options::default();
    if name == CF_MAILBOXES || name == CF_MESSAGES {
        o.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(32));
        o.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
            bucket_count: 65_536,
            height: 6,
            branching_factor: 4,
        });
    }
    o
}

fn pass_key(id: &Hash, pass: &Hash) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&pass.0);
    k
}

fn message_key(id: &Hash, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl MailboxStore {
    /// Open (or create) the store at `path`; envelopes are kept at most
    /// `retention` seconds.
    pub fn open(path: &Path, retention: u64) -> Result<Self, MailboxError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // The hash memtables below take one writer at a time (there is one).
        opts.set_allow_concurrent_memtable_write(false);
        let cfs = [
            CF_MAILBOXES,
            CF_MESSAGES,
            CF_KEYS,
            CF_PASSES,
            CF_GROUPS,
            CF_GROUP_LOG,
        ]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, cf_options(n)));
        // Tests count the WAL syncs (`wal_syncs`).
        #[cfg(test)]
        opts.enable_statistics();
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let core = Arc::new(Core {
            #[cfg(test)]
            opts,
            db,
            write: Mutex::new(()),
            metas: Mutex::new(HashMap::new()),
            expiry_checked: Mutex::new(HashMap::new()),
            retention,
        });
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let writer = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("mailbox-writer".into())
                .spawn(move || {
                    // One group per turn: the first change waited for,
                    // then everything else already queued.
                    while let Ok(first) = rx.recv() {
                        let mut group = vec![first];
                        group.extend(rx.try_iter());
                        core.apply(group);
                    }
                })
                .map_err(|e| MailboxError::Corrupt(format!("cannot start the writer: {e}")))?
        };
        Ok(MailboxStore {
            core,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// The mailbox's metadata, if it exists.
    pub fn meta(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        self.core.meta(id)
    }

    /// Create mailbox `id` for `owner`, holding at most `cap` envelopes.
    /// Returns `false` when it already existed for the same owner.
    pub fn create(&self, id: &Hash, owner: &Name, cap: u64) -> Result<bool, MailboxError> {
        self.core.create(id, owner, cap)
    }

    /// Append an envelope; returns its sequence number once it is durable.
    /// The envelope and the new metadata go in one `WriteBatch` (shared
    /// with the other changes of its group commit). From async code use
    /// [`MailboxStore::append_async`].
    pub fn append(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        self.queue(Change::Append {
            id: *id,
            envelope: envelope.to_vec(),
            evict: false,
        })?
        .blocking_recv()
        .map_err(|_| writer_gone())?
    }

    /// [`MailboxStore::append`], awaiting the group commit.
    pub async fn append_async(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        self.queue(Change::Append {
            id: *id,
            envelope: envelope.to_vec(),
            evict: false,
        })?
        .await
        .map_err(|_| writer_gone())?
    }

    /// [`MailboxStore::append_async`], dropping the oldest envelope when
    /// the mailbox is full (a group lane, which nobody acknowledges).
    pub async fn append_evicting(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        self.queue(Change::Append {
            id: *id,
            envelope: envelope.to_vec(),
            evict: true,
        })?
        .await
        .map_err(|_| writer_gone())?
    }

    /// `device` acknowledges the envelopes up to and including `up_to`
    /// (see [`MailboxStore::ack_async`]); returns how many were deleted,
    /// once durable. From async code use [`MailboxStore::ack_async`].
    pub fn ack(
        &self,
        id: &Hash,
        device: &PublicKey,
        listed: &[PublicKey],
        up_to: u64,
    ) -> Result<u64, MailboxError> {
        self.queue(Change::ack(id, device, listed, up_to))?
            .blocking_recv()
            .map_err(|_| writer_gone())?
    }

    /// `device` acknowledges the envelopes up to and including `up_to`,
    /// awaiting the group commit. `listed` are the devices of the owner's
    /// verified record: envelopes every one of them has acknowledged are
    /// deleted (and those older than the retention); acknowledgements of
    /// devices no longer listed are forgotten. Returns how many envelopes
    /// were deleted.
    ///
    /// Deletions remove a prefix, so the stored envelopes are always
    /// `next_seq - stored .. next_seq`: the range to delete is known without
    /// reading, and each key gets a point delete (range tombstones pile up
    /// and slow every later read of the column family).
    pub async fn ack_async(
        &self,
        id: &Hash,
        device: &PublicKey,
        listed: &[PublicKey],
        up_to: u64,
    ) -> Result<u64, MailboxError> {
        self.queue(Change::ack(id, device, listed, up_to))?
            .await
            .map_err(|_| writer_gone())?
    }

    /// Register and withdraw contact passes (by hash) of mailbox `id`,
    /// durably; at most `max` may be registered. Returns how many are.
    pub fn update_passes(
        &self,
        id: &Hash,
        add: &[Hash],
        remove: &[Hash],
        max: u64,
    ) -> Result<u64, MailboxError> {
        self.core.update_passes(id, add, remove, max)
    }

    /// Is `pass` (a hash) registered for mailbox `id`?
    pub fn has_pass(&self, id: &Hash, pass: &Hash) -> Result<bool, MailboxError> {
        Ok(self
            .core
            .db
            .get_pinned_cf(self.core.cf(CF_PASSES)?, pass_key(id, pass))?
            .is_some())
    }

    fn queue(
        &self,
        change: Change,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<u64, MailboxError>>, MailboxError> {
        let (outcome, rx) = tokio::sync::oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Queued { change, outcome })
            .map_err(|_| writer_gone())?;
        Ok(rx)
    }

    /// Envelopes after sequence number `after`, in order, at most `limit`
    /// of them and about `max_bytes` in total (at least one).
    pub fn read(
        &self,
        id: &Hash,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, MailboxError> {
        self.core.read(id, after, limit, max_bytes)
    }

    /// Store a user's device's medium-term key (durably).
    pub fn put_medium_key(
        &self,
        user: &Name,
        device: &PublicKey,
        key: &[u8],
    ) -> Result<(), MailboxError> {
        self.core.put_medium_key(user, device, key)
    }

    /// Up to `limit` medium-term keys of `user`.
    pub fn medium_keys(&self, user: &Name, limit: usize) -> Result<Vec<Vec<u8>>, MailboxError> {
        self.core.medium_keys(user, limit)
    }
}

fn writer_gone() -> MailboxError {
    MailboxError::Corrupt("the mailbox writer stopped".into())
}

impl Core {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, MailboxError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| MailboxError::Corrupt(format!("column family {name} missing")))
    }

    /// The mailbox's metadata, if it exists: from the cache, or read (and
    /// cached when no write is under way).
    fn meta(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        if let Some(m) = self.metas.lock().get(id) {
            return Ok(Some(m.clone()));
        }
        // Mailboxes that do not exist are not cached, and anyone can ask
        // for one: answer them without touching the writer's lock.
        let Some(m) = self.read_meta(id)? else {
            return Ok(None);
        };
        // Holding `write`, nothing can change the value between the read
        // and the insert; if a writer holds it, do not wait.
        match self.write.try_lock() {
            Some(_w) => {
                let m = self.read_meta(id)?;
                if let Some(m) = &m {
                    self.cache_meta(id, m.clone());
                }
                Ok(m)
            }
            None => Ok(Some(m)),
        }
    }

    /// The mailbox's metadata from the database (caller holds `write`, or
    /// does not cache the result).
    fn read_meta(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        match self.db.get_cf(self.cf(CF_MAILBOXES)?, id.0)? {
            None => Ok(None),
            Some(b) => decode(&b)
                .map(Some)
                .map_err(|e| MailboxError::Corrupt(format!("mailbox {id}: {e}"))),
        }
    }

    /// Remember `meta` as written (caller holds `write`, and the write is
    /// durable). A full cache starts over: bounded, and cheap to refill.
    fn cache_meta(&self, id: &Hash, meta: MailboxMeta) {
        let mut c = self.metas.lock();
        if c.len() >= META_CACHE && !c.contains_key(id) {
            c.clear();
        }
        c.insert(*id, meta);
    }

    /// The metadata while holding `write`: from the cache, or read and
    /// cached.
    fn meta_locked(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        if let Some(m) = self.metas.lock().get(id) {
            return Ok(Some(m.clone()));
        }
        let m = self.read_meta(id)?;
        if let Some(m) = &m {
            self.cache_meta(id, m.clone());
        }
        Ok(m)
    }

    /// Create mailbox `id` for `owner`. Returns `false` when it already
    /// existed for the same owner.
    fn create(&self, id: &Hash, owner: &Name, cap: u64) -> Result<bool, MailboxError> {
        let _w = self.write.lock();
        match self.meta_locked(id)? {
            Some(m) if &m.owner == owner => Ok(false),
            Some(m) => Err(MailboxError::Taken {
                id: *id,
                owner: m.owner,
            }),
            None => {
                let meta = MailboxMeta {
                    owner: owner.clone(),
                    next_seq: 1,
                    stored: 0,
                    cap,
                    acks: Vec::new(),
                    passes: 0,
                };
                self.db
                    .put_cf_opt(self.cf(CF_MAILBOXES)?, id.0, encode(&meta), &durable())?;
                self.cache_meta(id, meta);
                Ok(true)
            }
        }
    }

    /// Apply a group of changes in one synced `WriteBatch`, in queue order,
    /// and fill each outcome. A change that cannot apply (no such mailbox,
    /// full) fails alone; a failed write fails the whole group.
    fn apply(&self, group: Vec<Queued>) {
        let _w = self.write.lock();
        let mut metas: HashMap<Hash, MailboxMeta> = HashMap::new();
        let mut wb = WriteBatch::default();
        let mut results: Vec<Result<u64, MailboxError>> = Vec::with_capacity(group.len());
        for q in &group {
            results.push(self.stage(&q.change, &mut metas, &mut wb));
        }
        let written = (|| {
            let cf = self.cf(CF_MAILBOXES)?;
            for (id, meta) in &metas {
                wb.put_cf(cf, id.0, encode(meta));
            }
            self.db.write_opt(wb, &durable())?;
            // Durable: now readers may see it (before any caller is
            // answered, so a woken long-poll reads the new value).
            for (id, meta) in metas {
                self.cache_meta(&id, meta);
            }
            Ok::<(), MailboxError>(())
        })();
        for (q, r) in group.into_iter().zip(results) {
            let r = match (&written, r) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, r) => r,
            };
            // The caller may have gone (a dropped request): nothing to tell.
            let _ = q.outcome.send(r);
        }
    }

    /// Add `change` to `wb`, reading and updating metadata through `metas`.
    fn stage(
        &self,
        change: &Change,
        metas: &mut HashMap<Hash, MailboxMeta>,
        wb: &mut WriteBatch,
    ) -> Result<u64, MailboxError> {
        let id = match change {
            Change::Append { id, .. } | Change::Ack { id, .. } => *id,
        };
        let meta = match metas.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.meta_locked(&id)?.ok_or(MailboxError::NotFound(id))?)
            }
        };
        match change {
            Change::Append {
                envelope, evict, ..
            } => {
                if meta.stored >= meta.cap {
                    self.expire(&id, meta, wb)?;
                }
                if *evict && meta.stored >= meta.cap && meta.stored > 0 {
                    let oldest = meta.next_seq.saturating_sub(meta.stored);
                    self.delete_through(&id, meta, oldest, wb)?;
                }
                // u64::MAX stays unassigned: it bounds `read`'s iterator.
                if meta.stored >= meta.cap || meta.next_seq == u64::MAX {
                    return Err(MailboxError::Full(id));
                }
                let seq = meta.next_seq;
                meta.next_seq += 1;
                meta.stored += 1;
                let value = [&crate::unix_now().to_be_bytes()[..], envelope].concat();
                wb.put_cf(self.cf(CF_MESSAGES)?, message_key(&id, seq), value);
                Ok(seq)
            }
            Change::Ack {
                device,
                listed,
                up_to,
                ..
            } => {
                let mine = (*up_to).min(meta.next_seq.saturating_sub(1));
                meta.acks.retain(|(d, _)| listed.contains(d));
                if listed.contains(device) {
                    match meta.acks.iter_mut().find(|(d, _)| d == device) {
                        Some((_, a)) => *a = (*a).max(mine),
                        None => meta.acks.push((*device, mine)),
                    }
                }
                let floor = listed.iter().map(|d| meta.acked(d)).min().unwrap_or(0);
                let mut n = self.delete_through(&id, meta, floor, wb)?;
                if meta.stored > 0 && self.expiry_due(&id) {
                    n += self.expire(&id, meta, wb)?;
                }
                Ok(n)
            }
        }
    }

    /// Whether an acknowledgement should look for expired envelopes in
    /// mailbox `id`: at most once a minute (or once per retention, if
    /// shorter). Retention is counted in days; the look costs an iterator,
    /// which every acknowledgement of a busy mailbox need not pay. A full
    /// mailbox still expires at once, on the deposit that finds it full.
    fn expiry_due(&self, id: &Hash) -> bool {
        let now = crate::unix_now();
        let mut checked = self.expiry_checked.lock();
        if let Some(at) = checked.get(id)
            && now < at.saturating_add(self.retention.min(EXPIRY_CHECK_SECS))
        {
            return false;
        }
        if checked.len() >= META_CACHE {
            checked.clear();
        }
        checked.insert(*id, now);
        true
    }

    /// Delete the stored envelopes up to and including `last`.
    fn delete_through(
        &self,
        id: &Hash,
        meta: &mut MailboxMeta,
        last: u64,
        wb: &mut WriteBatch,
    ) -> Result<u64, MailboxError> {
        let first = meta.next_seq.saturating_sub(meta.stored);
        let last = last.min(meta.next_seq.saturating_sub(1));
        if last < first {
            return Ok(0);
        }
        let cf = self.cf(CF_MESSAGES)?;
        for seq in first..=last {
            wb.delete_cf(cf, message_key(id, seq));
        }
        meta.stored -= last - first + 1;
        Ok(last - first + 1)
    }

    /// Delete the oldest envelopes deposited more than `retention` seconds
    /// ago (at most [`EXPIRE_BATCH`]). Only written envelopes are read, so
    /// appends staged in the same group (new anyway) are not seen.
    fn expire(
        &self,
        id: &Hash,
        meta: &mut MailboxMeta,
        wb: &mut WriteBatch,
    ) -> Result<u64, MailboxError> {
        let first = meta.next_seq.saturating_sub(meta.stored);
        let now = crate::unix_now();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(message_key(id, meta.next_seq).to_vec());
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_MESSAGES)?,
            ro,
            IteratorMode::From(&message_key(id, first), Direction::Forward),
        );
        let mut last = None;
        for item in iter.take(EXPIRE_BATCH) {
            let (k, v) = item?;
            let at = v
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| MailboxError::Corrupt(format!("envelope in {id} without a time")))?;
            if at.saturating_add(self.retention) > now {
                break;
            }
            last = k
                .get(32..40)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
        }
        match last {
            Some(l) => self.delete_through(id, meta, l, wb),
            None => Ok(0),
        }
    }

    /// See [`MailboxStore::update_passes`].
    fn update_passes(
        &self,
        id: &Hash,
        add: &[Hash],
        remove: &[Hash],
        max: u64,
    ) -> Result<u64, MailboxError> {
        let _w = self.write.lock();
        let mut meta = self.meta_locked(id)?.ok_or(MailboxError::NotFound(*id))?;
        let cf = self.cf(CF_PASSES)?;
        let mut wb = WriteBatch::default();
        let mut staged: HashMap<Hash, bool> = HashMap::new();
        let changes = remove
            .iter()
            .map(|p| (p, false))
            .chain(add.iter().map(|p| (p, true)));
        for (pass, on) in changes {
            let was = match staged.get(pass) {
                Some(v) => *v,
                None => self.db.get_pinned_cf(cf, pass_key(id, pass))?.is_some(),
            };
            if was == on {
                continue;
            }
            if on {
                if meta.passes >= max {
                    return Err(MailboxError::TooManyPasses(*id));
                }
                meta.passes += 1;
                wb.put_cf(cf, pass_key(id, pass), []);
            } else {
                meta.passes = meta.passes.saturating_sub(1);
                wb.delete_cf(cf, pass_key(id, pass));
            }
            staged.insert(*pass, on);
        }
        wb.put_cf(self.cf(CF_MAILBOXES)?, id.0, encode(&meta));
        self.db.write_opt(wb, &durable())?;
        let passes = meta.passes;
        self.cache_meta(id, meta);
        Ok(passes)
    }

    /// Envelopes after sequence number `after`, in order, at most `limit`
    /// of them and about `max_bytes` in total (at least one).
    fn read(
        &self,
        id: &Hash,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, MailboxError> {
        // The metadata says what is stored: nothing after the cursor needs
        // no iterator (most wake-ups of an idle long-poll), and a read
        // starts at the first stored envelope, not among the tombstones of
        // the acknowledged ones.
        let Some(meta) = self.meta(id)? else {
            return Ok(Vec::new());
        };
        let first = meta.next_seq.saturating_sub(meta.stored);
        if after.saturating_add(1) >= meta.next_seq {
            return Ok(Vec::new());
        }
        let start = message_key(id, after.saturating_add(1).max(first));
        // Bound the iterator to this mailbox: past its last envelope lie the
        // next mailbox's acknowledged (deleted) envelopes, and without a
        // bound RocksDB walks every one of their tombstones looking for a
        // live key - most of a read's cost under load. Sequence number
        // u64::MAX is never assigned, so the exclusive bound loses nothing.
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(message_key(id, u64::MAX).to_vec());
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_MESSAGES)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter {
            let (k, v) = item?;
            if k.len() != 40 || k[..32] != id.0 {
                break;
            }
            if out.len() >= limit || (bytes + v.len() > max_bytes && !out.is_empty()) {
                break;
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[32..]);
            let Some(envelope) = v.get(8..) else {
                return Err(MailboxError::Corrupt(format!(
                    "envelope in {id} without a time"
                )));
            };
            bytes += envelope.len();
            out.push(Stored {
                seq: u64::from_be_bytes(seq),
                bytes: envelope.to_vec(),
            });
        }
        Ok(out)
    }

    /// Store `key` (encoded, already checked by the caller) as the latest
    /// medium-term key of `user`'s `device`.
    fn put_medium_key(
        &self,
        user: &Name,
        device: &PublicKey,
        key: &[u8],
    ) -> Result<(), MailboxError> {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&user.key_hash().0);
        k[32..].copy_from_slice(&device.0);
        self.db.put_cf_opt(self.cf(CF_KEYS)?, k, key, &durable())?;
        Ok(())
    }

    /// The medium-term keys stored for `user` (one per device, at most
    /// `limit`).
    fn medium_keys(&self, user: &Name, limit: usize) -> Result<Vec<Vec<u8>>, MailboxError> {
        let prefix = user.key_hash().0;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_KEYS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if k.len() != 64 || k[..32] != prefix || out.len() >= limit {
                break;
            }
            out.push(v.into_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    const DAY: u64 = 86_400;
    const D1: PublicKey = PublicKey([1; 32]);
    const D2: PublicKey = PublicKey([2; 32]);

    impl MailboxStore {
        /// How many times RocksDB has synced its WAL to disk.
        fn wal_syncs(&self) -> u64 {
            self.core
                .opts
                .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
        }
    }

    /// Every write a caller is told about (an append that gets a receipt,
    /// an acknowledgement, a mailbox, passes, a medium-term key) was synced
    /// to disk before the call returned: `kill -9` cannot lose it, and
    /// neither can a power loss.
    #[test]
    fn every_acknowledged_write_was_synced_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), DAY).expect("open");
        let id = Hash([7; 32]);
        let mut syncs = s.wal_syncs();
        let mut synced = |what: &str| {
            let now = s.wal_syncs();
            assert!(now > syncs, "{what} returned before a WAL sync");
            syncs = now;
        };
        s.create(&id, &name("@bob"), 10).expect("create");
        synced("create");
        s.append(&id, b"one").expect("append");
        synced("append");
        s.ack(&id, &D1, &[D1], 1).expect("ack");
        synced("ack");
        s.update_passes(&id, &[Hash([3; 32])], &[], 4)
            .expect("passes");
        synced("update_passes");
        s.put_medium_key(&name("@bob"), &D1, b"key").expect("key");
        synced("put_medium_key");
    }

    #[test]
    fn append_read_ack_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Hash([7; 32]);
        {
            let s = MailboxStore::open(dir.path(), DAY).expect("open");
            assert!(matches!(
                s.append(&id, b"x"),
                Err(MailboxError::NotFound(_))
            ));
            assert!(s.create(&id, &name("@bob"), 1000).expect("create"));
            assert!(!s.create(&id, &name("@bob"), 1000).expect("again"));
            assert!(matches!(
                s.create(&id, &name("@eve"), 1000),
                Err(MailboxError::Taken { .. })
            ));
            for i in 1..=5u64 {
                assert_eq!(
                    s.append(&id, format!("m{i}").as_bytes()).expect("append"),
                    i
                );
            }
            let got = s.read(&id, 2, 10, 1 << 20).expect("read");
            assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
            assert_eq!(got[0].bytes, b"m3");
            assert_eq!(s.read(&id, 0, 2, 1 << 20).expect("read").len(), 2);
            assert_eq!(
                s.read(&id, 0, 10, 1).expect("read").len(),
                1,
                "at least one"
            );
            assert_eq!(s.ack(&id, &D1, &[D1], 3).expect("ack"), 3);
            assert_eq!(s.ack(&id, &D1, &[D1], 3).expect("ack again"), 0);
        }
        // Reopened: the rest is there and numbering continues (no reuse).
        let s = MailboxStore::open(dir.path(), DAY).expect("reopen");
        let got = s.read(&id, 0, 10, 1 << 20).expect("read");
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(s.append(&id, b"m6").expect("append"), 6);
        let meta = s.meta(&id).expect("meta").expect("exists");
        assert_eq!((meta.next_seq, meta.stored), (7, 3));
        // Other mailboxes do not leak into this one.
        let other = Hash([8; 32]);
        s.create(&other, &name("@carol"), 1000).expect("create");
        s.append(&other, b"o1").expect("append");
        assert_eq!(s.read(&id, 5, 10, 1 << 20).expect("read").len(), 1);
    }

    #[test]
    fn a_full_mailbox_refuses_deposits_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), DAY).expect("open");
        let id = Hash([1; 32]);
        s.create(&id, &name("@bob"), 2).expect("create");
        s.append(&id, b"1").expect("append");
        s.append(&id, b"2").expect("append");
        assert!(matches!(s.append(&id, b"3"), Err(MailboxError::Full(_))));
        s.ack(&id, &D1, &[D1], 1).expect("ack");
        assert_eq!(s.append(&id, b"3").expect("append"), 3);
    }

    /// An envelope stays until every listed device has acknowledged it:
    /// one device's acknowledgement (of a copy it cannot even read) does
    /// not take it from the others. A device removed from the record no
    /// longer holds anything back.
    #[test]
    fn an_envelope_is_deleted_only_when_every_listed_device_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), DAY).expect("open");
        let id = Hash([3; 32]);
        s.create(&id, &name("@bob"), 100).expect("create");
        for _ in 0..4 {
            s.append(&id, b"e").expect("append");
        }
        let both = [D1, D2];
        assert_eq!(s.ack(&id, &D1, &both, 4).expect("ack"), 0);
        assert_eq!(s.read(&id, 0, 10, 1 << 20).expect("read").len(), 4);
        assert_eq!(s.ack(&id, &D2, &both, 2).expect("ack"), 2);
        // An acknowledgement never goes back.
        assert_eq!(s.ack(&id, &D1, &both, 1).expect("ack"), 0);
        assert_eq!(s.meta(&id).expect("meta").expect("exists").acked(&D1), 4);
        assert_eq!(s.ack(&id, &D2, &both, 3).expect("ack"), 1);
        // A device that is not listed acknowledges nothing for the others.
        assert_eq!(s.ack(&id, &PublicKey([9; 32]), &both, 4).expect("ack"), 0);
        // D2 removed from the record: D1's acknowledgement is enough.
        assert_eq!(s.ack(&id, &D1, &[D1], 4).expect("ack"), 1);
        assert_eq!(s.meta(&id).expect("meta").expect("exists").stored, 0);
    }

    /// A device that never acknowledges (lost, switched off) cannot fill
    /// the mailbox for good: envelopes older than the retention go.
    #[test]
    fn envelopes_past_the_retention_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), 0).expect("open");
        let id = Hash([4; 32]);
        s.create(&id, &name("@bob"), 2).expect("create");
        s.append(&id, b"1").expect("append");
        s.append(&id, b"2").expect("append");
        // Full, but everything is past a zero retention: room is made.
        assert_eq!(s.append(&id, b"3").expect("append"), 3);
        assert_eq!(s.ack(&id, &D1, &[D1, D2], 0).expect("ack"), 1);
        assert_eq!(s.meta(&id).expect("meta").expect("exists").stored, 0);
        // With a day's retention nothing expires.
        drop(s);
        let s = MailboxStore::open(dir.path(), DAY).expect("reopen");
        s.append(&id, b"4").expect("append");
        assert_eq!(s.ack(&id, &D1, &[D1, D2], 4).expect("ack"), 0);
        assert_eq!(s.read(&id, 0, 10, 1 << 20).expect("read").len(), 1);
    }

    #[test]
    fn passes_are_counted_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), DAY).expect("open");
        let id = Hash([5; 32]);
        let (p, q, r) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        assert!(matches!(
            s.update_passes(&id, &[p], &[], 2),
            Err(MailboxError::NotFound(_))
        ));
        s.create(&id, &name("@bob"), 10).expect("create");
        assert_eq!(s.update_passes(&id, &[p, q, p], &[], 2).expect("add"), 2);
        assert!(s.has_pass(&id, &p).expect("has"));
        assert!(!s.has_pass(&id, &r).expect("has"));
        assert!(matches!(
            s.update_passes(&id, &[r], &[], 2),
            Err(MailboxError::TooManyPasses(_))
        ));
        assert_eq!(s.update_passes(&id, &[r], &[p], 2).expect("swap"), 2);
        assert!(!s.has_pass(&id, &p).expect("has"));
        assert!(s.has_pass(&id, &r).expect("has"));
        assert!(!s.has_pass(&Hash([6; 32]), &r).expect("other mailbox"));
    }

    /// A read stops at its own mailbox: the acknowledged (deleted)
    /// envelopes of the next mailbox are not walked. Counted with RocksDB's
    /// perf context, so the test checks work done, not time.
    #[test]
    fn reads_do_not_walk_the_next_mailboxs_tombstones() {
        use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), DAY).expect("open");
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        s.create(&a, &name("@a"), 10_000).expect("create");
        s.create(&b, &name("@b"), 10_000).expect("create");
        for _ in 0..2_000 {
            s.append(&b, b"e").expect("append");
        }
        assert_eq!(s.ack(&b, &D1, &[D1], 2_000).expect("ack"), 2_000);
        s.append(&a, b"only").expect("append");
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        assert_eq!(s.read(&a, 0, 10, 1 << 20).expect("read").len(), 1);
        assert!(s.read(&a, 1, 10, 1 << 20).expect("read").is_empty());
        let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount)
            + perf.metric(PerfMetric::InternalKeySkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert!(skipped < 10, "{skipped} deleted keys walked");
    }
}
