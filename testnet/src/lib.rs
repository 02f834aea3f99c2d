//! Xirtam local testnet harness: starts directory nodes and chat servers as
//! processes on loopback for the demo, integration tests and whole-system
//! benchmarks. Placeholder until its issue lands; see `docs/ARCHITECTURE.md`.

pub use xirtam_proofs as proofs;
