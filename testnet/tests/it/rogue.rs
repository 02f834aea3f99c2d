//! A rogue peer, built here with the node's own libp2p stack, gossips an
//! invalid block, a block with bad proof of work, and garbage. Each time the
//! honest node rejects it, bans the sender and does not forward it; the
//! honest nodes stay in sync.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, gossipsub, identity};
use xirtam_node::p2p::{BehaviourEvent, build_swarm, protocol};
use xirtam_node::rpc::{HeightOrHash, NodeApiClient};
use xirtam_proofs::block::Block;
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::pow::meets_target;
use xirtam_proofs::{Hash, decode_hex, encode};
use xirtam_testnet::{Config, Testnet, Topology, wait_for};

/// Connect a fresh rogue identity to `addr`, wait until the honest node
/// subscribes us to the blocks topic, publish `data`, and wait to be
/// disconnected. Returns the rogue's peer id.
async fn misbehave(addr: &Multiaddr, data: Vec<u8>) -> libp2p::PeerId {
    let keypair = identity::Keypair::generate_ed25519();
    let me = keypair.public().to_peer_id();
    let mut swarm = build_swarm(&REGTEST, keypair, 8).expect("rogue swarm");
    let topic = gossipsub::IdentTopic::new(protocol::blocks_topic(&REGTEST));
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .expect("subscribe");
    swarm.dial(addr.clone()).expect("dial");
    let mut published = false;
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                    gossipsub::Event::Subscribed { topic: t, .. },
                )) if t == topic.hash() && !published => {
                    swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), data.clone())
                        .expect("publish");
                    published = true;
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } if published => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the honest node should disconnect the rogue peer"
    );
    me
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_peer_is_banned_and_its_data_not_forwarded() {
    let net = Testnet::start(Config {
        nodes: 2,
        topology: Topology::Line,
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    net.mine(0, 2).await.expect("mine");
    net.wait_same_tip(&[0, 1], 2).await.expect("in sync");

    // A real block to tamper with.
    let view = net
        .rpc(0)
        .chain_block(HeightOrHash::Height(1))
        .await
        .expect("block 1");
    let good: Block = decode_hex(&view.block).expect("block decodes");

    // Invalid: a different state root (proof of work redone, so only the
    // state rule fails).
    let mut invalid = good.clone();
    invalid.header.state_root = Hash([7; 32]);
    let target = invalid.header.target().expect("target").to_be_bytes();
    while !meets_target(&invalid.header.hash(), &target) {
        invalid.header.nonce += 1;
    }
    // Bad proof of work: a nonce whose hash misses the target.
    let mut bad_pow = good.clone();
    bad_pow.header.nonce += 1;
    while meets_target(&bad_pow.header.hash(), &target) {
        bad_pow.header.nonce += 1;
    }
    let garbage = b"\xff\xfe not a block at all".to_vec();

    let addr: Multiaddr = net.node(0).p2p_addr.parse().expect("multiaddr");
    let mut rogues = Vec::new();
    for data in [encode(&invalid), encode(&bad_pow), garbage] {
        rogues.push(misbehave(&addr, data).await);
    }

    let info0 = net.net_info(0).await.expect("info");
    for r in &rogues {
        assert!(
            info0.banned.contains(&r.to_string()),
            "{r} banned: {info0:?}"
        );
    }
    assert_eq!(info0.stats.garbage, 1);
    assert_eq!(info0.stats.blocks_rejected, 2);
    assert_eq!(info0.stats.bans, 3);
    // Node 1 never saw any of it: node 0 did not forward.
    let info1 = net.net_info(1).await.expect("info");
    assert_eq!(
        info1.stats.garbage + info1.stats.blocks_rejected,
        0,
        "{info1:?}"
    );
    assert_eq!(info1.stats.bans, 0);
    // The honest nodes still talk and stay in sync.
    net.mine(0, 1).await.expect("mine");
    let tip = net.wait_same_tip(&[0, 1], 3).await.expect("still in sync");
    assert_eq!(tip.height, 3);
    wait_for(
        "node 0 still has its honest peer",
        Duration::from_secs(10),
        || async { net.net_info(0).await.ok().filter(|i| i.peers.len() == 1) },
    )
    .await
    .expect("honest peer kept");
}
