//! Directory records and the ops that change them.
//!
//! A [`Record`] is `{ nonce, owners, value, claimed_at }`. A block carries
//! [`Op`]s of two kinds:
//!
//! * a [`Commit`]: a hiding commitment `H(genesis, name, claimant key,
//!   salt)` to a future claim. It names nothing, so whoever sees it learns
//!   nothing; the chain stores it in the state tree with the height it was
//!   mined at.
//! * a [`Write`]: replaces the record under one name, signed by `signer`.
//!   A first claim (a write with a [`Claim`]) reveals a commitment's salt; it
//!   is valid only `claim_maturity` to `claim_expiry` blocks after the
//!   commitment was mined, and while the name is held through a *later*
//!   commitment, an earlier one still wins it (see [`apply`]). An update is
//!   signed by a current owner and carries exactly the next nonce.
//!
//! Every op carries a stamp: a small proof of work over its id, a recent
//! block (the anchor) and a nonce. A write's signature covers its anchor,
//! so a signed write expires `stamp_window` blocks after its anchor and
//! cannot be re-stamped later.

use bincode::{Decode, Encode};

use crate::encoding::{decode_bytes, decode_len, encode, invalid};
use crate::hash::{Hash, hash_parts, hash_tagged, tag};
use crate::keys::{PublicKey, SecretKey, Signature, SignatureError, SignedPayload, verify_batch};
use crate::name::Name;
use crate::params::Params;
use crate::pow::meets_target;
use crate::state::commit_entry_hash;

/// Protocol-wide cap on owners (networks set a lower limit).
pub const MAX_OWNERS_CAP: usize = 16;
/// Protocol-wide cap on a record value in bytes (networks set a lower limit).
pub const MAX_VALUE_CAP: usize = 16 * 1024;

/// The keys allowed to change a record: 1 or more distinct keys, kept sorted
/// (strictly increasing bytes), so the encoding is canonical.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Owners(Vec<PublicKey>);

impl Owners {
    /// Sort and de-duplicate; `None` when empty or above [`MAX_OWNERS_CAP`].
    pub fn new(mut keys: Vec<PublicKey>) -> Option<Self> {
        keys.sort();
        keys.dedup();
        (!keys.is_empty() && keys.len() <= MAX_OWNERS_CAP).then_some(Owners(keys))
    }

    /// One owner.
    pub fn single(key: PublicKey) -> Self {
        Owners(vec![key])
    }

    /// The keys, sorted.
    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }

    /// Is `key` an owner?
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.binary_search(key).is_ok()
    }

    /// Number of owners.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a decoded or constructed value; here for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Encode for Owners {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(e)
    }
}

impl<C> Decode<C> for Owners {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let len = decode_len(d, MAX_OWNERS_CAP, "owners")?;
        if len == 0 {
            return Err(invalid("owners must not be empty".into()));
        }
        let mut keys = Vec::with_capacity(len);
        for _ in 0..len {
            let k = PublicKey::decode(d)?;
            if keys.last().is_some_and(|prev: &PublicKey| *prev >= k) {
                return Err(invalid("owners are not strictly sorted".into()));
            }
            keys.push(k);
        }
        Ok(Owners(keys))
    }
}
bincode::impl_borrow_decode!(Owners);

/// An opaque record value (the chat layer gives it meaning), at most
/// [`MAX_VALUE_CAP`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Value(Vec<u8>);

impl Value {
    /// `None` when above [`MAX_VALUE_CAP`].
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() <= MAX_VALUE_CAP).then_some(Value(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Empty value?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Encode for Value {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.as_slice().encode(e)
    }
}

impl<C> Decode<C> for Value {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let len = decode_len(d, MAX_VALUE_CAP, "value")?;
        Ok(Value(decode_bytes(d, len)?))
    }
}
bincode::impl_borrow_decode!(Value);

/// The state of one name.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub struct Record {
    /// Number of writes since the name was (last) claimed: the next update
    /// must carry `nonce + 1`.
    pub nonce: u64,
    /// Keys allowed to change the record.
    pub owners: Owners,
    /// Opaque value.
    pub value: Value,
    /// Height at which the commitment of the claim that created this record
    /// was mined. The record is settled once the chain is
    /// `claim_expiry` blocks past it: no earlier commitment can be revealed
    /// after that.
    pub claimed_at: u64,
}

impl Record {
    /// `H(RECORD, encode(record))`: what the state tree stores for the name.
    pub fn hash(&self) -> Hash {
        hash_tagged(tag::RECORD, &encode(self))
    }

    /// First height at which no earlier claim can take this name.
    pub fn settled_at(&self, params: &Params) -> u64 {
        self.claimed_at.saturating_add(params.claim_expiry)
    }
}

/// Proof of work that binds an op to a recent block: valid when
/// `H(STAMP, op_id || block || nonce)` meets the network's stamp target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Encode, Decode)]
pub struct Stamp {
    /// Hash of a recent block on the chain that includes the op (the
    /// anchor; a write's signature covers it).
    pub block: Hash,
    /// Nonce found by the submitter.
    pub nonce: u64,
}

impl Stamp {
    /// The stamp's proof-of-work hash for op id `op_id`.
    pub fn pow_hash(&self, op_id: &Hash) -> Hash {
        hash_parts(
            tag::STAMP,
            &[&op_id.0, &self.block.0, &self.nonce.to_le_bytes()],
        )
    }

    /// Search nonces `start..start + tries` for one that meets the target
    /// for op id `id`; sets it and returns whether one was found.
    fn solve(&mut self, params: &Params, id: &Hash, start: u64, tries: u64) -> bool {
        let target = params.stamp_target_be();
        for nonce in start..start.saturating_add(tries) {
            let candidate = Stamp {
                block: self.block,
                nonce,
            };
            if meets_target(&candidate.pow_hash(id), &target) {
                *self = candidate;
                return true;
            }
        }
        false
    }
}

/// The commitment to a claim of `name` by `claimant` with a secret `salt`:
/// `H(CLAIM_COMMITMENT, genesis_hash || encode(name) || claimant || salt)`.
pub fn claim_commitment(
    params: &Params,
    name: &Name,
    claimant: &PublicKey,
    salt: &[u8; 32],
) -> Hash {
    hash_parts(
        tag::CLAIM_COMMITMENT,
        &[&params.genesis_hash.0, &encode(name), &claimant.0, salt],
    )
}

/// The state-tree key of a commitment: `H(COMMIT_KEY, commitment)`.
pub fn commit_key(commitment: &Hash) -> Hash {
    hash_tagged(tag::COMMIT_KEY, &commitment.0)
}

/// A hiding commitment to a future claim (first phase of a claim).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub struct Commit {
    /// [`claim_commitment`] of the claim to come.
    pub commitment: Hash,
    /// Proof of work bound to the commitment and a recent block.
    pub stamp: Stamp,
}

impl Commit {
    /// A commitment op anchored at `anchor`; call [`Commit::solve_stamp`].
    pub fn new(commitment: Hash, anchor: Hash) -> Commit {
        Commit {
            commitment,
            stamp: Stamp {
                block: anchor,
                nonce: 0,
            },
        }
    }

    /// `H(COMMIT_ID, commitment || anchor)`: what the stamp is bound to.
    pub fn id(&self) -> Hash {
        hash_parts(tag::COMMIT_ID, &[&self.commitment.0, &self.stamp.block.0])
    }

    /// Search stamp nonces `start..start + tries`; returns whether one was
    /// found (and sets it).
    pub fn solve_stamp(&mut self, params: &Params, start: u64, tries: u64) -> bool {
        let id = self.id();
        self.stamp.solve(params, &id, start, tries)
    }
}

/// The reveal of a commitment: turns a write into a first claim.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub struct Claim {
    /// The secret salt of the commitment.
    pub salt: [u8; 32],
    /// Height at which the commitment was mined.
    pub commit_height: u64,
}

/// An update of one name's record (a first claim when it carries a
/// [`Claim`]).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub struct Write {
    /// The name.
    pub key: Name,
    /// An update: the current record's nonce + 1. A claim: 1.
    pub nonce: u64,
    /// The key that signed this write.
    pub signer: PublicKey,
    /// Owners of the record after this write.
    pub owners: Owners,
    /// Value of the record after this write.
    pub value: Value,
    /// Present on a first claim: the commitment's salt and height.
    pub claim: Option<Claim>,
    /// Signature by `signer` over [`Write::signing_payload`].
    pub signature: Signature,
    /// Proof of work bound to this write and its anchor block. The anchor
    /// (`stamp.block`) is signed; the stamp nonce is not.
    pub stamp: Stamp,
}

/// What a write will say, before it is signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Draft {
    /// The name.
    pub key: Name,
    /// The nonce (see [`Write::nonce`]).
    pub nonce: u64,
    /// Owners after the write.
    pub owners: Owners,
    /// Value after the write.
    pub value: Value,
    /// The reveal, for a first claim.
    pub claim: Option<Claim>,
    /// A recent block on the chain: the write expires `stamp_window`
    /// blocks after it.
    pub anchor: Hash,
}

impl Draft {
    /// Sign the draft. The stamp nonce is left at 0: call
    /// [`Write::solve_stamp`] before submitting.
    pub fn sign(self, params: &Params, signer: &SecretKey) -> Write {
        let mut w = Write {
            key: self.key,
            nonce: self.nonce,
            signer: signer.public(),
            owners: self.owners,
            value: self.value,
            claim: self.claim,
            signature: Signature([0; 64]),
            stamp: Stamp {
                block: self.anchor,
                nonce: 0,
            },
        };
        w.signature = signer.sign(tag::SIG_OP, &w.signing_payload(params));
        w
    }
}

/// A block entry: a commitment or a write.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub enum Op {
    /// First phase of a claim.
    Commit(Commit),
    /// A claim (reveal) or an update.
    Write(Write),
}

/// Why an op is invalid. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// Name longer than the network allows.
    #[error("name is {len} bytes; this network allows {max}")]
    NameTooLong {
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Value longer than the network allows.
    #[error("value is {len} bytes; this network allows {max}")]
    ValueTooLong {
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// More owners than the network allows.
    #[error("{count} owners; this network allows {max}")]
    TooManyOwners {
        /// Count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Nonce zero can never be written.
    #[error("op nonce must be at least 1")]
    ZeroNonce,
    /// Bad signature.
    #[error("op signature: {0}")]
    Signature(#[from] SignatureError),
    /// Stamp hash above the stamp target.
    #[error("stamp proof of work does not meet the target")]
    StampPow,
    /// The stamp's block is not on this chain (caller's lookup failed).
    #[error("stamp names block {0}, which is not on this chain")]
    StampBlockUnknown(Hash),
    /// The stamp's block is too old (or not below the including block):
    /// the op has expired.
    #[error(
        "op expired: its anchor block at height {stamp_height} is not within {window} blocks below height {height}"
    )]
    StaleStamp {
        /// Height of the stamp's block.
        stamp_height: u64,
        /// Height of the block including the op.
        height: u64,
        /// The network's window.
        window: u64,
    },
    /// An update's nonce is not the record's nonce + 1.
    #[error("nonce {got} is not the next nonce {expected}")]
    NonceNotNext {
        /// The only acceptable nonce.
        expected: u64,
        /// Op nonce.
        got: u64,
    },
    /// A claim must carry nonce 1.
    #[error("a claim must carry nonce 1, not {0}")]
    ClaimNonce(u64),
    /// Signer is not allowed to change this record.
    #[error("signer {0} is not an owner of the record")]
    NotOwner(PublicKey),
    /// A write without a claim for a name nobody holds.
    #[error("{0} is not claimed: a first claim must reveal a commitment")]
    Unclaimed(Name),
    /// The claim's commitment is not in the state at the height it names.
    #[error("no commitment for this claim was mined at height {0}")]
    CommitmentUnknown(u64),
    /// The claim comes too soon after its commitment.
    #[error(
        "claim at height {height} reveals a commitment from height {commit_height}; it may be revealed from height {}",
        commit_height.saturating_add(*maturity)
    )]
    ClaimTooEarly {
        /// Commitment height.
        commit_height: u64,
        /// Height of the block including the claim.
        height: u64,
        /// The network's maturity.
        maturity: u64,
    },
    /// The claim's commitment is too old.
    #[error(
        "claim at height {height} reveals a commitment from height {commit_height}, older than {expiry} blocks"
    )]
    CommitmentExpired {
        /// Commitment height.
        commit_height: u64,
        /// Height of the block including the claim.
        height: u64,
        /// The network's expiry.
        expiry: u64,
    },
    /// The name is held through a commitment at least as old as this one.
    #[error(
        "{name} is held through a commitment from height {held}; this claim's commitment (height {commit_height}) is not earlier"
    )]
    NameTaken {
        /// The name.
        name: Name,
        /// Commitment height of the current holder.
        held: u64,
        /// This claim's commitment height.
        commit_height: u64,
    },
    /// A commitment that is already in the state.
    #[error("commitment {0} is already on the chain")]
    AlreadyCommitted(Hash),
}

impl Write {
    /// Canonical bytes of the signed content:
    /// `encode(key) || encode(nonce) || encode(signer) || encode(owners) ||
    /// encode(value) || encode(claim) || anchor`.
    pub fn content_bytes(&self) -> Vec<u8> {
        encode(&(
            &self.key,
            self.nonce,
            &self.signer,
            &self.owners,
            &self.value,
            &self.claim,
            &self.stamp.block,
        ))
    }

    /// What the signature covers (after the `SIG_OP` tag):
    /// `genesis_hash || content_bytes`, so a write cannot be replayed on
    /// another network.
    pub fn signing_payload(&self, params: &Params) -> Vec<u8> {
        let content = self.content_bytes();
        let mut p = Vec::with_capacity(32 + content.len());
        p.extend_from_slice(&params.genesis_hash.0);
        p.extend_from_slice(&content);
        p
    }

    /// `H(OP_ID, content_bytes)`: identity of the signed content; the stamp
    /// is bound to it.
    pub fn id(&self) -> Hash {
        hash_tagged(tag::OP_ID, &self.content_bytes())
    }

    /// Search stamp nonces `start..start + tries` for one that meets the
    /// target (the anchor is fixed by the signature). Returns whether one
    /// was found (and sets it).
    pub fn solve_stamp(&mut self, params: &Params, start: u64, tries: u64) -> bool {
        let id = self.id();
        self.stamp.solve(params, &id, start, tries)
    }

    /// The commitment this claim reveals, and the state-tree entry
    /// `(key, value)` it must find; `None` for an update.
    pub fn claim_entry(&self, params: &Params) -> Option<(Hash, Hash)> {
        let c = self.claim.as_ref()?;
        let commitment = claim_commitment(params, &self.key, &self.signer, &c.salt);
        Some((commit_key(&commitment), commit_entry_hash(c.commit_height)))
    }

    /// Every stateless rule but the signature; returns the signing payload.
    fn check_unsigned(&self, params: &Params) -> Result<Vec<u8>, OpError> {
        let name_len = self.key.as_str().len();
        if name_len > params.max_name_len {
            return Err(OpError::NameTooLong {
                len: name_len,
                max: params.max_name_len,
            });
        }
        if self.value.len() > params.max_value_len {
            return Err(OpError::ValueTooLong {
                len: self.value.len(),
                max: params.max_value_len,
            });
        }
        if self.owners.len() > params.max_owners {
            return Err(OpError::TooManyOwners {
                count: self.owners.len(),
                max: params.max_owners,
            });
        }
        if self.nonce == 0 {
            return Err(OpError::ZeroNonce);
        }
        if self.claim.is_some() && self.nonce != 1 {
            return Err(OpError::ClaimNonce(self.nonce));
        }
        let content = self.content_bytes();
        if !meets_target(
            &self.stamp.pow_hash(&hash_tagged(tag::OP_ID, &content)),
            &params.stamp_target_be(),
        ) {
            return Err(OpError::StampPow);
        }
        let mut payload = Vec::with_capacity(32 + content.len());
        payload.extend_from_slice(&params.genesis_hash.0);
        payload.extend_from_slice(&content);
        Ok(payload)
    }
}

impl Op {
    /// The op's stamp.
    pub fn stamp(&self) -> &Stamp {
        match self {
            Op::Commit(c) => &c.stamp,
            Op::Write(w) => &w.stamp,
        }
    }

    /// The id its stamp is bound to.
    pub fn id(&self) -> Hash {
        match self {
            Op::Commit(c) => c.id(),
            Op::Write(w) => w.id(),
        }
    }

    /// `H(OP, encode(op))`: the leaf of `ops_root`.
    pub fn hash(&self) -> Hash {
        hash_tagged(tag::OP, &encode(self))
    }

    /// The state-tree key the op writes: the name's key for a write, the
    /// commitment's key for a commit. A block and the mempool hold at most
    /// one op per key.
    pub fn state_key(&self) -> Hash {
        match self {
            Op::Commit(c) => commit_key(&c.commitment),
            Op::Write(w) => w.key.key_hash(),
        }
    }

    /// The write, if this is one.
    pub fn as_write(&self) -> Option<&Write> {
        match self {
            Op::Write(w) => Some(w),
            Op::Commit(_) => None,
        }
    }

    /// What the op is about, for messages: the name, or `commitment <hex>`.
    pub fn subject(&self) -> String {
        match self {
            Op::Commit(c) => format!("commitment {}", c.commitment),
            Op::Write(w) => w.key.to_string(),
        }
    }

    /// Every check that needs no chain state: limits, nonce, signature and
    /// the stamp's proof of work. (The stamp's age needs the chain: see
    /// [`Op::check_stamp_age`].)
    pub fn check_stateless(&self, params: &Params) -> Result<(), OpError> {
        match self {
            Op::Commit(c) => check_commit(params, c),
            Op::Write(w) => {
                let payload = w.check_unsigned(params)?;
                w.signer
                    .verify(tag::SIG_OP, &payload, &w.signature)
                    .map_err(OpError::from)
            }
        }
    }

    /// [`Op::check_stateless`] for many ops, the signatures verified as one
    /// batch ([`verify_batch`]): the result is exactly that of checking
    /// each op in order, and the error names the first failing op (its
    /// index and subject).
    pub fn check_stateless_all(
        params: &Params,
        ops: &[Op],
    ) -> Result<(), (usize, String, OpError)> {
        // Signed payloads of the writes before the first other failure,
        // with their op index.
        let mut signed: Vec<(usize, &Write, Vec<u8>)> = Vec::with_capacity(ops.len());
        let mut unsigned_failure = None;
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Commit(c) => check_commit(params, c),
                Op::Write(w) => w.check_unsigned(params).map(|p| signed.push((i, w, p))),
            };
            if let Err(e) = r {
                unsigned_failure = Some((i, op.subject(), e));
                break;
            }
        }
        // A signature failure before the first other failure is the
        // earlier error.
        let items: Vec<_> = signed
            .iter()
            .map(|(_, w, payload)| SignedPayload {
                key: w.signer,
                payload,
                sig: w.signature,
            })
            .collect();
        verify_batch(tag::SIG_OP, &items).map_err(|e| {
            let (i, w, _) = &signed[e.index];
            (*i, w.key.to_string(), OpError::from(e.error))
        })?;
        unsigned_failure.map_or(Ok(()), Err)
    }

    /// Every stateless rule but the signatures, for many ops: what a node
    /// checks for the ancestors of an assumed-valid block
    /// ([`crate::params::Params::assume_valid`]). The error names the first
    /// failing op.
    pub fn check_unsigned_all(params: &Params, ops: &[Op]) -> Result<(), (usize, String, OpError)> {
        for (i, op) in ops.iter().enumerate() {
            let r = match op {
                Op::Commit(c) => check_commit(params, c),
                Op::Write(w) => w.check_unsigned(params).map(drop),
            };
            r.map_err(|e| (i, op.subject(), e))?;
        }
        Ok(())
    }

    /// The stamp rule: the stamp's block (at `stamp_height` on the chain
    /// that will include the op at `height`) must be below `height` and at
    /// most `stamp_window` blocks older. For a write this is also its
    /// expiry, since the anchor is signed.
    pub fn check_stamp_age(
        &self,
        params: &Params,
        stamp_height: u64,
        height: u64,
    ) -> Result<(), OpError> {
        if stamp_height >= height || height - stamp_height > params.stamp_window {
            return Err(OpError::StaleStamp {
                stamp_height,
                height,
                window: params.stamp_window,
            });
        }
        Ok(())
    }
}

fn check_commit(params: &Params, c: &Commit) -> Result<(), OpError> {
    if meets_target(&c.stamp.pow_hash(&c.id()), &params.stamp_target_be()) {
        Ok(())
    } else {
        Err(OpError::StampPow)
    }
}

/// The state rule for a write included at `height`: the record after `w`,
/// given the record before it (`None` if the name is unclaimed) and, for a
/// claim, whether the state holds the commitment entry
/// [`Write::claim_entry`] names (ignored for an update). Assumes
/// [`Op::check_stateless`] passed.
///
/// * An update needs a record, a signer among its owners and exactly its
///   nonce + 1; `claimed_at` carries over.
/// * A claim needs its commitment mined `claim_maturity..=claim_expiry`
///   blocks before `height`, a signer among the new owners, and either an
///   unclaimed name or one held through a strictly later commitment (the
///   earliest commitment wins). The record's nonce continues from the one
///   it replaces, so old updates can never apply again.
pub fn apply(
    params: &Params,
    before: Option<&Record>,
    w: &Write,
    height: u64,
    commitment_in_state: bool,
) -> Result<Record, OpError> {
    let Some(claim) = &w.claim else {
        let Some(r) = before else {
            return Err(OpError::Unclaimed(w.key.clone()));
        };
        if !r.owners.contains(&w.signer) {
            return Err(OpError::NotOwner(w.signer));
        }
        let expected = r.nonce.saturating_add(1);
        if w.nonce != expected {
            return Err(OpError::NonceNotNext {
                expected,
                got: w.nonce,
            });
        }
        return Ok(Record {
            nonce: w.nonce,
            owners: w.owners.clone(),
            value: w.value.clone(),
            claimed_at: r.claimed_at,
        });
    };
    if !w.owners.contains(&w.signer) {
        return Err(OpError::NotOwner(w.signer));
    }
    let commit_height = claim.commit_height;
    if !commitment_in_state {
        return Err(OpError::CommitmentUnknown(commit_height));
    }
    let age = height.saturating_sub(commit_height);
    if commit_height >= height || age < params.claim_maturity.max(1) {
        return Err(OpError::ClaimTooEarly {
            commit_height,
            height,
            maturity: params.claim_maturity.max(1),
        });
    }
    if age > params.claim_expiry {
        return Err(OpError::CommitmentExpired {
            commit_height,
            height,
            expiry: params.claim_expiry,
        });
    }
    if let Some(r) = before
        && r.claimed_at <= commit_height
    {
        return Err(OpError::NameTaken {
            name: w.key.clone(),
            held: r.claimed_at,
            commit_height,
        });
    }
    Ok(Record {
        nonce: before.map_or(0, |r| r.nonce).saturating_add(1),
        owners: w.owners.clone(),
        value: w.value.clone(),
        claimed_at: commit_height,
    })
}
