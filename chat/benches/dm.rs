//! DM crypto: sign an event, encrypt it once, wrap the key to 3 devices
//! (target ≤ 150 µs), and from a sender with 3 devices (the copy to its 2
//! others included, target ≤ 250 µs) - as a client does it (its `Sealer` has seen the
//! recipients' keys before) and for recipients never seen before; the
//! receiving side; and postage (the proof of work on a first-contact
//! deposit).

use criterion::{Criterion, criterion_group, criterion_main};
use xirtam_chat::crypto::{
    DeviceKeys, Event, KIND_TEXT, Recipient, Sealer, SignedEvent, open, seal,
};
use xirtam_proofs::{Hash, Name};

fn dm(c: &mut Criterion) {
    let alice = DeviceKeys::from_seed([1; 32]);
    let bobs: Vec<DeviceKeys> = (2..5u8).map(|i| DeviceKeys::from_seed([i; 32])).collect();
    let to: Vec<Recipient> = bobs
        .iter()
        .map(|d| Recipient {
            device: d.device().sign,
            kx: d.device().kx,
        })
        .collect();
    let event = Event {
        sender: Name::new("@alice").expect("name"),
        device: alice.device().sign,
        recipient: Name::new("@bob").expect("name"),
        time: 1,
        after: Hash::ZERO,
        kind: KIND_TEXT,
        body: vec![b'x'; 200],
    };
    let mut sealer = Sealer::new();
    c.bench_function("dm_send_3_devices", |b| {
        b.iter(|| {
            let signed = SignedEvent::sign(&alice, &Hash::ZERO, event.clone());
            sealer.seal(&signed, &to).expect("seal")
        })
    });
    c.bench_function("dm_send_3_devices_first_time", |b| {
        b.iter(|| {
            let signed = SignedEvent::sign(&alice, &Hash::ZERO, event.clone());
            seal(&signed, &to).expect("seal")
        })
    });
    // A sender with 3 devices to a recipient with 3: the message for the
    // recipient's devices, and the copy for the sender's 2 others, each
    // its own envelope (as `Core::deliver` seals them).
    let own: Vec<Recipient> = (5..7u8)
        .map(|i| {
            let d = DeviceKeys::from_seed([i; 32]).device();
            Recipient {
                device: d.sign,
                kx: d.kx,
            }
        })
        .collect();
    c.bench_function("dm_send_3x3_devices", |b| {
        b.iter(|| {
            let signed = SignedEvent::sign(&alice, &Hash::ZERO, event.clone());
            let to_them = sealer.seal(&signed, &to).expect("seal");
            let to_us = sealer.seal(&signed, &own).expect("seal");
            (to_them, to_us)
        })
    });
    let env = seal(&SignedEvent::sign(&alice, &Hash::ZERO, event.clone()), &to).expect("seal");
    c.bench_function("dm_receive", |b| {
        b.iter(|| open(&env, &bobs[1], &[]).expect("open"))
    });
}

/// Postage: one digest, and solving 16 bits for a new envelope each
/// iteration (the mean is the expected cost, 2^16 digests; 22 bits, the
/// default, costs 64 times as much).
fn postage(c: &mut Criterion) {
    use xirtam_chat::api::{postage_digest, solve_postage};
    let (mailbox, block) = (Hash([1; 32]), Hash([2; 32]));
    let envelope = Hash([3; 32]);
    let mut nonce = 0u64;
    c.bench_function("postage_digest", |b| {
        b.iter(|| {
            nonce += 1;
            postage_digest(&mailbox, &envelope, &block, nonce)
        })
    });
    let mut g = c.benchmark_group("postage");
    g.sample_size(50);
    let mut k = 0u64;
    g.bench_function("solve_16_bits", |b| {
        b.iter(|| {
            k += 1;
            let mut e = [0u8; 32];
            e[..8].copy_from_slice(&k.to_be_bytes());
            solve_postage(&mailbox, &Hash(e), &block, 16)
        })
    });
    g.finish();
}

criterion_group!(benches, dm, postage);
criterion_main!(benches);
