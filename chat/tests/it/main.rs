//! Integration tests of the chat crate (in-process concierge server).

mod server;
