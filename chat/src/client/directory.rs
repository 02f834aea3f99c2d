//! The directory: verified lookups of `@user` and `~server` records, and
//! writes of our own record. [`Directory`] is what the client needs from a
//! light client; [`LightClient`] over any [`Source`] provides it (HTTP
//! nodes in production, an in-memory chain in tests). Values only ever
//! come back as [`Verified`] lookups, which the light client alone makes.
//!
//! The client keeps a short-lived cache of user records, and remembers the
//! last record it saw for each user so that a change (a contact moved, or
//! their devices changed) becomes an event.

use std::future::Future;
use std::time::{Duration, Instant};

use xirtam_lightclient::{LightClient, Lookup, Source, Verified};
use xirtam_proofs::name::NameKind;
use xirtam_proofs::{Hash, Name, SecretKey};

use super::connection::Connector;
use super::{ClientError, ClientEvent, Core, Result};
use crate::records::{UserRecord, VerifiedServer, VerifiedUser};

/// Verified lookups and own-record writes.
pub trait Directory: Send + Sync + 'static {
    /// `name`'s record, proven at the configured depth under the verified
    /// tip.
    fn resolve(
        &self,
        name: &Name,
    ) -> impl Future<Output = Result<Verified<Lookup>, xirtam_lightclient::Error>> + Send;
    /// `name`'s record at the verified tip (unconfirmed writes included).
    fn resolve_latest(
        &self,
        name: &Name,
    ) -> impl Future<Output = Result<Verified<Lookup>, xirtam_lightclient::Error>> + Send;
    /// Write `value` to `name` with `key` (claim or update); it lands when
    /// a block includes it, which verified lookups show.
    fn publish(
        &self,
        key: &SecretKey,
        name: &Name,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), xirtam_lightclient::Error>> + Send;
    /// A verified block `below` blocks under the tip: `(height, hash)`.
    fn recent_block(&self, below: u64) -> Option<(u64, Hash)>;
}

impl<S: Source + 'static> Directory for LightClient<S> {
    async fn resolve(&self, name: &Name) -> Result<Verified<Lookup>, xirtam_lightclient::Error> {
        LightClient::resolve(self, name).await
    }

    async fn resolve_latest(
        &self,
        name: &Name,
    ) -> Result<Verified<Lookup>, xirtam_lightclient::Error> {
        LightClient::resolve_latest(self, name).await
    }

    async fn publish(
        &self,
        key: &SecretKey,
        name: &Name,
        value: Vec<u8>,
    ) -> Result<(), xirtam_lightclient::Error> {
        LightClient::publish(self, key, name, value, None)
            .await
            .map(drop)
    }

    fn recent_block(&self, below: u64) -> Option<(u64, Hash)> {
        let height = self.tip().height.saturating_sub(below);
        self.hash_at(height).map(|h| (height, h))
    }
}

/// State key of the last record seen for `user` (its value bytes).
fn known_key(user: &Name) -> String {
    format!("known/{user}")
}

impl<D: Directory, C: Connector> Core<D, C> {
    /// Look up a user's verified record (always fresh).
    pub async fn whois(&self, name: &Name) -> Result<VerifiedUser> {
        self.user(name, true).await
    }

    /// `name`'s verified record: from the cache when younger than the
    /// record TTL and not `fresh`.
    pub(crate) async fn user(&self, name: &Name, fresh: bool) -> Result<VerifiedUser> {
        if name.kind() != NameKind::User {
            return Err(ClientError::Invalid(format!(
                "{name} is not a user name (user names start with @)"
            )));
        }
        if !fresh
            && let Some((at, v)) = self.users.lock().get(name)
            && at.elapsed() < self.config.record_ttl
        {
            return Ok(v.clone());
        }
        let v = VerifiedUser::from_lookup(self.dir.resolve(name).await?)?;
        self.saw(&v)?;
        Ok(v)
    }

    /// Cache a verified user record; if it differs from the last one seen
    /// for that user, say how.
    pub(crate) fn saw(&self, v: &VerifiedUser) -> Result<()> {
        let name = v.lookup().name().clone();
        self.users
            .lock()
            .insert(name.clone(), (Instant::now(), v.clone()));
        let value = v.record().to_value().map_err(ClientError::Invalid)?;
        let key = known_key(&name);
        let old: Option<Vec<u8>> = self.store.state(&key)?;
        if old.as_deref() == Some(value.as_slice()) {
            return Ok(());
        }
        self.store.put_state(&key, &value)?;
        let Some(old) = old.and_then(|o| UserRecord::from_value(&name, &o).ok()) else {
            return Ok(());
        };
        let new = v.record();
        if old.server != new.server {
            self.emit(ClientEvent::Moved {
                user: name.clone(),
                from: old.server.clone(),
                to: new.server.clone(),
            });
        }
        let added: Vec<_> = new
            .devices
            .iter()
            .filter(|d| old.device(&d.sign).is_none())
            .map(|d| d.sign)
            .collect();
        let removed: Vec<_> = old
            .devices
            .iter()
            .filter(|d| new.device(&d.sign).is_none())
            .map(|d| d.sign)
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            self.emit(ClientEvent::Devices {
                user: name,
                added,
                removed,
            });
        }
        Ok(())
    }

    /// Look up a server's verified record.
    pub async fn server(&self, name: &Name) -> Result<VerifiedServer> {
        if name.kind() != NameKind::Server {
            return Err(ClientError::Invalid(format!(
                "{name} is not a server name (server names start with ~)"
            )));
        }
        Ok(VerifiedServer::from_lookup(self.dir.resolve(name).await?)?)
    }

    /// Wait until `name`'s confirmed record carries `value`.
    pub(crate) async fn wait_value(&self, name: &Name, value: &[u8]) -> Result<VerifiedUser> {
        let deadline = Instant::now() + self.config.confirm_timeout;
        loop {
            match self.dir.resolve(name).await {
                Ok(l) if l.record().is_some_and(|r| r.value.as_bytes() == value) => {
                    let v = VerifiedUser::from_lookup(l)?;
                    self.saw(&v)?;
                    return Ok(v);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(target: "client", error = %e, "waiting for confirmation"),
            }
            if Instant::now() > deadline {
                return Err(ClientError::NotConfirmed {
                    name: name.clone(),
                    secs: self.config.confirm_timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
