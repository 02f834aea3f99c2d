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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jsonrpsee::core::client::{BatchResponse, ClientT, Error as RpcClientError};
use jsonrpsee::core::params::BatchRequestBuilder;
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use xirtam_node_api::NodeApiClient;
use xirtam_node_api::code;
use xirtam_node_api::wire::{WireError, decode_compact_headers, header_from_hex};
use xirtam_proofs::header::Header;
use xirtam_proofs::op::{Op, Record};
use xirtam_proofs::state::StateProof;
use xirtam_proofs::{Hash, Name, U256, encode};

pub use xirtam_node_api::MAX_HEADERS_PER_CALL;

/// Largest JSON-RPC response accepted from a source (bytes). A full
/// `chain_headers_compact` batch is about 310 KB (`chain_headers`, for
/// nodes without it, about 650 KB); a `dir_get` a few KB. Only the
/// `result` is counted in [`Source::bytes_received`], so this also bounds
/// what padding around it can cost per call.
pub const MAX_RESPONSE_BYTES: u32 = 1024 * 1024;

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
    /// Main-chain headers `from..from+count` (`chain_headers_compact`, or
    /// `chain_headers` from a node without it); fewer at the source's tip.
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

impl From<WireError> for SourceError {
    fn from(e: WireError) -> Self {
        SourceError::Malformed(e.to_string())
    }
}

/// A node's JSON-RPC endpoint over HTTP, called through the node's own
/// API trait (`xirtam-node-api`).
#[derive(Debug, Clone)]
pub struct HttpSource {
    url: String,
    client: CountingClient,
    /// The node does not know `chain_headers_compact`: ask for hex.
    no_compact: Arc<AtomicBool>,
}

/// An HTTP JSON-RPC client that counts the bytes of every result it
/// receives (the generated [`NodeApiClient`] methods run on top of it).
#[derive(Debug, Clone)]
struct CountingClient {
    inner: HttpClient,
    received: Arc<AtomicU64>,
}

/// Bytes of HTTP and JSON-RPC framing around a result, added to the count
/// (the client library hands over only the `result` member).
const ENVELOPE_BYTES: u64 = 200;

impl ClientT for CountingClient {
    async fn notification<Params>(&self, method: &str, params: Params) -> Result<(), RpcClientError>
    where
        Params: ToRpcParams + Send,
    {
        self.inner.notification(method, params).await
    }

    async fn request<R, Params>(&self, method: &str, params: Params) -> Result<R, RpcClientError>
    where
        R: DeserializeOwned,
        Params: ToRpcParams + Send,
    {
        let raw: Box<RawValue> = self.inner.request(method, params).await?;
        self.received
            .fetch_add(raw.get().len() as u64 + ENVELOPE_BYTES, Ordering::Relaxed);
        serde_json::from_str(raw.get()).map_err(RpcClientError::ParseError)
    }

    async fn batch_request<'a, R>(
        &self,
        batch: BatchRequestBuilder<'a>,
    ) -> Result<BatchResponse<'a, R>, RpcClientError>
    where
        R: DeserializeOwned + std::fmt::Debug + 'a,
    {
        self.inner.batch_request(batch).await
    }
}

impl HttpSource {
    /// A source at `url` (`http://host:port`), with a per-request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SourceError> {
        let inner = HttpClientBuilder::default()
            .request_timeout(timeout)
            .max_response_size(MAX_RESPONSE_BYTES)
            .build(url)
            .map_err(|e| SourceError::Unreachable(format!("bad URL {url}: {e}")))?;
        Ok(HttpSource {
            url: url.to_owned(),
            client: CountingClient {
                inner,
                received: Arc::new(AtomicU64::new(0)),
            },
            no_compact: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A failed call, as a [`SourceError`].
fn call_err(method: &str, e: RpcClientError) -> SourceError {
    match e {
        RpcClientError::Call(c) => SourceError::Rpc {
            code: c.code(),
            message: c.message().to_owned(),
        },
        RpcClientError::ParseError(p) => {
            SourceError::Malformed(format!("{method}: unexpected answer: {p}"))
        }
        other => SourceError::Unreachable(format!("{method}: {other}")),
    }
}

impl Source for HttpSource {
    fn label(&self) -> &str {
        &self.url
    }

    async fn genesis(&self) -> Result<Hash, SourceError> {
        let p = self
            .client
            .dir_params()
            .await
            .map_err(|e| call_err("dir_params", e))?;
        Ok(p.decode_genesis()?)
    }

    async fn tip(&self) -> Result<TipClaim, SourceError> {
        let t = self
            .client
            .chain_tip()
            .await
            .map_err(|e| call_err("chain_tip", e))?;
        let header = t.decode_header()?;
        Ok(TipClaim {
            height: t.height,
            hash: header.hash(),
            work: t.decode_work()?,
            header,
        })
    }

    async fn headers(&self, from: u64, count: u32) -> Result<Vec<Header>, SourceError> {
        let count = count.min(MAX_HEADERS_PER_CALL);
        if !self.no_compact.load(Ordering::Relaxed) {
            match self.client.chain_headers_compact(from, count).await {
                Ok(s) => return Ok(decode_compact_headers(&s, count as usize)?),
                Err(RpcClientError::Call(c)) if c.code() == code::METHOD_NOT_FOUND => {
                    // A node from before compact batches: hex from now on.
                    self.no_compact.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(call_err("chain_headers_compact", e)),
            }
        }
        let hs = self
            .client
            .chain_headers(from, count)
            .await
            .map_err(|e| call_err("chain_headers", e))?;
        if hs.len() > count as usize {
            return Err(SourceError::Malformed(format!(
                "chain_headers: {} headers for {count} asked",
                hs.len()
            )));
        }
        Ok(hs
            .iter()
            .map(|h| header_from_hex(h))
            .collect::<Result<_, _>>()?)
    }

    async fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        let d = self
            .client
            .dir_get(name.to_string(), Some(at))
            .await
            .map_err(|e| call_err("dir_get", e))?;
        Ok(DirAnswer {
            height: d.height,
            block_hash: d.decode_block_hash()?,
            record: d.decode_record()?,
            proof: d.decode_proof()?,
        })
    }

    async fn commitment(&self, commitment: &Hash, at: u64) -> Result<CommitAnswer, SourceError> {
        let d = self
            .client
            .dir_commitment(commitment.to_hex(), Some(at))
            .await
            .map_err(|e| call_err("dir_commitment", e))?;
        Ok(CommitAnswer {
            height: d.height,
            block_hash: d.decode_block_hash()?,
            mined_at: d.mined_at,
            proof: d.decode_proof()?,
        })
    }

    async fn submit(&self, op: &Op) -> Result<(), SourceError> {
        self.client
            .dir_submit(hex::encode(encode(op)))
            .await
            .map_err(|e| call_err("dir_submit", e))?;
        Ok(())
    }

    fn bytes_received(&self) -> u64 {
        self.client.received.load(Ordering::Relaxed)
    }
}
