//! Lookups: found, proven absent, depth, tampered proofs, stale tips.

use xirtam_lightclient::{Config, Error, LightClient, SourceStatus};
use xirtam_proofs::REGTEST;

use crate::mock::{MockChain, MockSource, Mode, name, record, shared};

fn config(depth: u64) -> Config {
    let mut c = Config::new(&REGTEST);
    c.depth = depth;
    c
}

#[tokio::test]
async fn found_absent_and_depth() {
    let mut c = MockChain::recent();
    c.blocks(5);
    c.block(&[(name("@alice"), record(1, "v1"))]);
    c.blocks(10);
    let c = shared(c);
    let lc = LightClient::new(
        config(3),
        vec![
            MockSource::new("a", &c, Mode::Honest),
            MockSource::new("b", &c, Mode::Honest),
        ],
    )
    .expect("client");

    let v = lc.resolve(&name("@alice")).await.expect("resolve");
    assert_eq!(v.record(), Some(&record(1, "v1")));
    assert_eq!(v.height(), 16 - 3);
    assert_eq!(v.confirmations(), 4);
    assert_eq!(v.block_hash(), c.lock().expect("lock").headers[13].hash());

    let v = lc.resolve(&name("@bob")).await.expect("resolve");
    assert_eq!(v.record(), None, "absence proven");
    assert_eq!(v.name(), &name("@bob"));

    // Updated in the tip: with depth 3 the previous value is still the
    // confirmed one, until three more blocks bury it.
    c.lock()
        .expect("lock")
        .block(&[(name("@alice"), record(2, "v2"))]);
    lc.sync().await.expect("sync");
    let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert_eq!(v.value().record.as_ref().map(|r| r.nonce), Some(1));
    c.lock().expect("lock").blocks(3);
    lc.sync().await.expect("sync");
    let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert_eq!(v.record(), Some(&record(2, "v2")));
    assert_eq!(v.confirmations(), 4);
}

#[tokio::test]
async fn a_forged_record_is_never_returned() {
    let mut c = MockChain::recent();
    c.block(&[(name("@alice"), record(1, "real"))]);
    c.blocks(5);
    let c = shared(c);
    let lc = LightClient::new(
        config(1),
        vec![
            MockSource::new("forger", &c, Mode::FlipRecords),
            MockSource::new("honest", &c, Mode::Honest),
        ],
    )
    .expect("client");
    for n in ["@alice", "@nobody"] {
        let v = lc.resolve(&name(n)).await.expect("resolve");
        assert_eq!(v.source(), "honest");
        if n == "@alice" {
            assert_eq!(v.record(), Some(&record(1, "real")));
        } else {
            assert_eq!(v.record(), None);
        }
    }
    assert!(
        matches!(&lc.sources()[0].status, SourceStatus::Faulty(w) if w.contains("does not verify"))
    );

    // The forger alone: an error, never the forged record.
    let lc = LightClient::new(
        config(1),
        vec![MockSource::new("forger", &c, Mode::FlipRecords)],
    )
    .expect("client");
    let e = lc.resolve(&name("@alice")).await.expect_err("forged");
    assert!(matches!(e, Error::AllSourcesFaulty(_)), "{e}");
    let e = lc.resolve(&name("@alice")).await.expect_err("still faulty");
    assert!(matches!(e, Error::AllSourcesFaulty(_)), "{e}");
}

#[tokio::test]
async fn not_enough_confirmations_and_stale_tips() {
    let mut c = MockChain::recent();
    c.blocks(2);
    let c = shared(c);
    let lc =
        LightClient::new(config(3), vec![MockSource::new("a", &c, Mode::Honest)]).expect("client");
    let e = lc.resolve(&name("@alice")).await.expect_err("too short");
    assert!(
        matches!(
            e,
            Error::NotEnoughConfirmations {
                tip_height: 2,
                depth: 3
            }
        ),
        "{e}"
    );

    // Blocks stamped in early 2026: far older than ten intervals.
    let mut old = MockChain::new(REGTEST.genesis_time + 1);
    old.blocks(5);
    let old = shared(old);
    let lc = LightClient::new(config(1), vec![MockSource::new("a", &old, Mode::Honest)])
        .expect("client");
    let e = lc.resolve(&name("@alice")).await.expect_err("stale");
    assert!(matches!(e, Error::StaleTip { tip_height: 5, .. }), "{e}");
    assert!(e.to_string().contains("eclipse"), "{e}");
    let mut cfg = config(1);
    cfg.allow_stale = true;
    let lc = LightClient::new(cfg, vec![MockSource::new("a", &old, Mode::Honest)]).expect("client");
    let v = lc.resolve(&name("@alice")).await.expect("allowed");
    assert!(v.tip_age_secs() > 1_000_000);
}
