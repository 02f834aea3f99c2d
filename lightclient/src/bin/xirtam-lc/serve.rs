//! `xirtam-lc serve`: one synced light client behind a local JSON-RPC
//! endpoint, for programs that want verified answers without linking the
//! client (docs/lightclient.md, "A verified resolver for other programs").
//!
//! A background task syncs every `refresh` (one block interval); calls
//! answer from the chain verified so far and never wait for a sync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use jsonrpsee::server::{RpcModule, Server};
use jsonrpsee::types::{ErrorObjectOwned, Params as RpcParams};
use serde_json::{Value, json};
use xirtam_lightclient::{Error, HttpSource, LightClient};
use xirtam_proofs::Name;

use crate::{lookup_json, tip_json};

/// Longest one `lc_watch` call waits before it returns unchanged.
pub(crate) const MAX_WATCH_SECS: u64 = 300;

/// JSON-RPC error codes of the resolver.
mod code {
    /// The name is not a valid name.
    pub(super) const BAD_NAME: i32 = -32602;
    /// No verified answer now (every source down or faulty, stale tip, not
    /// enough confirmations); the message says which.
    pub(super) const NO_ANSWER: i32 = -32010;
}

struct Ctx {
    lc: Arc<LightClient<HttpSource>>,
    /// Counts completed syncs: watchers wake on each.
    syncs: tokio::sync::watch::Receiver<u64>,
}

fn rpc_err(code: i32, msg: impl ToString) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, msg.to_string(), None::<()>)
}

/// `[name, depth?, ...]` from positional parameters.
fn name_and_depth(
    p: &RpcParams<'_>,
    lc: &LightClient<HttpSource>,
) -> Result<(Vec<Value>, Name, u64), ErrorObjectOwned> {
    let args: Vec<Value> = p
        .parse()
        .map_err(|e| rpc_err(code::BAD_NAME, format!("parameters: {e}")))?;
    let name = args
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| rpc_err(code::BAD_NAME, "the first parameter is the name"))?;
    let name = Name::new(name).map_err(|e| rpc_err(code::BAD_NAME, format!("{name:?}: {e}")))?;
    let depth = args
        .get(1)
        .and_then(Value::as_u64)
        .unwrap_or(lc.config().depth);
    Ok((args, name, depth))
}

/// A lookup's JSON with its `version`: the record's hash, or "absent".
async fn lookup(
    lc: &LightClient<HttpSource>,
    name: &Name,
    depth: u64,
) -> Result<(Value, String), Error> {
    let v = lc.resolve_at(name, depth).await?;
    let version = v
        .record()
        .map_or_else(|| "absent".to_owned(), |r| r.hash().to_hex());
    let mut j = lookup_json(&v);
    j["version"] = Value::String(version.clone());
    Ok((j, version))
}

/// Feed a `lc_subscribe_watch` subscription until the subscriber leaves:
/// the verified lookup at once, then each time what is verified changes -
/// a new version of the record, or a switch between an answer and an error
/// (`{"error": "..."}`: no verified answer now, e.g. a stale chain) - after
/// each background sync.
async fn watch_stream(
    ctx: &Ctx,
    name: &Name,
    depth: u64,
    sink: &jsonrpsee::core::server::SubscriptionSink,
) {
    let mut syncs = ctx.syncs.clone();
    let mut last: Option<String> = None;
    loop {
        syncs.mark_unchanged();
        let (j, seen) = match lookup(&ctx.lc, name, depth).await {
            Ok((j, version)) => (j, version),
            // Sent once on entering the error state (its message, e.g. a
            // stale tip's age, changes on every sync).
            Err(e) => (json!({ "error": e.to_string() }), "error".to_owned()),
        };
        if last.as_deref() != Some(seen.as_str()) {
            let Ok(msg) = serde_json::value::to_raw_value(&j) else {
                return;
            };
            if sink.send(msg).await.is_err() {
                return;
            }
            last = Some(seen);
        }
        tokio::select! {
            changed = syncs.changed() => {
                if changed.is_err() {
                    return; // the syncer stopped: the server is shutting down
                }
            }
            _ = sink.closed() => return,
        }
    }
}

/// Serve on `listen` until interrupted. Prints `listening on http://ADDR`
/// on stdout once bound.
pub(crate) async fn serve(lc: LightClient<HttpSource>, listen: SocketAddr) -> Result<()> {
    let lc = Arc::new(lc);
    let (syncs_tx, syncs) = tokio::sync::watch::channel(0u64);
    let syncer = {
        let lc = lc.clone();
        tokio::spawn(async move {
            loop {
                match lc.sync().await {
                    Ok(r) => {
                        tracing::debug!(target: "lightclient::serve", height = r.to_height, "synced")
                    }
                    Err(e) => tracing::warn!(target: "lightclient::serve", "sync failed: {e}"),
                }
                syncs_tx.send_modify(|n| *n += 1);
                tokio::time::sleep(lc.config().refresh).await;
            }
        })
    };
    let mut module = RpcModule::new(Ctx { lc, syncs });
    module.register_method("lc_tip", |_, ctx, _| {
        Ok::<Value, ErrorObjectOwned>(tip_json(&ctx.lc))
    })?;
    module.register_async_method("lc_resolve", |params, ctx, _| async move {
        let (_, name, depth) = name_and_depth(&params, &ctx.lc)?;
        lookup(&ctx.lc, &name, depth)
            .await
            .map(|(j, _)| j)
            .map_err(|e| rpc_err(code::NO_ANSWER, e))
    })?;
    module.register_async_method("lc_watch", |params, ctx, _| async move {
        let (args, name, depth) = name_and_depth(&params, &ctx.lc)?;
        let since = args.get(2).and_then(Value::as_str).map(str::to_owned);
        let wait = args
            .get(3)
            .and_then(Value::as_u64)
            .unwrap_or(60)
            .min(MAX_WATCH_SECS);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let mut syncs = ctx.syncs.clone();
        loop {
            syncs.mark_unchanged();
            let (mut j, version) = lookup(&ctx.lc, &name, depth)
                .await
                .map_err(|e| rpc_err(code::NO_ANSWER, e))?;
            let changed = since.as_deref() != Some(version.as_str());
            if changed || tokio::time::Instant::now() >= deadline {
                j["changed"] = json!(changed);
                return Ok::<Value, ErrorObjectOwned>(j);
            }
            // Until the next sync completes, or the deadline.
            let _ = tokio::time::timeout_at(deadline, syncs.changed()).await;
        }
    })?;
    module.register_subscription(
        "lc_subscribe_watch",
        "lc_watch_update",
        "lc_unsubscribe_watch",
        |params, pending, ctx, _| async move {
            let (_, name, depth) = match name_and_depth(&params, &ctx.lc) {
                Ok(x) => x,
                Err(e) => {
                    pending.reject(e).await;
                    return Ok(());
                }
            };
            let sink = pending.accept().await?;
            watch_stream(&ctx, &name, depth, &sink).await;
            Ok::<(), jsonrpsee::core::SubscriptionError>(())
        },
    )?;
    let server = Server::builder()
        .build(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = server.local_addr().context("bound address")?;
    println!("listening on http://{addr}");
    use std::io::Write as _;
    std::io::stdout().flush().context("stdout")?;
    let handle = server.start(module);
    tokio::select! {
        _ = handle.clone().stopped() => {}
        _ = tokio::signal::ctrl_c() => {
            let _ = handle.stop();
        }
    }
    syncer.abort();
    Ok(())
}
