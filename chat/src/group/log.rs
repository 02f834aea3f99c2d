//! The management log of a group: a hash-linked chain of entries, each
//! signed by a device of an admin listed in the entry before it, checked
//! against that admin's *verified* record. The log is what every member
//! agrees on (admins, key epoch, settings); a server that hosts it can
//! refuse or withhold entries, but cannot forge one, and two members who
//! compare heads detect a server that shows them different logs.
//!
//! This module is the pure rule (no I/O): [`Entry::head`], [`genesis`]
//! and [`next`]. The server's compare-and-swap on the head and the
//! encrypted body (roster, settings, sealed epoch keys) come on top.

use bincode::{Decode, Encode};
use xirtam_proofs::{Hash, Name, PublicKey, Signature, encode};

use crate::records::UserRecord;

/// Tag of an entry's signature.
pub const ENTRY_SIG_TAG: &str = "xirtam/chat/group-entry/v1";
/// Tag of an entry's head hash.
pub const ENTRY_HEAD_TAG: &str = "xirtam/chat/group-head/v1";
/// Tag of a group id.
pub const GROUP_ID_TAG: &str = "xirtam/chat/group-id/v1";
/// Tag of a segment id (the part of a group's log one server hosts).
pub const SEGMENT_TAG: &str = "xirtam/chat/group-segment/v1";
/// Most admins a group lists.
pub const MAX_ADMINS: usize = 64;
/// Largest entry body (encrypted roster, settings and sealed keys).
pub const MAX_BODY: usize = 1 << 20;

/// The id of a group created by `creator` with a random `nonce`.
pub fn group_id(network: &Hash, creator: &Name, nonce: &[u8; 32]) -> Hash {
    xirtam_proofs::hash::hash_tagged(GROUP_ID_TAG, &encode(&(network, creator, nonce)))
}

/// The id under which a server hosts the part of a group's log that
/// starts after `anchor` (the head of the entry before its first entry;
/// [`Hash::ZERO`] for a log that starts at the genesis entry). A group
/// that moves gets a new segment on the new server, so nobody can occupy
/// its place there in advance without knowing where and from which head
/// it moves.
pub fn segment_id(group: &Hash, anchor: &Hash) -> Hash {
    xirtam_proofs::hash::hash_tagged(SEGMENT_TAG, &encode(&(group, anchor)))
}

/// One entry of a group's management log.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// The group.
    pub group: Hash,
    /// Position in the log, from 0 (the genesis entry).
    pub seq: u64,
    /// Head of the entry before ([`Hash::ZERO`] for the genesis entry).
    pub prev: Hash,
    /// The admin who wrote it (listed in the previous entry's admins; in
    /// the genesis entry, in its own).
    pub author: Name,
    /// The author's device that signed it (listed in the author's verified
    /// record).
    pub device: PublicKey,
    /// The author's clock (Unix ms), informative.
    pub time_ms: u64,
    /// The server hosting the log from this entry on (a change is a move,
    /// which only an admin can sign).
    pub server: Name,
    /// The key epoch's access lock: the hash of the token that lets a
    /// member post and read messages on the hosting server
    /// ([`super::crypto::access_lock`]). Changes exactly when the epoch
    /// does.
    pub access: Hash,
    /// The admins after this entry (1 to [`MAX_ADMINS`], no duplicates).
    pub admins: Vec<Name>,
    /// The key epoch after this entry: equal to the previous one, or one
    /// more when this entry rotates the key.
    pub epoch: u64,
    /// Encrypted roster, settings and (on a rotation) the sealed epoch key;
    /// opaque to this rule.
    pub body: Vec<u8>,
    /// Ed25519 by `device` under [`ENTRY_SIG_TAG`] over
    /// [`Entry::signing_payload`].
    pub sig: Signature,
}

impl Entry {
    /// What the author's device signs: the network and every field but the
    /// signature.
    pub fn signing_payload(&self, network: &Hash) -> Vec<u8> {
        encode(&(
            network,
            &self.group,
            self.seq,
            &self.prev,
            &self.author,
            &self.device,
            self.time_ms,
            &self.server,
            &self.access,
            &self.admins,
            self.epoch,
            &self.body,
        ))
    }

    /// The entry's head: what the next entry's `prev` names, and what
    /// members compare.
    pub fn head(&self) -> Hash {
        xirtam_proofs::hash::hash_tagged(ENTRY_HEAD_TAG, &encode(self))
    }
}

/// What the log says after an entry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LogState {
    /// The group.
    pub group: Hash,
    /// The last entry's position.
    pub seq: u64,
    /// The last entry's head.
    pub head: Hash,
    /// The admins.
    pub admins: Vec<Name>,
    /// The key epoch.
    pub epoch: u64,
    /// The hosting server.
    pub server: Name,
    /// The epoch's access lock.
    pub access: Hash,
}

impl LogState {
    /// The state an entry leaves, taken as given (the entry a member was
    /// invited at, or the anchor of a moved log): its position, head,
    /// admins, epoch, server and access lock.
    pub fn at(e: &Entry) -> Self {
        LogState {
            group: e.group,
            seq: e.seq,
            head: e.head(),
            admins: e.admins.clone(),
            epoch: e.epoch,
            server: e.server.clone(),
            access: e.access,
        }
    }
}

/// Why an entry does not follow the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The entry is for another group.
    #[error("the entry is for another group")]
    OtherGroup,
    /// Not the next position.
    #[error("entry {got} where {expected} comes next")]
    Seq {
        /// The next position.
        expected: u64,
        /// The entry's.
        got: u64,
    },
    /// `prev` is not the current head (a fork, or a stale append).
    #[error("the entry follows {got}, not the head {head}")]
    NotHead {
        /// The current head.
        head: Hash,
        /// What the entry names.
        got: Hash,
    },
    /// The author is not an admin.
    #[error("{0} is not an admin of the group")]
    NotAdmin(Name),
    /// The signing device is not in the author's verified record.
    #[error("device {device} is not in {author}'s verified record")]
    UnknownDevice {
        /// The author.
        author: Name,
        /// The device.
        device: PublicKey,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The admin set is empty, too large or has duplicates.
    #[error("an admin set of 1 to {MAX_ADMINS} distinct names")]
    Admins,
    /// The epoch goes back or jumps.
    #[error("epoch {got} after {epoch}: an entry keeps the epoch or adds one")]
    Epoch {
        /// The current epoch.
        epoch: u64,
        /// The entry's.
        got: u64,
    },
    /// The body is too large.
    #[error("a body of {0} bytes; at most {MAX_BODY}")]
    TooLarge(usize),
    /// The access lock changes without a new epoch, or a new epoch keeps
    /// the old lock.
    #[error("the access lock changes exactly when the epoch does")]
    Access,
}

fn check_common(
    network: &Hash,
    e: &Entry,
    author_record: &UserRecord,
    admins_before: &[Name],
) -> Result<(), LogError> {
    if e.body.len() > MAX_BODY {
        return Err(LogError::TooLarge(e.body.len()));
    }
    let mut sorted: Vec<&Name> = e.admins.iter().collect();
    sorted.sort();
    sorted.dedup();
    if e.admins.is_empty() || e.admins.len() > MAX_ADMINS || sorted.len() != e.admins.len() {
        return Err(LogError::Admins);
    }
    if !admins_before.contains(&e.author) {
        return Err(LogError::NotAdmin(e.author.clone()));
    }
    if author_record.device(&e.device).is_none() {
        return Err(LogError::UnknownDevice {
            author: e.author.clone(),
            device: e.device,
        });
    }
    e.device
        .verify(ENTRY_SIG_TAG, &e.signing_payload(network), &e.sig)
        .map_err(|_| LogError::BadSignature)
}

/// Check a genesis entry: position 0, no `prev`, epoch 0, signed by a
/// device of an admin it lists (`author_record` is the author's verified
/// record).
pub fn genesis(
    network: &Hash,
    e: &Entry,
    author_record: &UserRecord,
) -> Result<LogState, LogError> {
    if e.seq != 0 {
        return Err(LogError::Seq {
            expected: 0,
            got: e.seq,
        });
    }
    if e.prev != Hash::ZERO {
        return Err(LogError::NotHead {
            head: Hash::ZERO,
            got: e.prev,
        });
    }
    if e.epoch != 0 {
        return Err(LogError::Epoch {
            epoch: 0,
            got: e.epoch,
        });
    }
    check_common(network, e, author_record, &e.admins)?;
    Ok(LogState::at(e))
}

/// Check `e` as the entry after `state` (`author_record` is the author's
/// verified record), and return the state after it.
pub fn next(
    network: &Hash,
    state: &LogState,
    e: &Entry,
    author_record: &UserRecord,
) -> Result<LogState, LogError> {
    if e.group != state.group {
        return Err(LogError::OtherGroup);
    }
    let expected = state.seq.saturating_add(1);
    if e.seq != expected {
        return Err(LogError::Seq {
            expected,
            got: e.seq,
        });
    }
    if e.prev != state.head {
        return Err(LogError::NotHead {
            head: state.head,
            got: e.prev,
        });
    }
    if e.epoch != state.epoch && e.epoch != state.epoch.saturating_add(1) {
        return Err(LogError::Epoch {
            epoch: state.epoch,
            got: e.epoch,
        });
    }
    if (e.epoch == state.epoch) != (e.access == state.access) {
        return Err(LogError::Access);
    }
    check_common(network, e, author_record, &state.admins)?;
    Ok(LogState::at(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DeviceKeys;
    use proptest::prelude::*;

    const NET: Hash = Hash([7; 32]);

    fn n(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn record(keys: &[&DeviceKeys]) -> UserRecord {
        UserRecord {
            server: n("~s1"),
            devices: keys.iter().map(|k| k.device()).collect(),
        }
    }

    fn entry(
        keys: &DeviceKeys,
        author: &str,
        seq: u64,
        prev: Hash,
        admins: &[&str],
        epoch: u64,
    ) -> Entry {
        let mut e = Entry {
            group: group_id(&NET, &n("@alice"), &[1; 32]),
            seq,
            prev,
            author: n(author),
            device: keys.device().sign,
            time_ms: 1,
            server: n("~s1"),
            access: Hash([epoch as u8; 32]),
            admins: admins.iter().map(|a| n(a)).collect(),
            epoch,
            body: vec![1, 2, 3],
            sig: Signature([0; 64]),
        };
        e.sig = keys.sign(ENTRY_SIG_TAG, &e.signing_payload(&NET));
        e
    }

    #[test]
    fn a_log_of_admin_changes_and_rotations_checks() {
        let (alice, bob) = (
            DeviceKeys::from_seed([1; 32]),
            DeviceKeys::from_seed([2; 32]),
        );
        let g = entry(&alice, "@alice", 0, Hash::ZERO, &["@alice"], 0);
        let s0 = genesis(&NET, &g, &record(&[&alice])).expect("genesis");
        // Alice promotes bob and rotates; bob then demotes alice.
        let e1 = entry(&alice, "@alice", 1, s0.head, &["@alice", "@bob"], 1);
        let s1 = next(&NET, &s0, &e1, &record(&[&alice])).expect("entry 1");
        let e2 = entry(&bob, "@bob", 2, s1.head, &["@bob"], 1);
        let s2 = next(&NET, &s1, &e2, &record(&[&bob])).expect("entry 2");
        assert_eq!(
            (s2.seq, s2.epoch, s2.admins.clone()),
            (2, 1, vec![n("@bob")])
        );
        // Alice is no longer an admin.
        let e3 = entry(&alice, "@alice", 3, s2.head, &["@alice"], 1);
        assert_eq!(
            next(&NET, &s2, &e3, &record(&[&alice])),
            Err(LogError::NotAdmin(n("@alice")))
        );
    }

    #[test]
    fn two_appends_on_one_head_cannot_both_follow() {
        // Two admins append at once on the same head: whichever the log
        // takes first, the other names a head that is no longer current
        // and must be re-applied on the new one.
        let (alice, bob) = (
            DeviceKeys::from_seed([1; 32]),
            DeviceKeys::from_seed([2; 32]),
        );
        let g = entry(&alice, "@alice", 0, Hash::ZERO, &["@alice", "@bob"], 0);
        let s0 = genesis(&NET, &g, &record(&[&alice])).expect("genesis");
        let a = entry(&alice, "@alice", 1, s0.head, &["@alice", "@bob"], 1);
        let b = entry(&bob, "@bob", 1, s0.head, &["@alice", "@bob"], 1);
        let s1 = next(&NET, &s0, &a, &record(&[&alice])).expect("first");
        assert!(matches!(
            next(&NET, &s1, &b, &record(&[&bob])),
            Err(LogError::Seq { .. })
        ));
        let b2 = entry(&bob, "@bob", 2, s0.head, &["@alice", "@bob"], 2);
        assert!(matches!(
            next(&NET, &s1, &b2, &record(&[&bob])),
            Err(LogError::NotHead { .. })
        ));
        let b3 = entry(&bob, "@bob", 2, s1.head, &["@alice", "@bob"], 2);
        next(&NET, &s1, &b3, &record(&[&bob])).expect("re-applied on the new head");
    }

    #[test]
    fn what_an_entry_must_not_do() {
        let (alice, eve) = (
            DeviceKeys::from_seed([1; 32]),
            DeviceKeys::from_seed([9; 32]),
        );
        let g = entry(&alice, "@alice", 0, Hash::ZERO, &["@alice"], 0);
        let s0 = genesis(&NET, &g, &record(&[&alice])).expect("genesis");
        // A device not in the author's record (a server forging for alice).
        let forged = entry(&eve, "@alice", 1, s0.head, &["@alice"], 0);
        assert!(matches!(
            next(&NET, &s0, &forged, &record(&[&alice])),
            Err(LogError::UnknownDevice { .. })
        ));
        // Signed for another network.
        let mut other = entry(&alice, "@alice", 1, s0.head, &["@alice"], 0);
        other.sig = alice.sign(ENTRY_SIG_TAG, &other.signing_payload(&Hash([8; 32])));
        assert_eq!(
            next(&NET, &s0, &other, &record(&[&alice])),
            Err(LogError::BadSignature)
        );
        // Epochs only keep or add one; admin sets are 1..=64 distinct.
        let jump = entry(&alice, "@alice", 1, s0.head, &["@alice"], 2);
        assert!(matches!(
            next(&NET, &s0, &jump, &record(&[&alice])),
            Err(LogError::Epoch { .. })
        ));
        let none = entry(&alice, "@alice", 1, s0.head, &[], 0);
        assert_eq!(
            next(&NET, &s0, &none, &record(&[&alice])),
            Err(LogError::Admins)
        );
        let twice = entry(&alice, "@alice", 1, s0.head, &["@alice", "@alice"], 0);
        assert_eq!(
            next(&NET, &s0, &twice, &record(&[&alice])),
            Err(LogError::Admins)
        );
        // The access lock changes exactly with the epoch.
        let mut lock = entry(&alice, "@alice", 1, s0.head, &["@alice"], 0);
        lock.access = Hash([9; 32]);
        lock.sig = alice.sign(ENTRY_SIG_TAG, &lock.signing_payload(&NET));
        assert_eq!(
            next(&NET, &s0, &lock, &record(&[&alice])),
            Err(LogError::Access)
        );
        let mut kept = entry(&alice, "@alice", 1, s0.head, &["@alice"], 1);
        kept.access = s0.access;
        kept.sig = alice.sign(ENTRY_SIG_TAG, &kept.signing_payload(&NET));
        assert_eq!(
            next(&NET, &s0, &kept, &record(&[&alice])),
            Err(LogError::Access)
        );
        // A genesis must list its author.
        let g2 = entry(&alice, "@alice", 0, Hash::ZERO, &["@bob"], 0);
        assert_eq!(
            genesis(&NET, &g2, &record(&[&alice])),
            Err(LogError::NotAdmin(n("@alice")))
        );
    }

    proptest! {
        /// Any change to a signed entry (one bit of its encoding) makes it
        /// fail to follow the log, or changes nothing at all.
        #[test]
        fn a_flipped_bit_never_passes(i in 0usize..4096, bit in 0u8..8) {
            let alice = DeviceKeys::from_seed([1; 32]);
            let g = entry(&alice, "@alice", 0, Hash::ZERO, &["@alice"], 0);
            let s0 = genesis(&NET, &g, &record(&[&alice])).expect("genesis");
            let e = entry(&alice, "@alice", 1, s0.head, &["@alice"], 1);
            let mut bytes = encode(&e);
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(t) = xirtam_proofs::decode::<Entry>(&bytes) {
                prop_assert!(t == e || next(&NET, &s0, &t, &record(&[&alice])).is_err());
            }
        }
    }
}
