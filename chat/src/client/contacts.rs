//! Contacts: the passes this device grants (registered on our servers,
//! sent to the peer end to end encrypted) and the passes peers gave us.
//! A message from someone we have not accepted is a request.

use std::collections::HashSet;

use xirtam_proofs::{Hash, Name};

use super::connection::{Connector, ServerConn, to_client_error};
use super::directory::Directory;
use super::store::Pending;
use super::{Core, Result, head_key, random32};
use crate::api;
use crate::crypto::KIND_PASS;

/// State key of the passes this device granted: `Vec<Grant>`.
pub(crate) const GRANTED_KEY: &str = "granted";

/// State key of the contact pass `peer` gave us (to deposit into their
/// contacts lane); ours to ourselves, for copies to our other devices.
pub(crate) fn pass_key(peer: &Name) -> String {
    format!("pass/{peer}")
}

/// A contact pass this device granted (registered on our servers).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Grant {
    /// Who holds it (our own name: the pass our other devices' copies use).
    pub peer: Name,
    /// The pass.
    pub pass: [u8; 32],
}

impl<D: Directory, C: Connector> Core<D, C> {
    /// The contact passes this device granted.
    pub fn granted(&self) -> Result<Vec<Grant>> {
        Ok(self.store.state(GRANTED_KEY)?.unwrap_or_default())
    }

    /// Is `peer` a contact (this device granted them a pass)?
    pub fn is_contact(&self, peer: &Name) -> Result<bool> {
        let mut contacts = self.contacts.lock();
        if contacts.is_none() {
            *contacts = Some(
                self.granted()?
                    .into_iter()
                    .map(|g| g.peer)
                    .collect::<HashSet<_>>(),
            );
        }
        Ok(contacts.as_ref().is_some_and(|c| c.contains(peer)))
    }

    /// Register pass hashes on `server`.
    pub(crate) async fn register_passes(&self, server: &Name, passes: &[[u8; 32]]) -> Result<()> {
        let token = self.token(server).await?;
        let conn = self.conn(server).await?;
        let hashes: Vec<Hash> = passes.iter().map(api::pass_hash).collect();
        conn.rpc
            .mailbox_passes(&token, &hashes)
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the contact passes", e))
    }

    /// Our own pass (copies to our other devices use it), created once.
    pub(crate) fn own_pass(&self, me: &Name) -> Result<Vec<Grant>> {
        let mut granted = self.granted()?;
        if !granted.iter().any(|g| &g.peer == me) {
            let pass = random32()?;
            let mut b = self.store.batch();
            granted.push(Grant {
                peer: me.clone(),
                pass,
            });
            b.state(GRANTED_KEY, &granted)?;
            b.state(&pass_key(me), &pass)?;
            b.commit()?;
            *self.contacts.lock() = None;
        }
        Ok(granted)
    }

    /// Accept `peer` as a contact: grant them a pass to our contacts lane
    /// (registered on the servers we read) and queue it to them, end to
    /// end encrypted. Their messages then skip the requests lane and its
    /// postage. Sending to someone accepts them. Returns `false` when they
    /// were a contact already.
    pub async fn accept(&self, peer: &Name) -> Result<bool> {
        let me = self.me()?;
        // One grant at a time: the list is read, extended and written.
        let _grants = self.grants.lock().await;
        if self.is_contact(peer)? {
            return Ok(false);
        }
        self.user(peer, false).await?;
        let pass = random32()?;
        // Registered on the current server first (an error leaves nothing
        // half done); the others are best effort.
        let servers = self.read_servers()?;
        for (i, s) in servers.iter().enumerate() {
            match self.register_passes(s, &[pass]).await {
                Ok(()) => {}
                Err(e) if i == 0 => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "client::contacts", server = %s, error = %e, "pass not registered")
                }
            }
        }
        let mut granted = self.granted()?;
        granted.push(Grant {
            peer: peer.clone(),
            pass,
        });
        let after: Hash = self.store.state(&head_key(peer))?.unwrap_or_default();
        let event = self.sign_event(&me, peer, after, KIND_PASS, pass.to_vec());
        let mut b = self.store.batch();
        b.state(GRANTED_KEY, &granted)?;
        b.pending(&Pending::new(self.next_local(), &event, peer))?;
        b.commit()?;
        *self.contacts.lock() = None;
        self.outbox_wake.notify_one();
        Ok(true)
    }
}
