//! In-memory chains and sources, honest or not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use xirtam_lightclient::{DirAnswer, Source, SourceError, TipClaim};
use xirtam_proofs::header::{ChainState, Header, header_template, mine};
use xirtam_proofs::op::{Owners, Record, Value};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{MemoryNodeStore, NodeRef, prove, update};
use xirtam_proofs::{Hash, Name, REGTEST, SecretKey, U256};

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

pub(crate) fn record(nonce: u64, value: &str) -> Record {
    Record {
        nonce,
        owners: Owners::single(SecretKey::from_seed([7; 32]).public()),
        value: Value::new(value.as_bytes().to_vec()).expect("small value"),
        claimed_at: 1,
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A regtest chain with a real state tree.
#[derive(Clone)]
pub(crate) struct MockChain {
    pub(crate) headers: Vec<Header>,
    pub(crate) states: Vec<ChainState>,
    store: MemoryNodeStore,
    records: HashMap<Hash, Record>,
    /// Timestamp of the next block (`None`: the wall clock).
    pub(crate) next_time: Option<u64>,
    /// Where the nonce search starts (forks differ by it).
    nonce_start: u64,
    /// The network (regtest unless made with [`MockChain::on`]).
    pub(crate) params: &'static Params,
}

impl MockChain {
    /// Genesis only; blocks will be stamped from `start_time` on, one
    /// second apart.
    pub(crate) fn new(start_time: u64) -> Self {
        Self::on(&REGTEST, Some(start_time))
    }

    /// Genesis of `params`; blocks stamped from `start_time` on, one
    /// second apart, or with the wall clock (`None`).
    pub(crate) fn on(params: &'static Params, start_time: Option<u64>) -> Self {
        MockChain {
            headers: vec![params.genesis_header()],
            states: vec![ChainState::genesis(params)],
            store: MemoryNodeStore::new(),
            records: HashMap::new(),
            next_time: start_time,
            nonce_start: 0,
            params,
        }
    }

    /// A chain whose blocks are stamped with the wall clock (the
    /// median-time-past rule may push them a little ahead).
    pub(crate) fn recent() -> Self {
        MockChain {
            next_time: None,
            ..MockChain::new(0)
        }
    }

    pub(crate) fn tip_state(&self) -> &ChainState {
        self.states.last().expect("genesis")
    }

    /// Mine one block writing `writes`.
    pub(crate) fn block(&mut self, writes: &[(Name, Record)]) {
        let state = self.tip_state().clone();
        let root = self.headers.last().expect("genesis").state_root;
        let updates: Vec<(Hash, Hash)> = writes
            .iter()
            .map(|(n, r)| (n.key_hash(), r.hash()))
            .collect();
        // The memory store finds nodes by hash alone: versions are 0.
        let (root, nodes) =
            update(&self.store, NodeRef::new(root, 0), 0, &updates).expect("tree update");
        let root = root.hash;
        self.store.insert_batch(nodes);
        for (_, r) in writes {
            self.records.insert(r.hash(), r.clone());
        }
        let time = self
            .next_time
            .unwrap_or_else(now)
            .max(state.median_time_past() + 1);
        if let Some(t) = &mut self.next_time {
            *t = time + 1;
        }
        let mut h = header_template(self.params, &state, time);
        h.state_root = root;
        assert!(
            mine(&mut h, self.nonce_start, 1 << 24),
            "a test block mines"
        );
        let mut next = state;
        next.push(self.params, &h, u64::MAX).expect("valid block");
        self.headers.push(h);
        self.states.push(next);
    }

    /// Mine `n` empty blocks.
    pub(crate) fn blocks(&mut self, n: usize) {
        for _ in 0..n {
            self.block(&[]);
        }
    }

    /// The chain cut back to `height` (to grow a fork from).
    pub(crate) fn fork_at(&self, height: u64) -> MockChain {
        let mut c = self.clone();
        c.headers.truncate(height as usize + 1);
        c.states.truncate(height as usize + 1);
        // Other nonces make the fork's blocks differ from ours.
        c.nonce_start += 1 << 32;
        c
    }

    fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        let h = self.headers.get(at as usize).ok_or(SourceError::Rpc {
            code: xirtam_node_api::code::NOT_FOUND,
            message: "height above the tip".into(),
        })?;
        let (value, proof) =
            prove(&self.store, NodeRef::new(h.state_root, 0), &name.key_hash()).expect("prove");
        Ok(DirAnswer {
            height: at,
            block_hash: h.hash(),
            record: value.map(|v| self.records[&v].clone()),
            proof,
        })
    }
}

/// How a [`MockSource`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Honest,
    /// Flips a bit of every header's `prev` (but genesis).
    FlipHeaders,
    /// Answers `dir_get` with a changed record (or a fake one for an absent
    /// name).
    FlipRecords,
    /// Claims twice its tip's work.
    LieWork,
    /// Runs another network.
    OtherNetwork,
    /// Never answers.
    Down,
    /// Claims the most work there is for its tip, then refuses every
    /// header (a tampering proxy in front of an attacker's node).
    ClaimMaxThenRefuse,
    /// Answers everything correctly, each after this many milliseconds.
    Slow(u64),
    /// Claims the most work there is for its tip, then never answers a
    /// headers request.
    ClaimMaxThenHang,
    /// Sends one header per headers request, however many are asked.
    Drip,
    /// Never answers `dir_get`.
    HangLookups,
}

pub(crate) struct MockSource {
    pub(crate) label: String,
    pub(crate) chain: Arc<Mutex<MockChain>>,
    pub(crate) mode: Mode,
    bytes: AtomicU64,
    pub(crate) calls: AtomicU64,
}

impl MockSource {
    pub(crate) fn new(label: &str, chain: &Arc<Mutex<MockChain>>, mode: Mode) -> Self {
        MockSource {
            label: label.into(),
            chain: chain.clone(),
            mode,
            bytes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// Delay a slow source's answer (before anything is counted).
    async fn delay(&self) {
        if let Mode::Slow(ms) = self.mode {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    fn call(&self, bytes: u64) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.mode == Mode::Down {
            return Err(SourceError::Unreachable("connection refused".into()));
        }
        // Roughly what the JSON-RPC answer would weigh.
        self.bytes.fetch_add(200 + bytes, Ordering::Relaxed);
        Ok(())
    }
}

pub(crate) fn shared(c: MockChain) -> Arc<Mutex<MockChain>> {
    Arc::new(Mutex::new(c))
}

impl Source for MockSource {
    fn label(&self) -> &str {
        &self.label
    }

    async fn genesis(&self) -> Result<Hash, SourceError> {
        self.delay().await;
        self.call(100)?;
        Ok(if self.mode == Mode::OtherNetwork {
            xirtam_proofs::LOCAL.genesis_hash
        } else {
            self.chain.lock().expect("lock").params.genesis_hash
        })
    }

    async fn tip(&self) -> Result<TipClaim, SourceError> {
        self.delay().await;
        self.call(500)?;
        let c = self.chain.lock().expect("lock");
        let header = *c.headers.last().expect("genesis");
        let mut work = c.tip_state().total_work();
        if self.mode == Mode::LieWork {
            work = work + work;
        }
        if matches!(self.mode, Mode::ClaimMaxThenRefuse | Mode::ClaimMaxThenHang) {
            work = U256::MAX;
        }
        Ok(TipClaim {
            height: header.height,
            hash: header.hash(),
            work,
            header,
        })
    }

    async fn headers(&self, from: u64, count: u32) -> Result<Vec<Header>, SourceError> {
        self.delay().await;
        if self.mode == Mode::ClaimMaxThenHang {
            self.call(0)?;
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        if self.mode == Mode::ClaimMaxThenRefuse {
            self.call(100)?;
            return Err(SourceError::Rpc {
                code: xirtam_node_api::code::NOT_FOUND,
                message: "not found".into(),
            });
        }
        let c = self.chain.lock().expect("lock");
        let from = from as usize;
        let to = (from + count as usize).min(c.headers.len());
        let mut out = c.headers.get(from..to).unwrap_or_default().to_vec();
        if self.mode == Mode::Drip {
            out.truncate(1);
        }
        drop(c);
        self.call(323 * out.len() as u64)?;
        if self.mode == Mode::FlipHeaders {
            // Genesis is left alone so that the headers themselves fail.
            for h in out.iter_mut().filter(|h| h.height > 0) {
                h.prev.0[3] ^= 0x10;
            }
        }
        Ok(out)
    }

    async fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        self.delay().await;
        if self.mode == Mode::HangLookups {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        self.call(1500)?;
        let mut a = self.chain.lock().expect("lock").dir_get(name, at)?;
        if self.mode == Mode::FlipRecords {
            a.record = Some(match a.record {
                Some(r) => record(r.nonce, "forged"),
                None => record(1, "forged"),
            });
        }
        Ok(a)
    }

    fn bytes_received(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A work value for messages.
pub(crate) fn work_of(c: &Arc<Mutex<MockChain>>) -> U256 {
    c.lock().expect("lock").tip_state().total_work()
}
