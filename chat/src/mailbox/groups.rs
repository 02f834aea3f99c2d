//! Hosted group logs: one segment per group and server (a group that moves
//! starts a new segment on the new server). An append is a
//! compare-and-swap on the head: under the store's write lock, the stored
//! state is read, the caller's rule check decides on it, and the entry and
//! the new state go in one synced `WriteBatch` (with the lane mailbox, for
//! a new segment). Two appends on one head: the second sees the first's
//! head and is refused; nothing is ever half-applied.

use bincode::{Decode, Encode};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use xirtam_proofs::{Hash, Name, decode, encode};

use super::{
    CF_GROUP_LOG, CF_GROUPS, CF_MAILBOXES, Core, MailboxError, MailboxMeta, MailboxStore, durable,
};
use crate::group::log::LogState;

/// A hosted segment's state.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupMeta {
    /// The log's state after its last entry.
    pub state: LogState,
    /// Position of the first entry stored here (0, or the anchor's).
    pub first: u64,
    /// Bytes of entries stored.
    pub bytes: u64,
}

impl GroupMeta {
    /// Whether `lock` is the current epoch's access lock. Only the current
    /// one: a rotation that removes a member shuts them out of the lane at
    /// once; a member who has not read it yet is refused, reads the (open)
    /// log and comes back with the new token.
    pub fn admits(&self, lock: &Hash) -> bool {
        lock == &self.state.access
    }
}

fn log_key(segment: &Hash, seq: u64) -> [u8; 40] {
    super::message_key(segment, seq)
}

impl MailboxStore {
    /// The state of hosted segment `segment`, if any.
    pub fn group_meta(&self, segment: &Hash) -> Result<Option<GroupMeta>, MailboxError> {
        self.core.group_meta(segment)
    }

    /// Append `entry` (encoded) to `segment` if `check`, given the stored
    /// state (`None`: a new segment), returns the state after it; `anchor`
    /// (encoded, at the position before `entry`'s) is stored with the first
    /// entry of a new segment. A new segment gets its message lane
    /// `lane` (owned by `owner`, holding at most `cap` messages). The outer
    /// error is storage; the inner one is `check`'s.
    #[allow(clippy::too_many_arguments)]
    pub fn group_append<E>(
        &self,
        segment: &Hash,
        entry: &[u8],
        anchor: Option<(u64, &[u8])>,
        lane: &Hash,
        owner: &Name,
        cap: u64,
        check: impl FnOnce(Option<&GroupMeta>) -> Result<LogState, E>,
    ) -> Result<Result<GroupMeta, E>, MailboxError> {
        let c = &self.core;
        let _w = c.write.lock();
        let old = c.group_meta(segment)?;
        let state = match check(old.as_ref()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let is_new = old.is_none();
        let mut wb = WriteBatch::default();
        let log = c.cf(CF_GROUP_LOG)?;
        wb.put_cf(log, log_key(segment, state.seq), entry);
        let meta = match old {
            Some(m) => GroupMeta {
                first: m.first,
                bytes: m.bytes.saturating_add(entry.len() as u64),
                state,
            },
            None => {
                let mut bytes = entry.len() as u64;
                if let Some((seq, a)) = anchor {
                    wb.put_cf(log, log_key(segment, seq), a);
                    bytes = bytes.saturating_add(a.len() as u64);
                }
                let lane_meta = MailboxMeta {
                    owner: owner.clone(),
                    next_seq: 1,
                    stored: 0,
                    cap,
                    acks: Vec::new(),
                    passes: 0,
                };
                if c.meta_locked(lane)?.is_none() {
                    wb.put_cf(c.cf(CF_MAILBOXES)?, lane.0, encode(&lane_meta));
                }
                GroupMeta {
                    first: anchor.map_or(state.seq, |(seq, _)| seq),
                    bytes,
                    state,
                }
            }
        };
        wb.put_cf(c.cf(CF_GROUPS)?, segment.0, encode(&meta));
        c.db.write_opt(wb, &durable())?;
        if is_new {
            // A new segment: its lane exists now (read it back to cache
            // what is stored, whether written now or before).
            if let Some(m) = c.read_meta(lane)? {
                c.cache_meta(lane, m);
            }
        }
        Ok(Ok(meta))
    }

    /// Up to `limit` entries of `segment` from position `from` on, and
    /// about `max_bytes` in total (at least one).
    pub fn group_entries(
        &self,
        segment: &Hash,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, MailboxError> {
        let c = &self.core;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(log_key(segment, u64::MAX).to_vec());
        let start = log_key(segment, from);
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in c.db.iterator_cf_opt(
            c.cf(CF_GROUP_LOG)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if k.len() != 40 || k[..32] != segment.0 || out.len() >= limit {
                break;
            }
            if bytes + v.len() > max_bytes && !out.is_empty() {
                break;
            }
            bytes += v.len();
            out.push(v.into_vec());
        }
        Ok(out)
    }
}

impl Core {
    fn group_meta(&self, segment: &Hash) -> Result<Option<GroupMeta>, MailboxError> {
        match self.db.get_cf(self.cf(CF_GROUPS)?, segment.0)? {
            None => Ok(None),
            Some(b) => decode(&b)
                .map(Some)
                .map_err(|e| MailboxError::Corrupt(format!("group segment {segment}: {e}"))),
        }
    }
}
