//! End-to-end encryption of direct messages.
//!
//! * A **device** has an Ed25519 signing key and an X25519 key-agreement key;
//!   both public halves are listed in its user's `@user` record.
//! * A device publishes **medium-term keys** (X25519) on its server, each
//!   signed by its device key with a creation and an expiry time. Senders
//!   encrypt to those, so deleting an expired medium-term secret gives
//!   forward secrecy for the messages encrypted to it. A key that is not
//!   signed by a device in the owner's *verified* record, or that expired,
//!   is refused ([`MediumKey::check`]).
//! * A message is an [`Event`] signed by the sender's device
//!   ([`SignedEvent`]), encrypted **once** with ChaCha20-Poly1305 under a
//!   fresh random content key; the content key is wrapped to every
//!   recipient device (and the sender's other devices) with HPKE (RFC 9180,
//!   base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305).
//!   Each wrap's `info` binds the recipient device and key, and its `aad` is
//!   the hash of the encrypted body, so a wrap cannot be moved to another
//!   message. No raw Diffie-Hellman output is ever used as a key.
//! * A receiver decrypts, then checks that the signing device is listed in
//!   the sender's verified record and that the event names it as recipient
//!   ([`SignedEvent::check`]).
//!
//! Byte layouts are in docs/protocol.md §17c.

use bincode::{Decode, Encode};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hpke::aead::ChaCha20Poly1305 as HpkeAead;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, Serializable};
use rand_core::TryRngCore;
use xirtam_proofs::hash::hash_tagged;
use xirtam_proofs::{Hash, Name, PublicKey, SecretKey, Signature, decode, encode};

use crate::records::{Device, KxPublicKey, UserRecord};

pub(crate) mod hpke_seal;
pub use hpke_seal::Sealer;
use zeroize::Zeroizing;

/// Tag of a device's signature over a medium-term key.
pub const MEDIUM_KEY_TAG: &str = "xirtam/chat/medium-key/v1";
/// Tag of a device's signature over an event.
pub const EVENT_TAG: &str = "xirtam/chat/event/v1";
/// HPKE `info` prefix of a content-key wrap.
pub const WRAP_TAG: &str = "xirtam/chat/wrap/v1";
/// Tag of the hash of an encrypted body (the wraps' `aad`).
pub const BODY_HASH_TAG: &str = "xirtam/chat/body-hash/v1";
/// AEAD associated data of the body.
pub const BODY_AAD: &[u8] = b"xirtam/chat/body/v1";
/// Domain tag of the key commitment that starts an envelope's body.
pub const KEY_COMMIT_TAG: &str = "xirtam/chat/key-commit/v1";
/// Tag deriving device keys from a seed.
const DEVICE_SEED_TAG: &str = "xirtam/chat/device-seed/v1";

/// Largest event body (bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// Most wraps in an envelope (recipient devices plus the sender's own).
pub const MAX_WRAPS: usize = 32;
/// How far in the future a medium-term key's creation time may be (s).
pub const CLOCK_SKEW: u64 = 300;

/// Something does not decrypt or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The bytes do not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A key or event is signed by a device not in the verified record.
    #[error("signed by a device that is not in {0}'s verified record")]
    UnknownDevice(Name),
    /// A signature does not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// A medium-term key expired (or claims to be from the future).
    #[error("medium-term key is stale: valid {created}..{expires}, now {now}")]
    StaleKey {
        /// Creation time.
        created: u64,
        /// Expiry time.
        expires: u64,
        /// The checker's clock.
        now: u64,
    },
    /// No wrap in the envelope is for this device, or none opens.
    #[error("the message is not encrypted to this device")]
    NotForMe,
    /// Decryption failed: the envelope was tampered with.
    #[error("decryption failed: the message was altered")]
    Tampered,
    /// The content key wrapped to this device is not the one the envelope
    /// commits to: the sender may be showing different devices different
    /// messages.
    #[error(
        "the key wrapped to this device does not match the envelope's key commitment (different devices may be shown different messages)"
    )]
    KeyCommitment,
    /// The event names another sender or recipient than expected.
    #[error("event mismatch: {0}")]
    Mismatch(String),
    /// Too many recipients or too large a body.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The OS random source failed.
    #[error("no randomness: {0}")]
    Random(String),
}

type KxSecret = <X25519HkdfSha256 as Kem>::PrivateKey;
type KxPublic = <X25519HkdfSha256 as Kem>::PublicKey;

fn kx_bytes(pk: &KxPublic) -> KxPublicKey {
    let mut out = [0u8; 32];
    out.copy_from_slice(&pk.to_bytes());
    KxPublicKey(out)
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    rand_core::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

/// A device's secret keys.
pub struct DeviceKeys {
    sign: SecretKey,
    kx: KxSecret,
    kx_pub: KxPublicKey,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKeys({})", self.sign.public())
    }
}

impl DeviceKeys {
    /// Keys derived from a 32-byte seed (keep the seed secret).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let s = hash_tagged(DEVICE_SEED_TAG, &[&seed[..], b"sign"].concat());
        let k = hash_tagged(DEVICE_SEED_TAG, &[&seed[..], b"kx"].concat());
        let (kx, pk) = X25519HkdfSha256::derive_keypair(&k.0);
        DeviceKeys {
            sign: SecretKey::from_seed(s.0),
            kx,
            kx_pub: kx_bytes(&pk),
        }
    }

    /// Fresh keys from the OS random source.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(DeviceKeys::from_seed(random_bytes()?))
    }

    /// The public half, as listed in the user record.
    pub fn device(&self) -> Device {
        Device {
            sign: self.sign.public(),
            kx: self.kx_pub,
        }
    }

    /// Sign `payload` under `tag` with the device key.
    pub fn sign(&self, tag: &str, payload: &[u8]) -> Signature {
        self.sign.sign(tag, payload)
    }

    /// A new medium-term key valid from `created` for `lifetime` seconds,
    /// signed by this device for `network` (its genesis hash).
    pub fn medium_key(
        &self,
        network: &Hash,
        created: u64,
        lifetime: u64,
    ) -> Result<MediumSecret, CryptoError> {
        let (secret, public) = X25519HkdfSha256::derive_keypair(&random_bytes::<32>()?);
        let mut key = MediumKey {
            device: self.sign.public(),
            kx: kx_bytes(&public),
            created,
            expires: created.saturating_add(lifetime),
            sig: Signature([0; 64]),
        };
        key.sig = self.sign.sign(MEDIUM_KEY_TAG, &key.signed_bytes(network));
        Ok(MediumSecret { key, secret })
    }

    /// The long-term key-agreement secret's bytes (a group key is sealed
    /// to it).
    pub(crate) fn kx_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.kx.to_bytes());
        out
    }

    /// The long-term key-agreement secret, as a fallback medium key (used
    /// when a device has published none).
    fn long_term(&self) -> (KxPublicKey, &KxSecret) {
        (self.kx_pub, &self.kx)
    }
}

/// A signed medium-term key-agreement key, as published on a server.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MediumKey {
    /// The device (signing key) that signed it.
    pub device: PublicKey,
    /// The X25519 key.
    pub kx: KxPublicKey,
    /// Valid from (Unix seconds).
    pub created: u64,
    /// Valid until (Unix seconds, exclusive).
    pub expires: u64,
    /// The device's signature over the fields above.
    pub sig: Signature,
}

impl MediumKey {
    /// What the device signs: the network's genesis hash, then the fields.
    fn signed_bytes(&self, network: &Hash) -> Vec<u8> {
        encode(&(*network, self.device, self.kx, self.created, self.expires))
    }

    /// Accept this key on `network` (its genesis hash) for `owner` (whose
    /// verified record is `record`) at time `now`: its device is listed,
    /// the signature verifies, and it is within its validity.
    pub fn check(
        &self,
        network: &Hash,
        owner: &Name,
        record: &UserRecord,
        now: u64,
    ) -> Result<(), CryptoError> {
        if record.device(&self.device).is_none() {
            return Err(CryptoError::UnknownDevice(owner.clone()));
        }
        self.device
            .verify(MEDIUM_KEY_TAG, &self.signed_bytes(network), &self.sig)
            .map_err(|_| CryptoError::BadSignature("medium-term key"))?;
        if now >= self.expires || self.created > now.saturating_add(CLOCK_SKEW) {
            return Err(CryptoError::StaleKey {
                created: self.created,
                expires: self.expires,
                now,
            });
        }
        Ok(())
    }
}

/// A medium-term key with its secret (kept on the device only).
pub struct MediumSecret {
    /// The public, signed part.
    pub key: MediumKey,
    secret: KxSecret,
}

impl std::fmt::Debug for MediumSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediumSecret({:?})", self.key.kx)
    }
}

impl MediumSecret {
    /// The secret's bytes (to store on the device).
    pub fn secret_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.secret.to_bytes());
        out
    }

    /// Rebuild from stored parts.
    pub fn from_parts(key: MediumKey, secret: [u8; 32]) -> Result<Self, CryptoError> {
        let secret = KxSecret::from_bytes(&secret).map_err(|e| CryptoError::Malformed {
            what: "medium-term secret",
            reason: format!("{e:?}"),
        })?;
        if kx_bytes(&X25519HkdfSha256::sk_to_pk(&secret)) != key.kx {
            return Err(CryptoError::Mismatch(
                "secret does not match its medium-term key".into(),
            ));
        }
        Ok(MediumSecret { key, secret })
    }
}

/// What a message says, before signing and encryption.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Event {
    /// The sending user.
    pub sender: Name,
    /// The sending device (its signing key).
    pub device: PublicKey,
    /// The receiving user.
    pub recipient: Name,
    /// Sender's clock (Unix milliseconds); informative only.
    pub time: u64,
    /// Id of the last event the sender saw in this conversation (zero for
    /// the first): receivers order by these links.
    pub after: Hash,
    /// Kind (1 = text).
    pub kind: u8,
    /// Content.
    pub body: Vec<u8>,
}

/// Kind of a text message.
pub const KIND_TEXT: u8 = 1;
/// Event kind: a contact pass (body: 32 bytes) the sender grants the
/// recipient, to deposit into the sender's contacts lane.
pub const KIND_PASS: u8 = 2;
/// Event kind: part of a provisioning bundle for a newly linked device of
/// the sender (body: `client::devices::SyncPart`); sent only to oneself.
pub const KIND_SYNC: u8 = 3;
/// Event kind: how far a conversation was read on one of the sender's
/// devices (body: `client::read::ReadMark`); sent only to oneself.
pub const KIND_READ: u8 = 4;

/// Event kind: a group control message (an invitation, an epoch key
/// re-shared, a request for one; the body is an encoded
/// `client::groups::GroupDm`).
pub const KIND_GROUP: u8 = 5;

/// An event with its device signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedEvent {
    /// The event.
    pub event: Event,
    /// Signature by `event.device` over `encode(event)` under [`EVENT_TAG`].
    pub sig: Signature,
}

impl SignedEvent {
    /// Sign `event` for `network` (its genesis hash: an event signed on
    /// one network is refused on another) with `keys` (whose device must be
    /// `event.device`).
    pub fn sign(keys: &DeviceKeys, network: &Hash, event: Event) -> Self {
        let sig = keys.sign(EVENT_TAG, &encode(&(*network, &event)));
        SignedEvent { event, sig }
    }

    /// The event's id: a hash of the signed event (used for `after` links and
    /// de-duplication).
    pub fn id(&self) -> Hash {
        hash_tagged(EVENT_TAG, &encode(self))
    }

    /// Accept this event as sent by `sender` (whose verified record is
    /// `record`) to `me`: the signing device is listed in the record and
    /// the signature verifies.
    pub fn check(
        &self,
        network: &Hash,
        sender: &Name,
        record: &UserRecord,
        me: &Name,
    ) -> Result<(), CryptoError> {
        if &self.event.sender != sender {
            return Err(CryptoError::Mismatch(format!(
                "claims sender {}, expected {sender}",
                self.event.sender
            )));
        }
        if &self.event.recipient != me {
            return Err(CryptoError::Mismatch(format!(
                "addressed to {}, not {me}",
                self.event.recipient
            )));
        }
        if record.device(&self.event.device).is_none() {
            return Err(CryptoError::UnknownDevice(sender.clone()));
        }
        self.event
            .device
            .verify(EVENT_TAG, &encode(&(*network, &self.event)), &self.sig)
            .map_err(|_| CryptoError::BadSignature("event"))
    }
}

/// The content key wrapped to one device.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Wrap {
    /// The recipient device (signing key).
    pub device: PublicKey,
    /// The key-agreement key it is wrapped to.
    pub kx: KxPublicKey,
    /// HPKE encapsulated key.
    pub enc: [u8; 32],
    /// HPKE ciphertext of the 32-byte content key (with its 16-byte tag).
    pub key: [u8; 48],
}

/// An encrypted message: what a server stores and relays.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    /// The content key, once per device.
    pub wraps: Vec<Wrap>,
    /// ChaCha20-Poly1305 of `encode(SignedEvent)` under the content key.
    pub body: Vec<u8>,
}

/// A device to encrypt to, with the key to use (a checked medium-term key,
/// or the device's long-term key from the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The device.
    pub device: PublicKey,
    /// Its key-agreement key.
    pub kx: KxPublicKey,
}

fn wrap_info(device: &PublicKey, kx: &KxPublicKey) -> Vec<u8> {
    [WRAP_TAG.as_bytes(), &device.0, &kx.0].concat()
}

fn body_cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key))
}

/// Each content key encrypts one body, so a zero nonce is safe.
const BODY_NONCE: [u8; 12] = [0; 12];

/// Encrypt a signed event once and wrap its key to every recipient, with a
/// one-off [`Sealer`] (a client keeps one and calls [`Sealer::seal`]).
pub fn seal(event: &SignedEvent, to: &[Recipient]) -> Result<Envelope, CryptoError> {
    Sealer::new().seal(event, to)
}

impl Sealer {
    /// Encrypt a signed event once and wrap its key to every recipient.
    pub fn seal(&mut self, event: &SignedEvent, to: &[Recipient]) -> Result<Envelope, CryptoError> {
        if to.is_empty() || to.len() > MAX_WRAPS {
            return Err(CryptoError::TooLarge(format!(
                "{} recipients; between 1 and {MAX_WRAPS}",
                to.len()
            )));
        }
        if event.event.body.len() > MAX_BODY {
            return Err(CryptoError::TooLarge(format!(
                "body of {} bytes; at most {MAX_BODY}",
                event.event.body.len()
            )));
        }
        self.begin_envelope();
        let content_key = Zeroizing::new(random_bytes::<32>()?);
        // The body starts with a commitment to the content key: every
        // device checks the key it unwrapped against it, so one envelope
        // cannot decrypt to different messages for different devices
        // (ChaCha20-Poly1305 alone does not commit to its key).
        let commit = hash_tagged(KEY_COMMIT_TAG, content_key.as_ref());
        let ct = body_cipher(&content_key)
            .encrypt(
                Nonce::from_slice(&BODY_NONCE),
                Payload {
                    msg: &encode(event),
                    aad: BODY_AAD,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        let body = [&commit.0[..], &ct].concat();
        let body_hash = hash_tagged(BODY_HASH_TAG, &body);
        let infos: Vec<Vec<u8>> = to.iter().map(|r| wrap_info(&r.device, &r.kx)).collect();
        let targets: Vec<(&[u8; 32], &[u8])> = to
            .iter()
            .zip(&infos)
            .map(|(r, info)| (&r.kx.0, info.as_slice()))
            .collect();
        let sealed = self.wrap_many(&targets, &body_hash.0, content_key.as_ref())?;
        let mut wraps = Vec::with_capacity(to.len());
        for (r, (enc, ct)) in to.iter().zip(sealed) {
            let key = <[u8; 48]>::try_from(ct.as_slice()).map_err(|_| CryptoError::Tampered)?;
            wraps.push(Wrap {
                device: r.device,
                kx: r.kx,
                enc,
                key,
            });
        }
        Ok(Envelope { wraps, body })
    }
}

/// Decrypt an envelope addressed to `me` with one of `mediums` (or the
/// device's long-term key). The result still has to be
/// [`SignedEvent::check`]ed against the sender's verified record.
pub fn open(
    envelope: &Envelope,
    me: &DeviceKeys,
    mediums: &[MediumSecret],
) -> Result<SignedEvent, CryptoError> {
    let my = me.sign.public();
    let body_hash = hash_tagged(BODY_HASH_TAG, &envelope.body);
    let (lt_pub, lt_secret) = me.long_term();
    for w in envelope.wraps.iter().filter(|w| w.device == my) {
        let secret = if w.kx == lt_pub {
            lt_secret
        } else if let Some(m) = mediums.iter().find(|m| m.key.kx == w.kx) {
            &m.secret
        } else {
            continue;
        };
        let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&w.enc)
            .map_err(|_| CryptoError::Tampered)?;
        let key = hpke::single_shot_open::<HpkeAead, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            secret,
            &enc,
            &wrap_info(&w.device, &w.kx),
            &w.key,
            &body_hash.0,
        )
        .map_err(|_| CryptoError::Tampered)?;
        let key = Zeroizing::new(key);
        let key = Zeroizing::new(
            <[u8; 32]>::try_from(key.as_slice()).map_err(|_| CryptoError::Tampered)?,
        );
        let (commit, ct) = envelope
            .body
            .split_at_checked(32)
            .ok_or(CryptoError::Tampered)?;
        if hash_tagged(KEY_COMMIT_TAG, key.as_ref()).0 != commit {
            return Err(CryptoError::KeyCommitment);
        }
        let plain = body_cipher(&key)
            .decrypt(
                Nonce::from_slice(&BODY_NONCE),
                Payload {
                    msg: ct,
                    aad: BODY_AAD,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        return decode(&plain).map_err(|e| CryptoError::Malformed {
            what: "event",
            reason: e.to_string(),
        });
    }
    Err(CryptoError::NotForMe)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The network the tests sign for.
    const NET: Hash = Hash([7; 32]);

    /// An event or a medium-term key signed for one network is refused on
    /// another.
    #[test]
    fn signatures_are_bound_to_the_network() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let other = Hash([8; 32]);
        let ev = text(&alice, "hi");
        let alices = record(&[&alice]);
        ev.check(&NET, &name("@alice"), &alices, &name("@bob"))
            .expect("on its network");
        assert_eq!(
            ev.check(&other, &name("@alice"), &alices, &name("@bob")),
            Err(CryptoError::BadSignature("event"))
        );
        let m = alice.medium_key(&NET, 1000, 100).expect("rng");
        m.key
            .check(&NET, &name("@alice"), &alices, 1050)
            .expect("valid");
        assert_eq!(
            m.key.check(&other, &name("@alice"), &alices, 1050),
            Err(CryptoError::BadSignature("medium-term key"))
        );
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn record(devices: &[&DeviceKeys]) -> UserRecord {
        UserRecord {
            server: name("~s1"),
            devices: devices.iter().map(|d| d.device()).collect(),
        }
    }

    fn text(from: &DeviceKeys, body: &str) -> SignedEvent {
        SignedEvent::sign(
            from,
            &NET,
            Event {
                sender: name("@alice"),
                device: from.device().sign,
                recipient: name("@bob"),
                time: 1,
                after: Hash::ZERO,
                kind: KIND_TEXT,
                body: body.as_bytes().to_vec(),
            },
        )
    }

    #[test]
    fn seal_to_medium_and_long_term_keys_and_open() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let bob1 = DeviceKeys::from_seed([2; 32]);
        let bob2 = DeviceKeys::from_seed([3; 32]);
        let m1 = bob1.medium_key(&NET, 1000, 3600).expect("rng");
        let bobs = record(&[&bob1, &bob2]);
        m1.key
            .check(&NET, &name("@bob"), &bobs, 2000)
            .expect("valid medium key");
        let ev = text(&alice, "hi bob");
        let to = [
            Recipient {
                device: bob1.device().sign,
                kx: m1.key.kx,
            },
            Recipient {
                device: bob2.device().sign,
                kx: bob2.device().kx,
            },
        ];
        let env = seal(&ev, &to).expect("seal");
        let got1 = open(&env, &bob1, std::slice::from_ref(&m1)).expect("bob1 opens");
        let got2 = open(&env, &bob2, &[]).expect("bob2 opens");
        assert_eq!(got1, ev);
        assert_eq!(got2, ev);
        // A long-lived sealer: the ladder first, then the keys' tables.
        let mut sealer = Sealer::new();
        for _ in 0..4 {
            let env = sealer.seal(&ev, &to).expect("seal");
            assert_eq!(open(&env, &bob1, std::slice::from_ref(&m1)), Ok(ev.clone()));
            assert_eq!(open(&env, &bob2, &[]), Ok(ev.clone()));
        }
        assert_eq!(sealer.tables(), 2);
        got1.check(&NET, &name("@alice"), &record(&[&alice]), &name("@bob"))
            .expect("signed by alice's device");
        // Without the medium secret, bob1 cannot read it.
        assert_eq!(open(&env, &bob1, &[]), Err(CryptoError::NotForMe));
        // Alice's own device was not a recipient.
        assert_eq!(open(&env, &alice, &[]), Err(CryptoError::NotForMe));
    }

    /// A sender who wraps different content keys to different devices of
    /// one envelope (so that, with a crafted body, each would see another
    /// message) is caught: every device checks its key against the
    /// commitment at the start of the body.
    #[test]
    fn one_envelope_cannot_carry_different_keys_for_different_devices() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let (b1, b2) = (
            DeviceKeys::from_seed([2; 32]),
            DeviceKeys::from_seed([3; 32]),
        );
        let to: Vec<Recipient> = [&b1, &b2]
            .iter()
            .map(|d| Recipient {
                device: d.device().sign,
                kx: d.device().kx,
            })
            .collect();
        let mut env = seal(&text(&alice, "the same for both"), &to).expect("seal");
        assert!(open(&env, &b2, &[]).is_ok());
        // Re-wrap another key to the second device, bound to the same body.
        let body_hash = hash_tagged(BODY_HASH_TAG, &env.body);
        let (enc, key) = Sealer::new()
            .wrap(
                &b2.device().kx.0,
                &wrap_info(&b2.device().sign, &b2.device().kx),
                &body_hash.0,
                &[9u8; 32],
            )
            .expect("wrap");
        env.wraps[1].enc = enc;
        env.wraps[1].key = key.try_into().expect("48 bytes");
        assert_eq!(open(&env, &b2, &[]), Err(CryptoError::KeyCommitment));
        assert!(open(&env, &b1, &[]).is_ok());
    }

    #[test]
    fn tampering_is_detected() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let bob = DeviceKeys::from_seed([2; 32]);
        let env = seal(
            &text(&alice, "hi"),
            &[Recipient {
                device: bob.device().sign,
                kx: bob.device().kx,
            }],
        )
        .expect("seal");
        let mut b = env.clone();
        b.body[0] ^= 1;
        assert_eq!(open(&b, &bob, &[]), Err(CryptoError::Tampered));
        let mut w = env.clone();
        w.wraps[0].key[5] ^= 1;
        assert_eq!(open(&w, &bob, &[]), Err(CryptoError::Tampered));
        // A wrap moved onto another message's body does not open.
        let other = seal(
            &text(&alice, "other"),
            &[Recipient {
                device: bob.device().sign,
                kx: bob.device().kx,
            }],
        )
        .expect("seal");
        let moved = Envelope {
            wraps: env.wraps.clone(),
            body: other.body,
        };
        assert_eq!(open(&moved, &bob, &[]), Err(CryptoError::Tampered));
    }

    #[test]
    fn forged_senders_and_stale_keys_are_refused() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let mallory = DeviceKeys::from_seed([9; 32]);
        let bob = DeviceKeys::from_seed([2; 32]);
        // Mallory signs an event claiming to be alice.
        let forged = text(&mallory, "send money");
        assert_eq!(
            forged.check(&NET, &name("@alice"), &record(&[&alice]), &name("@bob")),
            Err(CryptoError::UnknownDevice(name("@alice")))
        );
        // Alice's device, but the event altered after signing.
        let mut altered = text(&alice, "hi");
        altered.event.body = b"bye".to_vec();
        assert_eq!(
            altered.check(&NET, &name("@alice"), &record(&[&alice]), &name("@bob")),
            Err(CryptoError::BadSignature("event"))
        );
        // Addressed to someone else.
        assert!(matches!(
            text(&alice, "hi").check(&NET, &name("@alice"), &record(&[&alice]), &name("@carol")),
            Err(CryptoError::Mismatch(_))
        ));
        // Medium keys: expired, from the future, signed by another device,
        // or altered.
        let bobs = record(&[&bob]);
        let m = bob.medium_key(&NET, 1000, 100).expect("rng");
        assert!(matches!(
            m.key.check(&NET, &name("@bob"), &bobs, 1100),
            Err(CryptoError::StaleKey { .. })
        ));
        assert!(matches!(
            m.key
                .check(&NET, &name("@bob"), &bobs, 1000 - CLOCK_SKEW - 1),
            Err(CryptoError::StaleKey { .. })
        ));
        let forged = mallory.medium_key(&NET, 1000, 100).expect("rng");
        assert_eq!(
            forged.key.check(&NET, &name("@bob"), &bobs, 1050),
            Err(CryptoError::UnknownDevice(name("@bob")))
        );
        let mut swapped = m.key.clone();
        swapped.kx = forged.key.kx;
        assert_eq!(
            swapped.check(&NET, &name("@bob"), &bobs, 1050),
            Err(CryptoError::BadSignature("medium-term key"))
        );
        let restored = MediumSecret::from_parts(m.key.clone(), m.secret_bytes()).expect("same key");
        assert_eq!(restored.key, m.key);
        assert!(MediumSecret::from_parts(forged.key.clone(), m.secret_bytes()).is_err());
    }

    #[test]
    fn limits() {
        let alice = DeviceKeys::from_seed([1; 32]);
        let r = Recipient {
            device: alice.device().sign,
            kx: alice.device().kx,
        };
        assert!(matches!(
            seal(&text(&alice, "x"), &[]),
            Err(CryptoError::TooLarge(_))
        ));
        assert!(matches!(
            seal(&text(&alice, "x"), &vec![r; MAX_WRAPS + 1]),
            Err(CryptoError::TooLarge(_))
        ));
        let big = text(&alice, &"a".repeat(MAX_BODY + 1));
        assert!(matches!(seal(&big, &[r]), Err(CryptoError::TooLarge(_))));
    }
}
