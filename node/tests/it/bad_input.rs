//! Bad input over JSON-RPC: every case gets a clear JSON-RPC error with a
//! stable code, and the node keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value as Json, json};
use xirtam_node::rpc::code;
use xirtam_proofs::block::{Block, ops_root};
use xirtam_proofs::header::mine;
use xirtam_proofs::{Op, encode};

use crate::common::{TestNode, commit_op, key, op, tip_hash};

/// POST `body` and return (HTTP status, parsed JSON body if any).
fn post(url: &str, body: &[u8]) -> (u16, Option<Json>) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) before reading a huge body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("HTTP status line");
    let json = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b.trim()).ok());
    (status, json)
}

fn call(url: &str, method: &str, params: Json) -> Json {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (_, json) = post(url, body.to_string().as_bytes());
    json.expect("JSON-RPC response")
}

/// `chain_submit_block` with `block`.
fn submit_block(url: &str, block: &Block) -> Json {
    call(
        url,
        "chain_submit_block",
        json!([hex::encode(encode(block))]),
    )
}

fn error_code(resp: &Json) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}

fn alive(url: &str) {
    let r = call(url, "chain_tip", json!([]));
    assert!(r["result"]["height"].is_u64(), "node still serves: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_error() {
    let t = TestNode::start().await;
    t.mine(2).await;
    let url = t.url.clone();
    let recent = tip_hash(&t.node);
    // A commitment is valid on its own; a write needs a claimed name.
    let good_op = commit_op("@alice", &key(1), recent);
    let write = op("@alice", 1, &key(1), &key(1), b"v", recent);
    let node = t.node.clone();

    tokio::task::spawn_blocking(move || {
        // Malformed JSON: parse error.
        let (_, r) = post(&url, b"{\"jsonrpc\": \"2.0\", \"method\": ");
        assert_eq!(error_code(&r.expect("json error body")), -32700);
        alive(&url);

        // Oversized request body: refused before parsing.
        let big = vec![b'a'; 8 * 1024 * 1024];
        let (status, r) = post(&url, &big);
        assert!(
            status == 413 || r.as_ref().is_some_and(|j| j["error"].is_object()),
            "status {status}"
        );
        alive(&url);

        // Unknown method.
        assert_eq!(error_code(&call(&url, "no_such_method", json!([]))), -32601);
        // Wrong parameter types.
        assert_eq!(
            error_code(&call(&url, "chain_headers", json!(["x", 1]))),
            -32602
        );
        // Garbage hex, and valid hex that is not an op.
        let r = call(&url, "dir_submit", json!(["zz-not-hex"]));
        assert_eq!(error_code(&r), i64::from(code::INVALID_PARAMS));
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("hex")),
            "{r}"
        );
        let r = call(&url, "dir_submit", json!(["00112233"]));
        assert_eq!(error_code(&r), i64::from(code::INVALID_PARAMS));
        // Trailing bytes after a valid op.
        let mut b = encode(&good_op);
        b.push(0);
        assert_eq!(
            error_code(&call(&url, "dir_submit", json!([hex::encode(b)]))),
            i64::from(code::INVALID_PARAMS)
        );
        // Invalid name syntax.
        assert_eq!(
            error_code(&call(&url, "dir_get", json!(["Alice", null]))),
            i64::from(code::INVALID_PARAMS)
        );
        // Height above the tip.
        assert_eq!(
            error_code(&call(&url, "dir_get", json!(["@alice", 1_000_000]))),
            i64::from(code::NOT_FOUND)
        );
        assert_eq!(
            error_code(&call(&url, "chain_block", json!([1_000_000]))),
            i64::from(code::NOT_FOUND)
        );

        // Invalid ops: each names the rule.
        let edit = |f: &dyn Fn(&mut xirtam_proofs::Write)| {
            let mut o = write.clone();
            if let Op::Write(w) = &mut o {
                f(w);
            }
            o
        };
        let bad_sig = edit(&|w| w.signature.0[0] ^= 1);
        // A stamp nonce that misses the target (searched: a random one meets
        // regtest's easy target one time in 16).
        let bad_stamp = edit(&|w| {
            let (id, target) = (w.id(), crate::common::NET.stamp_target_be());
            while xirtam_proofs::pow::meets_target(&w.stamp.pow_hash(&id), &target) {
                w.stamp.nonce = w.stamp.nonce.wrapping_add(1);
            }
        });
        let zero = edit(&|w| w.nonce = 0);
        for (o, rule) in [
            (&bad_sig, "signature"),
            (&bad_stamp, "stamp_"),
            (&zero, "zero_nonce"),
            (&write, "unclaimed"),
        ] {
            let r = call(&url, "dir_submit", json!([hex::encode(encode(o))]));
            assert_eq!(error_code(&r), i64::from(code::INVALID_OP), "{r}");
            assert!(
                r["error"]["data"]["rule"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(rule)),
                "{r}"
            );
        }
        // A valid op once, then the same again: mempool refusal.
        let r = call(&url, "dir_submit", json!([hex::encode(encode(&good_op))]));
        assert_eq!(r["result"]["status"], "pending", "{r}");
        let r = call(&url, "dir_submit", json!([hex::encode(encode(&good_op))]));
        assert_eq!(error_code(&r), i64::from(code::MEMPOOL_REJECTED));

        // Invalid blocks.
        let tip = node.lock().chain.tip().clone();
        let mut h =
            xirtam_proofs::header::header_template(node.params(), &tip.state, tip.header.time + 1);
        h.state_root = tip.header.state_root;
        h.ops_root = ops_root(&[]);
        // Bad proof of work: search for a nonce that misses the target.
        let target = h.target().expect("target").to_be_bytes();
        while h.hash().0 <= target {
            h.nonce += 1;
        }
        let bad_pow = Block {
            header: h,
            ops: vec![],
        };
        let r = submit_block(&url, &bad_pow);
        assert_eq!(error_code(&r), i64::from(code::INVALID_BLOCK), "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("target")),
            "{r}"
        );
        // Wrong state root (valid PoW).
        let mut wrong_state = h;
        wrong_state.state_root.0[0] ^= 1;
        assert!(mine(&mut wrong_state, 0, u64::MAX));
        let r = submit_block(
            &url,
            &Block {
                header: wrong_state,
                ops: vec![],
            },
        );
        assert_eq!(error_code(&r), i64::from(code::INVALID_BLOCK), "{r}");
        // Resubmitting it: remembered as invalid.
        let r = submit_block(
            &url,
            &Block {
                header: wrong_state,
                ops: vec![],
            },
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("known to be invalid")),
            "{r}"
        );
        // An op whose body does not match ops_root.
        let mut body_mismatch = h;
        assert!(mine(&mut body_mismatch, 0, u64::MAX));
        let r = submit_block(
            &url,
            &Block {
                header: body_mismatch,
                ops: vec![good_op.clone()],
            },
        );
        assert_eq!(error_code(&r), i64::from(code::INVALID_BLOCK), "{r}");
        // That did not poison the header: with its real (empty) body the
        // same header is accepted.
        let r = submit_block(
            &url,
            &Block {
                header: body_mismatch,
                ops: vec![],
            },
        );
        assert_eq!(r["result"]["status"], "tip", "{r}");
        // Garbage block hex.
        assert_eq!(
            error_code(&call(&url, "chain_submit_block", json!(["ff"]))),
            i64::from(code::INVALID_PARAMS)
        );
        // Unknown parent: kept as an orphan, not an error.
        let mut orphan = h;
        orphan.prev.0[0] ^= 1;
        assert!(mine(&mut orphan, 0, u64::MAX));
        let r = submit_block(
            &url,
            &Block {
                header: orphan,
                ops: vec![],
            },
        );
        assert_eq!(r["result"]["status"], "orphan", "{r}");

        alive(&url);
        let _: &Op = &good_op;
    })
    .await
    .expect("join");
}
