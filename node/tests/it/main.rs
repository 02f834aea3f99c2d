//! Node integration tests: one binary, modules per area. Servers listen on
//! 127.0.0.1 port 0; nothing sleeps to synchronise.

mod attacks;
mod bad_input;
mod claims;
mod common;
mod crash;
mod directory;
mod min_work;
mod reorg;
