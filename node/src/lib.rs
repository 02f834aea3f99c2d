//! Xirtam directory full node.
//!
//! * [`store`]: key-value trait, RocksDB and in-memory implementations;
//! * [`chain`]: validation, storage of every valid block, fork choice, reorgs;
//! * [`mempool`]: validated pending ops;
//! * [`miner`]: mining threads;
//! * [`node`]: chain and mempool behind one lock;
//! * [`p2p`]: libp2p gossip, headers-first sync, discovery, peer scoring;
//! * [`rpc`]: the JSON-RPC server, implementing the contract of the
//!   `xirtam-node-api` crate.
//!
//! The binary (`src/bin/xirtam-node`) adds the CLI: running a node, keys,
//! and the user side of claiming, updating and looking up names.
//!
//! The consensus rules themselves live in `xirtam-proofs`.

pub mod chain;
pub mod mempool;
pub mod miner;
pub mod node;
pub mod p2p;
pub mod rpc;
pub mod store;

pub use xirtam_proofs as proofs;
