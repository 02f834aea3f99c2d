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
    block_on_logging_to(log, None, multi_thread, command)
}

/// [`block_on`], with logs appended to `file` instead of stderr when given
/// (a full-screen program owns the terminal).
pub(crate) fn block_on_logging_to(
    log: &str,
    file: Option<&std::path::Path>,
    multi_thread: bool,
    command: impl Future<Output = Result<()>>,
) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .map_err(|e| anyhow!("bad --log filter: {e}"))?;
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open the log file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
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
