//! What `@user` and `~server` records mean to chat.
//!
//! The directory stores a record's `value` as opaque bytes. Chat defines two
//! kinds, each starting with a one-byte tag and followed by the canonical
//! encoding (`xirtam_proofs::encode`, bincode with the project's fixed
//! configuration; no trailing bytes):
//!
//! ```text
//! ~server value = 0x02 || ServerRecord { key: 32, urls: u64le(n) || n × (u64le(len) || utf-8) }
//! @user   value = 0x01 || UserRecord   { server: u64le(len) || ~name, devices: u64le(n) || n × (sign: 32 || kx: 32) }
//! ```
//!
//! The record's *owners* (root keys, which can stay offline) are not part of
//! the value: they control the name. The devices listed here are what
//! messages are signed by (`sign`, Ed25519) and encrypted to (`kx`, X25519).
//!
//! Records reach chat code only through [`VerifiedUser`] and
//! [`VerifiedServer`], built from a light-client [`Verified`] lookup.

use bincode::{Decode, Encode};
use xirtam_lightclient::{Lookup, Verified};
use xirtam_proofs::name::NameKind;
use xirtam_proofs::{Name, PublicKey, decode, encode};

/// Tag of a `@user` value (format version 1).
pub const USER_TAG: u8 = 0x01;
/// Tag of a `~server` value (format version 1).
pub const SERVER_TAG: u8 = 0x02;
/// Most devices a user record lists.
pub const MAX_DEVICES: usize = 8;
/// Most URLs a server record lists.
pub const MAX_URLS: usize = 4;
/// Longest URL (bytes).
pub const MAX_URL_LEN: usize = 256;

/// An X25519 public key for key agreement.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct KxPublicKey(pub [u8; 32]);

impl std::fmt::Debug for KxPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KxPublicKey({})", hex::encode(self.0))
    }
}

/// One device of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Device {
    /// Signs the device's messages and medium-term keys (Ed25519).
    pub sign: PublicKey,
    /// Long-term key-agreement key (X25519).
    pub kx: KxPublicKey,
}

/// The value of a `@user` record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UserRecord {
    /// The concierge holding the user's mailbox (a `~server` name).
    pub server: Name,
    /// The user's devices (1 to [`MAX_DEVICES`], no duplicates).
    pub devices: Vec<Device>,
}

/// The value of a `~server` record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ServerRecord {
    /// The server's identity key (Ed25519): it signs challenges and receipts.
    pub key: PublicKey,
    /// Where its JSON-RPC endpoint is (1 to [`MAX_URLS`] `https://`,
    /// `https+ca://` or `http://` URLs: see [`crate::tls`];
    /// tried in order).
    pub urls: Vec<String>,
}

/// A record value that is not a valid chat record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The name has no record.
    #[error("{0} is not registered")]
    NotRegistered(Name),
    /// A `@user` name was expected, or a `~server` one.
    #[error("{name} is not a {expected} name")]
    WrongKind {
        /// The name.
        name: Name,
        /// `@user` or `~server`.
        expected: &'static str,
    },
    /// The value does not start with the expected tag.
    #[error("the value of {name} is not a chat {expected} record (tag {tag:#04x})")]
    WrongTag {
        /// The name.
        name: Name,
        /// `user` or `server`.
        expected: &'static str,
        /// The tag found (0 for an empty value).
        tag: u8,
    },
    /// The value does not decode.
    #[error("the value of {name} is malformed: {reason}")]
    Malformed {
        /// The name.
        name: Name,
        /// Why.
        reason: String,
    },
}

fn check_user(r: &UserRecord) -> Result<(), String> {
    if r.server.kind() != NameKind::Server {
        return Err(format!("its server {} is not a ~server name", r.server));
    }
    if r.devices.is_empty() || r.devices.len() > MAX_DEVICES {
        return Err(format!(
            "{} devices; between 1 and {MAX_DEVICES}",
            r.devices.len()
        ));
    }
    for (i, d) in r.devices.iter().enumerate() {
        if r.devices[..i]
            .iter()
            .any(|e| e.sign == d.sign || e.kx == d.kx)
        {
            return Err("a device key is listed twice".into());
        }
    }
    Ok(())
}

fn check_server(r: &ServerRecord) -> Result<(), String> {
    if r.urls.is_empty() || r.urls.len() > MAX_URLS {
        return Err(format!("{} URLs; between 1 and {MAX_URLS}", r.urls.len()));
    }
    for u in &r.urls {
        if u.len() > MAX_URL_LEN {
            return Err(format!("a URL is longer than {MAX_URL_LEN} bytes"));
        }
        if !(u.starts_with("http://")
            || u.starts_with("https://")
            || u.starts_with(crate::tls::CA_SCHEME))
        {
            return Err(format!(
                "{u:?} is not an http://, https:// or https+ca:// URL"
            ));
        }
    }
    Ok(())
}

fn to_value<T: Encode>(tag: u8, body: &T) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&encode(body));
    v
}

fn from_value<T: Decode<()>>(
    name: &Name,
    tag: u8,
    expected: &'static str,
    value: &[u8],
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, RecordError> {
    match value.split_first() {
        Some((&t, body)) if t == tag => {
            let r: T = decode(body).map_err(|e| RecordError::Malformed {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            check(&r).map_err(|reason| RecordError::Malformed {
                name: name.clone(),
                reason,
            })?;
            Ok(r)
        }
        other => Err(RecordError::WrongTag {
            name: name.clone(),
            expected,
            tag: other.map_or(0, |(t, _)| *t),
        }),
    }
}

impl UserRecord {
    /// The record value bytes (for a claim or update op). Fails when the
    /// record breaks a rule ([`MAX_DEVICES`], a `~server` name, no
    /// duplicate keys).
    pub fn to_value(&self) -> Result<Vec<u8>, String> {
        check_user(self)?;
        Ok(to_value(USER_TAG, self))
    }

    /// Parse the value of `name`.
    pub fn from_value(name: &Name, value: &[u8]) -> Result<Self, RecordError> {
        from_value(name, USER_TAG, "user", value, check_user)
    }

    /// The device with this signing key, if listed.
    pub fn device(&self, sign: &PublicKey) -> Option<&Device> {
        self.devices.iter().find(|d| d.sign == *sign)
    }
}

impl ServerRecord {
    /// The record value bytes. Fails when the record breaks a rule.
    pub fn to_value(&self) -> Result<Vec<u8>, String> {
        check_server(self)?;
        Ok(to_value(SERVER_TAG, self))
    }

    /// Parse the value of `name`.
    pub fn from_value(name: &Name, value: &[u8]) -> Result<Self, RecordError> {
        from_value(name, SERVER_TAG, "server", value, check_server)
    }
}

/// The parts of a verified lookup that name a registered record.
fn registered<'a>(
    v: &'a Verified<Lookup>,
    kind: NameKind,
    expected: &'static str,
) -> Result<&'a [u8], RecordError> {
    let name = v.name();
    if name.kind() != kind {
        return Err(RecordError::WrongKind {
            name: name.clone(),
            expected,
        });
    }
    v.record()
        .map(|r| r.value.as_bytes())
        .ok_or_else(|| RecordError::NotRegistered(name.clone()))
}

/// A `@user` record, parsed from a light-client lookup. Only a
/// [`Verified`] lookup can produce one.
#[derive(Debug, Clone)]
pub struct VerifiedUser {
    lookup: Verified<Lookup>,
    record: UserRecord,
}

impl VerifiedUser {
    /// Parse a verified lookup of a `@user` name.
    pub fn from_lookup(lookup: Verified<Lookup>) -> Result<Self, RecordError> {
        let value = registered(&lookup, NameKind::User, "@user")?;
        let record = UserRecord::from_value(lookup.name(), value)?;
        Ok(VerifiedUser { lookup, record })
    }

    /// The parsed value.
    pub fn record(&self) -> &UserRecord {
        &self.record
    }

    /// The lookup it came from (height, confirmations, owners).
    pub fn lookup(&self) -> &Verified<Lookup> {
        &self.lookup
    }
}

/// Tag of a key fingerprint (protocol.md, "Key fingerprints").
const FINGERPRINT_TAG: &[u8] = b"xirtam/fingerprint/v1";

/// A user's key fingerprint: 30 digits in six groups of five, which two
/// people compare out of band (read aloud, side by side) to know they see
/// the same keys for `name`. It covers the record's owner keys and every
/// device's signing and key-agreement keys, not the server: a move keeps
/// it, a new, removed or replaced key changes it.
///
/// SHA-256 over the tag, the name (length-prefixed), the owner keys
/// (count, then sorted) and the devices' `sign ‖ kx` pairs (count, then
/// sorted); group `i` is bytes `5i..5i+5` of the digest as a big-endian
/// integer, modulo 100,000.
pub fn fingerprint(name: &Name, owners: &[PublicKey], devices: &[Device]) -> String {
    use sha2::Digest;
    let mut owners: Vec<[u8; 32]> = owners.iter().map(|k| k.0).collect();
    owners.sort_unstable();
    let mut devs: Vec<[u8; 64]> = devices
        .iter()
        .map(|d| {
            let mut b = [0u8; 64];
            b[..32].copy_from_slice(&d.sign.0);
            b[32..].copy_from_slice(&d.kx.0);
            b
        })
        .collect();
    devs.sort_unstable();
    let mut h = sha2::Sha256::new();
    h.update(FINGERPRINT_TAG);
    let n = name.as_str().as_bytes();
    h.update([n.len() as u8]);
    h.update(n);
    h.update((owners.len() as u32).to_be_bytes());
    for o in &owners {
        h.update(o);
    }
    h.update((devs.len() as u32).to_be_bytes());
    for d in &devs {
        h.update(d);
    }
    let digest = h.finalize();
    digest[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl VerifiedUser {
    /// This record's key fingerprint ([`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        let owners = self
            .lookup
            .record()
            .map(|r| r.owners.keys().to_vec())
            .unwrap_or_default();
        fingerprint(self.lookup.name(), &owners, &self.record.devices)
    }
}

/// A `~server` record, parsed from a light-client lookup.
#[derive(Debug, Clone)]
pub struct VerifiedServer {
    lookup: Verified<Lookup>,
    record: ServerRecord,
}

impl VerifiedServer {
    /// Parse a verified lookup of a `~server` name.
    pub fn from_lookup(lookup: Verified<Lookup>) -> Result<Self, RecordError> {
        let value = registered(&lookup, NameKind::Server, "~server")?;
        let record = ServerRecord::from_value(lookup.name(), value)?;
        Ok(VerifiedServer { lookup, record })
    }

    /// The parsed value.
    pub fn record(&self) -> &ServerRecord {
        &self.record
    }

    /// The lookup it came from.
    pub fn lookup(&self) -> &Verified<Lookup> {
        &self.lookup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn user(n: usize) -> UserRecord {
        UserRecord {
            server: name("~s1"),
            devices: (0..n)
                .map(|i| Device {
                    sign: PublicKey([i as u8 + 1; 32]),
                    kx: KxPublicKey([i as u8 + 100; 32]),
                })
                .collect(),
        }
    }

    #[test]
    fn fingerprint_is_pinned_and_changes_with_keys_only() {
        let owners = [PublicKey([9; 32])];
        let two = user(2);
        let fp = fingerprint(&name("@bob"), &owners, &two.devices);
        // Computed independently (Python hashlib) from the layout above.
        assert_eq!(fp, "35747 84405 39061 49392 80800 99673");
        // Order does not matter; a device added, another owner or
        // another name does.
        let mut rev = two.devices.clone();
        rev.reverse();
        assert_eq!(fingerprint(&name("@bob"), &owners, &rev), fp);
        assert_ne!(fingerprint(&name("@bob"), &owners, &user(3).devices), fp);
        assert_ne!(
            fingerprint(&name("@bob"), &[PublicKey([8; 32])], &two.devices),
            fp
        );
        assert_ne!(fingerprint(&name("@bo"), &owners, &two.devices), fp);
    }

    #[test]
    fn user_value_layout_is_pinned() {
        let v = user(1).to_value().expect("valid");
        // tag, u64le(3), "~s1", u64le(1), sign, kx
        let mut want = vec![USER_TAG];
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"~s1");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[100; 32]);
        assert_eq!(v, want);
        assert_eq!(UserRecord::from_value(&name("@a"), &v), Ok(user(1)));
    }

    #[test]
    fn server_value_layout_is_pinned() {
        let r = ServerRecord {
            key: PublicKey([9; 32]),
            urls: vec!["http://x".into()],
        };
        let v = r.to_value().expect("valid");
        let mut want = vec![SERVER_TAG];
        want.extend_from_slice(&[9; 32]);
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&8u64.to_le_bytes());
        want.extend_from_slice(b"http://x");
        assert_eq!(v, want);
        assert_eq!(ServerRecord::from_value(&name("~x"), &v), Ok(r));
    }

    #[test]
    fn rules_are_enforced_both_ways() {
        assert!(user(0).to_value().is_err());
        assert!(user(MAX_DEVICES + 1).to_value().is_err());
        let mut dup = user(2);
        dup.devices[1].kx = dup.devices[0].kx;
        assert!(dup.to_value().is_err());
        let mut not_server = user(1);
        not_server.server = name("@bob");
        assert!(not_server.to_value().is_err());
        // Encoded without the checks, then refused on parse.
        let raw = to_value(USER_TAG, &not_server);
        assert!(matches!(
            UserRecord::from_value(&name("@a"), &raw),
            Err(RecordError::Malformed { .. })
        ));
        let bad_url = ServerRecord {
            key: PublicKey([1; 32]),
            urls: vec!["ftp://x".into()],
        };
        assert!(bad_url.to_value().is_err());
        // A server value is not a user value, and vice versa.
        let sv = ServerRecord {
            key: PublicKey([1; 32]),
            urls: vec!["http://x".into()],
        }
        .to_value()
        .expect("valid");
        assert!(matches!(
            UserRecord::from_value(&name("@a"), &sv),
            Err(RecordError::WrongTag {
                tag: SERVER_TAG,
                ..
            })
        ));
        assert!(matches!(
            ServerRecord::from_value(&name("~a"), &[]),
            Err(RecordError::WrongTag { tag: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn user_values_round_trip_and_reject_damage(
            n in 1usize..=MAX_DEVICES,
            cut in 0usize..600,
            extra in any::<u8>(),
        ) {
            let r = user(n);
            let v = r.to_value().expect("valid");
            prop_assert_eq!(UserRecord::from_value(&name("@a"), &v), Ok(r));
            let mut longer = v.clone();
            longer.push(extra);
            prop_assert!(UserRecord::from_value(&name("@a"), &longer).is_err());
            if cut < v.len() {
                prop_assert!(UserRecord::from_value(&name("@a"), &v[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = UserRecord::from_value(&name("@a"), &bytes);
            let _ = ServerRecord::from_value(&name("~a"), &bytes);
        }
    }
}
