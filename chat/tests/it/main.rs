//! Integration tests of the chat crate: the concierge server in process,
//! and the client core against an in-memory chain and servers.

mod client;
mod memory;
mod server;
