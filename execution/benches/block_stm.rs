//! Inner-loop benchmarks of execution: a block of transfers through the sequential executor
//! and through Block-STM at one and two threads, signatures taken as checked so only
//! execution is timed. `cargo bench -p lamina-execution`; the end-to-end table is
//! `lamina bench execution` (docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamina_execution::executor::{BlockEnv, Executor, SequentialExecutor};
use lamina_execution::parallel::ParallelExecutor;
use lamina_primitives::{Account, Address, Keypair, Transaction};

const CHAIN: &str = "bench";

fn block(accounts: usize, size: usize) -> (Vec<Transaction>, BTreeMap<Address, Account>) {
    let keys: Vec<Keypair> = (0..accounts)
        .map(|i| Keypair::deterministic(&format!("bench-{i}")))
        .collect();
    let mut nonces = vec![0u64; accounts];
    let transactions = (0..size)
        .map(|i| {
            let from = (i * 7919) % accounts;
            let to = (from + 1 + i % (accounts - 1).max(1)) % accounts;
            let nonce = nonces[from];
            nonces[from] += 1;
            Transaction::transfer(CHAIN, &keys[from], nonce, keys[to].address(), 1)
        })
        .collect();
    let state = keys
        .iter()
        .map(|k| {
            (
                k.address(),
                Account {
                    balance: 1 << 40,
                    nonce: 0,
                },
            )
        })
        .collect();
    (transactions, state)
}

fn execution(c: &mut Criterion) {
    let env = BlockEnv {
        height: 1,
        proposer: Keypair::deterministic("proposer").address(),
        chain_id: CHAIN,
        fee_per_transaction: 1,
    };
    let mut group = c.benchmark_group("execute_1000_transfers");
    group.sample_size(20);
    for accounts in [10, 1_000] {
        let (transactions, state) = block(accounts, 1_000);
        let signatures = vec![true; transactions.len()];
        group.throughput(Throughput::Elements(transactions.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("sequential-with-signature-checks", accounts),
            &accounts,
            |b, _| {
                b.iter(|| {
                    SequentialExecutor
                        .execute(&env, black_box(&transactions), &state)
                        .unwrap()
                })
            },
        );
        for threads in [1, 2] {
            let executor = ParallelExecutor::new(threads);
            group.bench_with_input(
                BenchmarkId::new(format!("block-stm/{threads}-threads"), accounts),
                &accounts,
                |b, _| {
                    b.iter(|| {
                        executor
                            .execute_verified(&env, black_box(&transactions), &signatures, &state)
                            .unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, execution);
criterion_main!(benches);
