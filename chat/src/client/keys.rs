//! Keys: this device's medium-term key-agreement keys (rotated, old ones
//! kept until they expire) and the choice of a recipient device's key to
//! wrap to.

use std::collections::HashMap;

use xirtam_proofs::{Name, PublicKey, decode};

use super::connection::{Connector, ServerConn, to_client_error};
use super::directory::Directory;
use super::store::StoredMedium;
use super::{ClientError, Core, Result, unix_ms};
use crate::crypto::{MediumKey, Recipient};
use crate::records::VerifiedUser;

/// The devices to wrap to, and what was learnt choosing their keys.
pub(crate) struct Recipients {
    pub(crate) to: Vec<Recipient>,
    pub(crate) refused: Vec<String>,
    pub(crate) long_term: Vec<PublicKey>,
}

/// State key of the last valid medium-term key seen for `user`'s `device`.
fn medium_key_name(user: &Name, device: &PublicKey) -> String {
    format!("medium/{user}/{device}")
}

/// Largest encoded medium-term key decoded.
const MAX_MEDIUM_KEY_BYTES: usize = 512;

impl<D: Directory, C: Connector> Core<D, C> {
    /// Make a fresh medium-term key when the newest is past half its
    /// lifetime; drop expired ones. Returns whether a new key was made.
    pub(crate) fn rotate_medium(&self) -> Result<bool> {
        let now = unix_ms() / 1000;
        let life = self.config.medium_lifetime.as_secs().max(2);
        let mut mediums = self.mediums.write();
        let fresh = mediums
            .iter()
            .any(|m| m.key.created + life / 2 > now && m.key.expires > now);
        // Keep expired secrets a day longer for messages still in flight.
        mediums.retain(|m| m.key.expires + 86_400 > now);
        if fresh {
            return Ok(false);
        }
        mediums.push(
            self.device
                .medium_key(&self.config.params.genesis_hash, now, life)?,
        );
        let stored: Vec<StoredMedium> = mediums
            .iter()
            .map(|m| StoredMedium {
                key: m.key.clone(),
                secret: m.secret_bytes(),
            })
            .collect();
        // Synced before the key is published: a secret lost in a crash
        // would leave messages to its published key unreadable.
        let mut b = self.store.batch();
        b.state("mediums", &stored)?;
        b.commit()?;
        Ok(true)
    }

    /// Publish the newest medium-term key on `server`.
    pub(crate) async fn publish_medium(&self, server: &Name) -> Result<()> {
        let Some(key) = self
            .mediums
            .read()
            .iter()
            .max_by_key(|m| m.key.created)
            .map(|m| m.key.clone())
        else {
            return Ok(());
        };
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        conn.rpc
            .keys_publish(&token, &key)
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the medium-term key", e))
    }

    /// The devices of `user` that `keep` selects, to wrap to: each with
    /// its newest valid medium-term key from `server`, or the long-term
    /// key from the verified record.
    pub(crate) async fn recipients(
        &self,
        user: &VerifiedUser,
        server: &Name,
        keep: impl Fn(&PublicKey) -> bool,
    ) -> Result<Recipients> {
        let name = user.lookup().name().clone();
        let conn = self.conn(server).await?;
        let fetched = conn
            .rpc
            .keys_fetch(&name)
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the key fetch", e))?;
        let now = unix_ms() / 1000;
        let network = &self.config.params.genesis_hash;
        let mut best: HashMap<PublicKey, MediumKey> = HashMap::new();
        let mut refused = Vec::new();
        for bytes in fetched.iter().take(crate::records::MAX_DEVICES * 2) {
            let key = Some(bytes)
                .filter(|b| b.len() <= MAX_MEDIUM_KEY_BYTES)
                .and_then(|b| decode::<MediumKey>(b).ok());
            let Some(key) = key else {
                refused.push(format!("{server} sent a malformed key for {name}"));
                continue;
            };
            match key.check(network, &name, user.record(), now) {
                Ok(()) => {
                    if best
                        .get(&key.device)
                        .is_none_or(|b| b.created < key.created)
                    {
                        best.insert(key.device, key);
                    }
                }
                Err(e) => refused.push(format!("{server}'s key {:?} for {name}: {e}", key.kx)),
            }
        }
        if !refused.is_empty() {
            tracing::warn!(target: "client::send", %server, refused = ?refused, "refused medium-term keys");
        }
        // Forward secrecy is never lost silently: a device's last valid
        // medium-term key is remembered, and used while it is valid if the
        // server offers none; a device whose key was seen but is no longer
        // valid gets nothing (the message stays queued); only a device
        // whose key was never seen gets its long-term key, and the
        // delivery says so.
        let mut to = Vec::new();
        let mut long_term = Vec::new();
        let mut b = self.store.batch();
        for d in user.record().devices.iter().filter(|d| keep(&d.sign)) {
            let key_name = medium_key_name(&name, &d.sign);
            let remembered: Option<MediumKey> = self.store.state(&key_name)?;
            let kx = if let Some(k) = best.get(&d.sign) {
                if remembered.as_ref().is_none_or(|r| r.created < k.created) {
                    b.state(&key_name, k)?;
                }
                k.kx
            } else if let Some(k) = remembered {
                if k.check(network, &name, user.record(), now).is_err() {
                    return Err(ClientError::NoForwardSecrecy {
                        user: name,
                        device: d.sign,
                        server: server.clone(),
                    });
                }
                k.kx
            } else {
                long_term.push(d.sign);
                d.kx
            };
            to.push(Recipient { device: d.sign, kx });
        }
        b.commit()?;
        Ok(Recipients {
            to,
            refused,
            long_term,
        })
    }
}
