//! Xirtam chat: `@user` / `~server` records, end-to-end encryption, the
//! concierge server and the client library.
//!
//! Directory data reaches this crate only as values verified by the light
//! client ([`records::VerifiedUser`], [`records::VerifiedServer`] are built
//! from `xirtam_lightclient::Verified` lookups); it never depends on the
//! node crate.
//!
//! * [`records`]: what `@user` and `~server` record values mean, their
//!   encoding and rules;
//! * [`crypto`]: device and medium-term keys, signed events, encryption
//!   once per message with the key wrapped per device (HPKE);
//! * [`mailbox`]: the concierge server's mailbox storage (RocksDB,
//!   server-assigned sequence numbers, one `WriteBatch` per append).
//!
//! Still to come (issue 6): the concierge server's RPC, the client library,
//! the CLI.

pub mod crypto;
pub mod mailbox;
pub mod records;

pub use records::{
    Device, KxPublicKey, RecordError, ServerRecord, UserRecord, VerifiedServer, VerifiedUser,
};
pub use xirtam_proofs as proofs;
