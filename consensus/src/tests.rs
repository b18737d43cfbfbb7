//! Engine tests: the solo engine driven against tiny in-test stand-ins for the execution, DA
//! and settlement layers (shared with the bft engine's tests).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lamina_primitives::interfaces::consensus::{ConsensusDeps, ConsensusEvent, ConsensusHandle};
use lamina_primitives::interfaces::da::{DaHandle, DaRequest, DataCommitment};
use lamina_primitives::interfaces::execution::{ExecutionHandle, ExecutionRequest};
use lamina_primitives::interfaces::settlement::{SettlementHandle, SettlementRequest};
use lamina_primitives::interfaces::{Events, Mailbox};
use lamina_primitives::{
    merkle, Address, Blob, Block, Genesis, Keypair, Namespace, Transaction, Validator,
};
use tokio::sync::broadcast::error::RecvError;

use super::*;

pub(crate) const CHAIN: &str = "solo-test";

pub(crate) fn genesis(validators: &[&Keypair]) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_000,
        fee_per_transaction: 1,
        validators: validators
            .iter()
            .map(|k| Validator {
                address: k.address(),
                power: 1,
            })
            .collect(),
        accounts: vec![],
    }
}

pub(crate) fn tx(nonce: u64) -> Transaction {
    Transaction::transfer(
        CHAIN,
        &Keypair::deterministic("alice"),
        nonce,
        Address([9; 32]),
        1,
    )
}

/// What the fake layers serve and what they saw.
#[derive(Debug, Default)]
pub(crate) struct Fakes {
    pub(crate) mempool: Mutex<VecDeque<Transaction>>,
    pub(crate) settlement: Mutex<VecDeque<Blob>>,
    pub(crate) reaps: AtomicUsize,
}

impl Fakes {
    pub(crate) fn add_transactions(&self, txs: impl IntoIterator<Item = Transaction>) {
        self.mempool.lock().unwrap().extend(txs);
    }
}

/// The commitment the fake DA layer gives: a Merkle root over the whole encoded body.
pub(crate) fn fake_commitment(body: &[Blob]) -> DataCommitment {
    let encoded = Block::encode_body(body);
    DataCommitment {
        data_root: merkle::root(&[merkle::leaf_hash(&encoded)]),
        body_size: encoded.len() as u64,
        share_count: 1,
    }
}

pub(crate) fn fake_deps(fakes: &Arc<Fakes>) -> ConsensusDeps {
    let (mailbox, mut requests) = Mailbox::new("execution", 16);
    let state = Arc::clone(fakes);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let ExecutionRequest::ReapTransactions {
                max_transactions,
                reply,
                ..
            } = request
            {
                let mut pool = state.mempool.lock().unwrap();
                let take = pool.len().min(max_transactions);
                let txs: Vec<Transaction> = pool.drain(..take).collect();
                drop(pool);
                state.reaps.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(txs);
            }
        }
    });
    let execution = ExecutionHandle::new(mailbox, Events::new(16));

    let (mailbox, mut requests) = Mailbox::new("data-availability", 16);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request {
                DaRequest::Commit { body, reply } => {
                    let _ = reply.send(Ok(fake_commitment(&body)));
                }
                DaRequest::PendingBlobs { reply, .. } => {
                    let _ = reply.send(Vec::new());
                }
                _ => {}
            }
        }
    });
    let da = DaHandle::new(mailbox, Events::new(16));

    let (mailbox, mut requests) = Mailbox::new("settlement", 16);
    let state = Arc::clone(fakes);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let SettlementRequest::PendingBlobs { reply, .. } = request {
                let blobs: Vec<Blob> = state.settlement.lock().unwrap().drain(..).collect();
                let _ = reply.send(blobs);
            }
        }
    });
    let settlement = SettlementHandle::new(mailbox, Events::new(16));

    ConsensusDeps {
        execution,
        da,
        settlement,
        outbound: tokio::sync::mpsc::channel(16).0,
    }
}

fn config(create_empty_blocks: bool) -> ConsensusConfig {
    ConsensusConfig {
        block_time_ms: 5,
        create_empty_blocks,
        max_block_transactions: 2,
        ..ConsensusConfig::default()
    }
}

/// Polls until `check` holds, failing the test after a generous deadline.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = tokio::time::timeout(Duration::from_secs(20), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting for {what}");
}

pub(crate) async fn wait_for_height(consensus: &ConsensusHandle, height: u64) {
    eventually(&format!("height {height}"), || async {
        consensus.status().await.unwrap().committed_height >= height
    })
    .await;
}

/// Drops `handle` and waits until the engine has stopped (its event sender is gone).
pub(crate) async fn stop(handle: ConsensusHandle) {
    let mut events = handle.subscribe();
    drop(handle);
    let stopped = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Err(RecvError::Closed) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(stopped.is_ok(), "engine did not stop");
}

/// Checks every committed block from 1 to `height`: certificate, parent chain, timestamps,
/// and the DA commitment of its body.
/// A `solo` engine of `key` without empty blocks, over `db`, on fake layers.
fn spawn_solo(
    db: &sled::Db,
    genesis: &Genesis,
    key: &Keypair,
    fakes: &Arc<Fakes>,
) -> ConsensusHandle {
    spawn(
        config(false),
        genesis,
        Some(key.clone()),
        db,
        fake_deps(fakes),
    )
    .unwrap()
}

async fn check_chain(consensus: &ConsensusHandle, genesis: &Genesis, height: u64) -> Vec<Block> {
    let validators = genesis.validator_set();
    let mut parent = genesis.hash();
    let mut parent_time = genesis.genesis_time_ms;
    let mut blocks = Vec::new();
    for h in 1..=height {
        let committed = consensus.block(h).await.unwrap().unwrap();
        let header = &committed.block.header;
        assert_eq!(header.height, h);
        assert_eq!(header.chain_id, CHAIN);
        assert_eq!(header.parent_hash, parent);
        assert!(header.timestamp_ms > parent_time);
        assert_eq!(header.proposer, genesis.validators[0].address);
        let commitment = fake_commitment(&committed.block.body);
        assert_eq!(header.data_root, commitment.data_root);
        assert_eq!(header.body_size, commitment.body_size);
        committed
            .certificate
            .verify(CHAIN, header, &validators)
            .unwrap();
        parent = committed.block.hash();
        parent_time = header.timestamp_ms;
        blocks.push(committed.block.clone());
    }
    blocks
}

#[test]
fn config_parses_and_validates() {
    let config: ConsensusConfig =
        toml::from_str("kind = \"solo\"\nblock_time_ms = 250\ncreate_empty_blocks = true").unwrap();
    assert_eq!(config.block_time_ms, 250);
    assert!(config.create_empty_blocks);
    assert_eq!(config.max_block_bytes, DEFAULT_MAX_BLOCK_BYTES);
    assert!(config.validate().is_ok());
    assert_eq!(
        toml::from_str::<ConsensusConfig>("").unwrap(),
        ConsensusConfig::default()
    );
    let bft: ConsensusConfig = toml::from_str(
        "kind = \"bft\"\ntimeout_propose_ms = 3000\ntimeout_vote_ms = 700\ntimeout_increase_ms = 0",
    )
    .unwrap();
    assert_eq!(bft.kind, EngineKind::Bft);
    assert_eq!(
        (
            bft.timeout_propose_ms,
            bft.timeout_vote_ms,
            bft.timeout_increase_ms
        ),
        (3000, 700, 0)
    );
    assert!(bft.validate().is_ok());
    let defaults = ConsensusConfig::default();
    assert_eq!(
        (
            defaults.timeout_propose_ms,
            defaults.timeout_vote_ms,
            defaults.timeout_increase_ms
        ),
        (1000, 500, 500)
    );
    let error = toml::from_str::<ConsensusConfig>("kind = \"raft\"")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown variant `raft`, expected `solo` or `bft`"),
        "{error}"
    );
    for (field, config) in [
        (
            "timeout_propose_ms",
            ConsensusConfig {
                timeout_propose_ms: 0,
                ..ConsensusConfig::default()
            },
        ),
        (
            "timeout_vote_ms",
            ConsensusConfig {
                timeout_vote_ms: 600_001,
                ..ConsensusConfig::default()
            },
        ),
        (
            "timeout_increase_ms",
            ConsensusConfig {
                timeout_increase_ms: 600_001,
                ..ConsensusConfig::default()
            },
        ),
    ] {
        let error = config.validate().unwrap_err();
        assert!(error.contains(field), "{error}");
    }
    let error = toml::from_str::<ConsensusConfig>("block_time = 5")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `block_time`"), "{error}");
    let zero = ConsensusConfig {
        block_time_ms: 0,
        ..ConsensusConfig::default()
    };
    let error = zero.validate().unwrap_err();
    assert!(
        error.contains("block_time_ms must be between 1 and"),
        "{error}"
    );
    let tiny = ConsensusConfig {
        max_block_bytes: 10,
        ..ConsensusConfig::default()
    };
    assert!(tiny.validate().unwrap_err().contains("max_block_bytes"));
    let none = ConsensusConfig {
        max_block_transactions: 0,
        ..ConsensusConfig::default()
    };
    assert!(none
        .validate()
        .unwrap_err()
        .contains("max_block_transactions"));
}

#[tokio::test]
async fn solo_needs_exactly_its_own_validator() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let fakes = Arc::new(Fakes::default());
    let (a, b) = (Keypair::deterministic("a"), Keypair::deterministic("b"));
    let spawn_with = |genesis: Genesis, key: Option<Keypair>| {
        spawn(
            ConsensusConfig::default(),
            &genesis,
            key,
            &db,
            fake_deps(&fakes),
        )
    };
    let error = spawn_with(genesis(&[&a, &b]), Some(a.clone())).unwrap_err();
    assert!(matches!(
        error,
        SetupError::SoloNeedsOneValidator { count: 2 }
    ));
    assert!(error.to_string().contains("exactly one validator"));
    let error = spawn_with(genesis(&[&a]), None).unwrap_err();
    assert!(matches!(error, SetupError::MissingValidatorKey { .. }));
    let error = spawn_with(genesis(&[&a]), Some(b.clone())).unwrap_err();
    assert!(matches!(error, SetupError::NotTheValidator { .. }));
    assert!(error.to_string().contains(&a.address().to_string()));
    assert!(spawn_with(genesis(&[&a]), Some(a.clone())).is_ok());
}

#[tokio::test]
async fn commits_chained_certified_blocks_only_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let key = Keypair::deterministic("validator");
    let genesis = genesis(&[&key]);
    let fakes = Arc::new(Fakes::default());
    let consensus = spawn_solo(&db, &genesis, &key, &fakes);
    let mut events = consensus.subscribe();

    // Nothing to include: ticks come and go without a block.
    eventually("several empty ticks", || async {
        fakes.reaps.load(Ordering::SeqCst) >= 5
    })
    .await;
    let status = consensus.status().await.unwrap();
    assert_eq!(status.engine, "solo");
    assert_eq!(status.committed_height, 0);
    assert_eq!(status.last_block_hash, genesis.hash());
    assert_eq!(status.validator, Some(key.address()));
    assert!(consensus.block(1).await.unwrap().is_none());

    // Three transactions with at most two per block: blocks 1 and 2.
    fakes.add_transactions([tx(0), tx(1), tx(2)]);
    wait_for_height(&consensus, 2).await;
    // A settlement message alone is worth a block; it goes after any transactions.
    let settlement = Blob {
        namespace: Namespace::SETTLEMENT,
        data: vec![1, 2, 3],
    };
    fakes
        .settlement
        .lock()
        .unwrap()
        .push_back(settlement.clone());
    wait_for_height(&consensus, 3).await;
    let reaps = fakes.reaps.load(Ordering::SeqCst);
    eventually("more empty ticks", || async {
        fakes.reaps.load(Ordering::SeqCst) >= reaps + 5
    })
    .await;
    assert_eq!(consensus.status().await.unwrap().committed_height, 3);

    let blocks = check_chain(&consensus, &genesis, 3).await;
    assert_eq!(blocks[0].transactions(), vec![tx(0), tx(1)]);
    assert_eq!(blocks[1].transactions(), vec![tx(2)]);
    assert_eq!(blocks[2].body, vec![settlement]);
    let status = consensus.status().await.unwrap();
    assert_eq!(status.last_block_hash, blocks[2].hash());
    for block in &blocks {
        assert_eq!(
            events.recv().await.unwrap(),
            ConsensusEvent::Committed {
                height: block.height(),
                block_hash: block.hash(),
            }
        );
    }
}

#[tokio::test]
async fn empty_blocks_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let key = Keypair::deterministic("validator");
    let genesis = genesis(&[&key]);
    let fakes = Arc::new(Fakes::default());
    let consensus = spawn(config(true), &genesis, Some(key), &db, fake_deps(&fakes)).unwrap();
    wait_for_height(&consensus, 3).await;
    let blocks = check_chain(&consensus, &genesis, 3).await;
    assert!(blocks.iter().all(|b| b.body.is_empty()));
}

#[tokio::test]
async fn restart_resumes_from_the_stored_tip() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let key = Keypair::deterministic("validator");
    let genesis = genesis(&[&key]);
    let fakes = Arc::new(Fakes::default());

    let consensus = spawn_solo(&db, &genesis, &key, &fakes);
    fakes.add_transactions([tx(0), tx(1), tx(2), tx(3)]);
    wait_for_height(&consensus, 2).await;
    let tip = consensus.status().await.unwrap();
    stop(consensus).await;

    let consensus = spawn_solo(&db, &genesis, &key, &fakes);
    assert_eq!(consensus.status().await.unwrap(), tip);
    fakes.add_transactions([tx(4)]);
    wait_for_height(&consensus, 3).await;
    let blocks = check_chain(&consensus, &genesis, 3).await;
    assert_eq!(blocks[2].transactions(), vec![tx(4)]);
    stop(consensus).await;

    // The same database under another genesis is refused rather than forked.
    let mut other = genesis.clone();
    other.chain_id = "another-chain".into();
    let error = spawn(config(false), &other, Some(key), &db, fake_deps(&fakes)).unwrap_err();
    assert!(
        matches!(error, SetupError::GenesisMismatch { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn answers_requests_while_a_block_is_being_built() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let key = Keypair::deterministic("validator");
    let genesis = genesis(&[&key]);
    // An execution layer that takes the reap request and never answers: the engine's tick
    // stays stuck inside block building.
    let (mailbox, mut requests) = Mailbox::new("execution", 16);
    let (reaped, mut reap_seen) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = requests.recv().await {
            held.push(request);
            let _ = reaped.try_send(());
        }
    });
    let deps = ConsensusDeps {
        execution: ExecutionHandle::new(mailbox, Events::new(16)),
        ..fake_deps(&Arc::new(Fakes::default()))
    };
    let consensus = spawn(config(false), &genesis, Some(key), &db, deps).unwrap();
    reap_seen.recv().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), consensus.status())
        .await
        .expect("status is answered while the tick waits on execution")
        .unwrap();
    assert_eq!(status.committed_height, 0);
    let block = tokio::time::timeout(Duration::from_secs(5), consensus.block(1))
        .await
        .expect("blocks are served while the tick waits")
        .unwrap();
    assert!(block.is_none());
}

#[tokio::test]
async fn pruned_bodies_keep_their_headers_and_the_chain_goes_on() {
    use lamina_primitives::interfaces::consensus::ConsensusError;
    use lamina_primitives::interfaces::RequestError;

    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let key = Keypair::deterministic("validator");
    let genesis = genesis(&[&key]);
    let fakes = Arc::new(Fakes::default());
    let consensus = spawn_solo(&db, &genesis, &key, &fakes);
    // At most two transactions per block: blocks 1, 2 and 3.
    fakes.add_transactions((0..6).map(tx));
    wait_for_height(&consensus, 3).await;
    let mut originals = Vec::new();
    for height in 1..=3 {
        originals.push(consensus.block(height).await.unwrap().unwrap());
    }

    // Nothing is pruned yet; then everything but the tip, however far `through` asks.
    assert_eq!(consensus.status().await.unwrap().pruned_through, 0);
    assert_eq!(consensus.prune_bodies(100).await.unwrap(), 2);
    let status = consensus.status().await.unwrap();
    assert_eq!((status.committed_height, status.pruned_through), (3, 2));
    for original in &originals[..2] {
        let height = original.block.height();
        let error = consensus.block(height).await.unwrap_err();
        assert!(
            matches!(
                &error,
                RequestError::Layer(ConsensusError::BodyPruned { height: h }) if *h == height
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("rebuilt from the DA layer"),
            "{error}"
        );
        let header = consensus.header(height).await.unwrap().unwrap();
        assert_eq!(header.header, original.block.header);
        assert_eq!(header.certificate, original.certificate);
        assert_eq!(header.into_block(original.block.body.clone()), **original);
    }
    assert_eq!(consensus.block(3).await.unwrap().unwrap(), originals[2]);
    assert_eq!(
        consensus.header(3).await.unwrap().unwrap(),
        originals[2].header_only()
    );
    assert!(consensus.header(4).await.unwrap().is_none());
    assert!(consensus.block(4).await.unwrap().is_none());
    // Idempotent, and a lower `through` undoes nothing.
    assert_eq!(consensus.prune_bodies(100).await.unwrap(), 2);
    assert_eq!(consensus.prune_bodies(1).await.unwrap(), 2);

    // The engine builds on a tip whose ancestors lost their bodies.
    fakes.add_transactions([tx(6)]);
    wait_for_height(&consensus, 4).await;
    assert_eq!(consensus.prune_bodies(100).await.unwrap(), 3);
    let tip = consensus.status().await.unwrap();
    assert_eq!(tip.pruned_through, 3);
    stop(consensus).await;

    // And restarts on it: the genesis check reads block 1's header.
    let consensus = spawn_solo(&db, &genesis, &key, &fakes);
    assert_eq!(consensus.status().await.unwrap(), tip);
    fakes.add_transactions([tx(7)]);
    wait_for_height(&consensus, 5).await;
    let block = consensus.block(5).await.unwrap().unwrap();
    assert_eq!(block.block.header.parent_hash, tip.last_block_hash);
    assert_eq!(block.block.transactions(), vec![tx(7)]);
    assert!(consensus.block(3).await.is_err());
    assert_eq!(consensus.block(4).await.unwrap().unwrap().block.height(), 4);
}
