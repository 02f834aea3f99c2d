//! The inbox: long-poll the current server and, for a grace period after a
//! move, the previous one; decrypt, check the signing device against the
//! sender's verified record, drop duplicates, store the batch and the
//! cursor in one batch, then acknowledge to the server. Envelopes whose
//! sender cannot be verified yet are kept aside and retried.

use std::collections::HashSet;
use std::time::Duration;

use xirtam_proofs::name::NameKind;
use xirtam_proofs::{Hash, Name, decode};

use super::connection::{Connector, ReadFrom, ServerConn, to_client_error};
use super::contacts::pass_key;
use super::devices::SyncPart;
use super::directory::Directory;
use super::groups::GroupDm;
use super::read::ReadMark;
use super::store::{self, Message};
use super::{ClientError, ClientEvent, Core, PollReport, Result, head_key, unix_ms};
use crate::api;
use crate::crypto::{self, CryptoError, KIND_GROUP, KIND_PASS, KIND_READ, KIND_SYNC, KIND_TEXT};
use crate::records::RecordError;

/// Most envelopes kept aside for a later verification; past it, new ones
/// are rejected at once (a flood of unverifiable envelopes must not grow
/// the store without bound).
pub const MAX_HELD: usize = 256;
/// Most rejections remembered for [`Core::rejected`].
pub const MAX_REJECTED_LOG: usize = 100;
/// State key of the envelopes held for verification (`/v2`: envelopes as
/// bytes; a list under the old key, hex, is not read).
const HELD_KEY: &str = "held/v2";
/// State key of the rejection log.
const REJECTED_KEY: &str = "rejected";

/// An envelope received but not verified yet (its sender could not be
/// looked up): kept in the local store, so the server can be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
struct Held {
    /// The server it came from.
    via: String,
    /// Its sequence number there.
    seq: u64,
    /// The envelope.
    envelope: Vec<u8>,
    /// When it was first seen (Unix ms).
    first_ms: u64,
    /// Why it could not be verified, last time.
    reason: String,
    /// It came through the requests lane.
    request: bool,
}

/// A rejected envelope, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Rejection {
    /// When it was rejected (Unix ms).
    pub time_ms: u64,
    /// `~server #seq: reason`.
    pub what: String,
}

fn cursor_key(server: &Name, requests: bool) -> String {
    if requests {
        format!("cursor-requests/{server}")
    } else {
        format!("cursor/{server}")
    }
}

enum Processed {
    New(Message),
    Duplicate,
    Rejected(String),
    /// The sender could not be verified now: try again later.
    Held(String, bool),
    /// A contact pass from a peer: our deposits to them use it.
    Pass {
        from: Name,
        pass: [u8; 32],
        id: Hash,
    },
    /// Part of a provisioning bundle from another of our devices.
    Sync(SyncPart, Hash),
    /// How far a conversation was read on another of our devices.
    Read(ReadMark, Hash),
    /// A group control message (handled by the group loop).
    Group(Name, GroupDm, Hash),
    /// Not for this device (a copy for our other devices), or a control
    /// event with nothing to do here.
    Skipped,
}

/// One processed envelope: where it came from, its sequence number there,
/// the envelope, when it was first held (if it was), the outcome.
type Filed = (Name, u64, Vec<u8>, Option<u64>, Processed);

impl<D: Directory, C: Connector> Core<D, C> {
    /// Read every server we read from once, waiting up to `wait` for
    /// something to arrive, then deliver due queued messages. Also rotates
    /// the medium-term key when due.
    pub async fn poll(&self, wait: Duration) -> Result<PollReport> {
        let mut report = self.receive(wait).await?;
        match self.flush().await {
            Ok(f) => {
                for (_, to, e) in f.queued {
                    report
                        .errors
                        .push(format!("message to {to} still queued: {e}"));
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        Ok(report)
    }

    /// The receiving half of [`Core::poll`]; one runs at a time (the
    /// cursors are read, advanced and written).
    pub async fn receive(&self, wait: Duration) -> Result<PollReport> {
        let me = self.me()?;
        let _one = self.receiving.lock().await;
        let mut report = PollReport::default();
        self.follow_record(&me, &mut report).await?;
        let list = self.read_servers()?;
        if self.rotate_medium()? {
            for s in &list {
                if let Err(e) = self.publish_medium(s).await {
                    report
                        .errors
                        .push(format!("{s}: publishing the new key: {e}"));
                }
            }
        }
        self.retry_held(&me, &mut report).await?;
        // Two lanes per server: contacts and requests, each with this
        // device's own cursor.
        let lanes = [(api::mailbox_id(&me), false), (api::requests_id(&me), true)];
        let mut calls = Vec::new();
        for s in &list {
            let mut from = Vec::new();
            for (id, requests) in &lanes {
                from.push(ReadFrom {
                    mailbox: *id,
                    after: self.store.state(&cursor_key(s, *requests))?.unwrap_or(0),
                });
            }
            match self.token(s).await {
                Ok(token) => calls.push((s.clone(), self.conn(s).await?, token, from)),
                Err(e) => {
                    self.check_refusal(&me, &e).await?;
                    report.errors.push(e.to_string());
                    self.drop_token(s, &e);
                }
            }
        }
        let mut pending: Vec<_> = calls
            .into_iter()
            .map(|(s, conn, token, from)| {
                Box::pin(async move {
                    let r = conn
                        .poll
                        .mailbox_receive(&token, &from, wait)
                        .await
                        .map_err(|e| to_client_error(&s, conn.poll.label(), "the receive", e));
                    (s, conn, token, r)
                })
            })
            .collect();
        // Long-poll every server at once; as soon as one has something,
        // stop waiting for the others (the next poll reads them).
        let mut results = Vec::new();
        while !pending.is_empty() {
            let (done, _, rest) = futures::future::select_all(pending).await;
            let has = matches!(&done.3, Ok(b) if b.iter().any(|x| !x.envelopes.is_empty()));
            results.push(done);
            pending = rest;
            if has {
                break;
            }
        }
        for (s, conn, token, r) in results {
            let batches = match r {
                Ok(b) => b,
                Err(e) => {
                    self.check_refusal(&me, &e).await?;
                    self.drop_token(&s, &e);
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            for batch in batches {
                let Some(&(id, requests)) = lanes.iter().find(|(id, _)| *id == batch.mailbox)
                else {
                    report
                        .errors
                        .push(format!("{s} answered for a mailbox we did not ask for"));
                    continue;
                };
                let Some(last) = batch.envelopes.iter().map(|m| m.0).max() else {
                    continue;
                };
                let mut processed = Vec::new();
                for (seq, envelope) in batch.envelopes {
                    let p = self.process(&me, &s, &envelope, requests).await?;
                    processed.push((s.clone(), seq, envelope, None, p));
                }
                // A provisioning bundle changes the grant list: under the
                // lock every change to it takes.
                let _grants = if processed.iter().any(|p| matches!(p.4, Processed::Sync(..))) {
                    Some(self.grants.lock().await)
                } else {
                    None
                };
                let held = self.store.state(HELD_KEY)?.unwrap_or_default();
                self.file(&me, processed, held, &mut report, |b| {
                    b.state(&cursor_key(&s, requests), &last)
                })?;
                drop(_grants);
                if let Err(e) = conn.rpc.mailbox_ack(&token, &id, last).await {
                    let e = to_client_error(&s, conn.rpc.label(), "the acknowledgement", e);
                    tracing::warn!(target: "client::receive", error = %e, "ack failed; the next one covers it");
                }
            }
        }
        Ok(report)
    }

    /// Our verified record decides which server is current: a move made
    /// by this device once it confirms, or by another device of ours.
    async fn follow_record(&self, me: &Name, report: &mut PollReport) -> Result<()> {
        let mut servers = self.servers()?;
        let now = unix_ms() / 1000;
        if servers
            .previous
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            servers.previous = None;
            self.store.put_state("servers", &servers)?;
        }
        let moving: Option<Name> = self.store.state(super::MOVING_KEY)?;
        if let Ok(mine) = self.user(me, false).await {
            let sign = self.device.device().sign;
            if mine.record().device(&sign).is_none() {
                return Err(ClientError::Removed {
                    name: me.clone(),
                    device: sign,
                });
            }
            let named = mine.record().server.clone();
            if servers.current.as_ref() != Some(&named) {
                if moving.as_ref() != Some(&named)
                    && let Err(e) = self.setup_server(&named).await
                {
                    report
                        .errors
                        .push(format!("following our record to {named}: {e}"));
                }
                self.switch_to(&named)?;
            }
        }
        Ok(())
    }

    /// Try again the envelopes held for verification: those that verify
    /// now are delivered, those held longer than `hold_unverified` are
    /// rejected. After the first one that still cannot be verified the rest
    /// wait for the next poll (the directory is likely unreachable).
    async fn retry_held(&self, me: &Name, report: &mut PollReport) -> Result<()> {
        let held: Vec<Held> = self.store.state(HELD_KEY)?.unwrap_or_default();
        if held.is_empty() {
            return Ok(());
        }
        let now = unix_ms();
        let limit = self.config.hold_unverified.as_millis() as u64;
        let mut processed = Vec::new();
        let mut blocked = false;
        for h in held {
            let Ok(via) = Name::new(&h.via) else {
                continue; // not from this software: drop it
            };
            let expired = now.saturating_sub(h.first_ms) >= limit;
            let p = if blocked && !expired {
                Processed::Held(h.reason.clone(), h.request)
            } else {
                match self.process(me, &via, &h.envelope, h.request).await? {
                    Processed::Held(why, _) if expired => Processed::Rejected(format!(
                        "{why}; gave up after {} s",
                        now.saturating_sub(h.first_ms) / 1000
                    )),
                    Processed::Held(why, r) => {
                        blocked = true;
                        Processed::Held(why, r)
                    }
                    other => other,
                }
            };
            processed.push((via, h.seq, h.envelope, Some(h.first_ms), p));
        }
        // The held list is rebuilt from what is still held (under the grant
        // lock if a provisioning bundle is among them).
        let _grants = if processed.iter().any(|p| matches!(p.4, Processed::Sync(..))) {
            Some(self.grants.lock().await)
        } else {
            None
        };
        self.file(me, processed, Vec::new(), report, |_| Ok(()))
    }

    /// File the outcome of processing envelopes in one store batch (with
    /// what `extra` adds, such as the cursor), then report them as
    /// events: new messages stored (a message twice in one round counts
    /// as a duplicate), rejections logged, envelopes that cannot be
    /// verified yet appended to `held`, which becomes the held list.
    fn file(
        &self,
        me: &Name,
        processed: Vec<Filed>,
        mut held: Vec<Held>,
        report: &mut PollReport,
        extra: impl FnOnce(&mut store::Batch<'_>) -> Result<(), store::StoreError>,
    ) -> Result<()> {
        // Conversation heads are read and moved by senders too.
        let _heads = self.heads.lock();
        let mut b = self.store.batch();
        let mut batch_seen = HashSet::new();
        let mut rejected: Vec<Rejection> = self.store.state(REJECTED_KEY)?.unwrap_or_default();
        let now = unix_ms();
        let mut events = Vec::new();
        let mut reads: std::collections::HashMap<Name, ReadMark> = std::collections::HashMap::new();
        let mut group_dms = Vec::new();
        for (via, seq, envelope, first_ms, p) in processed {
            match p {
                Processed::New(mut m) => {
                    if !batch_seen.insert(m.id) {
                        report.duplicates += 1;
                        continue;
                    }
                    m.local = self.next_local();
                    b.message(&m)?;
                    let peer = if &m.from == me { &m.to } else { &m.from };
                    b.state(&head_key(peer), &m.id)?;
                    if m.after != Hash::ZERO
                        && !batch_seen.contains(&m.after)
                        && !self.store.seen(&m.after)?
                    {
                        events.push(ClientEvent::Missing {
                            message: m.id,
                            after: m.after,
                        });
                    }
                    report.messages.push(m);
                }
                Processed::Sync(part, id) => {
                    if !batch_seen.insert(id) {
                        report.duplicates += 1;
                        continue;
                    }
                    b.seen(&id)?;
                    let (n, of) = (part.part, part.parts);
                    let added = self.apply_sync(part, &mut batch_seen, &mut b)?;
                    report.synced += added;
                    events.push(ClientEvent::Synced {
                        part: n,
                        parts: of,
                        messages: added,
                    });
                }
                Processed::Read(mark, id) => {
                    if !batch_seen.insert(id) {
                        report.duplicates += 1;
                        continue;
                    }
                    b.seen(&id)?;
                    // The newest mark per conversation of this round.
                    match reads.get(&mark.peer) {
                        Some(m) if m.time_ms >= mark.time_ms => {}
                        _ => {
                            reads.insert(mark.peer.clone(), mark);
                        }
                    }
                }
                Processed::Group(from, dm, id) => {
                    if !batch_seen.insert(id) {
                        report.duplicates += 1;
                        continue;
                    }
                    b.seen(&id)?;
                    self.file_group_dm(&from, dm, &mut b, &mut group_dms)?;
                }
                Processed::Duplicate => report.duplicates += 1,
                Processed::Skipped => report.skipped += 1,
                Processed::Pass { from, pass, id } => {
                    if !batch_seen.insert(id) {
                        report.duplicates += 1;
                        continue;
                    }
                    b.state(&pass_key(&from), &pass)?;
                    b.seen(&id)?;
                    events.push(ClientEvent::Pass(from.clone()));
                    report.passes.push(from);
                }
                Processed::Rejected(why) => {
                    let what = format!("{via} #{seq}: {why}");
                    report.rejected.push(what.clone());
                    events.push(ClientEvent::Rejected(what.clone()));
                    rejected.push(Rejection { time_ms: now, what });
                }
                Processed::Held(why, request) => {
                    let what = format!("{via} #{seq}: {why}");
                    if held.len() >= MAX_HELD {
                        let what = format!("{what}; rejected: {MAX_HELD} envelopes already wait");
                        report.rejected.push(what.clone());
                        events.push(ClientEvent::Rejected(what.clone()));
                        rejected.push(Rejection { time_ms: now, what });
                        continue;
                    }
                    report.held.push(what);
                    held.push(Held {
                        via: via.to_string(),
                        seq,
                        envelope,
                        first_ms: first_ms.unwrap_or(now),
                        reason: why,
                        request,
                    });
                }
            }
        }
        for mark in reads.into_values() {
            if self.apply_read(&mark, &mut b)? {
                events.push(ClientEvent::Read {
                    peer: mark.peer,
                    id: mark.id,
                });
            }
        }
        let excess = rejected.len().saturating_sub(MAX_REJECTED_LOG);
        rejected.drain(..excess);
        b.state(REJECTED_KEY, &rejected)?;
        b.state(HELD_KEY, &held)?;
        extra(&mut b)?;
        b.commit()?;
        drop(_heads);
        if report.synced > 0
            || events
                .iter()
                .any(|e| matches!(e, ClientEvent::Synced { .. }))
        {
            // Contacts may have come with it: read them again.
            *self.contacts.lock() = None;
        }
        // Messages first, in arrival order, then what was noticed.
        for m in &report.messages {
            self.emit(if m.request {
                ClientEvent::Request(m.clone())
            } else {
                ClientEvent::Message(m.clone())
            });
        }
        for e in events {
            self.emit(e);
        }
        Ok(())
    }

    /// The most recent rejected envelopes (at most [`MAX_REJECTED_LOG`]),
    /// oldest first.
    pub fn rejected(&self) -> Result<Vec<Rejection>> {
        Ok(self.store.state(REJECTED_KEY)?.unwrap_or_default())
    }

    /// How many envelopes wait for their sender to be verified.
    pub fn held(&self) -> Result<usize> {
        Ok(self
            .store
            .state::<Vec<Held>>(HELD_KEY)?
            .map_or(0, |h| h.len()))
    }

    /// Open and check one envelope (`requests`: it came through the
    /// requests lane).
    async fn process(
        &self,
        me: &Name,
        via: &Name,
        envelope: &[u8],
        requests: bool,
    ) -> Result<Processed> {
        let Ok(env) = decode::<crypto::Envelope>(envelope) else {
            return Ok(Processed::Rejected("not an envelope".into()));
        };
        let opened = crypto::open(&env, &self.device, &self.mediums.read());
        let ev = match opened {
            Ok(ev) => ev,
            // A copy for our other devices (or junk not meant for anyone
            // here): nothing to show.
            Err(CryptoError::NotForMe) => return Ok(Processed::Skipped),
            Err(e) => return Ok(Processed::Rejected(format!("cannot decrypt: {e}"))),
        };
        let id = ev.id();
        if self.store.seen(&id)? {
            return Ok(Processed::Duplicate);
        }
        let sender = ev.event.sender.clone();
        if sender.kind() != NameKind::User {
            return Ok(Processed::Rejected(format!(
                "sender {sender} is not a user"
            )));
        }
        let peer_me = if &sender == me {
            ev.event.recipient.clone()
        } else {
            me.clone()
        };
        // Cached record first; a device we do not know may be new, so look
        // again once before refusing. A lookup that gives no verified
        // answer, or a sender not registered (yet), holds the envelope back
        // for a later try; a record that is verified and wrong rejects it.
        let mut user = match self.user(&sender, false).await {
            Ok(u) => u,
            Err(e) => return unverified(&sender, e, requests),
        };
        if user.record().device(&ev.event.device).is_none() {
            user = match self.user(&sender, true).await {
                Ok(u) => u,
                Err(e) => return unverified(&sender, e, requests),
            };
        }
        if let Err(e) = ev.check(
            &self.config.params.genesis_hash,
            &sender,
            user.record(),
            &peer_me,
        ) {
            return Ok(Processed::Rejected(format!(
                "event claiming to be from {sender}: {e} (record at height {})",
                user.lookup().height()
            )));
        }
        match ev.event.kind {
            KIND_TEXT => {}
            // A bundle for a newly linked device of ours (sealed to it
            // alone, so this device is that one).
            KIND_SYNC if &sender == me => {
                // Only from the device that approved this one, within an
                // hour of the link: no other device of ours can plant
                // history or contacts here.
                let from: Option<(xirtam_proofs::PublicKey, u64)> =
                    self.store.state(super::devices::SYNC_FROM_KEY)?;
                if !from.is_some_and(|(d, until)| d == ev.event.device && unix_ms() < until) {
                    return Ok(Processed::Rejected(format!(
                        "a provisioning bundle from our device {} that did not link this one (or too late)",
                        ev.event.device
                    )));
                }
                return Ok(match decode::<SyncPart>(&ev.event.body) {
                    Ok(part) => Processed::Sync(part, id),
                    Err(e) => Processed::Rejected(format!("a malformed provisioning bundle: {e}")),
                });
            }
            KIND_SYNC => {
                return Ok(Processed::Rejected(format!(
                    "a provisioning bundle from {sender}: only our own devices send those"
                )));
            }
            KIND_READ if &sender == me => {
                return Ok(match decode::<ReadMark>(&ev.event.body) {
                    Ok(mark) => Processed::Read(mark, id),
                    Err(e) => Processed::Rejected(format!("a malformed read mark: {e}")),
                });
            }
            KIND_READ => {
                return Ok(Processed::Rejected(format!(
                    "a read mark from {sender}: only our own devices send those"
                )));
            }
            KIND_GROUP => {
                return Ok(match decode::<GroupDm>(&ev.event.body) {
                    // Our own request for a key, copied to our other
                    // devices: nothing to do.
                    Ok(GroupDm::Ask { .. }) if &sender == me => Processed::Skipped,
                    Ok(dm) => Processed::Group(sender, dm, id),
                    Err(e) => Processed::Rejected(format!("a malformed group message: {e}")),
                });
            }
            // Our own grant, copied to our other devices: nothing to do.
            KIND_PASS if &sender == me => return Ok(Processed::Skipped),
            KIND_PASS => {
                return Ok(match <[u8; 32]>::try_from(ev.event.body.as_slice()) {
                    Ok(pass) => Processed::Pass {
                        from: sender,
                        pass,
                        id,
                    },
                    Err(_) => {
                        Processed::Rejected(format!("contact pass from {sender} is not 32 bytes"))
                    }
                });
            }
            k => {
                return Ok(Processed::Rejected(format!(
                    "event of unknown kind {k} from {sender}"
                )));
            }
        }
        // A request is a message from someone this device has not
        // accepted, whatever lane it came through: a contact's pass, reused
        // by someone else, must not make a stranger look like a contact.
        let request = &sender != me && !self.is_contact(&sender)?;
        let text = String::from_utf8_lossy(&ev.event.body).into_owned();
        Ok(Processed::New(Message {
            local: 0,
            id,
            from: sender,
            to: ev.event.recipient.clone(),
            time_ms: ev.event.time,
            after: ev.event.after,
            text,
            delivered: true,
            verified_at: user.lookup().height(),
            via: Some(via.clone()),
            request,
        }))
    }

    /// Every stored message, each after the one it follows.
    pub fn inbox(&self) -> Result<Vec<Message>> {
        Ok(super::order_by_after(self.store.messages()?))
    }
}

/// What a failed sender lookup means for an envelope.
fn unverified(sender: &Name, e: ClientError, requests: bool) -> Result<Processed> {
    match e {
        ClientError::Lookup(e) => Ok(Processed::Held(
            format!("sender {sender} cannot be verified now: {e}"),
            requests,
        )),
        ClientError::Record(RecordError::NotRegistered(_)) => Ok(Processed::Held(
            format!("sender {sender} is not registered (not yet confirmed, or a stranger)"),
            requests,
        )),
        ClientError::Record(e) => Ok(Processed::Rejected(format!("sender {sender}: {e}"))),
        other => Err(other),
    }
}
