//! The JSON-RPC 2.0 server (jsonrpsee, HTTP). The contract itself - the
//! method trait, wire types, error codes and limits - lives in the
//! `xirtam-node-api` crate, shared with every client; this module
//! implements it over the node. Documented in `docs/rpc.md`.

use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::core::RpcResult;
use jsonrpsee::server::{Server, ServerConfig, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use xirtam_proofs::block::Block;
use xirtam_proofs::op::Op;
use xirtam_proofs::{Hash, Name, decode_hex, encode};

pub use xirtam_node_api::*;

use crate::chain::{BlockMeta, BlockStatus, ChainError};
use crate::mempool::{Admitted, MempoolError};
use crate::node::Node;
use crate::p2p::{P2pError, P2pHandle};
use crate::store::KvStore;
use libp2p::{Multiaddr, PeerId};
use xirtam_proofs::params::REGTEST;

/// How long `dev_mine` waits for the clock to allow a block.
const DEV_MINE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The `chain_tip` view of a block.
pub fn tip_view(m: &BlockMeta) -> TipView {
    TipView::new(&m.header, m.work())
}

fn err(code: i32, msg: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg, None::<()>)
}

fn err_data(code: i32, msg: impl Into<String>, data: serde_json::Value) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg, Some(data))
}

fn chain_err(e: ChainError) -> ErrorObjectOwned {
    match &e {
        ChainError::NotFound(_) => err(code::NOT_FOUND, e.to_string()),
        ChainError::Store(_) | ChainError::Tree(_) | ChainError::Internal(_) => {
            tracing::error!(target: "rpc", error = %e, "internal error");
            err(code::INTERNAL, format!("internal error: {e}"))
        }
        // Every other error is about the submitted block (including a
        // future timestamp, which is not remembered but still refused now).
        _ => err(code::INVALID_BLOCK, e.to_string()),
    }
}

/// The height a proof is asked at (default: the tip), which must be stored.
fn proof_height(tip: u64, at_height: Option<u64>) -> RpcResult<u64> {
    let height = at_height.unwrap_or(tip);
    if height > tip {
        return Err(err(
            code::NOT_FOUND,
            format!("height {height} is above the tip ({tip})"),
        ));
    }
    Ok(height)
}

fn parse_name(key: &str) -> RpcResult<Name> {
    Name::new(key).map_err(|e| err(code::INVALID_PARAMS, format!("invalid name {key:?}: {e}")))
}

/// The RPC server's state.
#[derive(Debug)]
pub struct RpcImpl<S: KvStore> {
    node: Arc<Node<S>>,
    mining_threads: usize,
    p2p: Option<P2pHandle>,
}

impl<S: KvStore> RpcImpl<S> {
    fn p2p(&self) -> RpcResult<&P2pHandle> {
        self.p2p.as_ref().ok_or_else(|| {
            err(
                code::NETWORK_UNAVAILABLE,
                "peer-to-peer networking is off on this node",
            )
        })
    }

    /// Up to `count` (capped) main-chain headers from height `from`.
    fn main_headers(&self, from: u64, count: u32) -> Vec<xirtam_proofs::header::Header> {
        let count = count.min(MAX_HEADERS_PER_CALL);
        let core = self.node.lock();
        let mut out = Vec::with_capacity(count as usize);
        for h in from..from.saturating_add(u64::from(count)) {
            let Some(hash) = core.chain.hash_at(h) else {
                break;
            };
            let Some(meta) = core.chain.meta(&hash) else {
                break;
            };
            out.push(meta.header);
        }
        out
    }
}

fn p2p_err(e: P2pError) -> ErrorObjectOwned {
    match e {
        P2pError::Dial(_) => err(code::INVALID_PARAMS, e.to_string()),
        _ => err(code::NETWORK_UNAVAILABLE, e.to_string()),
    }
}

#[jsonrpsee::core::async_trait]
impl<S: KvStore> NodeApiServer for RpcImpl<S> {
    fn chain_tip(&self) -> RpcResult<TipView> {
        let core = self.node.lock();
        Ok(tip_view(core.chain.tip()))
    }

    fn chain_headers(&self, from: u64, count: u32) -> RpcResult<Vec<String>> {
        Ok(self
            .main_headers(from, count)
            .iter()
            .map(|h| hex::encode(h.to_bytes()))
            .collect())
    }

    fn chain_headers_compact(&self, from: u64, count: u32) -> RpcResult<String> {
        use base64::Engine as _;
        let headers = self.main_headers(from, count);
        Ok(base64::engine::general_purpose::STANDARD
            .encode(xirtam_node_api::wire::encode_compact_headers(&headers)))
    }

    fn chain_block(&self, which: HeightOrHash) -> RpcResult<BlockView> {
        let core = self.node.lock();
        let hash = match &which {
            HeightOrHash::Height(h) => core.chain.hash_at(*h).ok_or_else(|| {
                err(
                    code::NOT_FOUND,
                    format!("no block at height {h} (tip {})", core.chain.height()),
                )
            })?,
            HeightOrHash::Hash(s) => {
                Hash::from_hex(s).map_err(|e| err(code::INVALID_PARAMS, e.to_string()))?
            }
        };
        let block = core
            .chain
            .block(&hash)
            .map_err(chain_err)?
            .ok_or_else(|| err(code::NOT_FOUND, format!("block {hash} not found")))?;
        Ok(BlockView::new(&block, core.chain.is_main(&hash)))
    }

    fn chain_submit_block(&self, block: String) -> RpcResult<SubmitBlockView> {
        let block: Block =
            decode_hex(&block).map_err(|e| err(code::INVALID_PARAMS, e.to_string()))?;
        let hash = block.header.hash();
        let out = self.node.submit_local_block(block).map_err(chain_err)?;
        let status = match out.status {
            BlockStatus::Tip => "tip",
            BlockStatus::SideBranch => "side-branch",
            BlockStatus::AlreadyKnown => "already-known",
            BlockStatus::Orphan => "orphan",
            BlockStatus::Held => "held",
        };
        Ok(SubmitBlockView {
            hash: hash.to_hex(),
            status: status.into(),
        })
    }

    fn dir_get(&self, key: String, at_height: Option<u64>) -> RpcResult<DirGetView> {
        let name = parse_name(&key)?;
        let core = self.node.lock();
        let height = proof_height(core.chain.height(), at_height)?;
        let (header, record, proof) = core.chain.prove(&name, height).map_err(chain_err)?;
        Ok(DirGetView {
            key: name.to_string(),
            height,
            block_hash: header.hash().to_hex(),
            header: hex::encode(header.to_bytes()),
            state_root: header.state_root.to_hex(),
            record: record.as_ref().map(RecordView::new),
            proof: hex::encode(encode(&proof)),
            tip_height: core.chain.height(),
        })
    }

    fn dir_commitment(
        &self,
        commitment: String,
        at_height: Option<u64>,
    ) -> RpcResult<DirCommitmentView> {
        let c = Hash::from_hex(&commitment).map_err(|e| {
            err(
                code::INVALID_PARAMS,
                format!("invalid commitment {commitment:?}: {e}"),
            )
        })?;
        let core = self.node.lock();
        let height = proof_height(core.chain.height(), at_height)?;
        let (header, mined_at, proof) =
            core.chain.prove_commitment(&c, height).map_err(chain_err)?;
        Ok(DirCommitmentView {
            commitment: c.to_hex(),
            height,
            block_hash: header.hash().to_hex(),
            header: hex::encode(header.to_bytes()),
            state_root: header.state_root.to_hex(),
            mined_at,
            proof: hex::encode(encode(&proof)),
            tip_height: core.chain.height(),
        })
    }

    fn dir_submit(&self, op: String) -> RpcResult<SubmitOpView> {
        let op: Op = decode_hex(&op).map_err(|e| err(code::INVALID_PARAMS, e.to_string()))?;
        let hash = op.hash();
        match self.node.submit_local_op(op) {
            Ok(a) => Ok(SubmitOpView {
                op_hash: hash.to_hex(),
                status: match a {
                    Admitted::New => "pending",
                    Admitted::Replaced => "replaced",
                }
                .into(),
            }),
            Err(MempoolError::Invalid(e)) => Err(err_data(
                code::INVALID_OP,
                format!("invalid op: {e}"),
                serde_json::json!({ "rule": op_rule(&e) }),
            )),
            Err(e @ MempoolError::Internal(_)) => Err(err(code::INTERNAL, e.to_string())),
            Err(e) => {
                let reason = match e {
                    MempoolError::Duplicate => "duplicate",
                    MempoolError::Full { .. } => "full",
                    _ => "conflict",
                };
                Err(err_data(
                    code::MEMPOOL_REJECTED,
                    e.to_string(),
                    serde_json::json!({ "reason": reason }),
                ))
            }
        }
    }

    fn dir_params(&self) -> RpcResult<ParamsView> {
        Ok(ParamsView::new(self.node.params()))
    }

    fn node_info(&self) -> RpcResult<NodeInfoView> {
        let core = self.node.lock();
        Ok(NodeInfoView {
            network: self.node.params().name.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            height: core.chain.height(),
            tip: core.chain.tip().header.hash().to_hex(),
            mempool_ops: core.mempool.len(),
            mempool_bytes: core.mempool.bytes(),
            orphans: core.chain.orphan_count(),
            mining_threads: self.mining_threads,
        })
    }

    async fn net_info(&self) -> RpcResult<NetInfo> {
        self.p2p()?.info().await.map_err(p2p_err)
    }

    async fn net_connect(&self, addr: String) -> RpcResult<bool> {
        let addr: Multiaddr = addr.parse().map_err(|e| {
            err(
                code::INVALID_PARAMS,
                format!("invalid multiaddr {addr:?}: {e}"),
            )
        })?;
        self.p2p()?.dial(addr).await.map_err(p2p_err)?;
        Ok(true)
    }

    async fn net_ban(&self, peer_id: String) -> RpcResult<bool> {
        let peer: PeerId = peer_id.parse().map_err(|e| {
            err(
                code::INVALID_PARAMS,
                format!("invalid peer id {peer_id:?}: {e}"),
            )
        })?;
        self.p2p()?.ban(peer).await.map_err(p2p_err)?;
        Ok(true)
    }

    fn dev_mine(&self, count: u32) -> RpcResult<u64> {
        if self.node.params().name != REGTEST.name {
            return Err(err(
                code::DEV_ONLY,
                format!(
                    "dev_mine only works on regtest (this node runs {})",
                    self.node.params().name
                ),
            ));
        }
        if count > MAX_DEV_MINE {
            return Err(err(
                code::INVALID_PARAMS,
                format!("count {count} is above the limit of {MAX_DEV_MINE}"),
            ));
        }
        let mut height = self.node.tip_summary().height;
        for _ in 0..count {
            height = self
                .node
                .mine_block_within(DEV_MINE_WAIT)
                .map_err(chain_err)?
                .ok_or_else(|| {
                    err(
                        code::CLOCK_BEHIND,
                        format!(
                            "cannot mine at height {}: the chain's timestamps are ahead of this node's clock",
                            height + 1
                        ),
                    )
                })?
                .header
                .height;
        }
        Ok(height)
    }
}

/// Start the RPC server on `addr` (port 0 picks a free port). Returns the
/// bound address and the handle that stops it.
pub async fn serve<S: KvStore>(
    node: Arc<Node<S>>,
    addr: SocketAddr,
    mining_threads: usize,
    p2p: Option<P2pHandle>,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .max_connections(256)
        .http_only()
        .build();
    let server = Server::builder().set_config(config).build(addr).await?;
    let bound = server.local_addr()?;
    let handle = server.start(
        RpcImpl {
            node,
            mining_threads,
            p2p,
        }
        .into_rpc(),
    );
    tracing::info!(target: "rpc", %bound, "JSON-RPC listening");
    Ok((bound, handle))
}
