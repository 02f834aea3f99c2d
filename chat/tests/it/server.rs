//! The concierge server under bad input: every method answers a clear
//! JSON-RPC error, oversized deposits are refused, and the server stays up.
//! No directory node is needed: none of these calls gets as far as a
//! lookup (the light client points at a closed port).

use std::time::Duration;

use jsonrpsee::core::client::{ClientT, Error as RpcError};
use jsonrpsee::http_client::HttpClient;
use jsonrpsee::rpc_params;
use xirtam_chat::api::{ConciergeApiClient, code};
use xirtam_chat::crypto::{DeviceKeys, Event, KIND_TEXT, Recipient, SignedEvent, seal};
use xirtam_chat::server::{Limits, RunningServer, ServerConfig, start};
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::{Hash, Name, encode};

async fn server(dir: &std::path::Path, limits: Limits) -> (RunningServer, HttpClient) {
    let s = start(ServerConfig {
        name: Name::new("~test").expect("valid"),
        params: &REGTEST,
        datadir: dir.to_path_buf(),
        nodes: vec!["http://127.0.0.1:9".into()],
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: None,
        plain_http: false,
        depth: None,
        limits,
    })
    .await
    .expect("server starts");
    // TLS with the server's key as its raw public key.
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let c = xirtam_chat::tls::concierge_client(&s.url, &s.key, Duration::from_secs(10), 1 << 24)
        .expect("client");
    (s, c)
}

fn code_of<T: std::fmt::Debug>(r: Result<T, RpcError>) -> i32 {
    match r {
        Err(RpcError::Call(e)) => {
            assert!(!e.message().is_empty(), "an error says why");
            e.code()
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

fn envelope() -> Vec<u8> {
    let k = DeviceKeys::from_seed([1; 32]);
    let ev = SignedEvent::sign(
        &k,
        &Hash::ZERO,
        Event {
            sender: Name::new("@a").expect("valid"),
            device: k.device().sign,
            recipient: Name::new("@b").expect("valid"),
            time: 0,
            after: Hash::default(),
            kind: KIND_TEXT,
            body: b"x".to_vec(),
        },
    );
    let to = Recipient {
        device: k.device().sign,
        kx: k.device().kx,
    };
    encode(&seal(&ev, &[to]).expect("seal"))
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, c) = server(dir.path(), Limits::default()).await;
    let token = "00".repeat(32);
    let bad = code::INVALID_PARAMS;

    // auth_challenge
    assert_eq!(code_of(c.auth_challenge("alice".into()).await), bad);
    assert_eq!(code_of(c.auth_challenge("~server".into()).await), bad);
    assert_eq!(code_of(c.auth_challenge("@".repeat(300)).await), bad);
    // auth_login
    let ok_dev = "11".repeat(32);
    let sig = "22".repeat(64);
    assert_eq!(
        code_of(
            c.auth_login("@a".into(), "zz".into(), token.clone(), sig.clone())
                .await
        ),
        bad
    );
    assert_eq!(
        code_of(
            c.auth_login("@a".into(), ok_dev.clone(), "12".into(), sig.clone())
                .await
        ),
        bad
    );
    assert_eq!(
        code_of(
            c.auth_login("@a".into(), ok_dev.clone(), token.clone(), "33".into())
                .await
        ),
        bad
    );
    assert_eq!(
        code_of(
            c.auth_login("@a".into(), ok_dev.clone(), token.clone(), sig.clone())
                .await
        ),
        code::UNAUTHORIZED,
        "a challenge the server never issued"
    );
    let ch = c.auth_challenge("@a".into()).await.expect("challenge");
    assert_eq!(
        code_of(
            c.auth_login(
                "@a".into(),
                ok_dev.clone(),
                ch.challenge.clone(),
                sig.clone()
            )
            .await
        ),
        code::UNAUTHORIZED,
        "a wrong signature"
    );
    assert_eq!(
        code_of(c.auth_login("@a".into(), ok_dev, ch.challenge, sig).await),
        code::UNAUTHORIZED,
        "a challenge is single-use"
    );
    // token-holding methods
    assert_eq!(code_of(c.mailbox_create("not hex".into()).await), bad);
    assert_eq!(
        code_of(c.mailbox_create(token.clone()).await),
        code::UNAUTHORIZED
    );
    assert_eq!(
        code_of(c.mailbox_receive(token.clone(), vec![], 0).await),
        code::UNAUTHORIZED
    );
    assert_eq!(
        code_of(c.mailbox_ack(token.clone(), "00".into(), 1).await),
        code::UNAUTHORIZED
    );
    assert_eq!(
        code_of(c.keys_publish(token.clone(), "00".into()).await),
        code::UNAUTHORIZED
    );
    // deposits
    assert_eq!(
        code_of(
            c.mailbox_deposit("bob".into(), "00".into(), None, None)
                .await
        ),
        bad
    );
    assert_eq!(
        code_of(
            c.mailbox_deposit("@b".into(), "xyz".into(), None, None)
                .await
        ),
        bad
    );
    assert_eq!(
        code_of(
            c.mailbox_deposit("@b".into(), "00ff".into(), None, None)
                .await
        ),
        bad,
        "not an envelope"
    );
    assert_eq!(
        code_of(
            c.mailbox_deposit("@b".into(), hex::encode(envelope()), None, None)
                .await
        ),
        code::NOT_FOUND,
        "no mailbox for @b here"
    );
    let big = hex::encode(vec![0u8; Limits::default().max_envelope + 1]);
    assert_eq!(
        code_of(c.mailbox_deposit("@b".into(), big, None, None).await),
        code::TOO_LARGE
    );
    // Far over the HTTP body limit: refused before parsing.
    let huge = "00".repeat(4 * Limits::default().max_envelope);
    assert!(
        c.mailbox_deposit("@b".into(), huge, None, None)
            .await
            .is_err()
    );
    // keys_fetch
    assert_eq!(code_of(c.keys_fetch("nope".into()).await), bad);
    assert_eq!(
        c.keys_fetch("@nobody".into()).await.expect("empty list"),
        Vec::<String>::new()
    );
    // Wrong shapes and unknown methods.
    let r: Result<serde_json::Value, _> = c.request("mailbox_ack", rpc_params![1, 2, 3]).await;
    assert_eq!(code_of(r), bad);
    let r: Result<serde_json::Value, _> = c.request("auth_challenge", rpc_params![]).await;
    assert_eq!(code_of(r), bad);
    let r: Result<serde_json::Value, _> = c.request("mailbox_steal", rpc_params![]).await;
    assert_eq!(code_of(r), -32601);

    // Still up and answering.
    let info = c.server_info().await.expect("server still up");
    assert_eq!(info.name, "~test");
    assert_eq!(info.key, s.key.to_hex());
    s.stop().await;
}

#[tokio::test]
async fn keys_survive_restart_and_unknown_mailboxes_are_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _) = server(dir.path(), Limits::default()).await;
    let key = s.key;
    s.stop().await;
    let (s, c) = server(dir.path(), Limits::default()).await;
    assert_eq!(s.key, key, "the server key is kept in the data directory");
    assert_eq!(
        code_of(
            c.mailbox_deposit("@nobody".into(), hex::encode(envelope()), None, None)
                .await
        ),
        code::NOT_FOUND
    );
    s.stop().await;
}

/// Whether the server closes `sock` within `within` (a read returns end of
/// stream or an error).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(sock: &mut S, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, sock.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A peer that completes the TLS handshake and then sends nothing is
/// dropped after the idle timeout (it held a connection slot for ever);
/// one address cannot take more than its share of connections.
#[tokio::test]
async fn idle_connections_are_closed_and_one_address_is_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, c) = server(
        dir.path(),
        Limits {
            max_wait: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections_per_ip: 4,
            ..Limits::default()
        },
    )
    .await;
    // Idle after a complete handshake: closed (the idle time is at least
    // the longest long-poll plus 5 s, so 6 s here).
    let tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        xirtam_chat::tls::client_config(&s.key).expect("config"),
    ));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut idle = tls
        .connect(name, tcp)
        .await
        .expect("handshake with the record key");
    assert!(
        closed_within(&mut idle, Duration::from_secs(20)).await,
        "an idle TLS connection stayed open"
    );
    // Four silent connections from 127.0.0.1 are held; the fifth is closed
    // at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(s.addr)
                .await
                .expect("connect"),
        );
    }
    let mut fifth = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    assert!(
        closed_within(&mut fifth, Duration::from_secs(3)).await,
        "a fifth connection from one address was kept"
    );
    drop(held);
    // Served again once they are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.server_info().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "not served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
