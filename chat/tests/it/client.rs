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
    assert_eq!(report.delivered.len(), 1, "{report:?}");
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
