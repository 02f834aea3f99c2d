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

use std::path::Path;

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
#[derive(Debug, thiserror::Error)]
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
pub struct MailboxStore {
    db: DB,
    /// Appends read and bump `next_seq`: one writer at a time.
    write: Mutex<()>,
    max_stored: u64,
}

impl std::fmt::Debug for MailboxStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailboxStore({})", self.db.path().display())
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
        Ok(MailboxStore {
            db,
            write: Mutex::new(()),
            max_stored,
        })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, MailboxError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| MailboxError::Corrupt(format!("column family {name} missing")))
    }

    /// The mailbox's metadata, if it exists.
    pub fn meta(&self, id: &Hash) -> Result<Option<MailboxMeta>, MailboxError> {
        match self.db.get_cf(self.cf(CF_MAILBOXES)?, id.0)? {
            None => Ok(None),
            Some(b) => decode(&b)
                .map(Some)
                .map_err(|e| MailboxError::Corrupt(format!("mailbox {id}: {e}"))),
        }
    }

    /// Create mailbox `id` for `owner`. Returns `false` when it already
    /// existed for the same owner.
    pub fn create(&self, id: &Hash, owner: &Name) -> Result<bool, MailboxError> {
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
                    .put_cf(self.cf(CF_MAILBOXES)?, id.0, encode(&meta))?;
                Ok(true)
            }
        }
    }

    /// Append an envelope; returns its sequence number. The envelope and the
    /// new metadata are one `WriteBatch`.
    pub fn append(&self, id: &Hash, envelope: &[u8]) -> Result<u64, MailboxError> {
        let _w = self.write.lock();
        let mut meta = self.meta(id)?.ok_or(MailboxError::NotFound(*id))?;
        // u64::MAX stays unassigned: it bounds `read`'s iterator.
        if meta.stored >= self.max_stored || meta.next_seq == u64::MAX {
            return Err(MailboxError::Full(*id));
        }
        let seq = meta.next_seq;
        meta.next_seq += 1;
        meta.stored += 1;
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_MESSAGES)?, message_key(id, seq), envelope);
        wb.put_cf(self.cf(CF_MAILBOXES)?, id.0, encode(&meta));
        self.db.write(wb)?;
        Ok(seq)
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
    pub fn put_medium_key(
        &self,
        user: &Name,
        device: &PublicKey,
        key: &[u8],
    ) -> Result<(), MailboxError> {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&user.key_hash().0);
        k[32..].copy_from_slice(&device.0);
        self.db.put_cf(self.cf(CF_KEYS)?, k, key)?;
        Ok(())
    }

    /// The medium-term keys stored for `user` (one per device, at most
    /// `limit`).
    pub fn medium_keys(&self, user: &Name, limit: usize) -> Result<Vec<Vec<u8>>, MailboxError> {
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

    /// Delete every envelope up to and including `up_to`; returns how many
    /// were deleted. One `WriteBatch`.
    ///
    /// Acknowledgements remove a prefix, so the stored envelopes are always
    /// `next_seq - stored .. next_seq`: the range to delete is known without
    /// reading, and each key gets a point delete (range tombstones pile up
    /// and slow every later read of the column family).
    pub fn ack(&self, id: &Hash, up_to: u64) -> Result<u64, MailboxError> {
        let _w = self.write.lock();
        let mut meta = self.meta(id)?.ok_or(MailboxError::NotFound(*id))?;
        let first = meta.next_seq.saturating_sub(meta.stored);
        let last = up_to.min(meta.next_seq.saturating_sub(1));
        if last < first {
            return Ok(0);
        }
        let n = last - first + 1;
        let mut wb = WriteBatch::default();
        let cf = self.cf(CF_MESSAGES)?;
        for seq in first..=last {
            wb.delete_cf(cf, message_key(id, seq));
        }
        meta.stored -= n;
        wb.put_cf(self.cf(CF_MAILBOXES)?, id.0, encode(&meta));
        self.db.write(wb)?;
        Ok(n)
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
