//! The client core in one process (no node, no server process): a real
//! light client over an in-memory chain, in-memory concierges
//! (`memory.rs`). Sending while a long-poll is open, the event stream, and
//! the outbox across restarts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use xirtam_chat::client::{ClientEvent, Events};

use crate::memory::{World, name};

/// Long-poll wait of the background receivers.
const WAIT: Duration = Duration::from_secs(30);

/// The first event `f` picks, within 10 s.
async fn expect<T>(
    events: &mut Events,
    what: &str,
    mut f: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match events.next().await {
                Some(e) => {
                    if let Some(t) = f(e) {
                        return t;
                    }
                }
                None => panic!("the client is gone while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn text_of(e: ClientEvent) -> Option<(bool, String)> {
    match e {
        ClientEvent::Message(m) => Some((false, m.text)),
        ClientEvent::Request(m) => Some((true, m.text)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_goes_out_while_a_long_poll_is_open() {
    let w = World::new(&["~s1"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let s1 = w.server("~s1");
    let opened = s1.poll_opened.notified();
    let mut bob_events = bob.events();
    let _running = bob.start(WAIT);
    tokio::time::timeout(Duration::from_secs(10), opened)
        .await
        .expect("bob's long-poll opens");
    assert_eq!(s1.open_polls.load(Ordering::SeqCst), 1);
    // The same client sends while its long-poll waits (30 s): the send
    // does not wait for the poll.
    let (msg, report) = tokio::time::timeout(
        Duration::from_secs(5),
        bob.send(&name("@alice"), "while polling"),
    )
    .await
    .expect("the send is not held up by the open long-poll")
    .expect("send");
    // Delivered by this flush or by the background flusher that the
    // queueing woke (whichever takes the flush lock first): not left queued.
    assert!(report.queued.is_empty(), "{report:?}");
    assert!(report.delivered.len() <= 1, "{report:?}");
    assert!(
        s1.open_polls.load(Ordering::SeqCst) >= 1,
        "the long-poll was still open"
    );
    let d = expect(&mut bob_events, "the delivery event", |e| match e {
        ClientEvent::Delivered(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(d.local, msg.local);
    // And alice, polling once, has it.
    let got = alice.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(got.messages.len(), 1, "{got:?}");
    assert_eq!(got.messages[0].text, "while polling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_messages_requests_gaps_and_record_changes_in_order() {
    let w = World::new(&["~s1", "~s2"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let (a, b) = (name("@alice"), name("@bob"));

    // Bob writes first: alice has not accepted him, so it is a request.
    let mut events = alice.events();
    let running = alice.start(WAIT);
    bob.send(&a, "one").await.expect("send");
    // His contact pass and his message (the pass may be read first, in a
    // round of its own).
    let (mut request, mut pass) = (None, None);
    while request.is_none() || pass.is_none() {
        expect(&mut events, "bob's message and pass", |e| {
            match e {
                ClientEvent::Pass(p) => pass = Some(p),
                e => request = text_of(e).or(request.take()),
            }
            Some(())
        })
        .await;
    }
    assert_eq!(request, Some((true, "one".to_string())), "a request");
    assert_eq!(pass, Some(b.clone()));

    // Alice accepts: the next ones are messages, in the order sent.
    assert!(alice.accept(&b).await.expect("accept"));
    for t in ["two", "three", "four"] {
        bob.send(&a, t).await.expect("send");
    }
    for t in ["two", "three", "four"] {
        let got = expect(&mut events, t, text_of).await;
        assert_eq!(got, (false, t.to_string()));
    }

    // A message the server lost: the next one says so.
    running.stop().await;
    let (lost, _) = bob.send(&a, "lost").await.expect("send");
    assert!(w.server("~s1").drop_last());
    let (next, _) = bob.send(&a, "after the lost one").await.expect("send");
    let _running = alice.start(WAIT);
    let got = expect(&mut events, "the message after the gap", text_of).await;
    assert_eq!(got.1, "after the lost one");
    let (message, after) = expect(&mut events, "the gap", |e| match e {
        ClientEvent::Missing { message, after } => Some((message, after)),
        _ => None,
    })
    .await;
    assert_eq!((message, after), (next.id, lost.id));

    // Bob adds a device, then moves: alice's next fresh lookup says so.
    let bob2 = w.device("bob-new");
    w.publish("@bob", "~s1", &[&bob, &bob2]);
    alice.whois(&b).await.expect("lookup");
    let (added, removed) = expect(&mut events, "bob's new device", |e| match e {
        ClientEvent::Devices {
            user,
            added,
            removed,
        } if user == b => Some((added, removed)),
        _ => None,
    })
    .await;
    assert_eq!(added, vec![bob2.device().sign]);
    assert!(removed.is_empty());
    w.publish("@bob", "~s2", &[&bob, &bob2]);
    alice.whois(&b).await.expect("lookup");
    let (from, to) = expect(&mut events, "bob's move", |e| match e {
        ClientEvent::Moved { user, from, to } if user == b => Some((from, to)),
        _ => None,
    })
    .await;
    assert_eq!((from, to), (name("~s1"), name("~s2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_client_restart_and_goes_out_when_the_server_is_back() {
    let w = World::new(&["~s1"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let a = name("@alice");
    bob.send(&a, "hello").await.expect("send");
    // Bob's client now retries only after a long backoff (20 minutes
    // after a first failure).
    let slow =
        |c: &mut xirtam_chat::client::ClientConfig| c.retry_backoff = Duration::from_secs(600);
    drop(bob);
    let bob = w.reopen_with("bob-0", slow);
    let s1 = w.server("~s1");
    s1.set_down(true);
    let mut events = bob.events();
    let (queued, report) = bob.send(&a, "queued").await.expect("queued");
    assert!(report.delivered.is_empty(), "{report:?}");
    let attempts = expect(&mut events, "the failed attempt", |e| match e {
        ClientEvent::Retrying {
            local, attempts, ..
        } if local == queued.local => Some(attempts),
        _ => None,
    })
    .await;
    assert_eq!(attempts, 1);
    // The client restarts, and the server comes back while it runs.
    drop(bob);
    let bob = w.reopen_with("bob-0", slow);
    assert_eq!(bob.outbox().expect("outbox").len(), 1);
    let mut events = bob.events();
    let running = bob.start(Duration::from_secs(1));
    // The receiver fails against the down server first...
    expect(&mut events, "a failed receive", |e| match e {
        ClientEvent::Error(_) => Some(()),
        _ => None,
    })
    .await;
    s1.set_down(false);
    // ...then reads it again, and the queued message goes out at once
    // rather than after its 20-minute backoff.
    let d = expect(&mut events, "the delivery", |e| match e {
        ClientEvent::Delivered(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(d.local, queued.local);
    assert!(bob.outbox().expect("outbox").is_empty());
    running.stop().await;
    let got = alice.poll(Duration::ZERO).await.expect("poll");
    let texts: Vec<_> = got.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello", "queued"], "once each, in order");
}

const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

fn texts(ms: &[xirtam_chat::client::store::Message]) -> Vec<&str> {
    ms.iter().map(|m| m.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_gets_the_history_then_sends_and_receives() {
    let w = World::new(&["~s1"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let (a, b) = (name("@alice"), name("@bob"));
    for i in 0..3 {
        bob.send(&a, &format!("b{i}")).await.expect("send");
        alice.send(&b, &format!("a{i}")).await.expect("send");
    }
    alice.poll(Duration::ZERO).await.expect("poll");
    bob.poll(Duration::ZERO).await.expect("poll");
    let big = "y".repeat(62_000);
    alice.send(&b, &big).await.expect("send");
    assert_eq!(
        bob.poll(Duration::ZERO).await.expect("poll").messages.len(),
        1
    );

    let new = w.device("alice-new");
    let link = new.link(&a, Duration::from_secs(60)).await.expect("link");
    let code = link.code().to_string();
    let (approved, joined) = tokio::join!(alice.approve(&code, MONTH), new.finish_link(link));
    let approved = approved.expect("approve");
    joined.expect("the new device takes the name");
    assert_eq!(approved.device, new.device());
    assert_eq!(approved.messages, 6);
    assert_eq!(alice.devices().await.expect("devices").len(), 2);

    // The bundle arrives through the mailbox, end to end encrypted.
    // A message too large for a bundle part is left out, not a failure.
    assert!(approved.parts >= 1);
    let mut events = new.events();
    let got = new.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(got.synced, 6, "{got:?}");
    let synced = expect(&mut events, "the bundle", |e| match e {
        ClientEvent::Synced { messages, .. } => Some(messages),
        _ => None,
    })
    .await;
    assert_eq!(synced, 6);
    let (mut mine, theirs) = (alice.inbox().expect("inbox"), new.inbox().expect("inbox"));
    mine.retain(|m| m.text != big);
    assert_eq!(texts(&theirs), texts(&mine), "the same conversation");
    assert_eq!(theirs.len(), 6);

    // It sends as alice (bob's contact already: the pass came along)...
    let (_, report) = new.send(&b, "from the new device").await.expect("send");
    assert_eq!(report.delivered.len(), 1, "{report:?}");
    let got = bob.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(texts(&got.messages), ["from the new device"]);
    assert!(!got.messages[0].request, "alice is bob's contact");
    // ...alice's first device sees it too, and both receive bob's answer.
    let got = alice.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(texts(&got.messages), ["from the new device"]);
    bob.send(&a, "to both").await.expect("send");
    for d in [&alice, &new] {
        let got = d.poll(Duration::ZERO).await.expect("poll");
        assert_eq!(texts(&got.messages), ["to both"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_or_expired_code_fails_cleanly_on_both_devices() {
    let w = World::new(&["~s1"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let a = name("@alice");

    // Right slot, wrong secret digits: the keys do not match.
    let new = w.device("alice-new");
    let link = new.link(&a, Duration::from_secs(60)).await.expect("link");
    let code = link.code().to_string();
    let last = code.chars().last().expect("digits");
    let wrong = format!(
        "{}{}",
        &code[..code.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let (approved, joined) = tokio::join!(alice.approve(&wrong, MONTH), new.finish_link(link));
    let (e1, e2) = (approved.expect_err("approve"), joined.expect_err("finish"));
    assert!(e1.to_string().contains("mistyped"), "{e1}");
    assert!(e2.to_string().contains("mistyped"), "{e2}");
    assert_eq!(alice.devices().await.expect("devices").len(), 1);
    assert!(new.name().is_none());

    // An expired code: the new device gives up, and a late approval is
    // told so at once.
    let new = w.device("alice-late");
    let link = new
        .link(&a, Duration::from_millis(300))
        .await
        .expect("link");
    let code = link.code().to_string();
    let e = new.finish_link(link).await.expect_err("expires");
    assert!(e.to_string().contains("expired"), "{e}");
    let e = alice.approve(&code, MONTH).await.expect_err("too late");
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(alice.devices().await.expect("devices").len(), 1);

    // A code nobody shows.
    let e = alice
        .approve("0000-0000-0000", MONTH)
        .await
        .expect_err("nobody");
    assert!(e.to_string().contains("no device is waiting"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_told_and_gets_nothing_new() {
    let w = World::new(&["~s1"]);
    let mut alice = w.user("@alice", "~s1", 2).await;
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let (a, b) = (name("@alice"), name("@bob"));
    let (first, lost) = (alice.remove(0), alice.remove(0));
    first
        .remove_device(&lost.device().sign)
        .await
        .expect("remove");
    assert_eq!(
        first.devices().await.expect("devices"),
        vec![first.device()]
    );
    bob.send(&a, "after the removal").await.expect("send");
    // The removed device's next call says what happened.
    let e = lost.poll(Duration::ZERO).await.expect_err("removed");
    assert!(
        matches!(e, xirtam_chat::client::ClientError::Removed { .. }),
        "{e}"
    );
    let e = lost.send(&b, "still here?").await.expect_err("removed");
    assert!(e.to_string().contains("was removed"), "{e}");
    // Bob wrapped the message to the remaining device only.
    let got = first.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(texts(&got.messages), ["after the removal"]);
    // The last device cannot be removed.
    let e = first
        .remove_device(&first.device().sign)
        .await
        .expect_err("last");
    assert!(e.to_string().contains("only device"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_state_is_the_same_on_every_device() {
    let w = World::new(&["~s1"]);
    let mut alice = w.user("@alice", "~s1", 2).await;
    let bob = w.user("@bob", "~s1", 1).await.remove(0);
    let (a, b) = (name("@alice"), name("@bob"));
    let (d1, d2) = (alice.remove(0), alice.remove(0));
    for t in ["one", "two"] {
        bob.send(&a, t).await.expect("send");
    }
    for d in [&d1, &d2] {
        let got = d.poll(Duration::ZERO).await.expect("poll");
        assert_eq!(texts(&got.messages), ["one", "two"]);
    }
    let mut events = d2.events();
    let mark = d1.mark_read(&b).expect("mark").expect("something to mark");
    assert_eq!(d1.read_mark(&b).expect("mark"), Some(mark.clone()));
    assert!(d1.mark_read(&b).expect("mark").is_none(), "read already");
    let f = d1.flush().await.expect("flush");
    assert!(f.queued.is_empty(), "{f:?}");
    d2.poll(Duration::ZERO).await.expect("poll");
    let (peer, id) = expect(&mut events, "the read mark", |e| match e {
        ClientEvent::Read { peer, id } => Some((peer, id)),
        _ => None,
    })
    .await;
    assert_eq!((peer, id), (b.clone(), mark.id));
    assert_eq!(d2.read_mark(&b).expect("mark"), Some(mark));
    // Bob (one device) marks read: there is nobody to tell, and nothing
    // stays queued.
    bob.poll(Duration::ZERO).await.expect("poll");
    bob.send(&a, "three").await.expect("send");
    assert!(bob.mark_read(&a).expect("mark").is_some());
    bob.flush().await.expect("flush");
    assert!(bob.outbox().expect("outbox").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_for_our_other_devices_names_no_one_else() {
    let w = World::new(&["~s1", "~s2"]);
    let mut alice = w.user("@alice", "~s1", 2).await;
    let bob = w.user("@bob", "~s2", 1).await.remove(0);
    let (a, b) = (name("@alice"), name("@bob"));
    let (d1, d2) = (alice.remove(0), alice.remove(0));
    let (_, f) = d1.send(&b, "hi").await.expect("send");
    assert_eq!(f.delivered.len(), 1, "{f:?}");
    let wrapped = |env: &[u8]| -> Vec<xirtam_proofs::PublicKey> {
        xirtam_proofs::decode::<xirtam_chat::crypto::Envelope>(env)
            .expect("an envelope")
            .wraps
            .iter()
            .map(|w| w.device)
            .collect()
    };
    // Bob's server sees only wraps for bob's device, ours only for our
    // other device: neither learns from the wraps who the other side is.
    let theirs = w.server("~s2").envelopes(&b);
    assert!(!theirs.is_empty());
    for env in &theirs {
        assert_eq!(wrapped(env), vec![bob.device().sign]);
    }
    let ours = w.server("~s1").envelopes(&a);
    assert!(!ours.is_empty());
    for env in &ours {
        assert_eq!(wrapped(env), vec![d2.device().sign]);
    }
    let got = d2.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(texts(&got.messages), ["hi"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_link_slot_does_not_break_a_link() {
    let w = World::new(&["~s1"]);
    let alice = w.user("@alice", "~s1", 1).await.remove(0);
    let a = name("@alice");
    let new = w.device("alice-new");
    let link = new.link(&a, Duration::from_secs(60)).await.expect("link");
    let code = link.code().to_string();
    // Whoever watches the slot (the server, or anyone who guessed the
    // first group) posts junk and an abort where the new device reads.
    let slot =
        xirtam_chat::api::link_slot(&xirtam_proofs::params::REGTEST.genesis_hash, &a, &code[..4]);
    let s1 = w.server("~s1");
    s1.link_post_raw(&slot, 1, vec![0xff; 40]);
    // `LinkMsg::Abort { reason }`: variant 4, then the string.
    s1.link_post_raw(&slot, 1, xirtam_proofs::encode(&(4u32, "stop".to_string())));
    let (approved, joined) = tokio::join!(alice.approve(&code, MONTH), new.finish_link(link));
    approved.expect("approved despite the junk");
    joined.expect("linked despite the junk");
    assert_eq!(alice.devices().await.expect("devices").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_approving_device_can_provision() {
    use xirtam_chat::client::SyncPart;
    use xirtam_chat::client::store::Message;
    use xirtam_chat::crypto::{DeviceKeys, Event, KIND_SYNC, Recipient, SignedEvent, seal};
    let w = World::new(&["~s1"]);
    let mut alice = w.user("@alice", "~s1", 2).await;
    let a = name("@alice");
    let (d1, d2) = (alice.remove(0), alice.remove(0));
    // Another device of ours (a lost phone, not removed yet) tries to
    // plant a message from @bob on d2 with a bundle.
    let rogue = DeviceKeys::from_seed([77; 32]);
    w.publish_devices(
        "@alice",
        "~s1",
        &d1,
        vec![d1.device(), d2.device(), rogue.device()],
    );
    let fake = Message {
        local: 0,
        id: xirtam_proofs::Hash([5; 32]),
        from: name("@bob"),
        to: a.clone(),
        time_ms: 1,
        after: xirtam_proofs::Hash::ZERO,
        text: "planted".into(),
        delivered: true,
        verified_at: 1,
        via: None,
        request: false,
    };
    let part = SyncPart {
        parts: 1,
        messages: vec![fake],
        ..SyncPart::default()
    };
    let event = SignedEvent::sign(
        &rogue,
        &xirtam_proofs::params::REGTEST.genesis_hash,
        Event {
            sender: a.clone(),
            device: rogue.device().sign,
            recipient: a.clone(),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as u64,
            after: xirtam_proofs::Hash::ZERO,
            kind: KIND_SYNC,
            body: xirtam_proofs::encode(&part),
        },
    );
    let to = [Recipient {
        device: d2.device().sign,
        kx: d2.device().kx,
    }];
    let env = seal(&event, &to).expect("seal");
    w.server("~s1").deposit_raw(&a, xirtam_proofs::encode(&env));
    let got = d2.poll(Duration::ZERO).await.expect("poll");
    assert_eq!(got.synced, 0, "{got:?}");
    assert!(
        got.rejected
            .iter()
            .any(|r| r.contains("did not link this one")),
        "{got:?}"
    );
    assert!(
        d2.inbox()
            .expect("inbox")
            .iter()
            .all(|m| m.text != "planted")
    );
}
