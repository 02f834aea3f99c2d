//! JSON shapes of RPC results. Everything a client verifies travels as hex
//! of canonical bytes ([`crate::wire`] decodes it with limits); the JSON
//! fields beside it are for humans.

use serde::{Deserialize, Serialize};
use xirtam_proofs::block::Block;
use xirtam_proofs::header::Header;
use xirtam_proofs::op::Record;
use xirtam_proofs::params::Params;
use xirtam_proofs::{Op, U256, encode};

/// A main-chain height or a block hash (hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeightOrHash {
    /// Height.
    Height(u64),
    /// Hash, 64 hex digits.
    Hash(String),
}

/// `chain_tip`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TipView {
    /// Height.
    pub height: u64,
    /// Block hash.
    pub hash: String,
    /// Header, hex of its 160 canonical bytes.
    pub header: String,
    /// Timestamp.
    pub time: u64,
    /// Cumulative work, hex (big-endian, 32 bytes).
    pub work: String,
}

impl TipView {
    /// From a tip header and its cumulative work.
    pub fn new(header: &Header, work: U256) -> Self {
        TipView {
            height: header.height,
            hash: header.hash().to_hex(),
            header: hex::encode(header.to_bytes()),
            time: header.time,
            work: hex::encode(work.to_be_bytes()),
        }
    }
}

/// A record for humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordView {
    /// Nonce.
    pub nonce: u64,
    /// Owner keys, hex.
    pub owners: Vec<String>,
    /// Value, hex.
    pub value: String,
    /// Value as UTF-8 when it is valid UTF-8.
    pub value_utf8: Option<String>,
    /// Height at which the winning claim's commitment was mined.
    pub claimed_at: u64,
    /// Canonical record bytes, hex (what the proof commits to).
    pub bytes: String,
}

impl RecordView {
    /// From a record.
    pub fn new(r: &Record) -> Self {
        RecordView {
            nonce: r.nonce,
            owners: r.owners.keys().iter().map(|k| k.to_hex()).collect(),
            value: hex::encode(r.value.as_bytes()),
            value_utf8: std::str::from_utf8(r.value.as_bytes())
                .ok()
                .map(str::to_owned),
            claimed_at: r.claimed_at,
            bytes: hex::encode(encode(r)),
        }
    }
}

/// `dir_get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirGetView {
    /// The name.
    pub key: String,
    /// Height the proof is against.
    pub height: u64,
    /// Hash of that block.
    pub block_hash: String,
    /// That block's header, hex.
    pub header: String,
    /// That header's state root.
    pub state_root: String,
    /// The record, or null when the proof shows absence.
    pub record: Option<RecordView>,
    /// State proof, hex of its canonical encoding.
    pub proof: String,
    /// The node's tip height when answering.
    pub tip_height: u64,
}

/// `dir_commitment`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirCommitmentView {
    /// The commitment, hex.
    pub commitment: String,
    /// Height the proof is against.
    pub height: u64,
    /// Hash of that block.
    pub block_hash: String,
    /// That block's header, hex.
    pub header: String,
    /// That header's state root.
    pub state_root: String,
    /// Height at which the commitment was mined, or null when the proof
    /// shows it absent.
    pub mined_at: Option<u64>,
    /// State proof, hex of its canonical encoding.
    pub proof: String,
    /// The node's tip height when answering.
    pub tip_height: u64,
}

/// An op for humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpView {
    /// Op hash.
    pub hash: String,
    /// `commit`, `claim` or `update`.
    pub kind: String,
    /// The name, or the commitment (hex) of a `commit`.
    pub key: String,
    /// Nonce (writes only).
    pub nonce: Option<u64>,
    /// Signer, hex (writes only).
    pub signer: Option<String>,
    /// Canonical op bytes, hex.
    pub bytes: String,
}

impl OpView {
    /// From an op.
    pub fn new(o: &Op) -> Self {
        let (kind, key, nonce, signer) = match o {
            Op::Commit(c) => ("commit", c.commitment.to_hex(), None, None),
            Op::Write(w) => (
                if w.claim.is_some() { "claim" } else { "update" },
                w.key.to_string(),
                Some(w.nonce),
                Some(w.signer.to_hex()),
            ),
        };
        OpView {
            hash: o.hash().to_hex(),
            kind: kind.into(),
            key,
            nonce,
            signer,
            bytes: hex::encode(encode(o)),
        }
    }
}

/// `chain_block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockView {
    /// Block hash.
    pub hash: String,
    /// Height.
    pub height: u64,
    /// On the main chain?
    pub main_chain: bool,
    /// Header, hex.
    pub header: String,
    /// Whole block, hex of its canonical encoding.
    pub block: String,
    /// Ops.
    pub ops: Vec<OpView>,
}

impl BlockView {
    /// From a block.
    pub fn new(b: &Block, main_chain: bool) -> Self {
        BlockView {
            hash: b.header.hash().to_hex(),
            height: b.header.height,
            main_chain,
            header: hex::encode(b.header.to_bytes()),
            block: hex::encode(encode(b)),
            ops: b.ops.iter().map(OpView::new).collect(),
        }
    }
}

/// `chain_submit_block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitBlockView {
    /// Block hash.
    pub hash: String,
    /// `tip`, `side-branch`, `already-known` or `orphan`.
    pub status: String,
}

/// `dir_submit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitOpView {
    /// Op hash.
    pub op_hash: String,
    /// `pending` or `replaced`.
    pub status: String,
}

/// `dir_params`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamsView {
    /// Network name.
    pub network: String,
    /// Genesis hash.
    pub genesis_hash: String,
    /// Target block interval (s).
    pub block_interval: u64,
    /// Stamp target, hex (big-endian).
    pub stamp_target: String,
    /// Stamp window (blocks).
    pub stamp_window: u64,
    /// Default confirmation depth.
    pub confirmation_depth: u64,
    /// Blocks between a claim's commitment and its earliest reveal.
    pub claim_maturity: u64,
    /// Blocks after which a commitment can no longer be revealed (and a
    /// claimed name is settled).
    pub claim_expiry: u64,
    /// Longest name.
    pub max_name_len: usize,
    /// Longest value.
    pub max_value_len: usize,
    /// Most owners.
    pub max_owners: usize,
    /// Least cumulative work of a chain treated as the network's, hex
    /// (big-endian, 32 bytes).
    #[serde(default)]
    pub min_chain_work: String,
    /// The network's assumed-valid block, if it has one.
    #[serde(default)]
    pub assume_valid: Option<CheckpointView>,
}

/// A compiled checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Height.
    pub height: u64,
    /// Block hash.
    pub hash: String,
}

impl ParamsView {
    /// From parameters.
    pub fn new(p: &Params) -> Self {
        ParamsView {
            network: p.name.into(),
            genesis_hash: p.genesis_hash.to_hex(),
            block_interval: p.block_interval,
            stamp_target: hex::encode(p.stamp_target.to_be_bytes()),
            stamp_window: p.stamp_window,
            confirmation_depth: p.confirmation_depth,
            claim_maturity: p.claim_maturity,
            claim_expiry: p.claim_expiry,
            max_name_len: p.max_name_len,
            max_value_len: p.max_value_len,
            max_owners: p.max_owners,
            min_chain_work: hex::encode(p.min_chain_work.to_be_bytes()),
            assume_valid: p.assume_valid.map(|c| CheckpointView {
                height: c.height,
                hash: c.hash.to_hex(),
            }),
        }
    }
}

/// `node_info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfoView {
    /// Network.
    pub network: String,
    /// Software version.
    pub version: String,
    /// Tip height.
    pub height: u64,
    /// Tip hash.
    pub tip: String,
    /// Pending ops.
    pub mempool_ops: usize,
    /// Pending bytes.
    pub mempool_bytes: usize,
    /// Blocks waiting for their parent.
    pub orphans: usize,
    /// Mining threads (0: not mining).
    pub mining_threads: usize,
}

/// Counters since start (for `net_info` and tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetStats {
    /// Gossiped blocks accepted (and so forwarded).
    pub blocks_accepted: u64,
    /// Gossiped blocks rejected as invalid (not forwarded).
    pub blocks_rejected: u64,
    /// Gossiped ops accepted.
    pub ops_accepted: u64,
    /// Gossiped ops rejected as invalid.
    pub ops_rejected: u64,
    /// Gossip messages that did not decode.
    pub garbage: u64,
    /// Blocks connected through sync.
    pub synced_blocks: u64,
    /// Peers banned.
    pub bans: u64,
    /// Gossip messages dropped unvalidated because the validation queue
    /// (overall or the sender's share) was full.
    #[serde(default)]
    pub gossip_dropped: u64,
    /// Sync requests refused because the peer exceeded its rate.
    #[serde(default)]
    pub requests_limited: u64,
    /// Inbound peers disconnected to make room (or turned away) when the
    /// inbound slots were full.
    #[serde(default)]
    pub evicted: u64,
    /// Gossiped blocks whose parent we lacked, held until it arrives.
    #[serde(default)]
    pub orphans_held: u64,
    /// Gossiped orphan blocks dropped unheld: the sender was over its
    /// allowance (16 a minute).
    #[serde(default)]
    pub orphans_dropped: u64,
    /// Held orphans that never connected (their senders are penalised).
    #[serde(default)]
    pub orphans_never_connected: u64,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    /// Peer id.
    pub peer_id: String,
    /// Address of the connection.
    pub addr: String,
    /// Score (0 is neutral; banned at -100).
    pub score: i32,
    /// Height it last reported.
    pub height: Option<u64>,
}

/// `net_info`: network status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetInfo {
    /// This node's peer id.
    pub peer_id: String,
    /// Addresses it listens on, each ending in `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerView>,
    /// Currently banned peer ids.
    pub banned: Vec<String>,
    /// Peer being synced from, if any.
    pub syncing_from: Option<String>,
    /// Counters.
    pub stats: NetStats,
}
