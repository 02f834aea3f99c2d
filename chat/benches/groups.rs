//! Group crypto (docs/BENCHMARKS.md, "Groups"): sending to a group of 10
//! and of 1,000 members (the same work: one signature and one encryption
//! under the epoch key; target ≤ 60 µs), and a key rotation sealed to
//! 1,000 member devices with its roster (target ≤ 40 ms and ≤ 64 KB on the
//! wire; the sizes are printed once).

use criterion::{Criterion, criterion_group, criterion_main};
use xirtam_chat::crypto::DeviceKeys;
use xirtam_chat::group::crypto::{
    Body, Change, EntryBody, EpochKey, GROUP_TEXT, GroupEvent, open_key, seal_body, seal_key,
    seal_message,
};
use xirtam_chat::group::log::{ENTRY_SIG_TAG, Entry, group_id};
use xirtam_chat::records::Device;
use xirtam_proofs::{Hash, Name, Signature, encode};

const NET: Hash = Hash([7; 32]);

fn member(i: usize) -> Name {
    Name::new(&format!("@member{i:05}")).expect("name")
}

fn device(i: usize) -> DeviceKeys {
    let mut seed = [3u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    DeviceKeys::from_seed(seed)
}

fn send(c: &mut Criterion) {
    let me = device(0);
    let key = EpochKey([5; 32]);
    let g = group_id(&NET, &member(0), &[1; 32]);
    for n in [10usize, 1000] {
        // What a member's send does with the group: check it is in the
        // roster, sign once, encrypt once under the epoch key.
        let roster: Vec<Name> = (0..n).map(member).collect();
        let sender = member(n - 1);
        c.bench_function(&format!("group_send_{n}_members"), |b| {
            b.iter(|| {
                assert!(roster.contains(&sender));
                let event = GroupEvent {
                    group: g,
                    sender: sender.clone(),
                    device: me.device().sign,
                    log_seq: 12,
                    head: Hash([6; 32]),
                    epoch: 3,
                    time_ms: 1,
                    kind: GROUP_TEXT,
                    body: vec![b'x'; 200],
                };
                seal_message(&me, &NET, event, &key).expect("seal")
            })
        });
    }
}

fn rotation(c: &mut Criterion) {
    let n = 1000;
    let admin = device(0);
    let devices: Vec<Device> = (0..n).map(|i| device(i).device()).collect();
    let roster: Vec<Name> = (0..n).map(member).collect();
    let g = group_id(&NET, &member(0), &[1; 32]);
    let rotate = || {
        let key = EpochKey::random().expect("rng");
        let seal = seal_key(&g, 8, &key, &devices).expect("seal");
        let body = Body {
            name: "a thousand".into(),
            admins_only: false,
            history: true,
            roster: roster.clone(),
            banned: Vec::new(),
            change: Change::Rotated,
        };
        let sealed = seal_body(&g, 20, &Hash([2; 32]), &key, &body).expect("body");
        let mut e = Entry {
            group: g,
            seq: 20,
            prev: Hash([2; 32]),
            author: member(0),
            device: admin.device().sign,
            time_ms: 1,
            server: Name::new("~s1").expect("name"),
            access: key.access_lock(&g, 8),
            admins: vec![member(0)],
            epoch: 8,
            body: encode(&EntryBody {
                seal: Some(seal),
                body: sealed,
            }),
            sig: Signature([0; 64]),
        };
        e.sig = admin.sign(ENTRY_SIG_TAG, &e.signing_payload(&NET));
        (encode(&e), key, e)
    };
    let (bytes, key, e) = rotate();
    let wire = xirtam_chat::api::b64(&bytes).len();
    eprintln!(
        "rotation for {n} member devices: entry {} bytes, {} bytes of base64 on the wire",
        bytes.len(),
        wire
    );
    // Every member device opens it (checked on the last one).
    let eb: EntryBody = xirtam_proofs::decode(&e.body).expect("body");
    let seal = eb.seal.expect("seal");
    assert_eq!(
        open_key(&seal, &device(n - 1), &g, 8, &e.access).expect("opens"),
        key
    );
    c.bench_function("group_rotation_1000_devices", |b| b.iter(rotate));
    c.bench_function("group_open_rotation_1000_devices", |b| {
        let last = device(n - 1);
        b.iter(|| open_key(&seal, &last, &g, 8, &e.access).expect("opens"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = send, rotation
}
criterion_main!(benches);
