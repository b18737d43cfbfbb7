//! Network tests with real swarms on 127.0.0.1. Every wait polls a condition against a
//! deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lamina_primitives::interfaces::consensus::{
    ConsensusHandle, ConsensusRequest, ConsensusStatus,
};
use lamina_primitives::interfaces::da::{DaError, ShareHolder};
use lamina_primitives::interfaces::{Events, Mailbox, RequestError};
use lamina_primitives::{
    Address, Blob, Block, BlockHeader, Certificate, CommittedBlock, Hash, Namespace,
};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::codec::{SyncResponse, MAX_BLOCKS_PER_REQUEST, SERVE_TARGET_BYTES};
use super::service::{blocks_response, Layers};
use super::*;

const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const CHAIN: &str = "lamina-test";
const COMPAT: &str = "consensus=solo";

/// A committed block at `height` whose body carries `payload` bytes. Certificates are not
/// checked by the network, so an empty one does.
fn block(height: u64, payload: usize) -> CommittedBlock {
    let body = vec![Blob {
        namespace: Namespace::EXECUTION,
        data: vec![height as u8; payload],
    }];
    let header = BlockHeader {
        chain_id: CHAIN.into(),
        height,
        parent_hash: Hash::ZERO,
        timestamp_ms: height,
        proposer: Address::default(),
        data_root: Hash::ZERO,
        body_size: payload as u64,
    };
    let certificate = Certificate {
        height,
        round: 0,
        block_hash: header.hash(),
        signatures: Vec::new(),
    };
    CommittedBlock {
        block: Block { header, body },
        certificate,
    }
}

/// A consensus engine that only answers reads, from a fixed set of blocks.
fn consensus(blocks: impl IntoIterator<Item = CommittedBlock>) -> ConsensusHandle {
    let store: BTreeMap<u64, Arc<CommittedBlock>> = blocks
        .into_iter()
        .map(|block| (block.block.header.height, Arc::new(block)))
        .collect();
    let (mailbox, mut requests) = Mailbox::new("consensus", 64);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            // Other requests are not the network's business.
            #[allow(unreachable_patterns)]
            match request {
                ConsensusRequest::GetStatus { reply } => {
                    let _ = reply.send(ConsensusStatus {
                        engine: "test".into(),
                        committed_height: store.keys().next_back().copied().unwrap_or(0),
                        last_block_hash: Hash::ZERO,
                        validator: None,
                        round: 0,
                        validators: 1,
                        pruned_through: 0,
                    });
                }
                ConsensusRequest::GetBlock { height, reply } => {
                    let _ = reply.send(Ok(store.get(&height).cloned()));
                }
                ConsensusRequest::GetHeader { height, reply } => {
                    let _ = reply.send(Ok(store.get(&height).map(|block| block.header_only())));
                }
                // Nothing is ever pruned here: every body stays servable.
                ConsensusRequest::PruneBodies { reply, .. } => {
                    let _ = reply.send(Ok(0));
                }
                _ => {}
            }
        }
    });
    ConsensusHandle::new(mailbox, Events::new(16))
}

/// A real DA layer of `kind` over a temporary database.
fn da_layer(kind: lamina_da::DaKind) -> DaHandle {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let config = lamina_da::DaConfig {
        kind,
        threads: 1,
        ..lamina_da::DaConfig::default()
    };
    lamina_da::spawn(config, &db).unwrap()
}

fn config(peers: Vec<Multiaddr>) -> NetworkConfig {
    NetworkConfig {
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        peers,
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(b"genesis"),
        compat: COMPAT.into(),
        topic_limits: TopicLimits {
            consensus: 64 << 10,
            transactions: 1024,
            settlement: 4096,
            blobs: 4096,
            rows: 64 << 10,
        },
        holders: 2,
        holder: None,
    }
}

struct Node {
    net: NetworkHandle,
    events: mpsc::Receiver<NetworkEvent>,
}

impl Node {
    fn start(config: NetworkConfig, discovery: bool) -> Node {
        Node::with_blocks(config, discovery, Vec::new())
    }

    fn with_blocks(config: NetworkConfig, discovery: bool, blocks: Vec<CommittedBlock>) -> Node {
        let da = da_layer(lamina_da::DaKind::Replicated);
        Node::with_layers(config, discovery, blocks, da)
    }

    fn with_layers(
        config: NetworkConfig,
        discovery: bool,
        blocks: Vec<CommittedBlock>,
        da: DaHandle,
    ) -> Node {
        let (net, events) = spawn_with(
            config,
            Keypair::generate_ed25519(),
            consensus(blocks),
            da,
            discovery,
        )
        .unwrap();
        Node { net, events }
    }

    fn id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    fn addr(&self) -> Multiaddr {
        self.net.listen_addr()
    }

    async fn verified_peers(&self) -> Vec<PeerId> {
        let peers = self.net.peers().await.unwrap();
        peers.into_iter().map(|peer| peer.peer_id).collect()
    }

    async fn mesh(&self, topic: Topic) -> Vec<PeerId> {
        let mut inspection = self.net.inspect().await.unwrap();
        inspection.mesh.remove(&topic).unwrap_or_default()
    }

    /// The next gossip message, skipping status events.
    async fn next_gossip(&mut self) -> (Topic, MessageId, PeerId, Vec<u8>) {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(NetworkEvent::Gossip {
                        topic,
                        id,
                        source,
                        data,
                    }) => return (topic, id, source, data),
                    Some(NetworkEvent::PeerStatus { .. }) => continue,
                    None => panic!("network service stopped"),
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("no gossip message before the deadline")
    }

    /// True if a gossip message is waiting right now.
    fn has_gossip(&mut self) -> bool {
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, NetworkEvent::Gossip { .. }) {
                return true;
            }
        }
        false
    }
}

/// Polls `condition` until it holds, failing the test at the deadline.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_relayed_only_after_acceptance() {
    // A line without discovery, so that everything A gets has come through B.
    let mut a = Node::start(config(vec![]), false);
    let mut b = Node::start(config(vec![a.addr()]), false);
    let c = Node::start(config(vec![b.addr()]), false);
    let topic = Topic::Transactions;
    eventually("the line's gossip meshes", || async {
        let b_mesh = b.mesh(topic).await;
        b_mesh.contains(&a.id())
            && b_mesh.contains(&c.id())
            && a.mesh(topic).await.contains(&b.id())
            && c.mesh(topic).await.contains(&b.id())
    })
    .await;
    assert!(!a.net.inspect().await.unwrap().connected.contains(&c.id()));

    c.net.publish(topic, b"first".to_vec()).await.unwrap();
    let (got_topic, id, source, data) = b.next_gossip().await;
    assert_eq!(
        (got_topic, source, data.as_slice()),
        (topic, c.id(), &b"first"[..])
    );
    // B has not judged it yet, so it has not passed it on.
    assert!(!a.has_gossip());
    b.net.report(id, source, Verdict::Accept);
    let (_, a_id, a_source, a_data) = a.next_gossip().await;
    assert_eq!((a_id, a_source, a_data), (id, b.id(), b"first".to_vec()));
    a.net.report(a_id, a_source, Verdict::Accept);

    // A message B rejects stops at B; the next accepted one arrives first at A.
    c.net.publish(topic, b"bad".to_vec()).await.unwrap();
    let (_, bad_id, bad_source, bad_data) = b.next_gossip().await;
    assert_eq!(bad_data, b"bad");
    b.net.report(bad_id, bad_source, Verdict::Reject);
    c.net.publish(topic, b"good".to_vec()).await.unwrap();
    let (_, good_id, good_source, good_data) = b.next_gossip().await;
    assert_eq!(good_data, b"good");
    b.net.report(good_id, good_source, Verdict::Accept);
    let (_, _, _, a_data) = a.next_gossip().await;
    assert_eq!(a_data, b"good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holders_rows_reach_that_holder_only() {
    let proposer = Node::start(config(vec![]), false);
    let holder = |index| NetworkConfig {
        holder: Some(index),
        ..config(vec![proposer.addr()])
    };
    let mut first = Node::start(holder(0), false);
    let mut second = Node::start(holder(1), false);
    eventually("the proposer learns each holder's topic", || async {
        let subscribed = proposer.net.inspect().await.unwrap().subscribed;
        let on = |topic| subscribed.get(&topic).cloned().unwrap_or_default();
        on(Topic::HolderRows(0)) == vec![first.id()]
            && on(Topic::HolderRows(1)) == vec![second.id()]
            && on(Topic::Rows).len() == 2
    })
    .await;

    proposer
        .net
        .publish(Topic::HolderRows(0), b"rows of 0".to_vec())
        .await
        .unwrap();
    proposer
        .net
        .publish(Topic::HolderRows(1), b"rows of 1".to_vec())
        .await
        .unwrap();
    // Both go down one connection each, in order: had holder 0's rows reached holder 1,
    // they would come first.
    let (topic, _, source, data) = second.next_gossip().await;
    assert_eq!(
        (topic, source, data.as_slice()),
        (Topic::HolderRows(1), proposer.id(), &b"rows of 1"[..])
    );
    let (topic, _, _, data) = first.next_gossip().await;
    assert_eq!(
        (topic, data.as_slice()),
        (Topic::HolderRows(0), &b"rows of 0"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_one_peer_finds_the_others() {
    let a = Node::start(config(vec![]), true);
    let b = Node::start(config(vec![a.addr()]), true);
    let c = Node::start(config(vec![b.addr()]), true);
    eventually("A and C to find each other through B", || async {
        a.verified_peers().await.contains(&c.id()) && c.verified_peers().await.contains(&a.id())
    })
    .await;
    let peers = a.net.peers().await.unwrap();
    let c_info = peers.iter().find(|peer| peer.peer_id == c.id()).unwrap();
    assert_eq!(c_info.height, Some(0));
    assert!(c_info.address.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_blocks_returns_consecutive_blocks_within_caps() {
    // Heights 1..=300 and 302: 301 is missing.
    let blocks = (1..=300)
        .chain([302])
        .map(|height| block(height, 16))
        .collect();
    let server = Node::with_blocks(config(vec![]), false, blocks);
    let mut client = Node::start(config(vec![server.addr()]), false);
    let server_id = server.id();
    eventually("the client to see the server's status", || async {
        client.verified_peers().await.contains(&server_id)
    })
    .await;
    let status = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(NetworkEvent::PeerStatus { peer, height }) = client.events.recv().await {
                if peer == server_id {
                    return height;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status, 302);

    let heights = |blocks: &[CommittedBlock]| -> Vec<u64> {
        blocks.iter().map(|b| b.block.header.height).collect()
    };
    let fetched = client.net.fetch_blocks(server_id, 1, 5).await.unwrap();
    assert_eq!(heights(&fetched), vec![1, 2, 3, 4, 5]);
    assert_eq!(fetched[0], block(1, 16));
    // Capped at 256 blocks per request.
    let fetched = client.net.fetch_blocks(server_id, 1, 1000).await.unwrap();
    assert_eq!(heights(&fetched), (1..=256).collect::<Vec<_>>());
    // Stops at the first missing height.
    let fetched = client.net.fetch_blocks(server_id, 295, 20).await.unwrap();
    assert_eq!(heights(&fetched), (295..=300).collect::<Vec<_>>());
    let fetched = client.net.fetch_blocks(server_id, 302, 20).await.unwrap();
    assert_eq!(heights(&fetched), vec![302]);
    assert!(client
        .net
        .fetch_blocks(server_id, 400, 5)
        .await
        .unwrap()
        .is_empty());
    assert!(client
        .net
        .fetch_blocks(server_id, u64::MAX, 5)
        .await
        .unwrap()
        .is_empty());
    // A peer nobody knows an address of cannot be asked.
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    assert!(matches!(
        client.net.fetch_blocks(stranger, 1, 1).await,
        Err(NetworkError::Request { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_height_is_rebuilt_from_rows_gathered_from_peers() {
    // Three nodes store the same block at height 5, then keep only their own rows of it.
    let body = vec![Blob {
        namespace: Namespace(*b"rollup-1"),
        data: (0..20_000u32).map(|i| (i % 251) as u8).collect(),
    }];
    let store = |da: DaHandle, height: u64, body: Vec<Blob>| async move {
        let commitment = da.commit(Arc::new(body.clone())).await.unwrap();
        let mut header = block(height, 0).block.header;
        header.data_root = commitment.data_root;
        header.body_size = commitment.body_size;
        da.store(Arc::new(Block { header, body })).await.unwrap();
    };
    let mut das = Vec::new();
    for index in 0..3 {
        let da = da_layer(lamina_da::DaKind::ReedSolomon);
        store(da.clone(), 5, body.clone()).await;
        // Two later blocks push height 5 out of the layer's memory.
        for height in [7, 8] {
            store(da.clone(), height, Vec::new()).await;
        }
        da.prune(5, ShareHolder { index, count: 3 }).await.unwrap();
        das.push(da);
    }
    let a = Node::with_layers(config(vec![]), false, Vec::new(), das[0].clone());
    let b = Node::with_layers(config(vec![a.addr()]), false, Vec::new(), das[1].clone());
    let c = Node::with_layers(config(vec![a.addr()]), false, Vec::new(), das[2].clone());
    eventually("A to verify B and C", || async {
        let peers = a.verified_peers().await;
        peers.contains(&b.id()) && peers.contains(&c.id())
    })
    .await;

    // A's own rows are not enough; with B's and C's it rebuilds the very body.
    assert!(matches!(
        das[0].body(5).await,
        Err(RequestError::Layer(DaError::Pruned { height: 5 }))
    ));
    assert!(matches!(
        das[0].restore(5, Vec::new()).await,
        Err(RequestError::Layer(DaError::NotEnoughShares { .. }))
    ));
    let held = a.net.share_gatherer().gather(5).await;
    assert_eq!(held.len(), 2, "one answer from each peer");
    for answer in &held {
        assert_eq!(answer.height, 5);
        assert!(!answer.rows.is_empty());
        let holds_all = |index| {
            let holder = ShareHolder { index, count: 3 };
            answer.rows.iter().all(|row| holder.holds_row(5, row.index))
        };
        assert!(
            holds_all(1) || holds_all(2),
            "a peer sends the rows it keeps"
        );
    }
    let rebuilt = das[0].restore(5, held).await.unwrap();
    assert_eq!(*rebuilt, body);
    // Nobody has height 6: every peer answers an error, so nothing is gathered.
    assert!(a.net.share_gatherer().gather(6).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_answers_respect_the_byte_target_but_always_carry_one_block() {
    let big = SERVE_TARGET_BYTES / 4;
    let layers = |blocks: Vec<CommittedBlock>| Layers {
        blocks: consensus(blocks),
        da: da_layer(lamina_da::DaKind::Replicated),
    };
    let store = layers((1..=8).map(|height| block(height, big)).collect());
    let SyncResponse::Blocks(blocks) = blocks_response(&store, None, 1, 8).await else {
        panic!("expected blocks");
    };
    // Four blocks of a quarter of the target each, plus framing, overshoot: three fit.
    assert_eq!(blocks.len(), 3);
    let size: usize = blocks
        .iter()
        .map(|b| borsh::object_length(b).unwrap())
        .sum();
    assert!(size <= SERVE_TARGET_BYTES);

    let store = layers(vec![block(1, SERVE_TARGET_BYTES + 1), block(2, 1)]);
    let SyncResponse::Blocks(blocks) = blocks_response(&store, None, 1, 2).await else {
        panic!("expected blocks");
    };
    assert_eq!(
        blocks.len(),
        1,
        "an oversize first block is still served alone"
    );

    let store = layers((1..=300).map(|height| block(height, 1)).collect());
    let SyncResponse::Blocks(blocks) = blocks_response(&store, None, 1, u32::MAX).await else {
        panic!("expected blocks");
    };
    assert_eq!(blocks.len(), MAX_BLOCKS_PER_REQUEST as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_chain_or_with_other_layers_are_refused() {
    let a = Node::start(config(vec![]), true);
    let other_chain = Node::start(
        NetworkConfig {
            chain_id: "another-chain".into(),
            ..config(vec![a.addr()])
        },
        true,
    );
    let other_layers = Node::start(
        NetworkConfig {
            compat: "consensus=bft".into(),
            ..config(vec![a.addr()])
        },
        true,
    );
    let strangers = [other_chain.id(), other_layers.id()];
    let never_verified = || async {
        let verified = a.verified_peers().await;
        assert!(
            strangers.iter().all(|id| !verified.contains(id)),
            "an incompatible peer passed the status check"
        );
        assert!(other_chain.verified_peers().await.is_empty());
        assert!(other_layers.verified_peers().await.is_empty());
    };
    eventually("both strangers to be refused and disconnected", || async {
        never_verified().await;
        let seen = a.net.inspect().await.unwrap();
        strangers
            .iter()
            .all(|id| seen.refused.contains(id) && !seen.connected.contains(id))
    })
    .await;
    for stranger in [&other_chain, &other_layers] {
        let seen = stranger.net.inspect().await.unwrap();
        assert!(seen.refused.contains(&a.id()));
    }
    // They are not redialled: still apart after several redial periods.
    let until = Instant::now() + 3 * service::REDIAL_INTERVAL;
    while Instant::now() < until {
        never_verified().await;
        let seen = a.net.inspect().await.unwrap();
        assert!(strangers.iter().all(|id| !seen.connected.contains(id)));
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_refused_on_publish_and_on_receipt() {
    let limit = config(vec![]).topic_limits.transactions;
    let mut receiver = Node::start(config(vec![]), false);
    // A sender configured with a larger limit, so that it does send oversize messages.
    let mut sender_config = config(vec![receiver.addr()]);
    sender_config.topic_limits.transactions = 4 * limit;
    let sender = Node::start(sender_config, false);
    let topic = Topic::Transactions;
    eventually("the two nodes' mesh", || async {
        receiver.mesh(topic).await.contains(&sender.id())
            && sender.mesh(topic).await.contains(&receiver.id())
    })
    .await;

    // Publishing over the limit fails.
    assert!(matches!(
        receiver.net.publish(topic, vec![1; limit + 1]).await,
        Err(NetworkError::TooLarge { size, limit: l, .. }) if size == limit + 1 && l == limit
    ));
    assert!(receiver.net.publish(topic, vec![1; limit]).await.is_ok());

    // Received over the limit: slightly (checked when handing out) and far (gossipsub's own
    // transmit limit); neither is handed out, and the small one after them is.
    sender
        .net
        .publish(topic, vec![2; limit + 100])
        .await
        .unwrap();
    sender.net.publish(topic, vec![3; 3 * limit]).await.unwrap();
    sender.net.publish(topic, b"small".to_vec()).await.unwrap();
    let (_, _, source, data) = receiver.next_gossip().await;
    assert_eq!((source, data), (sender.id(), b"small".to_vec()));
}

#[tokio::test]
async fn publishing_alone_is_fine_and_a_taken_port_is_an_error() {
    let a = Node::start(config(vec![]), true);
    a.net
        .publish(Topic::Consensus, b"nobody listens".to_vec())
        .await
        .unwrap();
    let taken = NetworkConfig {
        listen: a
            .addr()
            .into_iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect(),
        ..config(vec![])
    };
    let da = da_layer(lamina_da::DaKind::Replicated);
    let err = spawn(taken, Keypair::generate_ed25519(), consensus([]), da).unwrap_err();
    assert!(matches!(err, NetworkError::Listen { .. }), "{err}");
}
