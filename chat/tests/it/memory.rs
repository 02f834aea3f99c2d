//! An in-memory world for the client core: a chain (real headers and state
//! proofs, verified by a real light client) and concierge servers that keep
//! mailboxes in memory and sign real receipts. Servers can be taken down
//! and brought back (a restart), and report when a long-poll is open.
//!
//! The servers here trust a login's device signature without looking the
//! user's record up: they are test doubles of the transport, not of the
//! concierge's rules (`server.rs` and the testnet tests cover those).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use xirtam_chat::api::{self, code};
use xirtam_chat::client::connection::{Login, ReadFrom, Received};
use xirtam_chat::client::{CallError, Client, ClientConfig, Connector, ServerConn};
use xirtam_chat::crypto::MediumKey;
use xirtam_chat::records::{ServerRecord, UserRecord, VerifiedServer};
use xirtam_lightclient::memory::{MemoryChain, MemorySource};
use xirtam_lightclient::{Config, LightClient};
use xirtam_proofs::op::{Owners, Record, Value};
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::{Hash, Name, PublicKey, SecretKey, Signature};

pub(crate) type Dir = LightClient<MemorySource>;
pub(crate) type TestClient = Client<Dir, Servers>;

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

#[derive(Default)]
struct State {
    challenges: Vec<[u8; 32]>,
    tokens: HashMap<String, (Name, PublicKey)>,
    mailboxes: HashMap<Hash, Vec<(u64, Vec<u8>)>>,
    next_seq: HashMap<Hash, u64>,
    passes: HashMap<Name, Vec<Hash>>,
    keys: HashMap<Name, HashMap<PublicKey, Vec<u8>>>,
    /// Device-linking relay slots: both sides' messages.
    links: HashMap<Hash, [Vec<Vec<u8>>; 2]>,
    /// The last deposit: mailbox and sequence number.
    last: Option<(Hash, u64)>,
}

/// One concierge, in memory.
pub(crate) struct MemoryServer {
    name: Name,
    /// The chain, for the records logins are checked against.
    chain: Arc<Mutex<MemoryChain>>,
    key: SecretKey,
    down: AtomicBool,
    state: Mutex<State>,
    deposited: tokio::sync::Notify,
    /// Long-polls waiting now.
    pub(crate) open_polls: AtomicUsize,
    /// Signalled when a long-poll starts waiting.
    pub(crate) poll_opened: tokio::sync::Notify,
    /// Deposits taken.
    pub(crate) deposits: AtomicUsize,
}

impl MemoryServer {
    /// Take the server down (every call fails as unreachable) or bring it
    /// back; its mailboxes survive, as a restarted server's would.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        self.deposited.notify_waiters();
    }

    fn up(&self) -> Result<(), CallError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CallError::Unreachable(
                "connection refused (server down)".into(),
            ));
        }
        Ok(())
    }

    /// The user a token is for, while their record on the chain lists the
    /// token's device (a removed device's session ends at once).
    fn user_of(&self, token: &str) -> Result<Name, CallError> {
        self.up()?;
        let unauthorized = |m: &str| CallError::Refused {
            code: code::UNAUTHORIZED,
            message: m.into(),
        };
        let (user, device) = self
            .state
            .lock()
            .tokens
            .get(token)
            .cloned()
            .ok_or_else(|| unauthorized("unknown token"))?;
        if !self.lists(&user, &device) {
            return Err(unauthorized("the device is not in the user's record"));
        }
        Ok(user)
    }

    /// Whether `user`'s record on the chain lists `device`.
    fn lists(&self, user: &Name, device: &PublicKey) -> bool {
        self.chain
            .lock()
            .record(user)
            .and_then(|r| UserRecord::from_value(user, r.value.as_bytes()).ok())
            .is_some_and(|r| r.device(device).is_some())
    }

    /// Post `payload` to `side` of link slot `slot`, as anyone can.
    pub(crate) fn link_post_raw(&self, slot: &Hash, side: u8, payload: Vec<u8>) {
        self.state.lock().links.entry(*slot).or_default()[usize::from(side & 1)].push(payload);
        self.deposited.notify_waiters();
    }

    /// Deposit `envelope` into `user`'s requests lane, as a stranger can.
    pub(crate) fn deposit_raw(&self, user: &Name, envelope: Vec<u8>) {
        let mut st = self.state.lock();
        let mailbox = api::requests_id(user);
        let n = st.next_seq.entry(mailbox).or_insert(1);
        let seq = *n;
        *n += 1;
        st.mailboxes
            .entry(mailbox)
            .or_default()
            .push((seq, envelope));
        drop(st);
        self.deposited.notify_waiters();
    }

    /// Every envelope stored for `user` (both lanes).
    pub(crate) fn envelopes(&self, user: &Name) -> Vec<Vec<u8>> {
        let st = self.state.lock();
        [api::mailbox_id(user), api::requests_id(user)]
            .iter()
            .filter_map(|id| st.mailboxes.get(id))
            .flat_map(|m| m.iter().map(|(_, e)| e.clone()))
            .collect()
    }

    /// Drop the envelope deposited last, as a server that loses it
    /// would; returns whether there was one.
    pub(crate) fn drop_last(&self) -> bool {
        let mut st = self.state.lock();
        let Some((mailbox, seq)) = st.last.take() else {
            return false;
        };
        st.mailboxes.get_mut(&mailbox).is_some_and(|m| {
            m.iter()
                .position(|e| e.0 == seq)
                .map(|i| m.remove(i))
                .is_some()
        })
    }

    fn read(&self, from: &[ReadFrom]) -> Vec<Received> {
        let st = self.state.lock();
        from.iter()
            .map(|r| Received {
                mailbox: r.mailbox,
                envelopes: st
                    .mailboxes
                    .get(&r.mailbox)
                    .map(|m| m.iter().filter(|(s, _)| *s > r.after).cloned().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// The servers of a world, reached by the URL of their verified record.
#[derive(Clone, Default)]
pub(crate) struct Servers(Arc<Mutex<HashMap<String, Arc<MemoryServer>>>>);

/// A connection to a memory server.
pub(crate) struct MemoryConn {
    label: String,
    server: Arc<MemoryServer>,
}

impl Connector for Servers {
    type Conn = MemoryConn;

    fn connect(&self, server: &VerifiedServer, _: Duration) -> Result<MemoryConn, CallError> {
        let url = server.record().urls.first().cloned().unwrap_or_default();
        let s = self
            .0
            .lock()
            .get(&url)
            .cloned()
            .ok_or_else(|| CallError::Unreachable(format!("nothing at {url}")))?;
        Ok(MemoryConn {
            label: url,
            server: s,
        })
    }
}

impl ServerConn for MemoryConn {
    fn label(&self) -> &str {
        &self.label
    }

    async fn server_info(&self) -> Result<api::ServerInfo, CallError> {
        self.server.up()?;
        Ok(api::ServerInfo {
            name: self.server.name.to_string(),
            key: self.server.key.public().to_hex(),
            network: REGTEST.name.to_string(),
            version: "memory".into(),
            registered_at: Some(1),
            postage_bits: 0,
            postage_window: 100,
        })
    }

    async fn auth_challenge(&self, _user: &Name) -> Result<[u8; 32], CallError> {
        self.server.up()?;
        let mut c = [0u8; 32];
        getrandom::fill(&mut c).map_err(|e| CallError::Unreachable(e.to_string()))?;
        self.server.state.lock().challenges.push(c);
        Ok(c)
    }

    async fn auth_login(
        &self,
        user: &Name,
        device: &PublicKey,
        challenge: &[u8; 32],
        sig: &Signature,
    ) -> Result<Login, CallError> {
        self.server.up()?;
        let refused = |m: &str| CallError::Refused {
            code: code::UNAUTHORIZED,
            message: m.into(),
        };
        let mut st = self.server.state.lock();
        let i = st
            .challenges
            .iter()
            .position(|c| c == challenge)
            .ok_or_else(|| refused("unknown challenge"))?;
        st.challenges.swap_remove(i);
        device
            .verify(
                api::AUTH_TAG,
                &api::auth_payload(&self.server.name, user, challenge),
                sig,
            )
            .map_err(|_| refused("bad signature"))?;
        drop(st);
        if !self.server.lists(user, device) {
            return Err(refused("the device is not in the user's record"));
        }
        let token = hex::encode(challenge);
        let mut st = self.server.state.lock();
        st.tokens.insert(token.clone(), (user.clone(), *device));
        Ok(Login {
            token,
            valid: Duration::from_secs(3600),
        })
    }

    async fn mailbox_create(&self, token: &str) -> Result<(), CallError> {
        self.server.user_of(token).map(drop)
    }

    async fn mailbox_passes(&self, token: &str, add: &[Hash]) -> Result<(), CallError> {
        let user = self.server.user_of(token)?;
        let mut st = self.server.state.lock();
        st.passes.entry(user).or_default().extend_from_slice(add);
        Ok(())
    }

    async fn mailbox_deposit(
        &self,
        to: &Name,
        envelope: &[u8],
        pass: Option<&[u8; 32]>,
        _postage: Option<api::Postage>,
    ) -> Result<api::Receipt, CallError> {
        self.server.up()?;
        let mut st = self.server.state.lock();
        let mailbox = match pass {
            Some(p) => {
                let ok = st
                    .passes
                    .get(to)
                    .is_some_and(|ps| ps.contains(&api::pass_hash(p)));
                if !ok {
                    return Err(CallError::Refused {
                        code: code::PASS_REFUSED,
                        message: "pass refused".into(),
                    });
                }
                api::mailbox_id(to)
            }
            None => api::requests_id(to),
        };
        let seq = {
            let n = st.next_seq.entry(mailbox).or_insert(1);
            *n += 1;
            *n - 1
        };
        st.mailboxes
            .entry(mailbox)
            .or_default()
            .push((seq, envelope.to_vec()));
        st.last = Some((mailbox, seq));
        drop(st);
        self.server.deposits.fetch_add(1, Ordering::SeqCst);
        self.server.deposited.notify_waiters();
        let leaf = api::receipt_leaf(
            &self.server.name,
            &mailbox,
            seq,
            &api::envelope_hash(envelope),
        );
        let sig = self.server.key.sign(
            api::RECEIPT_ROOT_TAG,
            &api::receipt_root_payload(&self.server.name, &leaf),
        );
        Ok(api::Receipt {
            mailbox: mailbox.to_hex(),
            seq,
            sig: hex::encode(sig.0),
            path: Vec::new(),
        })
    }

    async fn mailbox_receive(
        &self,
        token: &str,
        from: &[ReadFrom],
        wait: Duration,
    ) -> Result<Vec<Received>, CallError> {
        self.server.user_of(token)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.server.deposited.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.server.up()?;
            let got = self.server.read(from);
            if got.iter().any(|r| !r.envelopes.is_empty()) {
                return Ok(got);
            }
            self.server.open_polls.fetch_add(1, Ordering::SeqCst);
            self.server.poll_opened.notify_waiters();
            let woke = tokio::time::timeout_at(deadline, notified).await;
            self.server.open_polls.fetch_sub(1, Ordering::SeqCst);
            if woke.is_err() {
                return Ok(got);
            }
        }
    }

    async fn mailbox_ack(
        &self,
        token: &str,
        _mailbox: &Hash,
        _up_to: u64,
    ) -> Result<(), CallError> {
        self.server.user_of(token).map(drop)
    }

    async fn keys_publish(&self, token: &str, key: &MediumKey) -> Result<(), CallError> {
        let user = self.server.user_of(token)?;
        self.server
            .state
            .lock()
            .keys
            .entry(user)
            .or_default()
            .insert(key.device, xirtam_proofs::encode(key));
        Ok(())
    }

    async fn keys_fetch(&self, user: &Name) -> Result<Vec<Vec<u8>>, CallError> {
        self.server.up()?;
        Ok(self
            .server
            .state
            .lock()
            .keys
            .get(user)
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn link_post(&self, slot: &Hash, side: u8, payload: &[u8]) -> Result<(), CallError> {
        self.server.up()?;
        self.server.state.lock().links.entry(*slot).or_default()[usize::from(side & 1)]
            .push(payload.to_vec());
        self.server.deposited.notify_waiters();
        Ok(())
    }

    async fn link_read(
        &self,
        slot: &Hash,
        side: u8,
        after: u32,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, CallError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.server.deposited.notified();
            self.server.up()?;
            let got: Vec<Vec<u8>> = self
                .server
                .state
                .lock()
                .links
                .get(slot)
                .map(|s| {
                    s[usize::from(side & 1)]
                        .iter()
                        .skip(after as usize)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !got.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(got);
            }
        }
    }
}

/// A chain, servers, and clients over them, in one process.
pub(crate) struct World {
    pub(crate) chain: Arc<Mutex<MemoryChain>>,
    pub(crate) servers: Servers,
    pub(crate) tmp: tempfile::TempDir,
}

fn record(owner: &SecretKey, value: Vec<u8>, nonce: u64) -> Record {
    Record {
        nonce,
        owners: Owners::single(owner.public()),
        value: Value::new(value).expect("a small record"),
        claimed_at: 1,
    }
}

impl World {
    /// A chain with the servers `names` (`~s1`...) registered.
    pub(crate) fn new(names: &[&str]) -> World {
        let owner = SecretKey::from_seed([9; 32]);
        let chain = Arc::new(Mutex::new(MemoryChain::new(&REGTEST)));
        let servers = Servers::default();
        let mut writes = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let key = SecretKey::from_seed([i as u8 + 1; 32]);
            let url = format!("http://127.0.0.1:1/{}", &n[1..]);
            let value = ServerRecord {
                key: key.public(),
                urls: vec![url.clone()],
            }
            .to_value()
            .expect("valid server record");
            writes.push((name(n), record(&owner, value, 0)));
            servers.0.lock().insert(
                url,
                Arc::new(MemoryServer {
                    name: name(n),
                    chain: chain.clone(),
                    key,
                    down: AtomicBool::new(false),
                    state: Mutex::new(State::default()),
                    deposited: tokio::sync::Notify::new(),
                    open_polls: AtomicUsize::new(0),
                    poll_opened: tokio::sync::Notify::new(),
                    deposits: AtomicUsize::new(0),
                }),
            );
        }
        chain.lock().block(&writes).expect("a block");
        World {
            chain,
            servers,
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The server named `n`.
    pub(crate) fn server(&self, n: &str) -> Arc<MemoryServer> {
        self.servers
            .0
            .lock()
            .values()
            .find(|s| s.name.to_string() == n)
            .cloned()
            .expect("a server of this world")
    }

    fn directory(&self) -> Dir {
        let mut config = Config::new(&REGTEST);
        config.depth = 0;
        // Every lookup sees the newest block (the tests mine, then look).
        config.refresh = Duration::ZERO;
        LightClient::new(
            config,
            vec![MemorySource::new("memory", self.chain.clone())],
        )
        .expect("a light client")
    }

    fn config() -> ClientConfig {
        let mut c = ClientConfig::new(&REGTEST, Vec::new());
        c.confirm_timeout = Duration::from_secs(10);
        c
    }

    /// A client with a fresh identity in `dir` (not registered).
    pub(crate) fn device(&self, dir: &str) -> TestClient {
        Client::init_with(
            &self.tmp.path().join(dir),
            Self::config(),
            self.directory(),
            self.servers.clone(),
        )
        .expect("a new identity")
    }

    /// The client in `dir` again (a restart), with its settings changed by
    /// `f`.
    pub(crate) fn reopen_with(&self, dir: &str, f: impl FnOnce(&mut ClientConfig)) -> TestClient {
        let mut config = Self::config();
        f(&mut config);
        Client::open_with(
            &self.tmp.path().join(dir),
            config,
            self.directory(),
            self.servers.clone(),
        )
        .expect("the identity")
    }

    /// Write `user`'s record (on `server`, listing `devices`, owned by the
    /// first one's root key) and mine it.
    pub(crate) fn publish(&self, user: &str, server: &str, devices: &[&TestClient]) {
        let listed: Vec<_> = devices.iter().map(|d| d.device()).collect();
        self.publish_devices(user, server, devices[0], listed);
    }

    /// Write `user`'s record listing `devices` (on `server`, owned by
    /// `owner`'s root key) and mine it.
    pub(crate) fn publish_devices(
        &self,
        user: &str,
        server: &str,
        owner: &TestClient,
        devices: Vec<xirtam_chat::records::Device>,
    ) {
        let root = std::fs::read_to_string(owner.root_key_path()).expect("root key file");
        let seed: [u8; 32] = hex::decode(root.trim())
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let owner = SecretKey::from_seed(seed);
        let value = UserRecord {
            server: name(server),
            devices,
        }
        .to_value()
        .expect("valid user record");
        let mut chain = self.chain.lock();
        let nonce = chain.record(&name(user)).map_or(0, |r| r.nonce + 1);
        chain
            .block(&[(name(user), record(&owner, value, nonce))])
            .expect("a block");
    }

    /// `user` with `n` devices on `server`, each logged in.
    pub(crate) async fn user(&self, user: &str, server: &str, n: usize) -> Vec<TestClient> {
        let devices: Vec<TestClient> = (0..n)
            .map(|i| self.device(&format!("{}-{i}", &user[1..])))
            .collect();
        self.publish(user, server, &devices.iter().collect::<Vec<_>>());
        for d in &devices {
            d.join(&name(user)).await.expect("join");
        }
        devices
    }
}
