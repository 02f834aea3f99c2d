//! The concierge server's JSON-RPC API, shared by the server and the client
//! library (docs/chat.md, "Concierge RPC").
//!
//! Binary values travel as hex of their canonical encoding
//! (docs/protocol.md §17b–17d); the server never sees a plaintext.

use jsonrpsee::core::RpcResult;
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};
use xirtam_proofs::{Hash, Name, PublicKey, encode};

/// Domain tag of a device's answer to a login challenge.
pub const AUTH_TAG: &str = "xirtam/chat/auth/v1";
/// Domain tag of the hash of deposited envelope bytes (the receipt names
/// the envelope by it).
pub const RECEIPT_TAG: &str = "xirtam/chat/receipt/v1";
/// Domain tag of a receipt leaf: one deposit in a batch of receipts.
pub const RECEIPT_LEAF_TAG: &str = "xirtam/chat/receipt-leaf/v1";
/// Domain tag of an inner node of a batch of receipts.
pub const RECEIPT_NODE_TAG: &str = "xirtam/chat/receipt-node/v1";
/// Domain tag of the server's signature over the root of a batch of
/// receipts.
pub const RECEIPT_ROOT_TAG: &str = "xirtam/chat/receipt-root/v1";
/// Most steps a receipt's path may have (a batch of up to 2^20 deposits;
/// servers sign far smaller ones).
pub const MAX_RECEIPT_PATH: usize = 20;
/// Domain tag of a user's mailbox id (the contacts lane).
pub const MAILBOX_TAG: &str = "xirtam/chat/mailbox/v1";
/// Domain tag of a user's requests mailbox id (the lane for first
/// contact, open to anyone with postage).
pub const REQUESTS_TAG: &str = "xirtam/chat/requests/v1";
/// Domain tag of a contact pass's hash.
pub const PASS_TAG: &str = "xirtam/chat/pass/v1";
/// Domain tag of postage (the proof of work on a first-contact deposit).
pub const POSTAGE_TAG: &str = "xirtam/chat/postage/v1";
/// Most postage difficulty a client accepts to pay (bits), whatever a
/// server asks.
pub const MAX_POSTAGE_BITS: u32 = 28;

/// Most cursors one `mailbox_receive` call may watch.
pub const MAX_CURSORS: usize = 16;
/// Most envelopes one `mailbox_receive` answer carries (per mailbox).
pub const MAX_BATCH: u32 = 256;
/// Most envelope bytes one `mailbox_receive` answer carries (per mailbox).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Stable error codes of the concierge RPC (docs/chat.md).
pub mod code {
    /// Malformed parameters: bad hex, undecodable bytes, bad name syntax,
    /// out-of-range numbers.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Internal failure (storage).
    pub const INTERNAL: i32 = -32603;
    /// Not authenticated: unknown, expired or wrong token, challenge or
    /// signature; or the device is not in the user's verified record.
    pub const UNAUTHORIZED: i32 = -32050;
    /// No such user or mailbox here.
    pub const NOT_FOUND: i32 = -32051;
    /// The envelope or key is larger than the server accepts.
    pub const TOO_LARGE: i32 = -32052;
    /// Too many deposits to this mailbox; `data.retry_after_ms` says when
    /// to try again.
    pub const RATE_LIMITED: i32 = -32053;
    /// The mailbox holds as many envelopes as the server keeps.
    pub const MAILBOX_FULL: i32 = -32054;
    /// The server could not verify a directory record (its light client
    /// failed); try again later.
    pub const LOOKUP_FAILED: i32 = -32055;
    /// The mailbox belongs to another user.
    pub const FORBIDDEN: i32 = -32056;
    /// The recipient's verified record names another server, and has for
    /// longer than the server's grace period: look the record up again and
    /// deposit there (`data.server` names it).
    pub const MOVED: i32 = -32057;
    /// The contact pass is not registered for the recipient's mailbox
    /// (never given, withdrawn, or not carried over after a move): deposit
    /// into the requests lane with postage instead.
    pub const PASS_REFUSED: i32 = -32058;
    /// A deposit without a contact pass needs postage (`data.bits`,
    /// `data.window`), and the postage given is missing, too weak, names a
    /// block that is not recent on the server's chain, or was used before.
    pub const POSTAGE_REQUIRED: i32 = -32059;
    /// A group append named a `prev` that is no longer the log's head (the
    /// compare-and-swap failed); `data` is the log's
    /// [`super::GroupHead`]: read the entries after yours and re-apply.
    pub const HEAD_MOVED: i32 = -32060;
    /// A group entry does not follow the log's rule (the message says
    /// which).
    pub const BAD_ENTRY: i32 = -32061;
}

/// The mailbox id of `user`'s direct messages on any server.
pub fn mailbox_id(user: &Name) -> Hash {
    xirtam_proofs::hash::hash_tagged(MAILBOX_TAG, user.as_str().as_bytes())
}

/// The id of `user`'s requests mailbox: first contact from strangers, with
/// postage, kept apart from the contacts lane ([`mailbox_id`]).
pub fn requests_id(user: &Name) -> Hash {
    xirtam_proofs::hash::hash_tagged(REQUESTS_TAG, user.as_str().as_bytes())
}

/// The hash a server keeps of a contact pass.
pub fn pass_hash(pass: &[u8; 32]) -> Hash {
    xirtam_proofs::hash::hash_tagged(PASS_TAG, pass)
}

/// The postage digest: `H(POSTAGE_TAG, mailbox ‖ envelope hash ‖ block
/// hash ‖ u64be(nonce))`. Postage is valid with at least `bits` leading
/// zero bits.
pub fn postage_digest(mailbox: &Hash, envelope: &Hash, block: &Hash, nonce: u64) -> Hash {
    xirtam_proofs::hash::hash_parts(
        POSTAGE_TAG,
        &[&mailbox.0, &envelope.0, &block.0, &nonce.to_be_bytes()],
    )
}

/// Leading zero bits of a hash (read big-endian).
pub fn leading_zero_bits(h: &Hash) -> u32 {
    let mut n = 0;
    for b in h.0 {
        n += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    n
}

/// Find a nonce making [`postage_digest`] carry `bits` leading zero bits
/// (expected `2^bits` hashes).
pub fn solve_postage(mailbox: &Hash, envelope: &Hash, block: &Hash, bits: u32) -> u64 {
    (0..=u64::MAX)
        .find(|n| leading_zero_bits(&postage_digest(mailbox, envelope, block, *n)) >= bits)
        .unwrap_or(u64::MAX)
}

/// The bytes a device signs to answer a login challenge.
pub fn auth_payload(server: &Name, user: &Name, challenge: &[u8; 32]) -> Vec<u8> {
    encode(&(server.clone(), user.clone(), *challenge))
}

/// The bytes that describe one deposit in a receipt.
pub fn receipt_payload(server: &Name, mailbox: &Hash, seq: u64, envelope: &Hash) -> Vec<u8> {
    encode(&(server.clone(), *mailbox, seq, *envelope))
}

/// The leaf of one deposit in a batch of receipts.
pub fn receipt_leaf(server: &Name, mailbox: &Hash, seq: u64, envelope: &Hash) -> Hash {
    xirtam_proofs::hash::hash_tagged(
        RECEIPT_LEAF_TAG,
        &receipt_payload(server, mailbox, seq, envelope),
    )
}

/// The bytes a server signs for a batch of receipts with root `root`.
pub fn receipt_root_payload(server: &Name, root: &Hash) -> Vec<u8> {
    encode(&(server.clone(), *root))
}

/// A binary hash tree over `leaves` (at least one): its root, and for each
/// leaf the path from it to the root, as `(sibling is on the left,
/// sibling)`. Nodes are paired left to right; the odd one out at the end
/// of a level moves up unchanged. A server signs one root for all the
/// deposits of a group commit instead of one signature per deposit.
pub fn receipt_tree(leaves: &[Hash]) -> (Hash, Vec<Vec<(bool, Hash)>>) {
    let mut paths: Vec<Vec<(bool, Hash)>> = vec![Vec::new(); leaves.len()];
    // Each leaf's position in the current level.
    let mut pos: Vec<usize> = (0..leaves.len()).collect();
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        for (path, p) in paths.iter_mut().zip(pos.iter_mut()) {
            if *p % 2 == 1 {
                path.push((true, level[*p - 1]));
            } else if let Some(right) = level.get(*p + 1) {
                path.push((false, *right));
            }
            *p /= 2;
        }
        // A pair becomes its node; the odd one out stays itself.
        level = level
            .chunks(2)
            .filter_map(|c| {
                c.iter()
                    .copied()
                    .reduce(|l, r| xirtam_proofs::hash::hash_pair(RECEIPT_NODE_TAG, &l, &r))
            })
            .collect();
    }
    (level.first().copied().unwrap_or(Hash([0; 32])), paths)
}

/// The root a receipt's path leads to from `leaf`.
pub fn receipt_root(leaf: Hash, path: &[(bool, Hash)]) -> Hash {
    path.iter().fold(leaf, |h, (left, sibling)| {
        if *left {
            xirtam_proofs::hash::hash_pair(RECEIPT_NODE_TAG, sibling, &h)
        } else {
            xirtam_proofs::hash::hash_pair(RECEIPT_NODE_TAG, &h, sibling)
        }
    })
}

/// Hash of deposited envelope bytes (as the receipt names it).
pub fn envelope_hash(bytes: &[u8]) -> Hash {
    xirtam_proofs::hash::hash_tagged(RECEIPT_TAG, bytes)
}

/// `server_info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's `~name`.
    pub name: String,
    /// Its server key (hex), as its record should carry.
    pub key: String,
    /// The network.
    pub network: String,
    /// Software version.
    pub version: String,
    /// Height at which the light client saw the server's own record match
    /// its configuration (confirmed), or `null` while not yet.
    pub registered_at: Option<u64>,
    /// Postage difficulty (leading zero bits) of a deposit without a
    /// contact pass.
    pub postage_bits: u32,
    /// How many blocks old the block postage names may be.
    pub postage_window: u64,
}

/// `auth_challenge`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Challenge {
    /// 32 random bytes (hex) to sign.
    pub challenge: String,
    /// Seconds it stays valid.
    pub valid_secs: u64,
}

/// `auth_login`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Token {
    /// Bearer token (hex) for the other methods.
    pub token: String,
    /// Seconds it stays valid.
    pub valid_secs: u64,
    /// Height of the verified record the device was found in.
    pub record_height: u64,
}

/// `mailbox_create`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxInfo {
    /// The mailbox id (hex).
    pub mailbox: String,
    /// Whether this call created it.
    pub created: bool,
    /// Sequence number the next envelope gets.
    pub next_seq: u64,
    /// The requests mailbox id (hex).
    pub requests: String,
}

/// Postage on a deposit without a contact pass: a nonce making
/// [`postage_digest`] of the requests mailbox, the envelope's hash
/// ([`envelope_hash`]) and a recent block carry the server's
/// `postage_bits` leading zero bits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Postage {
    /// Height of the block.
    pub height: u64,
    /// Its hash (hex).
    pub block: String,
    /// The nonce.
    pub nonce: u64,
}

/// `mailbox_deposit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    /// The mailbox (hex).
    pub mailbox: String,
    /// Sequence number the envelope got.
    pub seq: u64,
    /// Server-key signature (hex) under [`RECEIPT_ROOT_TAG`] over
    /// [`receipt_root_payload`] of the batch root that `path` leads to
    /// from this deposit's [`receipt_leaf`].
    pub sig: String,
    /// From the leaf to the root: each step's sibling, and whether it is
    /// on the left (empty: the deposit was alone in its batch, the leaf
    /// is the root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<ReceiptStep>,
}

/// One step of a receipt's path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptStep {
    /// The sibling is on the left.
    pub left: bool,
    /// The sibling's hash (hex).
    pub hash: String,
}

/// One mailbox cursor of `mailbox_receive`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    /// The mailbox (hex).
    pub mailbox: String,
    /// Last sequence number already processed (0: from the start).
    pub after: u64,
    /// Also acknowledge `after` for the token's device, as `mailbox_ack`
    /// would (durably, before the answer): a device that keeps polling
    /// needs no separate acknowledgement call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
}

/// One envelope delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivered {
    /// Its sequence number.
    pub seq: u64,
    /// The envelope (hex).
    pub envelope: String,
}

/// What `mailbox_receive` found in one mailbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Batch {
    /// The mailbox (hex).
    pub mailbox: String,
    /// Envelopes after the cursor, in sequence order.
    pub messages: Vec<Delivered>,
}

/// Tag of a group's message lane id (a mailbox the hosting server owns).
pub const GROUP_LANE_TAG: &str = "xirtam/chat/group-lane/v1";
/// Most group cursors one `group_receive` takes.
pub const MAX_GROUP_CURSORS: usize = 64;
/// Most log entries one `group_log` answers with.
pub const MAX_LOG_BATCH: u32 = 256;

/// Group entries and messages travel in JSON-RPC as standard base64 (with
/// padding): a third larger than the bytes, where hex would double them.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decode [`b64`] text.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The message lane of a hosted log segment.
pub fn group_lane(segment: &Hash) -> Hash {
    xirtam_proofs::hash::hash_tagged(GROUP_LANE_TAG, &segment.0)
}

/// Where a hosted group log stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupHead {
    /// The segment (hex, [`crate::group::log::segment_id`]).
    pub segment: String,
    /// Position of the first entry hosted here.
    pub first: u64,
    /// Position of the last entry.
    pub seq: u64,
    /// Its head (hex).
    pub head: String,
}

/// `group_log`: entries after a position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupEntries {
    /// Where the log stands.
    pub head: GroupHead,
    /// Encoded entries (base64, [`b64`]), in order, from the asked
    /// position.
    pub entries: Vec<String>,
}

/// One group cursor of `group_receive`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupCursor {
    /// The segment (hex).
    pub segment: String,
    /// Access token (hex) of the current or previous key epoch.
    pub access: String,
    /// Last message sequence number already processed.
    pub after: u64,
    /// Last log position already processed: a newer entry answers the
    /// long-poll too.
    pub log_after: u64,
}

/// What `group_receive` found in one segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupBatch {
    /// The segment (hex).
    pub segment: String,
    /// The log's last position (read the entries after yours when it is
    /// ahead).
    pub log_seq: u64,
    /// Messages after the cursor, in sequence order (each `envelope` in
    /// base64, [`b64`]).
    pub messages: Vec<Delivered>,
}

/// The concierge server's RPC (docs/chat.md).
#[rpc(server, client)]
pub trait ConciergeApi {
    /// Who the server is and whether its record is confirmed.
    #[method(name = "server_info")]
    fn server_info(&self) -> RpcResult<ServerInfo>;

    /// A fresh login challenge for `user`.
    #[method(name = "auth_challenge")]
    fn auth_challenge(&self, user: String) -> RpcResult<Challenge>;

    /// Answer a challenge with a signature by `device` (a signing key in
    /// `user`'s verified record); returns an expiring token.
    #[method(name = "auth_login")]
    async fn auth_login(
        &self,
        user: String,
        device: String,
        challenge: String,
        sig: String,
    ) -> RpcResult<Token>;

    /// Create the token holder's mailbox (idempotent).
    #[method(name = "mailbox_create")]
    async fn mailbox_create(&self, token: String) -> RpcResult<MailboxInfo>;

    /// Deposit an envelope (hex) for `recipient`, within size and rate
    /// limits: with a contact `pass` (hex, registered by the recipient)
    /// into the contacts lane, or with `postage` into the requests lane.
    /// Answered once the envelope is durable.
    #[method(name = "mailbox_deposit")]
    async fn mailbox_deposit(
        &self,
        recipient: String,
        envelope: String,
        pass: Option<String>,
        postage: Option<Postage>,
    ) -> RpcResult<Receipt>;

    /// Register (`add`) and withdraw (`remove`) hashes of contact passes
    /// (hex, [`pass_hash`]) for the token holder's mailbox; returns how
    /// many are registered.
    #[method(name = "mailbox_passes")]
    async fn mailbox_passes(
        &self,
        token: String,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> RpcResult<u64>;

    /// Envelopes after each cursor; waits up to `wait_ms` for one to
    /// arrive (long-poll).
    #[method(name = "mailbox_receive")]
    async fn mailbox_receive(
        &self,
        token: String,
        cursors: Vec<Cursor>,
        wait_ms: u64,
    ) -> RpcResult<Vec<Batch>>;

    /// The token's device has processed the envelopes up to and including
    /// `up_to`; those every device of the user's verified record has
    /// acknowledged are deleted. Returns how many were, once durable.
    #[method(name = "mailbox_ack")]
    async fn mailbox_ack(&self, token: String, mailbox: String, up_to: u64) -> RpcResult<u64>;

    /// Publish a signed medium-term key (hex) of the token's device.
    #[method(name = "keys_publish")]
    async fn keys_publish(&self, token: String, key: String) -> RpcResult<bool>;

    /// The medium-term keys published for `user`'s devices (hex); the caller
    /// checks them against the verified record.
    #[method(name = "keys_fetch")]
    fn keys_fetch(&self, user: String) -> RpcResult<Vec<String>>;

    /// Device linking relay: append `payload` (hex, at most
    /// [`MAX_LINK_PAYLOAD`] bytes) to `side` (0: the new device writes, 1:
    /// the approving device writes) of link slot `slot` (hex,
    /// [`link_slot`]). No login: the new device has none yet; what is
    /// relayed is a password-authenticated exchange the server cannot
    /// read or join undetected. Slots expire after [`LINK_TTL_SECS`].
    #[method(name = "link_post")]
    fn link_post(&self, slot: String, side: u8, payload: String) -> RpcResult<bool>;

    /// Append an encoded entry (base64, [`b64`]) to a group log segment: a
    /// compare-and-swap on the head, which is the entry's `prev`. The
    /// entry must follow the log's rule (docs/protocol.md §17f) with its
    /// author's record as this server verifies it, and name this server.
    /// A new segment starts with a genesis entry (segment
    /// `segment_id(group, 0)`), or, for a group moving here, with the
    /// entry after `anchor` (base64, the last entry on the old server; segment
    /// `segment_id(group, anchor's head)`). Answers with the new head once
    /// durable; `HEAD_MOVED` with the current head when `prev` is not it.
    #[method(name = "group_append")]
    async fn group_append(
        &self,
        segment: String,
        entry: String,
        anchor: Option<String>,
    ) -> RpcResult<GroupHead>;

    /// Up to `limit` (at most [`MAX_LOG_BATCH`]) entries of a segment from
    /// position `from` on. No login: a log holds signed entries whose
    /// bodies are encrypted.
    #[method(name = "group_log")]
    fn group_log(&self, segment: String, from: u64, limit: u32) -> RpcResult<GroupEntries>;

    /// Post an encoded group message (base64) to a segment's lane, with the
    /// access token (hex) of the current or previous epoch. Answers with
    /// its sequence number once durable.
    #[method(name = "group_post")]
    async fn group_post(&self, segment: String, access: String, message: String) -> RpcResult<u64>;

    /// Long-poll group lanes: answers (within `wait_ms`, at most 30 s) as
    /// soon as a lane has messages after its cursor or a log has entries
    /// after `log_after`.
    #[method(name = "group_receive")]
    async fn group_receive(
        &self,
        cursors: Vec<GroupCursor>,
        wait_ms: u64,
    ) -> RpcResult<Vec<GroupBatch>>;

    /// The messages on `side` of `slot` from index `after` on (hex); waits
    /// up to `wait_ms` (at most 30 s) for one.
    #[method(name = "link_read")]
    async fn link_read(
        &self,
        slot: String,
        side: u8,
        after: u32,
        wait_ms: u64,
    ) -> RpcResult<Vec<String>>;
}

/// Largest message one `link_post` relays.
pub const MAX_LINK_PAYLOAD: usize = 4096;
/// Most messages one side of a link slot holds.
pub const MAX_LINK_MESSAGES: usize = 4;
/// Most link slots a server keeps at once.
pub const MAX_LINK_SLOTS: usize = 4096;
/// How long a link slot lives (seconds from its first message).
pub const LINK_TTL_SECS: u64 = 600;
/// Tag of [`link_slot`].
pub const LINK_SLOT_TAG: &str = "xirtam/chat/link-slot/v1";

/// The relay slot of a device link for `user`, from the first group of
/// the link code (the rest of the code stays secret from the server).
pub fn link_slot(network: &Hash, user: &Name, first_group: &str) -> Hash {
    let mut b = network.0.to_vec();
    b.extend_from_slice(user.as_str().as_bytes());
    b.push(0);
    b.extend_from_slice(first_group.as_bytes());
    xirtam_proofs::hash::hash_tagged(LINK_SLOT_TAG, &b)
}

/// Check a deposit receipt against the server key from the verified
/// `~server` record.
pub fn check_receipt(
    server: &Name,
    key: &PublicKey,
    mailbox: &Hash,
    envelope: &[u8],
    r: &Receipt,
) -> Result<(), String> {
    if r.mailbox != mailbox.to_hex() {
        return Err(format!(
            "receipt names mailbox {}, not {mailbox}",
            r.mailbox
        ));
    }
    let sig = hex::decode(&r.sig)
        .ok()
        .and_then(|b| xirtam_proofs::decode::<xirtam_proofs::Signature>(&b).ok())
        .ok_or("receipt signature is not hex of a signature")?;
    if r.path.len() > MAX_RECEIPT_PATH {
        return Err(format!(
            "receipt path has {} steps (at most {MAX_RECEIPT_PATH})",
            r.path.len()
        ));
    }
    let path = r
        .path
        .iter()
        .map(|s| Hash::from_hex(&s.hash).map(|h| (s.left, h)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "receipt path is not hex of hashes".to_string())?;
    let leaf = receipt_leaf(server, mailbox, r.seq, &envelope_hash(envelope));
    key.verify(
        RECEIPT_ROOT_TAG,
        &receipt_root_payload(server, &receipt_root(leaf, &path)),
        &sig,
    )
    .map_err(|_| "receipt is not signed by the server key in its verified record".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xirtam_proofs::SecretKey;

    fn batch_receipts(
        key: &SecretKey,
        server: &Name,
        deposits: &[(Hash, u64, Vec<u8>)],
    ) -> Vec<Receipt> {
        let leaves: Vec<Hash> = deposits
            .iter()
            .map(|(m, seq, env)| receipt_leaf(server, m, *seq, &envelope_hash(env)))
            .collect();
        let (root, paths) = receipt_tree(&leaves);
        let sig = key.sign(RECEIPT_ROOT_TAG, &receipt_root_payload(server, &root));
        deposits
            .iter()
            .zip(paths)
            .map(|((m, seq, _), path)| Receipt {
                mailbox: m.to_hex(),
                seq: *seq,
                sig: hex::encode(sig.0),
                path: path
                    .into_iter()
                    .map(|(left, h)| ReceiptStep {
                        left,
                        hash: h.to_hex(),
                    })
                    .collect(),
            })
            .collect()
    }

    proptest! {
        /// Every deposit of a batch checks against the one signature, and
        /// no receipt checks for another deposit than its own.
        #[test]
        fn every_receipt_of_a_batch_checks_and_only_for_its_deposit(
            n in 1usize..70,
            seed in any::<[u8; 32]>(),
            pick in any::<prop::sample::Index>(),
        ) {
            let key = SecretKey::from_seed(seed);
            let server = Name::new("~srv").expect("valid");
            let deposits: Vec<(Hash, u64, Vec<u8>)> = (0..n)
                .map(|i| (Hash([(i % 7) as u8; 32]), i as u64 + 1, vec![i as u8; 3]))
                .collect();
            let receipts = batch_receipts(&key, &server, &deposits);
            let max_path = receipts.iter().map(|r| r.path.len()).max().unwrap_or(0);
            prop_assert!(max_path <= n.next_power_of_two().trailing_zeros() as usize);
            for ((m, _, env), r) in deposits.iter().zip(&receipts) {
                prop_assert_eq!(check_receipt(&server, &key.public(), m, env, r), Ok(()));
            }
            // Another deposit's receipt, or a changed sequence number,
            // envelope or path, does not check.
            let i = pick.index(n);
            let (m, _, env) = &deposits[i];
            if n > 1 {
                let other = &receipts[(i + 1) % n];
                if other.mailbox == m.to_hex() {
                    prop_assert!(check_receipt(&server, &key.public(), m, env, other).is_err());
                }
            }
            let mut r = receipts[i].clone();
            r.seq += 1;
            prop_assert!(check_receipt(&server, &key.public(), m, env, &r).is_err());
            prop_assert!(check_receipt(&server, &key.public(), m, b"other", &receipts[i]).is_err());
            if let Some(step) = receipts[i].path.first() {
                let mut r = receipts[i].clone();
                r.path[0].left = !step.left;
                prop_assert!(check_receipt(&server, &key.public(), m, env, &r).is_err());
            }
        }
    }

    #[test]
    fn a_receipt_with_an_overlong_path_is_refused() {
        let key = SecretKey::from_seed([9; 32]);
        let server = Name::new("~srv").expect("valid");
        let m = Hash([1; 32]);
        let mut r = batch_receipts(&key, &server, &[(m, 1, b"e".to_vec())]).remove(0);
        assert_eq!(check_receipt(&server, &key.public(), &m, b"e", &r), Ok(()));
        r.path = vec![
            ReceiptStep {
                left: false,
                hash: Hash([0; 32]).to_hex(),
            };
            MAX_RECEIPT_PATH + 1
        ];
        let e = check_receipt(&server, &key.public(), &m, b"e", &r).expect_err("too long");
        assert!(e.contains("steps"), "{e}");
    }
}
