//! Mining on OS threads (never on the async runtime).
//!
//! Each thread builds a template from the tip and the mempool, then searches
//! its own nonce range in slices, checking between slices whether the tip
//! changed (restart on the new tip) or the mempool gained ops (refresh the
//! template at most once a second so new ops get in).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xirtam_proofs::block::Block;
use xirtam_proofs::header::mine;

use crate::node::Node;
use crate::store::KvStore;

/// Nonces tried between checks for a new tip.
const SLICE: u64 = 50_000;

/// Start `threads` mining threads. They stop when the node shuts down.
pub fn start<S: KvStore>(node: Arc<Node<S>>, threads: usize) -> Vec<JoinHandle<()>> {
    (0..threads.max(1))
        .filter_map(|i| {
            let node = node.clone();
            std::thread::Builder::new()
                .name(format!("miner-{i}"))
                .spawn(move || run(node, i as u64))
                .map_err(
                    |e| tracing::error!(target: "miner", error = %e, "cannot start miner thread"),
                )
                .ok()
        })
        .collect()
}

fn run<S: KvStore>(node: Arc<Node<S>>, index: u64) {
    tracing::info!(target: "miner", thread = index, "mining");
    while !node.is_shutting_down() {
        let pool_seq = node.pool_seq();
        let mut t = match node.template() {
            Ok(Some(t)) => t,
            Ok(None) => {
                // Timestamps would run too far ahead of the clock.
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            Err(e) => {
                tracing::error!(target: "miner", error = %e, "cannot build a block template");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let built = Instant::now();
        // Disjoint nonce ranges per thread.
        let mut nonce = index << 56;
        loop {
            if node.is_shutting_down() || node.tip_seq() != t.tip_seq {
                break;
            }
            if node.pool_seq() != pool_seq && built.elapsed() > Duration::from_secs(1) {
                break;
            }
            if mine(&mut t.header, nonce, SLICE) {
                let block = Block {
                    header: t.header,
                    ops: std::mem::take(&mut t.ops),
                };
                let height = block.header.height;
                match node.submit_local_block(block) {
                    Ok(_) => tracing::debug!(target: "miner", height, "mined a block"),
                    Err(e) => {
                        tracing::warn!(target: "miner", height, error = %e, "mined block rejected")
                    }
                }
                break;
            }
            nonce = nonce.wrapping_add(SLICE);
        }
    }
    tracing::info!(target: "miner", thread = index, "stopped");
}
