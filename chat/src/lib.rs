//! Xirtam chat: `@user` / `~server` records, end-to-end encryption, the
//! concierge server and the client library.
//!
//! Directory data reaches this crate only as values verified by the light
//! client ([`records::VerifiedUser`], [`records::VerifiedServer`] are built
//! from `xirtam_lightclient::Verified` lookups); it never depends on the
//! node crate.
//!
//! * [`records`]: what `@user` and `~server` record values mean, their
//!   encoding and rules;
//! * [`crypto`]: device and medium-term keys, signed events, encryption
//!   once per message with the key wrapped per device (HPKE);
//! * [`mailbox`]: the concierge server's mailbox storage (RocksDB,
//!   server-assigned sequence numbers, one `WriteBatch` per append);
//! * [`api`]: the concierge server's JSON-RPC API (shared by both sides);
//! * [`server`]: the concierge server (`xirtam-server`);
//! * [`client`]: the client library ([`client::ChatClient`]) behind the
//!   `xirtam-chat` CLI;
//! * [`group`]: groups (in progress: the management log's rule).

pub mod api;
pub mod client;
pub mod crypto;
pub mod display;
pub mod group;
pub mod mailbox;
pub mod records;
pub mod server;
pub mod tls;

/// The light client the server and the client use: headers kept in
/// `headers_dir`, one `HttpSource` per node URL, lookups `depth` blocks under
/// the tip (default: the network's).
pub fn light_client(
    params: &'static xirtam_proofs::params::Params,
    headers_dir: std::path::PathBuf,
    depth: Option<u64>,
    nodes: &[String],
) -> Result<
    xirtam_lightclient::LightClient<xirtam_lightclient::HttpSource>,
    xirtam_lightclient::Error,
> {
    let mut config = xirtam_lightclient::Config::new(params);
    config.datadir = Some(headers_dir);
    if let Some(d) = depth {
        config.depth = d;
    }
    let sources = nodes
        .iter()
        .map(|u| xirtam_lightclient::HttpSource::new(u, std::time::Duration::from_secs(10)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| xirtam_lightclient::Error::NoSourceReachable(vec![e.to_string()]))?;
    xirtam_lightclient::LightClient::new(config, sources)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// From now on, files and directories this process creates are private to
/// its user (umask `077`: files `0600`, directories `0700`), whatever the
/// caller's umask. The chat binaries call it first: their data directories
/// hold keys, message history and databases whose files other libraries
/// (RocksDB) create with default modes.
pub fn private_files() {
    #[cfg(unix)]
    {
        let _ = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

/// Create `dir` (and its parents) if needed, and make it `0700`: only its
/// owner may list or enter it, so nothing inside is reachable by others
/// whatever the modes of the files in it.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write a file only its owner can read (keys), replacing it atomically.
pub fn write_secret_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub use records::{
    Device, KxPublicKey, RecordError, ServerRecord, UserRecord, VerifiedServer, VerifiedUser,
};
pub use xirtam_proofs as proofs;
