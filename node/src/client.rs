//! The user side of the CLI: build an op, solve its stamp, submit it (a
//! claim in two phases: commitment, then reveal), wait for confirmations
//! and check that the confirmed record is the one asked for; fetch a record
//! and check its proof.
//!
//! The node is trusted here only to be live: the proof returned by
//! `dir_get` is checked against the header the node returned. Trustless
//! lookups (headers verified from genesis, several nodes) are the light
//! client's job.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use xirtam_proofs::header::Header;
use xirtam_proofs::op::{
    Claim, Commit, Draft, Op, Owners, Record, Value, Write, claim_commitment, commit_key,
};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{StateProof, commit_entry_hash, verify_state, verify_state_hashed};
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
    /// New owners (default: the signer for a claim, the current owners for
    /// an update).
    pub owners: Vec<xirtam_proofs::PublicKey>,
    /// Must the name be unclaimed (claim) or claimed (update)?
    pub claim: bool,
}

/// The hash of the main-chain block to anchor a new op at.
async fn anchor(client: &HttpClient, params: &Params) -> Result<Hash> {
    let tip = client.chain_tip().await.context("chain_tip")?;
    let at = params.anchor_height(tip.height);
    let headers = client.chain_headers(at, 1).await.context("chain_headers")?;
    let h: Header = decode_hex(
        headers
            .first()
            .ok_or_else(|| anyhow!("node has no header at height {at}"))?,
    )
    .context("node sent a malformed header")?;
    Ok(h.hash())
}

/// Submit an op (hex of its canonical encoding).
async fn submit(client: &HttpClient, op: &Op) -> Result<()> {
    client
        .dir_submit(hex::encode(encode(op)))
        .await
        .context("the node refused the op")?;
    Ok(())
}

/// Solve a stamp in chunks, logging the time it took.
fn solve(mut step: impl FnMut(u64, u64) -> bool) {
    let started = Instant::now();
    let mut start = 0u64;
    while !step(start, 1 << 20) {
        start += 1 << 20;
    }
    tracing::info!(target: "client", elapsed = ?started.elapsed(), "stamp solved");
}

/// Where a commitment stands, from a proof checked against the node's
/// header.
async fn commitment_height(client: &HttpClient, commitment: &Hash) -> Result<(Option<u64>, u64)> {
    let v = client
        .dir_commitment(commitment.to_hex(), None)
        .await
        .context("dir_commitment")?;
    let header: Header = decode_hex(&v.header).context("node sent a malformed header")?;
    if header.hash().to_hex() != v.block_hash || header.height != v.height {
        bail!("node sent a header that is not the block it named");
    }
    let proof: StateProof = decode_hex(&v.proof).context("node sent a malformed proof")?;
    verify_state_hashed(
        &header.state_root,
        &commit_key(commitment),
        v.mined_at.map(commit_entry_hash).as_ref(),
        &proof,
    )
    .map_err(|e| anyhow!("the node's proof for the commitment does not verify: {e}"))?;
    Ok((v.mined_at, v.tip_height))
}

/// Build, stamp and submit a write; returns it. An update is one op. A
/// claim runs both phases: it submits a hiding commitment, waits until the
/// commitment is mined and `claim_maturity` blocks deep (giving up after
/// `timeout`), then submits the signed reveal.
pub async fn write(
    client: &HttpClient,
    key: &SecretKey,
    req: &WriteRequest,
    timeout: Duration,
) -> Result<Write> {
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
    let owners = match (&current.record, req.owners.is_empty()) {
        (_, false) => {
            Owners::new(req.owners.clone()).ok_or_else(|| anyhow!("between 1 and 16 owners"))?
        }
        (Some(r), true) => r.owners.clone(),
        (None, true) => Owners::single(key.public()),
    };
    let value = Value::new(req.value.clone()).ok_or_else(|| {
        anyhow!(
            "value is {} bytes; at most {}",
            req.value.len(),
            params.max_value_len
        )
    })?;
    let (nonce, claim) = match &current.record {
        Some(r) => (r.nonce + 1, None),
        None => (
            1,
            Some(commit_and_wait(client, params, key, &req.name, timeout).await?),
        ),
    };
    let mut w = Draft {
        key: req.name.clone(),
        nonce,
        owners,
        value,
        claim,
        anchor: anchor(client, params).await?,
    }
    .sign(params, key);
    solve(|start, tries| w.solve_stamp(params, start, tries));
    let op = Op::Write(w.clone());
    op.check_stateless(params).context("built an invalid op")?;
    submit(client, &op).await?;
    Ok(w)
}

/// The first phase of a claim: submit a commitment to (name, key, a random
/// salt), wait until it is mined and mature; returns the reveal.
async fn commit_and_wait(
    client: &HttpClient,
    params: &Params,
    key: &SecretKey,
    name: &Name,
    timeout: Duration,
) -> Result<Claim> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    let commitment = claim_commitment(params, name, &key.public(), &salt);
    let mut c = Commit::new(commitment, anchor(client, params).await?);
    solve(|start, tries| c.solve_stamp(params, start, tries));
    submit(client, &Op::Commit(c)).await?;
    tracing::info!(target: "client", %name, %commitment, "commitment submitted");
    eprintln!(
        "committed to claiming {name} (commitment {commitment}); the name stays hidden until it is {} blocks deep",
        params.claim_maturity
    );
    let deadline = Instant::now() + timeout;
    loop {
        let (mined_at, tip) = commitment_height(client, &commitment).await?;
        if let Some(h) = mined_at {
            // The reveal goes into block tip + 1 at the earliest.
            if tip + 1 >= h + params.claim_maturity {
                return Ok(Claim {
                    salt,
                    commit_height: h,
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the commitment for {name} was not mined and {} blocks deep after {timeout:?}; is the node mining?",
                params.claim_maturity
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Is `r` what `w` writes?
fn written_by(r: &Record, w: &Write) -> bool {
    r.owners == w.owners
        && r.value == w.value
        && match &w.claim {
            Some(c) => r.claimed_at == c.commit_height,
            None => r.nonce == w.nonce,
        }
}

/// Why the record at the tip shows that `w` can no longer land, if it does.
fn lost_to(r: &Record, w: &Write) -> Option<String> {
    if written_by(r, w) {
        return None;
    }
    let who = r
        .owners
        .keys()
        .iter()
        .map(|k| k.to_hex())
        .collect::<Vec<_>>()
        .join(", ");
    match &w.claim {
        Some(c) if r.claimed_at <= c.commit_height => Some(format!(
            "{} was claimed through an earlier commitment (height {}, yours is at {}) by {who}",
            w.key, r.claimed_at, c.commit_height
        )),
        None if r.nonce >= w.nonce => Some(format!(
            "{} was written by someone else at nonce {} (owners {who})",
            w.key, r.nonce
        )),
        _ => None,
    }
}

/// Wait until the record `w` writes is buried under `confirmations`
/// blocks (1 = in the tip), showing progress on stderr when it is a
/// terminal. Fails with a clear message as soon as the confirmed record
/// shows that another write won (other owners or value), and gives up
/// after `timeout`.
pub async fn wait_confirmed(
    client: &HttpClient,
    w: &Write,
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
    bar.set_message(format!("waiting for {} (nonce {})", w.key, w.nonce));
    let deadline = Instant::now() + timeout;
    loop {
        let now = get(client, &w.key, None).await?;
        if let Some(why) = now.record.as_ref().and_then(|r| lost_to(r, w)) {
            // Confirmed against us? Only then is it final enough to
            // report; a reorg could still change a 1-deep record.
            let at = now
                .tip_height
                .saturating_sub(confirmations.saturating_sub(1));
            let deep = get(client, &w.key, Some(at)).await?;
            if deep
                .record
                .as_ref()
                .is_some_and(|d| lost_to(d, w).is_some())
            {
                bar.abandon();
                bail!("your write did not take effect: {why}");
            }
        }
        let included = now.record.as_ref().is_some_and(|r| written_by(r, w));
        if included {
            // Find how deep: the record must already hold at tip - (k - 1).
            let mut confs = 0;
            for k in (1..=confirmations).rev() {
                let Some(h) = now.tip_height.checked_sub(k - 1) else {
                    continue;
                };
                let at = get(client, &w.key, Some(h)).await?;
                if at.record.as_ref().is_some_and(|r| written_by(r, w)) {
                    confs = k;
                    if k == confirmations {
                        bar.finish_with_message(format!("{} confirmed", w.key));
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
                w.key,
                w.nonce,
                timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
