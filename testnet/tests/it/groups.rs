//! Groups through real processes: nodes and concierge servers from the
//! testnet harness, clients in-process (the library behind `xirtam-chat`)
//! and through the CLI.

use std::path::Path;
use std::time::{Duration, Instant};

use xirtam_chat::client::ChatClient;
use xirtam_proofs::Hash;
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
        bob.group_send(&g, &format!("before {i}")).await.expect("send");
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
        let name = format!("name {i}");
        let (a, b) = tokio::join!(alice.group_rotate(&g), bob.group_rename(&g, &name));
        a.expect("alice's rotation");
        b.expect("bob's rename");
    }
    let retries = alice.group_cas_retries() + bob.group_cas_retries();
    assert!(
        retries > 0,
        "no compare-and-swap was ever lost in {rounds} rounds: the race was not exercised"
    );
    // Every change is in the log: the last name and at least one rotation
    // per round, and every member agrees on the head.
    let a = alice.group(&g).expect("group");
    assert_eq!(a.name, format!("name {}", rounds - 1));
    assert!(a.epoch >= rounds as u64, "epoch {}", a.epoch);
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
