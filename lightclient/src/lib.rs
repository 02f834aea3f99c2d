//! # xirtam-lightclient
//!
//! Trustless name lookups. The client knows only its network's genesis (or
//! a checkpoint), follows the header chain with the most proof of work
//! across several directory nodes it does not trust, and checks every
//! record against a header it verified itself:
//!
//! * [`source`]: the nodes, behind the [`Source`] trait ([`HttpSource`]
//!   speaks the node's JSON-RPC); answers are decoded with limits, never
//!   believed;
//! * [`client`]: [`LightClient`] - sync (headers verified one by one,
//!   faulty sources dropped) and [`LightClient::resolve`];
//! * `store`: the verified headers on disk, so a restart resumes;
//! * [`verified`]: [`Verified`], which only this crate can construct;
//! * `memory` (feature `memory`): an in-memory chain and an honest source
//!   over it, for tests of what is built on the light client.
//!
//! Verification itself (proof of work, difficulty, timestamps, state proofs)
//! is `xirtam-proofs`; this crate adds sources and storage. The trust model
//! is in `docs/lightclient.md`. It never depends on the node crate.

pub mod client;
mod faults;
#[cfg(feature = "memory")]
pub mod memory;
pub mod source;
mod store;
pub mod verified;

pub use client::{
    Checkpoint, Config, Error, LightClient, PendingClaim, SourceReport, SourceStatus, SyncReport,
    Tip,
};
pub use source::{CommitAnswer, DirAnswer, HttpSource, Source, SourceError, TipClaim};
pub use store::{LoadReport, StoreError};
pub use verified::{Lookup, Verified};
pub use xirtam_proofs as proofs;
