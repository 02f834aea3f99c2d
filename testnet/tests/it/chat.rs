//! Chat through real processes: nodes and concierge servers from the
//! testnet harness, clients in-process (the library behind `xirtam-chat`).

use std::path::Path;
use std::time::{Duration, Instant};

use jsonrpsee::core::RpcResult;
use jsonrpsee::core::async_trait;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::server::Server;
use xirtam_chat::api::{
    self, Batch, Challenge, ConciergeApiClient, ConciergeApiServer, Cursor, MailboxInfo, Receipt,
    ServerInfo, Token,
};
use xirtam_chat::client::store::Message;
use xirtam_chat::client::{ChatClient, ClientConfig};
use xirtam_chat::crypto::{
    DeviceKeys, Envelope, Event, KIND_TEXT, Recipient, SignedEvent, open, seal,
};
use xirtam_chat::records::{Device, UserRecord, VerifiedUser};
use xirtam_chat::server::{Limits, ServerConfig};
use xirtam_lightclient::{Config as LcConfig, HttpSource, LightClient};
use xirtam_node_api::NodeApiClient;
use xirtam_proofs::{Hash, Name, SecretKey, decode, encode};
use xirtam_testnet::{Config, Testnet};

pub(crate) const WAIT: Duration = Duration::from_secs(90);
/// Postage of the test servers: 12 bits (about a millisecond) instead of
/// the default 22 (about a second), so tests stay quick; the cost of the
/// default is measured by the benchmarks.
const TEST_POSTAGE: &[&str] = &["--postage-bits", "12"];

pub(crate) fn n(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// A regtest network of `nodes` nodes with a block every 200 ms and the
/// given servers running.
pub(crate) async fn chat_net(nodes: usize, servers: &[&str]) -> Testnet {
    let mut net = Testnet::start(Config {
        nodes,
        log: "warn".into(),
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    net.auto_mine(0, Duration::from_millis(200));
    for s in servers {
        net.add_server(s, TEST_POSTAGE)
            .await
            .expect("server starts");
    }
    net
}

pub(crate) async fn user(net: &Testnet, dir: &Path, name: &str, server: &str) -> ChatClient {
    let c = ChatClient::init(dir, net.client_config().expect("config")).expect("init");
    c.register(&n(name), &n(server)).await.expect("register");
    c
}

/// Poll until `c` has received `count` new messages.
async fn receive(c: &mut ChatClient, count: usize) -> (Vec<Message>, usize, Vec<String>) {
    let deadline = Instant::now() + WAIT;
    let (mut got, mut dups, mut rejected) = (Vec::new(), 0, Vec::new());
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "received {} of {count} (rejected {rejected:?})",
            got.len()
        );
        let r = c.poll(Duration::from_millis(500)).await.expect("poll");
        got.extend(r.messages);
        dups += r.duplicates;
        rejected.extend(r.rejected);
    }
    (got, dups, rejected)
}

#[tokio::test]
async fn demo_story() {
    let out = xirtam_testnet::demo::run(None, false, false)
        .await
        .expect("the demo completes");
    let texts: Vec<&str> = out.alice_inbox.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Hi Bob! This is end-to-end encrypted.",
            "Hi Alice, loud and clear.",
            "Sent before I noticed your move.",
            "Now straight to ~s2.",
            "Same conversation, new server. Nothing lost."
        ]
    );
    let bob: Vec<&str> = out.bob_inbox.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(bob, texts, "both sides hold the same conversation");
    let via: Vec<String> = out
        .alice_inbox
        .iter()
        .filter(|m| m.from == n("@bob"))
        .map(|m| m.via.as_ref().map(|v| v.to_string()).unwrap_or_default())
        .collect();
    assert_eq!(
        via,
        ["~s1", "~s1", "~s2"],
        "the old server is read during the grace period"
    );
    let t = out.transcript.join("\n");
    for needle in [
        "verified at height",
        "signed receipt",
        "moves to ~s2",
        "demo complete",
    ] {
        assert!(t.contains(needle), "transcript mentions {needle:?}:\n{t}");
    }
}

#[tokio::test]
async fn offline_user_gets_200_messages_in_order_after_reconnect() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    drop(bob); // Bob goes offline.
    for i in 0..200 {
        let (_, r) = alice
            .send(&n("@bob"), &format!("message {i}"))
            .await
            .expect("send");
        assert_eq!(r.delivered.len(), 1, "message {i} delivered to the server");
    }
    let mut bob =
        ChatClient::open(&root.join("bob"), net.client_config().expect("config")).expect("reopen");
    let (got, _, rejected) = receive(&mut bob, 200).await;
    assert!(rejected.is_empty());
    let texts: Vec<String> = got.iter().map(|m| m.text.clone()).collect();
    let want: Vec<String> = (0..200).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want, "arrival order");
    let inbox: Vec<String> = bob
        .inbox()
        .expect("inbox")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(inbox, want, "after-link order");
    // Nothing more arrives: every one was delivered exactly once.
    let r = bob.poll(Duration::from_millis(300)).await.expect("poll");
    assert!(r.messages.is_empty());
}

#[tokio::test]
async fn server_kill_9_loses_no_acknowledged_message_and_queued_ones_survive_client_restart() {
    let mut net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    for i in 0..30 {
        let (_, r) = alice
            .send(&n("@bob"), &format!("before {i}"))
            .await
            .expect("send");
        assert_eq!(r.delivered.len(), 1, "acknowledged by a signed receipt");
    }
    net.kill_server(0);
    // Server down: the message is kept in the outbox...
    let (m, r) = alice
        .send(&n("@bob"), "while the server was down")
        .await
        .expect("queued");
    assert!(r.delivered.is_empty() && !m.delivered);
    assert_eq!(alice.outbox().expect("outbox").len(), 1);
    // Retried while the server stays down, its backoff grows to 8 s.
    let deadline = Instant::now() + WAIT;
    while alice.outbox().expect("outbox")[0].attempts < 3 {
        assert!(Instant::now() < deadline, "no retries");
        alice.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... across a client restart too.
    drop(alice);
    net.restart_server(0).await.expect("server restarts");
    let alice = ChatClient::open(&root.join("alice"), net.client_config().expect("config"))
        .expect("reopen");
    assert_eq!(
        alice.outbox().expect("outbox").len(),
        1,
        "kept across restarts"
    );
    // The server answers again: the next send takes the queued message
    // along at once, not when its backoff ends.
    let (_, r) = alice
        .send(&n("@bob"), "after the restart")
        .await
        .expect("send");
    assert_eq!(
        r.delivered.len(),
        2,
        "the queued message waited for its backoff: {r:?}"
    );
    assert!(alice.outbox().expect("outbox").is_empty());
    let (got, _, _) = receive(&mut bob, 32).await;
    let mut want: Vec<String> = (0..30).map(|i| format!("before {i}")).collect();
    want.push("after the restart".into());
    want.push("while the server was down".into());
    let texts: Vec<String> = got.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, want);
}

/// Run `xirtam-chat` on regtest with every node of `net` and data
/// directory `dir`, then `args`.
pub(crate) fn chat_cli(net: &Testnet, dir: &Path, args: &[&str]) -> std::process::Output {
    chat_cli_command(net, dir, args)
        .output()
        .expect("run xirtam-chat")
}

/// `chat_cli` without blocking the runtime (the network keeps mining).
pub(crate) async fn chat_cli_async(
    net: &Testnet,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::from(chat_cli_command(net, dir, args))
        .output()
        .await
        .expect("run xirtam-chat")
}

pub(crate) fn chat_cli_command(net: &Testnet, dir: &Path, args: &[&str]) -> std::process::Command {
    let bin =
        xirtam_testnet::find_bin("xirtam-chat", "XIRTAM_CHAT_BIN").expect("xirtam-chat built");
    let mut full = vec![
        "--network".to_string(),
        "regtest".into(),
        "--datadir".into(),
        dir.display().to_string(),
    ];
    for u in net.node_urls() {
        full.push("--node".into());
        full.push(u);
    }
    full.extend(args.iter().map(|s| s.to_string()));
    let mut c = std::process::Command::new(&bin);
    c.args(&full);
    c
}

/// Register `name` on `server` for a device whose keys the test holds.
async fn manual_user(net: &Testnet, name: &str, server: &str, device: &DeviceKeys, root: u8) {
    publish_devices(net, name, server, &[device], root).await;
}

/// Log `device` in as `user` on the server at `url` (named `server`). The
/// record was confirmed for the test's own light client; the server's may
/// still be a block behind, so "not registered" is retried for a while.
async fn login(c: &HttpClient, server: &str, user: &str, device: &DeviceKeys) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let ch = c.auth_challenge(user.into()).await.expect("challenge");
        let bytes: [u8; 32] = hex::decode(&ch.challenge)
            .expect("hex")
            .try_into()
            .expect("32");
        let sig = device.sign(
            api::AUTH_TAG,
            &api::auth_payload(&n(server), &n(user), &bytes),
        );
        match c
            .auth_login(
                user.into(),
                device.device().sign.to_hex(),
                ch.challenge,
                hex::encode(sig.0),
            )
            .await
        {
            Ok(t) => return t.token,
            Err(e) if e.to_string().contains("not registered") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("login: {e}"),
        }
    }
}

/// Deposit `env` (hex) for `to` on the server behind `c` as a stranger
/// does: into the requests lane, paying the server's postage on node 0's
/// tip (which the server may not have seen yet: it catches up).
async fn stranger_deposit(
    net: &Testnet,
    c: &HttpClient,
    to: &str,
    env: String,
) -> Result<Receipt, jsonrpsee::core::client::Error> {
    let postage = postage_for(net, c, to, &env).await?;
    c.mailbox_deposit(to.into(), env, None, Some(postage)).await
}

/// Wait until node 0 has a block above its tip now (so that new postage
/// names another block than postage made before).
async fn next_block(net: &Testnet) {
    let now = net.tip(0).await.expect("tip").height;
    let deadline = Instant::now() + WAIT;
    while net.tip(0).await.expect("tip").height <= now {
        assert!(Instant::now() < deadline, "no new block");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Postage for depositing `env` (hex) for `to` on the server behind `c`,
/// on node 0's tip.
async fn postage_for(
    net: &Testnet,
    c: &HttpClient,
    to: &str,
    env: &str,
) -> Result<api::Postage, jsonrpsee::core::client::Error> {
    let bits = c.server_info().await?.postage_bits;
    // Two blocks under node 0's tip, as the client does: the server's
    // light client may be a block or two behind.
    let height = net.tip(0).await.expect("tip").height.saturating_sub(2);
    let header = net
        .rpc(0)
        .chain_headers(height, 1)
        .await
        .expect("header")
        .pop()
        .expect("one header");
    let block = xirtam_node_api::wire::header_from_hex(&header)
        .expect("header")
        .hash();
    let bytes = hex::decode(env).expect("hex");
    let nonce = api::solve_postage(
        &api::requests_id(&n(to)),
        &api::envelope_hash(&bytes),
        &block,
        bits,
    );
    Ok(api::Postage {
        height,
        block: block.to_hex(),
        nonce,
    })
}

fn event(keys: &DeviceKeys, sender: &str, to: &str, body: &str) -> SignedEvent {
    SignedEvent::sign(
        keys,
        &xirtam_proofs::params::REGTEST.genesis_hash,
        Event {
            sender: n(sender),
            device: keys.device().sign,
            recipient: n(to),
            time: 1,
            after: Hash::default(),
            kind: KIND_TEXT,
            body: body.as_bytes().to_vec(),
        },
    )
}

#[tokio::test]
async fn security_plaintext_forgery_and_replay() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let carol_keys = DeviceKeys::from_seed([7; 32]);
    manual_user(&net, "@carol", "~s1", &carol_keys, 70).await;

    // 1. The server's data directory never holds a plaintext.
    let marker = format!("secret-{}", hex::encode(rand_marker()));
    alice.send(&n("@bob"), &marker).await.expect("send");
    let (got, _, _) = receive(&mut bob, 1).await;
    assert_eq!(got[0].text, marker);
    alice.send(&n("@bob"), &marker).await.expect("send again");
    assert!(
        dir_contains(&root.join("bob"), marker.as_bytes()),
        "the scan finds plaintext where it is (the client's own store)"
    );
    assert!(
        !dir_contains(&net.server(0).datadir, marker.as_bytes()),
        "plaintext found in the server's data directory"
    );

    let s1 = net.server(0).rpc().clone();
    let bob_rec = bob.whois(&n("@bob")).await.expect("bob's record");
    let to_bob: Vec<Recipient> = bob_rec
        .record()
        .devices
        .iter()
        .map(|d| Recipient {
            device: d.sign,
            kx: d.kx,
        })
        .collect();
    // 2. A message signed by a device not in the sender's record.
    let forged = event(&carol_keys, "@alice", "@bob", "I am alice, honest");
    let env = seal(&forged, &to_bob).expect("seal");
    stranger_deposit(&net, &s1, "@bob", hex::encode(encode(&env)))
        .await
        .expect("the server cannot tell; it stores ciphertext");
    // 3. A replayed ciphertext. With the same postage the server refuses
    // it (postage is single-use); paid again on a later block it gets in,
    // and the client drops it as a duplicate.
    let genuine = event(&carol_keys, "@carol", "@bob", "hello from carol");
    let env = hex::encode(encode(&seal(&genuine, &to_bob).expect("seal")));
    let postage = postage_for(&net, &s1, "@bob", &env).await.expect("postage");
    s1.mailbox_deposit("@bob".into(), env.clone(), None, Some(postage.clone()))
        .await
        .expect("deposit");
    let same = s1
        .mailbox_deposit("@bob".into(), env.clone(), None, Some(postage.clone()))
        .await
        .expect_err("postage is single-use");
    assert!(same.to_string().contains("used already"), "{same}");
    next_block(&net).await;
    stranger_deposit(&net, &s1, "@bob", env.clone())
        .await
        .expect("the replay, paid again");
    let (got, dups, rejected) = receive(&mut bob, 2).await;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, [marker.as_str(), "hello from carol"]);
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("@alice") && r.contains("not")),
        "forged event rejected: {rejected:?}"
    );
    assert!(dups >= 1, "replay counted as duplicate");
    // Replayed again later (after acknowledgement): still not shown.
    next_block(&net).await;
    stranger_deposit(&net, &s1, "@bob", env)
        .await
        .expect("deposit");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = bob.poll(Duration::from_millis(500)).await.expect("poll");
        assert!(
            r.messages.is_empty(),
            "replay shown again: {:?}",
            r.messages
        );
        if r.duplicates > 0 {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let all: Vec<String> = bob
        .inbox()
        .expect("inbox")
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(all.iter().filter(|t| *t == "hello from carol").count(), 1);
    assert!(!all.iter().any(|t| t.contains("honest")));
}

fn rand_marker() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random");
    b
}

fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// A server front that forwards everything to a real server but hands out
/// extra medium-term keys: one forged (signed by a device not in the
/// record) and one stale (validly signed, expired).
#[derive(Debug, Clone)]
struct KeyForger {
    inner: HttpClient,
    /// What `keys_fetch` answers (the test may change it).
    answer: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait]
impl ConciergeApiServer for KeyForger {
    fn server_info(&self) -> RpcResult<ServerInfo> {
        Err(not_forwarded())
    }
    fn auth_challenge(&self, _user: String) -> RpcResult<Challenge> {
        Err(not_forwarded())
    }
    async fn auth_login(&self, _: String, _: String, _: String, _: String) -> RpcResult<Token> {
        Err(not_forwarded())
    }
    async fn mailbox_create(&self, _token: String) -> RpcResult<MailboxInfo> {
        Err(not_forwarded())
    }
    async fn mailbox_deposit(
        &self,
        _: String,
        _: String,
        _: Option<String>,
        _: Option<api::Postage>,
    ) -> RpcResult<Receipt> {
        Err(jsonrpsee::types::ErrorObjectOwned::owned(
            -32000,
            "use the async path",
            None::<()>,
        ))
    }
    async fn mailbox_receive(&self, _: String, _: Vec<Cursor>, _: u64) -> RpcResult<Vec<Batch>> {
        Err(not_forwarded())
    }
    async fn mailbox_ack(&self, _: String, _: String, _: u64) -> RpcResult<u64> {
        Err(not_forwarded())
    }
    async fn mailbox_passes(&self, _: String, _: Vec<String>, _: Vec<String>) -> RpcResult<u64> {
        Err(not_forwarded())
    }
    async fn keys_publish(&self, _: String, _: String) -> RpcResult<bool> {
        Err(not_forwarded())
    }
    fn keys_fetch(&self, _user: String) -> RpcResult<Vec<String>> {
        Ok(self.answer.lock().expect("lock").clone())
    }
    fn link_post(&self, _: String, _: u8, _: String) -> RpcResult<bool> {
        Err(not_forwarded())
    }
    async fn link_read(&self, _: String, _: u8, _: u32, _: u64) -> RpcResult<Vec<String>> {
        Err(not_forwarded())
    }
    async fn group_append(
        &self,
        _: String,
        _: String,
        _: Option<String>,
    ) -> RpcResult<api::GroupHead> {
        Err(not_forwarded())
    }
    fn group_log(&self, _: String, _: u64, _: u32) -> RpcResult<api::GroupEntries> {
        Err(not_forwarded())
    }
    async fn group_post(&self, _: String, _: String, _: String) -> RpcResult<u64> {
        Err(not_forwarded())
    }
    async fn group_receive(
        &self,
        _: Vec<api::GroupCursor>,
        _: u64,
    ) -> RpcResult<Vec<api::GroupBatch>> {
        Err(not_forwarded())
    }
}

fn not_forwarded() -> jsonrpsee::types::ErrorObjectOwned {
    jsonrpsee::types::ErrorObjectOwned::owned(-32000, "not forwarded", None::<()>)
}

/// A real concierge server `server` whose published URL is a [`KeyForger`]
/// front answering `keys_fetch` with `answer` (deposits go through to the
/// server), with `user` (device `keys`, root seed `root`) registered on it,
/// logged in and its mailbox created. Returns the server, a client of the
/// server itself, the user's token and the front.
async fn key_front(
    net: &Testnet,
    server: &str,
    user: &str,
    keys: &DeviceKeys,
    root: u8,
    answer: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> (
    xirtam_chat::server::RunningServer,
    HttpClient,
    String,
    jsonrpsee::server::ServerHandle,
) {
    let front = Server::builder()
        .build("127.0.0.1:0")
        .await
        .expect("bind the front");
    let front_url = format!("http://{}", front.local_addr().expect("addr"));
    let real = xirtam_chat::server::start(ServerConfig {
        name: n(server),
        params: net.params().expect("params"),
        datadir: net.root().join(server.trim_start_matches('~')),
        nodes: net.node_urls(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: Some(front_url),
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
    let mut module = KeyForger {
        inner: inner.clone(),
        answer,
    }
    .into_rpc();
    // Forward deposits and server info to the real server (senders ask it
    // for the postage difficulty).
    module.remove_method("mailbox_deposit");
    module
        .register_async_method("mailbox_deposit", |params, ctx, _| async move {
            let (to, env, pass, postage): (String, String, Option<String>, Option<api::Postage>) =
                params.parse()?;
            ctx.inner
                .mailbox_deposit(to, env, pass, postage)
                .await
                .map_err(|e| {
                    jsonrpsee::types::ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)
                })
        })
        .expect("register");
    module.remove_method("server_info");
    module
        .register_async_method("server_info", |_, ctx, _| async move {
            ctx.inner.server_info().await.map_err(|e| {
                jsonrpsee::types::ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)
            })
        })
        .expect("register");
    let handle = front.start(module);
    manual_user(net, user, server, keys, root).await;
    let token = login(&inner, server, user, keys).await;
    inner.mailbox_create(token.clone()).await.expect("mailbox");
    // The server must be confirmed before senders can reach it.
    let deadline = Instant::now() + WAIT;
    while inner
        .server_info()
        .await
        .expect("info")
        .registered_at
        .is_none()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (real, inner, token, handle)
}

#[tokio::test]
async fn forged_and_stale_medium_keys_are_refused() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    // ~evil: a real server whose published URL is a front that serves
    // bad keys for @carol.
    let carol = DeviceKeys::from_seed([9; 32]);
    let now = xirtam_chat::unix_now();
    let stale = carol
        .medium_key(
            &xirtam_proofs::params::REGTEST.genesis_hash,
            now - 7200,
            3600,
        )
        .expect("key")
        .key;
    let other = DeviceKeys::from_seed([10; 32]);
    let mut forged = other
        .medium_key(&xirtam_proofs::params::REGTEST.genesis_hash, now, 3600)
        .expect("key")
        .key;
    forged.device = carol.device().sign; // claims to be carol's device
    let answer = std::sync::Arc::new(std::sync::Mutex::new(vec![
        hex::encode(encode(&stale)),
        hex::encode(encode(&forged)),
    ]));
    let (evil, inner, token, _front) = key_front(&net, "~evil", "@carol", &carol, 90, answer).await;

    let (_, r) = alice
        .send(&n("@carol"), "for carol only")
        .await
        .expect("send");
    assert_eq!(r.delivered.len(), 1, "delivered: {r:?}");
    let d = &r.delivered[0];
    assert_eq!(
        d.refused_keys.len(),
        2,
        "both bad keys refused: {:?}",
        d.refused_keys
    );
    // Carol reads with her long-term key from the verified record: the
    // content key was never wrapped to the forged key.
    // Alice is a stranger to carol: her message is in the requests lane,
    // after the contact pass she sent along.
    let batches = inner
        .mailbox_receive(
            token,
            vec![Cursor {
                mailbox: api::requests_id(&n("@carol")).to_hex(),
                after: d.seq - 1,
                ack: false,
            }],
            5_000,
        )
        .await
        .expect("receive");
    let env: Envelope =
        decode(&hex::decode(&batches[0].messages[0].envelope).expect("hex")).expect("envelope");
    assert!(
        env.wraps
            .iter()
            .all(|w| w.kx == carol.device().kx && w.kx != forged.kx)
    );
    let ev = open(&env, &carol, &[]).expect("carol decrypts");
    assert_eq!(ev.event.body, b"for carol only");
    evil.stop().await;
}

/// Attack 5: a server that stops returning medium-term keys made senders
/// wrap to the long-term device key without a word. Now a sender uses the
/// last valid key it saw, refuses (keeps the message queued) once that one
/// is no longer valid, and says so when it wraps to a long-term key
/// because no medium-term key was ever seen.
#[tokio::test]
async fn blanked_medium_keys_never_silently_lose_forward_secrecy() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let dave = user(&net, &root.join("dave"), "@dave", "~s1").await;
    let carol = DeviceKeys::from_seed([11; 32]);
    let answer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (evil, inner, token, _front) =
        key_front(&net, "~blank", "@carol", &carol, 110, answer.clone()).await;
    // Valid for 15 s from now (after the setup): long enough for the first
    // two sends, short enough to see what happens once the only key alice
    // saw has expired.
    let medium = carol
        .medium_key(
            &xirtam_proofs::params::REGTEST.genesis_hash,
            xirtam_chat::unix_now(),
            15,
        )
        .expect("key")
        .key;
    *answer.lock().expect("lock") = vec![hex::encode(encode(&medium))];
    // The keys the envelope with sequence number `seq` in carol's requests
    // lane (her senders are strangers) is wrapped to.
    let wraps = |seq: u64| {
        let inner = inner.clone();
        let token = token.clone();
        async move {
            let batches = inner
                .mailbox_receive(
                    token,
                    vec![Cursor {
                        mailbox: api::requests_id(&n("@carol")).to_hex(),
                        after: seq - 1,
                        ack: false,
                    }],
                    5_000,
                )
                .await
                .expect("receive");
            let env: Envelope =
                decode(&hex::decode(&batches[0].messages[0].envelope).expect("hex"))
                    .expect("envelope");
            env.wraps.iter().map(|w| w.kx).collect::<Vec<_>>()
        }
    };

    // Alice sees carol's medium-term key: wrapped to it.
    let (_, r) = alice.send(&n("@carol"), "one").await.expect("send");
    assert_eq!(r.delivered.len(), 1, "{r:?}");
    assert!(r.delivered[0].long_term.is_empty());
    assert_eq!(wraps(r.delivered[0].seq).await, vec![medium.kx]);

    // The server blanks its answer: alice still wraps to the key she saw.
    answer.lock().expect("lock").clear();
    let (_, r) = alice.send(&n("@carol"), "two").await.expect("send");
    assert_eq!(r.delivered.len(), 1, "{r:?}");
    assert!(r.delivered[0].long_term.is_empty());
    assert_eq!(
        wraps(r.delivered[0].seq).await,
        vec![medium.kx],
        "not the long-term key {:?}",
        carol.device().kx
    );

    // Dave never saw a key of carol's: the long-term key, and he is told.
    let (_, r) = dave.send(&n("@carol"), "three").await.expect("send");
    assert_eq!(r.delivered.len(), 1, "{r:?}");
    assert_eq!(r.delivered[0].long_term, vec![carol.device().sign]);
    assert_eq!(wraps(r.delivered[0].seq).await, vec![carol.device().kx]);

    // Once the key alice saw has expired and the server still offers
    // none, alice does not fall back: the message stays queued, and says
    // why.
    let expiry = std::time::UNIX_EPOCH + Duration::from_secs(medium.expires + 1);
    if let Ok(left) = expiry.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await; // wall-clock expiry, not a sync
    }
    let (m, r) = alice.send(&n("@carol"), "four").await.expect("send");
    assert!(r.delivered.is_empty(), "{r:?}");
    assert_eq!(r.queued.len(), 1, "{r:?}");
    assert!(r.queued[0].2.contains("forward secrecy"), "{r:?}");
    assert!(!m.delivered);
    evil.stop().await;
}

/// Publish `devices` as `name`'s record on `server` (root key from seed
/// `root`) and wait until it is confirmed.
async fn publish_devices(
    net: &Testnet,
    name: &str,
    server: &str,
    devices: &[&DeviceKeys],
    root: u8,
) {
    let devices: Vec<Device> = devices.iter().map(|d| d.device()).collect();
    publish_record(
        net,
        name,
        server,
        &devices,
        &SecretKey::from_seed([root; 32]),
    )
    .await;
}

/// Publish `devices` as `name`'s record on `server`, signed by the owner
/// `key`, and wait until it is confirmed.
async fn publish_record(
    net: &Testnet,
    name: &str,
    server: &str,
    devices: &[Device],
    key: &SecretKey,
) {
    let lc = LightClient::new(
        LcConfig::new(net.params().expect("params")),
        net.node_urls()
            .iter()
            .map(|u| HttpSource::new(u, Duration::from_secs(10)).expect("source"))
            .collect(),
    )
    .expect("light client");
    let value = UserRecord {
        server: n(server),
        devices: devices.to_vec(),
    }
    .to_value()
    .expect("record");
    lc.publish(key, &n(name), value.clone(), None)
        .await
        .expect("published");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(l) = lc.resolve(&n(name)).await
            && l.record().is_some_and(|r| r.value.as_bytes() == value)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not confirmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A user with two devices on `~s1` (server 0 of `net`), both logged in
/// (the second device's keys are not needed after its login), and a
/// mailbox.
struct TwoDevices {
    d1: DeviceKeys,
    s1: HttpClient,
    t1: String,
    t2: String,
}

/// Register `name` with two devices (seeds `seed` and `seed + 1`) on
/// `~s1`, log both in and create the mailbox.
async fn two_devices(net: &Testnet, name: &str, seed: u8) -> TwoDevices {
    let (d1, d2) = (
        DeviceKeys::from_seed([seed; 32]),
        DeviceKeys::from_seed([seed + 1; 32]),
    );
    publish_devices(net, name, "~s1", &[&d1, &d2], 120).await;
    let s1 = net.server(0).rpc().clone();
    let t1 = login(&s1, "~s1", name, &d1).await;
    let t2 = login(&s1, "~s1", name, &d2).await;
    s1.mailbox_create(t1.clone()).await.expect("mailbox");
    TwoDevices { d1, s1, t1, t2 }
}

/// A long-poll's cursor with `ack` acknowledges for its own device only:
/// the envelopes stay until every device of the record has acknowledged
/// them, one way or the other.
#[tokio::test]
async fn a_cursor_acknowledges_for_its_own_device() {
    let net = chat_net(1, &["~s1"]).await;
    let TwoDevices { d1, s1, t1, t2 } = two_devices(&net, "@fay", 31).await;
    for text in ["one", "two"] {
        let env = seal(
            &event(&d1, "@fay", "@fay", text),
            &[Recipient {
                device: d1.device().sign,
                kx: d1.device().kx,
            }],
        )
        .expect("seal");
        stranger_deposit(&net, &s1, "@fay", hex::encode(encode(&env)))
            .await
            .expect("deposit");
    }
    let lane = api::requests_id(&n("@fay")).to_hex();
    let cursor = |after: u64, ack: bool| {
        vec![Cursor {
            mailbox: lane.clone(),
            after,
            ack,
        }]
    };
    let stored = |b: Vec<api::Batch>| b.iter().map(|b| b.messages.len()).sum::<usize>();
    // A cursor past the mailbox's end (as after a server restored from a
    // backup) acknowledges nothing: device 1 has not seen these.
    s1.mailbox_receive(t1.clone(), cursor(5, true), 0)
        .await
        .expect("device 1 polls ahead");
    // Device 2 acknowledges both in its next long-poll's cursor: device 1
    // has not, so both stay.
    s1.mailbox_receive(t2.clone(), cursor(2, true), 0)
        .await
        .expect("device 2 polls");
    let left = s1
        .mailbox_receive(t1.clone(), cursor(0, false), 0)
        .await
        .expect("device 1 reads");
    assert_eq!(
        stored(left),
        2,
        "deleted by one device's ack, or by a cursor past the end"
    );
    // Device 1 acknowledges the same way: now they are gone.
    s1.mailbox_receive(t1.clone(), cursor(2, true), 0)
        .await
        .expect("device 1 polls");
    let left = s1
        .mailbox_receive(t2.clone(), cursor(0, false), 0)
        .await
        .expect("device 2 reads");
    assert_eq!(stored(left), 0, "the cursor acknowledged nothing");
}

/// Attack 11: a device removed from the record kept its session until its
/// token expired (an hour); one call could name a mailbox 16 times; a
/// deposit to a made-up name created rate-limit state.
#[tokio::test]
async fn a_removed_device_loses_its_session_and_server_state_stays_bounded() {
    let net = chat_net(1, &["~s1"]).await;
    let TwoDevices { d1, s1, t1, t2 } = two_devices(&net, "@erin", 21).await;
    let cursor = Cursor {
        mailbox: api::mailbox_id(&n("@erin")).to_hex(),
        after: 0,
        ack: false,
    };
    s1.mailbox_receive(t2.clone(), vec![cursor.clone()], 0)
        .await
        .expect("device 2 reads");
    let twice = s1
        .mailbox_receive(t1.clone(), vec![cursor.clone(), cursor.clone()], 0)
        .await
        .expect_err("a mailbox named twice");
    assert!(twice.to_string().contains("twice"), "{twice}");
    let junk = seal(
        &event(&d1, "@erin", "@nobody", "x"),
        &[Recipient {
            device: d1.device().sign,
            kx: d1.device().kx,
        }],
    )
    .expect("seal");
    let nobody = stranger_deposit(&net, &s1, "@nobody", hex::encode(encode(&junk)))
        .await
        .expect_err("no mailbox");
    assert!(nobody.to_string().contains("no mailbox"), "{nobody}");

    // Device 2 is removed from the record: its next calls fail (within the
    // server's record cache, 10 s), device 1 goes on.
    publish_devices(&net, "@erin", "~s1", &[&d1], 120).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s1
            .mailbox_receive(t2.clone(), vec![cursor.clone()], 0)
            .await
        {
            Err(e) => {
                assert!(e.to_string().contains("no longer"), "{e}");
                break;
            }
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "device 2 still served after 30 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let again = s1
        .mailbox_ack(t2, cursor.mailbox.clone(), 0)
        .await
        .expect_err("the session is gone");
    assert!(again.to_string().contains("token"), "{again}");
    s1.mailbox_receive(t1, vec![cursor], 0)
        .await
        .expect("device 1 still reads");
}

/// Attack 10: a move switched the client to the new server before the new
/// record was confirmed. Now the current server stays current (and is read)
/// until the record is confirmed; the client then follows its record.
#[tokio::test]
async fn a_move_switches_only_once_the_record_is_confirmed() {
    let mut net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let mut config = net.client_config().expect("config");
    config.confirm_timeout = Duration::from_secs(3);
    let mut alice = ChatClient::init(&root.join("alice"), config).expect("init");
    alice
        .register(&n("@alice"), &n("~s1"))
        .await
        .expect("register");
    let bob = user(&net, &root.join("bob"), "@bob", "~s1").await;

    net.stop_auto_mine();
    let e = alice
        .move_to(&n("~s2"))
        .await
        .expect_err("no block, no confirmation");
    assert!(e.to_string().contains("@alice"), "{e}");
    assert_eq!(
        alice.servers().expect("servers").current,
        Some(n("~s1")),
        "switched before the record was confirmed"
    );
    // Senders still use ~s1: nothing is lost.
    bob.send(&n("@alice"), "during the move")
        .await
        .expect("send");
    let (got, _, _) = receive(&mut alice, 1).await;
    assert_eq!(got[0].text, "during the move");

    // Blocks again: the record confirms and the client follows it.
    net.auto_mine(0, Duration::from_millis(200));
    let deadline = Instant::now() + WAIT;
    while alice.servers().expect("servers").current != Some(n("~s2")) {
        assert!(
            Instant::now() < deadline,
            "never followed the confirmed record"
        );
        alice.poll(Duration::from_millis(300)).await.expect("poll");
    }
    let previous = alice.servers().expect("servers").previous;
    assert_eq!(previous.map(|(s, _)| s), Some(n("~s1")), "~s1 still read");
}

/// Attack 10, the server side: the old server kept taking deposits (with
/// receipts) for a user who had moved away. After its grace period it now
/// answers "moved", and a sender looks the record up again and delivers to
/// the new server.
#[tokio::test]
async fn the_old_server_answers_moved_after_the_grace_period() {
    let mut net = chat_net(1, &["~s2"]).await;
    net.add_server("~m1", &["--moved-grace", "1", "--postage-bits", "12"])
        .await
        .expect("server with a short grace");
    let root = net.root().to_path_buf();
    let mut alice = user(&net, &root.join("alice"), "@alice", "~m1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s2").await;
    bob.send(&n("@alice"), "before").await.expect("send");
    let (got, _, _) = receive(&mut alice, 1).await;
    assert_eq!(got[0].text, "before");
    alice.move_to(&n("~s2")).await.expect("move");

    let m1 = net.server(1).rpc().clone();
    let to_alice = devices_of(&mut bob, "@alice").await;
    let env = hex::encode(encode(
        &seal(
            &event(&DeviceKeys::from_seed([5; 32]), "@x", "@alice", "x"),
            &to_alice,
        )
        .expect("seal"),
    ));
    let deadline = Instant::now() + WAIT;
    loop {
        match stranger_deposit(&net, &m1, "@alice", env.clone()).await {
            Err(e) if e.to_string().contains("moved") => {
                assert!(e.to_string().contains("~s2"), "{e}");
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "~m1 still takes deposits for @alice: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    // A sender whose cached record still says ~m1 is refused there, looks
    // the record up again and delivers to ~s2.
    bob.send(&n("@alice"), "after the move")
        .await
        .expect("send");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = alice.poll(Duration::from_millis(300)).await.expect("poll");
        if r.messages.iter().any(|m| m.text == "after the move") {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered after the move");
        let _ = bob.flush().await;
    }
}

#[tokio::test]
async fn cli_whois_and_clear_errors() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let _alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let dir = root.join("cli");
    let run = |args: &[&str]| chat_cli(&net, &dir, args);
    let out = run(&["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["whois", "@alice"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("~s1") && text.contains("height"), "{text}");
    let out = run(&["whois", "@nobody"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("@nobody") && err.contains("not registered"),
        "{err}"
    );
    let out = run(&["send", "@alice", "hi"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("register"),
        "unregistered sender told to register"
    );
    let out = run(&["register", "@cli", "--server", "~nowhere"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("~nowhere"));
}

/// Bob's devices, as a sender wraps to them.
async fn devices_of(c: &mut ChatClient, name: &str) -> Vec<Recipient> {
    c.whois(&n(name))
        .await
        .expect("record")
        .record()
        .devices
        .iter()
        .map(|d| Recipient {
            device: d.sign,
            kx: d.kx,
        })
        .collect()
}

/// Attack 1: an envelope that opens for Bob but names a sender with no
/// record used to stop every later poll ("@ghost is not registered"). Now
/// it is held aside, then rejected, and the inbox keeps flowing.
#[tokio::test]
async fn an_envelope_from_an_unregistered_sender_does_not_block_the_inbox() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let mut alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut config = net.client_config().expect("config");
    config.hold_unverified = Duration::from_secs(2);
    let mut bob = ChatClient::init(&root.join("bob"), config).expect("init");
    bob.register(&n("@bob"), &n("~s1")).await.expect("register");
    let to_bob = devices_of(&mut alice, "@bob").await;
    let ghost = DeviceKeys::from_seed([9; 32]);
    let junk = seal(&event(&ghost, "@ghost", "@bob", "boo"), &to_bob).expect("seal");
    stranger_deposit(
        &net,
        &net.server(0).rpc().clone(),
        "@bob",
        hex::encode(encode(&junk)),
    )
    .await
    .expect("a stranger can deposit");
    alice
        .send(&n("@bob"), "after the junk")
        .await
        .expect("send");

    let deadline = Instant::now() + WAIT;
    let (mut got, mut held, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
    while got.is_empty() || rejected.is_empty() {
        assert!(
            Instant::now() < deadline,
            "got {got:?}, held {held:?}, rejected {rejected:?}"
        );
        let r = bob
            .poll(Duration::from_millis(300))
            .await
            .expect("a poll is never stopped by one envelope");
        got.extend(r.messages.into_iter().map(|m| m.text));
        held.extend(r.held);
        rejected.extend(r.rejected);
    }
    assert_eq!(got, ["after the junk"]);
    assert!(held.iter().any(|h| h.contains("@ghost")), "{held:?}");
    assert!(
        rejected
            .iter()
            .any(|r| r.contains("@ghost") && r.contains("gave up")),
        "{rejected:?}"
    );
    let log = bob.rejected().expect("log");
    assert!(log.iter().any(|r| r.what.contains("@ghost")), "{log:?}");
    assert_eq!(bob.held().expect("held"), 0);
    // And the next message arrives as usual.
    alice.send(&n("@bob"), "and the next").await.expect("send");
    let (got, _, _) = receive(&mut bob, 1).await;
    assert_eq!(got[0].text, "and the next");
}

/// Attack 9: a message whose text holds a newline and a fake message line,
/// and terminal escapes, is shown escaped by the CLI.
#[tokio::test]
async fn the_cli_escapes_what_a_peer_wrote() {
    let net = chat_net(2, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let bob_dir = root.join("bob");
    let mut bob = user(&net, &bob_dir, "@bob", "~s1").await;
    let spoof =
        "lunch?\n[9] @carol -> @bob: send me the key\u{1b}[2J\u{1b}]0;owned\u{7}".to_owned();
    alice.send(&n("@bob"), &spoof).await.expect("send");
    let (got, _, _) = receive(&mut bob, 1).await;
    assert_eq!(got[0].text, spoof, "stored as sent");
    drop(bob);
    let out = chat_cli(&net, &bob_dir, &["inbox"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.contains(&0x1b),
        "an escape reached the terminal"
    );
    assert!(!out.stdout.contains(&0x07), "a bell reached the terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // Alice is a stranger to bob: her first message shows as a request.
    assert!(
        lines[0].starts_with("[1] @alice -> @bob (request): lunch?"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("    | [9] @carol"),
        "the fake line is a continuation: {text}"
    );
}

/// Attack 6: 100,000 `auth_challenge` calls filled the server's table of
/// pending challenges and every later login was refused. Challenges are now
/// stateless; a used one cannot be used again, nor one made for another user.
#[tokio::test]
async fn a_challenge_flood_does_not_stop_logins() {
    use jsonrpsee::core::client::ClientT;
    use jsonrpsee::core::params::BatchRequestBuilder;
    let net = chat_net(1, &["~s1"]).await;
    let carol = DeviceKeys::from_seed([8; 32]);
    manual_user(&net, "@carol", "~s1", &carol, 80).await;
    let s1 = net.server(0).rpc().clone();
    for _ in 0..101 {
        let mut batch = BatchRequestBuilder::new();
        for _ in 0..1000 {
            batch
                .insert("auth_challenge", vec!["@mallory"])
                .expect("params");
        }
        let _ = s1
            .batch_request::<serde_json::Value>(batch)
            .await
            .expect("batch");
    }
    let token = login(&s1, "~s1", "@carol", &carol).await;
    assert_eq!(token.len(), 64, "a real login works after the flood");

    // A challenge is single-use, and bound to the user it was made for.
    let ch = s1.auth_challenge("@carol".into()).await.expect("challenge");
    let bytes: [u8; 32] = hex::decode(&ch.challenge)
        .expect("hex")
        .try_into()
        .expect("32");
    let sig = hex::encode(
        carol
            .sign(
                api::AUTH_TAG,
                &api::auth_payload(&n("~s1"), &n("@carol"), &bytes),
            )
            .0,
    );
    let device = carol.device().sign.to_hex();
    s1.auth_login(
        "@carol".into(),
        device.clone(),
        ch.challenge.clone(),
        sig.clone(),
    )
    .await
    .expect("first use");
    let again = s1
        .auth_login("@carol".into(), device.clone(), ch.challenge.clone(), sig)
        .await
        .expect_err("a replayed login");
    assert!(again.to_string().contains("used"), "{again}");
    let other = s1
        .auth_challenge("@mallory".into())
        .await
        .expect("challenge");
    let bytes: [u8; 32] = hex::decode(&other.challenge)
        .expect("hex")
        .try_into()
        .expect("32");
    let sig = hex::encode(
        carol
            .sign(
                api::AUTH_TAG,
                &api::auth_payload(&n("~s1"), &n("@carol"), &bytes),
            )
            .0,
    );
    let e = s1
        .auth_login("@carol".into(), device, other.challenge, sig)
        .await
        .expect_err("a challenge made for another user");
    assert!(e.to_string().contains("challenge"), "{e}");
}

/// Paths under `dir` (itself included) that someone other than the owner
/// could read, write or enter, with their modes.
fn shared_paths(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue; // removed meanwhile (a RocksDB temporary file)
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            out.push(format!("{} {mode:o}", p.display()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("read dir").flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Attack 8: the client's and the server's data directories (keys, history,
/// databases) were created 0755 with 0644 files. Now nothing in them is
/// readable by other users.
#[tokio::test]
async fn data_directories_are_private() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let dir = root.join("private");
    let out = chat_cli(&net, &dir, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(shared_paths(&dir), Vec::<String>::new(), "client");
    assert_eq!(
        shared_paths(&net.server(0).datadir),
        Vec::<String>::new(),
        "server"
    );
}

/// Attack 8, second half: the root key, which owns the name, lived in the
/// device's store. It can now live apart: `init --root-key FILE` writes it
/// there, the data directory never holds it, day-to-day commands work
/// without it, and `move` without it says what to pass.
// Multi-threaded: the CLI runs as a blocking child process while the
// network's auto-miner (a task on this runtime) must keep mining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_key_can_live_apart_from_the_device() {
    let net = chat_net(1, &["~s1", "~s2"]).await;
    let root = net.root().to_path_buf();
    let dir = root.join("device");
    let usb = root.join("usb").join("dave.root");
    let run = |args: &[&str]| {
        let out = chat_cli(&net, &dir, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let usb_arg = usb.display().to_string();
    let (ok, _, err) = run(&["--root-key", &usb_arg, "init"]);
    assert!(ok, "{err}");
    let secret = std::fs::read_to_string(&usb).expect("the root key is where asked");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&usb).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let seed = hex::decode(secret.trim()).expect("hex");
    assert!(
        !dir_contains(&dir, &seed),
        "the root seed is in the data directory"
    );
    assert!(
        !dir_contains(&dir, secret.trim().as_bytes()),
        "the root key's hex is in the data directory"
    );

    // Register needs it, and finds it where it is said to be.
    let (ok, _, err) = run(&["register", "@dave", "--server", "~s1"]);
    assert!(!ok, "register without the root key");
    assert!(err.contains("--root-key"), "{err}");
    let (ok, _, err) = run(&[
        "--root-key",
        &usb_arg,
        "register",
        "@dave",
        "--server",
        "~s1",
    ]);
    assert!(ok, "{err}");
    // Day to day, no root key: whois, inbox, send to oneself.
    let (ok, out, err) = run(&["whois", "@dave"]);
    assert!(ok && out.contains("~s1"), "{out}{err}");
    let (ok, _, err) = run(&["inbox"]);
    assert!(ok, "{err}");
    // Moving needs it again.
    let (ok, _, err) = run(&["move", "--server", "~s2"]);
    assert!(!ok, "move without the root key");
    assert!(
        err.contains("root key") && err.contains("--root-key"),
        "{err}"
    );
    assert!(!dir_contains(&dir, &seed), "nor after registering");
}

/// The crates a manifest depends on (first word of each dependency line).
fn dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|w| w.starts_with("xirtam-") || *w == "rocksdb" || *w == "libp2p")
        .collect()
}

#[test]
fn chat_crates_do_not_depend_on_the_node() {
    // Lookups reach the chat crate only as light-client `Verified` values
    // (whose constructor is private to the light client).
    let chat = dependencies(include_str!("../../../chat/Cargo.toml"));
    assert!(
        !chat.iter().any(|d| d.starts_with("xirtam-node")),
        "chat must not depend on the node: {chat:?}"
    );
    // The light client speaks the node's RPC contract, not the node.
    let lc = dependencies(include_str!("../../../lightclient/Cargo.toml"));
    assert!(
        !lc.contains(&"xirtam-node"),
        "the light client must not depend on the node: {lc:?}"
    );
    // ...and the contract crate carries neither the node, nor its storage,
    // nor its networking.
    let api = dependencies(include_str!("../../../node/api/Cargo.toml"));
    assert_eq!(api, ["xirtam-proofs"], "node-api depends on {api:?}");
    // The testnet library drives nodes through that contract too; only its
    // rogue-peer tests link the node (for its peer-to-peer protocol).
    let testnet = include_str!("../../Cargo.toml");
    let (lib, _dev) = testnet
        .split_once("[dev-dependencies]")
        .expect("testnet has dev-dependencies");
    assert!(
        !dependencies(lib).contains(&"xirtam-node"),
        "the testnet library must not link the node"
    );
    let _ = VerifiedUser::from_lookup; // the only way to a user record
    let _: Option<ClientConfig> = None;
}

/// The root key in a client's data directory (`init` puts it there).
fn root_key_of(dir: &Path) -> SecretKey {
    let hex_seed = std::fs::read_to_string(dir.join("root.key")).expect("root key file");
    let seed: [u8; 32] = hex::decode(hex_seed.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    SecretKey::from_seed(seed)
}

/// Poll `c` until a message with `text` arrives; returns it.
async fn receive_text(c: &mut ChatClient, text: &str) -> Message {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.poll(Duration::from_millis(300)).await.expect("poll");
        assert!(r.rejected.is_empty(), "rejected: {:?}", r.rejected);
        if let Some(m) = r.messages.into_iter().find(|m| m.text == text) {
            return m;
        }
        assert!(Instant::now() < deadline, "{text:?} never arrived");
    }
}

/// Attack 3: one device's acknowledgement deleted a message for every
/// device of the user, and the copy a device sends to its siblings landed
/// in the same mailbox, where the sender (which cannot decrypt it)
/// acknowledged it away. Now each device has its own cursor and an
/// envelope goes only once every listed device has acknowledged it.
#[tokio::test]
async fn two_devices_both_receive_and_self_copies_reach_siblings() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let mut alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut bob1 = user(&net, &root.join("bob1"), "@bob", "~s1").await;
    // A second device, listed by the root key (kept with the first).
    let mut bob2 =
        ChatClient::init(&root.join("bob2"), net.client_config().expect("config")).expect("init");
    publish_record(
        &net,
        "@bob",
        "~s1",
        &[bob1.device(), bob2.device()],
        &root_key_of(&root.join("bob1")),
    )
    .await;
    bob2.join(&n("@bob"))
        .await
        .expect("the second device joins");
    // The first device learns of its sibling when its cached own record
    // (30 s) is looked up again; `whois` does that at once.
    bob1.whois(&n("@bob")).await.expect("own record");

    alice.send(&n("@bob"), "to both").await.expect("send");
    // The first device reads and acknowledges before the second looks.
    receive_text(&mut bob1, "to both").await;
    let m = receive_text(&mut bob2, "to both").await;
    assert_eq!(m.from, n("@alice"));

    // A message from one device reaches the other as a copy; the sender
    // skips the copy it cannot read (no rejection, nothing lost).
    bob1.send(&n("@alice"), "sent from bob1")
        .await
        .expect("send");
    let copy = receive_text(&mut bob2, "sent from bob1").await;
    assert_eq!(
        (copy.from.clone(), copy.to.clone()),
        (n("@bob"), n("@alice"))
    );
    receive_text(&mut alice, "sent from bob1").await;
    let r = bob1.poll(Duration::from_millis(300)).await.expect("poll");
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    // And the other way round.
    bob2.send(&n("@alice"), "sent from bob2")
        .await
        .expect("send");
    receive_text(&mut bob1, "sent from bob2").await;
}

/// Attack 2: 9,998 junk deposits filled a mailbox, and a contact's next
/// message was refused with "mailbox full". Now strangers deposit only
/// into a bounded requests lane, with postage; contacts deposit with the
/// pass the user gave them into a lane strangers cannot reach.
#[tokio::test]
async fn a_stranger_flood_does_not_stop_a_contacts_message() {
    let mut net = chat_net(1, &[]).await;
    net.add_server("~s1", &["--postage-bits", "12", "--max-requests", "40"])
        .await
        .expect("server starts");
    let root = net.root().to_path_buf();
    let mut alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s1").await;

    // First contact: alice writes to bob, a stranger to him. It goes
    // through his requests lane (postage) and shows as a request; her
    // pass rides along, so his reply needs no postage.
    let (_, f) = alice
        .send(&n("@bob"), "hello, stranger")
        .await
        .expect("send");
    assert_eq!(f.delivered.len(), 1, "{f:?}");
    assert!(f.queued.is_empty(), "the pass went too: {f:?}");
    let m = receive_text(&mut bob, "hello, stranger").await;
    assert!(m.request, "first contact shows as a request");
    // Bob accepts by replying; alice gets his pass.
    bob.send(&n("@alice"), "hello, alice").await.expect("reply");
    let deadline = Instant::now() + WAIT;
    loop {
        let r = alice.poll(Duration::from_millis(300)).await.expect("poll");
        if r.passes.contains(&n("@bob")) {
            break;
        }
        assert!(Instant::now() < deadline, "bob's pass never arrived");
    }

    // A stranger fills the requests lane.
    let s1 = net.server(0).rpc().clone();
    let to_bob = devices_of(&mut alice, "@bob").await;
    let ghost = DeviceKeys::from_seed([33; 32]);
    let mut full = None;
    for i in 0..60 {
        let env = seal(
            &event(&ghost, "@ghost", "@bob", &format!("junk {i}")),
            &to_bob,
        )
        .expect("seal");
        if let Err(e) = stranger_deposit(&net, &s1, "@bob", hex::encode(encode(&env))).await {
            full = Some((i, e.to_string()));
            break;
        }
    }
    let (at, e) = full.expect("the requests lane is bounded");
    assert!(e.contains("full") && at == 40, "after {at}: {e}");
    // Going on, each try still spends postage, but only against bob's own
    // record of used postage (4 × the lane): then bob alone is rate
    // limited, and a stranger's first contact to someone else gets in. (One
    // table for the whole server, capped at 100,000, once let one flood
    // refuse first contact to every user.)
    let mut limited = None;
    for i in 41..200 {
        let env = seal(
            &event(&ghost, "@ghost", "@bob", &format!("more junk {i}")),
            &to_bob,
        )
        .expect("seal");
        match stranger_deposit(&net, &s1, "@bob", hex::encode(encode(&env))).await {
            Err(e) if e.to_string().contains("first-contact") => {
                limited = Some(i);
                break;
            }
            Err(e) => assert!(e.to_string().contains("full"), "{e}"),
            Ok(r) => panic!("a full lane took a deposit: {r:?}"),
        }
    }
    // 160 = 4 × 40, counting alice's two first-contact deposits.
    assert_eq!(
        limited,
        Some(158),
        "bob's postage record is bounded per lane"
    );
    let to_alice = devices_of(&mut bob, "@alice").await;
    let env = seal(&event(&ghost, "@ghost", "@alice", "hi alice"), &to_alice).expect("seal");
    stranger_deposit(&net, &s1, "@alice", hex::encode(encode(&env)))
        .await
        .expect("first contact to another user still gets in");
    // No postage, a made-up pass, reused or weak postage: all refused.
    let env = hex::encode(encode(
        &seal(&event(&ghost, "@ghost", "@bob", "free"), &to_bob).expect("seal"),
    ));
    let no_postage = s1
        .mailbox_deposit("@bob".into(), env.clone(), None, None)
        .await
        .expect_err("postage is required");
    assert!(no_postage.to_string().contains("postage"), "{no_postage}");
    let fake_pass = s1
        .mailbox_deposit(
            "@bob".into(),
            env.clone(),
            Some(hex::encode([7u8; 32])),
            None,
        )
        .await
        .expect_err("a made-up pass");
    assert!(fake_pass.to_string().contains("pass"), "{fake_pass}");
    let tip = net.tip(0).await.expect("tip");
    let block = Hash::from_hex(&tip.hash).expect("hash");
    let bytes = hex::decode(&env).expect("hex");
    let weak_nonce = (0..)
        .find(|k| {
            let d = api::postage_digest(
                &api::requests_id(&n("@bob")),
                &api::envelope_hash(&bytes),
                &block,
                *k,
            );
            api::leading_zero_bits(&d) < 12
        })
        .expect("a weak nonce");
    let weak = s1
        .mailbox_deposit(
            "@bob".into(),
            env,
            None,
            Some(api::Postage {
                height: tip.height,
                block: tip.hash,
                nonce: weak_nonce,
            }),
        )
        .await
        .expect_err("weak postage");
    assert!(weak.to_string().contains("postage"), "{weak}");

    // The contact's message still goes through, and is not a request.
    let (_, f) = alice.send(&n("@bob"), "still flowing").await.expect("send");
    assert_eq!(f.delivered.len(), 1, "{f:?}");
    let m = receive_text(&mut bob, "still flowing").await;
    assert!(!m.request);
}

/// A TCP relay on loopback in front of a concierge: it forwards each
/// connection to `target` and keeps a copy of what clients send (a passive
/// eavesdropper). Once `intercept` is set, it instead terminates TLS with a
/// key of its own (a man in the middle) and keeps what it can decrypt.
#[derive(Clone)]
struct Relay {
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    intercept: std::sync::Arc<std::sync::atomic::AtomicBool>,
    decrypted: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    handshakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let relay = Relay {
            addr: listener.local_addr().expect("addr"),
            target: Default::default(),
            seen: Default::default(),
            intercept: Default::default(),
            decrypted: Default::default(),
            handshakes: Default::default(),
        };
        let mitm = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
            xirtam_chat::tls::server_config(&SecretKey::from_seed([66; 32])).expect("tls"),
        ));
        let r = relay.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (r, mitm) = (r.clone(), mitm.clone());
                tokio::spawn(async move { r.handle(sock, mitm).await });
            }
        });
        relay
    }

    async fn handle(&self, sock: tokio::net::TcpStream, mitm: tokio_rustls::TlsAcceptor) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.intercept.load(Ordering::SeqCst) {
            self.handshakes.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut tls) = mitm.accept(sock).await {
                // Keep each piece as it comes (the client waits for an
                // answer that never comes).
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    self.decrypted
                        .lock()
                        .expect("lock")
                        .extend_from_slice(&buf[..n]);
                }
            }
            return;
        }
        let Some(target) = *self.target.lock().expect("lock") else {
            return;
        };
        let Ok(out) = tokio::net::TcpStream::connect(target).await else {
            return;
        };
        let (mut ri, mut wi) = sock.into_split();
        let (mut ro, mut wo) = out.into_split();
        let seen = self.seen.clone();
        let up = async move {
            let mut buf = [0u8; 16384];
            while let Ok(n) = ri.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                if wo.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = wo.shutdown().await;
        };
        let down = tokio::io::copy(&mut ro, &mut wi);
        let _ = tokio::join!(up, down);
    }
}

/// Attack 4: tokens were bearer secrets over plain HTTP, and the key in the
/// `~server` record never authenticated the connection. Now the connection
/// is TLS whose server key must be the record's: an eavesdropper sees only
/// ciphertext, and a man in the middle with another key is refused before
/// anything is sent. A record with a plain http:// URL to another host
/// gets no token at all.
#[tokio::test]
async fn a_man_in_the_middle_with_another_key_is_refused() {
    let mut net = chat_net(1, &[]).await;
    let relay = Relay::start().await;
    let relay_url = format!("https://{}", relay.addr);
    net.add_server(
        "~s1",
        &["--postage-bits", "12", "--public-url", relay_url.as_str()],
    )
    .await
    .expect("server starts");
    *relay.target.lock().expect("lock") = Some(net.server(0).addr);
    let root = net.root().to_path_buf();

    // Through the relay: logins, deposits, receives, all over TLS with the
    // record's key.
    let alice = user(&net, &root.join("alice"), "@alice", "~s1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let secret = format!("over-tls-{}", hex::encode(rand_marker()));
    alice.send(&n("@bob"), &secret).await.expect("send");
    receive_text(&mut bob, &secret).await;
    let seen = relay.seen.lock().expect("lock").clone();
    assert!(seen.len() > 1000, "the relay carried the traffic");
    assert!(
        seen.windows(3).any(|w| w == [0x16, 0x03, 0x01]),
        "a TLS handshake"
    );
    for plain in [
        b"auth_login".as_slice(),
        b"mailbox_",
        b"\"token\"",
        b"jsonrpc",
        secret.as_bytes(),
    ] {
        assert!(
            !seen.windows(plain.len()).any(|w| w == plain),
            "{:?} readable on the wire",
            String::from_utf8_lossy(plain)
        );
    }

    // A man in the middle with another key: refused before anything of the
    // session is sent.
    relay
        .intercept
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let carol =
        ChatClient::init(&root.join("carol"), net.client_config().expect("config")).expect("init");
    let e = carol
        .register(&n("@carol"), &n("~s1"))
        .await
        .expect_err("the impostor's key is refused");
    assert!(e.to_string().contains("unreachable"), "{e}");
    assert!(
        relay.handshakes.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the client did try the impostor"
    );
    assert!(
        relay.decrypted.lock().expect("lock").is_empty(),
        "the impostor decrypted something"
    );

    // A record that names plain http:// to another host: no login there.
    net.add_server(
        "~plain",
        &[
            "--postage-bits",
            "12",
            "--plain-http",
            "--public-url",
            "http://192.0.2.1:8650",
        ],
    )
    .await
    .expect("server starts");
    let dave =
        ChatClient::init(&root.join("dave"), net.client_config().expect("config")).expect("init");
    let e = dave
        .register(&n("@dave"), &n("~plain"))
        .await
        .expect_err("no token over plain HTTP");
    assert!(e.to_string().contains("in the clear"), "{e}");
}

/// `xirtam-chat device link` in `dir`, running: the code it shows, and the
/// process (its output still to read).
async fn cli_link(
    net: &Testnet,
    dir: &Path,
    expires: &str,
) -> (String, tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::from(chat_cli_command(
        net,
        dir,
        &["device", "link", "@alice", "--expires", expires],
    ));
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("device link starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = String::new();
    let code = tokio::time::timeout(WAIT, async {
        while let Some(l) = lines.next_line().await.expect("read") {
            seen.push_str(&l);
            seen.push('\n');
            if let Some(code) = l.strip_prefix("link code: ") {
                return code.to_string();
            }
        }
        panic!("no code shown: {seen}");
    })
    .await
    .expect("the code is shown");
    // Keep reading its output (a closed pipe would fail its next line).
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (code, child, seen)
}

pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Issue 15: @alice links a second device with the CLI (a code, a
/// password-authenticated exchange through her server, the record
/// updated by the root key): it receives the history, then every message
/// reaches both her devices in order, what one sends shows on the other;
/// a third device linked then gets the whole history and sends and
/// receives; removed, it is told on its next call; a mistyped and an
/// expired code fail cleanly on both sides.
#[tokio::test]
async fn devices_link_through_the_cli_with_history_and_removal() {
    let net = chat_net(1, &["~s1"]).await;
    let root = net.root().to_path_buf();
    let alice_dir = root.join("alice");
    let alice = user(&net, &alice_dir, "@alice", "~s1").await;
    let mut bob = user(&net, &root.join("bob"), "@bob", "~s1").await;
    let (a, b) = (n("@alice"), n("@bob"));
    for i in 0..3 {
        bob.send(&a, &format!("b{i}")).await.expect("send");
        alice.send(&b, &format!("a{i}")).await.expect("send");
    }
    let mut alice = alice;
    receive(&mut alice, 3).await;
    // The CLI opens alice's store: the library lets go of it first.
    drop(alice);

    let new_dir = root.join("alice-new");
    let out = chat_cli(&net, &new_dir, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, child, _) = cli_link(&net, &new_dir, "120").await;
    let out = chat_cli_async(&net, &alice_dir, &["device", "approve", &code]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sent it 6 message(s)"),
        "{}",
        text(&out)
    );
    let linked = child.wait_with_output().await.expect("link ends");
    assert!(linked.status.success(), "{}", text(&linked));

    // The history is there on the new device.
    let out = chat_cli_async(&net, &new_dir, &["inbox"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    for t in ["a0", "a1", "a2", "b0", "b1", "b2"] {
        assert!(shown.contains(&format!(": {t}")), "{t} missing: {shown}");
    }
    let out = chat_cli_async(&net, &alice_dir, &["device", "list"]).await;
    assert_eq!(text(&out).lines().count(), 2, "{}", text(&out));
    assert!(text(&out).contains("(this device)"));

    // Every message from bob reaches both, in order; one device's message
    // shows on the other.
    let mut alice =
        ChatClient::open(&alice_dir, net.client_config().expect("config")).expect("open");
    let mut alice2 =
        ChatClient::open(&new_dir, net.client_config().expect("config")).expect("open");
    // Bob's cached record of alice (30 s) predates the link: a sender
    // learns of a new device at its next lookup, which `whois` forces.
    assert_eq!(
        bob.whois(&a).await.expect("lookup").record().devices.len(),
        2
    );
    for i in 0..5 {
        bob.send(&a, &format!("in order {i}")).await.expect("send");
    }
    for d in [&mut alice, &mut alice2] {
        let (got, _, rejected) = receive(d, 5).await;
        assert!(rejected.is_empty(), "{rejected:?}");
        let texts: Vec<_> = got.iter().map(|m| m.text.clone()).collect();
        assert_eq!(
            texts,
            (0..5).map(|i| format!("in order {i}")).collect::<Vec<_>>()
        );
    }
    alice2.send(&b, "from the new device").await.expect("send");
    let m = receive_text(&mut bob, "from the new device").await;
    assert!(!m.request, "the new device has alice's contacts");
    let copy = receive_text(&mut alice, "from the new device").await;
    assert_eq!((copy.from, copy.to), (a.clone(), b.clone()));

    // A third device, linked while two are in use: it gets the history
    // (now 12 messages), then sends and receives.
    drop(alice);
    drop(alice2);
    let third_dir = root.join("alice-third");
    let out = chat_cli(&net, &third_dir, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, child, _) = cli_link(&net, &third_dir, "120").await;
    let out = chat_cli_async(&net, &alice_dir, &["device", "approve", &code]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sent it 12 message(s)"),
        "{}",
        text(&out)
    );
    let linked = child.wait_with_output().await.expect("link ends");
    assert!(linked.status.success(), "{}", text(&linked));
    let out = chat_cli_async(&net, &third_dir, &["inbox"]).await;
    let shown = text(&out);
    for t in ["a0", "b2", "in order 4", "from the new device"] {
        assert!(shown.contains(&format!(": {t}")), "{t} missing: {shown}");
    }
    assert_eq!(
        bob.whois(&a).await.expect("lookup").record().devices.len(),
        3
    );
    let out = chat_cli_async(&net, &third_dir, &["send", "@bob", "from the third device"]).await;
    assert!(out.status.success(), "{}", text(&out));
    receive_text(&mut bob, "from the third device").await;
    bob.send(&a, "to all three").await.expect("send");
    for d in [&alice_dir, &new_dir, &third_dir] {
        let out = chat_cli_async(&net, d, &["inbox"]).await;
        assert!(text(&out).contains(": to all three"), "{}", text(&out));
    }

    // Removed: its next call says so, and it is wrapped to no more.
    let key = {
        let third =
            ChatClient::open(&third_dir, net.client_config().expect("config")).expect("open");
        third.device().sign.to_hex()
    };
    let out = chat_cli_async(&net, &alice_dir, &["device", "remove", &key]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = chat_cli_async(&net, &third_dir, &["inbox"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("was removed"), "{}", text(&out));
    let wrapped = bob.whois(&a).await.expect("lookup");
    assert_eq!(wrapped.record().devices.len(), 2);

    // A mistyped code: both sides fail, nothing is added.
    let late_dir = root.join("alice-late");
    let out = chat_cli(&net, &late_dir, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, child, _) = cli_link(&net, &late_dir, "120").await;
    let last = if code.ends_with('0') { "1" } else { "0" };
    let wrong = format!("{}{last}", &code[..code.len() - 1]);
    let out = chat_cli_async(&net, &alice_dir, &["device", "approve", &wrong]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("mistyped"), "{}", text(&out));
    let failed = child.wait_with_output().await.expect("link ends");
    assert!(!failed.status.success());
    assert!(text(&failed).contains("mistyped"), "{}", text(&failed));
    // An expired code.
    let (code, child, _) = cli_link(&net, &late_dir, "1").await;
    let failed = child.wait_with_output().await.expect("link ends");
    assert!(text(&failed).contains("expired"), "{}", text(&failed));
    let out = chat_cli_async(&net, &alice_dir, &["device", "approve", &code]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("expired"), "{}", text(&out));
    let out = chat_cli_async(&net, &alice_dir, &["device", "list"]).await;
    assert_eq!(text(&out).lines().count(), 2, "{}", text(&out));
}
