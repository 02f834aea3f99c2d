//! Blocks the chain holds in memory without storing them: orphans (parent
//! unknown) and blocks whose branch has less work than the tip (branch
//! admission). Bounded by count and bytes; the oldest go first. A held
//! block has passed the cheap checks only: real work in its header, and a
//! body that matches the header and its size limits.

use std::collections::{HashMap, VecDeque};

use xirtam_proofs::{Block, Hash, encode};

/// The held blocks.
#[derive(Debug, Default)]
pub(super) struct Held {
    blocks: HashMap<Hash, (Block, usize)>,
    children: HashMap<Hash, Vec<Hash>>,
    /// Insertion order (may still name blocks taken out since).
    order: VecDeque<Hash>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Held {
    pub(super) fn new(max_count: usize, max_bytes: usize) -> Self {
        Held {
            max_count: max_count.max(1),
            max_bytes,
            ..Held::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn get(&self, hash: &Hash) -> Option<&Block> {
        self.blocks.get(hash).map(|(b, _)| b)
    }

    /// Hold `block`, dropping the oldest held blocks beyond the bounds.
    pub(super) fn insert(&mut self, hash: Hash, block: Block) {
        if self.blocks.contains_key(&hash) {
            return;
        }
        let len = encode(&block).len();
        while !self.blocks.is_empty()
            && (self.blocks.len() >= self.max_count || self.bytes + len > self.max_bytes)
        {
            match self.order.pop_front() {
                Some(old) => {
                    self.remove(&old);
                }
                None => break,
            }
        }
        self.children
            .entry(block.header.prev)
            .or_default()
            .push(hash);
        self.order.push_back(hash);
        self.bytes += len;
        self.blocks.insert(hash, (block, len));
    }

    /// Take a held block out.
    pub(super) fn remove(&mut self, hash: &Hash) -> Option<Block> {
        let (block, len) = self.blocks.remove(hash)?;
        self.bytes -= len;
        if let Some(v) = self.children.get_mut(&block.header.prev) {
            v.retain(|h| h != hash);
            if v.is_empty() {
                self.children.remove(&block.header.prev);
            }
        }
        if self.order.len() > 2 * self.blocks.len() + 64 {
            let blocks = &self.blocks;
            self.order.retain(|h| blocks.contains_key(h));
        }
        Some(block)
    }

    /// Take out every held child of `parent`.
    pub(super) fn take_children(&mut self, parent: &Hash) -> Vec<Block> {
        let hashes = self.children.get(parent).cloned().unwrap_or_default();
        hashes.iter().filter_map(|h| self.remove(h)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xirtam_proofs::LOCAL;

    fn block(prev: u8, nonce: u64) -> Block {
        let mut header = LOCAL.genesis_header();
        header.prev = Hash([prev; 32]);
        header.nonce = nonce;
        Block {
            header,
            ops: vec![],
        }
    }

    #[test]
    fn bounded_by_count_and_bytes_oldest_first() {
        let one = encode(&block(1, 0)).len();
        let mut h = Held::new(3, 10 * one);
        for n in 0..5 {
            let b = block(1, n);
            h.insert(b.header.hash(), b);
        }
        assert_eq!(h.len(), 3);
        assert!(h.get(&block(1, 0).header.hash()).is_none());
        assert!(h.get(&block(1, 4).header.hash()).is_some());
        let mut h = Held::new(100, 2 * one);
        for n in 0..5 {
            let b = block(2, n);
            h.insert(b.header.hash(), b);
        }
        assert_eq!((h.len(), h.bytes()), (2, 2 * one));
        assert_eq!(h.take_children(&Hash([2; 32])).len(), 2);
        assert_eq!((h.len(), h.bytes()), (0, 0));
    }
}
