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
//! Column families: `mailboxes` (id → [`MailboxMeta`]) and `messages`
//! (id ‖ u64be(seq) → envelope bytes), and `keys` (key hash of the user's
//! name ‖ device signing key → the device's latest signed medium-term key).

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

/// A mailbox's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MailboxMeta {
    /// The user whose devices may read and acknowledge.
    pub owner: Name,
    /// Sequence number the next envelope gets.
    pub next_seq: u64,
    /// Envelopes stored (not yet acknowledged).
    pub stored: u64,
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
    db: DB,
    /// Held by whoever writes metadata (the writer thread, `create`).
    write: Mutex<()>,
    max_stored: u64,
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
    Append { id: Hash, envelope: Vec<u8> },
    Ack { id: Hash, up_to: u64 },
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

fn message_key(id: &Hash, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl MailboxStore {
    /// Open (or create) the store at `path`; a mailbox holds at most
    /// `max_stored` unacknowledged envelopes.
    pub fn open(path: &Path, max_stored: u64) -> Result<Self, MailboxError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = [CF_MAILBOXES, CF_MESSAGES, CF_KEYS]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let core = Arc::new(Core {
            db,
            write: Mutex::new(()),
            max_stored,
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

    /// Create mailbox `id` for `owner`. Returns `false` when it already
    /// existed for the same owner.
    pub fn create(&self, id: &Hash, owner: &Name) -> Result<bool, MailboxError> {
        self.core.create(id, owner)
    }

    /// Append an envelope; returns its sequence number once it is durable.
    /// The envelope and the new metadata go in one `WriteBatch` (shared
    /// with the other changes of its group commit). From async code use
    /// [`MailboxStore::append_async`].
    pub fn append(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        self.queue(Change::Append {
            id: *id,
            envelope: envelope.to_vec(),
        })?
        .blocking_recv()
        .map_err(|_| writer_gone())?
    }

    /// [`MailboxStore::append`], awaiting the group commit.
    pub async fn append_async(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        self.queue(Change::Append {
            id: *id,
            envelope: envelope.to_vec(),
        })?
        .await
        .map_err(|_| writer_gone())?
    }

    /// Delete the envelopes up to and including `up_to` (a prefix: see
    /// [`MailboxStore::ack_async`]); returns how many, once durable. From
    /// async code use [`MailboxStore::ack_async`].
    pub fn ack(&self, id: &Hash, up_to: u64) -> Result<u64, MailboxError> {
        self.queue(Change::Ack { id: *id, up_to })?
            .blocking_recv()
            .map_err(|_| writer_gone())?
    }

    /// Delete envelopes up to and including `up_to`, awaiting the group
    /// commit.
    ///
    /// Acknowledgements remove a prefix, so the stored envelopes are always
    /// `next_seq - stored .. next_seq`: the range to delete is known without
    /// reading, and each key gets a point delete (range tombstones pile up
    /// and slow every later read of the column family).
    pub async fn ack_async(&self, id: &Hash, up_to: u64) -> Result<u64, MailboxError> {
        self.queue(Change::Ack { id: *id, up_to })?
            .await
            .map_err(|_| writer_gone())?
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

    /// The mailbox's metadata, if it exists.
    fn meta(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        match self.db.get_cf(self.cf(CF_MAILBOXES)?, id.0)? {
            None => Ok(None),
            Some(b) => decode(&b)
                .map(Some)
                .map_err(|e| MailboxError::Corrupt(format!("mailbox {id}: {e}"))),
        }
    }

    /// Create mailbox `id` for `owner`. Returns `false` when it already
    /// existed for the same owner.
    fn create(&self, id: &Hash, owner: &Name) -> Result<bool, MailboxError> {
        let _w = self.write.lock();
        match self.meta(id)? {
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
                };
                self.db
                    .put_cf_opt(self.cf(CF_MAILBOXES)?, id.0, encode(&meta), &durable())?;
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
                e.insert(self.meta(&id)?.ok_or(MailboxError::NotFound(id))?)
            }
        };
        match change {
            Change::Append { envelope, .. } => {
                // u64::MAX stays unassigned: it bounds `read`'s iterator.
                if meta.stored >= self.max_stored || meta.next_seq == u64::MAX {
                    return Err(MailboxError::Full(id));
                }
                let seq = meta.next_seq;
                meta.next_seq += 1;
                meta.stored += 1;
                wb.put_cf(self.cf(CF_MESSAGES)?, message_key(&id, seq), envelope);
                Ok(seq)
            }
            Change::Ack { up_to, .. } => {
                let first = meta.next_seq.saturating_sub(meta.stored);
                let last = (*up_to).min(meta.next_seq.saturating_sub(1));
                if last < first {
                    return Ok(0);
                }
                let n = last - first + 1;
                let cf = self.cf(CF_MESSAGES)?;
                for seq in first..=last {
                    wb.delete_cf(cf, message_key(&id, seq));
                }
                meta.stored -= n;
                Ok(n)
            }
        }
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
        let start = message_key(id, after.saturating_add(1));
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
            bytes += v.len();
            out.push(Stored {
                seq: u64::from_be_bytes(seq),
                bytes: v.into_vec(),
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

    #[test]
    fn append_read_ack_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Hash([7; 32]);
        {
            let s = MailboxStore::open(dir.path(), 1000).expect("open");
            assert!(matches!(
                s.append(&id, b"x"),
                Err(MailboxError::NotFound(_))
            ));
            assert!(s.create(&id, &name("@bob")).expect("create"));
            assert!(!s.create(&id, &name("@bob")).expect("again"));
            assert!(matches!(
                s.create(&id, &name("@eve")),
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
            assert_eq!(s.ack(&id, 3).expect("ack"), 3);
            assert_eq!(s.ack(&id, 3).expect("ack again"), 0);
        }
        // Reopened: the rest is there and numbering continues (no reuse).
        let s = MailboxStore::open(dir.path(), 1000).expect("reopen");
        let got = s.read(&id, 0, 10, 1 << 20).expect("read");
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(s.append(&id, b"m6").expect("append"), 6);
        let meta = s.meta(&id).expect("meta").expect("exists");
        assert_eq!((meta.next_seq, meta.stored), (7, 3));
        // Other mailboxes do not leak into this one.
        let other = Hash([8; 32]);
        s.create(&other, &name("@carol")).expect("create");
        s.append(&other, b"o1").expect("append");
        assert_eq!(s.read(&id, 5, 10, 1 << 20).expect("read").len(), 1);
    }

    #[test]
    fn a_full_mailbox_refuses_deposits_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), 2).expect("open");
        let id = Hash([1; 32]);
        s.create(&id, &name("@bob")).expect("create");
        s.append(&id, b"1").expect("append");
        s.append(&id, b"2").expect("append");
        assert!(matches!(s.append(&id, b"3"), Err(MailboxError::Full(_))));
        s.ack(&id, 1).expect("ack");
        assert_eq!(s.append(&id, b"3").expect("append"), 3);
    }

    /// A read stops at its own mailbox: the acknowledged (deleted)
    /// envelopes of the next mailbox are not walked. Counted with RocksDB's
    /// perf context, so the test checks work done, not time.
    #[test]
    fn reads_do_not_walk_the_next_mailboxs_tombstones() {
        use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = MailboxStore::open(dir.path(), 10_000).expect("open");
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        s.create(&a, &name("@a")).expect("create");
        s.create(&b, &name("@b")).expect("create");
        for _ in 0..2_000 {
            s.append(&b, b"e").expect("append");
        }
        assert_eq!(s.ack(&b, 2_000).expect("ack"), 2_000);
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
