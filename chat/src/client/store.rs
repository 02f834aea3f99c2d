//! The client's local store (RocksDB): identity, medium-term secrets,
//! messages, seen event ids, per-server cursors and the outbox.
//!
//! Every step that changes several of these at once is one `WriteBatch`:
//! queueing a message (message + outbox + conversation head), a received
//! batch (messages + seen ids + heads + the server cursor), a delivery
//! (outbox entry removed + message marked delivered).
//!
//! Column families: `state` (small named values), `messages` (u64be local
//! sequence → [`Message`]), `seen` (event id → local sequence), `outbox`
//! (u64be local sequence → [`Pending`]), `group_messages` (group id ‖
//! u64be(position on this device) → [`GroupMsg`]).

use std::path::Path;

use bincode::{Decode, Encode};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};
use xirtam_proofs::{Hash, Name, decode, encode};

use crate::crypto::MediumKey;

const CF_STATE: &str = "state";
const CF_MESSAGES: &str = "messages";
const CF_SEEN: &str = "seen";
const CF_OUTBOX: &str = "outbox";
const CF_GROUP_MESSAGES: &str = "group_messages";
const CFS: [&str; 5] = [CF_STATE, CF_MESSAGES, CF_SEEN, CF_OUTBOX, CF_GROUP_MESSAGES];

/// A group message as the client keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupMsg {
    /// Position among the group's messages on this device.
    pub local: u64,
    /// The group.
    pub group: Hash,
    /// Its sequence number in the lane it came through (a group that
    /// moved has a new lane, numbered from 1).
    pub seq: u64,
    /// Event id.
    pub id: Hash,
    /// Sender.
    pub from: Name,
    /// Sender's clock (Unix ms), informative.
    pub time_ms: u64,
    /// The log position and head it was sent under.
    pub log_seq: u64,
    /// The key epoch.
    pub epoch: u64,
    /// Text.
    pub text: String,
}

/// A local-store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB failed (another process may hold the store).
    #[error("local store: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes do not decode.
    #[error("local store is corrupt: {0}")]
    Corrupt(String),
}

/// Who this device is (secrets: the store is private to the user).
#[derive(Clone, Encode, Decode)]
pub struct Identity {
    /// Network name.
    pub network: String,
    /// The root key (owns the `@name` record). Only its public half is in
    /// the store: the secret is in a key file of its own
    /// ([`super::ClientConfig::root_key_file`]), which may live apart from
    /// the device.
    pub root: xirtam_proofs::PublicKey,
    /// Seed of the device keys.
    pub device_seed: [u8; 32],
    /// The registered name, once registered.
    pub name: Option<Name>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?}, {})", self.name, self.network)
    }
}

/// Servers this device reads from.
#[derive(Debug, Clone, Default, Encode, Decode)]
pub struct Servers {
    /// The server named in our record.
    pub current: Option<Name>,
    /// The server we moved from, polled until `until` (Unix seconds).
    pub previous: Option<(Name, u64)>,
}

/// A stored medium-term key pair.
#[derive(Clone, Encode, Decode)]
pub struct StoredMedium {
    /// The signed public part.
    pub key: MediumKey,
    /// The secret.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for StoredMedium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredMedium({:?})", self.key.kx)
    }
}

/// A message as the client keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Message {
    /// Local sequence number (arrival or send order on this device).
    pub local: u64,
    /// Event id.
    pub id: Hash,
    /// Sender.
    pub from: Name,
    /// Recipient.
    pub to: Name,
    /// Sender's clock (Unix ms), informative.
    pub time_ms: u64,
    /// The event this one follows in its conversation.
    pub after: Hash,
    /// Text.
    pub text: String,
    /// For outgoing messages: whether a server has signed a receipt.
    pub delivered: bool,
    /// For incoming messages: the height of the sender's verified record
    /// the signature was checked against.
    pub verified_at: u64,
    /// The server it came through or went to.
    pub via: Option<Name>,
    /// For incoming messages: it came through the requests lane from a
    /// sender this device has not accepted as a contact (a UI shows it as
    /// a request).
    pub request: bool,
}

/// An outgoing message not yet acknowledged by a server.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Pending {
    /// Local sequence of the message.
    pub local: u64,
    /// Encoded signed event.
    pub event: Vec<u8>,
    /// Recipient.
    pub to: Name,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before (Unix ms).
    pub next_try_ms: u64,
    /// Last error.
    pub last_error: String,
}

impl Pending {
    /// A new outbox entry: `event` (encoded) to `to`, not tried yet.
    pub fn new(local: u64, event: &crate::crypto::SignedEvent, to: &Name) -> Self {
        Pending {
            local,
            event: encode(event),
            to: to.clone(),
            attempts: 0,
            next_try_ms: 0,
            last_error: String::new(),
        }
    }
}

/// The local store.
pub struct LocalStore {
    db: DB,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalStore({})", self.db.path().display())
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.flush_all();
    }
}

impl LocalStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = CFS
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        Ok(LocalStore {
            db: DB::open_cf_descriptors(&opts, path, cfs)?,
        })
    }

    /// Write the memtables out, so the next open does not replay the
    /// write-ahead log (with 10,000 messages that took most of a
    /// half-second startup). Durability does not depend on it: every
    /// write is in the log already.
    fn flush_all(&self) {
        for name in CFS {
            if let Some(cf) = self.db.cf_handle(name)
                && let Err(e) = self.db.flush_cf(cf)
            {
                tracing::debug!(target: "client", error = %e, cf = name, "flush at close");
            }
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("column family {name} missing")))
    }

    fn get<T: Decode<()>>(&self, cf: &str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(self.cf(cf)?, key)? {
            None => Ok(None),
            Some(b) => decode(&b)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{cf}/{}: {e}", hex::encode(key)))),
        }
    }

    /// A named state value.
    pub fn state<T: Decode<()>>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(CF_STATE, key.as_bytes())
    }

    /// Set a named state value.
    pub fn put_state<T: Encode>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.db
            .put_cf(self.cf(CF_STATE)?, key.as_bytes(), encode(value))?;
        Ok(())
    }

    /// A fresh batch.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            wb: WriteBatch::default(),
        }
    }

    /// The next local sequence number (one past the last message).
    pub fn next_local(&self) -> Result<u64, StoreError> {
        // Messages and the outbox share the numbering (the outbox also
        // holds control events, such as contact passes, with no message).
        let mut next = 1;
        for cf in [CF_MESSAGES, CF_OUTBOX] {
            if let Some(item) = self.db.iterator_cf(self.cf(cf)?, IteratorMode::End).next() {
                let (k, _) = item?;
                let k: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("{cf} key")))?;
                next = next.max(u64::from_be_bytes(k) + 1);
            }
        }
        Ok(next)
    }

    /// Has this event been stored?
    pub fn seen(&self, id: &Hash) -> Result<bool, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_SEEN)?, id.0)?.is_some())
    }

    /// A message by local sequence.
    pub fn message(&self, local: u64) -> Result<Option<Message>, StoreError> {
        self.get(CF_MESSAGES, &be(local))
    }

    /// Every message, in local order.
    pub fn messages(&self) -> Result<Vec<Message>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MESSAGES)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push(
                decode(&v).map_err(|e| {
                    StoreError::Corrupt(format!("message {}: {e}", hex::encode(&k)))
                })?,
            );
        }
        Ok(out)
    }

    /// The messages of `group`, in lane order.
    pub fn group_messages(&self, group: &Hash) -> Result<Vec<GroupMsg>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_GROUP_MESSAGES)?,
            IteratorMode::From(&group.0, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if k.get(..32) != Some(&group.0[..]) {
                break;
            }
            out.push(decode(&v).map_err(|e| {
                StoreError::Corrupt(format!("group message {}: {e}", hex::encode(&k)))
            })?);
        }
        Ok(out)
    }

    /// The outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<Pending>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_OUTBOX)?, IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push(
                decode(&v)
                    .map_err(|e| StoreError::Corrupt(format!("outbox {}: {e}", hex::encode(&k))))?,
            );
        }
        Ok(out)
    }
}

/// Changes applied together.
pub struct Batch<'a> {
    store: &'a LocalStore,
    wb: WriteBatch,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} ops)", self.wb.len())
    }
}

impl Batch<'_> {
    /// Store a message (and mark its event seen).
    pub fn message(&mut self, m: &Message) -> Result<(), StoreError> {
        self.wb
            .put_cf(self.store.cf(CF_MESSAGES)?, be(m.local), encode(m));
        self.wb.put_cf(self.store.cf(CF_SEEN)?, m.id.0, be(m.local));
        Ok(())
    }

    /// Store a group message (and mark its event seen).
    pub fn group_message(&mut self, m: &GroupMsg) -> Result<(), StoreError> {
        let key = [&m.group.0[..], &be(m.local)].concat();
        self.wb
            .put_cf(self.store.cf(CF_GROUP_MESSAGES)?, key, encode(m));
        self.wb.put_cf(self.store.cf(CF_SEEN)?, m.id.0, be(0));
        Ok(())
    }

    /// Mark an event seen without a message (a rejected one).
    pub fn seen(&mut self, id: &Hash) -> Result<(), StoreError> {
        self.wb.put_cf(self.store.cf(CF_SEEN)?, id.0, be(0));
        Ok(())
    }

    /// Put or replace an outbox entry.
    pub fn pending(&mut self, p: &Pending) -> Result<(), StoreError> {
        self.wb
            .put_cf(self.store.cf(CF_OUTBOX)?, be(p.local), encode(p));
        Ok(())
    }

    /// Remove an outbox entry.
    pub fn sent(&mut self, local: u64) -> Result<(), StoreError> {
        self.wb.delete_cf(self.store.cf(CF_OUTBOX)?, be(local));
        Ok(())
    }

    /// Set a named state value.
    pub fn state<T: Encode>(&mut self, key: &str, value: &T) -> Result<(), StoreError> {
        self.wb
            .put_cf(self.store.cf(CF_STATE)?, key.as_bytes(), encode(value));
        Ok(())
    }

    /// Remove a state value.
    pub fn delete_state(&mut self, key: &str) -> Result<(), StoreError> {
        self.wb.delete_cf(self.store.cf(CF_STATE)?, key.as_bytes());
        Ok(())
    }

    /// Apply every change at once (nothing to write: nothing done).
    pub fn commit(self) -> Result<(), StoreError> {
        if self.wb.is_empty() {
            return Ok(());
        }
        // Synced: what the client acknowledges to a server afterwards, or
        // queues to send, must survive a power loss.
        let mut o = rocksdb::WriteOptions::default();
        o.set_sync(true);
        self.store.db.write_opt(self.wb, &o)?;
        Ok(())
    }
}
