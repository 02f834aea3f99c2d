//! Xirtam light client.
//!
//! Will sync and verify headers from several untrusted directory nodes and
//! resolve names to `Verified` records using the proof checks in
//! `xirtam-proofs`. It must never depend on the node crate. Placeholder until
//! its issue lands; see `docs/ARCHITECTURE.md`.

pub use xirtam_proofs as proofs;
