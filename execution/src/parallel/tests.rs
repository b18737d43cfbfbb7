//! Tests of the parallel executor: differential tests against the sequential executor over
//! random blocks, the fallback rule, re-execution counts, errors, and two execution actors
//! (one per executor) fed the same chain.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use lamina_primitives::bridge::DepositCredit;
use lamina_primitives::interfaces::Events;
use lamina_primitives::{
    codec, Blob, Block, BlockHeader, Genesis, GenesisAccount, Hash, Keypair, Namespace, TxOutcome,
    Validator,
};
use proptest::prelude::*;

use super::*;
use crate::actor::Actor;
use crate::executor::SequentialExecutor;
use crate::{ExecutionConfig, ExecutorKind};

const CHAIN: &str = "test-chain";
const THREADS: [usize; 4] = [1, 2, 4, 8];

/// 50 keys, derived once for the whole test binary.
fn keys() -> &'static [Keypair] {
    static KEYS: OnceLock<Vec<Keypair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..50)
            .map(|i| Keypair::deterministic(&format!("parallel-{i}")))
            .collect()
    })
}

fn env(proposer: Address, fee: u64) -> BlockEnv<'static> {
    BlockEnv {
        height: 7,
        proposer,
        chain_id: CHAIN,
        fee_per_transaction: fee,
    }
}

/// Runs the block through the parallel executor at every thread count, with and without
/// the sequential fallback, and checks each result equals the sequential executor's with
/// nothing pre-verified. `pre_verified` marks transactions whose signature is valid, as a
/// mempool that admitted them would; the sequential executor is also run with it. Only the
/// reference run verifies every signature, which keeps the test's cost where it was.
fn assert_same_as_sequential(
    env: &BlockEnv<'_>,
    transactions: &[Transaction],
    pre_verified: &[bool],
    state: &BTreeMap<Address, Account>,
) -> Result<(), TestCaseError> {
    let expected = SequentialExecutor
        .execute(env, transactions, PreVerified::NONE, state)
        .unwrap();
    let pre_verified = PreVerified::new(pre_verified);
    let sequential = SequentialExecutor
        .execute(env, transactions, pre_verified, state)
        .unwrap();
    prop_assert_eq!(&sequential, &expected, "sequential, pre-verified");
    for threads in THREADS {
        let executor = ParallelExecutor::new(threads);
        let (output, stats) = executor
            .execute_with_stats(env, transactions, pre_verified, state)
            .unwrap();
        prop_assert_eq!(&output, &expected, "threads {}", threads);
        prop_assert!(stats.executions >= transactions.len());
        if stats.fell_back_to_sequential {
            // Exercise the engine on this block too.
            let (output, stats) = executor
                .execute_block(env, transactions, pre_verified, state, false)
                .unwrap();
            prop_assert_eq!(&output, &expected, "threads {} (Block-STM)", threads);
            prop_assert!(!stats.fell_back_to_sequential);
        }
    }
    Ok(())
}

/// One generated transaction, before nonces are assigned.
#[derive(Debug, Clone)]
struct TxSpec {
    sender: usize,
    /// An index into the accounts, or past them: a fresh address.
    recipient: usize,
    amount: u64,
    /// 0: the sender's next planned nonce; 1: one too high; 2: one too low.
    nonce: u8,
    /// 0: valid; 1: bad signature; 2: wrong chain id.
    flaw: u8,
    /// Marked as pre-verified when its signature is valid (flaw 0 or 2), as if this node's
    /// mempool had verified it.
    pre_verified: bool,
    /// A withdrawal (to the recipient's address, as a settlement-ledger account) instead of
    /// a transfer.
    withdraw: bool,
}

#[derive(Debug, Clone)]
struct BlockSpec {
    accounts: usize,
    balances: Vec<u64>,
    nonces: Vec<u64>,
    /// `None`: a proposer outside the accounts.
    proposer: Option<usize>,
    fee: u64,
    txs: Vec<TxSpec>,
}

fn balance() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Too small for the fee or the amount.
        3 => 0u64..12,
        5 => 0u64..2_000,
        1 => 0u64..1_000_000,
        // Near the top: receiving overflows, the proposer credit saturates.
        1 => (u64::MAX - 1_000)..=u64::MAX,
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..100,
        2 => 0u64..3_000,
        1 => (u64::MAX - 2_000)..=u64::MAX,
    ]
}

fn block_spec() -> impl Strategy<Value = BlockSpec> {
    (2usize..=50, 1usize..=50, 0u64..4)
        .prop_flat_map(|(accounts, pool, fee)| {
            // Senders and recipients come from the first `pool` accounts: contention from
            // total (1 or 2) to none.
            let pool = pool.min(accounts);
            let tx = move || {
                (
                    0..pool,
                    prop_oneof![8 => 0..pool, 1 => 0..accounts + 3],
                    amount(),
                    prop_oneof![12 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
                    prop_oneof![20 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
                    any::<bool>(),
                    proptest::bool::weighted(0.25),
                )
                    .prop_map(
                        |(sender, recipient, amount, nonce, flaw, pre_verified, withdraw)| TxSpec {
                            sender,
                            recipient,
                            amount,
                            nonce,
                            flaw,
                            pre_verified,
                            withdraw,
                        },
                    )
            };
            (
                Just(accounts),
                proptest::collection::vec(balance(), accounts),
                proptest::collection::vec(prop_oneof![3 => Just(0u64), 1 => 0u64..3], accounts),
                proptest::option::weighted(0.3, 0..accounts),
                Just(fee),
                prop_oneof![
                    4 => proptest::collection::vec(tx(), 0..24),
                    1 => proptest::collection::vec(tx(), 0..200),
                ],
            )
        })
        .prop_map(
            |(accounts, balances, nonces, proposer, fee, txs)| BlockSpec {
                accounts,
                balances,
                nonces,
                proposer,
                fee,
                txs,
            },
        )
}

fn fresh_address(i: usize) -> Address {
    Address([0xa0 ^ i as u8; 32])
}

/// The block, its proposer, the state before it, and the pre-verified flags (set only for
/// transactions whose signature is valid: a node never marks any other).
fn build(
    spec: &BlockSpec,
) -> (
    Vec<Transaction>,
    Address,
    BTreeMap<Address, Account>,
    Vec<bool>,
) {
    let keys = &keys()[..spec.accounts];
    let state: BTreeMap<Address, Account> = keys
        .iter()
        .zip(spec.balances.iter().zip(&spec.nonces))
        .filter(|(_, (balance, nonce))| **balance != 0 || **nonce != 0)
        .map(|(key, (&balance, &nonce))| (key.address(), Account { balance, nonce }))
        .collect();
    let mut planned = spec.nonces.clone();
    let transactions = spec
        .txs
        .iter()
        .map(|tx| {
            let key = &keys[tx.sender];
            let to = keys
                .get(tx.recipient)
                .map_or_else(|| fresh_address(tx.recipient), Keypair::address);
            let next = planned[tx.sender];
            let nonce = match tx.nonce {
                0 => {
                    planned[tx.sender] += 1;
                    next
                }
                1 => next + 1,
                _ => next.wrapping_sub(1),
            };
            let signed = |chain_id: &str| {
                if tx.withdraw {
                    Transaction::withdraw(chain_id, key, nonce, to, tx.amount)
                } else {
                    Transaction::transfer(chain_id, key, nonce, to, tx.amount)
                }
            };
            match tx.flaw {
                0 => signed(CHAIN),
                1 => {
                    let mut forged = signed(CHAIN);
                    forged.signature.0[7] ^= 1;
                    forged
                }
                _ => signed("other-chain"),
            }
        })
        .collect();
    let proposer = spec.proposer.map_or_else(
        || Keypair::deterministic("outside-proposer").address(),
        |i| keys[i].address(),
    );
    let pre_verified = spec
        .txs
        .iter()
        .map(|tx| tx.pre_verified && tx.flaw != 1)
        .collect();
    (transactions, proposer, state, pre_verified)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The parallel executor's output (receipts, writes, fees, failure count) equals the
    /// sequential executor's on random blocks of transfers and withdrawals, at 1, 2, 4 and 8
    /// threads, with random transactions of valid signature marked as pre-verified.
    #[test]
    fn parallel_matches_sequential_on_random_blocks(spec in block_spec()) {
        let (transactions, proposer, state, pre_verified) = build(&spec);
        assert_same_as_sequential(
            &env(proposer, spec.fee),
            &transactions,
            &pre_verified,
            &state,
        )?;
    }
}

/// `count` transfers between disjoint pairs of accounts: nothing conflicts.
fn independent_transfers(count: usize) -> (Vec<Transaction>, BTreeMap<Address, Account>) {
    let keys = keys();
    let mut state = BTreeMap::new();
    let transactions = (0..count)
        .map(|i| {
            let key = &keys[i % 25];
            let round = (i / 25) as u64;
            state.insert(
                key.address(),
                Account {
                    balance: 1_000,
                    nonce: 0,
                },
            );
            // Each sender pays its own fresh recipient; a sender's later transfers (in
            // later rounds) depend only on its own earlier ones.
            Transaction::transfer(CHAIN, key, round, fresh_address(100 + i % 25), 1)
        })
        .collect();
    (transactions, state)
}

#[test]
fn no_conflicts_means_one_execution_per_transaction() {
    let (transactions, state) = independent_transfers(25);
    // The proposer's fee credit is not a conflict: fees are summed after execution.
    let env = env(keys()[0].address(), 3);
    let expected = SequentialExecutor
        .execute(&env, &transactions, PreVerified::NONE, &state)
        .unwrap();
    for threads in [1, 2, 4] {
        let (output, stats) = ParallelExecutor::new(threads)
            .execute_with_stats(&env, &transactions, PreVerified::NONE, &state)
            .unwrap();
        assert_eq!(output, expected);
        assert!(!stats.fell_back_to_sequential);
        assert_eq!(stats.executions, transactions.len(), "threads {threads}");
        assert!(stats.validations >= transactions.len());
    }
}

#[test]
fn one_thread_never_reexecutes_even_with_conflicts() {
    // Everyone pays the same account, and senders repeat: a chain of conflicts.
    let keys = keys();
    let hub = keys[0].address();
    let mut state = BTreeMap::new();
    let mut transactions = Vec::new();
    for i in 0..120u64 {
        let key = &keys[1 + (i % 10) as usize];
        state.insert(
            key.address(),
            Account {
                balance: 10_000,
                nonce: 0,
            },
        );
        transactions.push(Transaction::transfer(CHAIN, key, i / 10, hub, 5 + i));
    }
    let env = env(hub, 1);
    let expected = SequentialExecutor
        .execute(&env, &transactions, PreVerified::NONE, &state)
        .unwrap();
    let (output, stats) = ParallelExecutor::new(1)
        .execute_with_stats(&env, &transactions, PreVerified::NONE, &state)
        .unwrap();
    assert_eq!(output, expected);
    assert!(!stats.fell_back_to_sequential);
    assert_eq!(stats.executions, transactions.len());
    // With more threads the conflicts cost re-executions, never a different result.
    for threads in [2, 4] {
        let (output, stats) = ParallelExecutor::new(threads)
            .execute_block(&env, &transactions, PreVerified::NONE, &state, false)
            .unwrap();
        assert_eq!(output, expected, "threads {threads}");
        assert!(stats.executions >= transactions.len());
    }
    assert!(expected
        .receipts
        .iter()
        .all(|r| r.outcome == TxOutcome::Success));
}

#[test]
fn total_contention_falls_back_to_the_sequential_loop() {
    let keys = keys();
    let fund = |addresses: &[Address]| -> BTreeMap<Address, Account> {
        addresses
            .iter()
            .map(|a| {
                (
                    *a,
                    Account {
                        balance: 1_000,
                        nonce: 0,
                    },
                )
            })
            .collect()
    };
    let env = env(keys[49].address(), 1);
    let check = |transactions: &[Transaction],
                 state: &BTreeMap<Address, Account>,
                 threads: usize,
                 falls_back: bool| {
        let (output, stats) = ParallelExecutor::new(threads)
            .execute_with_stats(&env, transactions, PreVerified::NONE, state)
            .unwrap();
        assert_eq!(
            stats.fell_back_to_sequential, falls_back,
            "threads {threads}"
        );
        assert_eq!(
            output,
            SequentialExecutor
                .execute(&env, transactions, PreVerified::NONE, state)
                .unwrap()
        );
        if falls_back {
            assert_eq!(
                (stats.executions, stats.validations),
                (transactions.len(), 0)
            );
        }
    };

    // A single sender, however many recipients.
    let single: Vec<Transaction> = (0..40)
        .map(|i| Transaction::transfer(CHAIN, &keys[0], i, keys[1 + i as usize].address(), 1))
        .collect();
    let state = fund(&[keys[0].address()]);
    check(&single, &state, 1, true);
    check(&single, &state, 8, true);

    // Two accounts paying each other: 2 accounts < 2 × 2 threads, but not < 2 × 1.
    let ping_pong: Vec<Transaction> = (0..40)
        .map(|i| {
            let (from, to) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
            Transaction::transfer(CHAIN, &keys[from], i / 2, keys[to].address(), 3)
        })
        .collect();
    let state = fund(&[keys[0].address(), keys[1].address()]);
    check(&ping_pong, &state, 1, false);
    check(&ping_pong, &state, 2, true);

    // 20 senders paying 20 others: 40 accounts, enough for up to 20 threads.
    let (wide, state) = independent_transfers(20);
    check(&wide, &state, 8, false);
    check(&wide, &state, 20, false);
    check(&wide, &state, 21, true);

    // Empty and one-transaction blocks.
    check(&[], &state, 4, true);
    check(&wide[..1], &state, 4, true);
}

#[test]
fn fees_never_touch_the_proposer_during_execution() {
    // Every transaction is independent, and the proposer is also a sender and a recipient:
    // still one execution each, and the credit lands on top of its own transfers.
    let keys = keys();
    let proposer = &keys[0];
    let mut transactions = vec![Transaction::transfer(
        CHAIN,
        proposer,
        0,
        fresh_address(1),
        7,
    )];
    let mut state = BTreeMap::new();
    state.insert(
        proposer.address(),
        Account {
            balance: 100,
            nonce: 0,
        },
    );
    for key in &keys[1..30] {
        state.insert(
            key.address(),
            Account {
                balance: 100,
                nonce: 0,
            },
        );
        transactions.push(Transaction::transfer(CHAIN, key, 0, key.address(), 1));
    }
    transactions.push(Transaction::transfer(
        CHAIN,
        &keys[30],
        0,
        proposer.address(),
        0,
    ));
    let env = env(proposer.address(), 2);
    let expected = SequentialExecutor
        .execute(&env, &transactions, PreVerified::NONE, &state)
        .unwrap();
    let (output, stats) = ParallelExecutor::new(4)
        .execute_with_stats(&env, &transactions, PreVerified::NONE, &state)
        .unwrap();
    assert_eq!(output, expected);
    assert_eq!(stats.executions, transactions.len());
    // 100 - 2 - 7, plus 2 from each of the 30 paying transactions (the last sender cannot
    // pay: it has no balance).
    assert_eq!(output.writes[&proposer.address()].balance, 100 - 2 - 7 + 60);
}

/// A state whose reads of one account fail.
struct Failing(BTreeMap<Address, Account>, Address);

impl StateView for Failing {
    fn account(&self, address: &Address) -> Result<Account, StoreError> {
        if *address == self.1 {
            return Err(StoreError::Tree("unreadable node".into()));
        }
        self.0.account(address)
    }
}

#[test]
fn a_storage_error_fails_the_block() {
    let (transactions, state) = independent_transfers(50);
    let broken = Failing(state, keys()[13].address());
    for threads in [1, 4] {
        for allow_fallback in [true, false] {
            let error = ParallelExecutor::new(threads)
                .execute_block(
                    &env(keys()[0].address(), 1),
                    &transactions,
                    PreVerified::NONE,
                    &broken,
                    allow_fallback,
                )
                .unwrap_err();
            assert!(error.to_string().contains("unreadable node"), "{error}");
        }
    }
}

#[test]
fn signatures_are_verified_once_per_transaction_in_parallel_chunks() {
    let (mut transactions, _) = independent_transfers(37);
    let forged = [0, 5, 36];
    for i in forged {
        transactions[i].signature.0[0] ^= 1;
    }
    let valid_at = |i: usize| !forged.contains(&i);
    // Nothing, every other valid one, or all valid ones but a cluster at the end already
    // verified: the rest are chunked across the threads.
    let flag_sets: [Vec<bool>; 3] = [
        Vec::new(),
        (0..37).map(|i| valid_at(i) && i % 2 == 0).collect(),
        (0..37).map(|i| valid_at(i) && i < 30).collect(),
    ];
    for flags in &flag_sets {
        for threads in [1, 2, 4, 8, 64] {
            let valid = verify_signatures(&transactions, PreVerified::new(flags), threads);
            assert_eq!(valid.len(), 37);
            for (i, valid) in valid.iter().enumerate() {
                assert_eq!(
                    *valid,
                    valid_at(i),
                    "flags {flags:?}, threads {threads}, index {i}"
                );
            }
        }
    }
    assert!(verify_signatures(&[], PreVerified::NONE, 4).is_empty());
}

#[test]
fn pre_verified_signatures_are_not_checked_again() {
    // The flag replaces the check outright, which is why only the node's own mempool sets
    // it. A corrupted signature marked as verified shows the check was skipped; unmarked,
    // it fails.
    let (mut transactions, state) = independent_transfers(30);
    transactions[3].signature.0[0] ^= 1;
    let mut flags = vec![false; 30];
    flags[3] = true;
    let valid = verify_signatures(&transactions, PreVerified::new(&flags), 2);
    assert!(valid.iter().all(|valid| *valid));
    let env = env(keys()[0].address(), 1);
    for threads in [1, 2] {
        let executor = ParallelExecutor::new(threads);
        let skipped = executor
            .execute(&env, &transactions, PreVerified::new(&flags), &state)
            .unwrap();
        assert_eq!(skipped.receipts[3].outcome, TxOutcome::Success);
        let checked = executor
            .execute(&env, &transactions, PreVerified::NONE, &state)
            .unwrap();
        assert_ne!(checked.receipts[3].outcome, TxOutcome::Success);
    }
}

#[test]
fn executor_for_builds_the_configured_executor() {
    use crate::executor::executor_for;
    let config = ExecutionConfig {
        kind: ExecutorKind::Parallel,
        threads: Some(3),
        ..ExecutionConfig::default()
    };
    assert_eq!(executor_for(&config).name(), "parallel");
    assert_eq!(
        format!("{:?}", executor_for(&config)),
        format!("{:?}", ParallelExecutor { threads: 3 })
    );
    assert_eq!(
        executor_for(&ExecutionConfig::default()).name(),
        "sequential"
    );
    assert_eq!(ParallelExecutor::new(0).threads, 1);
    assert!(ParallelExecutor::default().threads >= 1);
}

// ---- Two execution actors, one per executor, fed the same chain. ----

fn genesis(balances: &[u64]) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1,
        fee_per_transaction: 1,
        validators: vec![Validator {
            address: keys()[0].address(),
            power: 1,
        }],
        accounts: keys()
            .iter()
            .zip(balances)
            .map(|(key, &balance)| GenesisAccount {
                address: key.address(),
                balance,
            })
            .collect(),
    }
}

fn block(height: u64, proposer: Address, transactions: &[Transaction]) -> Block {
    Block {
        header: BlockHeader {
            chain_id: CHAIN.into(),
            height,
            parent_hash: Hash::ZERO,
            timestamp_ms: 1 + height,
            proposer,
            data_root: Hash::ZERO,
            body_size: 0,
        },
        body: vec![Blob {
            namespace: Namespace::EXECUTION,
            data: codec::encode(transactions),
        }],
    }
}

/// One block as indices: its proposer; its transactions (sender, recipient, amount, nonce
/// offset, whether a withdrawal rather than a transfer); its deposits (recipient, amount).
type BlockPlan = (
    usize,
    Vec<(usize, usize, u64, u64, bool)>,
    Vec<(usize, u64)>,
);

/// Accounts of the chain plans: the first 24 are funded at genesis, the rest only by
/// deposits.
const PLAN_ACCOUNTS: usize = 30;

fn chain_plan() -> impl Strategy<Value = (Vec<u64>, Vec<BlockPlan>)> {
    (
        proptest::collection::vec(0u64..500, 24),
        proptest::collection::vec(
            (
                0usize..24,
                proptest::collection::vec(
                    (
                        0usize..PLAN_ACCOUNTS,
                        0usize..PLAN_ACCOUNTS,
                        0u64..200,
                        prop_oneof![9 => Just(0u64), 1 => 0u64..3],
                        proptest::bool::weighted(0.25),
                    ),
                    0..60,
                ),
                proptest::collection::vec((0usize..PLAN_ACCOUNTS, 0u64..300), 0..4),
            ),
            1..6,
        ),
    )
}

fn open_actor(dir: &std::path::Path, config: &ExecutionConfig, genesis: &Genesis) -> Actor {
    let db = sled::open(dir).unwrap();
    Actor::open(config, genesis, &db, Events::new(64)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// A node running `sequential` and one running `parallel`, each on its own database
    /// from the same genesis, agree on every state root, receipt (withdrawal ids included)
    /// and block summary (withdrawals root included), over blocks of transfers, withdrawals
    /// and deposits.
    #[test]
    fn sequential_and_parallel_actors_agree_at_every_height((balances, blocks) in chain_plan()) {
        let genesis = genesis(&balances);
        let (seq_dir, par_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut sequential = open_actor(seq_dir.path(), &ExecutionConfig::default(), &genesis);
        let parallel_config = ExecutionConfig {
            kind: ExecutorKind::Parallel,
            threads: Some(4),
            ..ExecutionConfig::default()
        };
        let mut parallel = open_actor(par_dir.path(), &parallel_config, &genesis);
        prop_assert_eq!(parallel.status().executor, "parallel");
        prop_assert_eq!(sequential.status().state_root, parallel.status().state_root);

        let keys = keys();
        let mut next_deposit = 0u64;
        for (offset, (proposer, plan, deposits)) in blocks.iter().enumerate() {
            let height = offset as u64 + 1;
            // Nonces as the chain has them, so most transactions are valid.
            let mut nonces: Vec<u64> = keys[..PLAN_ACCOUNTS]
                .iter()
                .map(|key| sequential.account(&key.address(), None).unwrap().account.nonce)
                .collect();
            let transactions: Vec<Transaction> = plan
                .iter()
                .map(|&(from, to, amount, skew, withdraw)| {
                    let nonce = nonces[from] + skew;
                    if skew == 0 {
                        nonces[from] += 1;
                    }
                    let to = keys[to].address();
                    if withdraw {
                        Transaction::withdraw(CHAIN, &keys[from], nonce, to, amount)
                    } else {
                        Transaction::transfer(CHAIN, &keys[from], nonce, to, amount)
                    }
                })
                .collect();
            let deposits: Vec<DepositCredit> = deposits
                .iter()
                .map(|&(to, amount)| {
                    next_deposit += 1;
                    DepositCredit { id: next_deposit - 1, to: keys[to].address(), amount }
                })
                .collect();
            let block = block(height, keys[*proposer].address(), &transactions);
            let expected = sequential.execute_block(&block, &deposits).unwrap();
            let got = parallel.execute_block(&block, &deposits).unwrap();
            prop_assert_eq!(expected.deposits_credited as usize, deposits.len());
            prop_assert_eq!(&got, &expected, "height {}", height);
            prop_assert_eq!(
                parallel.store.receipts(height).unwrap(),
                sequential.store.receipts(height).unwrap()
            );
            prop_assert_eq!(parallel.status().state_root, expected.state_root);
        }
        for key in &keys[..PLAN_ACCOUNTS] {
            prop_assert_eq!(
                parallel.account(&key.address(), None).unwrap(),
                sequential.account(&key.address(), None).unwrap()
            );
        }
    }
}
