//! `lamina bench execution`: the Block-STM paper's workloads, each run by a true sequential
//! loop and by the parallel executor in the same process, so the speedup is a ratio measured
//! under the same conditions. Medians of several runs; one JSON object per row with `--json`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use lamina_execution::executor::{
    execute_transaction, BlockEnv, Executor, PreVerified, SequentialExecutor, StateView,
};
use lamina_execution::parallel::{self, ParallelExecutor, TransactionLogic};
use lamina_execution::state::StoreError;
use lamina_execution::workload::transfer_block;
use lamina_primitives::{Account, Address, Hash, Keypair, Transaction};
use serde::Serialize;

const CHAIN: &str = "lamina-bench";

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// W1 .. W4.
    pub workload: String,
    /// Distinct accounts transfers are drawn from.
    pub accounts: usize,
    /// Transactions per block.
    pub block_size: usize,
    /// Threads of the parallel executor.
    pub threads: usize,
    /// Sequential loop throughput (median run).
    pub sequential_tps: f64,
    /// Parallel executor throughput (median run).
    pub parallel_tps: f64,
    /// `parallel_tps / sequential_tps`.
    pub speedup: f64,
    /// Incarnations executed per transaction by the parallel executor (1.0 = no re-execution).
    pub executions_per_tx: f64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Parallel threads.
    pub threads: usize,
    /// Timed runs per measurement (the median is reported).
    pub runs: usize,
    /// Only the smaller block size (a quick look).
    pub quick: bool,
}

fn env(fee: u64) -> BlockEnv<'static> {
    BlockEnv {
        height: 1,
        proposer: Keypair::deterministic("bench-proposer").address(),
        chain_id: CHAIN,
        fee_per_transaction: fee,
    }
}

/// The transfer rules, with signatures taken as checked (W1–W3 measure execution alone),
/// plus `work` extra rounds of hashing per transaction (W3's heavier transaction kind).
struct TransferLogic<'a> {
    env: BlockEnv<'a>,
    transactions: &'a [Transaction],
    work: u32,
}

fn hash_work(transaction: &Transaction, rounds: u32) -> Hash {
    let mut hash = Hash::digest(&transaction.signature.0);
    for _ in 0..rounds {
        hash = Hash::digest(&hash.0);
    }
    hash
}

impl TransferLogic<'_> {
    fn run<E>(
        &self,
        index: usize,
        read: &mut dyn FnMut(&Address) -> Result<Account, E>,
    ) -> Result<(u64, Vec<(Address, Account)>), E> {
        let transaction = &self.transactions[index];
        if self.work > 0 {
            std::hint::black_box(hash_work(transaction, self.work));
        }
        let effect = execute_transaction(&self.env, index as u32, transaction, true, read)?;
        Ok((effect.receipt.fee, effect.writes))
    }
}

impl TransactionLogic<Address, Account> for TransferLogic<'_> {
    type Output = u64;

    fn execute<E>(
        &self,
        index: usize,
        read: &mut dyn FnMut(&Address) -> Result<Account, E>,
    ) -> Result<(u64, Vec<(Address, Account)>), E> {
        self.run(index, read)
    }
}

/// A plain loop over the same logic: the baseline every speedup is measured against.
/// Returns the fees and the final value of every account written.
fn sequential_loop(
    logic: &TransferLogic<'_>,
    state: &BTreeMap<Address, Account>,
) -> (u64, HashMap<Address, Account>) {
    let mut overlay: HashMap<Address, Account> = HashMap::new();
    let mut fees = 0u64;
    for index in 0..logic.transactions.len() {
        let mut read = |address: &Address| -> Result<Account, StoreError> {
            Ok(overlay
                .get(address)
                .copied()
                .unwrap_or_else(|| state.get(address).copied().unwrap_or_default()))
        };
        if let Ok((fee, writes)) = logic.run(index, &mut read) {
            fees += fee;
            overlay.extend(writes);
        }
    }
    (fees, overlay)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs `f` once untimed (warm-up), then `runs` timed times; the median time and the last
/// result.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut last = f();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let value = f();
        samples.push(start.elapsed());
        // Dropping the previous result happens outside the timed region.
        last = value;
    }
    (median(samples), last)
}

fn row(
    workload: &str,
    accounts: usize,
    block_size: usize,
    threads: usize,
    sequential: Duration,
    parallel: Duration,
    executions: usize,
) -> BenchRow {
    let tps = |d: Duration| block_size as f64 / d.as_secs_f64().max(1e-9);
    BenchRow {
        workload: workload.into(),
        accounts,
        block_size,
        threads,
        sequential_tps: tps(sequential),
        parallel_tps: tps(parallel),
        speedup: sequential.as_secs_f64() / parallel.as_secs_f64().max(1e-9),
        executions_per_tx: executions as f64 / block_size.max(1) as f64,
    }
}

/// W3: a heavier transaction kind, run through the generic Block-STM engine (the same one
/// the parallel executor uses) with its own transaction logic.
fn core_row(
    name: &str,
    accounts: usize,
    size: usize,
    work: u32,
    options: &BenchOptions,
) -> anyhow::Result<BenchRow> {
    let workload = transfer_block(CHAIN, accounts, size, 7);
    let logic = TransferLogic {
        env: env(0),
        transactions: &workload.transactions,
        work,
    };
    let state = &workload.state;
    let base = |address: &Address| -> Result<Account, StoreError> {
        Ok(state.get(address).copied().unwrap_or_default())
    };
    let (sequential, (_, seq_writes)) = time(options.runs, || sequential_loop(&logic, state));
    let (parallel, output) = time(options.runs, || {
        parallel::run(options.threads, size, &logic, &base)
    });
    let output = output?;
    let par_writes: HashMap<Address, Account> = output
        .writes
        .iter()
        .map(|write| (write.key, write.value))
        .collect();
    anyhow::ensure!(
        par_writes == seq_writes,
        "{name}: parallel and sequential writes differ"
    );
    Ok(row(
        name,
        accounts,
        size,
        options.threads,
        sequential,
        parallel,
        output.executions,
    ))
}

/// W4: the executors end to end, signature verification included: nothing is marked
/// pre-verified, as for a block whose transactions this node's mempool never saw.
fn signed_row(accounts: usize, size: usize, options: &BenchOptions) -> anyhow::Result<BenchRow> {
    let workload = transfer_block(CHAIN, accounts, size, 11);
    let env = env(1);
    let state: &dyn StateView = &workload.state;
    let (sequential, seq_out) = time(options.runs, || {
        SequentialExecutor.execute(&env, &workload.transactions, PreVerified::NONE, state)
    });
    let executor = ParallelExecutor::new(options.threads);
    let (parallel, par_out) = time(options.runs, || {
        executor.execute_with_stats(&env, &workload.transactions, PreVerified::NONE, state)
    });
    let (par_out, stats) = par_out?;
    anyhow::ensure!(
        seq_out? == par_out,
        "W4: parallel and sequential outputs differ"
    );
    Ok(row(
        "W4",
        accounts,
        size,
        options.threads,
        sequential,
        parallel,
        stats.executions,
    ))
}

/// W1 and W2: the parallel executor (with its fallback for total contention) on
/// pre-verified transfers, against the sequential loop.
fn transfer_row(
    name: &str,
    accounts: usize,
    size: usize,
    fee: u64,
    options: &BenchOptions,
) -> anyhow::Result<BenchRow> {
    let workload = transfer_block(CHAIN, accounts, size, 7);
    let env = env(fee);
    let logic = TransferLogic {
        env,
        transactions: &workload.transactions,
        work: 0,
    };
    let state = &workload.state;
    let (sequential, (seq_fees, _)) = time(options.runs, || sequential_loop(&logic, state));
    let signatures = vec![true; size];
    let executor = ParallelExecutor::new(options.threads);
    let (parallel, output) = time(options.runs, || {
        executor.execute_verified(&env, &workload.transactions, &signatures, state)
    });
    let (output, stats) = output?;
    anyhow::ensure!(
        output.fees == seq_fees,
        "{name}: parallel and sequential fees differ"
    );
    Ok(row(
        name,
        accounts,
        size,
        options.threads,
        sequential,
        parallel,
        stats.executions,
    ))
}

/// Every row of the benchmark, in the order of the table.
pub fn run(options: &BenchOptions) -> anyhow::Result<Vec<BenchRow>> {
    let sizes: &[usize] = if options.quick {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    let mut rows = Vec::new();
    for &size in sizes {
        for accounts in [2, 10, 100, 1_000, 10_000] {
            rows.push(transfer_row("W1", accounts, size, 0, options)?);
        }
        rows.push(transfer_row("W2", 10_000, size, 1, options)?);
        rows.push(core_row("W3", 10_000, size, HEAVY_ROUNDS, options)?);
        rows.push(signed_row(10_000, size, options)?);
    }
    Ok(rows)
}

/// Extra hash rounds that make a W3 transaction cost about ten transfers.
const HEAVY_ROUNDS: u32 = 60;

/// The table as text.
pub fn render(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<8} {:>8} {:>7} {:>7} {:>14} {:>14} {:>8} {:>9}\n",
        "workload",
        "accounts",
        "block",
        "threads",
        "sequential/s",
        "parallel/s",
        "speedup",
        "execs/tx"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:>8} {:>7} {:>7} {:>14.0} {:>14.0} {:>7.2}x {:>9.2}\n",
            r.workload,
            r.accounts,
            r.block_size,
            r.threads,
            r.sequential_tps,
            r.parallel_tps,
            r.speedup,
            r.executions_per_tx
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_and_checks_itself_on_small_blocks() {
        let options = BenchOptions {
            threads: 2,
            runs: 1,
            quick: true,
        };
        let rows = [
            transfer_row("W1", 2, 60, 0, &options).unwrap(),
            transfer_row("W2", 50, 60, 1, &options).unwrap(),
            core_row("W3", 50, 60, 2, &options).unwrap(),
            signed_row(50, 60, &options).unwrap(),
        ];
        for row in &rows {
            assert!(
                row.sequential_tps > 0.0 && row.parallel_tps > 0.0,
                "{row:?}"
            );
            assert!(row.executions_per_tx >= 1.0, "{row:?}");
        }
        let table = render(&rows);
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(serde_json::to_string(&rows[0])
            .unwrap()
            .contains("\"executions_per_tx\""));
    }
}
