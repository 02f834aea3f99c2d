//! A stand-in directory node that serves a long synthetic header chain, for
//! measuring the light client at heights a regtest node cannot reach
//! quickly (regtest mining runs at most about 259,000 blocks ahead of the
//! clock, then waits for it).
//!
//! The chain is real as far as a light client can tell: every header is
//! mined for regtest and checked with [`ChainState::push`]; the blocks are
//! empty (the state root stays that of the empty tree), stamped one second
//! apart from genesis, so the chain is on the difficulty schedule. Only the
//! methods a light client syncs with are served: `dir_params`, `chain_tip`,
//! `chain_headers` and `chain_headers_compact`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use jsonrpsee::server::{RpcModule, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use xirtam_node_api::types::{ParamsView, TipView};
use xirtam_node_api::wire::encode_compact_headers;
use xirtam_proofs::header::{ChainState, Header, header_template, mine};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::EMPTY_ROOT;

/// `count` empty blocks on top of `params`' genesis (genesis included in
/// the result), with the chain state after the last.
pub fn synthetic_chain(params: &Params, count: u64) -> Result<(Vec<Header>, ChainState)> {
    let mut state = ChainState::genesis(params);
    let mut headers = Vec::with_capacity(usize::try_from(count)?.saturating_add(1));
    headers.push(params.genesis_header());
    for _ in 0..count {
        let time = params
            .genesis_time
            .saturating_add(state.tip_height.saturating_add(1))
            .max(state.median_time_past().saturating_add(1));
        let mut h = header_template(params, &state, time);
        h.state_root = EMPTY_ROOT;
        anyhow::ensure!(mine(&mut h, 0, 1 << 32), "no nonce meets the target");
        state
            .push(params, &h, u64::MAX)
            .context("a synthetic header is valid")?;
        headers.push(h);
    }
    Ok((headers, state))
}

struct Chain {
    params: &'static Params,
    headers: Vec<Header>,
    tip: TipView,
}

impl Chain {
    fn range(&self, from: u64, count: u32) -> &[Header] {
        let count = count.min(xirtam_node_api::MAX_HEADERS_PER_CALL) as usize;
        let from = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(self.headers.len());
        &self.headers[from..from.saturating_add(count).min(self.headers.len())]
    }
}

/// Serve `headers` (genesis first) on a free loopback port.
pub async fn serve_headers(
    params: &'static Params,
    headers: Vec<Header>,
    state: &ChainState,
) -> Result<(SocketAddr, ServerHandle)> {
    let last = *headers.last().context("at least genesis")?;
    let tip = TipView::new(&last, state.total_work());
    let mut module = RpcModule::new(Chain {
        params,
        headers,
        tip,
    });
    module.register_method("dir_params", |_, c, _| {
        Ok::<_, ErrorObjectOwned>(ParamsView::new(c.params))
    })?;
    module.register_method("chain_tip", |_, c, _| {
        Ok::<_, ErrorObjectOwned>(c.tip.clone())
    })?;
    module.register_method("chain_headers", |p, c, _| {
        let (from, count): (u64, u32) = p.parse()?;
        Ok::<_, ErrorObjectOwned>(
            c.range(from, count)
                .iter()
                .map(|h| hex::encode(h.to_bytes()))
                .collect::<Vec<_>>(),
        )
    })?;
    module.register_method("chain_headers_compact", |p, c, _| {
        use base64::Engine as _;
        let (from, count): (u64, u32) = p.parse()?;
        Ok::<_, ErrorObjectOwned>(
            base64::engine::general_purpose::STANDARD
                .encode(encode_compact_headers(c.range(from, count))),
        )
    })?;
    let server = Server::builder()
        .build("127.0.0.1:0")
        .await
        .context("bind loopback")?;
    let addr = server.local_addr().context("bound address")?;
    Ok((addr, server.start(module)))
}
