//! Light-client integration tests against in-memory sources (honest,
//! tampering, lying, down). Tests against real nodes live in `testnet`.

mod mock;
mod resolve;
mod sync;
