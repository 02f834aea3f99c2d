//! The terminal client (`xirtam-chat tui`), driven in tmux against a
//! local testnet: keys go in with `send-keys`, the screen comes back with
//! `capture-pane`. @bob is an in-process client the test controls.

use std::path::Path;
use std::time::{Duration, Instant};

use xirtam_chat::client::ChatClient;
use xirtam_testnet::Testnet;
use xirtam_testnet::tmux::Tmux;

use super::chat::{WAIT, chat_cli_command, chat_net, n, user};

/// The screen has to show something within this.
const SCREEN: Duration = Duration::from_secs(60);

/// `xirtam-chat tui` for the data directory `dir` on `net`, in tmux.
fn tui(net: &Testnet, dir: &Path) -> Tmux {
    let cmd = chat_cli_command(net, dir, &["tui", "--watch", "1"]);
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Tmux::start(
        Path::new(cmd.get_program()),
        &args,
        &[("EDITOR", "true")],
        120,
        36,
    )
    .expect("tmux starts the terminal client")
}

/// Poll `c` until one of its messages has `text`.
async fn bob_gets(c: &ChatClient, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !c.inbox().expect("inbox").iter().any(|m| m.text == text) {
        assert!(Instant::now() < deadline, "bob never got {text:?}");
        c.poll(Duration::from_millis(500)).await.expect("poll");
    }
}

#[tokio::test]
async fn the_terminal_client_chats_runs_a_group_and_shows_a_move() {
    let net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let a_dir = root.join("alice");
    drop(user(&net, &a_dir, "@alice", "~s1").await);
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let t = tui(&net, &a_dir);
    t.wait_for("@alice on ~s1", SCREEN)
        .await
        .expect("status line");

    // Open a conversation and send: bob gets it, alice sees it delivered.
    t.type_text("/msg @bob").await.expect("type");
    t.keys(&["Enter"]).await.expect("enter");
    t.wait_for("message to @bob", SCREEN)
        .await
        .expect("conversation open");
    t.type_text("hello bob").await.expect("type");
    t.keys(&["Enter"]).await.expect("enter");
    bob_gets(&bob, "hello bob").await;
    t.wait_for("@alice: hello bob ✓", SCREEN)
        .await
        .expect("delivery shown");

    // A reply arrives without a key press.
    bob.send(&n("@alice"), "hi alice").await.expect("send");
    t.wait_for("@bob: hi alice", SCREEN)
        .await
        .expect("the reply appears by itself");

    // Text from a peer cannot drive the terminal: no title change, no
    // cleared screen, the escapes shown as text.
    bob.send(
        &n("@alice"),
        "evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[1;1Hfake",
    )
    .await
    .expect("send");
    let screen = t
        .wait_for("evil\\u{1b}]0;pwned", SCREEN)
        .await
        .expect("escaped text");
    assert!(
        screen.contains("conversations") && screen.contains("@alice: hello bob"),
        "{screen}"
    );
    assert_ne!(t.title().await.expect("title"), "pwned");

    // A stranger's message waits under requests.
    let carol = user(&net, &root.join("carol"), "@carol", "~s1").await;
    carol
        .send(&n("@alice"), "hello, stranger here")
        .await
        .expect("send");
    t.wait_until("@carol under requests", SCREEN, |s| {
        s.find("── requests ──")
            .is_some_and(|r| s[r..].contains("@carol"))
    })
    .await
    .expect("request listed apart");

    // Create a group and invite bob, who joins and posts.
    t.type_text("/group create book club").await.expect("type");
    t.keys(&["Enter"]).await.expect("enter");
    t.wait_for("# book club · 1 member(s)", SCREEN)
        .await
        .expect("group open");
    t.type_text("/invite @bob").await.expect("type");
    t.keys(&["Enter"]).await.expect("enter");
    t.wait_for("# book club · 2 member(s)", SCREEN)
        .await
        .expect("bob added");
    let deadline = Instant::now() + WAIT;
    let group = loop {
        bob.poll(Duration::from_millis(500)).await.expect("poll");
        // Invitations are group messages: read the group queue too.
        bob.group_poll(Duration::ZERO).await.expect("group poll");
        if let Some((_, i)) = bob.group_invites().expect("invites").into_iter().next() {
            break i.group;
        }
        assert!(Instant::now() < deadline, "no invitation for bob");
    };
    bob.group_join(&group).await.expect("join");
    bob.group_send(&group, "count me in").await.expect("post");
    t.wait_for("@bob: count me in", SCREEN)
        .await
        .expect("group message appears by itself");

    // Bob moves: alice's client says so, with a fingerprint to compare.
    bob.move_to(&n("~s2")).await.expect("move");
    t.type_text("/msg @bob").await.expect("type");
    t.keys(&["Enter"]).await.expect("enter");
    let screen = t
        .wait_for("@bob moved from ~s1 to ~s2", SCREEN)
        .await
        .expect("move notice");
    let fp = bob.whois(&n("@bob")).await.expect("whois").fingerprint();
    t.wait_for(&format!("@bob's key fingerprint: {fp}"), SCREEN)
        .await
        .unwrap_or_else(|e| panic!("fingerprint {fp}: {e}\n{screen}"));

    // Help, then quit.
    t.keys(&["?"]).await.expect("?");
    t.wait_for("/group create NAME", SCREEN)
        .await
        .expect("help");
    t.keys(&["C-c"]).await.expect("quit");
    t.wait_for("[exited 0]", SCREEN).await.expect("clean exit");
}
