//! DM crypto: sign an event, encrypt it once, wrap the key to 3 devices
//! (target ≤ 150 µs) - as a client does it (its `Sealer` has seen the
//! recipients' keys before) and for recipients never seen before; and the
//! receiving side.

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
            let signed = SignedEvent::sign(&alice, event.clone());
            sealer.seal(&signed, &to).expect("seal")
        })
    });
    c.bench_function("dm_send_3_devices_first_time", |b| {
        b.iter(|| {
            let signed = SignedEvent::sign(&alice, event.clone());
            seal(&signed, &to).expect("seal")
        })
    });
    let env = seal(&SignedEvent::sign(&alice, event.clone()), &to).expect("seal");
    c.bench_function("dm_receive", |b| {
        b.iter(|| open(&env, &bobs[1], &[]).expect("open"))
    });
}

criterion_group!(benches, dm);
criterion_main!(benches);
