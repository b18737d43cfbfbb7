//! Inner-loop benchmarks of execution: a block of transfers through the sequential executor
//! and through Block-STM at one and two threads, signatures taken as checked so only
//! execution is timed. `cargo bench -p lamina-execution`; the end-to-end table is
//! `lamina bench execution` (docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lamina_execution::executor::{BlockEnv, Executor, PreVerified, SequentialExecutor};
use lamina_execution::parallel::{self, ParallelExecutor, TransactionLogic};
use lamina_execution::state::StoreError;
use lamina_execution::workload::{transfer_block, TransferBlock};
use lamina_primitives::Keypair;

const CHAIN: &str = "bench";

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
        let TransferBlock {
            transactions,
            state,
        } = transfer_block(CHAIN, accounts, 1_000, 1);
        let signatures = vec![true; transactions.len()];
        group.throughput(Throughput::Elements(transactions.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("sequential-with-signature-checks", accounts),
            &accounts,
            |b, _| {
                b.iter(|| {
                    SequentialExecutor
                        .execute(&env, black_box(&transactions), PreVerified::NONE, &state)
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

/// Each transaction reads one key of its own and writes it: no conflicts and next to no
/// work, so what is timed is the engine itself (scheduler and multi-version memory).
struct OwnKey;

impl TransactionLogic<u32, u64> for OwnKey {
    type Output = ();

    fn execute<E>(
        &self,
        index: usize,
        read: &mut dyn FnMut(&u32) -> Result<u64, E>,
    ) -> Result<((), Vec<(u32, u64)>), E> {
        let key = index as u32;
        let value = read(&key)?;
        Ok(((), vec![(key, value + 1)]))
    }
}

fn engine_overhead(c: &mut Criterion) {
    const TRANSACTIONS: usize = 10_000;
    let base = |key: &u32| -> Result<u64, StoreError> { Ok(u64::from(*key)) };
    let mut group = c.benchmark_group("engine_overhead_10000_own_key_txns");
    group.sample_size(20);
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    for threads in [1, 2] {
        group.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, _| {
            b.iter(|| parallel::run(threads, TRANSACTIONS, &OwnKey, &base).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, execution, engine_overhead);
criterion_main!(benches);
