//! Xirtam directory full node.
//!
//! Will hold the RocksDB store, chain (validation, fork choice, reorg), the
//! on-disk state tree, mempool, miner, libp2p networking and the JSON-RPC
//! server, with the `xirtam-node` binary. For now it only re-exports the pure
//! core it is built on; see `docs/ARCHITECTURE.md` for the plan.

pub use xirtam_proofs as proofs;
