//! Read state: how far each conversation has been read, the same on every
//! device of the user. Marking a conversation read on one device stores the
//! mark and queues it, end to end encrypted, to our other devices (an event
//! of kind 4 through our own mailbox); a device keeps the newest mark it
//! has seen for each conversation.

use xirtam_proofs::{Hash, Name, encode};

use super::connection::Connector;
use super::directory::Directory;
use super::store::Pending;
use super::{ClientError, Core, Result, unix_ms};
use crate::crypto::KIND_READ;

/// How far a conversation was read.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ReadMark {
    /// The other side of the conversation.
    pub peer: Name,
    /// The last message read (its event id).
    pub id: Hash,
    /// When the mark was made (Unix ms, the marking device's clock): a
    /// mark with a later time replaces one with an earlier.
    pub time_ms: u64,
}

fn read_key(peer: &Name) -> String {
    format!("read/{peer}")
}

impl<D: Directory, C: Connector> Core<D, C> {
    /// How far the conversation with `peer` was read, on any of our devices.
    pub fn read_mark(&self, peer: &Name) -> Result<Option<ReadMark>> {
        Ok(self.store.state(&read_key(peer))?)
    }

    /// Mark the conversation with `peer` read up to its latest message, and
    /// tell our other devices. Returns the mark, or `None` when there is
    /// nothing to mark (no message, or already read that far).
    pub fn mark_read(&self, peer: &Name) -> Result<Option<ReadMark>> {
        let me = self.me()?;
        let Some(last) = self
            .store
            .messages()?
            .into_iter()
            .filter(|m| (&m.from == peer && m.to == me) || (m.from == me && &m.to == peer))
            .max_by_key(|m| m.local)
        else {
            return Ok(None);
        };
        let old = self.read_mark(peer)?;
        if old.as_ref().is_some_and(|o| o.id == last.id) {
            return Ok(None);
        }
        // Marks are ordered by when they were made (not by a peer's clock,
        // which could stop them ever advancing).
        let mark = ReadMark {
            peer: peer.clone(),
            id: last.id,
            time_ms: unix_ms().max(old.map_or(0, |o| o.time_ms + 1)),
        };
        let event = self.sign_event(&me, &me, Hash::ZERO, KIND_READ, encode(&mark));
        let mut b = self.store.batch();
        b.state(&read_key(peer), &mark)?;
        b.pending(&Pending::new(self.next_local(), &event, &me))?;
        b.commit()?;
        self.outbox_wake.notify_one();
        Ok(Some(mark))
    }

    /// Apply a mark from another of our devices to batch `b` if it is newer
    /// than ours; returns whether it was.
    pub(crate) fn apply_read(
        &self,
        mark: &ReadMark,
        b: &mut super::store::Batch<'_>,
    ) -> Result<bool, ClientError> {
        if self
            .read_mark(&mark.peer)?
            .is_some_and(|old| old.time_ms >= mark.time_ms)
        {
            return Ok(false);
        }
        b.state(&read_key(&mark.peer), mark)?;
        Ok(true)
    }
}
