//! Directory records and the ops that change them.
//!
//! A [`Record`] is `{ nonce, owners, value }`. An [`Op`] replaces the record
//! under one name. It is valid when
//! * it is well formed (name syntax, sizes within the network's limits),
//! * its signature by `signer` verifies over the signing bytes
//!   ([`Op::signing_payload`]: genesis hash then the op content),
//! * its stamp meets the network's stamp target and names a block at most
//!   `stamp_window` blocks below the block that includes the op,
//! * and, against the current record ([`apply`]): the nonce grows, and the
//!   signer is a current owner (or, for a first claim, one of the new owners).

use bincode::{Decode, Encode};

use crate::encoding::{decode_bytes, decode_len, encode, invalid};
use crate::hash::{Hash, hash_parts, hash_tagged, tag};
use crate::keys::{PublicKey, SecretKey, Signature, SignatureError, SignedPayload, verify_batch};
use crate::name::Name;
use crate::params::Params;
use crate::pow::meets_target;

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
    /// Nonce of the op that wrote this record; every update must exceed it.
    pub nonce: u64,
    /// Keys allowed to change the record.
    pub owners: Owners,
    /// Opaque value.
    pub value: Value,
}

impl Record {
    /// `H(RECORD, encode(record))`: what the state tree stores for the name.
    pub fn hash(&self) -> Hash {
        hash_tagged(tag::RECORD, &encode(self))
    }
}

/// Proof of work that binds an op to a recent block: valid when
/// `H(STAMP, op_id || block || nonce)` meets the network's stamp target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Encode, Decode)]
pub struct Stamp {
    /// Hash of a recent block on the chain that includes the op.
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
}

/// An update of one name's record.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Encode, Decode)]
pub struct Op {
    /// The name.
    pub key: Name,
    /// Must exceed the current record's nonce (or be at least 1 on a claim).
    pub nonce: u64,
    /// The key that signed this op.
    pub signer: PublicKey,
    /// Owners of the record after this op.
    pub owners: Owners,
    /// Value of the record after this op.
    pub value: Value,
    /// Signature by `signer` over [`Op::signing_payload`].
    pub signature: Signature,
    /// Proof of work bound to this op and a recent block (not signed).
    pub stamp: Stamp,
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
    /// The stamp's block is too old (or not below the including block).
    #[error(
        "stamp block at height {stamp_height} is not within {window} blocks below height {height}"
    )]
    StaleStamp {
        /// Height of the stamp's block.
        stamp_height: u64,
        /// Height of the block including the op.
        height: u64,
        /// The network's window.
        window: u64,
    },
    /// Nonce does not exceed the record's nonce.
    #[error("nonce {got} does not exceed the current nonce {current}")]
    NonceNotIncreasing {
        /// Current record nonce (0 when unclaimed).
        current: u64,
        /// Op nonce.
        got: u64,
    },
    /// Signer is not allowed to change this record.
    #[error("signer {0} is not an owner of the record")]
    NotOwner(PublicKey),
}

impl Op {
    /// Create and sign an op. The stamp is left empty: call
    /// [`Op::solve_stamp`] before submitting.
    pub fn sign(
        params: &Params,
        key: Name,
        nonce: u64,
        owners: Owners,
        value: Value,
        signer: &SecretKey,
    ) -> Op {
        let mut op = Op {
            key,
            nonce,
            signer: signer.public(),
            owners,
            value,
            signature: Signature([0; 64]),
            stamp: Stamp::default(),
        };
        op.signature = signer.sign(tag::SIG_OP, &op.signing_payload(params));
        op
    }

    /// Canonical bytes of the signed content:
    /// `encode(key) || encode(nonce) || encode(signer) || encode(owners) || encode(value)`.
    pub fn content_bytes(&self) -> Vec<u8> {
        encode(&(
            &self.key,
            self.nonce,
            &self.signer,
            &self.owners,
            &self.value,
        ))
    }

    /// What the signature covers (after the `SIG_OP` tag):
    /// `genesis_hash || content_bytes`, so an op cannot be replayed on
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

    /// `H(OP, encode(op))`: the leaf of `ops_root`.
    pub fn hash(&self) -> Hash {
        hash_tagged(tag::OP, &encode(self))
    }

    /// Search stamp nonces `start..start + tries` for one that meets the
    /// target, with `block` as the recent block. Returns whether one was
    /// found (and sets it).
    pub fn solve_stamp(&mut self, params: &Params, block: Hash, start: u64, tries: u64) -> bool {
        let target = params.stamp_target_be();
        let id = self.id();
        for nonce in start..start.saturating_add(tries) {
            let stamp = Stamp { block, nonce };
            if meets_target(&stamp.pow_hash(&id), &target) {
                self.stamp = stamp;
                return true;
            }
        }
        false
    }

    /// Every check that needs no chain state: limits, nonce, signature and
    /// the stamp's proof of work. (The stamp's age needs the chain: see
    /// [`Op::check_stamp_age`].)
    pub fn check_stateless(&self, params: &Params) -> Result<(), OpError> {
        let payload = self.check_unsigned(params)?;
        self.signer
            .verify(tag::SIG_OP, &payload, &self.signature)
            .map_err(OpError::from)
    }

    /// [`Op::check_stateless`] for many ops, the signatures verified as one
    /// batch ([`verify_batch`]): the result is exactly that of checking
    /// each op in order, and the error names the first failing op (its
    /// index and name).
    pub fn check_stateless_all(params: &Params, ops: &[Op]) -> Result<(), (usize, Name, OpError)> {
        let mut payloads = Vec::with_capacity(ops.len());
        let mut unsigned_failure = None;
        for (i, op) in ops.iter().enumerate() {
            match op.check_unsigned(params) {
                Ok(p) => payloads.push(p),
                Err(e) => {
                    unsigned_failure = Some((i, op.key.clone(), e));
                    break;
                }
            }
        }
        // Signatures of the ops before the first other failure: one of
        // them failing is the earlier error.
        let items: Vec<_> = ops
            .iter()
            .zip(&payloads)
            .map(|(op, payload)| SignedPayload {
                key: op.signer,
                payload,
                sig: op.signature,
            })
            .collect();
        // `verify_batch` reports an index into `items`, a prefix of `ops`.
        verify_batch(tag::SIG_OP, &items)
            .map_err(|e| (e.index, ops[e.index].key.clone(), OpError::from(e.error)))?;
        unsigned_failure.map_or(Ok(()), Err)
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

    /// The stamp rule: the stamp's block (at `stamp_height` on the chain
    /// that will include the op at `height`) must be below `height` and at
    /// most `stamp_window` blocks older.
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

/// The state rule: the record after `op`, given the record before it
/// (`None` if the name is unclaimed). Assumes [`Op::check_stateless`]
/// passed.
pub fn apply(before: Option<&Record>, op: &Op) -> Result<Record, OpError> {
    let current = before.map_or(0, |r| r.nonce);
    if op.nonce <= current {
        return Err(OpError::NonceNotIncreasing {
            current,
            got: op.nonce,
        });
    }
    let allowed = match before {
        Some(r) => r.owners.contains(&op.signer),
        // First claim: the claimant must own what it creates.
        None => op.owners.contains(&op.signer),
    };
    if !allowed {
        return Err(OpError::NotOwner(op.signer));
    }
    Ok(Record {
        nonce: op.nonce,
        owners: op.owners.clone(),
        value: op.value.clone(),
    })
}
