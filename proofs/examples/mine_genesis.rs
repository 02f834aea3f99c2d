//! Mine the genesis nonce of each network and print the constants to pin in
//! `proofs/src/params.rs`.
//!
//! `cargo run --release -p xirtam-proofs --example mine_genesis`

use xirtam_proofs::header::mine;
use xirtam_proofs::params::{LOCAL, REGTEST, TESTNET};

fn main() {
    for p in [&LOCAL, &TESTNET, &REGTEST] {
        let mut g = p.genesis_header();
        if !mine(&mut g, 0, u64::MAX) {
            eprintln!("{}: no nonce found", p.name);
            std::process::exit(1);
        }
        let h = g.hash();
        let bytes: Vec<String> = h.0.iter().map(|b| format!("0x{b:02x}")).collect();
        println!("{}: nonce {} hash {}", p.name, g.nonce, h);
        println!("    [{}]", bytes.join(", "));
    }
}
