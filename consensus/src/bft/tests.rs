//! Engine tests of `bft`: actors wired together through their outbound channels and
//! `Deliver`, against the in-test stand-ins for the other layers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lamina_primitives::interfaces::consensus::{
    ConsensusDeps, ConsensusHandle, ConsensusMessage, ConsensusOutbound, ImportError, Verdict,
};
use lamina_primitives::interfaces::execution::ExecutionHandle;
use lamina_primitives::interfaces::{Events, Mailbox, RequestError};
use lamina_primitives::{
    Blob, Block, Certificate, CommitSignature, CommittedBlock, Genesis, Hash, Keypair, Namespace,
    SignedProposal, SignedVote, VoteData, VoteKind,
};
use tokio::sync::mpsc;

use crate::proposal;
use crate::store::Tip;
use crate::tests::{eventually, fake_commitment, fake_deps, genesis, stop, tx, Fakes, CHAIN};
use crate::{spawn, ConsensusConfig, EngineKind, SetupError};

fn config() -> ConsensusConfig {
    ConsensusConfig {
        kind: EngineKind::Bft,
        block_time_ms: 20,
        timeout_propose_ms: 300,
        timeout_vote_ms: 150,
        timeout_increase_ms: 100,
        ..ConsensusConfig::default()
    }
}

fn keys(n: usize) -> Vec<Keypair> {
    (0..n)
        .map(|i| Keypair::deterministic(&format!("bft-validator-{i}")))
        .collect()
}

/// A node: its engine, its outbound messages, its database and its fake layers.
struct Node {
    handle: ConsensusHandle,
    outbound: Option<mpsc::Receiver<ConsensusOutbound>>,
    db: sled::Db,
    _dir: tempfile::TempDir,
    fakes: Arc<Fakes>,
}

fn start(genesis: &Genesis, key: Option<Keypair>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let fakes = Arc::new(Fakes::default());
    let (outbound, receiver) = mpsc::channel(1024);
    let deps = ConsensusDeps {
        outbound,
        ..fake_deps(&fakes)
    };
    let handle = spawn(config(), genesis, key, &db, deps).unwrap();
    Node {
        handle,
        outbound: Some(receiver),
        db,
        _dir: dir,
        fakes,
    }
}

/// Carries each node's broadcasts to the others through `Deliver`, and answers `Behind`
/// by importing the blocks the others have, as the node's network would.
fn wire(nodes: &mut [Node]) {
    let handles: Vec<ConsensusHandle> = nodes.iter().map(|n| n.handle.clone()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut outbound = node.outbound.take().unwrap();
        let handles = handles.clone();
        tokio::spawn(async move {
            while let Some(out) = outbound.recv().await {
                match out {
                    ConsensusOutbound::Broadcast(message) => {
                        for (j, peer) in handles.iter().enumerate() {
                            if j != i {
                                let _ = peer.deliver(message.clone()).await;
                            }
                        }
                    }
                    ConsensusOutbound::Behind { from_height } => {
                        for (j, peer) in handles.iter().enumerate() {
                            if j == i {
                                continue;
                            }
                            let mut height = from_height;
                            while let Ok(Some(block)) = peer.block(height).await {
                                if handles[i].import_block(block).await.is_err() {
                                    break;
                                }
                                height += 1;
                            }
                        }
                    }
                }
            }
        });
    }
}

async fn height_of(handle: &ConsensusHandle) -> u64 {
    handle.status().await.unwrap().committed_height
}

/// A block after `tip` carrying `tag`, with a certificate signed by `signers`.
fn certified(tip: Tip, proposer: &Keypair, signers: &[&Keypair], tag: &str) -> CommittedBlock {
    let body = vec![Blob {
        namespace: Namespace::SETTLEMENT,
        data: tag.as_bytes().to_vec(),
    }];
    let header = proposal::header(
        CHAIN,
        &tip,
        tip.timestamp_ms + 10,
        proposer.address(),
        &fake_commitment(&body),
    );
    let mut certificate = Certificate {
        height: header.height,
        round: 0,
        block_hash: header.hash(),
        signatures: Vec::new(),
    };
    let vote = certificate.vote();
    for key in signers {
        certificate.signatures.push(CommitSignature {
            validator: key.address(),
            signature: vote.sign(CHAIN, key),
        });
    }
    CommittedBlock {
        block: Block { header, body },
        certificate,
    }
}

fn tip_of(block: &CommittedBlock) -> Tip {
    Tip {
        height: block.block.height(),
        hash: block.block.hash(),
        timestamp_ms: block.block.header.timestamp_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_commit_the_same_certified_blocks() {
    let keys = keys(4);
    let genesis = genesis(&keys.iter().collect::<Vec<_>>());
    let mut nodes: Vec<Node> = keys
        .iter()
        .map(|key| start(&genesis, Some(key.clone())))
        .collect();
    // Transactions wait in two of the mempools: whoever proposes there includes them.
    nodes[0].fakes.add_transactions([tx(0), tx(1)]);
    nodes[2].fakes.add_transactions([tx(2)]);
    wire(&mut nodes);

    let target = 5;
    for node in &nodes {
        eventually(&format!("height {target}"), || async {
            height_of(&node.handle).await >= target
        })
        .await;
    }
    let validators = genesis.validator_set();
    let mut parent = genesis.hash();
    let mut parent_time = genesis.genesis_time_ms;
    let mut included = Vec::new();
    for height in 1..=target {
        let first = nodes[0].handle.block(height).await.unwrap().unwrap();
        for node in &nodes[1..] {
            let other = node.handle.block(height).await.unwrap().unwrap();
            assert_eq!(
                other.block, first.block,
                "nodes disagree at height {height}"
            );
        }
        let header = &first.block.header;
        assert_eq!(header.parent_hash, parent);
        assert!(header.timestamp_ms > parent_time);
        let commitment = fake_commitment(&first.block.body);
        assert_eq!(header.data_root, commitment.data_root);
        first
            .certificate
            .verify(CHAIN, header, &validators)
            .unwrap();
        included.extend(first.block.transactions());
        parent = first.block.hash();
        parent_time = header.timestamp_ms;
    }
    let status = nodes[1].handle.status().await.unwrap();
    assert_eq!(status.engine, "bft");
    assert_eq!(status.validators, 4);
    assert_eq!(status.validator, Some(keys[1].address()));
    assert!(
        included.contains(&tx(0)) || included.contains(&tx(2)),
        "{included:?}"
    );
}

#[tokio::test]
async fn import_checks_certificate_parent_body_and_conflicts() {
    let keys = keys(4);
    let genesis = genesis(&keys.iter().collect::<Vec<_>>());
    // An observer: no key, follows the chain through imports.
    let node = start(&genesis, None);
    let status = node.handle.status().await.unwrap();
    assert_eq!((status.engine.as_str(), status.validator), ("bft", None));
    let quorum = [&keys[0], &keys[1], &keys[2]];
    let genesis_tip = Tip::genesis(&genesis);

    let one = certified(genesis_tip, &keys[0], &quorum, "one");
    let mut events = node.handle.subscribe();
    assert_eq!(
        node.handle
            .import_block(Arc::new(one.clone()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        events.recv().await.unwrap(),
        lamina_primitives::interfaces::consensus::ConsensusEvent::Committed {
            height: 1,
            block_hash: one.block.hash(),
        }
    );
    // The same block again: fine, nothing changes.
    assert_eq!(
        node.handle
            .import_block(Arc::new(one.clone()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        *node.handle.block(1).await.unwrap().unwrap(),
        one,
        "the imported block is served"
    );

    let two = certified(tip_of(&one), &keys[1], &quorum, "two");
    let three = certified(tip_of(&two), &keys[2], &quorum, "three");
    let refused = |result: Result<u64, RequestError<ImportError>>| match result {
        Err(RequestError::Layer(error)) => error,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Not the next block.
    assert_eq!(
        refused(node.handle.import_block(Arc::new(three.clone())).await),
        ImportError::NotNext {
            expected: 2,
            got: 3
        }
    );
    // Too few signatures.
    let mut weak = two.clone();
    weak.certificate.signatures.truncate(2);
    let error = refused(node.handle.import_block(Arc::new(weak)).await);
    assert!(
        matches!(&error, ImportError::Invalid(message) if message.contains("certificate")),
        "{error:?}"
    );
    // A certificate for another block.
    let mut swapped = two.clone();
    swapped.certificate = three.certificate.clone();
    assert!(matches!(
        refused(node.handle.import_block(Arc::new(swapped)).await),
        ImportError::Invalid(_)
    ));
    // Certified, but built on another parent.
    let stray = certified(
        Tip {
            hash: Hash::digest(b"elsewhere"),
            ..tip_of(&one)
        },
        &keys[1],
        &quorum,
        "stray",
    );
    let error = refused(node.handle.import_block(Arc::new(stray)).await);
    assert!(
        matches!(&error, ImportError::Invalid(message) if message.contains("builds on")),
        "{error:?}"
    );
    // A body that does not match the header's data root.
    let mut tampered = two.clone();
    tampered.block.body[0].data.push(0);
    let error = refused(node.handle.import_block(Arc::new(tampered)).await);
    assert!(
        matches!(&error, ImportError::Invalid(message) if message.contains("data root")),
        "{error:?}"
    );
    assert_eq!(height_of(&node.handle).await, 1);

    // The real block 2 goes in; the core moved on, so block 3 follows.
    assert_eq!(node.handle.import_block(Arc::new(two)).await.unwrap(), 2);
    assert_eq!(node.handle.import_block(Arc::new(three)).await.unwrap(), 3);

    // Another certified block at a committed height: a fork.
    let other_one = certified(
        genesis_tip,
        &keys[3],
        &[&keys[1], &keys[2], &keys[3]],
        "fork",
    );
    assert_eq!(
        refused(node.handle.import_block(Arc::new(other_one.clone())).await),
        ImportError::Conflict { height: 1 }
    );
    let other_one_again = other_one.clone();
    // The same, without a valid certificate, is merely invalid.
    let mut uncertified = other_one;
    uncertified.certificate.signatures.truncate(1);
    assert!(matches!(
        refused(node.handle.import_block(Arc::new(uncertified)).await),
        ImportError::Invalid(_)
    ));
    assert_eq!(height_of(&node.handle).await, 3);

    // With the bodies of blocks 1 and 2 pruned, imports at those heights are still judged
    // (from the kept headers), and the bft engine answers like solo.
    assert_eq!(node.handle.prune_bodies(u64::MAX).await.unwrap(), 2);
    assert_eq!(node.handle.status().await.unwrap().pruned_through, 2);
    assert!(matches!(
        node.handle.block(1).await,
        Err(RequestError::Layer(
            lamina_primitives::interfaces::consensus::ConsensusError::BodyPruned { height: 1 }
        ))
    ));
    assert_eq!(
        node.handle.header(1).await.unwrap().unwrap(),
        one.header_only()
    );
    assert_eq!(
        node.handle.block(3).await.unwrap().unwrap().block.height(),
        3
    );
    assert_eq!(node.handle.import_block(Arc::new(one)).await.unwrap(), 3);
    assert_eq!(
        refused(node.handle.import_block(Arc::new(other_one_again)).await),
        ImportError::Conflict { height: 1 }
    );
}

/// Every vote a node sent, keyed by `(height, round, kind)`.
fn record_votes(
    outbound: &mut mpsc::Receiver<ConsensusOutbound>,
    seen: &mut HashMap<(u64, u32, bool), SignedVote>,
    me: &Keypair,
) {
    while let Ok(out) = outbound.try_recv() {
        if let ConsensusOutbound::Broadcast(ConsensusMessage::Vote(vote)) = out {
            if vote.validator != me.address() {
                continue;
            }
            let key = (
                vote.vote.height,
                vote.vote.round,
                vote.vote.kind == VoteKind::Precommit,
            );
            if let Some(previous) = seen.get(&key) {
                assert_eq!(*previous, vote, "two different votes at {key:?}");
            } else {
                seen.insert(key, vote);
            }
        }
    }
}

#[tokio::test]
async fn a_restarted_validator_resends_rather_than_resigns() {
    let keys = keys(4);
    let genesis = genesis(&keys.iter().collect::<Vec<_>>());
    let me = keys[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let fakes = Arc::new(Fakes::default());
    let launch = |db: &sled::Db| {
        let (outbound, receiver) = mpsc::channel(4096);
        let deps = ConsensusDeps {
            outbound,
            ..fake_deps(&fakes)
        };
        (
            spawn(config(), &genesis, Some(me.clone()), db, deps).unwrap(),
            receiver,
        )
    };

    // Alone (the others are silent), the validator prevotes in round 0 (its own block if it
    // proposes, nil when the propose timeout expires) and stays in round 0.
    let (handle, mut outbound) = launch(&db);
    let mut seen = HashMap::new();
    eventually("a prevote", || {
        record_votes(&mut outbound, &mut seen, &me);
        let done = seen.contains_key(&(1, 0, false));
        async move { done }
    })
    .await;
    let first_prevote = seen[&(1, 0, false)].clone();
    // Another validator prevotes something else for round 0: our vote must not change.
    let other = SignedVote::sign(
        CHAIN,
        &keys[1],
        VoteData {
            height: 1,
            round: 0,
            kind: VoteKind::Prevote,
            block_hash: Some(Hash::digest(b"something else")),
        },
    );
    assert_eq!(
        handle
            .deliver(ConsensusMessage::Vote(other.clone()))
            .await
            .unwrap(),
        Verdict::Accept
    );
    stop(handle).await;
    record_votes(&mut outbound, &mut seen, &me);

    // Restarted on the same database: it re-sends the very same prevote (same signature)
    // from its persisted state.
    let (handle, mut outbound) = launch(&db);
    let mut resent = HashMap::new();
    eventually("the prevote re-sent", || {
        record_votes(&mut outbound, &mut resent, &me);
        let done = resent.contains_key(&(1, 0, false));
        async move { done }
    })
    .await;
    assert_eq!(resent[&(1, 0, false)], first_prevote);
    assert_eq!(handle.status().await.unwrap().round, 0);
    // Nothing it sends in either life conflicts.
    for (key, vote) in resent {
        if let Some(previous) = seen.get(&key) {
            assert_eq!(
                *previous, vote,
                "conflicting votes at {key:?} across a restart"
            );
        }
    }
    stop(handle).await;
}

#[tokio::test]
async fn deliver_judges_messages_and_evidence_is_kept() {
    let keys = keys(4);
    let genesis = genesis(&keys.iter().collect::<Vec<_>>());
    let node = start(&genesis, Some(keys[0].clone()));
    let vote = |key: &Keypair, height: u64, value: &[u8]| {
        SignedVote::sign(
            CHAIN,
            key,
            VoteData {
                height,
                round: 0,
                kind: VoteKind::Prevote,
                block_hash: Some(Hash::digest(value)),
            },
        )
    };
    let deliver = |message: ConsensusMessage| {
        let handle = node.handle.clone();
        async move { handle.deliver(message).await.unwrap() }
    };
    let first = vote(&keys[1], 1, b"a");
    let second = vote(&keys[1], 1, b"b");
    assert_eq!(
        deliver(ConsensusMessage::Vote(first.clone())).await,
        Verdict::Accept
    );
    assert_eq!(
        deliver(ConsensusMessage::Vote(first.clone())).await,
        Verdict::Ignore
    );
    assert_eq!(
        deliver(ConsensusMessage::Vote(second.clone())).await,
        Verdict::Accept
    );
    // A forged signature, a stranger, a height that does not exist.
    let mut forged = vote(&keys[2], 1, b"a");
    forged.signature = first.signature;
    assert_eq!(
        deliver(ConsensusMessage::Vote(forged)).await,
        Verdict::Reject
    );
    let stranger = vote(&Keypair::deterministic("stranger"), 1, b"a");
    assert_eq!(
        deliver(ConsensusMessage::Vote(stranger)).await,
        Verdict::Reject
    );
    assert_eq!(
        deliver(ConsensusMessage::Vote(vote(&keys[2], 0, b"a"))).await,
        Verdict::Reject
    );
    // A proposal signed by a validator that is not the round's proposer.
    let schedule = super::proposer::ProposerSchedule::new(&genesis.validator_set());
    let proposer = schedule.proposer(1, 0).unwrap();
    let impostor = keys.iter().find(|k| k.address() != proposer).unwrap();
    let body = vec![];
    let header = proposal::header(
        CHAIN,
        &Tip::genesis(&genesis),
        genesis.genesis_time_ms + 1,
        impostor.address(),
        &fake_commitment(&body),
    );
    let proposal = SignedProposal::sign(CHAIN, impostor, 0, None, Block { header, body });
    assert_eq!(
        deliver(ConsensusMessage::Proposal(Box::new(proposal))).await,
        Verdict::Reject
    );

    eventually("the equivocation kept", || async {
        !node.handle.evidence().await.unwrap().is_empty()
    })
    .await;
    let evidence = node.handle.evidence().await.unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!((&evidence[0].first, &evidence[0].second), (&first, &second));
    assert!(evidence[0].is_valid(CHAIN));

    // Kept durably: a restart on the same database still has it.
    let Node { handle, db, .. } = node;
    stop(handle).await;
    let fakes = Arc::new(Fakes::default());
    let again = spawn(
        config(),
        &genesis,
        Some(keys[0].clone()),
        &db,
        fake_deps(&fakes),
    )
    .unwrap();
    assert_eq!(again.evidence().await.unwrap(), evidence);
}

#[tokio::test]
async fn setup_refuses_a_key_outside_the_validator_set() {
    let keys = keys(2);
    let genesis = genesis(&keys.iter().collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let fakes = Arc::new(Fakes::default());
    let stranger = Keypair::deterministic("not a validator");
    let error = spawn(
        config(),
        &genesis,
        Some(stranger.clone()),
        &db,
        fake_deps(&fakes),
    )
    .unwrap_err();
    assert!(
        matches!(&error, SetupError::NotAValidator { key } if *key == stranger.address()),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("not in the genesis validator set"));
    let mut empty = genesis.clone();
    empty.validators.clear();
    assert!(matches!(
        spawn(config(), &empty, None, &db, fake_deps(&fakes)),
        Err(SetupError::NoValidators)
    ));
    // No key: an observer.
    let observer = spawn(config(), &genesis, None, &db, fake_deps(&fakes)).unwrap();
    assert_eq!(observer.status().await.unwrap().validator, None);
}

#[tokio::test]
async fn a_single_validator_commits_alone_and_answers_while_building() {
    let key = Keypair::deterministic("alone");
    let genesis = genesis(&[&key]);
    let node = start(&genesis, Some(key.clone()));
    // Empty blocks too: every height gets one.
    eventually("height 3", || async { height_of(&node.handle).await >= 3 }).await;
    let block = node.handle.block(2).await.unwrap().unwrap();
    assert!(block.block.body.is_empty());
    block
        .certificate
        .verify(CHAIN, &block.block.header, &genesis.validator_set())
        .unwrap();
    stop(node.handle).await;

    // An execution layer that never answers: status and blocks are still served.
    let (mailbox, mut requests) = Mailbox::new("execution", 16);
    let (reaped, mut reap_seen) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = requests.recv().await {
            held.push(request);
            let _ = reaped.try_send(());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let deps = ConsensusDeps {
        execution: ExecutionHandle::new(mailbox, Events::new(16)),
        ..fake_deps(&Arc::new(Fakes::default()))
    };
    let handle = spawn(config(), &genesis, Some(key), &db, deps).unwrap();
    reap_seen.recv().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), handle.status())
        .await
        .expect("status is answered while the proposal waits on execution")
        .unwrap();
    assert_eq!(status.committed_height, 0);
    let block = tokio::time::timeout(Duration::from_secs(5), handle.block(1))
        .await
        .expect("blocks are served while the proposal waits")
        .unwrap();
    assert!(block.is_none());
}
