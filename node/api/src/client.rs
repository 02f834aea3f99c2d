//! The user side of the node's CLI (`xirtam-node name ...`), as a library:
//! build an op, solve its stamp, submit it (a claim in two phases:
//! commitment, then reveal), wait for confirmations and check that the
//! confirmed record is the one asked for; fetch a record and check its
//! proof.
//!
//! The node is trusted here only to be live: the proof returned by
//! `dir_get` is checked against the header the node returned. Trustless
//! lookups (headers verified from genesis, several nodes) are the light
//! client's job.

use std::time::{Duration, Instant};

use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use xirtam_proofs::op::{Claim, Commit, Draft, Op, Owners, Record, Value, Write, claim_commitment};
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, OpError, SecretKey, encode};

use crate::wire::{Proven, WireError, header_from_hex};
use crate::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, NodeApiClient};

/// What went wrong on the user's side of a write or a lookup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The RPC URL is unusable.
    #[error("cannot use RPC URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A call failed (unreachable node, or an error answer).
    #[error("{call}: {source}")]
    Rpc {
        /// The method.
        call: &'static str,
        /// What the client library said.
        source: RpcError,
    },
    /// The node's answer does not decode or its proof does not hold.
    #[error("the node's answer does not hold: {0}")]
    Wire(#[from] WireError),
    /// The node runs a network this build does not know.
    #[error("the node runs unknown network {0:?}")]
    UnknownNetwork(String),
    /// The write cannot be made as asked (already claimed, not an owner,
    /// value too long, ...).
    #[error("{0}")]
    Refused(String),
    /// Another write won: the confirmed record is not the one asked for.
    #[error("your write did not take effect: {0}")]
    Lost(String),
    /// Waiting ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// The op built here breaks a rule (a bug, or parameters out of date).
    #[error("built an invalid op: {0}")]
    InvalidOp(#[from] OpError),
    /// The OS gave no randomness for the salt.
    #[error("no OS randomness: {0}")]
    Random(String),
}

type Result<T> = std::result::Result<T, ClientError>;

fn rpc(call: &'static str) -> impl FnOnce(RpcError) -> ClientError {
    move |source| ClientError::Rpc { call, source }
}

/// What a long write or wait reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// A claim's commitment was submitted; the reveal follows once it is
    /// `maturity` blocks deep.
    Committed {
        /// The name.
        name: Name,
        /// The commitment.
        commitment: Hash,
        /// Blocks it must be buried under.
        maturity: u64,
    },
    /// The write is in a block and buried under `have` of the `want`
    /// confirmations asked for.
    Confirmations {
        /// Confirmations so far.
        have: u64,
        /// Confirmations asked for.
        want: u64,
    },
}

/// An HTTP JSON-RPC client for `url`.
pub fn connect(url: &str) -> Result<HttpClient> {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .max_request_size(MAX_REQUEST_BYTES)
        .max_response_size(MAX_RESPONSE_BYTES)
        .build(url)
        .map_err(|e| ClientError::Url {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// A record (or its proven absence) checked against the header the node
/// gave.
pub type Checked = Proven<Option<Record>>;

/// Fetch and check the record of `name` at `at` (default: tip).
pub async fn get(client: &HttpClient, name: &Name, at: Option<u64>) -> Result<Checked> {
    let v = client
        .dir_get(name.to_string(), at)
        .await
        .map_err(rpc("dir_get"))?;
    Ok(v.verify(name)?)
}

/// The network the node runs.
pub async fn network(client: &HttpClient) -> Result<&'static Params> {
    let p = client.dir_params().await.map_err(rpc("dir_params"))?;
    Params::by_name(&p.network).ok_or(ClientError::UnknownNetwork(p.network))
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
    /// A claim's salt. Given, the claim resumes one started earlier with
    /// this salt: its commitment is submitted only if it is not mined yet.
    /// `None`: a fresh random salt. (A caller that may be interrupted
    /// between the two phases stores the salt before calling, so that the
    /// commitment it paid for is not lost.)
    pub salt: Option<[u8; 32]>,
}

/// The hash of the main-chain block to anchor a new op at.
async fn anchor(client: &HttpClient, params: &Params) -> Result<Hash> {
    let tip = client.chain_tip().await.map_err(rpc("chain_tip"))?;
    let at = params.anchor_height(tip.height);
    let headers = client
        .chain_headers(at, 1)
        .await
        .map_err(rpc("chain_headers"))?;
    let h = header_from_hex(headers.first().ok_or_else(|| WireError {
        what: "chain_headers",
        reason: format!("no header at height {at}, below the tip"),
    })?)?;
    Ok(h.hash())
}

/// Submit an op (hex of its canonical encoding).
async fn submit(client: &HttpClient, op: &Op) -> Result<()> {
    client
        .dir_submit(hex::encode(encode(op)))
        .await
        .map_err(rpc("dir_submit"))?;
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
        .map_err(rpc("dir_commitment"))?;
    let p = v.verify(commitment)?;
    Ok((p.value, p.tip_height))
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
    write_with(client, key, req, timeout, &mut |_| {}).await
}

/// [`write`], reporting progress to `progress`.
pub async fn write_with(
    client: &HttpClient,
    key: &SecretKey,
    req: &WriteRequest,
    timeout: Duration,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Write> {
    let params = network(client).await?;
    let current = get(client, &req.name, None).await?;
    match (&current.value, req.claim) {
        (Some(r), true) => Err(ClientError::Refused(format!(
            "{} is already claimed (owners {}); use `name update` if you own it",
            req.name,
            r.owners
                .keys()
                .iter()
                .map(|k| k.to_hex())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (None, false) => Err(ClientError::Refused(format!(
            "{} is not claimed yet; use `name claim`",
            req.name
        ))),
        (Some(r), false) if !r.owners.contains(&key.public()) => Err(ClientError::Refused(
            format!("your key {} is not an owner of {}", key.public(), req.name),
        )),
        _ => Ok(()),
    }?;
    let owners = match (&current.value, req.owners.is_empty()) {
        (_, false) => Owners::new(req.owners.clone()).ok_or_else(|| {
            ClientError::Refused(format!(
                "between 1 and {} owners, not {}",
                params.max_owners,
                req.owners.len()
            ))
        })?,
        (Some(r), true) => r.owners.clone(),
        (None, true) => Owners::single(key.public()),
    };
    let value = Value::new(req.value.clone()).ok_or_else(|| {
        ClientError::Refused(format!(
            "value is {} bytes; at most {}",
            req.value.len(),
            params.max_value_len
        ))
    })?;
    let (nonce, claim) = match &current.value {
        Some(r) => (r.nonce + 1, None),
        None => (
            1,
            Some(
                commit_and_wait(client, params, key, &req.name, req.salt, timeout, progress)
                    .await?,
            ),
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
    op.check_stateless(params)?;
    submit(client, &op).await?;
    Ok(w)
}

/// The first phase of a claim: submit a commitment to (name, key, salt)
/// unless it is mined already (a resumed claim), wait until it is mined and
/// mature; returns the reveal.
async fn commit_and_wait(
    client: &HttpClient,
    params: &Params,
    key: &SecretKey,
    name: &Name,
    salt: Option<[u8; 32]>,
    timeout: Duration,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Claim> {
    let resumed = salt.is_some();
    let salt = match salt {
        Some(s) => s,
        None => {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).map_err(|e| ClientError::Random(e.to_string()))?;
            s
        }
    };
    let commitment = claim_commitment(params, name, &key.public(), &salt);
    let (mined_at, _) = commitment_height(client, &commitment).await?;
    if mined_at.is_none() {
        let mut c = Commit::new(commitment, anchor(client, params).await?);
        solve(|start, tries| c.solve_stamp(params, start, tries));
        match submit(client, &Op::Commit(c)).await {
            Ok(()) => {}
            // Resumed: the same commitment is still pending (only this
            // claimant can make an op for it).
            Err(ClientError::Rpc {
                source: RpcError::Call(e),
                ..
            }) if resumed && already_pending(&e) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(target: "client", %name, %commitment, "commitment submitted");
    }
    progress(Progress::Committed {
        name: name.clone(),
        commitment,
        maturity: params.claim_maturity,
    });
    let deadline = Instant::now() + timeout;
    loop {
        let (mined_at, tip) = commitment_height(client, &commitment).await?;
        if let Some(h) = mined_at {
            if tip + 1 > h + params.claim_expiry {
                return Err(ClientError::Refused(format!(
                    "the commitment for {name} (mined at height {h}) expired at height {}; start the claim again",
                    h + params.claim_expiry
                )));
            }
            // The reveal goes into block tip + 1 at the earliest.
            if tip + 1 >= h + params.claim_maturity {
                return Ok(Claim {
                    salt,
                    commit_height: h,
                });
            }
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout(format!(
                "the commitment for {name} was not mined and {} blocks deep after {timeout:?}; is the node mining?",
                params.claim_maturity
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Does a `dir_submit` error say that an op for the same subject is
/// pending (not that the pool is full)?
fn already_pending(e: &jsonrpsee::types::ErrorObjectOwned) -> bool {
    #[derive(serde::Deserialize)]
    struct Data {
        reason: String,
    }
    e.code() == crate::code::MEMPOOL_REJECTED
        && e.data()
            .and_then(|d| serde_json::from_str::<Data>(d.get()).ok())
            .is_some_and(|d| d.reason == "duplicate" || d.reason == "conflict")
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
/// blocks (1 = in the tip). Fails with [`ClientError::Lost`] as soon as the
/// confirmed record shows that another write won (other owners or value),
/// and gives up after `timeout`.
pub async fn wait_confirmed(
    client: &HttpClient,
    w: &Write,
    confirmations: u64,
    timeout: Duration,
) -> Result<Checked> {
    wait_confirmed_with(client, w, confirmations, timeout, &mut |_| {}).await
}

/// [`wait_confirmed`], reporting progress to `progress`.
pub async fn wait_confirmed_with(
    client: &HttpClient,
    w: &Write,
    confirmations: u64,
    timeout: Duration,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Checked> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = get(client, &w.key, None).await?;
        if let Some(why) = now.value.as_ref().and_then(|r| lost_to(r, w)) {
            // Confirmed against us? Only then is it final enough to
            // report; a reorg could still change a 1-deep record.
            let at = now
                .tip_height
                .saturating_sub(confirmations.saturating_sub(1));
            let deep = get(client, &w.key, Some(at)).await?;
            if deep.value.as_ref().is_some_and(|d| lost_to(d, w).is_some()) {
                return Err(ClientError::Lost(why));
            }
        }
        let included = now.value.as_ref().is_some_and(|r| written_by(r, w));
        if included {
            // Find how deep: the record must already hold at tip - (k - 1).
            let mut confs = 0;
            for k in (1..=confirmations).rev() {
                let Some(h) = now.tip_height.checked_sub(k - 1) else {
                    continue;
                };
                let at = get(client, &w.key, Some(h)).await?;
                if at.value.as_ref().is_some_and(|r| written_by(r, w)) {
                    confs = k;
                    if k == confirmations {
                        progress(Progress::Confirmations {
                            have: k,
                            want: confirmations,
                        });
                        return Ok(at);
                    }
                    break;
                }
            }
            progress(Progress::Confirmations {
                have: confs,
                want: confirmations,
            });
        }
        if Instant::now() > deadline {
            return Err(ClientError::Timeout(format!(
                "{} (nonce {}) not confirmed after {:?}; is the node mining? The op may still be pending",
                w.key, w.nonce, timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
