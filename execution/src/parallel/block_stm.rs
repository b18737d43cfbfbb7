//! The generic Block-STM engine (arXiv 2203.06871, Algorithm 1): worker threads take tasks
//! from the [`Scheduler`], execute transactions optimistically against the [`MvMemory`], and
//! validate what they read; when every transaction is executed and validated, the outputs
//! of each transaction's last incarnation and the last write to each key are the block's
//! result (lazy commit).
//!
//! The engine knows nothing about accounts or transfers: a [`TransactionLogic`] executes
//! transaction `i` through a read callback over generic keys and values, and returns its
//! output and write set. Read and write sets are discovered while running, so any
//! transaction kind works unchanged.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::thread;

pub use super::mvmemory::KeyWrite;
use super::mvmemory::{MvMemory, MvRead, ReadOrigin};
use super::scheduler::{Claims, Scheduler, Task, Version, Worker};
use super::{lock, Padded, TxnIndex};
use crate::state::StoreError;

/// The transaction rules the engine runs, over state keys `K` holding values `V`.
///
/// [`TransactionLogic::execute`] must be a deterministic function of the transaction index
/// and the values `read` returns: the engine may run a transaction several times (each run
/// is an *incarnation*), concurrently with others, and keeps only the last one.
pub trait TransactionLogic<K, V>: Sync {
    /// What one transaction produces besides its writes (a receipt, a fee, ...).
    type Output: Send;

    /// Executes transaction `index` of the block.
    ///
    /// `read` returns the value of a key as of just before this transaction (the state
    /// before the block with the writes of every earlier transaction applied). It does not
    /// see this transaction's own writes: the logic applies those itself. An error from
    /// `read` means this incarnation cannot go on (it read a value an earlier transaction is
    /// about to rewrite, or storage failed); the logic must return it unchanged, as soon as
    /// it gets it. The engine notices a swallowed error anyway and discards the run.
    ///
    /// Returns the output and the write set: every key written with its new value (a key
    /// listed twice keeps its last value).
    fn execute<E>(
        &self,
        index: TxnIndex,
        read: &mut dyn FnMut(&K) -> Result<V, E>,
    ) -> Result<TxnOutput<K, V, Self::Output>, E>;
}

/// What one transaction produced: its output and its write set.
pub type TxnOutput<K, V, O> = (O, Vec<(K, V)>);

/// What [`run`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStmOutput<K, V, O> {
    /// Each transaction's output (from its last incarnation), in block order.
    pub outputs: Vec<O>,
    /// The block's final writes: each key written once, with the value the highest
    /// transaction writing it gave it and, when a transaction read it, its value before the
    /// block. Keys come in no particular order. Values equal to the state before the block
    /// are kept (filtering is the caller's choice).
    pub writes: Vec<KeyWrite<K, V>>,
    /// Incarnations run, in total (the block's size when nothing was re-executed), counting
    /// runs cut short by a read of an ESTIMATE.
    pub executions: usize,
    /// Validations run, in total.
    pub validations: usize,
}

/// Why an incarnation stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// It read an ESTIMATE of this earlier transaction.
    Dependency(TxnIndex),
    /// Storage failed; the error is recorded and the block is halted.
    Storage,
}

/// The error `read` hands to the logic. Only the engine makes one.
#[derive(Debug, Clone, Copy)]
struct Aborted(Halt);

/// The reads of one incarnation: each key once, with the value it returned (so a key read
/// twice reads the same value) and where that value came from. One per worker, cleared and
/// reused for every incarnation it runs, so reading allocates nothing once warmed up.
struct ReadSet<K, V> {
    /// Each key with its origin: what [`MvMemory::record`] keeps for validation.
    origins: Vec<(K, ReadOrigin)>,
    /// The value of `origins[i]`.
    values: Vec<V>,
    /// Positions in `origins`, built once there are enough reads for a scan to be slow.
    index: Option<HashMap<K, usize>>,
}

const READ_SET_SCAN_LIMIT: usize = 16;

impl<K: Eq + Hash + Clone, V: Clone> ReadSet<K, V> {
    fn new() -> Self {
        ReadSet {
            origins: Vec::new(),
            values: Vec::new(),
            index: None,
        }
    }

    /// Empties the set for the next incarnation (keeping its capacity).
    fn clear(&mut self) {
        self.origins.clear();
        self.values.clear();
        self.index = None;
    }

    fn get(&self, key: &K) -> Option<&V> {
        let position = match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.origins.iter().position(|(k, _)| k == key),
        };
        position.and_then(|position| self.values.get(position))
    }

    fn insert(&mut self, key: K, origin: ReadOrigin, value: V) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.origins.len());
        }
        self.origins.push((key, origin));
        self.values.push(value);
        if self.index.is_none() && self.origins.len() > READ_SET_SCAN_LIMIT {
            self.index = Some(
                self.origins
                    .iter()
                    .enumerate()
                    .map(|(position, (key, _))| (key.clone(), position))
                    .collect(),
            );
        }
    }
}

/// The last finished incarnation's output, per transaction.
type ResultSlot<O> = Padded<Mutex<Option<O>>>;

/// The state shared by the workers of one block.
struct Engine<'a, K, V, L: TransactionLogic<K, V>> {
    logic: &'a L,
    base: &'a (dyn Fn(&K) -> Result<V, StoreError> + Sync),
    scheduler: Scheduler,
    memory: MvMemory<K, V>,
    /// The last finished incarnation's result, per transaction.
    results: Box<[ResultSlot<L::Output>]>,
    /// The first storage error; the block fails with it.
    error: Mutex<Option<StoreError>>,
}

/// Halts the block when the worker holding it unwinds, so the other workers stop instead
/// of waiting forever for the task it will never finish.
struct HaltOnPanic<'a>(&'a Scheduler);

impl Drop for HaltOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.halt();
        }
    }
}

/// A worker's identity and reusable buffers.
struct WorkerBuffers<K, V> {
    /// Which worker this is (the scheduler counts its tasks apart).
    worker: Worker,
    /// The running incarnation's reads.
    reads: ReadSet<K, V>,
    /// Scratch space for [`MvMemory::record`].
    written: Vec<K>,
}

/// How many tasks a worker ran.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerCounts {
    executions: usize,
    validations: usize,
}

impl<K, V, L> Engine<'_, K, V, L>
where
    K: Eq + Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
    L: TransactionLogic<K, V>,
{
    fn fail(&self, error: StoreError) {
        lock(&self.error).get_or_insert(error);
        self.scheduler.halt();
    }

    /// Worker `worker`: takes tasks until the block is done.
    fn work(&self, worker: Worker) -> WorkerCounts {
        let _halt_on_panic = HaltOnPanic(&self.scheduler);
        let mut claims = Claims::new(worker);
        let mut buffers = WorkerBuffers {
            worker,
            reads: ReadSet::new(),
            written: Vec::new(),
        };
        let mut counts = WorkerCounts::default();
        let mut task = None;
        let mut idle = 0u32;
        while !self.scheduler.done() {
            task = match task {
                Some(Task::Execute(version)) => {
                    self.try_execute(version, &mut buffers, &mut counts)
                }
                Some(Task::Validate(version)) => {
                    counts.validations += 1;
                    self.validate(version, worker)
                }
                None => {
                    let next = self.scheduler.next_task(&mut claims);
                    if next.is_some() {
                        idle = 0;
                    } else {
                        // Nothing to do until another worker finishes something: spin a
                        // little, then give the core away (workers may outnumber cores).
                        idle = idle.saturating_add(1);
                        if idle < 64 {
                            std::hint::spin_loop();
                        } else {
                            thread::yield_now();
                        }
                    }
                    next
                }
            };
        }
        counts
    }

    /// Runs one incarnation (again, when the ESTIMATE it hit was resolved meanwhile), records
    /// its reads and writes, and returns the follow-up task.
    fn try_execute(
        &self,
        version: Version,
        buffers: &mut WorkerBuffers<K, V>,
        counts: &mut WorkerCounts,
    ) -> Option<Task> {
        let Version { txn, incarnation } = version;
        loop {
            counts.executions += 1;
            let reads = &mut buffers.reads;
            reads.clear();
            let mut halt = None;
            let result = {
                let mut read = |key: &K| -> Result<V, Aborted> {
                    if let Some(halt) = halt {
                        return Err(Aborted(halt));
                    }
                    if let Some(value) = reads.get(key) {
                        return Ok(value.clone());
                    }
                    let (origin, value) = match self.memory.read(key, txn, self.base) {
                        Ok(MvRead::Value(version, value)) => (ReadOrigin::Version(version), value),
                        Ok(MvRead::Storage(value)) => (ReadOrigin::Storage, value),
                        Ok(MvRead::Estimate(blocking)) => {
                            halt = Some(Halt::Dependency(blocking));
                            return Err(Aborted(Halt::Dependency(blocking)));
                        }
                        Err(error) => {
                            self.fail(error);
                            halt = Some(Halt::Storage);
                            return Err(Aborted(Halt::Storage));
                        }
                    };
                    reads.insert(key.clone(), origin, value.clone());
                    Ok(value)
                };
                self.logic.execute(txn, &mut read)
            };
            // A halt recorded by `read` wins over whatever the logic made of the error (it
            // may have swallowed it and carried on with a made-up value).
            let outcome = match (halt, result) {
                (None, Ok(done)) => Ok(done),
                (Some(halt), _) | (None, Err(Aborted(halt))) => Err(halt),
            };
            match outcome {
                Ok((output, writes)) => {
                    let wrote_new_location = self.memory.record(
                        version,
                        &mut buffers.reads.origins,
                        writes,
                        &mut buffers.written,
                    );
                    if let Some(slot) = self.results.get(txn) {
                        *lock(slot) = Some(output);
                    }
                    return self.scheduler.finish_execution(
                        txn,
                        incarnation,
                        wrote_new_location,
                        buffers.worker,
                    );
                }
                // The block is halted; the error is recorded.
                Err(Halt::Storage) => return None,
                Err(Halt::Dependency(blocking)) => {
                    if self.scheduler.add_dependency(txn, blocking, buffers.worker) {
                        return None;
                    }
                    // The blocking transaction was re-executed meanwhile: run again.
                }
            }
        }
    }

    /// Validates one incarnation's reads; aborts it (its writes become ESTIMATEs) when one
    /// changed.
    fn validate(&self, version: Version, worker: Worker) -> Option<Task> {
        let Version { txn, incarnation } = version;
        let valid = self.memory.validate_read_set(txn);
        let aborted = !valid && self.scheduler.try_validation_abort(txn, incarnation);
        if aborted {
            self.memory.convert_writes_to_estimates(txn);
        }
        self.scheduler.finish_validation(txn, aborted, worker)
    }
}

/// Executes a block of `num_txns` transactions with Block-STM on `threads` threads (the
/// calling thread is one of them; at most one per transaction) and returns the same outputs
/// and final writes as running them one after another in index order.
///
/// `base` reads the state before the block; it is called from every worker thread, possibly
/// more than once for the same key. A `base` error fails the block with that error. A panic
/// in `logic` (or `base`) stops every worker and is raised again once they have all stopped.
pub fn run<K, V, L>(
    threads: usize,
    num_txns: usize,
    logic: &L,
    base: &(dyn Fn(&K) -> Result<V, StoreError> + Sync),
) -> Result<BlockStmOutput<K, V, L::Output>, StoreError>
where
    K: Eq + Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
    L: TransactionLogic<K, V>,
{
    let threads = threads.clamp(1, num_txns.max(1));
    let engine = Engine {
        logic,
        base,
        scheduler: Scheduler::new(num_txns, threads),
        memory: MvMemory::new(num_txns),
        results: (0..num_txns).map(|_| Padded(Mutex::new(None))).collect(),
        error: Mutex::new(None),
    };
    let mut counts = WorkerCounts::default();
    let mut panic = None;
    thread::scope(|scope| {
        let engine = &engine;
        let helpers: Vec<_> = (1..threads)
            .map(|id| scope.spawn(move || engine.work(Worker(id))))
            .collect();
        let mine = engine.work(Worker(0));
        counts.executions += mine.executions;
        counts.validations += mine.validations;
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => {
                    counts.executions += theirs.executions;
                    counts.validations += theirs.validations;
                }
                Err(payload) => {
                    panic.get_or_insert(payload);
                }
            }
        }
    });
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    let Engine {
        results,
        error,
        memory,
        ..
    } = engine;
    if let Some(error) = error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(error);
    }

    // Every transaction is executed and validated before the scheduler reports the block
    // done; a missing result or a leftover ESTIMATE would be a bug in the engine.
    let unfinished = |txn: TxnIndex| StoreError::Corrupt {
        what: "parallel execution",
        detail: format!("transaction {txn} finished without a result"),
    };
    let mut outputs = Vec::with_capacity(num_txns);
    for (txn, slot) in results.into_vec().into_iter().enumerate() {
        let output = slot.0.into_inner().unwrap_or_else(PoisonError::into_inner);
        outputs.push(output.ok_or_else(|| unfinished(txn))?);
    }
    let writes = memory.into_writes().map_err(unfinished)?;
    Ok(BlockStmOutput {
        outputs,
        writes,
        executions: counts.executions,
        validations: counts.validations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Each transaction adds its index to a few counters chosen by a tiny generator, reading
    /// each first: a read-modify-write workload with adjustable contention.
    struct Counters {
        keys: usize,
        touches: Vec<Vec<usize>>,
    }

    impl Counters {
        fn new(num_txns: usize, keys: usize, per_txn: usize, seed: u64) -> Self {
            let mut state = seed | 1;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let touches = (0..num_txns)
                .map(|_| {
                    (0..per_txn)
                        .map(|_| (next() % keys as u64) as usize)
                        .collect()
                })
                .collect();
            Counters { keys, touches }
        }

        fn sequential(&self) -> (Vec<u64>, HashMap<usize, u64>) {
            let mut state: HashMap<usize, u64> = HashMap::new();
            let mut outputs = Vec::new();
            for txn in 0..self.touches.len() {
                let mut read = |key: &usize| -> Result<u64, ()> {
                    Ok(state.get(key).copied().unwrap_or(*key as u64 * 1000))
                };
                let (output, writes) = self.execute(txn, &mut read).unwrap();
                outputs.push(output);
                state.extend(writes);
            }
            (outputs, state)
        }
    }

    impl TransactionLogic<usize, u64> for Counters {
        type Output = u64;

        fn execute<E>(
            &self,
            index: TxnIndex,
            read: &mut dyn FnMut(&usize) -> Result<u64, E>,
        ) -> Result<(u64, Vec<(usize, u64)>), E> {
            let mut writes: Vec<(usize, u64)> = Vec::new();
            let mut sum = 0;
            for &key in &self.touches[index] {
                assert!(key < self.keys);
                let current = match writes.iter().rev().find(|(k, _)| *k == key) {
                    Some((_, value)) => *value,
                    None => read(&key)?,
                };
                sum += current;
                writes.push((key, current + index as u64 + 1));
            }
            Ok((sum, writes))
        }
    }

    fn base(key: &usize) -> Result<u64, StoreError> {
        Ok(*key as u64 * 1000)
    }

    fn check(logic: &Counters, threads: usize) -> usize {
        let (outputs, state) = logic.sequential();
        let result = run(threads, logic.touches.len(), logic, &base).unwrap();
        assert_eq!(result.outputs, outputs, "threads {threads}");
        let writes: HashMap<usize, u64> = result.writes.iter().map(|w| (w.key, w.value)).collect();
        assert_eq!(writes.len(), result.writes.len(), "a key listed twice");
        assert_eq!(writes, state, "threads {threads}");
        assert!(result.executions >= logic.touches.len());
        result.executions
    }

    #[test]
    fn matches_a_sequential_loop_at_every_contention_and_thread_count() {
        for (keys, per_txn) in [(1, 1), (2, 2), (5, 3), (50, 2), (1000, 4)] {
            for seed in 0..4 {
                let logic = Counters::new(120, keys, per_txn, seed);
                for threads in [1, 2, 3, 4, 8] {
                    check(&logic, threads);
                }
            }
        }
    }

    #[test]
    fn one_thread_runs_each_transaction_exactly_once() {
        let logic = Counters::new(200, 3, 2, 9);
        assert_eq!(check(&logic, 1), 200);
    }

    #[test]
    fn an_empty_block_returns_nothing() {
        let logic = Counters::new(0, 1, 1, 1);
        let result = run(4, 0, &logic, &base).unwrap();
        assert!(result.outputs.is_empty() && result.writes.is_empty());
        assert_eq!((result.executions, result.validations), (0, 0));
    }

    #[test]
    fn a_storage_error_fails_the_block() {
        let logic = Counters::new(100, 20, 2, 3);
        let failing = |key: &usize| -> Result<u64, StoreError> {
            if *key == 7 {
                Err(StoreError::Tree("disk on fire".into()))
            } else {
                Ok(0)
            }
        };
        for threads in [1, 4] {
            let error = run(threads, 100, &logic, &failing).unwrap_err();
            assert!(error.to_string().contains("disk on fire"), "{error}");
        }
    }

    /// A logic that panics in one transaction: the panic reaches the caller and the other
    /// workers do not hang.
    struct Panics;

    impl TransactionLogic<usize, u64> for Panics {
        type Output = ();

        fn execute<E>(
            &self,
            index: TxnIndex,
            read: &mut dyn FnMut(&usize) -> Result<u64, E>,
        ) -> Result<((), Vec<(usize, u64)>), E> {
            let value = read(&0)?;
            if index == 37 {
                panic!("transaction 37 exploded");
            }
            Ok(((), vec![(0, value + 1)]))
        }
    }

    #[test]
    fn a_panicking_worker_is_raised_again_after_the_others_stop() {
        for threads in [1, 4] {
            let outcome = std::panic::catch_unwind(|| run(threads, 100, &Panics, &base));
            let payload = outcome.expect_err("the panic must propagate");
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            assert!(message.contains("exploded"), "{message}");
        }
    }

    /// A logic that swallows the engine's read errors and carries on with a made-up value:
    /// the engine still discards those runs, so the result is right.
    struct Swallows(Counters, AtomicUsize);

    impl TransactionLogic<usize, u64> for Swallows {
        type Output = u64;

        fn execute<E>(
            &self,
            index: TxnIndex,
            read: &mut dyn FnMut(&usize) -> Result<u64, E>,
        ) -> Result<(u64, Vec<(usize, u64)>), E> {
            let mut forgiving = |key: &usize| -> Result<u64, E> {
                Ok(read(key).unwrap_or_else(|_| {
                    self.1.fetch_add(1, Ordering::Relaxed);
                    u64::MAX / 4
                }))
            };
            self.0.execute(index, &mut forgiving)
        }
    }

    #[test]
    fn swallowed_read_errors_do_not_leak_into_the_result() {
        let logic = Swallows(Counters::new(150, 3, 2, 5), AtomicUsize::new(0));
        let (outputs, state) = logic.0.sequential();
        for _ in 0..5 {
            let result = run(4, 150, &logic, &base).unwrap();
            assert_eq!(result.outputs, outputs);
            let writes: HashMap<usize, u64> = result
                .writes
                .into_iter()
                .map(|w| (w.key, w.value))
                .collect();
            assert_eq!(writes, state);
        }
    }

    #[test]
    fn repeated_reads_of_a_key_return_the_first_value() {
        struct ReadsTwice;
        impl TransactionLogic<u8, u64> for ReadsTwice {
            type Output = bool;
            fn execute<E>(
                &self,
                _index: TxnIndex,
                read: &mut dyn FnMut(&u8) -> Result<u64, E>,
            ) -> Result<(bool, Vec<(u8, u64)>), E> {
                // Enough keys to switch the read set to its index.
                let first: Vec<u64> = (0..40u8).map(|k| read(&k)).collect::<Result<_, _>>()?;
                let second: Vec<u64> = (0..40u8).map(|k| read(&k)).collect::<Result<_, _>>()?;
                Ok((first == second, vec![(0, first[0] + 1)]))
            }
        }
        let base = |key: &u8| -> Result<u64, StoreError> { Ok(u64::from(*key)) };
        let result = run(4, 60, &ReadsTwice, &base).unwrap();
        assert!(result.outputs.iter().all(|same| *same));
        assert_eq!(
            result.writes,
            vec![KeyWrite {
                key: 0,
                value: 60,
                before: Some(0)
            }]
        );
    }
}
