//! What the chat binaries share: logs to stderr under a `--log` filter, and
//! an async runtime to run their command on.

use std::future::Future;

use anyhow::{Context, Result, anyhow};

/// Set up logging with `log` (a tracing filter), then run `command` on a
/// runtime: multi-threaded for a server, current-thread for a client.
pub(crate) fn block_on(
    log: &str,
    multi_thread: bool,
    command: impl Future<Output = Result<()>>,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log)
                .map_err(|e| anyhow!("bad --log filter: {e}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let mut rt = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    rt.enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(command)
}
