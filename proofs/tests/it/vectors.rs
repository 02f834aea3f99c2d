//! Hex test vectors in `proofs/tests/data/*.json`.
//!
//! Each test recomputes its vector file from the code and compares it with
//! the committed file, then checks the file's data independently (decode,
//! hash, verify). A change to any encoding, hash or rule therefore fails
//! here until the vectors are deliberately regenerated with
//! `XIRTAM_WRITE_VECTORS=1 cargo test -p xirtam-proofs --test it vectors`
//! (and the change documented in docs/protocol.md).

use std::path::PathBuf;

use serde_json::{Value as Json, json};
use xirtam_proofs::difficulty::{Anchor, next_bits};
use xirtam_proofs::hash::tag;
use xirtam_proofs::header::{ChainState, Header, validate_header_chain};
use xirtam_proofs::keys::tagged_message;
use xirtam_proofs::params::LOCAL;
use xirtam_proofs::pow::CompactTarget;
use xirtam_proofs::state::{self, NodeRef, StateProof, verify_state};
use xirtam_proofs::{Hash, Name, Op, PublicKey, Record, Signature, decode, encode};

use crate::common::{FAR_FUTURE, claim, commit, key, mine_chain, record, tree};

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

/// Compare the recomputed vector with the committed file (or write it).
fn check_file(file: &str, computed: &Json) -> Json {
    let p = path(file);
    let pretty = serde_json::to_string_pretty(computed).expect("json") + "\n";
    if std::env::var_os("XIRTAM_WRITE_VECTORS").is_some() {
        std::fs::write(&p, &pretty).expect("write vector file");
    }
    let stored =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let stored: Json = serde_json::from_str(&stored).expect("vector file is JSON");
    assert_eq!(
        &stored, computed,
        "{file} differs from what the code computes"
    );
    stored
}

fn s(v: &Json, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("field {k}"))
        .to_owned()
}

fn unhex(v: &Json, k: &str) -> Vec<u8> {
    hex::decode(s(v, k)).expect("hex")
}

#[test]
fn header_vectors() {
    let mut st = ChainState::genesis(&LOCAL);
    let mut headers = vec![LOCAL.genesis_header()];
    headers.extend(mine_chain(&LOCAL, &mut st, 5));
    let computed = json!({
        "description": "local-network genesis and the next 5 mined headers (on-schedule timestamps); 160-byte canonical encoding and BLAKE3 header hash",
        "network": "local",
        "headers": headers.iter().map(|h| json!({
            "height": h.height,
            "bytes": hex::encode(encode(h)),
            "hash": h.hash().to_hex(),
        })).collect::<Vec<_>>(),
    });
    let v = check_file("headers.json", &computed);
    let mut decoded = Vec::new();
    for e in v["headers"].as_array().expect("array") {
        let bytes = unhex(e, "bytes");
        let h: Header = decode(&bytes).expect("vector decodes");
        assert_eq!(encode(&h), bytes);
        assert_eq!(h.hash().to_hex(), s(e, "hash"));
        decoded.push(h);
    }
    assert_eq!(decoded[0], LOCAL.genesis_header());
    let mut state = ChainState::genesis(&LOCAL);
    validate_header_chain(&LOCAL, &mut state, &decoded[1..], FAR_FUTURE)
        .expect("vector chain is valid");
}

#[test]
fn op_vectors() {
    let alice = key(1);
    let salt = [0x5a; 32];
    let c = commit("@alice", &alice, salt, LOCAL.genesis_hash);
    let w = claim(
        "@alice",
        &alice,
        b"hello xirtam",
        salt,
        7,
        LOCAL.genesis_hash,
    );
    let o = Op::Write(w.clone());
    let payload = w.signing_payload(&LOCAL);
    let computed = json!({
        "description": "a claim of @alice on the local network in two ops: the commitment (mined at height 7) and the signed reveal. Commitment, content bytes, the exact Ed25519 message (tag-prefixed), signature, ids, stamps, encodings and ops_root leaves",
        "network": "local",
        "secret_seed": hex::encode(alice.to_seed()),
        "public_key": alice.public().to_hex(),
        "salt": hex::encode(salt),
        "commitment": c.commitment.to_hex(),
        "commit_id": c.id().to_hex(),
        "commit_stamp_nonce": c.stamp.nonce,
        "commit_bytes": hex::encode(encode(&Op::Commit(c))),
        "commit_hash": Op::Commit(c).hash().to_hex(),
        "commit_state_key": Op::Commit(c).state_key().to_hex(),
        "commit_entry_at_7": state::commit_entry_hash(7).to_hex(),
        "content_bytes": hex::encode(w.content_bytes()),
        "signing_message": hex::encode(tagged_message(tag::SIG_OP, &payload)),
        "signature": hex::encode(w.signature.0),
        "op_id": w.id().to_hex(),
        "stamp_block": w.stamp.block.to_hex(),
        "stamp_nonce": w.stamp.nonce,
        "stamp_hash": w.stamp.pow_hash(&w.id()).to_hex(),
        "op_bytes": hex::encode(encode(&o)),
        "op_hash": o.hash().to_hex(),
    });
    let v = check_file("op.json", &computed);
    let co: Op = decode(&unhex(&v, "commit_bytes")).expect("vector decodes");
    assert_eq!(co.hash().to_hex(), s(&v, "commit_hash"));
    assert_eq!(co.state_key().to_hex(), s(&v, "commit_state_key"));
    co.check_stateless(&LOCAL)
        .expect("vector commitment is valid");
    let o: Op = decode(&unhex(&v, "op_bytes")).expect("vector decodes");
    let Op::Write(w) = &o else {
        panic!("the vector op is a write")
    };
    let (key_hash, entry) = w.claim_entry(&LOCAL).expect("a claim");
    assert_eq!(key_hash, co.state_key(), "the reveal opens the commitment");
    assert_eq!(entry.to_hex(), s(&v, "commit_entry_at_7"));
    assert_eq!(hex::encode(w.content_bytes()), s(&v, "content_bytes"));
    assert_eq!(w.id().to_hex(), s(&v, "op_id"));
    assert_eq!(o.hash().to_hex(), s(&v, "op_hash"));
    assert_eq!(w.stamp.pow_hash(&w.id()).to_hex(), s(&v, "stamp_hash"));
    o.check_stateless(&LOCAL).expect("vector op is valid");
    // The signature verifies over the message bytes in the file with plain
    // Ed25519 (no knowledge of our tag scheme needed).
    let pk = PublicKey::from_hex(&s(&v, "public_key")).expect("hex");
    let msg = unhex(&v, "signing_message");
    let sig: [u8; 64] = unhex(&v, "signature").try_into().expect("64 bytes");
    let vk = ed25519_dalek_verify(&pk, &msg, &sig);
    assert!(vk, "signature verifies over the raw message");
    let mut bad = w.clone();
    bad.signature = Signature(sig);
    bad.signature.0[0] ^= 1;
    assert!(Op::Write(bad).check_stateless(&LOCAL).is_err());
}

/// Verify a raw Ed25519 signature: the message already contains the tag.
fn ed25519_dalek_verify(pk: &PublicKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    // Split the tag prefix back off and use the crate's API; the byte-level
    // equality with `signing_message` is what pins the format.
    let tag_len = usize::from(msg[0]);
    let tag_str = std::str::from_utf8(&msg[1..1 + tag_len]).expect("ascii tag");
    pk.verify(tag_str, &msg[1 + tag_len..], &Signature(*sig))
        .is_ok()
}

#[test]
fn state_proof_vectors() {
    let owner = key(7);
    let names: Vec<Name> = (0..16)
        .map(|i| Name::new(&format!("@user{i}")).expect("valid"))
        .collect();
    let recs: Vec<(Name, Record)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), record(i as u64 + 1, &owner, &[i as u8; 64])))
        .collect();
    let (store, root) = tree(&recs);
    let (present, rec) = &recs[5];
    let (_, inc) =
        state::prove(&store, NodeRef::new(root, 0), &present.key_hash()).expect("stored");
    let mut inc_bad = inc.clone();
    inc_bad.siblings[0].0[0] ^= 1;
    let absent = Name::new("@nobody").expect("valid");
    let (_, exc) = state::prove(&store, NodeRef::new(root, 0), &absent.key_hash()).expect("stored");
    let mut exc_bad = exc.clone();
    if let Some(s) = exc_bad.siblings.iter_mut().find(|s| **s != Hash::ZERO) {
        s.0[31] ^= 1;
    }
    let case = |n: &Name, r: Option<&Record>, p: &StateProof, valid: bool| {
        json!({
            "name": n.as_str(),
            "record": r.map(|r| hex::encode(encode(r))),
            "proof": hex::encode(encode(p)),
            "valid": valid,
        })
    };
    let computed = json!({
        "description": "a 16-name tree (@user0..@user15, record nonce i+1, one owner, 64-byte value of byte i); inclusion and exclusion proofs, valid and tampered",
        "root": root.to_hex(),
        "records": recs.iter().map(|(n, r)| json!({"name": n.as_str(), "record": hex::encode(encode(r))})).collect::<Vec<_>>(),
        "cases": [
            case(present, Some(rec), &inc, true),
            case(present, Some(rec), &inc_bad, false),
            case(&absent, None, &exc, true),
            case(&absent, None, &exc_bad, false),
        ],
    });
    let v = check_file("state_proof.json", &computed);
    let root = Hash::from_hex(&s(&v, "root")).expect("hex");
    // Rebuild the tree from the file's records: same root.
    let from_file: Vec<(Name, Record)> = v["records"]
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                Name::new(&s(e, "name")).expect("valid"),
                decode(&unhex(e, "record")).expect("record"),
            )
        })
        .collect();
    assert_eq!(tree(&from_file).1, root);
    for c in v["cases"].as_array().expect("array") {
        let n = Name::new(&s(c, "name")).expect("valid");
        let r: Option<Record> = c["record"]
            .as_str()
            .map(|h| decode(&hex::decode(h).expect("hex")).expect("record"));
        let p: StateProof = decode(&unhex(c, "proof")).expect("proof decodes");
        let ok = verify_state(&root, &n, r.as_ref(), &p).is_ok();
        assert_eq!(ok, c["valid"].as_bool().expect("bool"), "case {c}");
    }
}

#[test]
fn difficulty_vectors() {
    let anchor = Anchor {
        height: 1,
        time: LOCAL.genesis_time + 10,
        bits: LOCAL.genesis_bits,
    };
    // (parent height, seconds after the anchor): on schedule, early, late,
    // far late (clamped to the limit), far early.
    let points: &[(u64, u64)] = &[
        (1, 0),
        (2, 2),
        (11, 20),
        (11, 0),
        (11, 50),
        (11, 80),
        (100, 100),
        (100, 198),
        (100, 400),
        (1000, 1000),
        (1000, 100_000),
        (100_000, 1),
    ];
    let cases: Vec<Json> = points
        .iter()
        .map(|&(h, dt)| {
            let bits = next_bits(&LOCAL, Some(&anchor), anchor.time + dt, h);
            json!({"parent_height": h, "parent_time": anchor.time + dt, "bits": format!("{:#010x}", bits.0)})
        })
        .collect();
    let computed = json!({
        "description": "ASERT on the local network (interval 2 s, half-life 30 s): required bits of the child of a parent at (height, time), anchor = block 1",
        "network": "local",
        "anchor": {"height": anchor.height, "time": anchor.time, "bits": format!("{:#010x}", anchor.bits.0)},
        "cases": cases,
    });
    let v = check_file("difficulty.json", &computed);
    for c in v["cases"].as_array().expect("array") {
        let bits = u32::from_str_radix(s(c, "bits").trim_start_matches("0x"), 16).expect("hex");
        let h = c["parent_height"].as_u64().expect("u64");
        let t = c["parent_time"].as_u64().expect("u64");
        assert_eq!(next_bits(&LOCAL, Some(&anchor), t, h), CompactTarget(bits));
    }
}

/// The worked examples in docs/protocol.md section 18 (computed there by an
/// independent Python transcription of the spec) match the code.
#[test]
fn protocol_md_examples() {
    use xirtam_proofs::op::{Owners, Value};
    let alice = Name::new("@alice").expect("valid");
    assert_eq!(
        alice.key_hash().to_hex(),
        "8c27260cd387719bc78c7f50a50a80deca81b1d0a8705a44cb97f9cd3845a3e6"
    );
    let k = key(1);
    assert_eq!(
        k.public().to_hex(),
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
    let rec = Record {
        nonce: 1,
        owners: Owners::single(k.public()),
        value: Value::new(b"hi".to_vec()).expect("small"),
        claimed_at: 7,
    };
    assert_eq!(
        hex::encode(encode(&rec)),
        "010000000000000001000000000000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c020000000000000068690700000000000000"
    );
    assert_eq!(
        rec.hash().to_hex(),
        "2413c05d18c726921408802de00a1d3353b9b56d1f059909e0de21380ada62f8"
    );
    assert_eq!(
        tree(&[(alice.clone(), rec)]).1.to_hex(),
        "17e08f2a596c59cf35032582aa96a1f92ceff31d2caafdfabaf99fca7110618d"
    );

    // The claim of @alice in two phases, salt 5a×32, both ops anchored at
    // the local genesis; the commitment is mined at height 7.
    let salt = [0x5a; 32];
    let c = crate::common::commit("@alice", &k, salt, LOCAL.genesis_hash);
    assert_eq!(
        c.commitment.to_hex(),
        "ba9299856965f84c4b49c70d868b259c950c73620bee81ce5222824189b84b1a"
    );
    assert_eq!(
        c.id().to_hex(),
        "b184edeb7cdac268ec2afa3630bd215147108c4b76febdaeb9ffaf8a77f3ba0b"
    );
    assert_eq!(c.stamp.nonce, 1273);
    let c = Op::Commit(c);
    assert_eq!(encode(&c).len(), 76);
    assert_eq!(
        c.hash().to_hex(),
        "6c00889792c5d382191494f263d0c437a306b7c340678614d119f415754986b5"
    );
    assert_eq!(
        c.state_key().to_hex(),
        "0e8dc8308773d5a4c0bf250242c147d87bdf954236303445b3ac6c9500cb16b7"
    );
    assert_eq!(
        state::commit_entry_hash(7).to_hex(),
        "98f5b44c91872fcb3f63fc164d8364f4d0459371202b4b0da02edbd6ab573598"
    );

    let o = crate::common::claim("@alice", &k, b"hi", salt, 7, LOCAL.genesis_hash);
    assert_eq!(
        hex::encode(o.content_bytes()),
        "060000000000000040616c69636501000000000000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c01000000000000008a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c02000000000000006869015a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0700000000000000000e531ef2a76c79fb1a37af778131104c18dd066021d405f1b5dfed798e6225"
    );
    assert_eq!(
        hex::encode(o.signature.0),
        "428e6ef6d48bf448cd46fc7ff84ffbe8213545c5f7af54d3241043f5b6da31c37c24d3a134819f0dd1637341b56580bf0e68a48f68211dd1fb570979d7126901"
    );
    assert_eq!(
        o.id().to_hex(),
        "04ddfe85366c90a06198d781659263f6d294036667c141e21f02a274851c1649"
    );
    assert_eq!(o.stamp.nonce, 532);
    assert_eq!(
        o.stamp.pow_hash(&o.id()).to_hex(),
        "002e36bf2e71c8f5a7bf7e5295a0af09d67030113d7be9c55a6deefbfe9a90da"
    );
    let o = Op::Write(o);
    assert_eq!(encode(&o).len(), 253);
    assert_eq!(
        o.hash().to_hex(),
        "4745e81ce86ef12fd35b5f3308e4aed4818a2dfd2cc50ce781d8f5332c3b9883"
    );
    assert_eq!(
        xirtam_proofs::ops_root(&[o.hash()]).to_hex(),
        "eb3a434218b06b40050ab035eb83e93f961242ced2c0bc52a5a43b3a108c2f35"
    );

    let g = ChainState::genesis(&LOCAL);
    assert_eq!(
        g.next_history_root().to_hex(),
        "3e63b74de6c9a8c754fafe9f0ed04775aafb28525c55c100cec9c5a653f371c2"
    );
    assert_eq!(encode(&g).len(), 137);

    let anchor = Anchor {
        height: 1,
        time: 1_767_225_700,
        bits: CompactTarget(0x1f0f_ffff),
    };
    for (dt, bits) in [
        (18i64, 0x1f0f_ffffu32),
        (19, 0x1f10_5ffe),
        (33, 0x1f16_a01e),
        (48, 0x1f1f_fffe),
        (-12, 0x1f07_ffff),
    ] {
        let t = anchor.time.checked_add_signed(dt).expect("in range");
        assert_eq!(
            next_bits(&LOCAL, Some(&anchor), t, 10),
            CompactTarget(bits),
            "T{dt:+}"
        );
    }
}
