//! Tests of the whole layer: the actor's request handlers over a real sled store, restarts,
//! and the spawned actor reached through its handle.

use std::sync::Arc;

use lamina_primitives::interfaces::execution::{
    ExecutionError, ExecutionEvent, MempoolRejection, QueryError, TxLookup,
};
use lamina_primitives::interfaces::Events;
use lamina_primitives::{
    codec, Account, Address, Blob, Block, BlockHeader, Genesis, GenesisAccount, Hash, Keypair,
    Namespace, Transaction, TxFailure, TxOutcome, Validator,
};

use super::*;

const CHAIN: &str = "test-chain";
const FEE: u64 = 2;

fn key(label: &str) -> Keypair {
    Keypair::deterministic(label)
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1,
        fee_per_transaction: FEE,
        validators: vec![Validator {
            address: key("validator").address(),
            power: 1,
        }],
        accounts: vec![
            GenesisAccount {
                address: key("alice").address(),
                balance: 1_000,
            },
            GenesisAccount {
                address: key("bob").address(),
                balance: 500,
            },
        ],
    }
}

fn block(height: u64, transactions: &[Transaction]) -> Block {
    Block {
        header: BlockHeader {
            chain_id: CHAIN.into(),
            height,
            parent_hash: Hash::ZERO,
            timestamp_ms: 1 + height,
            proposer: key("validator").address(),
            data_root: Hash::ZERO,
            body_size: 0,
        },
        body: vec![Blob {
            namespace: Namespace::EXECUTION,
            data: codec::encode(transactions),
        }],
    }
}

fn temp_db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

fn actor_on(db: &sled::Db) -> (Actor, Events<ExecutionEvent>) {
    let events = Events::new(16);
    let actor = Actor::open(&ExecutionConfig::default(), &genesis(), db, events.clone()).unwrap();
    (actor, events)
}

fn balance(actor: &Actor, label: &str, height: Option<u64>) -> u64 {
    actor
        .account(&key(label).address(), height)
        .unwrap()
        .account
        .balance
}

fn verify_proof(actor: &Actor, address: &Address, height: u64) {
    let proof = actor.account_proof(address, Some(height)).unwrap();
    assert_eq!(proof.height, height);
    assert_eq!(
        Some(proof.state_root),
        match height {
            0 => actor.store.root(0).ok(),
            h => actor.store.executed_block(h).unwrap().map(|b| b.state_root),
        }
    );
    let value = proof.account.map(|a| codec::encode(&a));
    proof
        .proof
        .verify(&proof.state_root, &proof.key_hash, value.as_deref())
        .unwrap();
    let expected = actor.account(address, Some(height)).unwrap().account;
    assert_eq!(proof.account.unwrap_or_default(), expected);
}

#[test]
fn genesis_accounts_are_readable_at_height_zero() {
    let (actor, _) = actor_on(&temp_db());
    let status = actor.status();
    assert_eq!(status.executor, "sequential");
    assert_eq!(status.executed_height, 0);
    assert_eq!(balance(&actor, "alice", None), 1_000);
    assert_eq!(balance(&actor, "bob", Some(0)), 500);
    assert_eq!(
        actor
            .account(&key("nobody").address(), None)
            .unwrap()
            .account,
        Account::default()
    );
    assert_eq!(
        actor.account(&key("alice").address(), Some(1)),
        Err(QueryError::HeightNotExecuted {
            height: 1,
            latest: 0
        })
    );
    assert!(matches!(
        actor.account_proof(&key("alice").address(), Some(3)),
        Err(QueryError::HeightNotExecuted { .. })
    ));
}

#[test]
fn executes_blocks_in_order_and_replays_executed_heights() {
    let (mut actor, events) = actor_on(&temp_db());
    let mut subscription = events.subscribe();
    let (alice, bob) = (key("alice"), key("bob"));
    let txs = [
        Transaction::transfer(CHAIN, &alice, 0, bob.address(), 100),
        Transaction::transfer(CHAIN, &alice, 0, bob.address(), 1),
        Transaction::transfer(CHAIN, &bob, 0, alice.address(), 600),
    ];
    let first = block(1, &txs);
    let executed = actor.execute_block(&first).unwrap();
    assert_eq!(executed.height, 1);
    assert_eq!(executed.block_hash, first.hash());
    assert_eq!((executed.transactions, executed.failed), (3, 2));
    // Alice's transfer and Bob's failed transfer (which still paid the fee).
    assert_eq!(executed.fees, 2 * FEE);
    assert_eq!(
        subscription.try_recv(),
        Ok(ExecutionEvent::Executed(executed.clone()))
    );
    assert_eq!(balance(&actor, "alice", None), 1_000 - 100 - FEE);
    assert_eq!(balance(&actor, "bob", None), 500 + 100 - FEE);
    assert_eq!(balance(&actor, "validator", None), 2 * FEE);
    assert_eq!(actor.status().state_root, executed.state_root);

    let receipts = actor.store.receipts(1).unwrap();
    assert_eq!(receipts.len(), 3);
    assert_eq!(
        receipts[1].outcome,
        TxOutcome::Failed {
            failure: TxFailure::BadNonce {
                expected: 1,
                got: 0
            }
        }
    );
    assert_eq!(
        receipts[2].outcome,
        TxOutcome::Failed {
            failure: TxFailure::InsufficientBalance {
                needed: 600,
                available: 598
            }
        }
    );
    match actor.transaction(&txs[0].hash()).unwrap() {
        Some(TxLookup::Included {
            transaction,
            receipt,
        }) => {
            assert_eq!(transaction, txs[0]);
            assert_eq!(receipt, receipts[0]);
        }
        other => panic!("expected an included transaction, got {other:?}"),
    }
    assert_eq!(actor.transaction(&Hash([9; 32])).unwrap(), None);

    // Replaying height 1 answers with the stored result and changes nothing.
    assert_eq!(actor.execute_block(&first), Ok(executed.clone()));
    assert_eq!(balance(&actor, "alice", None), 1_000 - 100 - FEE);
    assert!(subscription.try_recv().is_err());

    // Gaps and height 0 are refused.
    assert_eq!(
        actor.execute_block(&block(3, &[])),
        Err(ExecutionError::OutOfOrder {
            expected: 2,
            got: 3
        })
    );
    assert!(matches!(
        actor.execute_block(&block(0, &[])),
        Err(ExecutionError::OutOfOrder { got: 0, .. })
    ));

    // An empty block keeps the root.
    let second = actor.execute_block(&block(2, &[])).unwrap();
    assert_eq!(second.state_root, executed.state_root);
    assert_eq!(second.transactions, 0);
    assert_eq!(actor.execute_block(&first), Ok(executed.clone()));

    // A different block at an executed height is a fork, refused rather than papered over.
    let mut other = block(1, &txs[..1]);
    other.header.timestamp_ms += 1;
    assert_eq!(
        actor.execute_block(&other),
        Err(ExecutionError::ConflictingBlock {
            height: 1,
            executed: executed.block_hash,
            given: other.hash(),
        })
    );
}

#[test]
fn a_block_with_undecodable_execution_data_executes_as_empty() {
    let (mut actor, _) = actor_on(&temp_db());
    let mut garbage = block(1, &[]);
    garbage.body[0].data = vec![0xff; 7];
    let executed = actor.execute_block(&garbage).unwrap();
    assert_eq!(executed.transactions, 0);
}

#[test]
fn proofs_at_old_heights_verify_against_their_roots() {
    let (mut actor, _) = actor_on(&temp_db());
    let (alice, bob) = (key("alice"), key("bob"));
    let carol = key("carol").address();
    for height in 1..=3u64 {
        let txs = [
            Transaction::transfer(CHAIN, &alice, height - 1, carol, 10 * height),
            Transaction::transfer(CHAIN, &bob, height - 1, alice.address(), 1),
        ];
        actor.execute_block(&block(height, &txs)).unwrap();
    }
    for height in 0..=3 {
        for address in [
            alice.address(),
            bob.address(),
            carol,
            key("nobody").address(),
        ] {
            verify_proof(&actor, &address, height);
        }
    }
    // Carol does not exist at genesis: that proof is an absence proof.
    let proof = actor.account_proof(&carol, Some(0)).unwrap();
    assert_eq!(proof.account, None);
    assert_eq!(balance(&actor, "carol", Some(2)), 30);
}

#[test]
fn mempool_flow_submit_reap_execute() {
    let (mut actor, _) = actor_on(&temp_db());
    let (alice, bob) = (key("alice"), key("bob"));
    let t0 = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 10);
    let t1 = Transaction::transfer(CHAIN, &alice, 1, bob.address(), 10);
    assert_eq!(actor.submit(t0.clone()), Ok(t0.hash()));
    assert_eq!(actor.submit(t1.clone()), Ok(t1.hash()));
    assert!(matches!(
        actor.transaction(&t0.hash()).unwrap(),
        Some(TxLookup::Pending { .. })
    ));
    // Balance counts pending spends: 1000 - 2 * 12 left.
    let big = Transaction::transfer(CHAIN, &alice, 2, bob.address(), 1_000 - 24 - FEE + 1);
    assert!(matches!(
        actor.submit(big),
        Err(MempoolRejection::InsufficientBalance { .. })
    ));

    let reaped = actor.reap(1, 1, usize::MAX);
    assert_eq!(reaped, vec![t0.clone()]);
    // Reserved for height 1: a pipelined proposal at height 2 gets the next nonce only.
    assert_eq!(actor.reap(2, 10, usize::MAX), vec![t1.clone()]);
    actor.execute_block(&block(1, &reaped)).unwrap();
    assert!(matches!(
        actor.transaction(&t0.hash()).unwrap(),
        Some(TxLookup::Included { .. })
    ));
    assert_eq!(actor.status().mempool_transactions, 1);
    // Replaying the executed transaction is refused.
    assert_eq!(
        actor.submit(t0),
        Err(MempoolRejection::NonceTooLow {
            expected: 1,
            got: 0
        })
    );
    actor.execute_block(&block(2, &[t1])).unwrap();
    let status = actor.status();
    assert_eq!((status.mempool_transactions, status.mempool_bytes), (0, 0));
}

/// The two executors, the parallel one with enough threads to run Block-STM on small blocks.
fn executor_configs() -> [ExecutionConfig; 2] {
    [
        ExecutionConfig::default(),
        ExecutionConfig {
            kind: ExecutorKind::Parallel,
            threads: Some(2),
            ..ExecutionConfig::default()
        },
    ]
}

fn actor_with(config: &ExecutionConfig, db: &sled::Db) -> Actor {
    Actor::open(config, &genesis(), db, Events::new(16)).unwrap()
}

#[test]
fn a_block_admitted_through_the_mempool_executes_as_without_pre_verification() {
    let (alice, bob) = (key("alice"), key("bob"));
    let (carol, dave) = (key("carol").address(), key("dave").address());
    let transactions: Vec<Transaction> = (0..4)
        .flat_map(|nonce| {
            [
                Transaction::transfer(CHAIN, &alice, nonce, carol, 10 + nonce),
                Transaction::transfer(CHAIN, &bob, nonce, dave, 20 + nonce),
            ]
        })
        .collect();
    for config in executor_configs() {
        // One node admitted every transaction through its mempool; the other sees them
        // only in the block.
        let (admitted_db, unseen_db) = (temp_db(), temp_db());
        let mut admitted = actor_with(&config, &admitted_db);
        let mut unseen = actor_with(&config, &unseen_db);
        for transaction in &transactions {
            assert_eq!(admitted.submit(transaction.clone()), Ok(transaction.hash()));
        }
        // Reaped, hence reserved, for the block: still known when it executes.
        let reaped = admitted.reap(1, 100, usize::MAX);
        assert_eq!(reaped.len(), transactions.len());
        assert_eq!(admitted.pre_verified(&reaped), vec![true; reaped.len()]);
        assert_eq!(unseen.pre_verified(&reaped), vec![false; reaped.len()]);

        let block = block(1, &reaped);
        let expected = unseen.execute_block(&block).unwrap();
        let got = admitted.execute_block(&block).unwrap();
        assert_eq!(got, expected, "{:?}", config.kind);
        assert_eq!(expected.failed, 0);
        assert_eq!(
            admitted.store.receipts(1).unwrap(),
            unseen.store.receipts(1).unwrap()
        );
        assert_eq!(admitted.status().mempool_transactions, 0);
    }
}

#[test]
fn an_invalid_signature_is_verified_at_execution_even_beside_a_pending_twin() {
    let (alice, bob) = (key("alice"), key("bob"));
    let genuine = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 10);
    // Same sender, nonce and payload with another signature, and the genuine signature on
    // another payload: neither is the transaction the mempool verified.
    let mut forged = genuine.clone();
    forged.signature.0[0] ^= 1;
    let mut tampered = genuine.clone();
    tampered.payload = lamina_primitives::TxPayload::Transfer {
        to: key("mallory").address(),
        amount: 900,
    };
    // Not in the mempool at all.
    let mut stranger = Transaction::transfer(CHAIN, &bob, 0, alice.address(), 1);
    stranger.signature.0[9] ^= 1;
    for config in executor_configs() {
        let db = temp_db();
        let mut actor = actor_with(&config, &db);
        assert_eq!(actor.submit(genuine.clone()), Ok(genuine.hash()));
        let bad = [forged.clone(), tampered.clone(), stranger.clone()];
        assert_eq!(actor.pre_verified(&bad), vec![false; 3]);
        let executed = actor.execute_block(&block(1, &bad)).unwrap();
        assert_eq!(
            (executed.failed, executed.fees),
            (3, 0),
            "{:?}",
            config.kind
        );
        for receipt in actor.store.receipts(1).unwrap() {
            assert_eq!(
                receipt.outcome,
                TxOutcome::Failed {
                    failure: TxFailure::InvalidSignature
                }
            );
        }
        assert_eq!(balance(&actor, "alice", None), 1_000);
        assert_eq!(balance(&actor, "bob", None), 500);
        // The genuine one is still pending (its nonce is unused) and runs next.
        assert_eq!(
            actor.pre_verified(std::slice::from_ref(&genuine)),
            vec![true]
        );
        let executed = actor
            .execute_block(&block(2, std::slice::from_ref(&genuine)))
            .unwrap();
        assert_eq!(executed.failed, 0);
        assert_eq!(balance(&actor, "bob", None), 510);
    }
}

#[test]
fn restart_keeps_state_receipts_and_root() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (key("alice"), key("bob"));
    let tx = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 7);
    let executed = {
        let db = sled::open(dir.path()).unwrap();
        let (mut actor, _) = actor_on(&db);
        actor
            .execute_block(&block(1, std::slice::from_ref(&tx)))
            .unwrap()
    };
    let db = sled::open(dir.path()).unwrap();
    let (mut actor, _) = actor_on(&db);
    let status = actor.status();
    assert_eq!(status.executed_height, 1);
    assert_eq!(status.state_root, executed.state_root);
    assert_eq!(balance(&actor, "bob", None), 507);
    assert!(matches!(
        actor.transaction(&tx.hash()).unwrap(),
        Some(TxLookup::Included { .. })
    ));
    assert_eq!(actor.store.receipts(1).unwrap().len(), 1);
    assert_eq!(actor.execute_block(&block(1, &[tx])), Ok(executed.clone()));
    let next = actor.execute_block(&block(2, &[])).unwrap();
    assert_eq!(next.state_root, executed.state_root);
}

#[test]
fn another_genesis_is_refused() {
    let db = temp_db();
    drop(actor_on(&db));
    let mut other = genesis();
    other.fee_per_transaction += 1;
    let error = Actor::open(&ExecutionConfig::default(), &other, &db, Events::new(1)).unwrap_err();
    match error {
        SetupError::GenesisMismatch { stored, expected } => {
            assert_eq!(stored, genesis().hash());
            assert_eq!(expected, other.hash());
        }
        other => panic!("expected a genesis mismatch, got {other}"),
    }
}

#[test]
fn invalid_config_and_genesis_are_refused() {
    let config = ExecutionConfig {
        nonce_window: 0,
        ..ExecutionConfig::default()
    };
    assert!(matches!(
        Actor::open(&config, &genesis(), &temp_db(), Events::new(1)),
        Err(SetupError::InvalidConfig(_))
    ));
    let mut bad = genesis();
    bad.validators.clear();
    assert!(matches!(
        Actor::open(
            &ExecutionConfig::default(),
            &bad,
            &temp_db(),
            Events::new(1)
        ),
        Err(SetupError::InvalidGenesis(_))
    ));
}

#[tokio::test]
async fn spawned_actor_answers_through_its_handle_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (key("alice"), key("bob"));
    let tx = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 25);
    let executed = {
        let db = sled::open(dir.path()).unwrap();
        let (handle, thread) = spawn_thread(ExecutionConfig::default(), &genesis(), &db).unwrap();
        let mut events = handle.subscribe();
        assert_eq!(handle.submit_transaction(tx.clone()).await, Ok(tx.hash()));
        let reaped = handle.reap_transactions(1, 100, 1 << 20).await.unwrap();
        assert_eq!(reaped, vec![tx.clone()]);
        let executed = handle
            .execute_block(Arc::new(block(1, &reaped)))
            .await
            .unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            ExecutionEvent::Executed(executed.clone())
        );
        let proof = handle.account_proof(bob.address(), None).await.unwrap();
        assert_eq!(proof.state_root, executed.state_root);
        let account = handle.account(bob.address(), Some(1)).await.unwrap();
        assert_eq!(account.account.balance, 525);
        drop(handle);
        // The actor stops once every handle is gone, releasing its trees.
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        executed
    };
    let db = sled::open(dir.path()).unwrap();
    let handle = spawn(ExecutionConfig::default(), &genesis(), &db).unwrap();
    let status = handle.status().await.unwrap();
    assert_eq!(status.executed_height, 1);
    assert_eq!(status.state_root, executed.state_root);
    assert!(matches!(
        handle.transaction(tx.hash()).await.unwrap(),
        Some(TxLookup::Included { .. })
    ));
    assert_eq!(
        handle.execute_block(Arc::new(block(1, &[tx]))).await,
        Ok(executed)
    );
}
