//! # xirtam-proofs
//!
//! The pure core of Xirtam: everything that is hashed, signed, mined and
//! proven, with no I/O, no async runtime, no networking and no database.
//! Full nodes, light clients and chat clients all build on these rules, so
//! they can never disagree about what is valid.
//!
//! * [`hash`]: BLAKE3 with domain tags; [`keys`]: Ed25519 over tagged bytes;
//! * [`encoding`]: the one canonical bincode configuration;
//! * [`name`], [`op`]: names, records, ops, stamps, and the state rule
//!   [`op::apply`];
//! * [`pow`], [`difficulty`], [`header`]: targets, work, ASERT, timestamps
//!   and [`header::validate_header_chain`];
//! * [`block`]: blocks, `ops_root` and op-inclusion proofs;
//! * [`state`]: the name-state tree and [`state::verify_state`];
//! * [`history`]: the header MMR behind `history_root`;
//! * [`params`]: network constants and genesis.
//!
//! The byte-level specification is `docs/protocol.md`.

pub mod block;
pub mod difficulty;
pub mod encoding;
pub mod hash;
pub mod header;
pub mod history;
pub mod keys;
pub mod name;
pub mod op;
pub mod params;
pub mod pow;
pub mod state;

pub use block::{Block, BlockError, OpProof, ops_root, verify_op};
pub use encoding::{DecodeError, decode, decode_hex, encode};
pub use hash::Hash;
pub use header::{ChainState, Header, HeaderError, validate_header_chain};
pub use keys::{PublicKey, SecretKey, Signature};
pub use name::Name;
pub use op::{Claim, Commit, Draft, Op, OpError, Owners, Record, Stamp, Value, Write, apply};
pub use params::{LOCAL, Params, REGTEST, TESTNET};
pub use pow::{CompactTarget, U256};
pub use state::{StateProof, verify_state};
