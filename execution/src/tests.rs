//! Tests of the whole layer: the actor's request handlers over a real sled store, restarts,
//! and the spawned actor reached through its handle.

use std::sync::Arc;

use lamina_primitives::bridge::{withdrawals_root, DepositCredit, Withdrawal};
use lamina_primitives::interfaces::execution::{
    ExecutedBlock, ExecutionError, ExecutionEvent, MempoolRejection, QueryError, TxLookup,
    WithdrawalAt,
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

/// Opens the database in `path` again. sled's background threads let go of its file lock
/// shortly after the last handle is dropped, so this polls until they have (or 10 s pass).
fn reopen(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(error))
                if error.kind() == std::io::ErrorKind::Other
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("cannot open {}: {error}", path.display()),
        }
    }
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
    let executed = actor.execute_block(&first, &[]).unwrap();
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
    assert_eq!(actor.execute_block(&first, &[]), Ok(executed.clone()));
    assert_eq!(balance(&actor, "alice", None), 1_000 - 100 - FEE);
    assert!(subscription.try_recv().is_err());

    // Gaps and height 0 are refused.
    assert_eq!(
        actor.execute_block(&block(3, &[]), &[]),
        Err(ExecutionError::OutOfOrder {
            expected: 2,
            got: 3
        })
    );
    assert!(matches!(
        actor.execute_block(&block(0, &[]), &[]),
        Err(ExecutionError::OutOfOrder { got: 0, .. })
    ));

    // An empty block keeps the root.
    let second = actor.execute_block(&block(2, &[]), &[]).unwrap();
    assert_eq!(second.state_root, executed.state_root);
    assert_eq!(second.transactions, 0);
    assert_eq!(actor.execute_block(&first, &[]), Ok(executed.clone()));

    // A different block at an executed height is a fork, refused rather than papered over.
    let mut other = block(1, &txs[..1]);
    other.header.timestamp_ms += 1;
    assert_eq!(
        actor.execute_block(&other, &[]),
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
    let executed = actor.execute_block(&garbage, &[]).unwrap();
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
        actor.execute_block(&block(height, &txs), &[]).unwrap();
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
    actor.execute_block(&block(1, &reaped), &[]).unwrap();
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
    actor.execute_block(&block(2, &[t1]), &[]).unwrap();
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
        let expected = unseen.execute_block(&block, &[]).unwrap();
        let got = admitted.execute_block(&block, &[]).unwrap();
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
        let executed = actor.execute_block(&block(1, &bad), &[]).unwrap();
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
            .execute_block(&block(2, std::slice::from_ref(&genuine)), &[])
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
        let db = reopen(dir.path());
        let (mut actor, _) = actor_on(&db);
        actor
            .execute_block(&block(1, std::slice::from_ref(&tx)), &[])
            .unwrap()
    };
    let db = reopen(dir.path());
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
    assert_eq!(
        actor.execute_block(&block(1, &[tx]), &[]),
        Ok(executed.clone())
    );
    let next = actor.execute_block(&block(2, &[]), &[]).unwrap();
    assert_eq!(next.state_root, executed.state_root);
}

fn deposit(id: u64, label: &str, amount: u64) -> DepositCredit {
    DepositCredit {
        id,
        to: key(label).address(),
        amount,
    }
}

#[test]
fn deposits_are_credited_before_the_transactions_and_spendable_in_the_same_block() {
    let carol = key("carol");
    let dave = key("dave").address();
    for config in executor_configs() {
        let db = temp_db();
        let mut actor = actor_with(&config, &db);
        // Carol has no account before the block: the deposits create it, and she spends
        // from it in the same block, as does Alice from her topped-up balance.
        let txs = [
            Transaction::transfer(CHAIN, &carol, 0, dave, 60),
            Transaction::withdraw(CHAIN, &carol, 1, dave, 30),
            Transaction::transfer(CHAIN, &key("alice"), 0, dave, 1_040),
        ];
        let deposits = [
            deposit(0, "carol", 50),
            deposit(1, "alice", 50),
            deposit(2, "carol", 50),
        ];
        let executed = actor.execute_block(&block(1, &txs), &deposits).unwrap();
        assert_eq!(executed.deposits_credited, 3, "{:?}", config.kind);
        assert_eq!(executed.failed, 0, "{:?}", config.kind);
        assert_eq!(balance(&actor, "carol", None), 100 - 60 - 30 - 2 * FEE);
        assert_eq!(balance(&actor, "alice", None), 1_050 - 1_040 - FEE);
        assert_eq!(balance(&actor, "dave", None), 1_100);
        // The credited state is committed: proofs verify against the new root.
        verify_proof(&actor, &carol.address(), 1);
        // A deposit alone, to an account the block does not otherwise touch.
        let executed = actor
            .execute_block(&block(2, &[]), &[deposit(3, "bob", 7)])
            .unwrap();
        assert_eq!(executed.deposits_credited, 1);
        assert_eq!(balance(&actor, "bob", None), 507);
        assert_eq!(balance(&actor, "bob", Some(1)), 500);
    }
}

/// The withdrawals tree a chain must have after `count` withdrawals, checked against what an
/// executed height reports and proves.
fn check_withdrawals_at(actor: &Actor, height: u64, all: &[Withdrawal]) {
    let count = actor
        .store
        .executed_block(height)
        .unwrap()
        .map_or(0, |b| b.withdrawal_count);
    let root = match height {
        0 => withdrawals_root(&[]),
        h => {
            actor
                .store
                .executed_block(h)
                .unwrap()
                .unwrap()
                .withdrawals_root
        }
    };
    assert_eq!(
        root,
        withdrawals_root(&all[..count as usize]),
        "height {height}"
    );
    for withdrawal in all {
        let proof = actor.prove_withdrawal(withdrawal.id, height).unwrap();
        if withdrawal.id < count {
            let proof = proof.unwrap_or_else(|| panic!("no proof of {}", withdrawal.id));
            assert_eq!((proof.index, proof.total), (withdrawal.id, count));
            assert!(proof.verify(&root, &withdrawal.leaf()), "height {height}");
        } else {
            assert_eq!(proof, None, "id {} at height {height}", withdrawal.id);
        }
    }
}

#[test]
fn withdrawals_are_numbered_in_block_order_and_proven_at_every_later_height() {
    let (mut actor, _) = actor_on(&temp_db());
    let (alice, bob) = (key("alice"), key("bob"));
    let ledger = key("ledger-account").address();
    let first = [
        Transaction::withdraw(CHAIN, &alice, 0, ledger, 100),
        // More than Bob has: fails, gets no id, but pays the fee.
        Transaction::withdraw(CHAIN, &bob, 0, ledger, 10_000),
        Transaction::transfer(CHAIN, &alice, 1, bob.address(), 3),
        Transaction::withdraw(CHAIN, &bob, 1, alice.address(), 5),
    ];
    let mut first_block = block(1, &first);
    first_block.header.data_root = Hash([7; 32]);
    let executed = actor.execute_block(&first_block, &[]).unwrap();
    assert_eq!(executed.data_root, Hash([7; 32]));
    assert_eq!((executed.withdrawal_count, executed.failed), (2, 1));
    let receipts = actor.store.receipts(1).unwrap();
    let ids: Vec<Option<u64>> = receipts.iter().map(|r| r.withdrawal_id).collect();
    assert_eq!(ids, [Some(0), None, None, Some(1)]);
    // The transaction index keeps the receipt with its id.
    match actor.transaction(&first[3].hash()).unwrap() {
        Some(TxLookup::Included { receipt, .. }) => assert_eq!(receipt.withdrawal_id, Some(1)),
        other => panic!("expected an included transaction, got {other:?}"),
    }
    assert_eq!(balance(&actor, "alice", None), 1_000 - 100 - 3 - 2 * FEE);
    assert_eq!(balance(&actor, "bob", None), 500 + 3 - 5 - 2 * FEE);

    let second = actor.execute_block(&block(2, &[]), &[]).unwrap();
    assert_eq!(second.withdrawal_count, 2);
    assert_eq!(second.withdrawals_root, executed.withdrawals_root);
    assert_eq!(
        second.output_preimage().withdrawals_root,
        executed.withdrawals_root
    );
    let third = actor
        .execute_block(
            &block(3, &[Transaction::withdraw(CHAIN, &alice, 2, ledger, 1)]),
            &[],
        )
        .unwrap();
    assert_eq!(third.withdrawal_count, 3);

    let all = [
        Withdrawal {
            id: 0,
            from: alice.address(),
            to: ledger,
            amount: 100,
        },
        Withdrawal {
            id: 1,
            from: bob.address(),
            to: alice.address(),
            amount: 5,
        },
        Withdrawal {
            id: 2,
            from: alice.address(),
            to: ledger,
            amount: 1,
        },
    ];
    for (withdrawal, height) in all.iter().zip([1, 1, 3]) {
        assert_eq!(
            actor.withdrawal(withdrawal.id),
            Ok(Some(WithdrawalAt {
                height,
                withdrawal: *withdrawal
            }))
        );
    }
    assert_eq!(actor.withdrawal(3), Ok(None));
    for height in 0..=3 {
        check_withdrawals_at(&actor, height, &all);
    }
    // A proof from an earlier height does not verify against a later root, whose tree is
    // larger; the later height proves the same withdrawal on its own.
    let early = actor.prove_withdrawal(0, 1).unwrap().unwrap();
    assert!(!early.verify(&third.withdrawals_root, &all[0].leaf()));
    assert_eq!(
        actor.prove_withdrawal(0, 4),
        Err(QueryError::HeightNotExecuted {
            height: 4,
            latest: 3
        })
    );
    // Replaying an executed height returns its stored summary, ids and all.
    assert_eq!(actor.execute_block(&first_block, &[]), Ok(executed));
    assert_eq!(
        actor.prove_withdrawal(2, 3).unwrap().map(|p| p.total),
        Some(3)
    );
}

#[test]
fn withdrawals_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let alice = key("alice");
    let ledger = key("ledger-account").address();
    let first = [
        Transaction::withdraw(CHAIN, &alice, 0, ledger, 10),
        Transaction::withdraw(CHAIN, &alice, 1, ledger, 20),
    ];
    let executed = {
        let db = reopen(dir.path());
        let (mut actor, _) = actor_on(&db);
        actor.execute_block(&block(1, &first), &[]).unwrap()
    };
    let db = reopen(dir.path());
    let (mut actor, _) = actor_on(&db);
    assert_eq!(
        actor.execute_block(&block(1, &first), &[]),
        Ok(executed.clone())
    );
    let withdrawal = |id, amount| Withdrawal {
        id,
        from: alice.address(),
        to: ledger,
        amount,
    };
    assert_eq!(
        actor.withdrawal(1),
        Ok(Some(WithdrawalAt {
            height: 1,
            withdrawal: withdrawal(1, 20)
        }))
    );
    // Numbering and the tree carry on from the stored withdrawals.
    let next = actor
        .execute_block(
            &block(2, &[Transaction::withdraw(CHAIN, &alice, 2, ledger, 30)]),
            &[],
        )
        .unwrap();
    let all = [withdrawal(0, 10), withdrawal(1, 20), withdrawal(2, 30)];
    assert_eq!(next.withdrawal_count, 3);
    assert_eq!(next.withdrawals_root, withdrawals_root(&all));
    assert_eq!(actor.store.receipts(2).unwrap()[0].withdrawal_id, Some(2));
    for height in 0..=2 {
        check_withdrawals_at(&actor, height, &all);
    }
}

#[test]
fn report_wrong_roots_changes_the_reported_root_but_not_the_state() {
    let (alice, bob) = (key("alice"), key("bob"));
    let blocks = [
        block(
            1,
            &[
                Transaction::transfer(CHAIN, &alice, 0, bob.address(), 10),
                Transaction::withdraw(CHAIN, &bob, 0, alice.address(), 4),
            ],
        ),
        block(2, &[]),
    ];
    let faulty_config = ExecutionConfig {
        report_wrong_roots: true,
        ..ExecutionConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut honest, _) = actor_on(&temp_db());
    let honest_results: Vec<ExecutedBlock> = blocks
        .iter()
        .map(|b| honest.execute_block(b, &[deposit(0, "carol", 3)]).unwrap())
        .collect();
    {
        let db = reopen(dir.path());
        let events = Events::new(16);
        let mut subscription = events.subscribe();
        let mut faulty = Actor::open(&faulty_config, &genesis(), &db, events).unwrap();
        for (b, honest) in blocks.iter().zip(&honest_results) {
            let reported = faulty.execute_block(b, &[deposit(0, "carol", 3)]).unwrap();
            assert_eq!(reported.state_root, state::wrong_root(&honest.state_root));
            // Everything else is what an honest node reports.
            assert_eq!(
                ExecutedBlock {
                    state_root: honest.state_root,
                    ..reported.clone()
                },
                *honest
            );
            assert_eq!(
                subscription.try_recv(),
                Ok(ExecutionEvent::Executed(reported.clone()))
            );
            assert_eq!(
                faulty.store.executed_block(b.height()).unwrap(),
                Some(reported.clone())
            );
            assert_eq!(faulty.status().state_root, reported.state_root);
            // The tree is the honest one: proofs are against the true root and verify.
            let proof = faulty.account_proof(&bob.address(), None).unwrap();
            assert_eq!(proof.state_root, honest.state_root);
            assert_eq!(faulty.store.root(b.height()).unwrap(), honest.state_root);
            let value = proof.account.map(|a| codec::encode(&a));
            proof
                .proof
                .verify(&proof.state_root, &proof.key_hash, value.as_deref())
                .unwrap();
        }
    }
    // After a restart the node keeps reporting what it stored, replays included.
    let db = reopen(dir.path());
    let faulty = Actor::open(&faulty_config, &genesis(), &db, Events::new(1)).unwrap();
    let last = honest_results.last().unwrap();
    assert_eq!(
        faulty.status().state_root,
        state::wrong_root(&last.state_root)
    );
    let mut faulty = faulty;
    let replayed = faulty.execute_block(&blocks[0], &[]).unwrap();
    assert_eq!(
        replayed.state_root,
        state::wrong_root(&honest_results[0].state_root)
    );
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
    let withdraw = Transaction::withdraw(CHAIN, &alice, 1, bob.address(), 40);
    let executed = {
        let db = reopen(dir.path());
        let (handle, thread) = spawn_thread(ExecutionConfig::default(), &genesis(), &db).unwrap();
        let mut events = handle.subscribe();
        assert_eq!(handle.submit_transaction(tx.clone()).await, Ok(tx.hash()));
        assert_eq!(
            handle.submit_transaction(withdraw.clone()).await,
            Ok(withdraw.hash())
        );
        let reaped = handle.reap_transactions(1, 100, 1 << 20).await.unwrap();
        assert_eq!(reaped, vec![tx.clone(), withdraw.clone()]);
        let executed = handle
            .execute_block(Arc::new(block(1, &reaped)), vec![])
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
        let found = handle.withdrawal(0).await.unwrap().unwrap();
        assert_eq!((found.height, found.withdrawal.amount), (1, 40));
        assert_eq!(handle.withdrawal(1).await, Ok(None));
        let proof = handle.prove_withdrawal(0, 1).await.unwrap().unwrap();
        assert!(proof.verify(&executed.withdrawals_root, &found.withdrawal.leaf()));
        assert_eq!(handle.prove_withdrawal(1, 1).await, Ok(None));
        assert!(matches!(
            handle.prove_withdrawal(0, 2).await,
            Err(lamina_primitives::interfaces::RequestError::Layer(
                QueryError::HeightNotExecuted { .. }
            ))
        ));
        drop(handle);
        // The actor stops once every handle is gone, releasing its trees.
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        executed
    };
    let db = reopen(dir.path());
    let handle = spawn(ExecutionConfig::default(), &genesis(), &db).unwrap();
    let status = handle.status().await.unwrap();
    assert_eq!(status.executed_height, 1);
    assert_eq!(status.state_root, executed.state_root);
    assert!(matches!(
        handle.transaction(tx.hash()).await.unwrap(),
        Some(TxLookup::Included { .. })
    ));
    assert_eq!(
        handle
            .execute_block(Arc::new(block(1, &[tx, withdraw])), vec![])
            .await,
        Ok(executed)
    );
}
