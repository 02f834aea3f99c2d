//! The user side of the CLI: build an op, solve its stamp, submit it, wait
//! for confirmations; fetch a record and check its proof.
//!
//! The node is trusted here only to be live: the proof returned by
//! `dir_get` is checked against the header the node returned. Trustless
//! lookups (headers verified from genesis, several nodes) are the light
//! client's job.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use xirtam_proofs::header::Header;
use xirtam_proofs::op::{Op, Owners, Record, Value};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{StateProof, verify_state};
use xirtam_proofs::{Hash, Name, SecretKey, decode_hex, encode};

use crate::rpc::{DirGetView, NodeApiClient};

/// An HTTP JSON-RPC client for `url`.
pub fn connect(url: &str) -> Result<HttpClient> {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .max_request_size(crate::rpc::MAX_REQUEST_BYTES)
        .build(url)
        .with_context(|| format!("cannot use RPC URL {url}"))
}

/// A record checked against the header the node gave.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The record, or `None` when absence was proven.
    pub record: Option<Record>,
    /// The header it was proven against.
    pub header: Header,
    /// The node's tip height then.
    pub tip_height: u64,
}

/// Parse and check a `dir_get` answer: the record bytes decode, the header
/// is the one named, and the proof verifies against its `state_root`.
pub fn check_dir_get(name: &Name, v: &DirGetView) -> Result<Checked> {
    let header: Header = decode_hex(&v.header).context("node sent a malformed header")?;
    if header.hash().to_hex() != v.block_hash || header.height != v.height {
        bail!("node sent a header that is not the block it named");
    }
    let record: Option<Record> = match &v.record {
        None => None,
        Some(r) => Some(decode_hex(&r.bytes).context("node sent a malformed record")?),
    };
    let proof: StateProof = decode_hex(&v.proof).context("node sent a malformed proof")?;
    verify_state(&header.state_root, name, record.as_ref(), &proof)
        .map_err(|e| anyhow!("the node's proof for {name} does not verify: {e}"))?;
    Ok(Checked {
        record,
        header,
        tip_height: v.tip_height,
    })
}

/// Fetch and check the record of `name` at `at` (default: tip).
pub async fn get(client: &HttpClient, name: &Name, at: Option<u64>) -> Result<Checked> {
    let v = client
        .dir_get(name.to_string(), at)
        .await
        .with_context(|| format!("dir_get {name}"))?;
    check_dir_get(name, &v)
}

/// The network the node runs.
pub async fn network(client: &HttpClient) -> Result<&'static Params> {
    let p = client.dir_params().await.context("dir_params")?;
    Params::by_name(&p.network).ok_or_else(|| anyhow!("node runs unknown network {:?}", p.network))
}

/// What [`write`] should do.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// Name to write.
    pub name: Name,
    /// New value.
    pub value: Vec<u8>,
    /// New owners (default: the signer).
    pub owners: Vec<xirtam_proofs::PublicKey>,
    /// Must the name be unclaimed (claim) or claimed (update)?
    pub claim: bool,
}

/// Build, stamp and submit an op; returns it.
pub async fn write(client: &HttpClient, key: &SecretKey, req: &WriteRequest) -> Result<Op> {
    let params = network(client).await?;
    let current = get(client, &req.name, None).await?;
    match (&current.record, req.claim) {
        (Some(r), true) => bail!(
            "{} is already claimed (owners {}); use `name update` if you own it",
            req.name,
            r.owners
                .keys()
                .iter()
                .map(|k| k.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, false) => bail!("{} is not claimed yet; use `name claim`", req.name),
        (Some(r), false) if !r.owners.contains(&key.public()) => {
            bail!("your key {} is not an owner of {}", key.public(), req.name)
        }
        _ => {}
    }
    let nonce = current.record.as_ref().map_or(0, |r| r.nonce) + 1;
    let owners = if req.owners.is_empty() {
        Owners::single(key.public())
    } else {
        Owners::new(req.owners.clone()).ok_or_else(|| anyhow!("between 1 and 16 owners"))?
    };
    let value = Value::new(req.value.clone()).ok_or_else(|| {
        anyhow!(
            "value is {} bytes; at most {}",
            req.value.len(),
            params.max_value_len
        )
    })?;
    let mut op = Op::sign(params, req.name.clone(), nonce, owners, value, key);
    let tip = client.chain_tip().await.context("chain_tip")?;
    let recent = Hash::from_hex(&tip.hash).map_err(|e| anyhow!("node sent a bad tip hash: {e}"))?;
    let started = Instant::now();
    let mut start = 0u64;
    while !op.solve_stamp(params, recent, start, 1 << 20) {
        start += 1 << 20;
    }
    tracing::info!(target: "client", elapsed = ?started.elapsed(), "stamp solved");
    op.check_stateless(params).context("built an invalid op")?;
    client
        .dir_submit(hex::encode(encode(&op)))
        .await
        .context("the node refused the op")?;
    Ok(op)
}

/// Wait until `op` is buried under `confirmations` blocks (1 = in the tip),
/// showing progress on stderr when it is a terminal. Gives up after
/// `timeout`.
pub async fn wait_confirmed(
    client: &HttpClient,
    op: &Op,
    confirmations: u64,
    timeout: Duration,
) -> Result<Checked> {
    let bar = indicatif::ProgressBar::new(confirmations);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:20}] {pos}/{len} confirmations",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("waiting for {} (nonce {})", op.key, op.nonce));
    let deadline = Instant::now() + timeout;
    loop {
        let now = get(client, &op.key, None).await?;
        let included = now.record.as_ref().is_some_and(|r| r.nonce >= op.nonce);
        if included {
            // Find how deep: the record must already hold at tip - (k - 1).
            let mut confs = 0;
            for k in (1..=confirmations).rev() {
                let Some(h) = now.tip_height.checked_sub(k - 1) else {
                    continue;
                };
                let at = get(client, &op.key, Some(h)).await?;
                if at.record.as_ref().is_some_and(|r| r.nonce >= op.nonce) {
                    confs = k;
                    if k == confirmations {
                        bar.finish_with_message(format!("{} confirmed", op.key));
                        return Ok(at);
                    }
                    break;
                }
            }
            bar.set_position(confs);
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!(
                "{} (nonce {}) not confirmed after {:?}; is the node mining? The op may still be pending",
                op.key,
                op.nonce,
                timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
