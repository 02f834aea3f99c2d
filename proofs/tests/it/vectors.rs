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
use xirtam_proofs::state::{self, StateProof, verify_state};
use xirtam_proofs::{Hash, Name, Op, PublicKey, Record, Signature, decode, encode};

use crate::common::{FAR_FUTURE, key, mine_chain, op, record, tree};

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
    let o = op(
        "@alice",
        1,
        &alice,
        &[&alice, &key(2)],
        b"hello xirtam",
        LOCAL.genesis_hash,
    );
    let payload = o.signing_payload(&LOCAL);
    let computed = json!({
        "description": "a claim of @alice on the local network: content bytes, the exact Ed25519 message (tag-prefixed), signature, op id, stamp and full op encoding",
        "network": "local",
        "secret_seed": hex::encode(alice.to_seed()),
        "public_key": alice.public().to_hex(),
        "content_bytes": hex::encode(o.content_bytes()),
        "signing_message": hex::encode(tagged_message(tag::SIG_OP, &payload)),
        "signature": hex::encode(o.signature.0),
        "op_id": o.id().to_hex(),
        "stamp_block": o.stamp.block.to_hex(),
        "stamp_nonce": o.stamp.nonce,
        "stamp_hash": o.stamp.pow_hash(&o.id()).to_hex(),
        "op_bytes": hex::encode(encode(&o)),
        "op_hash": o.hash().to_hex(),
    });
    let v = check_file("op.json", &computed);
    let o: Op = decode(&unhex(&v, "op_bytes")).expect("vector decodes");
    assert_eq!(hex::encode(o.content_bytes()), s(&v, "content_bytes"));
    assert_eq!(o.id().to_hex(), s(&v, "op_id"));
    assert_eq!(o.hash().to_hex(), s(&v, "op_hash"));
    assert_eq!(o.stamp.pow_hash(&o.id()).to_hex(), s(&v, "stamp_hash"));
    o.check_stateless(&LOCAL).expect("vector op is valid");
    // The signature verifies over the message bytes in the file with plain
    // Ed25519 (no knowledge of our tag scheme needed).
    let pk = PublicKey::from_hex(&s(&v, "public_key")).expect("hex");
    let msg = unhex(&v, "signing_message");
    let sig: [u8; 64] = unhex(&v, "signature").try_into().expect("64 bytes");
    let vk = ed25519_dalek_verify(&pk, &msg, &sig);
    assert!(vk, "signature verifies over the raw message");
    let mut bad = o.clone();
    bad.signature = Signature(sig);
    bad.signature.0[0] ^= 1;
    assert!(bad.check_stateless(&LOCAL).is_err());
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
    let (_, inc) = state::prove(&store, root, &present.key_hash()).expect("stored");
    let mut inc_bad = inc.clone();
    inc_bad.siblings[0].0[0] ^= 1;
    let absent = Name::new("@nobody").expect("valid");
    let (_, exc) = state::prove(&store, root, &absent.key_hash()).expect("stored");
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
    };
    assert_eq!(encode(&rec).len(), 58);
    assert_eq!(
        rec.hash().to_hex(),
        "68cc3bf79b29838a2e7c071d15a683cce542cbd7ebe65e4d0e6a1a2b9d1f0928"
    );
    assert_eq!(
        tree(&[(alice.clone(), rec)]).1.to_hex(),
        "f5c17da801ef6dbbd140d5fbbf722d47aa3797f34a238b064e0fdd5fc786ce17"
    );

    let mut o = Op::sign(
        &LOCAL,
        alice,
        1,
        Owners::single(k.public()),
        Value::new(b"hi".to_vec()).expect("small"),
        &k,
    );
    assert!(o.solve_stamp(&LOCAL, LOCAL.genesis_hash, 0, 1 << 20));
    assert_eq!(o.content_bytes().len(), 104);
    assert_eq!(
        hex::encode(o.signature.0),
        "4e421318f2ff190ed95d9448dc5c6a5bc4809e183d9e09a09473a1f33e7b3f29745b60982492317bc8699b391f47cfd3fa7d15b9cadf13040b4be84b50665e0b"
    );
    assert_eq!(
        o.id().to_hex(),
        "5a25cd924cf6ec1f6deb559c2909110fde647b1ea9b16300eb06b79d0e47cb35"
    );
    assert_eq!(o.stamp.nonce, 520);
    assert_eq!(
        o.stamp.pow_hash(&o.id()).to_hex(),
        "003e4aa44b223a1b26369022a92dcd9ba2605db45ba6aab42bf326d382467cdf"
    );
    assert_eq!(encode(&o).len(), 208);
    assert_eq!(
        o.hash().to_hex(),
        "ba03bce4b684201531b29d5089cdd128a63faf38e899c2dd8db139b4c36ad2e7"
    );
    assert_eq!(
        xirtam_proofs::ops_root(&[o.hash()]).to_hex(),
        "ef9006993b196dd9ee18cb06401d99567c2a80473adc5af2f74d7d2cd79ea69d"
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
