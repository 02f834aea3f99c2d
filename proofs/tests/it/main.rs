//! Integration tests of the pure core: one binary, modules per area.

mod common;
mod decode_fuzz;
mod headers;
mod ops;
mod roundtrip;
mod state_proofs;
mod vectors;
