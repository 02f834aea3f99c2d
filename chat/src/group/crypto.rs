//! Group cryptography (pure, no I/O): the epoch key sealed to every member
//! device, the encrypted part of a log entry, and messages encrypted once
//! under the epoch key (docs/protocol.md §17g, ADR 0013).
//!
//! * **Epoch key** (32 random bytes): sealed to each member device's
//!   long-term key-agreement key from its verified record with one HPKE
//!   (RFC 9180, the suite of [`crate::crypto`]) encapsulation per device,
//!   all sharing one fresh ephemeral key. A wrap carries no recipient
//!   hint: a device computes its one Diffie-Hellman with the shared
//!   ephemeral once and tries the 48-byte wraps with the resulting AEAD
//!   key (microseconds for a thousand), so a rotation costs 48 bytes per
//!   device on the wire.
//! * **Entry body**: settings and roster, ChaCha20-Poly1305 under a key
//!   derived from the epoch key and the entry's position, with a key
//!   commitment and the entry's position and `prev` as associated data.
//! * **Message**: an event signed by the sending device, encrypted once
//!   under a key derived from the epoch key and a random salt (with a key
//!   commitment), carrying the log position and head it was sent under.
//! * **Access token**: derived from the epoch key; its hash (the entry's
//!   `access` lock) lets the hosting server admit posts and reads from
//!   members of the current (or previous) epoch without learning the key.

use bincode::{Decode, Encode};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use xirtam_proofs::hash::hash_tagged;
use xirtam_proofs::{Hash, Name, PublicKey, Signature, decode, encode};
use zeroize::Zeroizing;

use crate::crypto::hpke_seal::{Sealer, export, shared_secret};
use crate::crypto::{CryptoError, DeviceKeys, KEY_COMMIT_TAG, random_bytes};
use crate::records::{Device, UserRecord};

/// Tag of an access token.
pub const ACCESS_TAG: &str = "xirtam/chat/group-access/v1";
/// Tag of an access lock (the hash of a token).
pub const ACCESS_LOCK_TAG: &str = "xirtam/chat/group-access-lock/v1";
/// HPKE `info` prefix of an epoch key's wrap.
pub const SEAL_INFO_TAG: &str = "xirtam/chat/group-seal/v1";
/// Tag of an entry body's key.
pub const BODY_KEY_TAG: &str = "xirtam/chat/group-body-key/v1";
/// Tag of a message's key.
pub const MESSAGE_KEY_TAG: &str = "xirtam/chat/group-message-key/v1";
/// Tag of a message's signature.
pub const MESSAGE_SIG_TAG: &str = "xirtam/chat/group-message/v1";
/// Largest message body (plaintext).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most members a roster lists.
pub const MAX_MEMBERS: usize = 10_000;
/// Most devices an epoch key is sealed to.
pub const MAX_SEALED: usize = 10_000 * 2;
/// Longest group name (bytes).
pub const MAX_GROUP_NAME: usize = 100;

/// Message kind: text.
pub const GROUP_TEXT: u8 = 1;
/// Message kind: the sender leaves the group (an admin's client removes
/// them and rotates the key).
pub const GROUP_LEAVE: u8 = 2;

/// A group's key for one epoch.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct EpochKey(pub [u8; 32]);

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey(..)")
    }
}

impl Drop for EpochKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl EpochKey {
    /// A fresh random key.
    pub fn random() -> Result<Self, CryptoError> {
        Ok(EpochKey(random_bytes()?))
    }

    /// The access token of this key's epoch: what a member shows the
    /// hosting server to post and read.
    pub fn access_token(&self, group: &Hash, epoch: u64) -> [u8; 32] {
        hash_tagged(ACCESS_TAG, &encode(&(group, epoch, &self.0))).0
    }

    /// The access lock the log entry publishes for this key's epoch.
    pub fn access_lock(&self, group: &Hash, epoch: u64) -> Hash {
        access_lock(&self.access_token(group, epoch))
    }
}

/// The lock of an access token (what the server compares).
pub fn access_lock(token: &[u8; 32]) -> Hash {
    hash_tagged(ACCESS_LOCK_TAG, token)
}

/// What changed in an entry (for members to show; the roster and admins
/// say what holds).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Change {
    /// The group was created.
    Created,
    /// A member was added (invited).
    Added(Name),
    /// A member was removed.
    Removed(Name),
    /// A member was removed and may not be added again.
    Banned(Name),
    /// A member left.
    Left(Name),
    /// The admins changed.
    Admins,
    /// The group was renamed.
    Renamed,
    /// The key was rotated (periodically, or on request).
    Rotated,
    /// The log moved to another server.
    Moved(Name),
    /// The settings changed.
    Settings,
}

/// The encrypted part of an entry: settings and roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Body {
    /// The group's name.
    pub name: String,
    /// Only admins may post.
    pub admins_only: bool,
    /// New members may read the messages of the epoch they join in (sent
    /// before they joined); when off, adding a member rotates the key.
    pub history: bool,
    /// The members (users), admins included.
    pub roster: Vec<Name>,
    /// Users who may not be added again.
    pub banned: Vec<Name>,
    /// What this entry changed.
    pub change: Change,
}

impl Body {
    /// Check the limits (a body from an admin is still bytes from a peer).
    pub fn check(&self) -> Result<(), CryptoError> {
        if self.name.len() > MAX_GROUP_NAME
            || self.roster.len() > MAX_MEMBERS
            || self.banned.len() > MAX_MEMBERS
        {
            return Err(CryptoError::TooLarge(format!(
                "a group name of at most {MAX_GROUP_NAME} bytes and at most {MAX_MEMBERS} members"
            )));
        }
        Ok(())
    }
}

/// How a [`Body`] is encoded: the names of the roster and of the banned
/// joined by spaces (a name has none), a byte or so per name instead of
/// a length field of eight.
#[derive(Encode, Decode)]
struct BodyWire {
    name: String,
    admins_only: bool,
    history: bool,
    roster: String,
    banned: String,
    change: Change,
}

fn join(names: &[Name]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn split(s: &str) -> Result<Vec<Name>, CryptoError> {
    s.split(' ')
        .filter(|x| !x.is_empty())
        .map(|x| {
            Name::new(x).map_err(|e| CryptoError::Malformed {
                what: "group roster",
                reason: e.to_string(),
            })
        })
        .collect()
}

/// An epoch key sealed to member devices: one shared HPKE encapsulated
/// key and one 32-byte wrap per device (no recipient hint). A wrap is the
/// key XOR the 32-byte export of the device's export-only HPKE context;
/// its integrity comes from the entry's signed `access` lock, a hash of
/// the key a device checks every candidate against.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Seal {
    /// The shared ephemeral public key (HPKE `enc`).
    pub enc: [u8; 32],
    /// The wraps, in no particular order.
    pub wraps: Vec<[u8; 32]>,
}

/// What an entry's `body` holds: on a rotation the sealed new key, and
/// the encrypted settings and roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EntryBody {
    /// The new epoch key, sealed to every member device (on a rotation).
    pub seal: Option<Seal>,
    /// Key commitment (32 bytes) ‖ ChaCha20-Poly1305 of `encode(Body)`.
    pub body: Vec<u8>,
}

fn seal_info(group: &Hash, epoch: u64, device: &Device) -> Vec<u8> {
    [
        SEAL_INFO_TAG.as_bytes(),
        &group.0,
        &epoch.to_be_bytes(),
        &device.sign.0,
        &device.kx.0,
    ]
    .concat()
}

fn seal_aad(group: &Hash, epoch: u64) -> Vec<u8> {
    encode(&(SEAL_INFO_TAG, group, epoch))
}

/// Devices per sealing thread below which one thread does it all.
const PER_THREAD: usize = 64;

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Seal `key` (the key of `epoch`) to every device in `to`. The wraps
/// share one ephemeral key; large rotations are split over the machine's
/// cores (each wrap is one X25519 multiplication).
pub fn seal_key(
    group: &Hash,
    epoch: u64,
    key: &EpochKey,
    to: &[Device],
) -> Result<Seal, CryptoError> {
    if to.is_empty() || to.len() > MAX_SEALED {
        return Err(CryptoError::TooLarge(format!(
            "a key sealed to {} devices; between 1 and {MAX_SEALED}",
            to.len()
        )));
    }
    let sk_e = Zeroizing::new(random_bytes::<32>()?);
    let ctx = seal_aad(group, epoch);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(to.len().div_ceil(PER_THREAD))
        .max(1);
    let chunk = to.len().div_ceil(threads);
    type Part = Result<([u8; 32], Vec<[u8; 32]>), CryptoError>;
    let seal_chunk = |devices: &[Device]| -> Part {
        let infos: Vec<Vec<u8>> = devices.iter().map(|d| seal_info(group, epoch, d)).collect();
        let targets: Vec<(&[u8; 32], &[u8])> = devices
            .iter()
            .zip(&infos)
            .map(|(d, i)| (&d.kx.0, i.as_slice()))
            .collect();
        let (enc, pads) = Sealer::new().export_with(&sk_e, &targets, &ctx)?;
        // A device whose key is a small-order point (a broken or hostile
        // record) gets no wrap: it cannot stop the others' rotation.
        Ok((enc, pads.iter().flatten().map(|p| xor(&key.0, p)).collect()))
    };
    let parts: Vec<Part> = if threads == 1 {
        vec![seal_chunk(to)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = to
                .chunks(chunk)
                .map(|c| s.spawn(move || seal_chunk(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CryptoError::Random("a sealing thread".into())))
                })
                .collect()
        })
    };
    let mut enc = None;
    let mut wraps = Vec::with_capacity(to.len());
    for part in parts {
        let (e, w) = part?;
        enc.get_or_insert(e);
        wraps.extend(w);
    }
    if wraps.is_empty() {
        return Err(CryptoError::Malformed {
            what: "recipient keys",
            reason: "every one is a small-order X25519 point".into(),
        });
    }
    Ok(Seal {
        enc: enc.ok_or_else(|| CryptoError::TooLarge("no device".into()))?,
        wraps,
    })
}

/// Open the key of `epoch` from `seal` with this device's long-term key:
/// one Diffie-Hellman and one export, then each wrap's candidate is
/// checked against `lock` (the entry's signed access lock).
pub fn open_key(
    seal: &Seal,
    me: &DeviceKeys,
    group: &Hash,
    epoch: u64,
    lock: &Hash,
) -> Result<EpochKey, CryptoError> {
    let device = me.device();
    let dh = Zeroizing::new(
        MontgomeryPoint(seal.enc)
            .mul_clamped(*me.kx_secret_bytes())
            .0,
    );
    if dh.iter().all(|b| *b == 0) {
        return Err(CryptoError::Tampered);
    }
    let ss = shared_secret(&dh, &seal.enc, &device.kx.0);
    let pad = export(
        &ss,
        &seal_info(group, epoch, &device),
        &seal_aad(group, epoch),
    );
    for w in &seal.wraps {
        let candidate = EpochKey(xor(w, &pad));
        if &candidate.access_lock(group, epoch) == lock {
            return Ok(candidate);
        }
    }
    Err(CryptoError::NotForMe)
}

/// Each derived key encrypts one plaintext, so a zero nonce is safe.
const ZERO_NONCE: [u8; 12] = [0; 12];

fn commit_encrypt(k: &[u8; 32], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let commit = hash_tagged(KEY_COMMIT_TAG, k);
    let ct = ChaCha20Poly1305::new(Key::from_slice(k))
        .encrypt(Nonce::from_slice(&ZERO_NONCE), Payload { msg: plain, aad })
        .map_err(|_| CryptoError::Tampered)?;
    Ok([&commit.0[..], &ct].concat())
}

fn commit_decrypt(k: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (commit, ct) = sealed.split_at_checked(32).ok_or(CryptoError::Tampered)?;
    if hash_tagged(KEY_COMMIT_TAG, k).0 != commit {
        return Err(CryptoError::KeyCommitment);
    }
    ChaCha20Poly1305::new(Key::from_slice(k))
        .decrypt(Nonce::from_slice(&ZERO_NONCE), Payload { msg: ct, aad })
        .map_err(|_| CryptoError::Tampered)
}

fn body_key(group: &Hash, seq: u64, key: &EpochKey) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hash_tagged(BODY_KEY_TAG, &encode(&(group, seq, &key.0))).0)
}

/// Encrypt an entry's body (the entry at `seq` after `prev`) under the key
/// of the epoch the entry leaves.
pub fn seal_body(
    group: &Hash,
    seq: u64,
    prev: &Hash,
    key: &EpochKey,
    body: &Body,
) -> Result<Vec<u8>, CryptoError> {
    body.check()?;
    let wire = BodyWire {
        name: body.name.clone(),
        admins_only: body.admins_only,
        history: body.history,
        roster: join(&body.roster),
        banned: join(&body.banned),
        change: body.change.clone(),
    };
    commit_encrypt(
        &body_key(group, seq, key),
        &encode(&wire),
        &encode(&(group, seq, prev)),
    )
}

/// Decrypt an entry's body.
pub fn open_body(
    group: &Hash,
    seq: u64,
    prev: &Hash,
    key: &EpochKey,
    sealed: &[u8],
) -> Result<Body, CryptoError> {
    let plain = commit_decrypt(
        &body_key(group, seq, key),
        sealed,
        &encode(&(group, seq, prev)),
    )?;
    let wire: BodyWire = decode(&plain).map_err(|e| CryptoError::Malformed {
        what: "group entry body",
        reason: e.to_string(),
    })?;
    // Bounded before splitting: at most the roster's limit of names.
    let most = MAX_MEMBERS * (xirtam_proofs::name::MAX_NAME_LEN + 1);
    if wire.roster.len() > most || wire.banned.len() > most {
        return Err(CryptoError::TooLarge("group roster".into()));
    }
    let body = Body {
        name: wire.name,
        admins_only: wire.admins_only,
        history: wire.history,
        roster: split(&wire.roster)?,
        banned: split(&wire.banned)?,
        change: wire.change,
    };
    body.check()?;
    Ok(body)
}

/// A group message before encryption.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupEvent {
    /// The group.
    pub group: Hash,
    /// The sender.
    pub sender: Name,
    /// The sending device (listed in the sender's verified record).
    pub device: PublicKey,
    /// The log position the sender had.
    pub log_seq: u64,
    /// The log head at that position: members compare it with theirs.
    pub head: Hash,
    /// The key epoch.
    pub epoch: u64,
    /// The sender's clock (Unix ms), informative.
    pub time_ms: u64,
    /// [`GROUP_TEXT`] or [`GROUP_LEAVE`].
    pub kind: u8,
    /// The text.
    pub body: Vec<u8>,
}

/// A group event with its device's signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedGroupEvent {
    /// The event.
    pub event: GroupEvent,
    /// Ed25519 by `event.device` under [`MESSAGE_SIG_TAG`] over
    /// `encode((network, event))`.
    pub sig: Signature,
}

impl SignedGroupEvent {
    /// The event's id (what a member stores it under).
    pub fn id(&self) -> Hash {
        hash_tagged(MESSAGE_SIG_TAG, &encode(self))
    }

    /// Check the signing device against the sender's verified record.
    pub fn check(&self, network: &Hash, record: &UserRecord) -> Result<(), CryptoError> {
        if record.device(&self.event.device).is_none() {
            return Err(CryptoError::UnknownDevice(self.event.sender.clone()));
        }
        self.event
            .device
            .verify(MESSAGE_SIG_TAG, &encode(&(network, &self.event)), &self.sig)
            .map_err(|_| CryptoError::BadSignature("group message"))
    }
}

/// A group message as the server stores it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupMessage {
    /// The group.
    pub group: Hash,
    /// The key epoch it is encrypted under.
    pub epoch: u64,
    /// The log position it was sent at.
    pub log_seq: u64,
    /// The log head it was sent under.
    pub head: Hash,
    /// Random salt of its key.
    pub salt: [u8; 16],
    /// Key commitment (32 bytes) ‖ ChaCha20-Poly1305 of
    /// `encode(SignedGroupEvent)`.
    pub ct: Vec<u8>,
}

fn message_key(group: &Hash, epoch: u64, key: &EpochKey, salt: &[u8; 16]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hash_tagged(MESSAGE_KEY_TAG, &encode(&(group, epoch, &key.0, salt))).0)
}

fn message_aad(group: &Hash, epoch: u64, log_seq: u64, head: &Hash) -> Vec<u8> {
    encode(&(group, epoch, log_seq, head))
}

/// Sign `event` with `keys` and encrypt it once under `key` (the key of
/// `event.epoch`): the cost does not depend on the number of members.
/// Returns the message and the signed event's id.
pub fn seal_message(
    keys: &DeviceKeys,
    network: &Hash,
    event: GroupEvent,
    key: &EpochKey,
) -> Result<(GroupMessage, Hash), CryptoError> {
    if event.body.len() > MAX_MESSAGE {
        return Err(CryptoError::TooLarge(format!(
            "a group message of {} bytes; at most {MAX_MESSAGE}",
            event.body.len()
        )));
    }
    let sig = keys.sign(MESSAGE_SIG_TAG, &encode(&(network, &event)));
    let salt = random_bytes::<16>()?;
    let (group, epoch, log_seq, head) = (event.group, event.epoch, event.log_seq, event.head);
    let signed = SignedGroupEvent { event, sig };
    let id = signed.id();
    let ct = commit_encrypt(
        &message_key(&group, epoch, key, &salt),
        &encode(&signed),
        &message_aad(&group, epoch, log_seq, &head),
    )?;
    Ok((
        GroupMessage {
            group,
            epoch,
            log_seq,
            head,
            salt,
            ct,
        },
        id,
    ))
}

/// Decrypt a message with the key of its epoch. The inner event must name
/// the same group, epoch, position and head as the outside (which the
/// server sees), and still has to be [`SignedGroupEvent::check`]ed.
pub fn open_message(msg: &GroupMessage, key: &EpochKey) -> Result<SignedGroupEvent, CryptoError> {
    let plain = commit_decrypt(
        &message_key(&msg.group, msg.epoch, key, &msg.salt),
        &msg.ct,
        &message_aad(&msg.group, msg.epoch, msg.log_seq, &msg.head),
    )?;
    let ev: SignedGroupEvent = decode(&plain).map_err(|e| CryptoError::Malformed {
        what: "group message",
        reason: e.to_string(),
    })?;
    let e = &ev.event;
    if (e.group, e.epoch, e.log_seq, e.head) != (msg.group, msg.epoch, msg.log_seq, msg.head) {
        return Err(CryptoError::Mismatch(
            "the message's inside names another group, epoch or log head than its outside".into(),
        ));
    }
    if e.body.len() > MAX_MESSAGE {
        return Err(CryptoError::TooLarge("group message".into()));
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: Hash = Hash([7; 32]);
    const G: Hash = Hash([3; 32]);

    fn keys(i: u32) -> DeviceKeys {
        let mut seed = [9u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        DeviceKeys::from_seed(seed)
    }

    #[test]
    fn every_sealed_device_opens_the_key_and_no_other() {
        let devices: Vec<DeviceKeys> = (0..150).map(keys).collect();
        let to: Vec<Device> = devices.iter().map(|d| d.device()).collect();
        let key = EpochKey::random().expect("rng");
        let seal = seal_key(&G, 4, &key, &to).expect("seal");
        assert_eq!(seal.wraps.len(), 150);
        let lock = key.access_lock(&G, 4);
        for d in &devices {
            assert_eq!(open_key(&seal, d, &G, 4, &lock).expect("opens"), key);
            // Another epoch or group does not open.
            assert_eq!(
                open_key(&seal, d, &G, 5, &key.access_lock(&G, 5)),
                Err(CryptoError::NotForMe)
            );
            assert_eq!(
                open_key(&seal, d, &Hash([4; 32]), 4, &lock),
                Err(CryptoError::NotForMe)
            );
        }
        assert_eq!(
            open_key(&seal, &keys(1000), &G, 4, &lock),
            Err(CryptoError::NotForMe)
        );
        // One device left out cannot open it (and says so, typed).
        let fewer = seal_key(&G, 4, &key, &to[1..]).expect("seal");
        assert_eq!(
            open_key(&fewer, &devices[0], &G, 4, &lock),
            Err(CryptoError::NotForMe)
        );
        // A device with a small-order key gets no wrap and stops nobody.
        let mut with_bad = to.clone();
        with_bad.insert(
            3,
            Device {
                sign: keys(2000).device().sign,
                kx: crate::records::KxPublicKey([0; 32]),
            },
        );
        let mixed = seal_key(&G, 4, &key, &with_bad).expect("the others still get the key");
        assert_eq!(mixed.wraps.len(), 150);
        assert_eq!(
            open_key(&mixed, &devices[7], &G, 4, &lock).expect("opens"),
            key
        );
        // A flipped bit in a wrap (a server tampering) opens nothing.
        let mut bent = seal.clone();
        for w in &mut bent.wraps {
            w[0] ^= 1;
        }
        assert_eq!(
            open_key(&bent, &devices[0], &G, 4, &lock),
            Err(CryptoError::NotForMe)
        );
    }

    #[test]
    fn bodies_and_messages_round_trip_and_refuse_tampering() {
        let key = EpochKey::random().expect("rng");
        let body = Body {
            name: "lobby".into(),
            admins_only: false,
            history: true,
            roster: vec![Name::new("@alice").expect("name")],
            banned: vec![],
            change: Change::Created,
        };
        let sealed = seal_body(&G, 0, &Hash::ZERO, &key, &body).expect("seal");
        assert_eq!(
            open_body(&G, 0, &Hash::ZERO, &key, &sealed).expect("open"),
            body
        );
        assert!(open_body(&G, 1, &Hash::ZERO, &key, &sealed).is_err());
        let other = EpochKey::random().expect("rng");
        assert_eq!(
            open_body(&G, 0, &Hash::ZERO, &other, &sealed),
            Err(CryptoError::KeyCommitment)
        );

        let alice = keys(1);
        let ev = GroupEvent {
            group: G,
            sender: Name::new("@alice").expect("name"),
            device: alice.device().sign,
            log_seq: 3,
            head: Hash([5; 32]),
            epoch: 2,
            time_ms: 1,
            kind: GROUP_TEXT,
            body: b"hello".to_vec(),
        };
        let (msg, id) = seal_message(&alice, &NET, ev.clone(), &key).expect("seal");
        let opened = open_message(&msg, &key).expect("open");
        assert_eq!(opened.event, ev);
        assert_eq!(opened.id(), id);
        let rec = UserRecord {
            server: Name::new("~s1").expect("name"),
            devices: vec![alice.device()],
        };
        opened.check(&NET, &rec).expect("signed by alice's device");
        assert!(opened.check(&Hash([8; 32]), &rec).is_err());
        // The outside's head cannot be changed (a server relabelling a
        // message for another log).
        let mut relabelled = msg.clone();
        relabelled.head = Hash([6; 32]);
        assert_eq!(open_message(&relabelled, &key), Err(CryptoError::Tampered));
        let mut flipped = msg;
        let last = flipped.ct.len() - 1;
        flipped.ct[last] ^= 1;
        assert_eq!(open_message(&flipped, &key), Err(CryptoError::Tampered));
        assert_eq!(
            open_message(&relabelled, &other),
            Err(CryptoError::KeyCommitment)
        );
    }

    #[test]
    fn access_locks_differ_per_epoch_and_group() {
        let key = EpochKey([1; 32]);
        let t = key.access_token(&G, 1);
        assert_eq!(access_lock(&t), key.access_lock(&G, 1));
        assert_ne!(key.access_lock(&G, 1), key.access_lock(&G, 2));
        assert_ne!(key.access_lock(&G, 1), key.access_lock(&Hash([4; 32]), 1));
    }
}
