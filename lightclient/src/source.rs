//! Sources: the directory nodes a light client asks. Nothing a source says
//! is believed: this module only decodes answers into typed values (with
//! size limits); [`crate::client`] verifies them.
//!
//! [`Source`] is the seam between verification and the network: the client
//! is generic over it, [`HttpSource`] speaks the node's JSON-RPC
//! (docs/rpc.md), and tests use in-memory sources that replay or corrupt
//! data.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonrpsee::core::client::{ClientT, Error as RpcClientError};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use serde::Deserialize;
use serde_json::value::RawValue;
use xirtam_proofs::header::{HEADER_LEN, Header};
use xirtam_proofs::op::{Op, Record};
use xirtam_proofs::state::StateProof;
use xirtam_proofs::{Hash, Name, U256, decode, encode};

/// Most headers one `chain_headers` call returns (the node's cap).
pub const MAX_HEADERS_PER_CALL: u32 = 2000;

/// Largest JSON-RPC response accepted from a source (bytes). A full
/// `chain_headers` batch is about 650 KB; a `dir_get` a few KB.
pub const MAX_RESPONSE_BYTES: u32 = 4 * 1024 * 1024;

/// What went wrong talking to a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source could not be reached or did not answer in time. Not a
    /// fault: it may be down.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The source answered with a JSON-RPC error.
    #[error("error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code (docs/rpc.md).
        code: i32,
        /// Its message.
        message: String,
    },
    /// The answer does not decode: the source is faulty.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl SourceError {
    /// Does this error show the source misbehaving (rather than being down
    /// or not having the data)?
    pub fn is_fault(&self) -> bool {
        matches!(self, SourceError::Malformed(_))
    }
}

/// A source's claimed tip. Unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipClaim {
    /// Claimed height.
    pub height: u64,
    /// Claimed tip hash.
    pub hash: Hash,
    /// Claimed cumulative work.
    pub work: U256,
    /// The tip header as sent.
    pub header: Header,
}

/// A source's answer to `dir_get`. Unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirAnswer {
    /// Height it claims the proof is at.
    pub height: u64,
    /// Hash of the block it claims the proof is against.
    pub block_hash: Hash,
    /// The record, or `None` for claimed absence.
    pub record: Option<Record>,
    /// The state proof.
    pub proof: StateProof,
}

/// A source's answer to `dir_commitment`. Unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAnswer {
    /// Height it claims the proof is at.
    pub height: u64,
    /// Hash of the block it claims the proof is against.
    pub block_hash: Hash,
    /// The height the commitment was mined at, or `None` for claimed
    /// absence.
    pub mined_at: Option<u64>,
    /// The state proof.
    pub proof: StateProof,
}

/// A directory node, as the light client sees it.
///
/// Implementations decode but never verify; every method must be bounded in
/// time and size.
pub trait Source: Send + Sync {
    /// A label for logs and errors (the URL).
    fn label(&self) -> &str;
    /// Genesis hash of the network the source runs (`dir_params`).
    fn genesis(&self) -> impl Future<Output = Result<Hash, SourceError>> + Send;
    /// The source's tip (`chain_tip`).
    fn tip(&self) -> impl Future<Output = Result<TipClaim, SourceError>> + Send;
    /// Main-chain headers `from..from+count` (`chain_headers`); fewer at the
    /// source's tip.
    fn headers(
        &self,
        from: u64,
        count: u32,
    ) -> impl Future<Output = Result<Vec<Header>, SourceError>> + Send;
    /// Record and proof of `name` at main-chain height `at` (`dir_get`).
    fn dir_get(
        &self,
        name: &Name,
        at: u64,
    ) -> impl Future<Output = Result<DirAnswer, SourceError>> + Send;
    /// Whether a claim commitment is in the state at main-chain height
    /// `at`, with its proof (`dir_commitment`).
    fn commitment(
        &self,
        commitment: &Hash,
        at: u64,
    ) -> impl Future<Output = Result<CommitAnswer, SourceError>> + Send {
        let _ = (commitment, at);
        async {
            Err(SourceError::Rpc {
                code: -32601,
                message: "this source does not prove commitments".into(),
            })
        }
    }
    /// Hand a signed op to the source for its mempool (`dir_submit`). The
    /// answer only says whether the source took it; whether it lands is
    /// seen later through verified lookups.
    fn submit(&self, op: &Op) -> impl Future<Output = Result<(), SourceError>> + Send {
        let _ = op;
        async {
            Err(SourceError::Rpc {
                code: -32601,
                message: "this source does not take ops".into(),
            })
        }
    }
    /// Bytes received from this source so far.
    fn bytes_received(&self) -> u64;
}

/// A node's JSON-RPC endpoint over HTTP.
#[derive(Debug, Clone)]
pub struct HttpSource {
    url: String,
    client: HttpClient,
    received: Arc<AtomicU64>,
}

/// Bytes of HTTP and JSON-RPC framing around a result, added to the count
/// (the client library hands over only the `result` member).
const ENVELOPE_BYTES: u64 = 200;

impl HttpSource {
    /// A source at `url` (`http://host:port`), with a per-request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SourceError> {
        let client = HttpClientBuilder::default()
            .request_timeout(timeout)
            .max_response_size(MAX_RESPONSE_BYTES)
            .build(url)
            .map_err(|e| SourceError::Unreachable(format!("bad URL {url}: {e}")))?;
        Ok(HttpSource {
            url: url.to_owned(),
            client,
            received: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: jsonrpsee::core::params::ArrayParams,
    ) -> Result<T, SourceError> {
        let raw: Box<RawValue> =
            self.client
                .request(method, params)
                .await
                .map_err(|e| match e {
                    RpcClientError::Call(c) => SourceError::Rpc {
                        code: c.code(),
                        message: c.message().to_owned(),
                    },
                    RpcClientError::ParseError(p) => {
                        SourceError::Malformed(format!("{method}: not JSON-RPC: {p}"))
                    }
                    other => SourceError::Unreachable(format!("{method}: {other}")),
                })?;
        self.received
            .fetch_add(raw.get().len() as u64 + ENVELOPE_BYTES, Ordering::Relaxed);
        serde_json::from_str(raw.get())
            .map_err(|e| SourceError::Malformed(format!("{method}: unexpected shape: {e}")))
    }
}

/// `chain_tip` as sent (docs/rpc.md).
#[derive(Deserialize)]
struct TipWire {
    height: u64,
    hash: String,
    header: String,
    work: String,
}

/// `dir_get` as sent; the JSON views beside the bytes are ignored.
#[derive(Deserialize)]
struct DirGetWire {
    height: u64,
    block_hash: String,
    record: Option<RecordWire>,
    proof: String,
}

/// `dir_commitment` as sent.
#[derive(Deserialize)]
struct CommitWire {
    height: u64,
    block_hash: String,
    mined_at: Option<u64>,
    proof: String,
}

#[derive(Deserialize)]
struct RecordWire {
    bytes: String,
}

/// `dir_params`, the one field used.
#[derive(Deserialize)]
struct ParamsWire {
    genesis_hash: String,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Malformed(format!("{what}: {e}"))
}

fn hash_hex(what: &str, s: &str) -> Result<Hash, SourceError> {
    Hash::from_hex(s).map_err(|e| malformed(what, e))
}

/// Decode hex of canonical bytes, refusing more than `max` bytes before
/// decoding.
fn decode_hex_capped<T: bincode::Decode<()>>(
    what: &str,
    s: &str,
    max: usize,
) -> Result<T, SourceError> {
    if s.len() > 2 * max {
        return Err(malformed(what, format!("longer than {max} bytes")));
    }
    let bytes = hex::decode(s).map_err(|e| malformed(what, e))?;
    decode(&bytes).map_err(|e| malformed(what, e))
}

/// Decode one header from hex.
pub fn header_from_hex(s: &str) -> Result<Header, SourceError> {
    decode_hex_capped("header", s, HEADER_LEN)
}

/// Largest record or proof accepted (bytes): a 4 KB value, 16 owners and a
/// proof of 256 siblings fit well inside.
const MAX_OBJECT_BYTES: usize = 16 * 1024;

impl Source for HttpSource {
    fn label(&self) -> &str {
        &self.url
    }

    async fn genesis(&self) -> Result<Hash, SourceError> {
        let p: ParamsWire = self.call("dir_params", rpc_params![]).await?;
        hash_hex("genesis hash", &p.genesis_hash)
    }

    async fn tip(&self) -> Result<TipClaim, SourceError> {
        let t: TipWire = self.call("chain_tip", rpc_params![]).await?;
        let work = hex::decode(&t.work)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| malformed("tip work", "not 32 bytes of hex"))?;
        Ok(TipClaim {
            height: t.height,
            hash: hash_hex("tip hash", &t.hash)?,
            work: U256::from_be_bytes(work),
            header: header_from_hex(&t.header)?,
        })
    }

    async fn headers(&self, from: u64, count: u32) -> Result<Vec<Header>, SourceError> {
        let count = count.min(MAX_HEADERS_PER_CALL);
        let hs: Vec<String> = self.call("chain_headers", rpc_params![from, count]).await?;
        if hs.len() > count as usize {
            return Err(malformed(
                "chain_headers",
                format!("{} headers for {count} asked", hs.len()),
            ));
        }
        hs.iter().map(|h| header_from_hex(h)).collect()
    }

    async fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        let d: DirGetWire = self
            .call("dir_get", rpc_params![name.to_string(), at])
            .await?;
        let record = match &d.record {
            None => None,
            Some(r) => Some(decode_hex_capped("record", &r.bytes, MAX_OBJECT_BYTES)?),
        };
        Ok(DirAnswer {
            height: d.height,
            block_hash: hash_hex("block hash", &d.block_hash)?,
            record,
            proof: decode_hex_capped("proof", &d.proof, MAX_OBJECT_BYTES)?,
        })
    }

    async fn commitment(&self, commitment: &Hash, at: u64) -> Result<CommitAnswer, SourceError> {
        let d: CommitWire = self
            .call("dir_commitment", rpc_params![commitment.to_hex(), at])
            .await?;
        Ok(CommitAnswer {
            height: d.height,
            block_hash: hash_hex("block hash", &d.block_hash)?,
            mined_at: d.mined_at,
            proof: decode_hex_capped("proof", &d.proof, MAX_OBJECT_BYTES)?,
        })
    }

    async fn submit(&self, op: &Op) -> Result<(), SourceError> {
        let _: serde_json::Value = self
            .call("dir_submit", rpc_params![hex::encode(encode(op))])
            .await?;
        Ok(())
    }

    fn bytes_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
