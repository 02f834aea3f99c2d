//! Values the light client verified. [`Verified`] has no public
//! constructor: outside this crate one can only be obtained from
//! [`crate::LightClient::resolve`], so code holding one knows it was checked
//! against the most-work header chain.

use xirtam_proofs::op::Record;
use xirtam_proofs::{Hash, Name};

/// The result of looking a name up: its record, or its proven absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The name looked up.
    pub name: Name,
    /// Its record, or `None` when the proof shows no record exists.
    pub record: Option<Record>,
}

/// A value verified against the header at `height`, which is
/// `confirmations - 1` blocks under the verified tip.
///
/// Code outside this crate cannot make one, neither with a struct literal
/// nor through a constructor:
///
/// ```compile_fail
/// use xirtam_lightclient::{Lookup, Verified};
/// use xirtam_proofs::{Hash, Name};
/// let forged: Verified<Lookup> = Verified::new(
///     Lookup { name: Name::new("@bob").unwrap(), record: None },
///     1, Hash::ZERO, 1, 0, String::new(),
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    value: T,
    height: u64,
    block_hash: Hash,
    tip_height: u64,
    tip_age_secs: u64,
    source: String,
}

impl<T> Verified<T> {
    /// Only the light client makes these.
    pub(crate) fn new(
        value: T,
        height: u64,
        block_hash: Hash,
        tip_height: u64,
        tip_age_secs: u64,
        source: String,
    ) -> Self {
        Verified {
            value,
            height,
            block_hash,
            tip_height,
            tip_age_secs,
            source,
        }
    }

    /// The same verification for a value derived from this one.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified {
            value: f(self.value),
            height: self.height,
            block_hash: self.block_hash,
            tip_height: self.tip_height,
            tip_age_secs: self.tip_age_secs,
            source: self.source,
        }
    }

    /// The verified value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The verified value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Height of the header the proof was checked against.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Hash of that header.
    pub fn block_hash(&self) -> Hash {
        self.block_hash
    }

    /// Blocks from that header to the verified tip, both included.
    pub fn confirmations(&self) -> u64 {
        self.tip_height.saturating_sub(self.height) + 1
    }

    /// Height of the verified tip at lookup time.
    pub fn tip_height(&self) -> u64 {
        self.tip_height
    }

    /// Seconds between the tip's timestamp and the lookup (0 when the tip is
    /// stamped in the future).
    pub fn tip_age_secs(&self) -> u64 {
        self.tip_age_secs
    }

    /// The source whose proof was verified (for diagnostics only: the value
    /// does not depend on trusting it).
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl Verified<Lookup> {
    /// The name's record, if it exists.
    pub fn record(&self) -> Option<&Record> {
        self.value.record.as_ref()
    }

    /// The name looked up.
    pub fn name(&self) -> &Name {
        &self.value.name
    }
}
