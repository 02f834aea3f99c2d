//! Groups through real processes: nodes and concierge servers from the
//! testnet harness, clients in-process (the library behind `xirtam-chat`)
//! and through the CLI.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use xirtam_chat::api::{self, ConciergeApiClient};
use xirtam_chat::client::ChatClient;
use xirtam_chat::group::log::Entry;
use xirtam_chat::server::{Limits, ServerConfig};
use xirtam_proofs::{Hash, decode};
use xirtam_testnet::Testnet;

use super::chat::{WAIT, chat_cli_async, chat_net, n, text, user};

/// Link a new device (data directory `dir`) to `name`, approved by
/// `owner` (which holds the root key).
pub(crate) async fn link_device(
    net: &Testnet,
    owner: &ChatClient,
    name: &str,
    dir: &Path,
) -> ChatClient {
    let c = ChatClient::init(dir, net.client_config().expect("config")).expect("init");
    let pending = c
        .link(&n(name), Duration::from_secs(120))
        .await
        .expect("link code");
    let code = pending.code().to_string();
    let (approved, finished) = tokio::join!(
        owner.approve(&code, Duration::from_secs(3600)),
        c.finish_link(pending)
    );
    approved.expect("approve");
    finished.expect("linked");
    c
}

/// The texts of `g` on `c`, as `@from: text`.
fn texts(c: &ChatClient, g: &Hash) -> Vec<String> {
    c.group_messages(g)
        .expect("group messages")
        .into_iter()
        .map(|m| format!("{}: {}", m.from, m.text))
        .collect()
}

/// Poll `c` (DMs, then groups) until `done` holds.
async fn until(c: &ChatClient, what: &str, done: impl Fn(&ChatClient) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut errors = Vec::new();
    while !done(c) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (errors: {errors:?})"
        );
        let r = c.poll(Duration::from_millis(100)).await.expect("poll");
        errors.extend(r.errors);
        let g = c
            .group_poll(Duration::from_millis(300))
            .await
            .expect("group poll");
        errors.extend(g.errors);
        errors.extend(g.rejected);
        let excess = errors.len().saturating_sub(5);
        errors.drain(..excess);
    }
}

/// Poll `c` a few times whatever happens (to give it every chance to see
/// what it must not).
async fn churn(c: &ChatClient, rounds: usize) {
    for _ in 0..rounds {
        let _ = c.poll(Duration::from_millis(100)).await;
        let _ = c.group_poll(Duration::from_millis(200)).await;
    }
}

/// Invite `users` to `g` from `admin` and have each accept.
async fn invite_all(admin: &ChatClient, g: &Hash, users: &[(&ChatClient, &str)]) {
    for (_, u) in users {
        admin.group_invite(g, &n(u)).await.expect("invite");
    }
    admin.flush().await.expect("flush");
    for (c, u) in users {
        until(c, &format!("{u}'s invitation"), |c| {
            c.group_invites()
                .expect("invites")
                .iter()
                .any(|(_, i)| &i.group == g)
        })
        .await;
        c.group_join(g).await.expect("join");
    }
}

/// Three users on two servers, one with two devices, talk in a group;
/// after a ban the banned member reads nothing new and what it still
/// posts is refused by the others.
#[tokio::test]
async fn three_users_on_two_servers_talk_and_a_ban_locks_out() {
    let net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s2").await;
    let carol = user(&net, &root.join("carol"), "@carol", "~s2").await;
    let alice2 = link_device(&net, &alice, "@alice", &root.join("alice2")).await;

    let g = alice
        .group_create("lobby", None)
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob"), (&carol, "@carol")]).await;
    until(&alice2, "alice's second device to join", |c| {
        c.group(&g).is_ok()
    })
    .await;

    for (c, t) in [
        (&alice, "hi from alice"),
        (&alice2, "hi from alice's phone"),
        (&bob, "hi from bob"),
        (&carol, "hi from carol"),
    ] {
        c.group_send(&g, t).await.expect("send");
    }
    for c in [&alice, &alice2, &bob, &carol] {
        until(c, "all four messages", |c| texts(c, &g).len() == 4).await;
    }
    let info = bob.group(&g).expect("group");
    assert_eq!(info.members, vec![n("@alice"), n("@bob"), n("@carol")]);
    assert_eq!(info.admins, vec![n("@alice")]);
    assert_eq!(info.server, n("~s1"));

    // Ban carol: the key rotates, and nothing after it reaches her.
    let after = alice
        .group_remove(&g, &n("@carol"), true)
        .await
        .expect("ban");
    assert_eq!(after.epoch, 1);
    bob.group_send(&g, "after the ban").await.expect("send");
    for c in [&alice, &alice2, &bob] {
        until(c, "the message after the ban", |c| {
            texts(c, &g).contains(&"@bob: after the ban".to_string())
        })
        .await;
    }
    churn(&carol, 6).await;
    assert!(
        !texts(&carol, &g)
            .iter()
            .any(|t| t.contains("after the ban")),
        "{:?}",
        texts(&carol, &g)
    );
    assert_eq!(carol.group(&g).expect("kept").waiting_key, Some(1));
    // Her device cannot post under the new key either.
    let e = carol.group_send(&g, "sneaky").await.expect_err("no key");
    assert!(e.to_string().contains("lacks the key of epoch 1"), "{e}");
    // And she cannot be invited again.
    assert!(alice.group_invite(&g, &n("@carol")).await.is_err());
}

/// The CLI: create, invite, join, send, members; `inbox` shows group
/// messages and invitations.
#[tokio::test]
async fn groups_through_the_cli() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let (a_dir, b_dir) = (root.join("alice"), root.join("bob"));
    drop(user(&net, &a_dir, "@alice", "~s1").await);
    drop(user(&net, &b_dir, "@bob", "~s1").await);
    let run = |dir: &Path, args: &[&str]| {
        let (dir, args): (std::path::PathBuf, Vec<String>) = (
            dir.to_path_buf(),
            args.iter().map(|s| s.to_string()).collect(),
        );
        let net = &net;
        async move {
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let out = chat_cli_async(net, &dir, &args).await;
            assert!(out.status.success(), "{args:?}: {}", text(&out));
            text(&out)
        }
    };
    let out = run(&a_dir, &["group", "create", "book club"]).await;
    assert!(out.contains("group book club"), "{out}");
    run(&a_dir, &["group", "invite", "book club", "@bob"]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(&b_dir, &["inbox", "--wait", "1"]).await;
        if out.contains("invites you to group book club") {
            break;
        }
        assert!(Instant::now() < deadline, "no invitation: {out}");
    }
    let out = run(&b_dir, &["group", "join", "book club"]).await;
    assert!(out.contains("members @alice @bob"), "{out}");
    run(&b_dir, &["group", "send", "book club", "chapter", "one"]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let out = run(&a_dir, &["inbox"]).await;
        if out.contains("@bob: chapter one") {
            break;
        }
        assert!(Instant::now() < deadline, "no group message: {out}");
    }
    let out = run(&a_dir, &["group", "rename", "book club", "readers"]).await;
    assert!(out.contains("group readers"), "{out}");
    // Only admins post: bob's client says so; without history, a new
    // member gets a new key.
    let out = run(
        &a_dir,
        &[
            "group",
            "set",
            "readers",
            "--admins-only",
            "on",
            "--history",
            "off",
        ],
    )
    .await;
    assert!(
        out.contains("only admins post") && out.contains("read only what follows"),
        "{out}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        run(&b_dir, &["inbox"]).await;
        let out = run(&b_dir, &["group", "members", "readers"]).await;
        if out.contains("only admins post") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob never saw the settings: {out}"
        );
    }
    let out = chat_cli_async(&net, &b_dir, &["group", "send", "readers", "hi"]).await;
    assert!(
        !out.status.success() && text(&out).contains("only admins may post"),
        "{}",
        text(&out)
    );
    let out = run(&a_dir, &["group", "kick", "readers", "@bob"]).await;
    assert!(
        out.contains("members @alice\n") && out.contains("epoch 1"),
        "{out}"
    );
}

/// The group moves to another server: every member follows, one that was
/// offline during the move too, and nothing is lost - not even a message
/// posted to the old server by a member who had not seen the move yet.
#[tokio::test]
async fn a_group_moves_and_every_member_follows_with_nothing_lost() {
    let net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s2").await;
    let carol = user(&net, &root.join("carol"), "@carol", "~s1").await;
    let g = alice
        .group_create("travellers", None)
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob"), (&carol, "@carol")]).await;
    // Carol goes offline.
    for i in 0..3 {
        bob.group_send(&g, &format!("before {i}"))
            .await
            .expect("send");
    }
    let moved = alice.group_move(&g, &n("~s2")).await.expect("move");
    assert_eq!((moved.server.clone(), moved.epoch), (n("~s2"), 1));
    alice.flush().await.expect("flush");
    // Bob has not read the move yet: his message goes to the old server.
    bob.group_send(&g, "in flight").await.expect("send");
    until(&alice, "the message in flight", |c| {
        texts(c, &g).contains(&"@bob: in flight".to_string())
    })
    .await;
    until(&bob, "bob to follow the move", |c| {
        c.group(&g).expect("group").server == n("~s2")
    })
    .await;
    bob.group_send(&g, "after the move").await.expect("send");
    alice.group_send(&g, "welcome to ~s2").await.expect("send");
    // Carol comes back.
    let want: Vec<String> = [
        "@bob: before 0",
        "@bob: before 1",
        "@bob: before 2",
        "@bob: in flight",
        "@bob: after the move",
        "@alice: welcome to ~s2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    until(&carol, "every message", |c| {
        let t = texts(c, &g);
        want.iter().all(|w| t.contains(w))
    })
    .await;
    let info = carol.group(&g).expect("group");
    assert_eq!((info.server, info.epoch), (n("~s2"), 1));
    assert!(info.forked.is_none());
    // The group works on the new server: a change and a message.
    alice
        .group_remove(&g, &n("@carol"), false)
        .await
        .expect("kick on ~s2");
    bob.group_send(&g, "without carol").await.expect("send");
    until(&alice, "the message on ~s2", |c| {
        texts(c, &g).contains(&"@bob: without carol".to_string())
    })
    .await;
}

/// Two admins change the group at the same moment, again and again: each
/// loser of the compare-and-swap reads the winner's entry and makes its
/// change again, every change lands, and the group keeps working.
#[tokio::test]
async fn two_admins_changing_at_once_leave_a_working_group() {
    let net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s2").await;
    let carol = user(&net, &root.join("carol"), "@carol", "~s1").await;
    let g = alice
        .group_create("admins", None)
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob"), (&carol, "@carol")]).await;
    alice
        .group_admin(&g, &n("@bob"), true)
        .await
        .expect("promote bob");
    // Bob sees he is an admin.
    until(&bob, "bob's promotion", |c| {
        c.group(&g).expect("group").admins.contains(&n("@bob"))
    })
    .await;
    let rounds = 6;
    for i in 0..rounds {
        // Even rounds: both rotate at once (one rotation lands, the other
        // finds it done); odd rounds: a rotation and a rename (both land).
        let name = format!("name {i}");
        let (a, b) = if i % 2 == 0 {
            tokio::join!(alice.group_rotate(&g), bob.group_rotate(&g))
        } else {
            tokio::join!(alice.group_rotate(&g), bob.group_rename(&g, &name))
        };
        a.expect("alice's change");
        b.expect("bob's change");
    }
    let retries = alice.group_cas_retries() + bob.group_cas_retries();
    assert!(
        retries > 0,
        "no compare-and-swap was ever lost in {rounds} rounds: the race was not exercised"
    );
    // Every change is in the log: the last name and at least one rotation
    // per round, and every member agrees on the head.
    let last_name = format!("name {}", rounds - 1);
    until(&alice, "bob's last rename", |c| {
        c.group(&g).expect("group").name == last_name
    })
    .await;
    let a = alice.group(&g).expect("group");
    assert!(a.epoch >= rounds as u64, "epoch {}", a.epoch);
    assert!(a.epoch <= 2 * rounds as u64, "epoch {}", a.epoch);
    bob.group_send(&g, "still working").await.expect("send");
    for c in [&alice, &carol] {
        until(c, "the message after the race", |c| {
            texts(c, &g).contains(&"@bob: still working".to_string())
        })
        .await;
    }
    let heads: Vec<Hash> = [&alice, &bob, &carol]
        .iter()
        .map(|c| c.group(&g).expect("group").head)
        .collect();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    assert!(carol.group(&g).expect("group").forked.is_none());
}

/// Per segment, its branches, each a list of encoded entries.
type Branches = HashMap<Hash, Vec<Vec<Vec<u8>>>>;

/// A hostile group host: a front (at the URL a real server `~evil`
/// publishes) that keeps group logs in memory and can show different
/// members different branches of a log, or another group's log.
#[derive(Clone, Default)]
struct HostileHost {
    /// Per segment, its branches (each a list of encoded entries from
    /// position 0).
    logs: std::sync::Arc<std::sync::Mutex<Branches>>,
    /// Per segment, the posted messages.
    lanes: std::sync::Arc<std::sync::Mutex<HashMap<Hash, Vec<Vec<u8>>>>>,
    /// The branch served (and appended to) now.
    serve: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Serve the second segment's log when the first is asked for.
    redirect: std::sync::Arc<std::sync::Mutex<Option<(Hash, Hash)>>>,
    /// Take appends but answer with an error (the answer lost).
    lose_replies: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn refused(code: i32, msg: &str) -> jsonrpsee::types::ErrorObjectOwned {
    jsonrpsee::types::ErrorObjectOwned::owned(code, msg.to_owned(), None::<()>)
}

impl HostileHost {
    /// From now on, a second branch (a copy of the first) is kept.
    fn fork(&self) {
        for branches in self.logs.lock().expect("lock").values_mut() {
            let first = branches[0].clone();
            branches.push(first);
        }
    }

    fn serve(&self, branch: usize) {
        self.serve
            .store(branch, std::sync::atomic::Ordering::SeqCst);
    }

    fn branch(&self, segment: &Hash) -> Vec<Vec<u8>> {
        let segment = match *self.redirect.lock().expect("lock") {
            Some((from, to)) if &from == segment => to,
            _ => *segment,
        };
        let logs = self.logs.lock().expect("lock");
        let b = self.serve.load(std::sync::atomic::Ordering::SeqCst);
        logs.get(&segment)
            .map(|branches| branches[b.min(branches.len() - 1)].clone())
            .unwrap_or_default()
    }

    fn head(segment: &Hash, branch: &[Vec<u8>]) -> api::GroupHead {
        let last: Entry = decode(branch.last().expect("an entry")).expect("entry");
        api::GroupHead {
            segment: segment.to_hex(),
            first: 0,
            seq: last.seq,
            head: last.head().to_hex(),
        }
    }

    fn module(self) -> jsonrpsee::RpcModule<HostileHost> {
        let mut m = jsonrpsee::RpcModule::new(self);
        m.register_method("group_append", |p, h, _| {
            let (segment, entry, anchor): (String, String, Option<String>) = p.parse()?;
            let segment = Hash::from_hex(&segment).map_err(|_| refused(-32602, "segment"))?;
            let bytes = api::unb64(&entry).ok_or_else(|| refused(-32602, "base64"))?;
            let e: Entry = decode(&bytes).map_err(|_| refused(-32602, "entry"))?;
            let b = h.serve.load(std::sync::atomic::Ordering::SeqCst);
            let mut logs = h.logs.lock().expect("lock");
            let branches = logs.entry(segment).or_insert_with(|| vec![Vec::new()]);
            let last = branches.len() - 1;
            let branch = &mut branches[b.min(last)];
            let head = branch
                .last()
                .map(|x| decode::<Entry>(x).expect("entry").head())
                .unwrap_or(Hash::ZERO);
            if branch.is_empty()
                && let Some(a) = anchor
            {
                branch.push(api::unb64(&a).ok_or_else(|| refused(-32602, "base64"))?);
            }
            let head = branch
                .last()
                .map(|x| decode::<Entry>(x).expect("entry").head())
                .unwrap_or(head);
            if e.prev != head {
                return Err(refused(api::code::HEAD_MOVED, "head moved"));
            }
            branch.push(bytes);
            if h.lose_replies.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(refused(-32000, "connection reset (the answer was lost)"));
            }
            Ok::<_, jsonrpsee::types::ErrorObjectOwned>(HostileHost::head(&segment, branch))
        })
        .expect("register");
        m.register_method("group_log", |p, h, _| {
            let (segment, from, _limit): (String, u64, u32) = p.parse()?;
            let segment = Hash::from_hex(&segment).map_err(|_| refused(-32602, "segment"))?;
            let branch = h.branch(&segment);
            if branch.is_empty() {
                return Err(refused(api::code::NOT_FOUND, "no such log"));
            }
            Ok(api::GroupEntries {
                head: HostileHost::head(&segment, &branch),
                entries: branch
                    .iter()
                    .filter(|e| decode::<Entry>(e).expect("entry").seq >= from)
                    .map(|e| api::b64(e))
                    .collect(),
            })
        })
        .expect("register");
        m.register_method("group_post", |p, h, _| {
            let (segment, _access, message): (String, String, String) = p.parse()?;
            let segment = Hash::from_hex(&segment).map_err(|_| refused(-32602, "segment"))?;
            let bytes = api::unb64(&message).ok_or_else(|| refused(-32602, "base64"))?;
            let mut lanes = h.lanes.lock().expect("lock");
            let lane = lanes.entry(segment).or_default();
            lane.push(bytes);
            Ok::<_, jsonrpsee::types::ErrorObjectOwned>(lane.len() as u64)
        })
        .expect("register");
        m.register_async_method("group_receive", |p, h, _| async move {
            let (cursors, wait): (Vec<api::GroupCursor>, u64) = p.parse()?;
            // No notification: answer after a short wait (a test double).
            tokio::time::sleep(Duration::from_millis(wait.min(100))).await;
            let mut out = Vec::new();
            for c in cursors {
                let segment = Hash::from_hex(&c.segment).map_err(|_| refused(-32602, "segment"))?;
                let branch = h.branch(&segment);
                let lanes = h.lanes.lock().expect("lock");
                let msgs = lanes.get(&segment).cloned().unwrap_or_default();
                out.push(api::GroupBatch {
                    segment: c.segment.clone(),
                    log_seq: HostileHost::head(&segment, &branch).seq,
                    messages: msgs
                        .iter()
                        .enumerate()
                        .skip(c.after as usize)
                        .map(|(i, m)| api::Delivered {
                            seq: i as u64 + 1,
                            envelope: api::b64(m),
                        })
                        .collect(),
                });
            }
            Ok::<_, jsonrpsee::types::ErrorObjectOwned>(out)
        })
        .expect("register");
        m
    }
}

/// Start `~evil`: a real server whose record's URL is a [`HostileHost`]
/// front (which forwards `server_info` to it).
async fn hostile_host(
    net: &Testnet,
) -> (
    HostileHost,
    xirtam_chat::server::RunningServer,
    jsonrpsee::server::ServerHandle,
) {
    let front = jsonrpsee::server::Server::builder()
        .build("127.0.0.1:0")
        .await
        .expect("bind the front");
    let url = format!("http://{}", front.local_addr().expect("addr"));
    let real = xirtam_chat::server::start(ServerConfig {
        name: n("~evil"),
        params: net.params().expect("params"),
        datadir: net.root().join("evil"),
        nodes: net.node_urls(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: Some(url),
        plain_http: false,
        depth: None,
        limits: Limits::default(),
    })
    .await
    .expect("server");
    let inner = xirtam_chat::tls::concierge_client(
        &format!("https://{}", real.addr),
        &real.key,
        Duration::from_secs(30),
        64 << 20,
    )
    .expect("client of the real server");
    let host = HostileHost::default();
    let mut module = host.clone().module();
    module
        .register_async_method("server_info", move |_, _, _| {
            let inner = inner.clone();
            async move {
                inner
                    .server_info()
                    .await
                    .map_err(|e| refused(-32000, &e.to_string()))
            }
        })
        .expect("register");
    let handle = front.start(module);
    let deadline = Instant::now() + WAIT;
    loop {
        let c = xirtam_chat::tls::concierge_client(
            &format!("https://{}", real.addr),
            &real.key,
            Duration::from_secs(30),
            1 << 20,
        )
        .expect("client");
        if c.server_info().await.expect("info").registered_at.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "~evil not registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (host, real, handle)
}

/// A server that shows two members two branches of the log (each built
/// on the same head by a different admin) is caught by both: each sees a
/// message sent under a head that is not theirs at that position.
#[tokio::test]
async fn a_server_showing_members_different_logs_is_detected() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let (host, _evil, _front) = hostile_host(&net).await;
    let g = alice
        .group_create("split", Some(&n("~evil")))
        .await
        .expect("create on ~evil")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob")]).await;
    alice
        .group_admin(&g, &n("@bob"), true)
        .await
        .expect("promote");
    until(&bob, "bob's promotion", |c| {
        c.group(&g).expect("group").admins.len() == 2
    })
    .await;
    // From here, alice is shown one branch and bob another.
    host.fork();
    host.serve(0);
    alice
        .group_rename(&g, "A")
        .await
        .expect("rename on branch 0");
    alice.group_send(&g, "from a").await.expect("send");
    host.serve(1);
    bob.group_rename(&g, "B").await.expect("rename on branch 1");
    bob.group_send(&g, "from b").await.expect("send");
    // Each reads the lane (shared) under its own branch.
    until(&bob, "bob to notice", |c| {
        c.group(&g).expect("group").forked.is_some()
    })
    .await;
    host.serve(0);
    until(&alice, "alice to notice", |c| {
        c.group(&g).expect("group").forked.is_some()
    })
    .await;
    for c in [&alice, &bob] {
        let why = c.group(&g).expect("group").forked.expect("forked");
        assert!(why.contains("different logs"), "{why}");
    }
}

/// An invitation pins the log entry and the server's key: a server that
/// answers the invited group's log with another group's (to hijack the
/// invitee into a group of its choosing) is refused.
#[tokio::test]
async fn an_invitation_replayed_into_another_group_is_refused() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let (host, _evil, _front) = hostile_host(&net).await;
    let evil = n("~evil");
    let g1 = alice
        .group_create("wanted", Some(&evil))
        .await
        .expect("create")
        .group;
    let g2 = alice
        .group_create("other", Some(&evil))
        .await
        .expect("create")
        .group;
    // Bob is invited to both: the server replays the second group's log
    // (where bob is a member too, at the same position) for the first.
    for g in [&g1, &g2] {
        alice.group_invite(g, &n("@bob")).await.expect("invite");
    }
    alice.flush().await.expect("flush");
    until(&bob, "the invitations", |c| {
        c.group_invites().expect("invites").len() == 2
    })
    .await;
    let seg = |g: &Hash| xirtam_chat::group::log::segment_id(g, &Hash::ZERO);
    *host.redirect.lock().expect("lock") = Some((seg(&g1), seg(&g2)));
    let e = bob.group_join(&g1).await.expect_err("refused");
    assert!(
        e.to_string()
            .contains("does not hold the entry the invitation pinned"),
        "{e}"
    );
    assert!(bob.groups().expect("groups").is_empty());
    // Served honestly again, the same invitation works.
    *host.redirect.lock().expect("lock") = None;
    bob.group_join(&g1).await.expect("join");
}

/// `kill -9` of the hosting server while an admin rotates the key and a
/// member posts, three times over: every post the server acknowledged
/// reaches the other members, every acknowledged rotation holds, and the
/// group keeps working.
#[tokio::test]
async fn kill_9_of_the_host_during_rotations_loses_nothing_acknowledged() {
    let mut net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    // Everyone lives on ~s2; the group is hosted on ~s1, the one killed.
    let alice = user(&net, &root.join("alice"), "@alice", "~s2").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s2").await;
    let carol = user(&net, &root.join("carol"), "@carol", "~s2").await;
    let g = alice
        .group_create("durable", Some(&n("~s1")))
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob"), (&carol, "@carol")]).await;

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posted = std::sync::Arc::new(tokio::sync::Notify::new());
    let poster = {
        let (bob, acked, stop, posted) = (bob.clone(), acked.clone(), stop.clone(), posted.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = format!("m{i}");
                i += 1;
                match bob.group_send(&g, &t).await {
                    Ok(_) => {
                        acked.lock().expect("lock").push(t);
                        posted.notify_waiters();
                    }
                    // The server is down (or restarting): pace the retries.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    };
    let mut acked_epochs = Vec::new();
    for _ in 0..3 {
        // Wait until posts go through again, then kill mid-rotation.
        let before = acked.lock().expect("lock").len();
        let deadline = Instant::now() + WAIT;
        while acked.lock().expect("lock").len() < before + 3 {
            assert!(Instant::now() < deadline, "posts do not go through");
            let _ = tokio::time::timeout(Duration::from_secs(1), posted.notified()).await;
        }
        let rotation = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.group_rotate(&g).await })
        };
        tokio::task::yield_now().await;
        net.kill_server(0);
        if let Ok(info) = rotation.await.expect("rotation task") {
            acked_epochs.push(info.epoch);
        }
        net.restart_server(0).await.expect("server restarts");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    poster.await.expect("poster");
    // The group still works: a rotation, then a message.
    let last = alice
        .group_rotate(&g)
        .await
        .expect("rotation after the restarts");
    assert!(
        acked_epochs.iter().all(|e| *e < last.epoch),
        "{acked_epochs:?} {}",
        last.epoch
    );
    bob.group_send(&g, "final").await.expect("send");
    let mut want = acked.lock().expect("lock").clone();
    want.push("final".into());
    for c in [&alice, &carol] {
        until(c, "every acknowledged post", |c| {
            let got = texts(c, &g);
            want.iter().all(|w| got.contains(&format!("@bob: {w}")))
        })
        .await;
        assert_eq!(c.group(&g).expect("group").epoch, last.epoch);
    }
}

/// A device left out of a rotation (its user's record, as the admin had it
/// cached, did not list it yet) keeps the group, asks an admin by DM, gets
/// the key re-shared and reads on - it is never treated as removed.
#[tokio::test]
async fn a_device_left_out_of_a_rotation_asks_and_gets_the_key() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let g = alice
        .group_create("late", None)
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob")]).await;
    // Alice's view of bob's record is now fresh (kept 30 s): one device.
    assert_eq!(
        alice
            .whois(&n("@bob"))
            .await
            .expect("whois")
            .record()
            .devices
            .len(),
        1
    );
    let bob2 = link_device(&net, &bob, "@bob", &root.join("bob2")).await;
    until(&bob2, "bob's new device to join", |c| c.group(&g).is_ok()).await;
    // Rotated from the cached record: not sealed to bob's new device.
    let rotated = alice.group_rotate(&g).await.expect("rotate");
    alice
        .group_send(&g, "after the rotation")
        .await
        .expect("send");
    until(&bob2, "bob's new device to miss the key", |c| {
        c.group(&g).expect("group").waiting_key == Some(rotated.epoch)
    })
    .await;
    // Alice's client answers the request in the background.
    let running = alice.start(Duration::from_millis(500));
    until(&bob2, "the message after the rotation", |c| {
        texts(c, &g).contains(&"@alice: after the rotation".to_string())
    })
    .await;
    assert_eq!(bob2.group(&g).expect("group").waiting_key, None);
    running.stop().await;
    // Bob's first device had the key all along.
    until(&bob, "the message on bob's first device", |c| {
        texts(c, &g).contains(&"@alice: after the rotation".to_string())
    })
    .await;
}

/// Junk in the lane (from the host, or anyone holding the access token)
/// that names a position far ahead, an epoch the log does not have, or
/// another head neither marks the group forked nor stalls it: only a
/// message signed by a member is evidence.
#[tokio::test]
async fn junk_in_the_lane_neither_forks_nor_stalls_a_group() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let (host, _evil, _front) = hostile_host(&net).await;
    let g = alice
        .group_create("noisy", Some(&n("~evil")))
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob")]).await;
    let info = bob.group(&g).expect("group");
    let segment = xirtam_chat::group::log::segment_id(&g, &Hash::ZERO);
    for (epoch, log_seq) in [
        (info.epoch + 5, info.seq),
        (info.epoch, u64::MAX),
        (info.epoch, info.seq),
    ] {
        let junk = xirtam_chat::group::crypto::GroupMessage {
            group: g,
            epoch,
            log_seq,
            head: Hash([9; 32]),
            salt: [1; 16],
            ct: vec![7; 80],
        };
        host.lanes
            .lock()
            .expect("lock")
            .entry(segment)
            .or_default()
            .push(xirtam_proofs::encode(&junk));
    }
    alice.group_send(&g, "after the junk").await.expect("send");
    until(&bob, "the message after the junk", |c| {
        texts(c, &g).contains(&"@alice: after the junk".to_string())
    })
    .await;
    assert!(bob.group(&g).expect("group").forked.is_none());
}

/// A move whose answer was lost (the new server took the entry): the admin's
/// client finds its entry there and adopts it, instead of being refused on
/// that server for good.
#[tokio::test]
async fn a_move_whose_answer_was_lost_is_adopted() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let (host, _evil, _front) = hostile_host(&net).await;
    let g = alice
        .group_create("lossy", None)
        .await
        .expect("create")
        .group;
    invite_all(&alice, &g, &[(&bob, "@bob")]).await;
    host.lose_replies
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let moved = alice
        .group_move(&g, &n("~evil"))
        .await
        .expect("the move that landed is adopted");
    assert_eq!((moved.server, moved.epoch), (n("~evil"), 1));
    host.lose_replies
        .store(false, std::sync::atomic::Ordering::SeqCst);
    alice.flush().await.expect("flush");
    until(&bob, "bob to follow", |c| {
        c.group(&g).expect("group").server == n("~evil")
    })
    .await;
    alice.group_send(&g, "on the new host").await.expect("send");
    until(&bob, "the message there", |c| {
        texts(c, &g).contains(&"@alice: on the new host".to_string())
    })
    .await;
}
