//! The outbox: a message is stored and queued in one batch, then
//! delivered (encrypt once, wrap per device, deposit, check the server's
//! signed receipt). Failures stay queued with backoff, across restarts; a
//! retry re-resolves the recipient. Deliveries are serialised: two tasks
//! flushing at once never deposit a message twice.

use std::time::Duration;

use xirtam_proofs::{Hash, Name, decode, encode};

use super::connection::{Connector, ServerConn, to_client_error};
use super::contacts::pass_key;
use super::directory::Directory;
use super::keys::Recipients;
use super::store::{Message, Pending};
use super::{ClientError, ClientEvent, Core, Delivery, FlushReport, Result, head_key, unix_ms};
use crate::api::{self, code};
use crate::crypto::{self, KIND_TEXT, SignedEvent};

/// Backoff before retry `attempts`: `base` doubling, at most 256 times
/// `base`.
pub(crate) fn backoff(attempts: u32, base: Duration) -> Duration {
    base.saturating_mul(1 << attempts.min(8))
}

impl<D: Directory, C: Connector> Core<D, C> {
    /// Store and queue `text` to `to` (after checking the recipient
    /// exists, and accepting them as a contact); a running client
    /// ([`super::Client::start`]) delivers it and reports the outcome as
    /// an event.
    pub async fn queue(&self, to: &Name, text: &str) -> Result<Message> {
        let me = self.me()?;
        self.check_listed(&me).await?;
        if text.len() > crypto::MAX_BODY {
            return Err(ClientError::Invalid(format!(
                "message of {} bytes; at most {}",
                text.len(),
                crypto::MAX_BODY
            )));
        }
        self.user(to, false).await?;
        // Writing to someone accepts them as a contact.
        self.accept(to).await?;
        // The conversation head is read and moved in one step.
        let _heads = self.heads.lock();
        let after: Hash = self.store.state(&head_key(to))?.unwrap_or_default();
        let event = self.sign_event(&me, to, after, KIND_TEXT, text.as_bytes().to_vec());
        let local = self.next_local();
        let msg = Message {
            local,
            id: event.id(),
            from: me,
            to: to.clone(),
            time_ms: event.event.time,
            after,
            text: text.to_owned(),
            delivered: false,
            verified_at: 0,
            via: None,
            request: false,
        };
        let mut b = self.store.batch();
        b.message(&msg)?;
        b.pending(&Pending::new(local, &event, to))?;
        b.state(&head_key(to), &msg.id)?;
        b.commit()?;
        self.outbox_wake.notify_one();
        Ok(msg)
    }

    /// Send `text` to `to`: [`Core::queue`] it, then try to deliver
    /// everything queued now.
    pub async fn send(&self, to: &Name, text: &str) -> Result<(Message, FlushReport)> {
        let msg = self.queue(to, text).await?;
        let report = self.flush().await?;
        let msg = self.store.message(msg.local)?.unwrap_or(msg);
        Ok((msg, report))
    }

    /// Messages still queued.
    pub fn outbox(&self) -> Result<Vec<Pending>> {
        Ok(self.store.outbox()?)
    }

    /// Try to deliver every queued message that is due. If one gets
    /// through, the others waiting out a backoff get one early try too: a
    /// server that answers again (after a restart, or a network that came
    /// back) should not leave them queued until their backoff ends, a
    /// minute or more later. A failed early try keeps its schedule.
    pub async fn flush(&self) -> Result<FlushReport> {
        self.flush_with(false).await
    }

    /// [`Core::flush`]; with `early`, messages waiting out a backoff get
    /// an early try whatever happens to the due ones (a server we read
    /// from answers again).
    pub(crate) async fn flush_with(&self, early: bool) -> Result<FlushReport> {
        let _one = self.flushing.lock().await;
        let mut report = FlushReport::default();
        let now = unix_ms();
        let mut waiting = Vec::new();
        let mut got_through = early;
        for p in self.store.outbox()? {
            if p.next_try_ms > now {
                waiting.push(p);
                continue;
            }
            got_through |= self.try_deliver(p, true, &mut report).await?;
        }
        for p in waiting {
            if got_through {
                self.try_deliver(p, false, &mut report).await?;
            } else {
                report
                    .queued
                    .push((p.local, p.to.clone(), p.last_error.clone()));
            }
        }
        Ok(report)
    }

    /// When the next queued message is due (Unix ms), if any.
    pub(crate) fn next_due(&self) -> Result<Option<u64>> {
        Ok(self.store.outbox()?.iter().map(|p| p.next_try_ms).min())
    }

    /// Try to deliver queued message `p`; on failure it stays queued, with
    /// its backoff grown if `due` (an early try leaves it as it was).
    /// Returns whether it was delivered.
    async fn try_deliver(
        &self,
        mut p: Pending,
        due: bool,
        report: &mut FlushReport,
    ) -> Result<bool> {
        match self.deliver(&p).await {
            Ok(d) => {
                let mut b = self.store.batch();
                b.sent(p.local)?;
                // Control events (contact passes) have no message and
                // are not reported.
                let shown = if let Some(mut m) = self.store.message(p.local)? {
                    m.delivered = true;
                    m.via = Some(d.server.clone());
                    m.verified_at = d.record_height;
                    b.message(&m)?;
                    true
                } else {
                    false
                };
                b.commit()?;
                if shown {
                    self.emit(ClientEvent::Delivered(d.clone()));
                    report.delivered.push(d);
                }
                Ok(true)
            }
            Err(e) => {
                if due {
                    p.attempts += 1;
                    p.next_try_ms = unix_ms()
                        + backoff(p.attempts, self.config.retry_backoff).as_millis() as u64;
                    p.last_error = e.to_string();
                    tracing::warn!(target: "client::send", to = %p.to, attempts = p.attempts, error = %e, "delivery failed; will retry");
                    let mut b = self.store.batch();
                    b.pending(&p)?;
                    b.commit()?;
                    self.emit(ClientEvent::Retrying {
                        local: p.local,
                        to: p.to.clone(),
                        attempts: p.attempts,
                        error: p.last_error.clone(),
                    });
                }
                report
                    .queued
                    .push((p.local, p.to.clone(), p.last_error.clone()));
                Ok(false)
            }
        }
    }

    /// Deposit into `to`'s contacts lane with the pass they gave us, or
    /// (no pass, or refused) into their requests lane with postage.
    pub(crate) async fn deposit(
        &self,
        server: &Name,
        to: &Name,
        bytes: &[u8],
    ) -> Result<api::Receipt> {
        let pass: Option<[u8; 32]> = self.store.state(&pass_key(to))?;
        if let Some(pass) = pass {
            match self.deposit_lane(server, to, bytes, Some(pass)).await {
                Err(ClientError::Refused {
                    code: code::PASS_REFUSED,
                    ..
                }) => {
                    tracing::info!(target: "client::send", %to, %server, "contact pass refused; paying postage")
                }
                other => return other,
            }
        }
        self.deposit_lane(server, to, bytes, None).await
    }

    async fn deposit_lane(
        &self,
        server: &Name,
        to: &Name,
        bytes: &[u8],
        pass: Option<[u8; 32]>,
    ) -> Result<api::Receipt> {
        let (mailbox, postage) = match pass {
            Some(_) => (api::mailbox_id(to), None),
            None => {
                let id = api::requests_id(to);
                (id, Some(self.postage(server, &id, bytes).await?))
            }
        };
        let conn = self.conn(server).await?;
        let r = conn
            .rpc
            .mailbox_deposit(to, bytes, pass.as_ref(), postage)
            .await
            .map_err(|e| to_client_error(server, conn.rpc.label(), "the deposit", e))?;
        let key = conn.server.record().key;
        api::check_receipt(server, &key, &mailbox, bytes, &r).map_err(|reason| {
            ClientError::Misbehaved {
                server: server.clone(),
                reason,
            }
        })?;
        Ok(r)
    }

    /// Postage for depositing `bytes` into requests mailbox `mailbox` on
    /// `server`: proof of work on a block a little under our verified tip
    /// (so the server, a block or two behind, knows it too).
    async fn postage(&self, server: &Name, mailbox: &Hash, bytes: &[u8]) -> Result<api::Postage> {
        let bits = self.postage_bits(server).await?;
        if bits > api::MAX_POSTAGE_BITS {
            return Err(ClientError::Misbehaved {
                server: server.clone(),
                reason: format!(
                    "it asks for postage of {bits} bits (at most {} are paid)",
                    api::MAX_POSTAGE_BITS
                ),
            });
        }
        let (height, block) = self
            .dir
            .recent_block(2)
            .ok_or_else(|| ClientError::Invalid("no verified block for postage".into()))?;
        let (m, env) = (*mailbox, api::envelope_hash(bytes));
        let nonce = tokio::task::spawn_blocking(move || api::solve_postage(&m, &env, &block, bits))
            .await
            .map_err(|e| ClientError::Invalid(format!("postage worker failed: {e}")))?;
        Ok(api::Postage {
            height,
            block: block.to_hex(),
            nonce,
        })
    }

    async fn deliver(&self, p: &Pending) -> Result<Delivery> {
        let me = self.me()?;
        let event: SignedEvent = decode(&p.event)
            .map_err(|e| ClientError::Invalid(format!("queued event does not decode: {e}")))?;
        // A retry looks the recipient up again: the record may have moved.
        let user = self.user(&p.to, p.attempts > 0).await?;
        let server = user.record().server.clone();
        if p.attempts > 0 {
            self.forget_conn(&server);
        }
        // An event to ourselves (a read mark) goes to our other devices.
        let own = p.to == me;
        let this = self.device.device().sign;
        let Recipients {
            to,
            refused,
            long_term,
        } = self
            .recipients(&user, &server, |d| !own || d != &this)
            .await?;
        if to.is_empty() {
            // Ourselves, with no other device: nobody to tell.
            return Ok(Delivery {
                local: p.local,
                to: p.to.clone(),
                server,
                seq: 0,
                record_height: user.lookup().height(),
                server_height: 0,
                devices: 0,
                refused_keys: refused,
                long_term,
            });
        }
        // A copy for our other devices, through our own server: its own
        // envelope (with its own content key). One envelope for both would
        // carry wraps naming the recipient's devices in our mailbox and
        // ours in theirs, telling each server who talks to whom.
        let mut copy = None;
        if !own
            && let Ok(mine) = self.user(&me, false).await
            && mine.record().devices.len() > 1
        {
            let own_server = mine.record().server.clone();
            let skip = self.device.device().sign;
            match self.recipients(&mine, &own_server, |d| d != &skip).await {
                Ok(r) if !r.to.is_empty() => copy = Some((own_server, r.to)),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "client::send", error = %e, "no copy for our other devices: their keys are not available")
                }
            }
        }
        let (envelope, copy) = {
            let mut sealer = self.sealer.lock();
            let envelope = sealer.seal(&event, &to)?;
            let copy = match copy {
                Some((server, own)) => Some((server, sealer.seal(&event, &own)?)),
                None => None,
            };
            (envelope, copy)
        };
        let receipt = self.deposit(&server, &p.to, &encode(&envelope)).await?;
        let server_height = self.conn(&server).await?.server.lookup().height();
        if let Some((own_server, env)) = copy
            && let Err(e) = self.deposit(&own_server, &me, &encode(&env)).await
        {
            tracing::warn!(target: "client::send", error = %e, "could not deposit the copy for our other devices");
        }
        Ok(Delivery {
            local: p.local,
            to: p.to.clone(),
            server,
            seq: receipt.seq,
            record_height: user.lookup().height(),
            server_height,
            devices: to.len(),
            refused_keys: refused,
            long_term,
        })
    }
}
