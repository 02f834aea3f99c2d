//! Devices: link a new device with a one-time code, provision it with
//! the conversation so far, list and remove devices.
//!
//! Linking (docs/chat.md, "Devices"): the new device picks a code of 12
//! digits, `AAAA-BBBB-CCCC`, and shows it; a device holding the root key
//! enters it. The two run SPAKE2 on the whole code through a relay slot on
//! the user's server, named by the first group only: the server (or
//! anyone) learns the slot, never enough to check a guess offline, and an
//! active attacker gets one guess of the 8 remaining digits per code.
//! Both sides confirm the key; the new device then sends its public keys
//! sealed under it, the approving device adds them to the record with the
//! root key and, once the new device has published a medium-term key,
//! sends it the provisioning bundle (contacts, passes, conversation heads,
//! the last `history` of messages) as ordinary end-to-end encrypted
//! envelopes sealed to it alone, through our own mailbox.

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity as PakeId, Password, Spake2};
use xirtam_proofs::{Hash, Name, PublicKey, decode, encode};

use super::connection::{Connector, ServerConn, to_client_error};
use super::contacts::{Grant, pass_key};
use super::directory::Directory;
use super::store::Message;
use super::{ClientError, Core, Result, head_key, unix_ms};
use crate::api;
use crate::crypto::{self, KIND_SYNC};
use crate::records::{Device, MAX_DEVICES, UserRecord, VerifiedUser};

/// Tag of the link transcript hash.
pub const LINK_TAG: &str = "xirtam/chat/link/v1";
/// Relay side the new device writes.
const NEW: u8 = 0;
/// Relay side the approving device writes.
const APPROVER: u8 = 1;
/// Room left in an event body for everything but the bundle's items.
const SYNC_SLACK: usize = 4096;
/// State key of the device whose provisioning bundle this device takes,
/// and until when (Unix ms).
pub(crate) const SYNC_FROM_KEY: &str = "sync-from";
/// How long after linking a provisioning bundle is taken.
const SYNC_WINDOW_MS: u64 = 3600 * 1000;

/// One relayed message of a link (bincode, at most
/// [`api::MAX_LINK_PAYLOAD`] bytes).
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
enum LinkMsg {
    /// New device: its SPAKE2 message.
    Hello { pake: Vec<u8> },
    /// Approving device: its SPAKE2 message and key confirmation.
    Reply { pake: Vec<u8>, confirm: [u8; 32] },
    /// New device: its key confirmation and its [`Device`], sealed.
    Device { confirm: [u8; 32], sealed: Vec<u8> },
    /// Approving device: the device is in the record, a record write on
    /// its way (sealed: the user name and the approving device's signing
    /// key, the one device whose provisioning bundle the new one takes).
    Added { sealed: Vec<u8> },
    /// Either side: the keys did not match (a wrong code), or the
    /// approving device refused.
    Abort { reason: String },
}

/// Part of a provisioning bundle (the body of a [`KIND_SYNC`] event).
#[derive(Debug, Clone, Default, bincode::Encode, bincode::Decode)]
pub struct SyncPart {
    /// This part's number, from 0.
    pub part: u32,
    /// How many parts.
    pub parts: u32,
    /// Contact passes granted.
    pub granted: Vec<Grant>,
    /// Contact passes peers gave us.
    pub passes: Vec<(Name, [u8; 32])>,
    /// Conversation heads.
    pub heads: Vec<(Name, Hash)>,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
}

/// The keys one link derives from the SPAKE2 secret.
struct LinkKeys {
    approver_confirm: [u8; 32],
    new_confirm: [u8; 32],
    device_key: [u8; 32],
    added_key: [u8; 32],
}

impl LinkKeys {
    fn derive(secret: &[u8], transcript: &Hash) -> Result<Self> {
        let hk = Hkdf::<Sha256>::new(Some(&transcript.0), secret);
        let mut out = [[0u8; 32]; 4];
        for (info, o) in [
            &b"approver-confirm"[..],
            b"new-confirm",
            b"device",
            b"added",
        ]
        .iter()
        .zip(out.iter_mut())
        {
            hk.expand(info, o)
                .map_err(|e| ClientError::Invalid(format!("link key derivation: {e}")))?;
        }
        let [approver_confirm, new_confirm, device_key, added_key] = out;
        Ok(LinkKeys {
            approver_confirm,
            new_confirm,
            device_key,
            added_key,
        })
    }
}

/// `a == b` in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Each key seals one message: a fixed nonce is safe.
fn seal(key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .encrypt(Nonce::from_slice(&[0; 12]), plain)
        .map_err(|_| ClientError::Invalid("link sealing failed".into()))
}

fn unseal(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(Nonce::from_slice(&[0; 12]), sealed)
        .ok()
}

/// A link code: 12 digits in three groups.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    digits: String,
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The code is a secret until used.
        write!(f, "LinkCode({}-****-****)", &self.digits[..4])
    }
}

impl std::fmt::Display for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.digits;
        write!(f, "{}-{}-{}", &d[..4], &d[4..8], &d[8..])
    }
}

impl LinkCode {
    /// A fresh random code.
    pub fn random() -> Result<Self> {
        // 10^12 fits 40 bits; rejection sampling keeps the digits uniform.
        const N: u64 = 1_000_000_000_000;
        let limit = u64::MAX - u64::MAX % N;
        loop {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| crypto::CryptoError::Random(e.to_string()))?;
            let v = u64::from_le_bytes(b);
            if v < limit {
                return Ok(LinkCode {
                    digits: format!("{:012}", v % N),
                });
            }
        }
    }

    /// Parse a code as typed: 12 digits, dashes and spaces ignored.
    pub fn parse(s: &str) -> Result<Self> {
        let digits: String = s.chars().filter(|c| !matches!(c, '-' | ' ')).collect();
        if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ClientError::Invalid(format!(
                "a link code is 12 digits, like 1234-5678-9012; got {:?}",
                crate::display::escape(s)
            )));
        }
        Ok(LinkCode { digits })
    }

    fn slot(&self, network: &Hash, user: &Name) -> Hash {
        api::link_slot(network, user, &self.digits[..4])
    }

    fn password(&self, network: &Hash, user: &Name) -> Password {
        Password::new(format!("{}/{user}/{}", network.to_hex(), self.digits).as_bytes())
    }
}

fn pake_ids() -> (PakeId, PakeId) {
    (
        PakeId::new(b"xirtam new device"),
        PakeId::new(b"xirtam approving device"),
    )
}

fn transcript(network: &Hash, user: &Name, slot: &Hash, a: &[u8], b: &[u8]) -> Hash {
    let mut t = network.0.to_vec();
    for part in [user.as_str().as_bytes(), &slot.0[..], a, b] {
        t.extend_from_slice(&(part.len() as u32).to_be_bytes());
        t.extend_from_slice(part);
    }
    xirtam_proofs::hash::hash_tagged(LINK_TAG, &t)
}

/// A link in progress on the new device: show [`PendingLink::code`],
/// then [`Core::finish_link`].
pub struct PendingLink {
    code: LinkCode,
    user: Name,
    server: Name,
    slot: Hash,
    pake: Spake2<Ed25519Group>,
    hello: Vec<u8>,
    expires: Instant,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingLink({}, {:?})", self.user, self.code)
    }
}

impl PendingLink {
    /// The code to show (and to type on the approving device).
    pub fn code(&self) -> &LinkCode {
        &self.code
    }
}

/// What [`Core::approve`] did.
#[derive(Debug, Clone)]
pub struct Approved {
    /// The device added.
    pub device: Device,
    /// Our record once it lists the device.
    pub record: VerifiedUser,
    /// Messages sent in the provisioning bundle.
    pub messages: usize,
    /// Envelopes the bundle took.
    pub parts: usize,
}

fn link_failed(why: impl Into<String>) -> ClientError {
    ClientError::LinkFailed(why.into())
}

impl<D: Directory, C: Connector> Core<D, C> {
    async fn post(&self, server: &Name, slot: &Hash, side: u8, m: &LinkMsg) -> Result<()> {
        let conn = self.conn(server).await?;
        conn.rpc
            .link_post(slot, side, &encode(m))
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the link relay", e))
    }

    /// The messages on `side` of `slot` from index `after` on that decode,
    /// with how many were read in all; waits until `deadline` for one.
    /// Anyone can post to a slot: callers take only what checks out.
    async fn read_msgs(
        &self,
        server: &Name,
        slot: &Hash,
        side: u8,
        after: u32,
        deadline: Instant,
    ) -> Result<(Vec<LinkMsg>, u32)> {
        let conn = self.conn(server).await?;
        loop {
            let asked = Instant::now();
            let left = deadline.saturating_duration_since(asked);
            let got = conn
                .poll
                .link_read(slot, side, after, left.min(Duration::from_secs(25)))
                .await
                .map_err(|e| to_client_error(server, conn.poll.label(), "the link relay", e))?;
            if !got.is_empty() || left.is_zero() {
                let n = got.len() as u32;
                let msgs = got
                    .iter()
                    .filter_map(|m| decode::<LinkMsg>(m).ok())
                    .collect();
                return Ok((msgs, n));
            }
            // A relay that answers at once with nothing is not asked again
            // at once.
            let floor = asked + Duration::from_millis(250);
            tokio::time::sleep_until(floor.min(deadline).into()).await;
        }
    }

    /// Start linking this (new, unregistered) device to `user`: the code
    /// to show is in the result, valid for `ttl`.
    pub async fn link(&self, user: &Name, ttl: Duration) -> Result<PendingLink> {
        if let Some(n) = self.name() {
            return Err(ClientError::Invalid(format!(
                "this device is already {n}; linking is for a new device"
            )));
        }
        let record = self.user(user, true).await?;
        let server = record.record().server.clone();
        let network = self.config.params.genesis_hash;
        // A slot that holds anything (an earlier link whose code began with
        // the same four digits, within the relay's 10 minutes, or junk) is
        // not used: a stale reply there would read as a mistyped code.
        let mut tries = 0;
        let (code, slot) = loop {
            let code = LinkCode::random()?;
            let slot = code.slot(&network, user);
            let now = Instant::now();
            let (_, new_side) = self.read_msgs(&server, &slot, NEW, 0, now).await?;
            let (_, approver_side) = self.read_msgs(&server, &slot, APPROVER, 0, now).await?;
            if new_side == 0 && approver_side == 0 {
                break (code, slot);
            }
            tries += 1;
            if tries >= 8 {
                return Err(link_failed(
                    "no free link slot on the server (it may be flooded); try again later",
                ));
            }
        };
        let (a, b) = pake_ids();
        let (pake, hello) = Spake2::<Ed25519Group>::start_a(&code.password(&network, user), &a, &b);
        self.post(
            &server,
            &slot,
            NEW,
            &LinkMsg::Hello {
                pake: hello.clone(),
            },
        )
        .await?;
        Ok(PendingLink {
            code,
            user: user.clone(),
            server,
            slot,
            pake,
            hello,
            expires: Instant::now() + ttl.min(Duration::from_secs(api::LINK_TTL_SECS)),
        })
    }

    /// Wait for the approving device, hand it this device's keys, and
    /// take the name once the record lists this device.
    pub async fn finish_link(&self, link: PendingLink) -> Result<VerifiedUser> {
        let network = self.config.params.genesis_hash;
        let PendingLink {
            user,
            server,
            slot,
            pake,
            hello,
            expires,
            ..
        } = link;
        // The first well-formed reply (the exchange can be finished once).
        let mut seen = 0;
        let (pake_b, confirm) = loop {
            let (msgs, n) = self
                .read_msgs(&server, &slot, APPROVER, seen, expires)
                .await?;
            seen += n;
            if let Some(r) = msgs.into_iter().find_map(|m| match m {
                LinkMsg::Reply { pake, confirm } => Some((pake, confirm)),
                _ => None,
            }) {
                break r;
            }
            if Instant::now() >= expires {
                // An approving device that comes later learns it at once.
                let abort = LinkMsg::Abort {
                    reason: "the code expired".into(),
                };
                let _ = self.post(&server, &slot, NEW, &abort).await;
                return Err(link_failed(
                    "the code expired before a device approved it; start again with a new code",
                ));
            }
        };
        let keys = pake
            .finish(&pake_b)
            .map_err(|_| link_failed("the other device sent a malformed exchange"))
            .and_then(|k| {
                LinkKeys::derive(&k, &transcript(&network, &user, &slot, &hello, &pake_b))
            })?;
        if !same(&keys.approver_confirm, &confirm) {
            // Tell the other side, which would otherwise wait.
            let abort = LinkMsg::Abort {
                reason: "the code was mistyped: the keys do not match".into(),
            };
            let _ = self.post(&server, &slot, NEW, &abort).await;
            return Err(link_failed(
                "the code was mistyped on the approving device (the keys do not match); start again with a new code",
            ));
        }
        let sealed = seal(&keys.device_key, &encode(&self.device.device()))?;
        let msg = LinkMsg::Device {
            confirm: keys.new_confirm,
            sealed,
        };
        self.post(&server, &slot, NEW, &msg).await?;
        // From here only the record decides: nothing anyone posts to the
        // slot can leave this device out of a record that lists it.
        let deadline = Instant::now() + self.config.confirm_timeout;
        loop {
            match self.user(&user, true).await {
                Ok(v) if v.record().device(&self.device.device().sign).is_some() => break,
                Ok(_) | Err(ClientError::Lookup(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(_) => {
                    return Err(link_failed(format!(
                        "the approving device did not add this device to {user}'s record within {} s",
                        self.config.confirm_timeout.as_secs()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        // Which device approved: only it may send the provisioning bundle,
        // for an hour.
        let (msgs, _) = self
            .read_msgs(&server, &slot, APPROVER, 0, Instant::now())
            .await
            .unwrap_or_default();
        let approver = msgs.into_iter().find_map(|m| match m {
            LinkMsg::Added { sealed } => unseal(&keys.added_key, &sealed)
                .and_then(|p| decode::<(Name, PublicKey)>(&p).ok())
                .filter(|(n, _)| n == &user)
                .map(|(_, k)| k),
            _ => None,
        });
        if let Some(k) = approver {
            self.store
                .put_state(SYNC_FROM_KEY, &(k, unix_ms() + SYNC_WINDOW_MS))?;
        }
        self.join(&user).await
    }

    /// On a device of ours that can use the root key: approve the new
    /// device showing `code`, add it to our record, and send it the
    /// provisioning bundle with the messages of the last `history`.
    pub async fn approve(&self, code: &str, history: Duration) -> Result<Approved> {
        let me = self.me()?;
        let root = self.root()?;
        let code = LinkCode::parse(code)?;
        let network = self.config.params.genesis_hash;
        let mine = self.user(&me, true).await?;
        if mine.record().devices.len() >= MAX_DEVICES {
            return Err(ClientError::Invalid(format!(
                "{me} already has {MAX_DEVICES} devices, the most a record lists; remove one first"
            )));
        }
        let server = mine.record().server.clone();
        let slot = code.slot(&network, &me);
        let nobody = || {
            link_failed(
                "no device is waiting with this code (mistyped, expired, or for another name)",
            )
        };
        let (msgs, seen) = self
            .read_msgs(
                &server,
                &slot,
                NEW,
                0,
                Instant::now() + Duration::from_secs(5),
            )
            .await?;
        let mut msgs = msgs.into_iter();
        let hello = msgs
            .find_map(|m| match m {
                LinkMsg::Hello { pake } => Some(pake),
                _ => None,
            })
            .ok_or_else(nobody)?;
        let (a, b) = pake_ids();
        let (pake, reply) = Spake2::<Ed25519Group>::start_b(&code.password(&network, &me), &a, &b);
        let keys = pake
            .finish(&hello)
            .map_err(|_| link_failed("the new device sent a malformed exchange"))
            .and_then(|k| {
                LinkKeys::derive(&k, &transcript(&network, &me, &slot, &hello, &reply))
            })?;
        let msg = LinkMsg::Reply {
            pake: reply,
            confirm: keys.approver_confirm,
        };
        self.post(&server, &slot, APPROVER, &msg).await?;
        // The new device's answer: its keys, or why it gave up. Anything
        // else on the slot is skipped.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pending: Vec<LinkMsg> = msgs.collect();
        let mut read = seen;
        let answer = loop {
            if let Some(i) = pending
                .iter()
                .position(|m| matches!(m, LinkMsg::Device { .. } | LinkMsg::Abort { .. }))
            {
                break pending.swap_remove(i);
            }
            if Instant::now() >= deadline {
                return Err(link_failed("the new device stopped answering"));
            }
            let (more, n) = self.read_msgs(&server, &slot, NEW, read, deadline).await?;
            read += n;
            pending = more;
        };
        let device = match answer {
            LinkMsg::Device { confirm, sealed } if same(&keys.new_confirm, &confirm) => {
                unseal(&keys.device_key, &sealed)
                    .and_then(|d| decode::<Device>(&d).ok())
                    .ok_or_else(|| link_failed("the new device's keys do not open"))?
            }
            LinkMsg::Abort { reason } => {
                return Err(link_failed(format!(
                    "the new device gave up: {}; start again with a new code",
                    crate::display::escape(&reason)
                )));
            }
            _ => {
                return Err(link_failed(
                    "the code does not match the new device's (mistyped?); start again with a new code",
                ));
            }
        };
        // The record as it is now (unconfirmed writes included), changed
        // under the record-write lock: a removal in flight is not undone.
        let record = {
            let _writes = self.record_writes.lock().await;
            let latest = VerifiedUser::from_lookup(self.dir.resolve_latest(&me).await?)?;
            if latest.record().device(&device.sign).is_some() {
                return Err(ClientError::Invalid(format!(
                    "{me}'s record lists this device already"
                )));
            }
            let mut devices = latest.record().devices.clone();
            if devices.len() >= MAX_DEVICES {
                return Err(ClientError::Invalid(format!(
                    "{me} already has {MAX_DEVICES} devices, the most a record lists; remove one first"
                )));
            }
            devices.push(device);
            let value = UserRecord {
                server: latest.record().server.clone(),
                devices,
            }
            .to_value()
            .map_err(ClientError::Invalid)?;
            self.dir.publish(&root, &me, value.clone()).await?;
            let added = LinkMsg::Added {
                sealed: seal(
                    &keys.added_key,
                    &encode(&(me.clone(), self.device.device().sign)),
                )?,
            };
            self.post(&server, &slot, APPROVER, &added).await?;
            self.wait_value(&me, &value).await?
        };
        let (messages, parts) = self.provision(&me, &record, &device, history).await?;
        // The new device joins our groups too (an invitation to ourselves
        // per group, which our devices accept).
        self.tell_own_devices_all(&me).await?;
        if let Err(e) = self.flush().await {
            tracing::warn!(target: "client::devices", error = %e, "group invitations for the new device stay queued");
        }
        Ok(Approved {
            device,
            record,
            messages,
            parts,
        })
    }

    /// Send `device` (just added to our `record`) the provisioning
    /// bundle, once it has published a medium-term key (it is then
    /// logged in, and the bundle keeps forward secrecy).
    async fn provision(
        &self,
        me: &Name,
        record: &VerifiedUser,
        device: &Device,
        history: Duration,
    ) -> Result<(usize, usize)> {
        let server = record.record().server.clone();
        let deadline = Instant::now() + self.config.confirm_timeout;
        let to = loop {
            let r = self
                .recipients(record, &server, |d| d == &device.sign)
                .await?;
            if !r.to.is_empty() && r.long_term.is_empty() {
                break r.to;
            }
            if Instant::now() > deadline {
                return Err(link_failed(
                    "the new device did not log in to our server in time; it has the name but no history",
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let parts = self.bundle(me, history)?;
        let (messages, count) = (parts.iter().map(|p| p.messages.len()).sum(), parts.len());
        for part in parts {
            let event = self.sign_event(me, me, Hash::ZERO, KIND_SYNC, encode(&part));
            let env = self.sealer.lock().seal(&event, &to)?;
            self.deposit(&server, me, &encode(&env)).await?;
        }
        Ok((messages, count))
    }

    /// The provisioning bundle: what a new device needs, in parts that
    /// each fit an event body. A message too large for a part of its own
    /// is left out (logged).
    fn bundle(&self, me: &Name, history: Duration) -> Result<Vec<SyncPart>> {
        let since = unix_ms().saturating_sub(history.as_millis() as u64);
        let messages: Vec<Message> = self
            .store
            .messages()?
            .into_iter()
            .filter(|m| m.time_ms >= since)
            .collect();
        let granted = self.granted()?;
        let mut peers: Vec<Name> = granted.iter().map(|g| g.peer.clone()).collect();
        for m in &messages {
            let peer = if &m.from == me { &m.to } else { &m.from };
            if !peers.contains(peer) {
                peers.push(peer.clone());
            }
        }
        let budget = crypto::MAX_BODY - SYNC_SLACK;
        let mut parts = vec![SyncPart::default()];
        let mut size = 0usize;
        // Add an item of `len` encoded bytes to the last part, or to a new
        // one when it does not fit.
        let mut room = |len: usize, parts: &mut Vec<SyncPart>| -> bool {
            if len > budget {
                return false;
            }
            if size + len > budget {
                parts.push(SyncPart::default());
                size = 0;
            }
            size += len;
            true
        };
        let last = |parts: &mut Vec<SyncPart>| parts.len() - 1;
        for g in granted {
            if room(encode(&g).len(), &mut parts) {
                let i = last(&mut parts);
                parts[i].granted.push(g);
            }
        }
        for p in &peers {
            if let Some(pass) = self.store.state::<[u8; 32]>(&pass_key(p))?
                && room(encode(&(p, pass)).len(), &mut parts)
            {
                let i = last(&mut parts);
                parts[i].passes.push((p.clone(), pass));
            }
            if let Some(head) = self.store.state::<Hash>(&head_key(p))?
                && room(encode(&(p, head)).len(), &mut parts)
            {
                let i = last(&mut parts);
                parts[i].heads.push((p.clone(), head));
            }
        }
        let mut skipped = 0;
        for m in messages {
            if room(encode(&m).len(), &mut parts) {
                let i = last(&mut parts);
                parts[i].messages.push(m);
            } else {
                skipped += 1;
            }
        }
        if skipped > 0 {
            tracing::warn!(target: "client::devices", skipped, "messages too large for the provisioning bundle");
        }
        let n = parts.len() as u32;
        for (i, p) in parts.iter_mut().enumerate() {
            p.part = i as u32;
            p.parts = n;
        }
        Ok(parts)
    }

    /// Fail with [`ClientError::Removed`] when our verified record (cached
    /// for the record TTL) no longer lists this device. A failed lookup
    /// does not stop anything: what is sent stays queued.
    pub(crate) async fn check_listed(&self, me: &Name) -> Result<()> {
        let sign = self.device.device().sign;
        match self.user(me, false).await {
            Ok(v) if v.record().device(&sign).is_none() => Err(ClientError::Removed {
                name: me.clone(),
                device: sign,
            }),
            _ => Ok(()),
        }
    }

    /// A server refused our login or token: if our record (looked up
    /// afresh) no longer lists this device, say so with
    /// [`ClientError::Removed`].
    pub(crate) async fn check_refusal(&self, me: &Name, e: &ClientError) -> Result<()> {
        if let ClientError::Refused {
            code: api::code::UNAUTHORIZED,
            ..
        } = e
            && let Ok(v) = self.user(me, true).await
        {
            let sign = self.device.device().sign;
            if v.record().device(&sign).is_none() {
                return Err(ClientError::Removed {
                    name: me.clone(),
                    device: sign,
                });
            }
        }
        Ok(())
    }

    /// Apply part of a provisioning bundle to batch `b` (the caller holds
    /// the grant lock, and drops the contacts cache after the commit):
    /// messages not seen yet (`seen` holds those of this round), and the
    /// contacts, passes and conversation heads this device does not have.
    /// Returns how many messages it added.
    pub(crate) fn apply_sync(
        &self,
        part: SyncPart,
        seen: &mut std::collections::HashSet<Hash>,
        b: &mut super::store::Batch<'_>,
    ) -> Result<usize> {
        let mut added = 0;
        for mut m in part.messages {
            if seen.insert(m.id) && !self.store.seen(&m.id)? {
                m.local = self.next_local();
                b.message(&m)?;
                added += 1;
            }
        }
        if !part.granted.is_empty() || !part.passes.is_empty() || !part.heads.is_empty() {
            let mut granted = self.granted()?;
            for g in part.granted {
                if !granted.iter().any(|h| h.peer == g.peer) {
                    granted.push(g);
                }
            }
            b.state(super::contacts::GRANTED_KEY, &granted)?;
            for (peer, pass) in part.passes {
                if self.store.state::<[u8; 32]>(&pass_key(&peer))?.is_none() {
                    b.state(&pass_key(&peer), &pass)?;
                }
            }
            for (peer, head) in part.heads {
                if self.store.state::<Hash>(&head_key(&peer))?.is_none() {
                    b.state(&head_key(&peer), &head)?;
                }
            }
        }
        Ok(added)
    }

    /// Our devices, from our verified record (fresh).
    pub async fn devices(&self) -> Result<Vec<Device>> {
        let me = self.me()?;
        Ok(self.user(&me, true).await?.record().devices.clone())
    }

    /// Remove the device with signing key `sign` from our record (a lost
    /// phone): one record write with the root key. Its server session ends
    /// once the server sees the record; senders stop wrapping to it.
    pub async fn remove_device(&self, sign: &PublicKey) -> Result<VerifiedUser> {
        let me = self.me()?;
        let root = self.root()?;
        let _writes = self.record_writes.lock().await;
        // The record as it is now, unconfirmed writes included (a link in
        // flight is not undone).
        let mine = VerifiedUser::from_lookup(self.dir.resolve_latest(&me).await?)?;
        if mine.record().device(sign).is_none() {
            return Err(ClientError::Invalid(format!(
                "{me}'s record does not list device {sign}"
            )));
        }
        let devices: Vec<Device> = mine
            .record()
            .devices
            .iter()
            .filter(|d| &d.sign != sign)
            .copied()
            .collect();
        if devices.is_empty() {
            return Err(ClientError::Invalid(
                "this is the record's only device: a record lists at least one".into(),
            ));
        }
        let value = UserRecord {
            server: mine.record().server.clone(),
            devices,
        }
        .to_value()
        .map_err(ClientError::Invalid)?;
        self.dir.publish(&root, &me, value.clone()).await?;
        self.wait_value(&me, &value).await
    }
}
