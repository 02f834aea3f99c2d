//! The verified header chain, in memory and in one file on disk.
//!
//! The chain starts at a trusted *base*: the network's genesis, or a
//! checkpoint (a [`ChainState`], which carries height, hash, cumulative work,
//! difficulty anchor, recent timestamps and the history peaks). Above the
//! base it holds every header up to the verified tip.
//!
//! File layout (`<datadir>/headers.dat`, integers little-endian):
//!
//! ```text
//! "XLCHDRS1"  genesis hash (32)  base length (u32)  base ChainState (canonical bytes)
//! header at base+1 (160)  header at base+2 (160)  ...
//! ```
//!
//! Headers are only appended (or the file truncated to a fork point on a
//! reorg) and every write is followed by `fsync`. On open every stored
//! header is verified again from the base: the file is untrusted input like
//! any other, and a torn or corrupt tail is cut off (then synced again from
//! the sources). Verifying is ~2 µs a header, so this costs little.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xirtam_proofs::header::{ChainState, HEADER_LEN, Header, HeaderChainError};
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, U256, decode, encode, validate_header_chain};

const MAGIC: &[u8; 8] = b"XLCHDRS1";
/// File name inside the data directory.
pub(crate) const FILE_NAME: &str = "headers.dat";
/// Lock file inside the data directory.
const LOCK_NAME: &str = "LOCK";
/// A [`ChainState`] is kept every this many heights, so that rolling back to
/// a fork point replays at most this many headers.
const SNAPSHOT_EVERY: u64 = 1000;
/// Headers verified per read when a store is opened.
const LOAD_CHUNK: usize = 4096;
/// Largest base (checkpoint) accepted from the file.
const MAX_BASE_BYTES: u32 = 16 * 1024;
/// Replaying headers that were verified before: the future-drift rule only
/// gets easier with time, so the clock does not matter.
const REPLAY_NOW: u64 = u64::MAX;

/// The header store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("header store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or client) has the data directory open.
    #[error(
        "data directory {path} is in use by another light client (xirtam-lc or xirtam-lc serve); stop it or use another --datadir"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The file belongs to another network.
    #[error("header store {path} is for another network (genesis {found}); use another --datadir")]
    WrongNetwork {
        /// The file.
        path: PathBuf,
        /// Genesis hash in the file.
        found: Hash,
    },
    /// The file is not a header store.
    #[error("{path} is not a light-client header store: {reason}")]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Headers loaded and verified from disk.
    pub loaded: u64,
    /// Bytes cut off a torn or invalid tail.
    pub truncated_bytes: u64,
    /// The stored chain started from another base and was discarded.
    pub rebased: bool,
}

/// A verified header chain above a trusted base.
///
/// Backed by a file, only the hashes (32 bytes a header) and a state every
/// [`SNAPSHOT_EVERY`] heights stay in memory; headers are read back from
/// the file when a lookup or a rollback needs them, and checked against
/// their hash. In memory (no data directory) the headers are kept too.
#[derive(Debug)]
pub(crate) struct HeaderChain {
    params: &'static Params,
    base: ChainState,
    /// Header at `base + 1 + i`, when not backed by a file.
    headers: Vec<Header>,
    /// Hash of `headers[i]`.
    hashes: Vec<Hash>,
    /// States at multiples of [`SNAPSHOT_EVERY`] above the base, in order.
    snapshots: Vec<ChainState>,
    tip: ChainState,
    file: Option<StoreFile>,
}

/// The open file behind a chain.
#[derive(Debug)]
struct StoreFile {
    /// The data directory's lock, held while the store is open.
    _lock: File,
    path: PathBuf,
    file: File,
    /// Offset of the first header.
    data_start: u64,
}

/// A candidate continuation of the chain from a fork point, verified header
/// by header as it is downloaded. Committed once it carries more work.
#[derive(Debug)]
pub(crate) struct Branch {
    fork: u64,
    fork_hash: Hash,
    state: ChainState,
    headers: Vec<Header>,
    hashes: Vec<Hash>,
    snapshots: Vec<ChainState>,
}

impl Branch {
    /// Verify `headers` as the next ones and append them; on error the
    /// branch keeps the valid prefix.
    pub(crate) fn extend(
        &mut self,
        params: &Params,
        headers: &[Header],
        now: u64,
    ) -> Result<(), HeaderChainError> {
        for (index, h) in headers.iter().enumerate() {
            let hash = self
                .state
                .push(params, h, now)
                .map_err(|error| HeaderChainError {
                    index,
                    height: h.height,
                    error,
                })?;
            self.headers.push(*h);
            self.hashes.push(hash);
            if h.height % SNAPSHOT_EVERY == 0 {
                self.snapshots.push(self.state.clone());
            }
        }
        Ok(())
    }

    /// The state at the branch tip.
    pub(crate) fn state(&self) -> &ChainState {
        &self.state
    }

    /// Height the branch leaves the chain at.
    pub(crate) fn fork(&self) -> u64 {
        self.fork
    }

    /// Hash of the chain's block at the fork point, as it was when the
    /// branch was started.
    pub(crate) fn fork_hash(&self) -> Hash {
        self.fork_hash
    }

    /// Cumulative work at the branch tip.
    pub(crate) fn work(&self) -> U256 {
        self.state.total_work()
    }

    /// Hash of the branch's header at `height`, when the branch holds it
    /// (above the fork point).
    pub(crate) fn hash_at(&self, height: u64) -> Option<Hash> {
        let i = height.checked_sub(self.fork + 1)?;
        self.hashes.get(usize::try_from(i).ok()?).copied()
    }
}

/// Read until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn file_prefix(params: &Params, base: &ChainState) -> Vec<u8> {
    let b = encode(base);
    let mut out = Vec::with_capacity(8 + 32 + 4 + b.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(params.genesis_hash.as_bytes());
    // The base is a few hundred bytes; MAX_BASE_BYTES bounds it on read.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&b);
    out
}

impl HeaderChain {
    /// A chain with only its base, not backed by a file.
    pub(crate) fn in_memory(params: &'static Params, base: ChainState) -> Self {
        HeaderChain {
            params,
            tip: base.clone(),
            base,
            headers: Vec::new(),
            hashes: Vec::new(),
            snapshots: Vec::new(),
            file: None,
        }
    }

    /// Open (or create) the store in `dir`, based at `base`. A stored chain
    /// with another base is discarded (the configured checkpoint wins).
    pub(crate) fn open(
        params: &'static Params,
        base: ChainState,
        dir: &Path,
    ) -> Result<(Self, LoadReport), StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // One client per data directory: two writers would interleave
        // appends and truncations. The OS drops the lock with the process.
        let lock_path = dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let path = dir.join(FILE_NAME);
        let mut report = LoadReport::default();
        let prefix = file_prefix(params, &base);
        let mut chain = HeaderChain::in_memory(params, base.clone());
        // The prefix first; the headers are then verified in chunks, so
        // opening never holds the whole file in memory.
        let mut stored = if path.exists() {
            Some(File::open(&path).map_err(io(&path))?)
        } else {
            None
        };
        let file_len = match &stored {
            Some(f) => f.metadata().map_err(io(&path))?.len(),
            None => 0,
        };
        let mut bytes = Vec::new();
        if let Some(f) = &mut stored {
            f.take(44 + u64::from(MAX_BASE_BYTES))
                .read_to_end(&mut bytes)
                .map_err(io(&path))?;
        }
        let stored_base = if bytes.is_empty() {
            None
        } else {
            Some(Self::parse_prefix(params, &path, &bytes)?)
        };
        let headers_at = match stored_base {
            Some((b, len)) if b == base => Some(len),
            Some(_) => {
                tracing::warn!(target: "lightclient::store", path = %path.display(),
                    "stored headers start from another checkpoint; starting over from the configured one");
                report.rebased = true;
                None
            }
            None => None,
        };
        let (file, data_start) = match headers_at {
            Some(start) => {
                let mut f = stored.take().ok_or_else(|| StoreError::NotAStore {
                    path: path.clone(),
                    reason: "vanished while opening".into(),
                })?;
                f.seek(SeekFrom::Start(start as u64)).map_err(io(&path))?;
                let mut reader = std::io::BufReader::with_capacity(1 << 16, f);
                let mut chunk = vec![0u8; LOAD_CHUNK * HEADER_LEN];
                let mut valid = 0usize;
                loop {
                    let got = read_full(&mut reader, &mut chunk).map_err(io(&path))?;
                    let headers: Vec<Header> = chunk[..got - got % HEADER_LEN]
                        .chunks_exact(HEADER_LEN)
                        .map_while(|c| decode::<Header>(c).ok())
                        .collect();
                    let mut branch = chain.branch_from(chain.tip.tip_height)?;
                    let ok = match branch.extend(params, &headers, REPLAY_NOW) {
                        Ok(()) => headers.len(),
                        Err(e) => {
                            tracing::warn!(target: "lightclient::store", path = %path.display(),
                                "stored header at height {} is invalid ({}); cutting the store there", e.height, e.error);
                            e.index
                        }
                    };
                    branch.headers.clear();
                    chain.adopt(branch);
                    valid += ok;
                    if ok < LOAD_CHUNK || got < chunk.len() {
                        break;
                    }
                }
                report.loaded = valid as u64;
                let keep = (start + valid * HEADER_LEN) as u64;
                report.truncated_bytes = file_len.saturating_sub(keep);
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                if report.truncated_bytes > 0 {
                    f.set_len(keep).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                }
                (f, start as u64)
            }
            None => (Self::create(&path, &prefix)?, prefix.len() as u64),
        };
        chain.file = Some(StoreFile {
            _lock: lock,
            path,
            file,
            data_start,
        });
        Ok((chain, report))
    }

    /// Write a fresh file with only the prefix, atomically.
    fn create(path: &Path, prefix: &[u8]) -> Result<File, StoreError> {
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(prefix).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            // Make the rename durable.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))
    }

    /// Parse the prefix; returns the stored base and where headers start.
    fn parse_prefix(
        params: &Params,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(ChainState, usize), StoreError> {
        let bad = |reason: &str| StoreError::NotAStore {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < 44 || &bytes[..8] != MAGIC {
            return Err(bad("wrong magic"));
        }
        let mut genesis = [0u8; 32];
        genesis.copy_from_slice(&bytes[8..40]);
        if genesis != *params.genesis_hash.as_bytes() {
            return Err(StoreError::WrongNetwork {
                path: path.to_owned(),
                found: Hash(genesis),
            });
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[40..44]);
        let len = u32::from_le_bytes(len);
        if len > MAX_BASE_BYTES || bytes.len() < 44 + len as usize {
            return Err(bad("base checkpoint truncated or too long"));
        }
        let end = 44 + len as usize;
        let base: ChainState = decode(&bytes[44..end]).map_err(|e| bad(&e.to_string()))?;
        Ok((base, end))
    }

    /// Take over a branch that extends the current tip (load path).
    fn adopt(&mut self, b: Branch) {
        self.headers.extend(b.headers);
        self.hashes.extend(b.hashes);
        self.snapshots.extend(b.snapshots);
        self.tip = b.state;
    }

    /// The trusted base.
    pub(crate) fn base(&self) -> &ChainState {
        &self.base
    }

    /// The verified tip.
    pub(crate) fn tip(&self) -> &ChainState {
        &self.tip
    }

    /// Hash of the header at `height`, if on the chain (base included).
    pub(crate) fn hash_at(&self, height: u64) -> Option<Hash> {
        if height == self.base.tip_height {
            return Some(self.base.tip_hash);
        }
        let i = height.checked_sub(self.base.tip_height + 1)?;
        self.hashes.get(usize::try_from(i).ok()?).copied()
    }

    /// Header at `height`, if stored (genesis is known from the parameters;
    /// a checkpoint's own header is not).
    pub(crate) fn header_at(&self, height: u64) -> Option<Header> {
        if height == 0 && self.base.tip_height == 0 {
            return Some(self.params.genesis_header());
        }
        let i = usize::try_from(height.checked_sub(self.base.tip_height + 1)?).ok()?;
        if i >= self.hashes.len() {
            return None;
        }
        match self.read_headers(i, i + 1) {
            Ok(hs) => hs.first().copied(),
            Err(e) => {
                tracing::error!(target: "lightclient::store", "{e}");
                None
            }
        }
    }

    /// Headers `from..to` above the base (indexes into `hashes`): from
    /// memory, or read back from the file and checked against their hashes.
    fn read_headers(&self, from: usize, to: usize) -> Result<Vec<Header>, StoreError> {
        let Some(StoreFile {
            path,
            file,
            data_start,
            ..
        }) = &self.file
        else {
            return Ok(self.headers.get(from..to).unwrap_or_default().to_vec());
        };
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; to.saturating_sub(from) * HEADER_LEN];
        file.read_exact_at(&mut buf, data_start + (from * HEADER_LEN) as u64)
            .map_err(io(path))?;
        buf.chunks_exact(HEADER_LEN)
            .zip(&self.hashes[from..to])
            .map(|(c, want)| {
                let h = decode::<Header>(c).ok().filter(|h| h.hash() == *want);
                h.ok_or_else(|| StoreError::NotAStore {
                    path: path.clone(),
                    reason: format!(
                        "the header stored at height {} no longer matches its hash (disk corruption?)",
                        self.base.tip_height + 1 + from as u64
                    ),
                })
            })
            .collect()
    }

    /// The state at `height` (between the base and the tip), rebuilt from the
    /// nearest snapshot below.
    fn state_at(&self, height: u64) -> Result<ChainState, StoreError> {
        let base_h = self.base.tip_height;
        let height = height.clamp(base_h, self.tip.tip_height);
        if height == self.tip.tip_height {
            return Ok(self.tip.clone());
        }
        let snap = self
            .snapshots
            .iter()
            .rev()
            .find(|s| s.tip_height <= height)
            .unwrap_or(&self.base);
        let mut state = snap.clone();
        let from = (state.tip_height - base_h) as usize;
        let to = (height - base_h) as usize;
        // These headers were verified when stored (and read back against
        // their hashes); replay cannot fail.
        let headers = self.read_headers(from, to)?;
        if let Err(e) = validate_header_chain(self.params, &mut state, &headers, REPLAY_NOW) {
            tracing::error!(target: "lightclient::store", "replaying stored headers failed: {e}");
        }
        Ok(state)
    }

    /// An empty branch at the tip.
    pub(crate) fn tip_branch(&self) -> Branch {
        Branch {
            fork: self.tip.tip_height,
            fork_hash: self.tip.tip_hash,
            state: self.tip.clone(),
            headers: Vec::new(),
            hashes: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    /// A new branch starting at `fork` (clamped to base..=tip).
    pub(crate) fn branch_from(&self, fork: u64) -> Result<Branch, StoreError> {
        let state = self.state_at(fork)?;
        Ok(Branch {
            fork: state.tip_height,
            fork_hash: state.tip_hash,
            state,
            headers: Vec::new(),
            hashes: Vec::new(),
            snapshots: Vec::new(),
        })
    }

    /// Make `b` the chain from its fork point on (the caller checked it has
    /// more work), write it to disk and leave `b` empty, continuing from the
    /// new tip.
    pub(crate) fn commit(&mut self, b: &mut Branch) -> Result<(), StoreError> {
        let base_h = self.base.tip_height;
        let keep = (b.fork - base_h) as usize;
        let reorg = keep < self.hashes.len();
        if reorg {
            tracing::info!(target: "lightclient::store",
                fork = b.fork, old_tip = self.tip.tip_height,
                "reorganising to a chain with more work");
        }
        if let Some(StoreFile {
            _lock: _,
            path,
            file: f,
            data_start,
        }) = &mut self.file
        {
            let cut = *data_start + (keep * HEADER_LEN) as u64;
            if reorg {
                f.set_len(cut).map_err(io(path))?;
            }
            let mut buf = Vec::with_capacity(b.headers.len() * HEADER_LEN);
            for h in &b.headers {
                buf.extend_from_slice(&h.to_bytes());
            }
            f.seek(SeekFrom::Start(cut)).map_err(io(path))?;
            f.write_all(&buf).map_err(io(path))?;
            f.sync_data().map_err(io(path))?;
        }
        self.hashes.truncate(keep);
        self.snapshots.retain(|s| s.tip_height <= b.fork);
        if self.file.is_some() {
            // On disk now: only the hashes stay in memory.
            b.headers.clear();
        } else {
            self.headers.truncate(keep);
            self.headers.append(&mut b.headers);
        }
        self.hashes.append(&mut b.hashes);
        self.snapshots.append(&mut b.snapshots);
        self.tip = b.state.clone();
        b.fork = self.tip.tip_height;
        b.fork_hash = self.tip.tip_hash;
        Ok(())
    }

    /// Headers above the base.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xirtam_proofs::REGTEST;
    use xirtam_proofs::header::{header_template, mine};

    /// `n` valid regtest headers on `state`.
    pub(crate) fn grow(state: &mut ChainState, n: usize, salt: u8) -> Vec<Header> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut h = header_template(&REGTEST, state, state.tip_time() + 1);
            h.state_root = Hash([salt; 32]);
            assert!(mine(&mut h, 0, 1 << 20));
            state.push(&REGTEST, &h, REPLAY_NOW).expect("valid");
            out.push(h);
        }
        out
    }

    #[test]
    fn append_reopen_reorg_and_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = ChainState::genesis(&REGTEST);
        let (mut chain, r) =
            HeaderChain::open(&REGTEST, genesis.clone(), dir.path()).expect("open");
        assert_eq!(r, LoadReport::default());
        let mut s = genesis.clone();
        let main = grow(&mut s, 2500, 1);
        let mut b = chain.branch_from(0).expect("branch");
        b.extend(&REGTEST, &main, REPLAY_NOW).expect("valid");
        chain.commit(&mut b).expect("commit");
        assert_eq!(chain.tip().tip_height, 2500);
        drop(chain);

        let (mut chain, r) =
            HeaderChain::open(&REGTEST, genesis.clone(), dir.path()).expect("reopen");
        assert_eq!(r.loaded, 2500);
        assert_eq!(chain.tip(), &s);
        assert_eq!(chain.hash_at(1234), Some(main[1233].hash()));

        // A heavier fork from 2100 replaces the tail, on disk too.
        let mut fs = chain.state_at(2100).expect("state");
        let fork = grow(&mut fs, 500, 2);
        let mut b = chain.branch_from(2100).expect("branch");
        b.extend(&REGTEST, &fork, REPLAY_NOW).expect("valid");
        assert!(b.work() > chain.tip().total_work());
        chain.commit(&mut b).expect("commit");
        assert_eq!(chain.tip(), &fs);
        assert_eq!(chain.header_at(2101), Some(fork[0]));
        drop(chain);

        // Tear the last header and corrupt the one before: both are cut.
        let path = dir.path().join(FILE_NAME);
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(len - 7).expect("tear");
        let mut bytes = std::fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - HEADER_LEN - 100] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (chain, r) = HeaderChain::open(&REGTEST, genesis, dir.path()).expect("reopen");
        assert_eq!(chain.tip().tip_height, 2598);
        assert_eq!(r.loaded, 2598);
        assert_eq!(r.truncated_bytes, (2 * HEADER_LEN - 7) as u64);
        assert_eq!(chain.hash_at(2598), Some(fork[497].hash()));
    }

    /// Backed by a file, the chain keeps only hashes in memory (opening
    /// verifies in chunks), reads headers back for lookups and rollbacks,
    /// and a header changed on disk afterwards is refused, not served.
    #[test]
    fn a_file_backed_chain_reads_headers_back_and_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = ChainState::genesis(&REGTEST);
        let (mut chain, _) =
            HeaderChain::open(&REGTEST, genesis.clone(), dir.path()).expect("open");
        let mut s = genesis.clone();
        let main = grow(&mut s, 9000, 1);
        let mut b = chain.branch_from(0).expect("branch");
        b.extend(&REGTEST, &main, REPLAY_NOW).expect("valid");
        chain.commit(&mut b).expect("commit");
        assert!(chain.headers.is_empty(), "headers live on disk");
        drop(chain);

        let (chain, r) = HeaderChain::open(&REGTEST, genesis.clone(), dir.path()).expect("reopen");
        assert_eq!(r.loaded, 9000, "three chunks verified");
        assert!(chain.headers.is_empty());
        assert_eq!(chain.len(), 9000);
        assert_eq!(chain.header_at(5000), Some(main[4999]));
        let mut replay = genesis.clone();
        validate_header_chain(&REGTEST, &mut replay, &main[..4500], REPLAY_NOW).expect("valid");
        assert_eq!(chain.state_at(4500).expect("state"), replay);

        // Change the header at 5500 under the open store.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() - 3501 * HEADER_LEN + 50;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(chain.header_at(5500), None);
        assert!(
            chain.state_at(5700).is_err(),
            "a rollback replaying it fails"
        );
        assert_eq!(chain.header_at(5501), Some(main[5500]));
    }

    #[test]
    fn other_network_and_other_base_are_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let genesis = ChainState::genesis(&REGTEST);
        let (mut chain, _) =
            HeaderChain::open(&REGTEST, genesis.clone(), dir.path()).expect("open");
        let mut s = genesis.clone();
        let hs = grow(&mut s, 20, 1);
        let mut b = chain.branch_from(0).expect("branch");
        b.extend(&REGTEST, &hs, REPLAY_NOW).expect("valid");
        chain.commit(&mut b).expect("commit");
        drop(chain);
        assert!(matches!(
            HeaderChain::open(
                &xirtam_proofs::LOCAL,
                ChainState::genesis(&xirtam_proofs::LOCAL),
                dir.path()
            ),
            Err(StoreError::WrongNetwork { .. })
        ));
        // Reopened from a checkpoint at 10: the old file is discarded.
        let mut cp = genesis;
        validate_header_chain(&REGTEST, &mut cp, &hs[..10], REPLAY_NOW).expect("valid");
        let (chain, r) = HeaderChain::open(&REGTEST, cp.clone(), dir.path()).expect("rebase");
        assert!(r.rebased);
        assert_eq!(chain.tip(), &cp);
        assert_eq!(chain.hash_at(10), Some(hs[9].hash()));
        assert_eq!(
            chain.header_at(10),
            None,
            "a checkpoint's own header is unknown"
        );
    }
}
