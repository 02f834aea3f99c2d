//! Whole-system benchmark of a concierge server (`xirtam-testnet bench
//! chat`): a real `xirtam-server` process on loopback, `receivers` users
//! each long-polling their mailbox (and acknowledging what they get, in the
//! next long-poll's cursor or, with `ack_calls`, in a call of its own), and
//! `senders` concurrent depositors pushing `messages` envelopes round-robin
//! into those mailboxes. Latency is deposit call to delivery at the
//! long-poller (the send time travels inside the envelope body, which the
//! server treats as opaque). Then memory per idle long-poll: the server's
//! RSS with `idle` extra long-polls parked, against none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jsonrpsee::http_client::HttpClient;
use xirtam_chat::api::{self, ConciergeApiClient, Cursor};
use xirtam_chat::crypto::{DeviceKeys, Envelope, Wrap};
use xirtam_chat::records::UserRecord;
use xirtam_lightclient::{Config as LcConfig, HttpSource, LightClient};
use xirtam_proofs::{Name, PublicKey, SecretKey, encode};

use crate::{Config, Testnet, percentile};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct ChatBench {
    /// Long-polling users.
    pub receivers: usize,
    /// Concurrent depositors.
    pub senders: usize,
    /// Envelopes in total.
    pub messages: usize,
    /// Idle long-polls for the memory figure.
    pub idle: usize,
    /// Serve plain HTTP instead of TLS.
    pub plain_http: bool,
    /// Acknowledge each batch with a `mailbox_ack` call (otherwise the
    /// next long-poll's cursor acknowledges it, as a listening device does).
    pub ack_calls: bool,
}

/// What it measured.
#[derive(Debug, Clone)]
pub struct ChatBenchResult {
    /// Envelopes delivered per second (first deposit to last delivery).
    pub throughput: f64,
    /// Deposit-to-delivery latency percentiles (ms): p50, p95, p99.
    pub latency_ms: [f64; 3],
    /// Deposit call latency percentiles (ms): p50, p99.
    pub deposit_ms: [f64; 2],
    /// Envelope size (bytes).
    pub envelope_bytes: usize,
    /// Server RSS without and with the idle long-polls (KiB).
    pub rss_kib: (u64, u64),
    /// Idle long-polls parked.
    pub idle: usize,
    /// CPU time per envelope (µs) during the measured run: the server's,
    /// and the bench runner's own (the clients), which share the machine.
    pub cpu_us: Option<(f64, f64)>,
}

fn rss_of(pid: u32) -> Option<u64> {
    crate::memory_kib(pid, "VmRSS")
}

/// The contact pass every bench user registers for the senders.
const BENCH_PASS: [u8; 32] = [0x42; 32];

/// A client of the bench server: TLS with its server key, as a real client
/// connects.
fn client(url: &str, key: &PublicKey, timeout: Duration) -> Result<HttpClient> {
    xirtam_chat::tls::concierge_client(url, key, timeout, 64 << 20).context("client")
}

/// An envelope the size of a direct message to three devices, carrying
/// the send time (µs since `t0`) in its first body bytes.
fn envelope(t0: Instant) -> Vec<u8> {
    let wrap = Wrap {
        device: PublicKey([1; 32]),
        kx: xirtam_chat::KxPublicKey([2; 32]),
        enc: [3; 32],
        key: [4; 48],
    };
    let mut body = vec![0u8; 200];
    body[..8].copy_from_slice(&(t0.elapsed().as_micros() as u64).to_le_bytes());
    encode(&Envelope {
        wraps: vec![wrap.clone(), wrap.clone(), wrap],
        body,
    })
}

fn sent_at(env_hex: &str) -> Option<u64> {
    let b = hex::decode(env_hex).ok()?;
    let e: Envelope = xirtam_proofs::decode(&b).ok()?;
    Some(u64::from_le_bytes(e.body.get(..8)?.try_into().ok()?))
}

/// Run the benchmark.
pub async fn run(b: ChatBench) -> Result<ChatBenchResult> {
    if b.receivers == 0 || b.senders == 0 {
        bail!("need at least one receiver and one sender");
    }
    let mut net = Testnet::start(Config {
        nodes: 1,
        log: "warn".into(),
        timeout: Duration::from_secs(120),
        ..Config::default()
    })
    .await?;
    net.auto_mine(0, Duration::from_millis(200));
    let s = net
        .add_server(
            "~bench",
            &[
                &[
                    "--deposit-rate",
                    "100000",
                    "--deposit-burst",
                    "100000",
                    // Every simulated user connects from 127.0.0.1.
                    "--max-connections-per-ip",
                    "100000",
                ][..],
                if b.plain_http {
                    &["--plain-http"][..]
                } else {
                    &[]
                },
            ]
            .concat(),
        )
        .await?;
    let (url, key) = (net.server(s).url.clone(), net.server(s).key);
    let pid = net.server(s).pid().context("server pid")?;
    // Users: one record each, published through a light client.
    let lc = LightClient::new(
        LcConfig::new(net.params()?),
        vec![HttpSource::new(
            &net.node_urls()[0],
            Duration::from_secs(10),
        )?],
    )?;
    let server_name = Name::new("~bench").context("name")?;
    // Claims in two phases for all users at once: every commitment first,
    // then every reveal once the commitments are mature.
    let mut users = Vec::new();
    let mut pending = Vec::new();
    for i in 0..b.receivers {
        let name = Name::new(&format!("@u{i}")).context("name")?;
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let device = DeviceKeys::from_seed(seed);
        seed[31] = 9;
        let root = SecretKey::from_seed(seed);
        let value = UserRecord {
            server: server_name.clone(),
            devices: vec![device.device()],
        }
        .to_value()
        .map_err(|e| anyhow::anyhow!(e))?;
        pending.push((lc.commit_claim(&root, &name).await?, root, value));
        users.push((name, device));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (claim, root, value) in pending {
        let commit_height = loop {
            lc.sync().await?;
            let tip = lc.tip().height;
            match lc.commitment_height(&claim).await? {
                Some(h) if tip + 1 >= h + net.params()?.claim_maturity => break h,
                _ if Instant::now() > deadline => bail!("bench commitments not mined in 120 s"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        lc.reveal(&root, &claim, commit_height, value, None).await?;
    }
    let last = users.last().map(|u| u.0.clone()).context("users")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lc.resolve(&last).await.is_ok_and(|l| l.record().is_some()) {
        if Instant::now() > deadline {
            bail!("bench users not confirmed in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rpc = client(&url, &key, Duration::from_secs(60))?;
    let mut tokens = Vec::new();
    for (name, device) in &users {
        let ch = rpc.auth_challenge(name.to_string()).await?;
        let c: [u8; 32] = hex::decode(&ch.challenge)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad challenge"))?;
        let sig = device.sign(api::AUTH_TAG, &api::auth_payload(&server_name, name, &c));
        let t = rpc
            .auth_login(
                name.to_string(),
                device.device().sign.to_hex(),
                ch.challenge,
                hex::encode(sig.0),
            )
            .await?;
        rpc.mailbox_create(t.token.clone()).await?;
        // The senders are the users' contacts: they deposit with a pass
        // into the contacts lane (no postage; the postage cost is measured
        // on its own, docs/BENCHMARKS.md).
        rpc.mailbox_passes(
            t.token.clone(),
            vec![api::pass_hash(&BENCH_PASS).to_hex()],
            Vec::new(),
        )
        .await?;
        tokens.push(t.token);
    }

    // Long-pollers.
    let t0 = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let total = b.messages as u64;
    let mut pollers = Vec::new();
    for (i, (name, _)) in users.iter().enumerate() {
        let c = client(&url, &key, Duration::from_secs(60))?;
        let token = tokens[i].clone();
        let mailbox = api::mailbox_id(name).to_hex();
        let delivered = delivered.clone();
        let ack_calls = b.ack_calls;
        pollers.push(tokio::spawn(async move {
            let mut after = 0u64;
            let mut lat = Vec::new();
            let mut last_at = Duration::ZERO;
            while delivered.load(Ordering::Relaxed) < total {
                let r = c
                    .mailbox_receive(
                        token.clone(),
                        vec![Cursor {
                            mailbox: mailbox.clone(),
                            after,
                            ack: !ack_calls,
                        }],
                        1000,
                    )
                    .await;
                let Ok(batches) = r else { continue };
                let now = t0.elapsed().as_micros() as u64;
                let mut last = after;
                for m in batches.iter().flat_map(|b| b.messages.iter()) {
                    if let Some(t) = sent_at(&m.envelope) {
                        lat.push(now.saturating_sub(t) as f64 / 1000.0);
                    }
                    last = last.max(m.seq);
                }
                if last > after {
                    last_at = t0.elapsed();
                    delivered.fetch_add(last - after, Ordering::Relaxed);
                    if ack_calls {
                        let _ = c.mailbox_ack(token.clone(), mailbox.clone(), last).await;
                    }
                    after = last;
                }
            }
            (lat, last_at)
        }));
    }
    // Depositors.
    let next = Arc::new(AtomicU64::new(0));
    let names: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.0.to_string()).collect());
    let start = t0.elapsed();
    let cpu_start = (crate::cpu_ns(&pid.to_string()), crate::cpu_ns("self"));
    let mut senders = Vec::new();
    for _ in 0..b.senders {
        let c = client(&url, &key, Duration::from_secs(60))?;
        let (next, names) = (next.clone(), names.clone());
        senders.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let to = names[(k as usize) % names.len()].clone();
                let env = hex::encode(envelope(t0));
                let t = Instant::now();
                if let Err(e) = c
                    .mailbox_deposit(to, env, Some(hex::encode(BENCH_PASS)), None)
                    .await
                {
                    failed.push(e.to_string());
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, failed)
        }));
    }
    let mut deposit_ms = Vec::new();
    let mut failed = Vec::new();
    for s in senders {
        let (l, f) = s.await?;
        deposit_ms.extend(l);
        failed.extend(f);
    }
    // A refused deposit is never delivered: say why now rather than wait
    // for the pollers to time out.
    if let Some(first) = failed.first() {
        bail!(
            "{} of {total} deposits failed; the first: {first}",
            failed.len()
        );
    }
    let mut lat = Vec::new();
    let mut end = Duration::ZERO;
    for p in pollers {
        let (l, t) = tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .context("pollers did not see every message")??;
        lat.extend(l);
        end = end.max(t);
    }
    let cpu_end = (crate::cpu_ns(&pid.to_string()), crate::cpu_ns("self"));
    let per_envelope = |from: Option<u64>, to: Option<u64>| {
        Some(to?.saturating_sub(from?) as f64 / 1000.0 / b.messages as f64)
    };
    let cpu_us = per_envelope(cpu_start.0, cpu_end.0).zip(per_envelope(cpu_start.1, cpu_end.1));
    let elapsed = (end - start).as_secs_f64();
    let throughput = b.messages as f64 / elapsed;
    // Idle long-polls: `idle` requests parked on empty mailboxes.
    let idle_client = client(&url, &key, Duration::from_secs(120))?;
    let mut parked = Vec::new();
    for k in 0..b.idle {
        let (c, token) = (idle_client.clone(), tokens[k % tokens.len()].clone());
        let mailbox = api::mailbox_id(&users[k % users.len()].0).to_hex();
        parked.push(tokio::spawn(async move {
            let _ = c
                .mailbox_receive(
                    token,
                    vec![Cursor {
                        mailbox,
                        after: u64::MAX - 1,
                        ack: false,
                    }],
                    30_000,
                )
                .await;
        }));
    }
    let rss_base = rss_of(pid).unwrap_or(0);
    // Let the connections establish and park.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_of(pid).unwrap_or(0);
    for p in parked {
        p.abort();
    }
    Ok(ChatBenchResult {
        throughput,
        latency_ms: [
            percentile(&mut lat, 50.0),
            percentile(&mut lat, 95.0),
            percentile(&mut lat, 99.0),
        ],
        deposit_ms: [
            percentile(&mut deposit_ms, 50.0),
            percentile(&mut deposit_ms, 99.0),
        ],
        envelope_bytes: envelope(t0).len(),
        rss_kib: (rss_base, rss_idle),
        cpu_us,
        idle: b.idle,
    })
}
