//! State proofs against random trees: every present name's inclusion proof
//! and random absent names' exclusion proofs verify; flipping any bit of a
//! proof, a record or the root makes verification fail.

use std::collections::BTreeMap;

use proptest::prelude::*;
use xirtam_proofs::state::{self, NodeRef, StateProof, StateProofError, verify_state};
use xirtam_proofs::{Hash, Name, Record, decode, encode};

use crate::common::{key, record, tree};
use crate::roundtrip;

/// Flip bit `bit` of `bytes`.
fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[bit / 8] ^= 0x80 >> (bit % 8);
    b
}

/// Every way of presenting `(root, name, record, proof)` with one bit
/// flipped must fail: the proof either no longer decodes or no longer
/// verifies.
fn assert_every_flip_fails(
    root: &Hash,
    name: &Name,
    rec: Option<&Record>,
    proof: &StateProof,
    bits: impl Iterator<Item = usize> + Clone,
) {
    let pb = encode(proof);
    for bit in bits.clone().map(|b| b % (pb.len() * 8)) {
        if let Ok(p) = decode::<StateProof>(&flip(&pb, bit)) {
            assert!(
                verify_state(root, name, rec, &p).is_err(),
                "proof bit {bit} flipped still verifies"
            );
        }
    }
    for bit in bits.clone().map(|b| b % 256) {
        let r = Hash::from(<[u8; 32]>::try_from(flip(&root.0, bit)).expect("32 bytes"));
        assert!(
            verify_state(&r, name, rec, proof).is_err(),
            "root bit {bit} flipped still verifies"
        );
    }
    if let Some(rec) = rec {
        let rb = encode(rec);
        for bit in bits.map(|b| b % (rb.len() * 8)) {
            if let Ok(r) = decode::<Record>(&flip(&rb, bit)) {
                assert!(
                    verify_state(root, name, Some(&r), proof).is_err(),
                    "record bit {bit} flipped still verifies"
                );
            }
        }
    }
}

fn records(names: &[Name]) -> Vec<(Name, Record)> {
    let owner = key(1);
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), record(i as u64 + 1, &owner, &[i as u8; 64])))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_tree_inclusion_and_exclusion(
        names in prop::collection::btree_set(roundtrip::name(), 1..120),
        absent in prop::collection::vec(roundtrip::name(), 1..30),
        bits in prop::collection::vec(any::<usize>(), 8),
    ) {
        let names: Vec<Name> = names.into_iter().collect();
        let recs = records(&names);
        let (store, root) = tree(&recs);
        let map: BTreeMap<_, _> = recs.iter().cloned().collect();
        for (n, r) in &recs {
            let (v, p) = state::prove(&store, NodeRef::new(root, 0), &n.key_hash()).expect("stored");
            prop_assert_eq!(v, Some(r.hash()));
            prop_assert_eq!(verify_state(&root, n, Some(r), &p), Ok(()));
            prop_assert!(verify_state(&root, n, None, &p).is_err());
            assert_every_flip_fails(&root, n, Some(r), &p, bits.iter().copied());
        }
        for n in absent.iter().filter(|n| !map.contains_key(*n)) {
            let (v, p) = state::prove(&store, NodeRef::new(root, 0), &n.key_hash()).expect("stored");
            prop_assert_eq!(v, None);
            prop_assert_eq!(verify_state(&root, n, None, &p), Ok(()));
            // An absence proof cannot be passed off as a record.
            prop_assert!(verify_state(&root, n, Some(&recs[0].1), &p).is_err());
            assert_every_flip_fails(&root, n, None, &p, bits.iter().copied());
        }
    }

    #[test]
    fn a_proof_for_one_name_does_not_prove_another(
        names in prop::collection::btree_set(roundtrip::name(), 2..60),
    ) {
        let names: Vec<Name> = names.into_iter().collect();
        let recs = records(&names);
        let (store, root) = tree(&recs);
        let (_, p) = state::prove(&store, NodeRef::new(root, 0), &names[0].key_hash()).expect("stored");
        for (n, r) in recs.iter().skip(1) {
            prop_assert!(verify_state(&root, n, Some(r), &p).is_err());
            prop_assert!(verify_state(&root, n, Some(&recs[0].1), &p).is_err());
        }
    }
}

#[test]
fn every_single_bit_flip_fails_exhaustively() {
    let names: Vec<Name> = (0..500)
        .map(|i| Name::new(&format!("@user{i}")).expect("valid"))
        .collect();
    let recs = records(&names);
    let (store, root) = tree(&recs);
    let (n, r) = &recs[123];
    let (_, p) = state::prove(&store, NodeRef::new(root, 0), &n.key_hash()).expect("stored");
    let all = 0..(encode(&p).len() * 8).max(encode(r).len() * 8).max(256);
    assert_every_flip_fails(&root, n, Some(r), &p, all.clone());
    let absent = Name::new("@nobody").expect("valid");
    let (v, p) = state::prove(&store, NodeRef::new(root, 0), &absent.key_hash()).expect("stored");
    assert_eq!(v, None);
    assert_every_flip_fails(&root, &absent, None, &p, 0..encode(&p).len() * 8);
}

#[test]
fn exclusion_kinds_are_both_exercised_and_checked() {
    let names: Vec<Name> = (0..64)
        .map(|i| Name::new(&format!("@n{i}")).expect("valid"))
        .collect();
    let recs = records(&names);
    let (store, root) = tree(&recs);
    let (mut empty, mut other) = (0, 0);
    for i in 0..400 {
        let n = Name::new(&format!("@absent{i}")).expect("valid");
        let (_, p) = state::prove(&store, NodeRef::new(root, 0), &n.key_hash()).expect("stored");
        match p.terminal {
            state::Terminal::Empty => empty += 1,
            state::Terminal::Other { key, value } => {
                other += 1;
                // Moving the other leaf off the path is caught explicitly.
                let mut off = p.clone();
                let mut k = key;
                k.0[0] ^= 0x80;
                off.terminal = state::Terminal::Other { key: k, value };
                if !p.siblings.is_empty() {
                    assert_eq!(
                        verify_state(&root, &n, None, &off),
                        Err(StateProofError::OtherLeafOffPath)
                    );
                }
                // Claiming the present name is absent using its own leaf fails.
            }
            state::Terminal::Leaf => panic!("absent name proved present"),
        }
        assert_eq!(verify_state(&root, &n, None, &p), Ok(()));
    }
    assert!(
        empty > 0 && other > 0,
        "both exclusion kinds seen: {empty} empty, {other} other"
    );
    // A present name cannot be proven absent with an "other leaf" proof that
    // is really its own leaf.
    let (n, r) = &recs[0];
    let (_, p) = state::prove(&store, NodeRef::new(root, 0), &n.key_hash()).expect("stored");
    let fake = StateProof {
        siblings: p.siblings.clone(),
        terminal: state::Terminal::Other {
            key: n.key_hash(),
            value: r.hash(),
        },
    };
    assert_eq!(
        verify_state(&root, n, None, &fake),
        Err(StateProofError::ExpectedExclusion)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reading many keys in one descent answers exactly what one walk per
    /// key answers: present keys, absent ones (ending on an empty subtree or
    /// on another key's leaf) and duplicates, in the order asked.
    #[test]
    fn get_many_matches_get_per_key(
        present in prop::collection::btree_map(any::<[u8; 32]>(), any::<[u8; 32]>(), 0..200),
        absent in prop::collection::vec(any::<[u8; 32]>(), 0..40),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..60),
    ) {
        let items: Vec<(Hash, Hash)> =
            present.iter().map(|(k, v)| (Hash::from(*k), Hash::from(*v))).collect();
        let mut store = state::MemoryNodeStore::new();
        let (root, nodes) = state::update(&store, NodeRef::EMPTY, 1, &items).expect("in memory");
        store.insert_batch(nodes);
        let mut keys: Vec<Hash> = absent.into_iter().map(Hash::from).collect();
        if !items.is_empty() {
            // Present keys, some of them more than once, interleaved.
            for p in &picks {
                keys.push(items[p.index(items.len())].0);
            }
        }
        keys.reverse();
        let many = state::get_many(&store, root, &keys).expect("in memory");
        prop_assert_eq!(many.len(), keys.len());
        for (k, got) in keys.iter().zip(&many) {
            prop_assert_eq!(*got, state::get(&store, root, k).expect("in memory"));
            prop_assert_eq!(*got, present.get(&k.0).map(|v| Hash::from(*v)));
        }
    }
}
