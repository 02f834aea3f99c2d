//! Header sync: fork choice, faulty sources, persistence, checkpoints.

use xirtam_lightclient::client::STRIKES_TO_FAULT;
use xirtam_lightclient::{Config, Error, LightClient, SourceStatus};
use xirtam_proofs::REGTEST;

use crate::mock::{MockChain, MockSource, Mode, name, now, record, shared, work_of};

fn config() -> Config {
    Config::new(&REGTEST)
}

#[tokio::test]
async fn follows_the_most_work_chain_and_ignores_a_lighter_fork() {
    let mut main = MockChain::recent();
    main.blocks(300);
    let mut fork = main.fork_at(100);
    fork.blocks(150); // height 250 < 300: less work
    let (main, fork) = (shared(main), shared(fork));
    // The fork is listed first; it must not matter.
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("fork", &fork, Mode::Honest),
            MockSource::new("main", &main, Mode::Honest),
        ],
    )
    .expect("client");
    let r = lc.sync().await.expect("sync");
    assert_eq!(r.to_height, 300);
    assert_eq!(
        lc.tip().hash,
        main.lock().expect("lock").headers[300].hash()
    );
    assert_eq!(lc.tip().work, work_of(&main));
    // The honest fork source is not faulty, only behind.
    assert!(lc.sources().iter().all(|s| s.status == SourceStatus::Ok));
}

#[tokio::test]
async fn reorgs_when_another_branch_gets_heavier() {
    let mut a = MockChain::recent();
    a.blocks(200);
    let mut b = a.fork_at(150);
    b.blocks(40); // 190: lighter for now
    let (a, b) = (shared(a), shared(b));
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("a", &a, Mode::Honest),
            MockSource::new("b", &b, Mode::Honest),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 200);
    b.lock().expect("lock").blocks(30); // 220: heavier
    let r = lc.sync().await.expect("sync");
    assert!(r.reorged);
    assert_eq!(lc.tip().height, 220);
    assert_eq!(lc.tip().hash, b.lock().expect("lock").headers[220].hash());
}

#[tokio::test]
async fn tampered_headers_are_refused_and_the_honest_source_used() {
    let mut c = MockChain::recent();
    c.blocks(100);
    let c = shared(c);
    // Same claimed tip: the tie goes to the first configured, the tamperer.
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("tamper", &c, Mode::FlipHeaders),
            MockSource::new("honest", &c, Mode::Honest),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 100);
    let s = lc.sources();
    assert!(
        matches!(&s[0].status, SourceStatus::Faulty(w) if w.contains("invalid header")),
        "{:?}",
        s[0].status
    );
    assert_eq!(s[1].status, SourceStatus::Ok);
}

#[tokio::test]
async fn a_tampering_source_alone_gives_an_error_not_a_chain() {
    let mut c = MockChain::recent();
    c.blocks(50);
    let c = shared(c);
    let lc = LightClient::new(
        config(),
        vec![MockSource::new("tamper", &c, Mode::FlipHeaders)],
    )
    .expect("client");
    let e = lc.sync().await.expect_err("must fail");
    assert!(matches!(e, Error::AllSourcesFaulty(_)), "{e}");
    assert!(e.to_string().contains("tamper"), "{e}");
    assert_eq!(lc.tip().height, 0, "nothing adopted");
}

#[tokio::test]
async fn a_source_lying_about_its_work_is_caught() {
    let mut c = MockChain::recent();
    c.blocks(120);
    let c = shared(c);
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("honest", &c, Mode::Honest),
            MockSource::new("liar", &c, Mode::LieWork),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    let s = lc.sources();
    assert_eq!(lc.tip().work, work_of(&c));
    assert!(
        matches!(&s[1].status, SourceStatus::Faulty(w) if w.contains("add up")),
        "{:?}",
        s[1].status
    );
    assert_eq!(s[0].status, SourceStatus::Ok);
}

#[tokio::test]
async fn other_network_and_unreachable_sources() {
    let mut c = MockChain::recent();
    c.blocks(10);
    let c = shared(c);
    let lc =
        LightClient::new(config(), vec![MockSource::new("down", &c, Mode::Down)]).expect("client");
    assert!(matches!(lc.sync().await, Err(Error::NoSourceReachable(_))));
    let lc = LightClient::new(
        config(),
        vec![MockSource::new("other", &c, Mode::OtherNetwork)],
    )
    .expect("client");
    let e = lc.sync().await.expect_err("other network");
    assert!(e.to_string().contains("another network"), "{e}");
    assert!(matches!(
        LightClient::<MockSource>::new(config(), vec![]),
        Err(Error::NoSources)
    ));
}

#[tokio::test]
async fn a_restart_resumes_from_the_store_without_downloading_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = MockChain::recent();
    c.blocks(3000);
    let c = shared(c);
    let mut cfg = config();
    cfg.datadir = Some(dir.path().to_owned());
    let src = MockSource::new("honest", &c, Mode::Honest);
    let lc = LightClient::new(cfg.clone(), vec![src]).expect("client");
    lc.sync().await.expect("sync");
    let first = lc.bytes_received();
    assert!(first > 3000 * 323, "downloaded {first} bytes");
    drop(lc);

    c.lock().expect("lock").blocks(5);
    let lc =
        LightClient::new(cfg, vec![MockSource::new("honest", &c, Mode::Honest)]).expect("client");
    assert_eq!(lc.load_report().loaded, 3000);
    assert_eq!(lc.tip().height, 3000, "resumed before any request");
    let r = lc.sync().await.expect("sync");
    assert_eq!((r.from_height, r.to_height, r.headers), (3000, 3005, 5));
    let second = lc.bytes_received();
    assert!(second < 5_000, "second sync downloaded {second} bytes");
}

#[tokio::test]
async fn a_checkpoint_skips_the_history() {
    let mut c = MockChain::recent();
    c.blocks(2500);
    let c = shared(c);
    let full =
        LightClient::new(config(), vec![MockSource::new("a", &c, Mode::Honest)]).expect("client");
    full.sync().await.expect("sync");
    let cp = full.checkpoint().expect("a settled, fresh chain");
    assert_eq!(cp.state.tip_height, 2500 - REGTEST.confirmation_depth);
    assert_eq!(
        xirtam_lightclient::Checkpoint::from_hex(&cp.to_hex()).expect("round trip"),
        cp
    );
    c.lock().expect("lock").blocks(10);

    let mut cfg = config();
    cfg.checkpoint = Some(cp.clone());
    let src = MockSource::new("b", &c, Mode::Honest);
    let lc = LightClient::new(cfg, vec![src]).expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 2510);
    assert_eq!(lc.tip().work, work_of(&c));
    assert!(
        lc.bytes_received() < 10_000,
        "{} bytes",
        lc.bytes_received()
    );

    // A source whose chain does not contain the checkpoint is faulty.
    let other = shared({
        let mut o = MockChain::new(crate::mock::now() - 60_000);
        o.blocks(2600);
        o
    });
    let mut cfg = config();
    cfg.checkpoint = Some(cp);
    let lc = LightClient::new(cfg, vec![MockSource::new("other", &other, Mode::Honest)])
        .expect("client");
    let e = lc.sync().await.expect_err("not our chain");
    assert!(e.to_string().contains("checkpoint"), "{e}");
}

/// Regtest with the network's minimum chain work and checkpoint replaced.
fn params_with(
    min_chain_work: xirtam_proofs::U256,
    assume_valid: Option<xirtam_proofs::params::Checkpoint>,
) -> Config {
    Config::new(Box::leak(Box::new(xirtam_proofs::params::Params {
        min_chain_work,
        assume_valid,
        ..REGTEST
    })))
}

#[tokio::test]
async fn a_chain_below_the_minimum_work_is_not_adopted() {
    let mut c = MockChain::recent();
    c.blocks(50);
    let heavier = c.clone();
    let short = shared(c);
    let mut long = heavier;
    long.blocks(50);
    let long = shared(long);
    // The network's minimum is above what the short chain holds.
    let min = work_of(&short) + xirtam_proofs::U256::from(1u64);
    let lc = LightClient::new(
        params_with(min, None),
        vec![MockSource::new("short", &short, Mode::Honest)],
    )
    .expect("client");
    let e = lc.sync().await.expect_err("no chain meets the minimum");
    assert!(matches!(e, Error::BelowMinimumWork { .. }), "{e}");
    assert_eq!(
        lc.tip().height,
        0,
        "a chain below the minimum is not adopted"
    );
    let e = lc
        .resolve(&name("@alice"))
        .await
        .expect_err("an error, not an answer from the eclipse chain");
    assert!(matches!(e, Error::BelowMinimumWork { .. }), "{e}");
    // A chain that meets it is.
    let lc = LightClient::new(
        params_with(min, None),
        vec![MockSource::new("long", &long, Mode::Honest)],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 100);
}

/// A regtest variant where difficulty matters: ~64 hashes a block, one
/// block a second, a 10 s half-life, genesis `genesis_age` seconds ago.
fn schedule_params(genesis_age: u64) -> &'static xirtam_proofs::params::Params {
    use xirtam_proofs::params::target_for_zero_bits;
    use xirtam_proofs::pow::CompactTarget;
    let mut p = xirtam_proofs::params::Params {
        genesis_time: now() - genesis_age,
        genesis_bits: CompactTarget::from_target(target_for_zero_bits(6)),
        block_interval: 1,
        asert_half_life: 10,
        ..REGTEST
    };
    p.genesis_hash = p.genesis_header().hash();
    Box::leak(Box::new(p))
}

#[tokio::test]
async fn an_eclipse_chain_with_fresh_timestamps_but_behind_schedule_is_stale() {
    // Genesis 1,000 s ago: the network's chain holds ~1,000 blocks. Its
    // first 10 (a second apart from genesis on) are the history an
    // attacker forks from; 20 more stamped with the wall clock give the
    // fork fresh timestamps, but it is ~970 s behind the schedule set by
    // block 1, so its difficulty fell to the network's limit: 64x easier
    // than the anchor.
    let params = schedule_params(1000);
    let mut eclipse = MockChain::on(params, Some(params.genesis_time + 1));
    eclipse.blocks(10);
    eclipse.next_time = None;
    eclipse.blocks(20);
    let eclipse = shared(eclipse);
    let lc = LightClient::new(
        Config::new(params),
        vec![MockSource::new("eclipse", &eclipse, Mode::Honest)],
    )
    .expect("client");
    let e = lc
        .resolve(&name("@alice"))
        .await
        .expect_err("stale by work");
    assert!(
        matches!(
            e,
            Error::StaleWork {
                drop: 64,
                max_drop: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        matches!(lc.checkpoint(), Err(Error::StaleWork { .. })),
        "nor exported as a checkpoint"
    );

    // A chain on schedule (genesis 40 s ago, 40 blocks a second apart) is
    // live: same timestamps at its tip, but it did the work.
    let params = schedule_params(40);
    let mut live = MockChain::on(params, Some(params.genesis_time + 1));
    live.blocks(40);
    let live = shared(live);
    let lc = LightClient::new(
        Config::new(params),
        vec![MockSource::new("live", &live, Mode::Honest)],
    )
    .expect("client");
    let v = lc.resolve(&name("@alice")).await.expect("a live chain");
    assert_eq!(v.tip_height(), 40);
}

#[tokio::test]
async fn a_heavier_branch_that_misses_the_checkpoint_is_refused() {
    let mut main = MockChain::recent();
    main.blocks(300);
    let mut fork = main.fork_at(100);
    fork.blocks(250); // height 350: more work than main
    let at_200 = main.headers[200];
    let (main, fork) = (shared(main), shared(fork));
    let cp = xirtam_proofs::params::Checkpoint {
        height: 200,
        hash: at_200.hash(),
    };
    let lc = LightClient::new(
        params_with(xirtam_proofs::U256::zero(), Some(cp)),
        vec![
            MockSource::new("fork", &fork, Mode::Honest),
            MockSource::new("main", &main, Mode::Honest),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 300, "the chain through the checkpoint");
    let s = lc.sources();
    assert!(
        matches!(&s[0].status, SourceStatus::Faulty(w) if w.contains("checkpoint")),
        "{:?}",
        s[0].status
    );
    // Without the checkpoint the heavier fork wins (what it guards).
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("fork", &fork, Mode::Honest),
            MockSource::new("main", &main, Mode::Honest),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 350);
}

/// The attack of a tampering proxy in front of an attacker's node: the
/// attacker's own short chain binds `@alice` to "forged", and the proxy
/// claims the most work there is, then refuses every header. The honest
/// source (listed second) must win every sync, the forged value must never
/// be returned, and the liar becomes faulty after its strikes.
#[tokio::test]
async fn a_source_claiming_maximal_work_then_refusing_headers_cannot_stall_sync() {
    let mut honest = MockChain::recent();
    honest.block(&[(name("@alice"), record(1, "honest"))]);
    honest.blocks(61);
    let mut forged = MockChain::recent().fork_at(0);
    forged.block(&[(name("@alice"), record(1, "forged"))]);
    forged.blocks(5);
    let (honest, forged) = (shared(honest), shared(forged));
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("liar", &forged, Mode::ClaimMaxThenRefuse),
            MockSource::new("honest", &honest, Mode::Honest),
        ],
    )
    .expect("client");
    for round in 0..STRIKES_TO_FAULT {
        let r = lc.sync().await.expect("sync");
        assert_eq!(r.to_height, 62, "round {round}: the honest tip");
        let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
        assert_eq!(
            v.value()
                .record
                .as_ref()
                .map(|r| r.value.as_bytes().to_vec()),
            Some(b"honest".to_vec()),
            "round {round}"
        );
    }
    let liar = &lc.sources()[0];
    assert!(
        matches!(&liar.status, SourceStatus::Faulty(w) if w.contains("strikes")),
        "{:?}",
        liar.status
    );
}

/// A source that answers slowly, listed first, costs one timeout: the sync
/// ends within twice the timeout, and the bytes received are at most 1.1
/// times what the chain's headers weigh.
#[tokio::test]
async fn a_slow_source_listed_first_costs_at_most_one_timeout() {
    let mut c = MockChain::new(1_700_000_000);
    c.blocks(4000);
    let c = shared(c);
    let mut cfg = config();
    cfg.timeout = std::time::Duration::from_millis(400);
    cfg.allow_stale = true;
    let lc = LightClient::new(
        cfg,
        vec![
            MockSource::new("slow", &c, Mode::Slow(3_000)),
            MockSource::new("honest", &c, Mode::Honest),
        ],
    )
    .expect("client");
    let started = std::time::Instant::now();
    let r = lc.sync().await.expect("sync");
    let took = started.elapsed();
    assert_eq!(r.to_height, 4000);
    assert!(
        took < std::time::Duration::from_millis(800),
        "took {took:?}"
    );
    let chain_bytes = 4000 * 323;
    let got = lc.bytes_received();
    assert!(
        got * 10 <= chain_bytes * 11,
        "received {got} bytes for {chain_bytes} bytes of headers"
    );
}

/// A checkpoint is exported only from a synced, fresh chain: a source
/// whose tip is old (an eclipse looks like this) gives an error, as does a
/// client that has not synced.
#[tokio::test]
async fn a_checkpoint_from_a_stale_chain_is_refused() {
    let mut old = MockChain::new(crate::mock::now() - 100_000);
    old.blocks(50);
    let old = shared(old);
    let mut cfg = config();
    cfg.allow_stale = true; // lookups may go on; checkpoints may not
    let lc =
        LightClient::new(cfg, vec![MockSource::new("old", &old, Mode::Honest)]).expect("client");
    assert!(
        matches!(lc.checkpoint(), Err(Error::NoCheckpoint(_))),
        "not synced yet"
    );
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 50);
    let e = lc.checkpoint().expect_err("stale");
    assert!(matches!(e, Error::StaleTip { .. }), "{e}");
}

/// A checkpoint made on one network, given to a client of another, is a
/// configuration error named as such (not a fault of every source).
#[tokio::test]
async fn a_checkpoint_of_another_network_is_a_configuration_error() {
    let local = xirtam_lightclient::Checkpoint {
        genesis: xirtam_proofs::LOCAL.genesis_hash,
        state: xirtam_proofs::header::ChainState::genesis(&xirtam_proofs::LOCAL),
    };
    let mut cfg = config();
    cfg.checkpoint = Some(local);
    let c = shared(MockChain::recent());
    let Err(e) = LightClient::new(cfg, vec![MockSource::new("a", &c, Mode::Honest)]) else {
        panic!("a checkpoint of another network was accepted");
    };
    assert!(matches!(e, Error::CheckpointNetwork { .. }), "{e}");
    assert!(e.to_string().contains("--network"), "{e}");
}

/// Two clients on one data directory would interleave writes: the second
/// is refused with a message that says what to do.
#[tokio::test]
async fn a_second_client_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = shared(MockChain::recent());
    let mut cfg = config();
    cfg.datadir = Some(dir.path().to_owned());
    let first = LightClient::new(cfg.clone(), vec![MockSource::new("a", &c, Mode::Honest)])
        .expect("client");
    let Err(e) = LightClient::new(cfg.clone(), vec![MockSource::new("a", &c, Mode::Honest)]) else {
        panic!("a second client opened a locked data directory");
    };
    assert!(
        matches!(
            e,
            Error::Store(xirtam_lightclient::StoreError::Locked { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("another --datadir"), "{e}");
    drop(first);
    LightClient::new(cfg, vec![MockSource::new("a", &c, Mode::Honest)]).expect("lock released");
}

/// A source found faulty is remembered in the data directory: the next
/// run does not ask it again.
#[tokio::test]
async fn a_faulty_source_is_remembered_across_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = MockChain::recent();
    c.blocks(20);
    let c = shared(c);
    let mut cfg = config();
    cfg.datadir = Some(dir.path().to_owned());
    let run = |cfg: &Config| {
        LightClient::new(
            cfg.clone(),
            vec![
                MockSource::new("tamper", &c, Mode::FlipHeaders),
                MockSource::new("honest", &c, Mode::Honest),
            ],
        )
        .expect("client")
    };
    let lc = run(&cfg);
    lc.sync().await.expect("sync");
    assert!(matches!(lc.sources()[0].status, SourceStatus::Faulty(_)));
    drop(lc);
    let lc = run(&cfg);
    assert!(
        matches!(&lc.sources()[0].status, SourceStatus::Faulty(w) if w.contains("earlier run")),
        "{:?}",
        lc.sources()[0].status
    );
    lc.sync().await.expect("sync");
    assert_eq!(lc.sources()[0].bytes_received, 0, "not asked again");
}

/// One client shared by two tasks: while one task's sync waits on a source
/// that advertised the most work and then hangs, a lookup from the other
/// task answers at once from the chain verified so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_source_does_not_delay_lookups_from_another_task() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let mut c = MockChain::recent();
    c.block(&[(name("@alice"), record(1, "hello"))]);
    c.blocks(20);
    let c = shared(c);
    let mut cfg = config();
    cfg.timeout = Duration::from_secs(3);
    cfg.refresh = Duration::ZERO; // every lookup wants a sync
    let hang = MockSource::new("hang", &c, Mode::ClaimMaxThenHang);
    let lc = Arc::new(
        LightClient::new(cfg, vec![hang, MockSource::new("honest", &c, Mode::Honest)])
            .expect("client"),
    );
    // The first sync: the hanging source costs one timeout, then the
    // honest one is used.
    lc.sync().await.expect("sync");
    assert_eq!(lc.tip().height, 21);
    let calls = || lc.sources()[0].bytes_received;
    let before = calls();
    let syncing = tokio::spawn({
        let lc = lc.clone();
        async move { lc.sync().await }
    });
    // Wait (bounded) until the sync is stuck in the hanging request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls() == before {
        assert!(
            Instant::now() < deadline,
            "the sync never asked the hanging source"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let v = lc.resolve(&name("@alice")).await.expect("resolve");
    let took = started.elapsed();
    assert_eq!(
        v.value()
            .record
            .as_ref()
            .map(|r| r.value.as_bytes().to_vec()),
        Some(b"hello".to_vec())
    );
    assert!(took < Duration::from_secs(1), "the lookup waited {took:?}");
    assert!(!syncing.is_finished(), "the sync was still waiting");
    syncing.await.expect("join").expect("sync");
}

/// A source that sends fewer headers than asked while below the tip it
/// claimed is withholding: it gets a strike at its first short batch, and
/// the honest source finishes the sync.
#[tokio::test]
async fn a_source_that_drip_feeds_headers_is_struck() {
    let mut c = MockChain::recent();
    c.blocks(3000);
    let c = shared(c);
    let lc = LightClient::new(
        config(),
        vec![
            MockSource::new("drip", &c, Mode::Drip),
            MockSource::new("honest", &c, Mode::Honest),
        ],
    )
    .expect("client");
    let r = lc.sync().await.expect("sync");
    assert_eq!(r.to_height, 3000);
    let drip = &lc.sources()[0];
    assert!(
        matches!(&drip.status, SourceStatus::Unreachable(w) if w.contains("when 2000 were asked")),
        "{:?}",
        drip.status
    );
    assert!(drip.bytes_received < 5_000, "{} bytes", drip.bytes_received);
}

/// A source that advertises the chain and then does not answer lookups
/// gets a strike per lookup it stalls, and is asked after the others from
/// then on: only the first lookup pays its timeout.
#[tokio::test]
async fn a_source_that_stalls_lookups_is_struck_and_asked_last() {
    use std::time::{Duration, Instant};
    let mut c = MockChain::recent();
    c.block(&[(name("@alice"), record(1, "hello"))]);
    c.blocks(10);
    let c = shared(c);
    let mut cfg = config();
    cfg.timeout = Duration::from_millis(500);
    let lc = LightClient::new(
        cfg,
        vec![
            MockSource::new("stall", &c, Mode::HangLookups),
            MockSource::new("honest", &c, Mode::Honest),
        ],
    )
    .expect("client");
    lc.sync().await.expect("sync");
    let t = Instant::now();
    lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the first lookup waited for the staller"
    );
    let t = Instant::now();
    let v = lc.resolve_synced(&name("@alice")).await.expect("resolve");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "the second waited {:?}",
        t.elapsed()
    );
    assert_eq!(v.source(), "honest");
    assert!(
        matches!(&lc.sources()[0].status, SourceStatus::Unreachable(w) if w.contains("did not answer a lookup")),
        "{:?}",
        lc.sources()[0].status
    );
}
