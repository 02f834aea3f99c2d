//! Multi-process tests: real `xirtam-node` processes on loopback, started
//! through the `xirtam-testnet` library.

mod chat;
mod common;
mod groups;
mod lightclient;
mod network;
mod rogue;
mod tui;
