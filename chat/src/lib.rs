//! Xirtam chat: `@user` / `~server` records, end-to-end encryption, the
//! concierge server and the client library.
//!
//! Directory data reaches this crate only as values verified by the light
//! client; it never depends on the node crate. Placeholder until its issue
//! lands; see `docs/ARCHITECTURE.md`.

pub use xirtam_proofs as proofs;
