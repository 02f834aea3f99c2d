//! The light client against real nodes: honest ones, a lighter fork, and
//! proxies that tamper with or lie about what an honest node says.

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::params::ArrayParams;
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::server::{RpcModule, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::Value;
use xirtam_lightclient::client::STRIKES_TO_FAULT;
use xirtam_lightclient::{Config as LcConfig, Error, HttpSource, LightClient, SourceStatus};
use xirtam_node_api::NodeApiClient;
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::{Hash, Name};
use xirtam_testnet::{Config, Testnet, Topology, wait_for};

use crate::common::{claim, key, submit, wait_record, write};

/// What a [`Proxy`] does to the honest answers it relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    /// Flip a hex digit in every header's `prev` field but genesis's
    /// (`chain_headers`).
    Headers,
    /// Flip a hex digit in `dir_get`'s record bytes, or in its proof.
    Proofs,
    /// Claim far more work than the tip has (`chain_tip`).
    Work,
    /// Claim the most work there is, then answer every `chain_headers`
    /// with "not found".
    MaxWorkThenRefuse,
    /// Relay honestly, but like a node from before `chain_headers_compact`
    /// (the method is unknown).
    HexOnly,
}

/// Change one hex digit at `i` (counted from the end when negative).
fn flip(s: &str, i: isize) -> String {
    let mut b = s.as_bytes().to_vec();
    if b.is_empty() {
        return "00".into();
    }
    let i = if i < 0 {
        b.len().saturating_sub(i.unsigned_abs())
    } else {
        (i as usize).min(b.len() - 1)
    };
    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).expect("hex is ASCII")
}

fn tamper(mode: Tamper, method: &str, mut v: Value) -> Value {
    match (mode, method) {
        (Tamper::Headers, "chain_headers") => {
            if let Some(hs) = v.as_array_mut() {
                for h in hs {
                    let hex = h.as_str().unwrap_or("");
                    // Bytes 4..12 are the height (genesis is left alone so
                    // that the headers themselves fail), 12..44 `prev`.
                    if hex.get(8..24) != Some("0000000000000000") {
                        *h = Value::String(flip(hex, 30));
                    }
                }
            }
        }
        (Tamper::Headers, "chain_headers_compact") => {
            // No `prev` travels after the first header: change every
            // header's state root instead (and the first one's `prev`,
            // unless it is genesis), so the linkage the client rebuilds
            // contradicts the history roots.
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut bytes = b64.decode(v.as_str().unwrap_or("")).unwrap_or_default();
            if bytes.len() >= 160 {
                if bytes[4..12] != [0; 8] {
                    bytes[20] ^= 1;
                }
                for tail in bytes[160..].chunks_exact_mut(116) {
                    tail[44] ^= 1;
                }
            }
            v = Value::String(b64.encode(bytes));
        }
        (Tamper::Proofs, "dir_get") => {
            if let Some(bytes) = v.pointer("/record/bytes").and_then(Value::as_str) {
                v["record"]["bytes"] = Value::String(flip(bytes, -2));
            } else if let Some(p) = v["proof"].as_str() {
                v["proof"] = Value::String(flip(p, -2));
            }
        }
        (Tamper::Work, "chain_tip") => {
            v["work"] = Value::String("7f".repeat(32));
        }
        (Tamper::MaxWorkThenRefuse, "chain_tip") => {
            v["work"] = Value::String("ff".repeat(32));
        }
        _ => {}
    }
    v
}

/// A JSON-RPC server on loopback relaying the light client's methods to an
/// honest node and tampering with the answers.
struct Proxy {
    url: String,
    _handle: ServerHandle,
}

impl Proxy {
    async fn start(upstream: &str, mode: Tamper) -> Proxy {
        let up = jsonrpsee::http_client::HttpClientBuilder::default()
            .build(upstream)
            .expect("upstream client");
        let mut module = RpcModule::new((Arc::new(up), mode));
        for method in [
            "chain_tip",
            "chain_headers",
            "chain_headers_compact",
            "dir_get",
            "dir_params",
        ] {
            if mode == Tamper::HexOnly && method == "chain_headers_compact" {
                continue;
            }
            module
                .register_async_method(method, move |params, ctx, _| async move {
                    let (up, mode): &(Arc<HttpClient>, Tamper) = &ctx;
                    if *mode == Tamper::MaxWorkThenRefuse && method.starts_with("chain_headers") {
                        return Err(ErrorObjectOwned::owned(
                            xirtam_node_api::code::NOT_FOUND,
                            "not found",
                            None::<()>,
                        ));
                    }
                    let args: Vec<Value> = params.parse().unwrap_or_default();
                    let mut p = ArrayParams::new();
                    for a in args {
                        p.insert(a).expect("serialisable");
                    }
                    let v: Value = up
                        .request(method, p)
                        .await
                        .map_err(|e| ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>))?;
                    Ok::<Value, ErrorObjectOwned>(tamper(*mode, method, v))
                })
                .expect("register");
        }
        let server = Server::builder()
            .build("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = server.local_addr().expect("bound");
        Proxy {
            url: format!("http://{addr}"),
            _handle: server.start(module),
        }
    }
}

fn source(url: &str) -> HttpSource {
    HttpSource::new(url, Duration::from_secs(10)).expect("url")
}

fn client(urls: &[&str], depth: u64, datadir: Option<&std::path::Path>) -> LightClient<HttpSource> {
    let mut cfg = LcConfig::new(&REGTEST);
    cfg.depth = depth;
    cfg.datadir = datadir.map(ToOwned::to_owned);
    LightClient::new(cfg, urls.iter().map(|u| source(u)).collect()).expect("client")
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn value_of(v: &xirtam_lightclient::Verified<xirtam_lightclient::Lookup>) -> Option<Vec<u8>> {
    v.record().map(|r| r.value.as_bytes().to_vec())
}

/// A regtest network of one node.
async fn one_node() -> Testnet {
    Testnet::start(Config {
        nodes: 1,
        log: "warn".into(),
        ..Config::default()
    })
    .await
    .expect("testnet starts")
}

/// Wait until node `i` is at `height` or above.
async fn wait_height(net: &Testnet, i: usize, height: u64) {
    wait_for(
        &format!("node {i} at height {height}"),
        Duration::from_secs(30),
        || async move { (net.tip(i).await.ok()?.height >= height).then_some(()) },
    )
    .await
    .expect("blocks spread");
}

/// One network: nodes 0 and 1 share the main chain, node 2 mines a lighter
/// branch alone. Tampering and lying proxies sit in front of node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_client_gets_the_truth_or_an_error() {
    let net = Testnet::start(Config {
        nodes: 3,
        topology: Topology::Groups(vec![vec![0, 1], vec![2]]),
        log: "warn".into(),
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    net.wait_peers(0, 1).await.expect("0 and 1 connect");
    net.mine(0, 5).await.expect("mine");
    let alice = key(1);
    claim(
        &net,
        0,
        &REGTEST,
        "@alice",
        &alice,
        b"v1",
        REGTEST.genesis_hash,
    )
    .await;
    net.mine(0, 4).await.expect("mine");
    wait_record(&net, 1, "@alice", b"v1", Duration::from_secs(30)).await;
    // Node 2's lighter branch binds @alice to "forged" (an attacker's own
    // chain).
    claim(
        &net,
        2,
        &REGTEST,
        "@alice",
        &key(9),
        b"forged",
        REGTEST.genesis_hash,
    )
    .await;
    net.mine(2, 3).await.expect("lighter fork");
    wait_record(&net, 2, "@alice", b"forged", Duration::from_secs(30)).await;
    let main_tip = net.wait_same_tip(&[0, 1], 10).await.expect("same tip");

    let urls: Vec<String> = net.nodes().iter().map(|n| n.rpc_url.clone()).collect();
    let bad_headers = Proxy::start(&urls[1], Tamper::Headers).await;
    let bad_proofs = Proxy::start(&urls[1], Tamper::Proofs).await;
    let liar = Proxy::start(&urls[1], Tamper::Work).await;

    // Tamperer and lighter fork listed first: neither wins.
    let lc = client(&[&bad_headers.url, &urls[2], &urls[0]], 1, None);
    let r = lc.sync().await.expect("sync");
    assert_eq!(r.to_height, main_tip.height);
    assert_eq!(lc.tip().hash.to_hex(), main_tip.hash);
    let s = lc.sources();
    assert!(
        matches!(&s[0].status, SourceStatus::Faulty(w) if w.contains("invalid header")),
        "{:?}",
        s[0].status
    );
    assert_eq!(
        s[1].status,
        SourceStatus::Ok,
        "a lighter fork is not a fault"
    );
    let v = lc.resolve(&name("@alice")).await.expect("resolve");
    assert_eq!(value_of(&v).as_deref(), Some(&b"v1"[..]));
    assert_eq!(v.height(), main_tip.height - 1);
    assert_eq!(v.confirmations(), 2);
    let v = lc.resolve(&name("@nobody")).await.expect("resolve");
    assert_eq!(v.record(), None, "absence proven");

    // Forged proofs and records next to the honest node.
    let lc = client(&[&bad_proofs.url, &urls[1]], 1, None);
    for n in ["@alice", "@nobody"] {
        let v = lc.resolve(&name(n)).await.expect("resolve");
        assert_eq!(v.source(), urls[1]);
        assert_eq!(value_of(&v).is_some(), n == "@alice");
    }
    assert!(matches!(&lc.sources()[0].status, SourceStatus::Faulty(_)));

    // A source lying about its work is caught when its headers do not add up.
    let lc = client(&[&liar.url, &urls[0]], 1, None);
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().hash.to_hex(), main_tip.hash);
    assert!(
        matches!(&lc.sources()[0].status, SourceStatus::Faulty(w) if w.contains("add up")),
        "{:?}",
        lc.sources()[0].status
    );

    // The attacker's node behind a proxy that claims the most work there
    // is and refuses every header, listed first: sync after sync the
    // honest chain wins, "forged" is never returned, and the proxy's
    // strikes make it faulty.
    let stall = Proxy::start(&urls[2], Tamper::MaxWorkThenRefuse).await;
    let lc = client(&[&stall.url, &urls[0]], 1, None);
    for round in 0..STRIKES_TO_FAULT {
        let r = lc.sync().await.expect("sync");
        assert_eq!(r.to_height, main_tip.height, "round {round}");
        let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
        assert_eq!(value_of(&v).as_deref(), Some(&b"v1"[..]), "round {round}");
    }
    assert!(
        matches!(&lc.sources()[0].status, SourceStatus::Faulty(w) if w.contains("strikes")),
        "{:?}",
        lc.sources()[0].status
    );

    // Tamperers alone: clear errors, never an answer.
    let lc = client(&[&bad_headers.url], 1, None);
    let e = lc
        .resolve(&name("@alice"))
        .await
        .expect_err("only a tamperer");
    assert!(matches!(e, Error::AllSourcesFaulty(_)), "{e}");
    let lc = client(&[&bad_proofs.url], 1, None);
    let e = lc
        .resolve(&name("@alice"))
        .await
        .expect_err("only a forger");
    assert!(matches!(e, Error::AllSourcesFaulty(_)), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");

    // Depth: an update fewer than `depth` blocks deep is not returned yet.
    let lc = client(&[&urls[0], &urls[1]], 3, None);
    let before = lc.resolve(&name("@alice")).await.expect("resolve");
    assert_eq!(before.record().map(|r| r.nonce), Some(1));
    let recent = Hash::from_hex(&main_tip.hash).expect("hex");
    let update = write(&REGTEST, "@alice", &alice, b"v2", 2, None, recent);
    submit(&net, 0, &update).await;
    net.mine(0, 1).await.expect("mine");
    wait_height(&net, 1, main_tip.height + 1).await;
    lc.sync().await.expect("sync");
    let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert_eq!(
        value_of(&v).as_deref(),
        Some(&b"v1"[..]),
        "not yet {} deep",
        3
    );
    net.mine(0, 3).await.expect("mine");
    wait_height(&net, 1, main_tip.height + 4).await;
    lc.sync().await.expect("sync");
    let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert_eq!(value_of(&v).as_deref(), Some(&b"v2"[..]));
    assert_eq!(v.confirmations(), 4);
}

/// The next notification of a watch subscription, within 30 s.
async fn next_update(stream: &mut jsonrpsee::core::client::Subscription<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a notification within 30 s")
        .expect("stream open")
        .expect("a lookup")
}

/// A restart resumes from the header store: the second sync downloads only
/// what is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_downloading_again() {
    let net = one_node().await;
    net.mine(0, 3000).await.expect("mine");
    let url = net.node(0).rpc_url.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let lc = client(&[&url], 1, Some(dir.path()));
    lc.sync().await.expect("sync");
    let first = lc.bytes_received();
    // Compact batches: 116 bytes a header in base64 (~155 characters),
    // against 323 for a header in hex JSON.
    assert!(
        (3000 * 150..3000 * 170).contains(&first),
        "a cold sync downloads every header, compactly: {first} bytes"
    );
    drop(lc);

    net.mine(0, 2).await.expect("mine");
    let lc = client(&[&url], 1, Some(dir.path()));
    assert_eq!(lc.tip().height, 3000, "resumed from disk");
    let r = lc.sync().await.expect("sync");
    assert_eq!((r.from_height, r.to_height, r.headers), (3000, 3002, 2));
    let second = lc.bytes_received();
    assert!(second < 5_000, "the second sync downloaded {second} bytes");
    let tip = net.rpc(0).chain_tip().await.expect("tip");
    assert_eq!(lc.tip().hash.to_hex(), tip.hash);

    // A node without compact batches is still followed, in hex.
    let old = Proxy::start(&url, Tamper::HexOnly).await;
    let lc = client(&[&old.url], 1, None);
    lc.sync().await.expect("sync through a hex-only node");
    assert_eq!(lc.tip().hash.to_hex(), tip.hash);
    assert!(lc.bytes_received() > 3000 * 320, "hex headers");
}

/// `xirtam-lc` from the shell: resolve with `--json`, proven absence, and a
/// clear error when the only node is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_resolves_and_explains_failures() {
    let net = one_node().await;
    net.mine(0, 3).await.expect("mine");
    claim(
        &net,
        0,
        &REGTEST,
        "@carol",
        &key(3),
        b"hi",
        REGTEST.genesis_hash,
    )
    .await;
    net.mine(0, 2).await.expect("mine");
    let bin = xirtam_testnet::find_bin("xirtam-lc", "XIRTAM_LC_BIN").expect("xirtam-lc built");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = net.node(0).rpc_url.clone();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(["--network", "regtest", "--datadir"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run xirtam-lc");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["--node", &url, "--json", "resolve", "@carol"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["found"], true);
    assert_eq!(v["record"]["value_utf8"], "hi");
    assert_eq!(v["height"], 5);
    assert_eq!(v["confirmations"], 2);
    let (ok, out, err) = run(&["--node", &url, "resolve", "@dave"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("@dave is not registered (absence proven at height 5"),
        "{out}"
    );
    let (ok, out, err) = run(&["--node", &url, "--json", "tip"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["height"], 6);
    let (ok, _, err) = run(&["--node", "http://127.0.0.1:1", "resolve", "@carol"]);
    assert!(!ok);
    assert!(err.contains("no source is reachable"), "{err}");
}

/// `xirtam-lc serve` through its RPC: `lc_tip`, `lc_resolve`, and an
/// `lc_watch` that reports a record change once it is `depth` deep, within
/// one block: not before, and without another block after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_tip_resolve_and_watch() {
    use tokio::io::AsyncBufReadExt;

    let net = one_node().await;
    net.mine(0, 3).await.expect("mine");
    let alice = key(1);
    claim(
        &net,
        0,
        &REGTEST,
        "@alice",
        &alice,
        b"v1",
        REGTEST.genesis_hash,
    )
    .await;
    net.mine(0, 3).await.expect("mine");
    wait_record(&net, 0, "@alice", b"v1", Duration::from_secs(30)).await;
    let bin = xirtam_testnet::find_bin("xirtam-lc", "XIRTAM_LC_BIN").expect("xirtam-lc built");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = net.node(0).rpc_url.clone();
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "--network",
            "regtest",
            "--depth",
            "2",
            "--node",
            &url,
            "--datadir",
        ])
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start xirtam-lc serve");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("serve starts within 30 s")
        .expect("read stdout")
        .expect("a line");
    let endpoint = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let rpc = jsonrpsee::http_client::HttpClientBuilder::default()
        .build(&endpoint)
        .expect("client");

    // The background sync reaches the node's tip.
    let height = net.tip(0).await.expect("tip").height;
    let rpc = &rpc;
    wait_for(
        "serve synced to the node's tip",
        Duration::from_secs(30),
        || async move {
            let t: Value = rpc.request("lc_tip", ArrayParams::new()).await.ok()?;
            (t["height"] == height).then_some(())
        },
    )
    .await
    .expect("synced");
    let mut p = ArrayParams::new();
    p.insert("@alice").expect("param");
    let v: Value = rpc.request("lc_resolve", p).await.expect("resolve");
    assert_eq!(v["record"]["value_utf8"], "v1");
    assert_eq!(v["height"], height - 2, "proven at depth 2");
    let version = v["version"].as_str().expect("version").to_owned();
    let mut p = ArrayParams::new();
    p.insert("@nobody").expect("param");
    let v: Value = rpc.request("lc_resolve", p).await.expect("resolve");
    assert_eq!(
        (v["found"].clone(), v["version"].clone()),
        (Value::Bool(false), Value::from("absent"))
    );
    let mut p = ArrayParams::new();
    p.insert("not a name").expect("param");
    let e = rpc
        .request::<Value, _>("lc_resolve", p)
        .await
        .expect_err("bad name");
    assert!(e.to_string().contains("not a name"), "{e}");

    // A stream of @alice's verified versions over WebSocket (same port):
    // the current one at once.
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(endpoint.replace("http://", "ws://"))
        .await
        .expect("websocket");
    let mut p = ArrayParams::new();
    p.insert("@alice").expect("param");
    let mut stream: jsonrpsee::core::client::Subscription<Value> = ws
        .subscribe("lc_subscribe_watch", p, "lc_unsubscribe_watch")
        .await
        .expect("subscribe");
    let first = next_update(&mut stream).await;
    assert_eq!(first["version"], version.as_str());
    let mut p = ArrayParams::new();
    p.insert("not a name").expect("param");
    assert!(
        ws.subscribe::<Value, _>("lc_subscribe_watch", p, "lc_unsubscribe_watch")
            .await
            .is_err(),
        "a bad name is refused"
    );

    // Watch @alice from the version we have; update it and mine block by
    // block.
    let watch = tokio::spawn({
        let endpoint = endpoint.clone();
        let version = version.clone();
        async move {
            let rpc = jsonrpsee::http_client::HttpClientBuilder::default()
                .request_timeout(Duration::from_secs(120))
                .build(&endpoint)
                .expect("client");
            let mut p = ArrayParams::new();
            p.insert("@alice").expect("param");
            p.insert(Value::Null).expect("param");
            p.insert(version).expect("param");
            p.insert(90).expect("param");
            rpc.request::<Value, _>("lc_watch", p).await
        }
    });
    let tip = net.tip(0).await.expect("tip");
    let recent = Hash::from_hex(&tip.hash).expect("hex");
    submit(
        &net,
        0,
        &write(&REGTEST, "@alice", &alice, b"v2", 2, None, recent),
    )
    .await;
    let updated_at = net.mine(0, 1).await.expect("mine");
    wait_record(&net, 0, "@alice", b"v2", Duration::from_secs(30)).await;
    net.mine(0, 1).await.expect("mine");
    // One block deep is not yet depth 2: the watch must still be waiting
    // after the server has seen this block.
    wait_for(
        "serve synced to the block after the update",
        Duration::from_secs(30),
        || async move {
            let t: Value = rpc.request("lc_tip", ArrayParams::new()).await.ok()?;
            (t["height"] == updated_at + 1).then_some(())
        },
    )
    .await
    .expect("synced");
    assert!(
        !watch.is_finished(),
        "the watch fired before the change was 2 deep"
    );
    let early = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(
        early.is_err(),
        "the stream reported before the change was 2 deep: {early:?}"
    );
    let confirmed_at = net.mine(0, 1).await.expect("mine");
    let got = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("the watch reports within 30 s, with no further block")
        .expect("join")
        .expect("watch");
    assert_eq!(got["changed"], true);
    assert_eq!(got["record"]["value_utf8"], "v2");
    assert_eq!(got["height"], updated_at);
    assert_eq!(
        got["tip_height"], confirmed_at,
        "reported within the block that confirmed it"
    );
    assert_eq!(net.tip(0).await.expect("tip").height, confirmed_at);
    let streamed = next_update(&mut stream).await;
    assert_eq!(streamed["record"]["value_utf8"], "v2");
    assert_eq!(streamed["version"], got["version"]);
    assert_eq!(
        streamed["tip_height"], confirmed_at,
        "streamed within the block that confirmed it"
    );

    // A watch with the current version and a short wait returns unchanged.
    let mut p = ArrayParams::new();
    p.insert("@alice").expect("param");
    p.insert(Value::Null).expect("param");
    p.insert(got["version"].clone()).expect("param");
    p.insert(1).expect("param");
    let same: Value = rpc.request("lc_watch", p).await.expect("watch");
    assert_eq!(same["changed"], false);
}
