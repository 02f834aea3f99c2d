//! The sender side of HPKE (RFC 9180): base mode, single shot, for the one
//! suite chat uses - DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305 (ids 0x0020, 0x0001, 0x0003).
//!
//! Why our own sender: speed (ADR 0008). Every wrap is a standard HPKE
//! encapsulation, so receivers open with the `hpke` crate unchanged; the
//! wraps of one envelope share one fresh ephemeral key (ADR 0012). What differs is how the Diffie-Hellman with the
//! recipient's key is computed: a key the [`Sealer`] has seen before gets a
//! precomputed multiples table, and `[e]·pkR` then costs a fixed-base
//! multiplication (~16 µs) instead of a Montgomery ladder (~54 µs). The table
//! path computes the very same X25519 function, but only for keys where that
//! is provably so - points of the prime-order subgroup, where a scalar may
//! be reduced mod ℓ; any other key (twist, small order, torsion component)
//! takes the ladder. Checked against the RFC 9180 test vector, against the
//! ladder for random keys, and by opening with the `hpke` crate.
//!
//! An envelope's wraps are computed together: the Edwards points of every
//! ephemeral key and every table-path secret go to Montgomery form with one
//! batched field inversion instead of one each (an inversion costs about
//! as much as a third of a table multiplication).

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::edwards::{EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use curve25519_dalek::traits::BasepointTable;
use hkdf::{Hkdf, HkdfExtract};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CryptoError;

/// `suite_id` of the KEM: "KEM" || I2OSP(kem_id = 0x0020, 2).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
/// `suite_id` of the key schedule: "HPKE" || kem_id || kdf_id || aead_id.
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// `suite_id` of an export-only key schedule (AEAD id 0xFFFF, RFC 9180
/// §7.3): what sealing a group key uses.
const HPKE_EXPORT_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\xff\xff";
/// Base mode.
const MODE_BASE: u8 = 0;

/// `LabeledExtract(salt, label, ikm)`, with the IKM given in parts: the
/// pseudorandom key, and it ready for `Expand`.
fn labeled_extract(
    suite: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[&[u8]],
) -> ([u8; 32], Hkdf<Sha256>) {
    let mut ex = HkdfExtract::<Sha256>::new(Some(salt));
    ex.input_ikm(b"HPKE-v1");
    ex.input_ikm(suite);
    ex.input_ikm(label);
    for part in ikm {
        ex.input_ikm(part);
    }
    let (prk, hkdf) = ex.finalize();
    (prk.into(), hkdf)
}

/// `LabeledExpand(prk, label, info, L)` into `out` (L = `out.len()` ≤ 255·32).
fn labeled_expand(prk: &Hkdf<Sha256>, suite: &[u8], label: &[u8], info: &[&[u8]], out: &mut [u8]) {
    let len = u16::try_from(out.len())
        .expect("callers ask for 12 or 32 bytes")
        .to_be_bytes();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(4 + info.len());
    parts.extend_from_slice(&[&len, b"HPKE-v1", suite, label]);
    parts.extend_from_slice(info);
    prk.expand_multi_info(&parts, out)
        .expect("12 and 32 bytes are far below HKDF-SHA256's 8160-byte limit");
}

/// A recipient key prepared for fast Diffie-Hellman.
struct Prepared {
    /// Multiples of the key's Edwards form; `None` for keys outside the
    /// prime-order subgroup, which keep the ladder.
    table: Option<Box<EdwardsBasepointTable>>,
    /// Tick of the last use, for eviction.
    used: u64,
}

impl Prepared {
    fn new(pk: &[u8; 32]) -> Self {
        // Either sign gives the same X25519 result: u([k]P) = u([k](-P)).
        let table = MontgomeryPoint(*pk)
            .to_edwards(0)
            .filter(|p| p.is_torsion_free())
            .map(|p| Box::new(EdwardsBasepointTable::create(&p)));
        Prepared { table, used: 0 }
    }

    /// X25519(sk, pk): on the prime-order subgroup `[clamp(sk)]P =
    /// [clamp(sk) mod ℓ]P`, so the table computes exactly the ladder's value.
    fn dh(&self, pk: &[u8; 32], sk: &[u8; 32]) -> Dh {
        match &self.table {
            Some(t) => {
                let s = Zeroizing::new(Scalar::from_bytes_mod_order(clamp_integer(*sk)));
                Dh::Edwards(t.mul_base(&s))
            }
            None => Dh::Montgomery(MontgomeryPoint(*pk).mul_clamped(*sk).0),
        }
    }
}

/// `enc` and one 32-byte secret per recipient (`None` for a small-order
/// key, whose shared secret would be all zeros: RFC 9180 §7.1.4).
pub(crate) type Encapsulated = ([u8; 32], Vec<Option<Zeroizing<[u8; 32]>>>);

/// One HPKE wrap: the encapsulated key and the ciphertext.
pub(crate) type Sealed = ([u8; 32], Vec<u8>);

/// An X25519 result: still an Edwards point (the table path, converted
/// with the others of the envelope), or a Montgomery u (the ladder).
enum Dh {
    Edwards(EdwardsPoint),
    Montgomery([u8; 32]),
}

#[cfg(test)]
impl Dh {
    /// The Montgomery u, converted alone.
    fn u(self) -> [u8; 32] {
        match self {
            Dh::Edwards(p) => p.to_montgomery().0,
            Dh::Montgomery(u) => u,
        }
    }
}

/// X25519(sk, pk) for a key without a table: on the Edwards form when
/// the point is on the curve (`[clamp(sk)]P` with the unreduced clamped
/// scalar is exactly the ladder's value for every curve point, torsion
/// included, and the vectorised backend makes it faster), else (a
/// twist point) the ladder.
fn variable_base(pk: &[u8; 32], sk: &[u8; 32]) -> Dh {
    match MontgomeryPoint(*pk).to_edwards(0) {
        Some(p) => Dh::Edwards(p.mul_clamped(*sk)),
        None => Dh::Montgomery(MontgomeryPoint(*pk).mul_clamped(*sk).0),
    }
}

pub struct Sealer {
    keys: HashMap<[u8; 32], Prepared>,
    /// Keys without a table yet, and how often they were used.
    seen: HashMap<[u8; 32], u32>,
    tick: u64,
    /// Tables still allowed in the current envelope.
    builds: u32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} prepared keys)", self.keys.len())
    }
}

impl Default for Sealer {
    fn default() -> Self {
        Sealer::new()
    }
}

impl Sealer {
    /// How many recipient keys get tables (at ~30 KiB each).
    pub const CAPACITY: usize = 64;
    /// Uses of a key before it gets a table.
    const USES_BEFORE_TABLE: u32 = 2;
    /// Keys remembered without a table.
    const SEEN_CAPACITY: usize = 4 * Self::CAPACITY;

    /// A sealer that remembers nothing yet.
    pub fn new() -> Self {
        Sealer {
            keys: HashMap::new(),
            seen: HashMap::new(),
            tick: 0,
            builds: 1,
        }
    }

    /// How many recipient keys have tables now.
    pub fn tables(&self) -> usize {
        self.keys.len()
    }

    /// Start an envelope: it may build one table.
    pub(super) fn begin_envelope(&mut self) {
        self.builds = 1;
    }

    /// X25519(sk, pk), through `pk`'s table when it has one (or earns one).
    fn dh(&mut self, pk: &[u8; 32], sk: &[u8; 32]) -> Dh {
        self.tick += 1;
        let tick = self.tick;
        if let Some(p) = self.keys.get_mut(pk) {
            p.used = tick;
            return p.dh(pk, sk);
        }
        let uses = self.seen.get(pk).copied().unwrap_or(0);
        if uses < Self::USES_BEFORE_TABLE || self.builds == 0 {
            // Not (yet) worth a table: remember the key, take the ladder.
            if uses == 0 && self.seen.len() >= Self::SEEN_CAPACITY {
                self.seen.clear();
            }
            self.seen.insert(*pk, uses.saturating_add(1));
            return variable_base(pk, sk);
        }
        self.seen.remove(pk);
        self.builds -= 1;
        if self.keys.len() >= Self::CAPACITY
            && let Some(old) = self
                .keys
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(k, _)| *k)
        {
            self.keys.remove(&old);
        }
        let mut p = Prepared::new(pk);
        p.used = tick;
        let out = p.dh(pk, sk);
        self.keys.insert(*pk, p);
        out
    }

    /// HPKE single-shot seal of `plaintext` to `pk_r` with a fresh
    /// ephemeral key; returns `(enc, ciphertext)`.
    #[cfg(test)]
    pub(super) fn wrap(
        &mut self,
        pk_r: &[u8; 32],
        info: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; 32], Vec<u8>), CryptoError> {
        let mut out = self.wrap_many(&[(pk_r, info)], aad, plaintext)?;
        out.pop()
            .ok_or_else(|| CryptoError::TooLarge("no HPKE recipient".into()))
    }

    /// [`Sealer::wrap`] of the same `plaintext` and `aad` to several
    /// recipients `(pk_r, info)` of one envelope. They share one fresh
    /// ephemeral key (ADR 0012): each wrap is still a standard HPKE
    /// encapsulation to its own `pkR`, whose KEM context binds `pkR`, so
    /// the shared secrets are independent (randomness re-use across
    /// recipients is safe for DH-based KEMs).
    pub(super) fn wrap_many(
        &mut self,
        to: &[(&[u8; 32], &[u8])],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<Sealed>, CryptoError> {
        let mut sk_e = Zeroizing::new([0u8; 32]);
        getrandom::fill(sk_e.as_mut()).map_err(|e| CryptoError::Random(e.to_string()))?;
        self.seal_with(&sk_e, to, aad, plaintext)
    }

    /// [`Sealer::wrap_many`] with a given ephemeral secret (for test
    /// vectors, and for a group key sealed by several threads with one
    /// ephemeral key).
    pub(crate) fn seal_with(
        &mut self,
        sk_e: &[u8; 32],
        to: &[(&[u8; 32], &[u8])],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<Sealed>, CryptoError> {
        let pks: Vec<&[u8; 32]> = to.iter().map(|(pk, _)| *pk).collect();
        let (enc, secrets) = self.encap_all(sk_e, &pks)?;
        let mut out = Vec::with_capacity(to.len());
        for ((_, info), ss) in to.iter().zip(&secrets) {
            let ss = ss.as_ref().ok_or_else(|| CryptoError::Malformed {
                what: "recipient key",
                reason: "a small-order X25519 point".into(),
            })?;
            let (key, nonce) = key_schedule(ss, info);
            let ct = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .map_err(|_| CryptoError::TooLarge("HPKE plaintext".into()))?;
            out.push((enc, ct));
        }
        Ok(out)
    }

    /// One export-only HPKE context (RFC 9180 §5.3, AEAD id 0xFFFF) per
    /// recipient `(pk_r, info)`, all with the ephemeral secret `sk_e`:
    /// returns `enc` and each context's 32-byte export under
    /// `exporter_context` (`None` for a small-order key).
    pub(crate) fn export_with(
        &mut self,
        sk_e: &[u8; 32],
        to: &[(&[u8; 32], &[u8])],
        exporter_context: &[u8],
    ) -> Result<Encapsulated, CryptoError> {
        let pks: Vec<&[u8; 32]> = to.iter().map(|(pk, _)| *pk).collect();
        let (enc, secrets) = self.encap_all(sk_e, &pks)?;
        let exports = to
            .iter()
            .zip(&secrets)
            .map(|((_, info), ss)| ss.as_ref().map(|ss| export(ss, info, exporter_context)))
            .collect();
        Ok((enc, exports))
    }

    /// The DHKEM encapsulation to every key in `pks` with the ephemeral
    /// secret `sk_e`: `enc` and each recipient's shared secret.
    fn encap_all(
        &mut self,
        sk_e: &[u8; 32],
        pks: &[&[u8; 32]],
    ) -> Result<Encapsulated, CryptoError> {
        // The Edwards points to convert: the ephemeral public key, then
        // each table-path shared secret.
        let mut eds = Zeroizing::new(Vec::with_capacity(1 + pks.len()));
        eds.push(EdwardsPoint::mul_base_clamped(*sk_e));
        let mut ladder = Vec::with_capacity(pks.len());
        for pk_r in pks {
            match self.dh(pk_r, sk_e) {
                Dh::Edwards(p) => {
                    eds.push(p);
                    ladder.push(None);
                }
                Dh::Montgomery(u) => ladder.push(Some(Zeroizing::new(u))),
            }
        }
        let us = Zeroizing::new(EdwardsPoint::to_montgomery_batch(&eds));
        let mut next = us.iter();
        let missing = || CryptoError::TooLarge("HPKE batch".into());
        let enc = next.next().ok_or_else(missing)?.0;
        let mut out = Vec::with_capacity(pks.len());
        for (pk_r, ladder) in pks.iter().zip(ladder) {
            let dh = match ladder {
                Some(u) => u,
                None => Zeroizing::new(next.next().ok_or_else(missing)?.0),
            };
            // RFC 9180 §7.1.4: a small-order key gives an all-zero secret.
            out.push((!dh.iter().all(|b| *b == 0)).then(|| shared_secret(&dh, &enc, pk_r)));
        }
        Ok((enc, out))
    }
}

/// The 32-byte export of an export-only base-mode context (RFC 9180
/// §5.1, §5.3): `Export(exporter_context, 32)`.
pub(crate) fn export(
    shared_secret: &[u8; 32],
    info: &[u8],
    exporter_context: &[u8],
) -> Zeroizing<[u8; 32]> {
    static PSK_ID_HASH: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let psk_id_hash =
        PSK_ID_HASH.get_or_init(|| labeled_extract(HPKE_EXPORT_SUITE, b"", b"psk_id_hash", &[]).0);
    let (info_hash, _) = labeled_extract(HPKE_EXPORT_SUITE, b"", b"info_hash", &[info]);
    let context: [&[u8]; 3] = [&[MODE_BASE], psk_id_hash, &info_hash];
    let (_, secret) = labeled_extract(HPKE_EXPORT_SUITE, shared_secret, b"secret", &[]);
    let mut exporter_secret = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &secret,
        HPKE_EXPORT_SUITE,
        b"exp",
        &context,
        exporter_secret.as_mut(),
    );
    let prk = Hkdf::<Sha256>::from_prk(exporter_secret.as_ref())
        .expect("32 bytes is a valid HKDF-SHA256 pseudorandom key");
    let mut out = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &prk,
        HPKE_EXPORT_SUITE,
        b"sec",
        &[exporter_context],
        out.as_mut(),
    );
    out
}

/// DHKEM `ExtractAndExpand(dh, enc || pkR)`.
pub(crate) fn shared_secret(dh: &[u8; 32], enc: &[u8; 32], pk_r: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let (_, prk) = labeled_extract(KEM_SUITE, b"", b"eae_prk", &[dh]);
    let mut out = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &prk,
        KEM_SUITE,
        b"shared_secret",
        &[enc, pk_r],
        out.as_mut(),
    );
    out
}

/// The base-mode key schedule: the AEAD key and base nonce.
pub(crate) fn key_schedule(
    shared_secret: &[u8; 32],
    info: &[u8],
) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    // The same for every wrap (base mode has no PSK id): computed once.
    static PSK_ID_HASH: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let psk_id_hash =
        PSK_ID_HASH.get_or_init(|| labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", &[]).0);
    let (info_hash, _) = labeled_extract(HPKE_SUITE, b"", b"info_hash", &[info]);
    let context: [&[u8]; 3] = [&[MODE_BASE], psk_id_hash, &info_hash];
    let (_, secret) = labeled_extract(HPKE_SUITE, shared_secret, b"secret", &[]);
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(&secret, HPKE_SUITE, b"key", &context, key.as_mut());
    let mut nonce = [0u8; 12];
    labeled_expand(&secret, HPKE_SUITE, b"base_nonce", &context, &mut nonce);
    (key, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::aead::ChaCha20Poly1305 as HpkeAead;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256;
    use hpke::{Deserializable, Kem, OpModeR, Serializable};
    use proptest::prelude::*;

    /// `name = hex` lines of the RFC 9180 A.2.1 vector.
    fn vector() -> HashMap<String, Vec<u8>> {
        include_str!("../../tests/vectors/hpke-rfc9180-a2-base.hex")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').expect("vector lines are name = hex");
                (
                    k.trim().to_string(),
                    hex::decode(v.trim()).expect("vector values are hex"),
                )
            })
            .collect()
    }

    fn arr(v: &[u8]) -> [u8; 32] {
        v.try_into().expect("32 bytes")
    }

    #[test]
    fn rfc9180_vector_through_ladder_and_table() {
        let v = vector();
        let (sk_e, pk_r) = (arr(&v["skEm"]), arr(&v["pkRm"]));
        let dh = MontgomeryPoint(pk_r).mul_clamped(sk_e).0;
        let ss = shared_secret(&dh, &arr(&v["pkEm"]), &pk_r);
        assert_eq!(ss.as_ref(), v["shared_secret"].as_slice());
        let (key, nonce) = key_schedule(&ss, &v["info"]);
        assert_eq!(key.as_ref(), v["key"].as_slice());
        assert_eq!(nonce.as_slice(), v["base_nonce"].as_slice());
        let mut sealer = Sealer::new();
        // Two uses take the ladder; the third builds the table.
        for round in 0..4 {
            sealer.begin_envelope();
            let (enc, ct) = sealer
                .seal_with(&sk_e, &[(&pk_r, &v["info"])], &v["aad"], &v["pt"])
                .map(|mut w| w.remove(0))
                .expect("seal");
            assert_eq!(enc.as_slice(), v["pkEm"].as_slice(), "round {round}");
            assert_eq!(ct, v["ct"], "round {round}");
            assert_eq!(sealer.tables(), usize::from(round >= 2));
        }
        assert!(sealer.keys[&pk_r].table.is_some());
    }

    #[test]
    fn small_order_and_twist_keys_take_the_ladder_or_are_refused() {
        let mut sealer = Sealer::new();
        // u = 0 (order 2) and u = 1 (order 4): X25519 gives zero; refused.
        let mut one = [0u8; 32];
        one[0] = 1;
        for pk in [[0u8; 32], one] {
            for _ in 0..4 {
                sealer.begin_envelope();
                assert!(matches!(
                    sealer.wrap(&pk, b"i", b"a", b"p"),
                    Err(CryptoError::Malformed { .. })
                ));
            }
        }
        // A point with a torsion component: P + T (T of order 8) is on the
        // curve but not in the subgroup; its table would be wrong, so none.
        let p = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * Scalar::from(7u8);
        let t = curve25519_dalek::constants::EIGHT_TORSION[1];
        let pk = (p + t).to_montgomery().0;
        for _ in 0..4 {
            sealer.begin_envelope();
            let sk = [5u8; 32];
            assert_eq!(
                sealer.dh(&pk, &sk).u(),
                MontgomeryPoint(pk).mul_clamped(sk).0
            );
        }
        assert!(sealer.keys[&pk].table.is_none());
        // A u-coordinate on the twist has no Edwards form: the ladder.
        let twist = (2u8..)
            .map(|u| {
                let mut b = [0u8; 32];
                b[0] = u;
                b
            })
            .find(|b| MontgomeryPoint(*b).to_edwards(0).is_none())
            .expect("half of all u-coordinates are on the twist");
        for _ in 0..4 {
            sealer.begin_envelope();
            assert_eq!(
                sealer.dh(&twist, &[9u8; 32]).u(),
                MontgomeryPoint(twist).mul_clamped([9u8; 32]).0
            );
        }
        assert!(sealer.keys[&twist].table.is_none());
    }

    #[test]
    fn non_canonical_encodings_agree_with_the_ladder() {
        // The base point u = 9 with bit 255 set, and as 9 + p (≥ p): both
        // decode to u = 9 on either path (RFC 7748 masks bit 255).
        let mut high = [0u8; 32];
        high[0] = 9;
        high[31] = 0x80;
        let mut plus_p = [0xffu8; 32];
        plus_p[0] = 0xf6;
        plus_p[31] = 0x7f;
        for pk in [high, plus_p] {
            let prepared = Prepared::new(&pk);
            assert!(prepared.table.is_some());
            for sk in [[1u8; 32], [0xabu8; 32], [0xffu8; 32]] {
                let ladder = MontgomeryPoint(pk).mul_clamped(sk).0;
                assert_eq!(prepared.dh(&pk, &sk).u(), ladder);
                assert_eq!(ladder, MontgomeryPoint::mul_base_clamped(sk).0);
            }
        }
    }

    fn key(i: usize) -> [u8; 32] {
        let mut seed = [1u8; 32];
        seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        MontgomeryPoint::mul_base_clamped(seed).0
    }

    #[test]
    fn least_recently_used_tables_are_evicted() {
        let mut sealer = Sealer::new();
        let n = Sealer::CAPACITY + 8;
        for i in 0..n {
            for _ in 0..3 {
                sealer.begin_envelope();
                sealer.dh(&key(i), &[3; 32]);
            }
        }
        assert_eq!(sealer.tables(), Sealer::CAPACITY);
        assert!((0..8).all(|i| !sealer.keys.contains_key(&key(i))));
        assert!((8..n).all(|i| sealer.keys.contains_key(&key(i))));
        // Using key 8 again makes key 9 the oldest.
        sealer.dh(&key(8), &[3; 32]);
        for _ in 0..3 {
            sealer.begin_envelope();
            sealer.dh(&key(0), &[3; 32]);
        }
        assert!(sealer.keys.contains_key(&key(8)));
        assert!(!sealer.keys.contains_key(&key(9)));
    }

    #[test]
    fn hostile_keys_cost_at_most_one_table_per_envelope_and_bounded_memory() {
        let mut sealer = Sealer::new();
        // Envelopes of 32 wraps to keys used for the third time: one table
        // per envelope, the rest on the ladder.
        for _ in 0..3 {
            sealer.begin_envelope();
            for i in 0..32 {
                sealer.dh(&key(i), &[3; 32]);
            }
        }
        assert_eq!(sealer.tables(), 1);
        // Ever-new keys: the untabled ones are forgotten beyond a bound.
        for i in 0..(3 * Sealer::SEEN_CAPACITY) {
            sealer.begin_envelope();
            sealer.dh(&key(1000 + i), &[3; 32]);
            assert!(sealer.seen.len() <= Sealer::SEEN_CAPACITY);
        }
        assert_eq!(sealer.tables(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The Edwards path of a key without a table computes the ladder's
        /// value for every curve point, with any torsion component, and
        /// falls back to the ladder on the twist.
        #[test]
        fn variable_base_equals_the_ladder(k in any::<[u8; 32]>(), sk in any::<[u8; 32]>(), t in 0usize..8, u in any::<[u8; 32]>()) {
            let p = EdwardsPoint::mul_base_clamped(k) + curve25519_dalek::constants::EIGHT_TORSION[t];
            let pk = p.to_montgomery().0;
            prop_assert_eq!(variable_base(&pk, &sk).u(), MontgomeryPoint(pk).mul_clamped(sk).0);
            // Any 32 bytes: on the curve or on the twist.
            prop_assert_eq!(variable_base(&u, &sk).u(), MontgomeryPoint(u).mul_clamped(sk).0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Our export-only contexts are RFC 9180's: the `hpke` crate's
        /// receiver derives the same export from the shared `enc`.
        #[test]
        fn exports_match_the_hpke_crate(
            ikms in proptest::collection::vec(any::<[u8; 32]>(), 1..5),
            sk_e in any::<[u8; 32]>(),
            info in proptest::collection::vec(any::<u8>(), 0..60),
            ctx in proptest::collection::vec(any::<u8>(), 0..60),
        ) {
            let keys: Vec<_> = ikms.iter().map(|i| X25519HkdfSha256::derive_keypair(i)).collect();
            let pks: Vec<[u8; 32]> = keys.iter().map(|(_, pk)| arr(&pk.to_bytes())).collect();
            let to: Vec<(&[u8; 32], &[u8])> = pks.iter().map(|pk| (pk, info.as_slice())).collect();
            let (enc, exports) = Sealer::new().export_with(&sk_e, &to, &ctx).expect("export");
            let encapped = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&enc).expect("enc");
            for ((sk_r, _), ours) in keys.iter().zip(&exports) {
                let rx = hpke::setup_receiver::<hpke::aead::ExportOnlyAead, HkdfSha256, X25519HkdfSha256>(
                    &OpModeR::Base, sk_r, &encapped, &info,
                ).expect("receiver");
                let mut theirs = [0u8; 32];
                rx.export(&ctx, &mut theirs).expect("export");
                prop_assert_eq!(&theirs, ours.as_ref().expect("a valid key").as_ref());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The table and the ladder agree, and the `hpke` crate opens every
        /// wrap, whichever path sealed it.
        #[test]
        fn table_equals_ladder_and_hpke_crate_opens(
            ikm in any::<[u8; 32]>(),
            sk_e in any::<[u8; 32]>(),
            info in proptest::collection::vec(any::<u8>(), 0..80),
            aad in proptest::collection::vec(any::<u8>(), 0..80),
            pt in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (sk_r, pk_r) = X25519HkdfSha256::derive_keypair(&ikm);
            let pk = arr(&pk_r.to_bytes());
            let prepared = Prepared::new(&pk);
            prop_assert!(prepared.table.is_some());
            prop_assert_eq!(prepared.dh(&pk, &sk_e).u(), MontgomeryPoint(pk).mul_clamped(sk_e).0);
            let mut sealer = Sealer::new();
            for _ in 0..4 {
                sealer.begin_envelope();
                let (enc, ct) = sealer.wrap(&pk, &info, &aad, &pt).expect("seal");
                let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&enc).expect("enc");
                let opened = hpke::single_shot_open::<HpkeAead, HkdfSha256, X25519HkdfSha256>(
                    &OpModeR::Base, &sk_r, &enc, &info, &ct, &aad,
                ).expect("the hpke crate opens our wrap");
                prop_assert_eq!(&opened, &pt);
            }
            prop_assert_eq!(sealer.tables(), 1);
        }
    }
}
