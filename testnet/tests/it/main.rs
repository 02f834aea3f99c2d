//! Multi-process tests: real `xirtam-node` processes on loopback, started
//! through the `xirtam-testnet` library.

mod chat;
mod common;
mod lightclient;
mod network;
mod rogue;
