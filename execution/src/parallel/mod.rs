//! The `parallel` executor: Block-STM (arXiv 2203.06871), as in aptos-core's
//! `block-executor` and `mvhashmap`.
//!
//! Transactions run optimistically, in block order, on several threads over a multi-version
//! memory (`mvmemory.rs`); a collaborative scheduler (`scheduler.rs`) hands out execution
//! and validation tasks; an incarnation whose reads turn out stale is aborted, its writes
//! become ESTIMATE markers that make later readers wait for its next incarnation, and it
//! runs again. When every transaction is executed and validated, the last incarnations'
//! writes, merged in block order, are the block's writes (lazy commit). The result is the
//! one the `sequential` executor computes, bit for bit, at every thread count.
//!
//! The engine ([`run`], [`TransactionLogic`]) is generic over state keys and values with
//! read and write sets discovered while running, so new transaction kinds need no change to
//! it. [`ParallelExecutor`] plugs the transaction rules ([`execute_transaction`]) into it:
//!
//! - signatures are verified once per transaction, before execution, on the same number of
//!   threads, in contiguous chunks; re-executions reuse the result. Transactions the caller
//!   marks as already verified ([`PreVerified`]: admitted by this node's mempool) are not
//!   verified again, and the chunks are cut from the remaining ones only, so the threads
//!   still share the verification work evenly;
//! - fees never make transactions conflict: no transaction reads or writes the proposer for
//!   fees. They are summed from the receipts after execution and credited to the proposer
//!   once at the end, exactly as the sequential executor does;
//! - when contention is total, Block-STM cannot beat a sequential loop, so the block runs
//!   through the sequential loop instead (signatures still checked in parallel). The rule,
//!   from a pre-scan of senders and recipients: fewer than 2 transactions, a single sender
//!   (every transaction then depends on the previous one through the nonce), or fewer
//!   distinct accounts than twice the threads (the transactions in flight at once would
//!   then almost all touch the same accounts).

mod block_stm;
mod mvmemory;
mod scheduler;

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;

use lamina_primitives::{Account, Address, Receipt, Transaction, TxPayload};

pub use block_stm::{run, BlockStmOutput, KeyWrite, TransactionLogic, TxnOutput};

use crate::config::ExecutorKind;
use crate::executor::{
    credit_proposer, execute_in_order, execute_transaction, fees_and_failures, BlockEnv,
    BlockOutput, Executor, Overlay, PreVerified, StateView,
};
use crate::state::StoreError;

/// A transaction's position in its block.
pub type TxnIndex = usize;

/// How many times a transaction was aborted before an incarnation (0 for the first run).
pub type Incarnation = usize;

/// A value alone on its cache lines. Per-transaction slots sit side by side and neighbouring
/// transactions run on different threads at once; without padding every write to one slot
/// would evict its neighbours from the other core's cache (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Locks a mutex, ignoring poisoning: a worker that panicked halts the block, and its panic
/// is raised again once every worker has stopped, so no poisoned data outlives the block.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one block's parallel execution did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecutionStats {
    /// Incarnations run, in total (the block's size when nothing was re-executed).
    pub executions: usize,
    /// Validations run, in total.
    pub validations: usize,
    /// Whether contention was total and the block ran through the sequential loop.
    pub fell_back_to_sequential: bool,
}

/// Executes blocks with Block-STM on `threads` threads (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelExecutor {
    /// Worker threads, the calling one included (0 counts as 1).
    pub threads: usize,
}

impl Default for ParallelExecutor {
    /// One thread per available core.
    fn default() -> Self {
        ParallelExecutor::new(thread::available_parallelism().map_or(1, usize::from))
    }
}

impl ParallelExecutor {
    /// An executor running `threads` worker threads (at least one).
    pub fn new(threads: usize) -> Self {
        ParallelExecutor {
            threads: threads.max(1),
        }
    }

    /// [`Executor::execute`], also returning what the execution did.
    pub fn execute_with_stats(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        pre_verified: PreVerified<'_>,
        state: &dyn StateView,
    ) -> Result<(BlockOutput, ExecutionStats), StoreError> {
        self.execute_block(env, transactions, pre_verified, state, true)
    }

    /// Like [`ParallelExecutor::execute_with_stats`] for a caller that has verified the
    /// signatures already (`signatures[i]`: transaction `i`'s signature is valid); the
    /// execution benchmarks use it to time execution alone.
    pub fn execute_verified(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        signatures: &[bool],
        state: &dyn StateView,
    ) -> Result<(BlockOutput, ExecutionStats), StoreError> {
        self.execute_with_signatures(env, transactions, signatures, state, true)
    }

    /// Executes a block; `allow_fallback: false` runs Block-STM even when contention is
    /// total (tests use it to exercise the engine on every block).
    fn execute_block(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        pre_verified: PreVerified<'_>,
        state: &dyn StateView,
        allow_fallback: bool,
    ) -> Result<(BlockOutput, ExecutionStats), StoreError> {
        let signatures = verify_signatures(transactions, pre_verified, self.threads.max(1));
        self.execute_with_signatures(env, transactions, &signatures, state, allow_fallback)
    }

    fn execute_with_signatures(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        signatures: &[bool],
        state: &dyn StateView,
        allow_fallback: bool,
    ) -> Result<(BlockOutput, ExecutionStats), StoreError> {
        let threads = self.threads.max(1);
        let signature_valid = |index: usize| signatures.get(index).copied().unwrap_or(false);

        if allow_fallback && contention_is_total(transactions, threads) {
            let output =
                execute_in_order(env, transactions, state, &|index, _| signature_valid(index))?;
            let stats = ExecutionStats {
                executions: transactions.len(),
                validations: 0,
                fell_back_to_sequential: true,
            };
            return Ok((output, stats));
        }

        let logic = TransferLogic {
            env,
            transactions,
            signatures,
        };
        let base = |address: &Address| state.account(address);
        let result = run(threads, transactions.len(), &logic, &base)?;

        let receipts = result.outputs;
        let (fees, failed) = fees_and_failures(&receipts);
        let mut overlay = Overlay::new(state);
        for write in result.writes {
            let before = match write.before {
                Some(before) => before,
                None => state.account(&write.key)?,
            };
            overlay.preload(write.key, before, write.value);
        }
        credit_proposer(env, fees, &mut overlay)?;
        let output = BlockOutput {
            receipts,
            writes: overlay.into_writes(),
            fees,
            failed,
        };
        let stats = ExecutionStats {
            executions: result.executions,
            validations: result.validations,
            fell_back_to_sequential: false,
        };
        tracing::trace!(
            height = env.height,
            transactions = transactions.len(),
            executions = stats.executions,
            validations = stats.validations,
            "executed block with Block-STM"
        );
        Ok((output, stats))
    }
}

impl Executor for ParallelExecutor {
    fn name(&self) -> &'static str {
        ExecutorKind::Parallel.name()
    }

    fn execute(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        pre_verified: PreVerified<'_>,
        state: &dyn StateView,
    ) -> Result<BlockOutput, StoreError> {
        self.execute_with_stats(env, transactions, pre_verified, state)
            .map(|(output, _)| output)
    }
}

/// Fewest signatures worth a thread of their own: below this, starting the thread costs
/// more than the verifications it takes over.
const MIN_SIGNATURES_PER_THREAD: usize = 8;

/// Whether each transaction's signature is valid: `true` for those `pre_verified` marks,
/// without checking them again; every other signature is verified once, in contiguous chunks
/// of those left on up to `threads` threads (the calling thread takes the first chunk), each
/// chunk as one batch.
/// Chunking only the unverified ones keeps the threads evenly loaded however the verified
/// ones are spread through the block.
fn verify_signatures(
    transactions: &[Transaction],
    pre_verified: PreVerified<'_>,
    threads: usize,
) -> Vec<bool> {
    let mut valid: Vec<bool> = (0..transactions.len())
        .map(|index| pre_verified.is_verified(index))
        .collect();
    let unknown: Vec<TxnIndex> = (0..transactions.len())
        .filter(|&index| !valid[index])
        .collect();
    if unknown.is_empty() {
        return valid;
    }
    let verify = |results: &mut [bool], indices: &[TxnIndex]| {
        let verdicts =
            Transaction::verify_signatures(indices.iter().map(|&index| &transactions[index]));
        results.copy_from_slice(&verdicts);
    };
    let mut results = vec![false; unknown.len()];
    let chunk = unknown
        .len()
        .div_ceil(threads.max(1))
        .max(MIN_SIGNATURES_PER_THREAD);
    thread::scope(|scope| {
        let mut chunks = results.chunks_mut(chunk).zip(unknown.chunks(chunk));
        let first = chunks.next();
        for (results, indices) in chunks {
            scope.spawn(move || verify(results, indices));
        }
        if let Some((results, indices)) = first {
            verify(results, indices);
        }
    });
    for (&index, result) in unknown.iter().zip(results) {
        valid[index] = result;
    }
    valid
}

/// The fallback rule (see the module documentation): fewer than 2 transactions, a single
/// sender, or fewer distinct accounts (senders and transfer recipients) than `2 × threads`.
fn contention_is_total(transactions: &[Transaction], threads: usize) -> bool {
    if transactions.len() < 2 {
        return true;
    }
    let enough = threads.saturating_mul(2);
    let first_sender = transactions.first().map(|transaction| transaction.sender);
    let mut several_senders = false;
    let mut accounts = HashSet::new();
    for transaction in transactions {
        several_senders |= Some(transaction.sender) != first_sender;
        accounts.insert(transaction.sender);
        // Only a transfer touches a second execution account; a withdrawal's `to` is on the
        // settlement ledger.
        if let TxPayload::Transfer { to, .. } = transaction.payload {
            accounts.insert(to);
        }
        if several_senders && accounts.len() >= enough {
            return false;
        }
    }
    true
}

/// The transaction rules as Block-STM logic over accounts.
struct TransferLogic<'a> {
    env: &'a BlockEnv<'a>,
    transactions: &'a [Transaction],
    signatures: &'a [bool],
}

impl TransactionLogic<Address, Account> for TransferLogic<'_> {
    type Output = Receipt;

    fn execute<E>(
        &self,
        index: TxnIndex,
        read: &mut dyn FnMut(&Address) -> Result<Account, E>,
    ) -> Result<(Receipt, Vec<(Address, Account)>), E> {
        // The engine only runs indices below the block's size.
        let transaction = &self.transactions[index];
        let signature_valid = self.signatures.get(index).copied().unwrap_or(false);
        let position = u32::try_from(index).unwrap_or(u32::MAX);
        let effect = execute_transaction(self.env, position, transaction, signature_valid, read)?;
        Ok((effect.receipt, effect.writes))
    }
}

#[cfg(test)]
mod tests;
