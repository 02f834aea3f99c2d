//! Groups, the client side (docs/chat.md, "Groups"; ADR 0013).
//!
//! A group is hosted on one concierge. This device keeps, per group, the
//! log state it has verified ([`GroupState`]): every entry is checked with
//! the log's rule against its author's verified record before it counts,
//! and its encrypted body (roster, settings) is opened with the epoch key.
//! Changes go through [`Core::group_change`]: a compare-and-swap on the
//! head; the loser of a race reads the winner's entries, applies them and
//! makes its change again on the new head (or finds it already made).
//!
//! Messages are encrypted once under the epoch key and carry the log
//! position and head they were sent under; a member that sees a head that
//! differs from its own at that position, or a position its server does
//! not show it, marks the group forked ([`ClientEvent::GroupForked`]).
//! A device that cannot open a rotation keeps the group and asks an admin
//! by DM to re-share the key; it is never treated as removed.

use std::collections::HashMap;
use std::time::Duration;

use bincode::{Decode, Encode};
use xirtam_proofs::{Hash, Name, PublicKey, Signature, decode, encode};

use super::connection::{CallError, Connector, GroupReadFrom, ServerConn, to_client_error};
use super::directory::Directory;
use super::store::{GroupMsg, Pending};
use super::{ClientError, ClientEvent, Core, Result, random32, unix_ms};
use crate::api::code;
use crate::crypto::KIND_GROUP;
use crate::group::crypto::{
    self as gc, Body, Change, EntryBody, EpochKey, GROUP_LEAVE, GROUP_TEXT, GroupEvent,
    GroupMessage,
};
use crate::group::log::{self, ENTRY_SIG_TAG, Entry, LogState, segment_id};
use crate::records::Device;

/// State key of the list of groups.
const GROUPS_KEY: &str = "groups";
/// State key of group DMs waiting to be handled by the group loop.
const GROUP_DMS_KEY: &str = "group-dms";
/// Most group DMs kept waiting (a flood of them is dropped past it).
const MAX_GROUP_DMS: usize = 256;
/// Most group DMs kept waiting from one sender.
const MAX_GROUP_DMS_PER_SENDER: usize = 16;
/// Epoch keys kept per group (older messages cannot be read any more).
const KEPT_EPOCHS: usize = 8;
/// Log heads kept per group, to compare with those messages carry.
const KEPT_HEADS: usize = 1024;
/// Most compare-and-swap attempts of one change.
const MAX_TRIES: usize = 16;

fn group_key(g: &Hash) -> String {
    format!("group/{}", g.to_hex())
}

fn invite_key(g: &Hash) -> String {
    format!("group-invite/{}", g.to_hex())
}

/// An invitation to a group (sent by DM): it pins the log entry the
/// invitee starts from (position and head) and the hosting server's key,
/// and carries that epoch's key.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Invite {
    /// The group.
    pub group: Hash,
    /// Its name when invited.
    pub name: String,
    /// The hosting server.
    pub server: Name,
    /// Its key, from its verified record when the invitation was made.
    pub server_key: PublicKey,
    /// The log segment there.
    pub segment: Hash,
    /// Position of the pinned entry.
    pub seq: u64,
    /// Its head.
    pub head: Hash,
    /// Its epoch.
    pub epoch: u64,
    /// That epoch's key.
    pub key: EpochKey,
}

/// A group control message, sent by DM (event kind [`KIND_GROUP`]).
#[derive(Debug, Clone, Encode, Decode)]
pub enum GroupDm {
    /// An invitation (to ourselves: another of our devices joined).
    Invite(Invite),
    /// An epoch key re-shared by an admin.
    Key {
        /// The group.
        group: Hash,
        /// The epoch.
        epoch: u64,
        /// Its key.
        key: EpochKey,
    },
    /// A member's device could not open a rotation: please re-share.
    Ask {
        /// The group.
        group: Hash,
        /// The epoch it lacks.
        epoch: u64,
    },
    /// An admin moved the group's log to another server: the entry that
    /// continues the log there (signed by an admin at the head it
    /// follows, which is what members check; the DM's sender proves
    /// nothing).
    Moved {
        /// The group.
        group: Hash,
        /// The new server.
        server: Name,
        /// Its key, from its verified record when the move was made.
        server_key: PublicKey,
        /// The new segment.
        segment: Hash,
        /// The move entry, encoded.
        entry: Vec<u8>,
    },
}

/// What this device knows of a group.
#[derive(Debug, Clone, Encode, Decode)]
pub struct GroupState {
    /// The group.
    pub group: Hash,
    /// The hosted log segment read.
    pub segment: Hash,
    /// The verified log state.
    pub log: LogState,
    /// The settings and roster, as of the last entry this device could
    /// open.
    pub body: Body,
    /// Position of that entry (behind `log.seq` while this device lacks
    /// the key of the latest entry: it must not make changes then).
    pub body_seq: u64,
    /// Epoch keys known, oldest first.
    pub keys: Vec<(u64, EpochKey)>,
    /// Last lane sequence number processed.
    pub cursor: u64,
    /// Recent `(position, head)` pairs of the log.
    pub heads: Vec<(u64, Hash)>,
    /// An epoch whose key this device lacks (asked for by DM).
    pub missing: Option<u64>,
    /// The epoch last asked for.
    pub asked: Option<u64>,
    /// Set when the server showed a log that disagrees with another
    /// member's, or broke the rule.
    pub forked: Option<String>,
    /// The last entry, encoded (the anchor of a move).
    pub last: Vec<u8>,
    /// Messages stored for this group on this device.
    pub stored: u64,
    /// When this device saw the current epoch start (Unix ms): an admin's
    /// device rotates the key once it is older than [`ROTATION_PERIOD`].
    pub rotated_ms: u64,
    /// The lane the group had before it moved, still read for a grace
    /// period (messages posted there by members who had not seen the move
    /// yet are not lost).
    pub previous: Option<Previous>,
}

/// A lane a group moved away from.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Previous {
    /// Its segment.
    pub segment: Hash,
    /// Its server.
    pub server: Name,
    /// Last sequence number processed there.
    pub cursor: u64,
    /// The epoch whose access token reads it.
    pub epoch: u64,
    /// Read until then (Unix ms).
    pub until_ms: u64,
}

/// How old an epoch key gets before an admin's device rotates it.
pub const ROTATION_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long the lane a group moved from is still read.
pub const MOVE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

impl GroupState {
    /// The key of `epoch`, if known.
    pub fn key(&self, epoch: u64) -> Option<&EpochKey> {
        self.keys.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k)
    }

    fn add_key(&mut self, epoch: u64, key: EpochKey) {
        if self.key(epoch).is_none() {
            self.keys.push((epoch, key));
            self.keys.sort_by_key(|(e, _)| *e);
            let excess = self.keys.len().saturating_sub(KEPT_EPOCHS);
            self.keys.drain(..excess);
        }
        if self.missing.is_some_and(|m| self.key(m).is_some()) {
            self.missing = None;
        }
    }

    /// Open the latest entry's body if it was not (its key arrived later).
    fn reopen_body(&mut self) {
        if self.body_seq == self.log.seq {
            return;
        }
        let Ok(e) = decode::<Entry>(&self.last) else {
            return;
        };
        let Ok(eb) = decode::<EntryBody>(&e.body) else {
            return;
        };
        if let Some(k) = self.key(e.epoch)
            && let Ok(b) = gc::open_body(&self.group, e.seq, &e.prev, k, &eb.body)
        {
            self.body = b;
            self.body_seq = e.seq;
        }
    }

    fn push_head(&mut self, seq: u64, head: Hash) {
        self.heads.push((seq, head));
        let excess = self.heads.len().saturating_sub(KEPT_HEADS);
        self.heads.drain(..excess);
    }

    fn head_at(&self, seq: u64) -> Option<Hash> {
        self.heads.iter().find(|(s, _)| *s == seq).map(|(_, h)| *h)
    }

    fn info(&self) -> GroupInfo {
        GroupInfo {
            group: self.group,
            name: self.body.name.clone(),
            server: self.log.server.clone(),
            admins: self.log.admins.clone(),
            members: self.body.roster.clone(),
            epoch: self.log.epoch,
            seq: self.log.seq,
            head: self.log.head,
            waiting_key: self.missing,
            forked: self.forked.clone(),
            admins_only: self.body.admins_only,
            history: self.body.history,
        }
    }
}

/// A group as a UI shows it.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// The group.
    pub group: Hash,
    /// Its name.
    pub name: String,
    /// The hosting server.
    pub server: Name,
    /// Admins.
    pub admins: Vec<Name>,
    /// Members (admins included).
    pub members: Vec<Name>,
    /// Key epoch.
    pub epoch: u64,
    /// Log position.
    pub seq: u64,
    /// Log head.
    pub head: Hash,
    /// An epoch whose key this device waits for.
    pub waiting_key: Option<u64>,
    /// Why the group is marked forked, if it is.
    pub forked: Option<String>,
    /// Only admins may post.
    pub admins_only: bool,
    /// New members may read the current epoch's earlier messages.
    pub history: bool,
}

/// A change an admin makes: the admins and body after it, and whether the
/// key rotates.
struct Plan {
    admins: Vec<Name>,
    body: Body,
    rotate: bool,
}

/// What [`Core::group_poll`] did.
#[derive(Debug, Clone, Default)]
pub struct GroupReport {
    /// New messages.
    pub messages: Vec<GroupMsg>,
    /// Messages refused, and why.
    pub rejected: Vec<String>,
    /// Errors reading a server.
    pub errors: Vec<String>,
}

impl<D: Directory, C: Connector> Core<D, C> {
    fn group_ids(&self) -> Result<Vec<Hash>> {
        Ok(self.store.state(GROUPS_KEY)?.unwrap_or_default())
    }

    fn load_group(&self, g: &Hash) -> Result<GroupState> {
        self.store
            .state(&group_key(g))?
            .ok_or_else(|| ClientError::Invalid(format!("no group {g} on this device")))
    }

    fn save_group(&self, st: &GroupState, b: &mut super::store::Batch<'_>) -> Result<()> {
        let mut ids = self.group_ids()?;
        if !ids.contains(&st.group) {
            ids.push(st.group);
            b.state(GROUPS_KEY, &ids)?;
        }
        b.state(&group_key(&st.group), st)?;
        Ok(())
    }

    fn commit_group(&self, st: &GroupState) -> Result<()> {
        let mut b = self.store.batch();
        self.save_group(st, &mut b)?;
        b.commit()?;
        Ok(())
    }

    /// Every group this device is in.
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        let mut out = Vec::new();
        for g in self.group_ids()? {
            out.push(self.load_group(&g)?.info());
        }
        Ok(out)
    }

    /// How many group changes of this client lost a compare-and-swap to
    /// another admin's and were made again on the new head.
    pub fn group_cas_retries(&self) -> u64 {
        self.group_retries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What this device presents to group `g`'s host to read its lane:
    /// the segment and the current epoch's access token (diagnostics and
    /// benchmarks; the token opens nothing but the lane's ciphertext).
    pub fn group_access(&self, g: &Hash) -> Result<(Hash, [u8; 32])> {
        let st = self.load_group(g)?;
        let key = st
            .key(st.log.epoch)
            .ok_or_else(|| ClientError::Invalid("this device lacks the current key".into()))?;
        Ok((st.segment, key.access_token(&st.group, st.log.epoch)))
    }

    /// One group.
    pub fn group(&self, g: &Hash) -> Result<GroupInfo> {
        Ok(self.load_group(g)?.info())
    }

    /// A group's messages, in the hosting server's order.
    pub fn group_messages(&self, g: &Hash) -> Result<Vec<GroupMsg>> {
        Ok(self.store.group_messages(g)?)
    }

    /// The group (or pending invitation) `s` names: a group id, a prefix
    /// of one (at least 4 hex digits), or a group name.
    pub fn find_group(&self, s: &str) -> Result<Hash> {
        let mut found: Vec<Hash> = Vec::new();
        let mut candidates: Vec<(Hash, String)> = self
            .groups()?
            .into_iter()
            .map(|g| (g.group, g.name))
            .collect();
        candidates.extend(
            self.group_invites()?
                .into_iter()
                .map(|(_, i)| (i.group, i.name)),
        );
        for (id, name) in candidates {
            let hit = name == s || (s.len() >= 4 && id.to_hex().starts_with(&s.to_lowercase()));
            if hit && !found.contains(&id) {
                found.push(id);
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ClientError::Invalid(format!(
                "no group or invitation {s:?} on this device (`group list` shows them)"
            ))),
            _ => Err(ClientError::Invalid(format!(
                "{s:?} names several groups; give more of the id"
            ))),
        }
    }

    /// Invitations not yet accepted: who sent each.
    pub fn group_invites(&self) -> Result<Vec<(Name, Invite)>> {
        let ids: Vec<Hash> = self.store.state("group-invites")?.unwrap_or_default();
        let mut out = Vec::new();
        for g in ids {
            if let Some(i) = self.store.state::<(Name, Invite)>(&invite_key(&g))? {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn group_err(&self, server: &Name, what: &'static str, e: CallError) -> ClientError {
        to_client_error(server, "", what, e)
    }

    /// An entry of ours, signed.
    #[allow(clippy::too_many_arguments)]
    fn sign_entry(
        &self,
        me: &Name,
        group: Hash,
        seq: u64,
        prev: Hash,
        server: Name,
        access: Hash,
        admins: Vec<Name>,
        epoch: u64,
        body: Vec<u8>,
    ) -> Entry {
        let mut e = Entry {
            group,
            seq,
            prev,
            author: me.clone(),
            device: self.device.device().sign,
            time_ms: unix_ms(),
            server,
            access,
            admins,
            epoch,
            body,
            sig: Signature([0; 64]),
        };
        e.sig = self.device.sign(
            ENTRY_SIG_TAG,
            &e.signing_payload(&self.config.params.genesis_hash),
        );
        e
    }

    /// The devices of every member (from their verified records). A member
    /// whose record cannot be verified now is left out: their devices ask
    /// for the key by DM when they see the rotation.
    async fn member_devices(&self, roster: &[Name]) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for m in roster {
            match self.user(m, false).await {
                Ok(v) => out.extend(v.record().devices.iter().copied()),
                Err(e) => {
                    tracing::warn!(target: "client::groups", member = %m, error = %e, "member left out of a rotation")
                }
            }
        }
        if out.is_empty() {
            return Err(ClientError::Invalid(
                "no member device to seal the key to".into(),
            ));
        }
        Ok(out)
    }

    /// Send a group control DM to `to` (through the outbox).
    fn queue_group_dm(&self, me: &Name, to: &Name, dm: &GroupDm) -> Result<()> {
        let event = self.sign_event(me, to, Hash::ZERO, KIND_GROUP, encode(dm));
        let mut b = self.store.batch();
        b.pending(&Pending::new(self.next_local(), &event, to))?;
        b.commit()?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Create a group named `name`, hosted on `server` (default: our own
    /// server), with us as its only member and admin.
    pub async fn group_create(&self, name: &str, server: Option<&Name>) -> Result<GroupInfo> {
        let me = self.me()?;
        self.check_listed(&me).await?;
        let _l = self.groups.lock().await;
        let mine = self.user(&me, true).await?;
        let server = server.unwrap_or(&mine.record().server).clone();
        let group = log::group_id(&self.config.params.genesis_hash, &me, &random32()?);
        let key = EpochKey::random()?;
        let body = Body {
            name: name.to_owned(),
            admins_only: false,
            history: true,
            roster: vec![me.clone()],
            banned: Vec::new(),
            change: Change::Created,
        };
        let seal = gc::seal_key(&group, 0, &key, &mine.record().devices)?;
        let sealed = gc::seal_body(&group, 0, &Hash::ZERO, &key, &body)?;
        let entry = self.sign_entry(
            &me,
            group,
            0,
            Hash::ZERO,
            server.clone(),
            key.access_lock(&group, 0),
            vec![me.clone()],
            0,
            encode(&EntryBody {
                seal: Some(seal),
                body: sealed,
            }),
        );
        let segment = segment_id(&group, &Hash::ZERO);
        let conn = self.conn(&server).await?;
        conn.rpc
            .group_append(&segment, &encode(&entry), None)
            .await
            .map_err(|e| self.group_err(&server, "group_append", e))?;
        let st = GroupState {
            group,
            segment,
            log: LogState::at(&entry),
            body,
            body_seq: 0,
            keys: vec![(0, key.clone())],
            cursor: 0,
            heads: vec![(0, entry.head())],
            missing: None,
            asked: None,
            forked: None,
            last: encode(&entry),
            stored: 0,
            rotated_ms: unix_ms(),
            previous: None,
        };
        self.commit_group(&st)?;
        // Our other devices join too.
        self.tell_own_devices(&me, &st, &server, key)?;
        self.groups_wake.notify_one();
        Ok(st.info())
    }

    /// Tell our other devices about a group we are in (an invitation to
    /// ourselves, which they accept without asking).
    fn tell_own_devices(
        &self,
        me: &Name,
        st: &GroupState,
        server: &Name,
        key: EpochKey,
    ) -> Result<()> {
        let Ok(sv) = self.conn_key(server) else {
            return Ok(());
        };
        let invite = Invite {
            group: st.group,
            name: st.body.name.clone(),
            server: server.clone(),
            server_key: sv,
            segment: st.segment,
            seq: st.log.seq,
            head: st.log.head,
            epoch: st.log.epoch,
            key,
        };
        self.queue_group_dm(me, me, &GroupDm::Invite(invite))
    }

    /// Tell our other devices about every group we are in (after a new
    /// device was linked).
    pub(crate) async fn tell_own_devices_all(&self, me: &Name) -> Result<()> {
        let _l = self.groups.lock().await;
        for g in self.group_ids()? {
            let st = self.load_group(&g)?;
            let Some(key) = st.key(st.log.epoch).cloned() else {
                continue;
            };
            if self.conn(&st.log.server).await.is_ok() {
                self.tell_own_devices(me, &st, &st.log.server.clone(), key)?;
            }
        }
        Ok(())
    }

    /// The verified key of a server we have a connection to.
    fn conn_key(&self, server: &Name) -> Result<PublicKey> {
        self.conns
            .lock()
            .get(server)
            .map(|c| c.server.record().key)
            .ok_or_else(|| ClientError::Invalid(format!("no connection to {server}")))
    }

    /// Read the log entries after ours from the hosting server and apply
    /// each; a log that does not follow (or disagrees with what we have)
    /// marks the group forked.
    async fn sync_log(&self, me: &Name, st: &mut GroupState) -> Result<usize> {
        let mut applied = 0;
        // Once per server: an entry naming another server is a move, and
        // the log goes on there.
        'servers: loop {
            let server = st.log.server.clone();
            let conn = self.conn(&server).await?;
            loop {
                let (head, entries) = conn
                    .rpc
                    .group_log(
                        &st.segment,
                        st.log.seq.saturating_add(1),
                        crate::api::MAX_LOG_BATCH,
                    )
                    .await
                    .map_err(|e| self.group_err(&server, "group_log", e))?;
                if entries.is_empty() {
                    if head.seq > st.log.seq {
                        return Err(ClientError::Misbehaved {
                            server,
                            reason: format!(
                                "its group log ends at entry {} but it gives none after {}",
                                head.seq, st.log.seq
                            ),
                        });
                    }
                    if let Some(ours) = st.head_at(head.seq)
                        && ours != head.head
                    {
                        self.mark_forked(
                            st,
                            format!(
                                "{server} says entry {} of the log has head {}, ours is {}",
                                head.seq, head.head, ours
                            ),
                        );
                    } else if head.seq < st.log.seq && head.seq >= head.first {
                        self.mark_forked(
                            st,
                            format!(
                                "{server}'s log ends at entry {}, before ours ({})",
                                head.seq, st.log.seq
                            ),
                        );
                    }
                    return Ok(applied);
                }
                for bytes in entries {
                    let e = match decode::<Entry>(&bytes) {
                        Ok(e) => e,
                        Err(err) => {
                            self.mark_forked(
                                st,
                                format!("{server} served an entry that does not decode: {err}"),
                            );
                            return Ok(applied);
                        }
                    };
                    if e.server != st.log.server {
                        // The old server took the move entry: its lane is
                        // read with the new epoch's token from now on.
                        let segment = segment_id(&st.group, &e.prev);
                        if let Err(why) = self.follow_move(me, st, &e, segment).await? {
                            self.mark_forked(st, format!("{server} served a move: {why}"));
                            return Ok(applied);
                        }
                        if let Some(p) = st.previous.as_mut() {
                            p.epoch = e.epoch;
                        }
                        applied += 1;
                        continue 'servers;
                    }
                    if let Err(why) = self.apply_entry(me, st, &e).await? {
                        self.mark_forked(st, format!("{server} served entry {}: {why}", e.seq));
                        return Ok(applied);
                    }
                    applied += 1;
                }
            }
        }
    }

    fn mark_forked(&self, st: &mut GroupState, reason: String) {
        if st.forked.is_some() {
            return;
        }
        tracing::warn!(target: "client::groups", group = %st.group, %reason, "group marked forked");
        st.forked = Some(reason.clone());
        self.emit(ClientEvent::GroupForked {
            group: st.group,
            reason,
        });
    }

    /// Check `e` as the next entry and apply it. The outer error is ours
    /// (a lookup failed: try later); the inner one says why the entry
    /// does not follow.
    async fn apply_entry(
        &self,
        me: &Name,
        st: &mut GroupState,
        e: &Entry,
    ) -> Result<std::result::Result<(), String>> {
        let network = self.config.params.genesis_hash;
        let mut author = self.user(&e.author, false).await?;
        if author.record().device(&e.device).is_none() {
            author = self.user(&e.author, true).await?;
        }
        let next = match log::next(&network, &st.log, e, author.record()) {
            Ok(n) => n,
            Err(err) => return Ok(Err(err.to_string())),
        };
        let eb: EntryBody = match decode(&e.body) {
            Ok(b) => b,
            Err(err) => return Ok(Err(format!("its body does not decode: {err}"))),
        };
        if e.epoch != st.log.epoch {
            match eb
                .seal
                .as_ref()
                .map(|s| gc::open_key(s, &self.device, &st.group, e.epoch, &e.access))
            {
                Some(Ok(k)) => st.add_key(e.epoch, k),
                _ => {
                    // Not sealed to this device (an admin's lookup of our
                    // record failed, or we were removed): ask, never drop.
                    if st.key(e.epoch).is_none() {
                        st.missing = Some(e.epoch);
                    }
                }
            }
        }
        if e.epoch != st.log.epoch {
            st.rotated_ms = unix_ms();
        }
        let mut change = None;
        if let Some(k) = st.key(e.epoch) {
            match gc::open_body(&st.group, e.seq, &e.prev, k, &eb.body) {
                Ok(b) => {
                    change = Some(describe(&b.change));
                    st.body = b;
                    st.body_seq = e.seq;
                }
                Err(err) => return Ok(Err(format!("its body does not open: {err}"))),
            }
        }
        st.log = next;
        st.push_head(e.seq, st.log.head);
        st.last = encode(e);
        let _ = me;
        self.emit(ClientEvent::GroupChanged {
            group: st.group,
            change: change.unwrap_or_else(|| {
                format!(
                    "entry {} (its body needs the key of epoch {})",
                    e.seq, e.epoch
                )
            }),
        });
        Ok(Ok(()))
    }

    /// Make an admin's change: `plan` says, from the current state, what
    /// the admins and body become (or `None`: nothing to do, perhaps
    /// because a concurrent admin already did it). A compare-and-swap on
    /// the head; on a race the winner's entries are read and applied and
    /// the plan is made again on the new head.
    async fn group_change(
        &self,
        g: &Hash,
        plan: impl Fn(&GroupState, &Name) -> Result<Option<Plan>>,
    ) -> Result<GroupInfo> {
        let me = self.me()?;
        self.check_listed(&me).await?;
        let _l = self.groups.lock().await;
        let mut st = self.load_group(g)?;
        for _ in 0..MAX_TRIES {
            self.sync_log(&me, &mut st).await?;
            if st.body_seq != st.log.seq {
                self.commit_group(&st)?;
                return Err(ClientError::Invalid(format!(
                    "this device cannot read the group's latest entry (it lacks the key of epoch {}; it asked an admin to re-share it): a change now could undo one it cannot see",
                    st.log.epoch
                )));
            }
            if !st.log.admins.contains(&me) {
                self.commit_group(&st)?;
                return Err(ClientError::Invalid(format!(
                    "{me} is not an admin of this group (admins: {})",
                    names(&st.log.admins)
                )));
            }
            let Some(p) = plan(&st, &me)? else {
                self.commit_group(&st)?;
                return Ok(st.info());
            };
            let (epoch, key, seal) = if p.rotate {
                let k = EpochKey::random()?;
                let devices = self.member_devices(&p.body.roster).await?;
                let epoch = st.log.epoch + 1;
                let seal = gc::seal_key(&st.group, epoch, &k, &devices)?;
                (epoch, k, Some(seal))
            } else {
                let k = st.key(st.log.epoch).cloned().ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "this device lacks the key of epoch {}; it asked an admin to re-share it",
                        st.log.epoch
                    ))
                })?;
                (st.log.epoch, k, None)
            };
            let seq = st.log.seq + 1;
            let body = gc::seal_body(&st.group, seq, &st.log.head, &key, &p.body)?;
            let entry = self.sign_entry(
                &me,
                st.group,
                seq,
                st.log.head,
                st.log.server.clone(),
                key.access_lock(&st.group, epoch),
                p.admins,
                epoch,
                encode(&EntryBody { seal, body }),
            );
            let server = st.log.server.clone();
            let conn = self.conn(&server).await?;
            match conn
                .rpc
                .group_append(&st.segment, &encode(&entry), None)
                .await
            {
                Ok(_) => {
                    st.add_key(epoch, key);
                    if let Err(why) = self.apply_entry(&me, &mut st, &entry).await? {
                        return Err(ClientError::Invalid(format!("our own entry: {why}")));
                    }
                    self.commit_group(&st)?;
                    return Ok(st.info());
                }
                Err(CallError::Refused { code: c, .. }) if c == code::HEAD_MOVED => {
                    tracing::info!(target: "client::groups", group = %st.group, "lost a compare-and-swap; re-reading the log");
                    self.group_retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(self.group_err(&server, "group_append", e)),
            }
        }
        Err(ClientError::Invalid(
            "the group's log kept moving; try again".into(),
        ))
    }

    /// Add `user` to the group and send them an invitation (by DM) that
    /// pins the new head and the server's key.
    pub async fn group_invite(&self, g: &Hash, user: &Name) -> Result<GroupInfo> {
        let me = self.me()?;
        self.user(user, false).await?;
        let u = user.clone();
        let info = self
            .group_change(g, move |st, _| {
                if st.body.banned.contains(&u) {
                    return Err(ClientError::Invalid(format!(
                        "{u} is banned from this group"
                    )));
                }
                if st.body.roster.contains(&u) {
                    return Ok(None);
                }
                let mut body = st.body.clone();
                body.roster.push(u.clone());
                body.change = Change::Added(u.clone());
                // Without history, a new member gets a new key: nothing
                // sent before they joined opens with it.
                Ok(Some(Plan {
                    admins: st.log.admins.clone(),
                    rotate: !body.history,
                    body,
                }))
            })
            .await?;
        let _l = self.groups.lock().await;
        let st = self.load_group(g)?;
        let key = st
            .key(st.log.epoch)
            .cloned()
            .ok_or_else(|| ClientError::Invalid("this device lacks the current key".into()))?;
        self.conn(&st.log.server).await?;
        let invite = Invite {
            group: st.group,
            name: st.body.name.clone(),
            server: st.log.server.clone(),
            server_key: self.conn_key(&st.log.server)?,
            segment: st.segment,
            seq: st.log.seq,
            head: st.log.head,
            epoch: st.log.epoch,
            key,
        };
        self.queue_group_dm(&me, user, &GroupDm::Invite(invite))?;
        Ok(info)
    }

    /// Remove `user` (with `ban`, for good) and rotate the key: nothing
    /// sent after this can be read by them.
    pub async fn group_remove(&self, g: &Hash, user: &Name, ban: bool) -> Result<GroupInfo> {
        self.remove_member(
            g,
            user,
            if ban {
                Change::Banned(user.clone())
            } else {
                Change::Removed(user.clone())
            },
        )
        .await
    }

    async fn remove_member(&self, g: &Hash, user: &Name, change: Change) -> Result<GroupInfo> {
        let u = user.clone();
        let ban = matches!(change, Change::Banned(_));
        self.group_change(g, move |st, me| {
            if &u == me {
                return Err(ClientError::Invalid("use `group leave` to leave".into()));
            }
            let present = st.body.roster.contains(&u);
            if !present && (!ban || st.body.banned.contains(&u)) {
                return Ok(None);
            }
            let mut body = st.body.clone();
            body.roster.retain(|m| m != &u);
            if ban {
                body.banned.push(u.clone());
            }
            body.change = change.clone();
            let admins: Vec<Name> = st.log.admins.iter().filter(|a| *a != &u).cloned().collect();
            Ok(Some(Plan {
                admins,
                body,
                rotate: true,
            }))
        })
        .await
    }

    /// Make `user` an admin (`on`) or not.
    pub async fn group_admin(&self, g: &Hash, user: &Name, on: bool) -> Result<GroupInfo> {
        let u = user.clone();
        self.group_change(g, move |st, _| {
            if on && !st.body.roster.contains(&u) {
                return Err(ClientError::Invalid(format!("{u} is not a member")));
            }
            if st.log.admins.contains(&u) == on {
                return Ok(None);
            }
            let mut admins = st.log.admins.clone();
            if on {
                admins.push(u.clone());
            } else {
                admins.retain(|a| a != &u);
                if admins.is_empty() {
                    return Err(ClientError::Invalid(
                        "a group keeps at least one admin".into(),
                    ));
                }
            }
            let mut body = st.body.clone();
            body.change = Change::Admins;
            Ok(Some(Plan {
                admins,
                body,
                rotate: false,
            }))
        })
        .await
    }

    /// Rename the group.
    pub async fn group_rename(&self, g: &Hash, name: &str) -> Result<GroupInfo> {
        let n = name.to_owned();
        self.group_change(g, move |st, _| {
            if st.body.name == n {
                return Ok(None);
            }
            let mut body = st.body.clone();
            body.name = n.clone();
            body.change = Change::Renamed;
            Ok(Some(Plan {
                admins: st.log.admins.clone(),
                body,
                rotate: false,
            }))
        })
        .await
    }

    /// Change the settings (admins): whether only admins may post, and
    /// whether new members may read the current epoch's earlier messages.
    pub async fn group_settings(
        &self,
        g: &Hash,
        admins_only: Option<bool>,
        history: Option<bool>,
    ) -> Result<GroupInfo> {
        self.group_change(g, move |st, _| {
            let mut body = st.body.clone();
            body.admins_only = admins_only.unwrap_or(body.admins_only);
            body.history = history.unwrap_or(body.history);
            if (body.admins_only, body.history) == (st.body.admins_only, st.body.history) {
                return Ok(None);
            }
            body.change = Change::Settings;
            Ok(Some(Plan {
                admins: st.log.admins.clone(),
                body,
                rotate: false,
            }))
        })
        .await
    }

    /// Rotate the key (periodically, or after a device was lost).
    pub async fn group_rotate(&self, g: &Hash) -> Result<GroupInfo> {
        let start = self.load_group(g)?.log.epoch;
        self.group_change(g, move |st, _| {
            // A concurrent rotation already did it.
            if st.log.epoch > start {
                return Ok(None);
            }
            let mut body = st.body.clone();
            body.change = Change::Rotated;
            Ok(Some(Plan {
                admins: st.log.admins.clone(),
                body,
                rotate: true,
            }))
        })
        .await
    }

    /// Move the group to `to` (admins): the log continues there with an
    /// entry that follows the current head (and rotates the key, so the
    /// old server's access token opens nothing on the new one); every
    /// member is told by DM and checks that entry against its own log. The
    /// old server is not needed - a ragequit from a server that stopped
    /// answering works from what this device has verified - and cannot
    /// forge a move, which only an admin can sign. The old lane is still
    /// read for [`MOVE_GRACE`].
    pub async fn group_move(&self, g: &Hash, to: &Name) -> Result<GroupInfo> {
        let me = self.me()?;
        self.check_listed(&me).await?;
        let _l = self.groups.lock().await;
        let mut st = self.load_group(g)?;
        if &st.log.server == to {
            return Ok(st.info());
        }
        // Catch up with the old server if it answers.
        if let Err(e) = self.sync_log(&me, &mut st).await {
            tracing::warn!(target: "client::groups", error = %e, "moving without the old server's latest entries");
        }
        if !st.log.admins.contains(&me) {
            return Err(ClientError::Invalid(format!(
                "{me} is not an admin of this group (admins: {})",
                names(&st.log.admins)
            )));
        }
        let server_key = self.server(to).await?.record().key;
        let key = EpochKey::random()?;
        let epoch = st.log.epoch + 1;
        let devices = self.member_devices(&st.body.roster).await?;
        let seal = gc::seal_key(&st.group, epoch, &key, &devices)?;
        let mut body = st.body.clone();
        body.change = Change::Moved(to.clone());
        let seq = st.log.seq + 1;
        let sealed = gc::seal_body(&st.group, seq, &st.log.head, &key, &body)?;
        let entry = self.sign_entry(
            &me,
            st.group,
            seq,
            st.log.head,
            to.clone(),
            key.access_lock(&st.group, epoch),
            st.log.admins.clone(),
            epoch,
            encode(&EntryBody {
                seal: Some(seal),
                body: sealed,
            }),
        );
        let segment = segment_id(&st.group, &st.log.head);
        let conn = self.conn(to).await?;
        let entry = match conn
            .rpc
            .group_append(&segment, &encode(&entry), Some(&st.last))
            .await
        {
            Ok(_) => {
                st.add_key(epoch, key);
                entry
            }
            Err(e) => {
                // An earlier try of this move may have landed there with
                // its answer lost (the segment is then taken by that
                // entry): adopt it - its seal includes this device.
                let earlier = conn
                    .rpc
                    .group_log(&segment, seq, 1)
                    .await
                    .ok()
                    .and_then(|(_, entries)| entries.into_iter().next())
                    .and_then(|b| decode::<Entry>(&b).ok())
                    .filter(|x| x.seq == seq && x.prev == st.log.head && &x.server == to);
                match earlier {
                    Some(x) => x,
                    None => return Err(self.group_err(to, "group_append", e)),
                }
            }
        };
        let epoch = entry.epoch;
        let (old_server, old_segment) = (st.log.server.clone(), st.segment);
        self.follow_move(&me, &mut st, &entry, segment)
            .await?
            .map_err(|why| ClientError::Invalid(format!("our own move: {why}")))?;
        // Close the old log too, if its server still takes entries: members
        // who are behind find the move there, and later appends there are
        // refused. A server that refuses (or is gone) changes nothing: the
        // members are told by DM.
        if let Ok(old) = self.conn(&old_server).await {
            match old
                .rpc
                .group_append(&old_segment, &encode(&entry), None)
                .await
            {
                Ok(_) => {
                    if let Some(p) = st.previous.as_mut() {
                        p.epoch = epoch;
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "client::groups", server = %old_server, error = %e, "the old server did not take the move entry")
                }
            }
        }
        self.commit_group(&st)?;
        let dm = GroupDm::Moved {
            group: st.group,
            server: to.clone(),
            server_key,
            segment,
            entry: encode(&entry),
        };
        for m in &st.body.roster {
            // To ourselves too: our other devices follow.
            self.queue_group_dm(&me, m, &dm)?;
        }
        self.groups_wake.notify_one();
        Ok(st.info())
    }

    /// Apply a move entry `e` (which must follow our head) and switch to
    /// `segment`, keeping the old lane as the previous one.
    async fn follow_move(
        &self,
        me: &Name,
        st: &mut GroupState,
        e: &Entry,
        segment: Hash,
    ) -> Result<std::result::Result<(), String>> {
        if e.server == st.log.server {
            return Ok(Err("it names the same server".into()));
        }
        let old = Previous {
            segment: st.segment,
            server: st.log.server.clone(),
            cursor: st.cursor,
            epoch: st.log.epoch,
            until_ms: unix_ms().saturating_add(MOVE_GRACE.as_millis() as u64),
        };
        if let Err(why) = self.apply_entry(me, st, e).await? {
            return Ok(Err(why));
        }
        st.previous = Some(old);
        st.segment = segment;
        st.cursor = 0;
        // A new server: what the old one showed is behind us.
        st.forked = None;
        Ok(Ok(()))
    }

    /// Accept the invitation to group `g`: the hosting server must still
    /// have the key the invitation pinned, and its log must hold the
    /// pinned entry (position and head) - a server that serves another
    /// log, or replays an invitation for another group, is refused.
    pub async fn group_join(&self, g: &Hash) -> Result<GroupInfo> {
        let me = self.me()?;
        let _l = self.groups.lock().await;
        if let Ok(st) = self.load_group(g) {
            return Ok(st.info());
        }
        let (from, inv): (Name, Invite) = self
            .store
            .state(&invite_key(g))?
            .ok_or_else(|| ClientError::Invalid(format!("no invitation to group {g}")))?;
        let st = self.join_invite(&me, &from, &inv).await?;
        let mut b = self.store.batch();
        self.save_group(&st, &mut b)?;
        b.delete_state(&invite_key(g))?;
        b.commit()?;
        self.tell_own_devices(&me, &st, &inv.server, inv.key.clone())?;
        self.groups_wake.notify_one();
        Ok(st.info())
    }

    async fn join_invite(&self, me: &Name, from: &Name, inv: &Invite) -> Result<GroupState> {
        let sv = self.server(&inv.server).await?;
        if sv.record().key != inv.server_key {
            return Err(ClientError::Invalid(format!(
                "{}'s verified key is no longer the one the invitation pinned; ask for a new invitation",
                inv.server
            )));
        }
        let conn = self.conn(&inv.server).await?;
        let (_, entries) = conn
            .rpc
            .group_log(&inv.segment, inv.seq, 1)
            .await
            .map_err(|e| self.group_err(&inv.server, "group_log", e))?;
        let refuse = |why: &str| ClientError::Misbehaved {
            server: inv.server.clone(),
            reason: format!("refusing the invitation: {why}"),
        };
        let bytes = entries
            .first()
            .ok_or_else(|| refuse("the server has no entry at the pinned position"))?;
        let e: Entry = decode(bytes).map_err(|_| refuse("the pinned entry does not decode"))?;
        if e.seq != inv.seq || e.head() != inv.head || e.group != inv.group {
            return Err(refuse(
                "the server's log does not hold the entry the invitation pinned (another group's log, or a forged one)",
            ));
        }
        if e.epoch != inv.epoch || inv.key.access_lock(&inv.group, inv.epoch) != e.access {
            return Err(refuse("the invitation's key is not the pinned entry's"));
        }
        // Only an admin at the pinned entry invites (or another of our
        // devices), and the entry is signed by a device of its author: a
        // member cannot invite someone into a log of its own making.
        if from != me && !e.admins.contains(from) {
            return Err(ClientError::Invalid(format!(
                "refusing the invitation: {from} is not an admin of the group at the pinned entry"
            )));
        }
        let author = self.user(&e.author, true).await?;
        if author.record().device(&e.device).is_none()
            || e.device
                .verify(
                    ENTRY_SIG_TAG,
                    &e.signing_payload(&self.config.params.genesis_hash),
                    &e.sig,
                )
                .is_err()
        {
            return Err(refuse(
                "the pinned entry is not signed by a device of its author",
            ));
        }
        let eb: EntryBody = decode(&e.body).map_err(|_| refuse("the pinned entry's body"))?;
        let body = gc::open_body(&e.group, e.seq, &e.prev, &inv.key, &eb.body)?;
        if !body.roster.contains(me) {
            return Err(ClientError::Invalid(format!(
                "{me} is not in the group's roster at the pinned entry"
            )));
        }
        let mut st = GroupState {
            group: inv.group,
            segment: inv.segment,
            log: LogState::at(&e),
            body,
            body_seq: e.seq,
            keys: vec![(inv.epoch, inv.key.clone())],
            cursor: 0,
            heads: vec![(e.seq, e.head())],
            missing: None,
            asked: None,
            forked: None,
            last: bytes.clone(),
            stored: 0,
            rotated_ms: unix_ms(),
            previous: None,
        };
        self.sync_log(me, &mut st).await?;
        if let Some(why) = &st.forked {
            return Err(refuse(why));
        }
        Ok(st)
    }

    /// Post `text` to the group: encrypted once under the epoch key,
    /// signed by this device, carrying our log head.
    pub async fn group_send(&self, g: &Hash, text: &str) -> Result<GroupMsg> {
        self.group_post(g, GROUP_TEXT, text).await
    }

    /// Leave the group: tell the members (an admin's client removes us
    /// and rotates the key), then forget it here.
    pub async fn group_leave(&self, g: &Hash) -> Result<()> {
        let me = self.me()?;
        let st = self.load_group(g)?;
        if st.log.admins == [me.clone()] && st.body.roster.len() > 1 {
            return Err(ClientError::Invalid(
                "you are the only admin: make someone else an admin first".into(),
            ));
        }
        if st.body.roster.len() > 1 {
            self.group_post(g, GROUP_LEAVE, "").await?;
        }
        let _l = self.groups.lock().await;
        let mut ids = self.group_ids()?;
        ids.retain(|x| x != g);
        let mut b = self.store.batch();
        b.state(GROUPS_KEY, &ids)?;
        b.delete_state(&group_key(g))?;
        b.commit()?;
        Ok(())
    }

    async fn group_post(&self, g: &Hash, kind: u8, text: &str) -> Result<GroupMsg> {
        let me = self.me()?;
        self.check_listed(&me).await?;
        let _l = self.groups.lock().await;
        let mut st = self.load_group(g)?;
        let mut tries = 0;
        loop {
            tries += 1;
            // Post under the latest head we can see.
            self.sync_log(&me, &mut st).await?;
            self.commit_group(&st)?;
            if !st.body.roster.contains(&me) {
                return Err(ClientError::Invalid(format!(
                    "{me} is not a member of this group"
                )));
            }
            if kind == GROUP_TEXT && st.body.admins_only && !st.log.admins.contains(&me) {
                return Err(ClientError::Invalid(
                    "only admins may post in this group".into(),
                ));
            }
            let key = st.key(st.log.epoch).cloned().ok_or_else(|| {
                ClientError::Invalid(format!(
                    "this device lacks the key of epoch {}; it asked an admin to re-share it",
                    st.log.epoch
                ))
            })?;
            let event = GroupEvent {
                group: st.group,
                sender: me.clone(),
                device: self.device.device().sign,
                log_seq: st.log.seq,
                head: st.log.head,
                epoch: st.log.epoch,
                time_ms: unix_ms(),
                kind,
                body: text.as_bytes().to_vec(),
            };
            let network = self.config.params.genesis_hash;
            let (msg, id) = gc::seal_message(&self.device, &network, event, &key)?;
            let server = st.log.server.clone();
            let conn = self.conn(&server).await?;
            let seq = match conn
                .rpc
                .group_post(
                    &st.segment,
                    &key.access_token(&st.group, st.log.epoch),
                    &encode(&msg),
                )
                .await
            {
                Ok(seq) => seq,
                // A rotation or a move between our read of the log and the
                // post: read it again and post under the new head.
                Err(CallError::Refused { code: c, .. })
                    if (c == code::FORBIDDEN || c == code::MOVED) && tries < 3 =>
                {
                    continue;
                }
                Err(e) => return Err(self.group_err(&server, "group_post", e)),
            };
            let mut m = GroupMsg {
                local: 0,
                group: st.group,
                seq,
                id,
                from: me,
                time_ms: unix_ms(),
                log_seq: st.log.seq,
                epoch: st.log.epoch,
                text: text.to_owned(),
            };
            if kind == GROUP_TEXT {
                st.stored += 1;
                m.local = st.stored;
                let mut b = self.store.batch();
                b.group_message(&m)?;
                self.save_group(&st, &mut b)?;
                b.commit()?;
            }
            return Ok(m);
        }
    }

    /// Handle group DMs the inbox queued: invitations are kept for the
    /// user (ours, from another of our devices, are accepted), re-shared
    /// keys are checked against the log and kept, requests for a key are
    /// answered if we are an admin and the asker a member.
    async fn group_dms(&self, me: &Name) -> Result<()> {
        // One at a time, removed only once handled: a crash or a failure
        // that passes (a lookup, an unreachable server) keeps the rest, and
        // that one, for the next round. The inbox appends to the same list
        // under the `heads` lock, which its reads and removals here take.
        loop {
            let first = {
                let _heads = self.heads.lock();
                let q: Vec<(Name, GroupDm)> = self.store.state(GROUP_DMS_KEY)?.unwrap_or_default();
                match q.into_iter().next() {
                    Some(f) => f,
                    None => return Ok(()),
                }
            };
            let (from, dm) = first;
            match self.handle_group_dm(me, from, dm).await {
                Err(
                    e @ (ClientError::Lookup(_)
                    | ClientError::Unreachable { .. }
                    | ClientError::Store(_)),
                ) => {
                    self.emit(ClientEvent::Error(format!(
                        "a group message waits for a later try: {e}"
                    )));
                    return Ok(());
                }
                Err(e) => self.emit(ClientEvent::Error(format!("a group message: {e}"))),
                Ok(()) => {}
            }
            let _heads = self.heads.lock();
            let mut q: Vec<(Name, GroupDm)> = self.store.state(GROUP_DMS_KEY)?.unwrap_or_default();
            if !q.is_empty() {
                q.remove(0);
            }
            let mut b = self.store.batch();
            b.state(GROUP_DMS_KEY, &q)?;
            b.commit()?;
        }
    }

    /// Handle one group DM from `from`.
    async fn handle_group_dm(&self, me: &Name, from: Name, dm: GroupDm) -> Result<()> {
        match dm {
            GroupDm::Invite(inv) if &from == me => {
                if self.load_group(&inv.group).is_ok() {
                    return Ok(());
                }
                match self.join_invite(me, me, &inv).await {
                    Ok(st) => {
                        self.commit_group(&st)?;
                        self.emit(ClientEvent::GroupChanged {
                            group: st.group,
                            change: "joined (with another of our devices)".into(),
                        });
                    }
                    Err(e) => self.emit(ClientEvent::Error(format!(
                        "group {} from another of our devices: {e}",
                        inv.group
                    ))),
                }
            }
            GroupDm::Invite(inv) => {
                if self.load_group(&inv.group).is_ok() {
                    return Ok(());
                }
                let mut ids: Vec<Hash> = self.store.state("group-invites")?.unwrap_or_default();
                if !ids.contains(&inv.group) {
                    ids.push(inv.group);
                }
                let mut b = self.store.batch();
                b.state("group-invites", &ids)?;
                b.state(&invite_key(&inv.group), &(from.clone(), inv.clone()))?;
                b.commit()?;
                self.emit(ClientEvent::GroupInvite {
                    from,
                    group: inv.group,
                    name: inv.name,
                });
            }
            GroupDm::Key { group, epoch, key } => {
                let Ok(mut st) = self.load_group(&group) else {
                    return Ok(());
                };
                if !st.log.admins.contains(&from) && &from != me {
                    return Ok(());
                }
                self.sync_log(me, &mut st).await?;
                // Only the key the log's lock names (for the current
                // epoch): nobody can slip in another.
                if epoch == st.log.epoch && key.access_lock(&group, epoch) == st.log.access {
                    st.add_key(epoch, key);
                    st.missing = None;
                    st.reopen_body();
                    self.commit_group(&st)?;
                }
            }
            GroupDm::Moved {
                group,
                server,
                server_key,
                segment,
                entry,
            } => {
                let Ok(mut st) = self.load_group(&group) else {
                    return Ok(());
                };
                if st.segment == segment {
                    return Ok(());
                }
                let Ok(e) = decode::<Entry>(&entry) else {
                    return Ok(());
                };
                if e.group != group || e.server != server || segment != segment_id(&group, &e.prev)
                {
                    return Ok(());
                }
                // Catch up with the old server first (best effort: it
                // may be why the group moves).
                let _ = self.sync_log(me, &mut st).await;
                let refused = |why: String| {
                    ClientEvent::Error(format!(
                        "refused a move of group {group} to {server}: {why}"
                    ))
                };
                if st.log.head != e.prev {
                    self.emit(refused(format!(
                        "it follows entry {} ({}), but this device's log is at entry {} ({})",
                        e.seq.saturating_sub(1),
                        e.prev,
                        st.log.seq,
                        st.log.head
                    )));
                    return Ok(());
                }
                match self.server(&server).await {
                    // No verified answer now: try again later.
                    Err(e @ ClientError::Lookup(_)) => return Err(e),
                    Ok(v) if v.record().key == server_key => {}
                    _ => {
                        self.emit(refused(
                            "the new server's verified key is not the one the move names".into(),
                        ));
                        return Ok(());
                    }
                }
                match self.follow_move(me, &mut st, &e, segment).await? {
                    Ok(()) => {
                        self.sync_log(me, &mut st).await?;
                        self.commit_group(&st)?;
                        self.emit(ClientEvent::GroupChanged {
                            group,
                            change: format!("moved to {server}"),
                        });
                    }
                    Err(why) => self.emit(refused(why)),
                }
            }
            GroupDm::Ask { group, epoch } => {
                let Ok(st) = self.load_group(&group) else {
                    return Ok(());
                };
                // Only the current epoch's key: an older one would open
                // messages from before the asker joined.
                if !st.log.admins.contains(me)
                    || !st.body.roster.contains(&from)
                    || epoch != st.log.epoch
                {
                    return Ok(());
                }
                if let Some(key) = st.key(epoch).cloned() {
                    self.queue_group_dm(me, &from, &GroupDm::Key { group, epoch, key })?;
                }
            }
        }

        Ok(())
    }

    /// Read every group's lane once (waiting up to `wait`), apply new log
    /// entries, store new messages; act on leave messages if we are an
    /// admin, and ask for keys this device lacks.
    pub async fn group_poll(&self, wait: Duration) -> Result<GroupReport> {
        let me = self.me()?;
        let mut report = GroupReport::default();
        {
            let _l = self.groups.lock().await;
            self.group_dms(&me).await?;
        }
        // One long-poll per hosting server: every group's lane, and the
        // lane a group moved from while its grace period lasts.
        let mut by_server: HashMap<Name, Vec<GroupReadFrom>> = HashMap::new();
        let now = unix_ms();
        for g in self.group_ids()? {
            let st = self.load_group(&g)?;
            let epoch = if st.key(st.log.epoch).is_some() {
                st.log.epoch
            } else {
                match st.keys.last() {
                    Some((e, _)) => *e,
                    None => continue,
                }
            };
            let Some(key) = st.key(epoch) else { continue };
            by_server
                .entry(st.log.server.clone())
                .or_default()
                .push(GroupReadFrom {
                    segment: st.segment,
                    access: key.access_token(&st.group, epoch),
                    after: st.cursor,
                    log_after: st.log.seq,
                });
            if let Some(p) = &st.previous
                && p.until_ms > now
                && let Some(old) = st.key(p.epoch)
            {
                by_server
                    .entry(p.server.clone())
                    .or_default()
                    .push(GroupReadFrom {
                        segment: p.segment,
                        access: old.access_token(&st.group, p.epoch),
                        after: p.cursor,
                        // Its log is not followed any more.
                        log_after: u64::MAX,
                    });
            }
        }
        if by_server.is_empty() {
            let _ = tokio::time::timeout(wait, self.groups_wake.notified()).await;
            return Ok(report);
        }
        let polls = by_server.into_iter().map(|(server, from)| async move {
            let conn = self.conn(&server).await;
            let got = match conn {
                Ok(c) => c
                    .poll
                    .group_receive(&from, wait)
                    .await
                    .map_err(|e| self.group_err(&server, "group_receive", e)),
                Err(e) => Err(e),
            };
            (server, got)
        });
        let answers = futures::future::join_all(polls).await;
        let mut leaving: Vec<(Hash, Name)> = Vec::new();
        let _l = self.groups.lock().await;
        // Segment → (group, whether it is the lane the group moved from).
        let mut segments: HashMap<Hash, (Hash, bool)> = HashMap::new();
        for g in self.group_ids()? {
            if let Ok(st) = self.load_group(&g) {
                segments.insert(st.segment, (g, false));
                if let Some(p) = &st.previous {
                    segments.insert(p.segment, (g, true));
                }
            }
        }
        for (server, got) in answers {
            let batches = match got {
                Ok(b) => b,
                Err(ClientError::Refused { code: c, .. }) if c == code::FORBIDDEN => {
                    // A token of an epoch the server no longer admits: the
                    // log moved on by more than one rotation while we were
                    // away. Read it (it is open) for the new keys.
                    for (g, old_lane) in segments.values() {
                        let Ok(mut st) = self.load_group(g) else {
                            continue;
                        };
                        if *old_lane || st.log.server != server {
                            continue;
                        }
                        match self.sync_log(&me, &mut st).await {
                            Ok(_) => self.commit_group(&st)?,
                            Err(e) => report.errors.push(format!("{server}: {e}")),
                        }
                    }
                    continue;
                }
                Err(e) => {
                    report.errors.push(format!("{server}: {e}"));
                    continue;
                }
            };
            for batch in batches {
                let Some((g, old_lane)) = segments.get(&batch.segment).copied() else {
                    continue;
                };
                let mut st = self.load_group(&g)?;
                if !old_lane && batch.log_seq > st.log.seq {
                    self.sync_log(&me, &mut st).await?;
                }
                let mut cursor = if old_lane {
                    st.previous.as_ref().map_or(u64::MAX, |p| p.cursor)
                } else {
                    st.cursor
                };
                let mut b = self.store.batch();
                let mut events = Vec::new();
                let mut batch_ids = std::collections::HashSet::new();
                for (seq, bytes) in batch.messages {
                    if seq <= cursor {
                        continue;
                    }
                    match self.group_message(&me, &mut st, seq, &bytes).await? {
                        Incoming::Wait => break,
                        Incoming::Text(m) if !batch_ids.insert(m.id) => {}
                        Incoming::Text(mut m) => {
                            st.stored += 1;
                            m.local = st.stored;
                            b.group_message(&m)?;
                            events.push(ClientEvent::GroupMessage(m.clone()));
                            report.messages.push(m);
                        }
                        Incoming::Leave(who, id) => {
                            if batch_ids.insert(id) {
                                b.seen(&id)?;
                                leaving.push((st.group, who));
                            }
                        }
                        Incoming::Refused(why) => {
                            let what = format!("{server} group {} #{seq}: {why}", st.group);
                            report.rejected.push(what.clone());
                            events.push(ClientEvent::Rejected(what));
                        }
                        Incoming::Seen => {}
                    }
                    cursor = seq;
                }
                match (old_lane, st.previous.as_mut()) {
                    (true, Some(p)) => p.cursor = cursor,
                    (true, None) => {}
                    (false, _) => st.cursor = cursor,
                }
                self.save_group(&st, &mut b)?;
                b.commit()?;
                for e in events {
                    self.emit(e);
                }
            }
        }
        // Keys this device lacks (a rotation it could not open, seen in the
        // log or in the lane): ask an admin, once per epoch.
        for g in self.group_ids()? {
            let mut st = self.load_group(&g)?;
            if let Some(epoch) = st.missing
                && st.asked != Some(epoch)
                && let Some(admin) = st.log.admins.iter().find(|a| *a != &me).cloned()
            {
                self.queue_group_dm(
                    &me,
                    &admin,
                    &GroupDm::Ask {
                        group: st.group,
                        epoch,
                    },
                )?;
                st.asked = Some(epoch);
                self.commit_group(&st)?;
            }
        }
        // Periodic rotation, by an admin's device (several racing admins
        // land one: the others find it done).
        let mut due = Vec::new();
        for g in self.group_ids()? {
            let st = self.load_group(&g)?;
            if st.log.admins.contains(&me)
                && unix_ms().saturating_sub(st.rotated_ms) >= ROTATION_PERIOD.as_millis() as u64
            {
                due.push(g);
            }
        }
        drop(_l);
        for g in due {
            if let Err(e) = self.group_rotate(&g).await {
                report.errors.push(format!("rotating group {g}: {e}"));
            }
        }
        for (g, who) in leaving {
            if let Err(e) = self
                .remove_member(&g, &who, Change::Left(who.clone()))
                .await
            {
                report
                    .errors
                    .push(format!("removing {who}, who left group {g}: {e}"));
            }
        }
        Ok(report)
    }

    /// Open and check one group message.
    async fn group_message(
        &self,
        me: &Name,
        st: &mut GroupState,
        seq: u64,
        bytes: &[u8],
    ) -> Result<Incoming> {
        let Ok(m) = decode::<GroupMessage>(bytes) else {
            return Ok(Incoming::Refused("not a group message".into()));
        };
        if m.group != st.group {
            return Ok(Incoming::Refused("a message for another group".into()));
        }
        if m.epoch > st.log.epoch || m.log_seq > st.log.seq {
            // Perhaps entries we have not read yet; an unreachable server
            // leaves the message for the next poll.
            if self.sync_log(me, st).await.is_err() {
                return Ok(Incoming::Wait);
            }
        }
        let oldest = st.keys.first().map_or(u64::MAX, |(e, _)| *e);
        let Some(key) = st.key(m.epoch).cloned() else {
            if m.epoch < oldest {
                // From before we joined (or older than we keep).
                return Ok(Incoming::Seen);
            }
            if m.epoch > st.log.epoch {
                return Ok(Incoming::Refused(format!(
                    "epoch {} which the log does not have (it is at {})",
                    m.epoch, st.log.epoch
                )));
            }
            // A rotation this device could not open: wait for the key.
            st.missing.get_or_insert(m.epoch);
            return Ok(Incoming::Wait);
        };
        // Everything below is judged only once the message is known to be
        // signed by a member: junk from whoever can post proves nothing.
        let ev = match gc::open_message(&m, &key) {
            Ok(ev) => ev,
            Err(e) => return Ok(Incoming::Refused(format!("does not open: {e}"))),
        };
        let id = ev.id();
        if self.store.seen(&id)? {
            return Ok(Incoming::Seen);
        }
        let sender = ev.event.sender.clone();
        if sender.kind() != xirtam_proofs::name::NameKind::User {
            return Ok(Incoming::Refused(format!("sender {sender} is not a user")));
        }
        let verified = match self.user(&sender, false).await {
            Ok(u) if u.record().device(&ev.event.device).is_some() => Ok(u),
            _ => self.user(&sender, true).await,
        };
        let user = match verified {
            Ok(u) => u,
            // No verified answer now: read it again later.
            Err(ClientError::Lookup(_)) => return Ok(Incoming::Wait),
            Err(e) => return Ok(Incoming::Refused(format!("sender {sender}: {e}"))),
        };
        if let Err(e) = ev.check(&self.config.params.genesis_hash, user.record()) {
            return Ok(Incoming::Refused(format!("from {sender}: {e}")));
        }
        if !st.body.roster.contains(&sender) {
            return Ok(Incoming::Refused(format!("{sender} is not a member")));
        }
        if ev.event.kind == GROUP_TEXT && st.body.admins_only && !st.log.admins.contains(&sender) {
            return Ok(Incoming::Refused(format!(
                "{sender} is not an admin, and only admins may post"
            )));
        }
        // A member signed that it saw this head at this position: if our
        // server shows us another (or none), one of us is shown another
        // log. Marked (once) and reported; the group keeps working so that
        // an admin can move it.
        if m.log_seq > st.log.seq {
            self.mark_forked(
                st,
                format!(
                    "{sender} sent under log entry {} ({}), which {} does not show us (we have {}): the server shows members different logs",
                    m.log_seq, m.head, st.log.server, st.log.seq
                ),
            );
        } else if let Some(ours) = st.head_at(m.log_seq)
            && ours != m.head
        {
            self.mark_forked(
                st,
                format!(
                    "{sender} sent under log entry {} with head {}, but ours is {}: the server shows members different logs",
                    m.log_seq, m.head, ours
                ),
            );
        }
        match ev.event.kind {
            GROUP_TEXT => Ok(Incoming::Text(GroupMsg {
                local: 0,
                group: st.group,
                seq,
                id,
                from: sender,
                time_ms: ev.event.time_ms,
                log_seq: m.log_seq,
                epoch: m.epoch,
                text: String::from_utf8_lossy(&ev.event.body).into_owned(),
            })),
            GROUP_LEAVE if &sender != me && st.log.admins.contains(me) => {
                Ok(Incoming::Leave(sender, id))
            }
            GROUP_LEAVE => Ok(Incoming::Seen),
            k => Ok(Incoming::Refused(format!("unknown kind {k}"))),
        }
    }

    /// Keep reading groups until stopped.
    pub(crate) async fn group_loop(&self, wait: Duration) {
        let mut failures = 0u32;
        loop {
            let started = tokio::time::Instant::now();
            match self.group_poll(wait).await {
                Ok(r) => {
                    for e in &r.errors {
                        self.emit(ClientEvent::Error(e.clone()));
                    }
                    failures = if r.errors.is_empty() { 0 } else { failures + 1 };
                }
                Err(ClientError::NotRegistered) => {
                    let _ = tokio::time::timeout(wait, self.groups_wake.notified()).await;
                }
                Err(e) => {
                    self.emit(ClientEvent::Error(e.to_string()));
                    failures += 1;
                }
            }
            // A lane answered at once with nothing new (a message waiting
            // for its key) is not asked again at once.
            tokio::time::sleep_until(started + Duration::from_millis(250)).await;
            if failures > 0 {
                tokio::time::sleep(Duration::from_millis(250 << failures.min(5))).await;
            }
        }
    }

    /// Queue a group DM from the inbox (handled by the group loop).
    pub(crate) fn file_group_dm(
        &self,
        from: &Name,
        dm: GroupDm,
        b: &mut super::store::Batch<'_>,
        queued: &mut Vec<(Name, GroupDm)>,
    ) -> Result<(), super::store::StoreError> {
        if queued.is_empty() {
            *queued = self.store.state(GROUP_DMS_KEY)?.unwrap_or_default();
        }
        // Bounded, and per sender: a stranger's flood cannot push out an
        // admin's move or key.
        let theirs = queued.iter().filter(|(f, _)| f == from).count();
        if queued.len() < MAX_GROUP_DMS && theirs < MAX_GROUP_DMS_PER_SENDER {
            queued.push((from.clone(), dm));
        }
        b.state(GROUP_DMS_KEY, queued)?;
        self.groups_wake.notify_one();
        Ok(())
    }
}

/// What one group message is.
enum Incoming {
    Text(GroupMsg),
    /// A member leaves (and the message's id, marked seen).
    Leave(Name, Hash),
    Refused(String),
    /// Already seen, or from before we joined.
    Seen,
    /// Stop here and read it again later (its key is missing, or the log
    /// disagrees).
    Wait,
}

fn names(n: &[Name]) -> String {
    n.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(c: &Change) -> String {
    match c {
        Change::Created => "created".into(),
        Change::Added(u) => format!("{u} was added"),
        Change::Removed(u) => format!("{u} was removed (key rotated)"),
        Change::Banned(u) => format!("{u} was banned (key rotated)"),
        Change::Left(u) => format!("{u} left (key rotated)"),
        Change::Admins => "the admins changed".into(),
        Change::Renamed => "renamed".into(),
        Change::Rotated => "key rotated".into(),
        Change::Moved(s) => format!("moved to {s}"),
        Change::Settings => "the settings changed".into(),
    }
}
