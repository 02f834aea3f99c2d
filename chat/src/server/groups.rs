//! Hosting groups: the log's compare-and-swap append, log reads, and the
//! message lane (post and long-poll with the epoch's access token).
//!
//! What a hosting server checks: every entry follows the log's rule with
//! its author's record as this server's light client verifies it, and
//! names this server; posts and reads show the access token of the current
//! or previous epoch. What it cannot do: read bodies or messages (they are
//! encrypted under keys it never sees), forge an entry (signed by an
//! admin's device), or show two members two different logs without their
//! noticing (messages carry the head they were sent under).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::RpcResult;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::sync::Notify;
use xirtam_proofs::{Hash, decode};

use super::{Concierge, err, invalid, parse_hex32, store_err};
use crate::api::{self, Delivered, GroupBatch, GroupCursor, GroupEntries, GroupHead, code};
use crate::group::crypto::{GroupMessage, access_lock};
use crate::group::log::{self, Entry, LogError, LogState, segment_id};
use crate::mailbox::GroupMeta;

/// Largest encoded entry.
pub(super) const MAX_ENTRY: usize = log::MAX_BODY + 64 * 1024;

/// Why an append was refused (decided under the store's write lock).
enum Refusal {
    /// `prev` is not the head.
    Moved(Box<GroupMeta>),
    /// The rule refuses it.
    Rule(LogError),
    /// The segment id does not match the entry (or its anchor).
    Segment,
    /// The log holds as many entries or bytes as it may.
    Full,
    /// The group moved away (a concurrent append closed the segment).
    Closed,
}

fn head_of(segment: &Hash, m: &GroupMeta) -> GroupHead {
    GroupHead {
        segment: segment.to_hex(),
        first: m.first,
        seq: m.state.seq,
        head: m.state.head.to_hex(),
    }
}

/// Base64 text of at most `max` bytes.
fn parse_b64_capped(what: &str, s: &str, max: usize) -> RpcResult<Vec<u8>> {
    if s.len() > max.div_ceil(3) * 4 {
        return Err(err(
            code::TOO_LARGE,
            format!("{what} is larger than {max} bytes"),
        ));
    }
    api::unb64(s).ok_or_else(|| invalid(format!("{what} is not base64")))
}

/// The answer to an entry that does not follow the head: `HEAD_MOVED`
/// (with the head) when it names an older one, `BAD_ENTRY` when its
/// author is no admin.
fn head_moved_or_refused(segment: &Hash, m: &GroupMeta, e: &Entry) -> ErrorObjectOwned {
    if e.prev != m.state.head {
        ErrorObjectOwned::owned(
            code::HEAD_MOVED,
            format!(
                "the log's head is now entry {} ({}); read the entries after yours and apply your change again",
                m.state.seq, m.state.head
            ),
            Some(head_of(segment, m)),
        )
    } else {
        err(
            code::BAD_ENTRY,
            format!("refused entry: {}", LogError::NotAdmin(e.author.clone())),
        )
    }
}

fn decode_entry(what: &str, text: &str) -> RpcResult<(Entry, Vec<u8>)> {
    let bytes = parse_b64_capped(what, text, MAX_ENTRY)?;
    let e = decode::<Entry>(&bytes)
        .map_err(|e| invalid(format!("{what} is not a group entry: {e}")))?;
    Ok((e, bytes))
}

impl Concierge {
    fn segment_meta(&self, segment: &Hash) -> RpcResult<GroupMeta> {
        self.store
            .group_meta(segment)
            .map_err(store_err)?
            .ok_or_else(|| {
                err(
                    code::NOT_FOUND,
                    format!("no group log {segment} on {}", self.name),
                )
            })
    }

    pub(super) async fn group_append(
        &self,
        segment: String,
        entry: String,
        anchor: Option<String>,
    ) -> RpcResult<GroupHead> {
        let segment = Hash(parse_hex32("segment", &segment)?);
        let (e, bytes) = decode_entry("entry", &entry)?;
        let anchor = anchor.map(|a| decode_entry("anchor", &a)).transpose()?;
        // Cheap checks first, before any lookup: an entry that cannot
        // apply costs no directory lookup.
        let existing = self.store.group_meta(&segment).map_err(store_err)?;
        match &existing {
            // An entry naming another server moves the group away: it is
            // taken as the segment's last.
            Some(m) if m.state.server != self.name => {
                return Err(ErrorObjectOwned::owned(
                    code::MOVED,
                    format!("group log {segment} moved to {}", m.state.server),
                    Some(serde_json::json!({ "server": m.state.server.to_string() })),
                ));
            }
            Some(m) if e.prev != m.state.head || !m.state.admins.contains(&e.author) => {
                return Err(head_moved_or_refused(&segment, m, &e));
            }
            Some(_) => {}
            None if e.server != self.name => {
                return Err(err(
                    code::BAD_ENTRY,
                    format!(
                        "a new log here must name this server ({}), not {}",
                        self.name, e.server
                    ),
                ));
            }
            None => {
                // A new segment: rate-limited per author (who must be
                // registered: the lookup below), not per segment, which
                // the caller picks.
                self.rate_check(&xirtam_proofs::hash::hash_tagged(
                    "xirtam/chat/group-create-rate/v1",
                    e.author.as_str().as_bytes(),
                ))?;
            }
        }
        if existing.is_some() {
            self.rate_check(&segment)?;
        }
        let author = self.user(&e.author).await?;
        let network = self.params.genesis_hash;
        let limits = &self.limits;
        let lane = api::group_lane(&segment);
        let outcome = self
            .store
            .group_append(
                &segment,
                &bytes,
                anchor.as_ref().map(|(a, b)| (a.seq, b.as_slice())),
                &lane,
                &self.name,
                limits.max_group_messages,
                |old| match (old, &anchor) {
                    (Some(m), _) => {
                        if m.state.server != self.name {
                            return Err(Refusal::Closed);
                        }
                        if e.prev != m.state.head {
                            return Err(Refusal::Moved(Box::new(m.clone())));
                        }
                        if m.state.seq.saturating_sub(m.first) >= limits.max_log_entries
                            || m.bytes.saturating_add(bytes.len() as u64) > limits.max_log_bytes
                        {
                            return Err(Refusal::Full);
                        }
                        log::next(&network, &m.state, &e, author.record()).map_err(Refusal::Rule)
                    }
                    (None, None) => {
                        if segment != segment_id(&e.group, &Hash::ZERO) {
                            return Err(Refusal::Segment);
                        }
                        log::genesis(&network, &e, author.record()).map_err(Refusal::Rule)
                    }
                    (None, Some((a, _))) => {
                        if a.group != e.group
                            || a.head() != e.prev
                            || segment != segment_id(&e.group, &e.prev)
                        {
                            return Err(Refusal::Segment);
                        }
                        log::next(&network, &LogState::at(a), &e, author.record())
                            .map_err(Refusal::Rule)
                    }
                },
            )
            .map_err(store_err)?;
        match outcome {
            Ok(meta) => {
                tracing::debug!(target: "server::groups", %segment, seq = meta.state.seq, "entry appended");
                self.waiter(&lane).notify_waiters();
                Ok(head_of(&segment, &meta))
            }
            Err(Refusal::Moved(m)) => Err(head_moved_or_refused(&segment, &m, &e)),
            Err(Refusal::Rule(r)) => Err(err(code::BAD_ENTRY, format!("refused entry: {r}"))),
            Err(Refusal::Segment) => Err(err(
                code::BAD_ENTRY,
                "the segment id does not match the entry (genesis: segment_id(group, 0); a move: segment_id(group, anchor head))",
            )),
            Err(Refusal::Closed) => {
                Err(err(code::MOVED, format!("group log {segment} moved away")))
            }
            Err(Refusal::Full) => Err(err(
                code::TOO_LARGE,
                format!(
                    "group log {segment} holds as many entries ({}) or bytes ({}) as this server keeps; move the group",
                    limits.max_log_entries, limits.max_log_bytes
                ),
            )),
        }
    }

    pub(super) fn group_log(
        &self,
        segment: String,
        from: u64,
        limit: u32,
    ) -> RpcResult<GroupEntries> {
        let segment = Hash(parse_hex32("segment", &segment)?);
        let meta = self.segment_meta(&segment)?;
        let limit = limit.clamp(1, api::MAX_LOG_BATCH) as usize;
        let entries = self
            .store
            .group_entries(&segment, from, limit, api::MAX_BATCH_BYTES)
            .map_err(store_err)?;
        Ok(GroupEntries {
            head: head_of(&segment, &meta),
            entries: entries.iter().map(|e| api::b64(e)).collect(),
        })
    }

    /// The segment and lane of a cursor whose token is admitted.
    fn admitted(&self, segment: &str, access: &str) -> RpcResult<(Hash, GroupMeta)> {
        let segment = Hash(parse_hex32("segment", segment)?);
        let token = parse_hex32("access", access)?;
        let meta = self.segment_meta(&segment)?;
        if !meta.admits(&access_lock(&token)) {
            return Err(err(
                code::FORBIDDEN,
                format!(
                    "this access token is not the current epoch's of group log {segment}; read the log for the new key"
                ),
            ));
        }
        Ok((segment, meta))
    }

    pub(super) async fn group_post(
        &self,
        segment: String,
        access: String,
        message: String,
    ) -> RpcResult<u64> {
        let (segment, meta) = self.admitted(&segment, &access)?;
        let bytes = parse_b64_capped("message", &message, self.limits.max_envelope)?;
        if meta.state.server != self.name {
            return Err(ErrorObjectOwned::owned(
                code::MOVED,
                format!("group log {segment} moved to {}", meta.state.server),
                Some(serde_json::json!({ "server": meta.state.server.to_string() })),
            ));
        }
        let m = decode::<GroupMessage>(&bytes)
            .map_err(|e| invalid(format!("not a group message: {e}")))?;
        if m.group != meta.state.group {
            return Err(invalid("the message is for another group"));
        }
        let lane = api::group_lane(&segment);
        self.rate_check(&lane)?;
        let seq = self
            .store
            .append_evicting(&lane, &bytes)
            .await
            .map_err(store_err)?;
        self.waiter(&lane).notify_waiters();
        Ok(seq)
    }

    pub(super) async fn group_receive(
        &self,
        cursors: Vec<GroupCursor>,
        wait_ms: u64,
    ) -> RpcResult<Vec<GroupBatch>> {
        if cursors.is_empty() || cursors.len() > api::MAX_GROUP_CURSORS {
            return Err(invalid(format!(
                "between 1 and {} group cursors",
                api::MAX_GROUP_CURSORS
            )));
        }
        let mut lanes: Vec<(Hash, Hash, u64, u64)> = Vec::with_capacity(cursors.len());
        for c in &cursors {
            let (segment, _) = self.admitted(&c.segment, &c.access)?;
            if lanes.iter().any(|(s, ..)| *s == segment) {
                return Err(invalid(format!("group log {segment} is named twice")));
            }
            lanes.push((segment, api::group_lane(&segment), c.after, c.log_after));
        }
        let per_lane = (api::MAX_BATCH_BYTES / lanes.len()).max(64 * 1024);
        let wait = Duration::from_millis(wait_ms).min(self.limits.max_wait);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notifies: Vec<Arc<Notify>> =
                lanes.iter().map(|(_, l, ..)| self.waiter(l)).collect();
            let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
                notifies.iter().map(|n| Box::pin(n.notified())).collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let mut out = Vec::with_capacity(lanes.len());
            let mut news = false;
            for (segment, lane, after, log_after) in &lanes {
                let meta = self.segment_meta(segment)?;
                let msgs = self
                    .store
                    .read(lane, *after, api::MAX_BATCH as usize, per_lane)
                    .map_err(store_err)?;
                news |= !msgs.is_empty() || meta.state.seq > *log_after;
                out.push(GroupBatch {
                    segment: segment.to_hex(),
                    log_seq: meta.state.seq,
                    messages: msgs
                        .into_iter()
                        .map(|m| Delivered {
                            seq: m.seq,
                            envelope: api::b64(&m.bytes),
                        })
                        .collect(),
                });
            }
            if news || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
            let _ = tokio::time::timeout_at(deadline, futures::future::select_all(waits)).await;
        }
    }
}
