//! The collaborative scheduler of Block-STM (arXiv 2203.06871, Algorithms 4 and 5): it hands
//! out execution and validation tasks to worker threads in (roughly) block order and decides
//! when the block is done.
//!
//! The shared state is the paper's: two task indices (`execution_idx`, `validation_idx`) that
//! only ever move forward by `fetch_add` and back by `fetch_min`, `decrease_cnt` (how often one
//! moved back), the number of tasks handed out and not finished (kept per worker, see
//! below), `done_marker`, and per
//! transaction a status `{ReadyToExecute, Executing, Executed, Aborting}(incarnation)` and the
//! list of transactions waiting for it (its dependencies). Everything here is plain
//! synchronous code over atomics (a status is one atomic word, changed by compare-and-swap)
//! and the dependency lists' mutexes; the workers that call it live in
//! [`super::block_stm`].
//!
//! Task accounting: `try_incarnate` leaves the task count alone and each caller counts its
//! task down when it gets nothing (as aptos-core does), so every task handed out is counted
//! down exactly once, also when another thread incarnated the transaction first. Each worker
//! counts its own tasks in its own cache line (a task never moves between workers), so
//! handing out and finishing a task writes no line another core is using; only
//! `check_done`, near the end of the block, reads them all. Their sum plays the paper's
//! `num_active_tasks`: a worker whose count reads zero has no task then, and can only get
//! one by claiming an index, which the indices already read past the block (or a decrease,
//! which `decrease_cnt` catches) rule out.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{lock, Incarnation, Padded, TxnIndex};

/// One incarnation of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Version {
    /// The transaction's index in the block.
    pub(crate) txn: TxnIndex,
    /// How many times it was aborted before this incarnation.
    pub(crate) incarnation: Incarnation,
}

/// Which worker calls: an index below the number of workers the scheduler was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Worker(pub(crate) usize);

/// The indices a worker has claimed and not yet turned into tasks: claiming a few at a
/// time, instead of one, divides the updates of the shared indices (each a cache line
/// moving between cores) by the batch size. A worker holding claims counts as busy, so the
/// block cannot be declared done under it.
#[derive(Debug)]
pub(crate) struct Claims {
    worker: Worker,
    execution: Range<TxnIndex>,
    validation: Range<TxnIndex>,
}

impl Claims {
    /// No claims yet, for `worker`.
    pub(crate) fn new(worker: Worker) -> Self {
        Claims {
            worker,
            execution: 0..0,
            validation: 0..0,
        }
    }
}

/// Work handed to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// Run this incarnation.
    Execute(Version),
    /// Check that this incarnation's reads are still current.
    Validate(Version),
}

/// Where a transaction stands; the number is the incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    ReadyToExecute(Incarnation),
    Executing(Incarnation),
    Executed(Incarnation),
    Aborting(Incarnation),
}

impl Status {
    /// The status as one word: the incarnation above two bits of state.
    fn encode(self) -> u64 {
        let (incarnation, state) = match self {
            Status::ReadyToExecute(i) => (i, 0),
            Status::Executing(i) => (i, 1),
            Status::Executed(i) => (i, 2),
            Status::Aborting(i) => (i, 3),
        };
        ((incarnation as u64) << 2) | state
    }

    fn decode(word: u64) -> Status {
        let incarnation = (word >> 2) as Incarnation;
        match word & 3 {
            0 => Status::ReadyToExecute(incarnation),
            1 => Status::Executing(incarnation),
            2 => Status::Executed(incarnation),
            _ => Status::Aborting(incarnation),
        }
    }
}

/// A transaction's status in one atomic word: reading it is a load and every transition a
/// single compare-and-swap, where a mutex would cost a lock and an unlock, each a write to a
/// line the other cores then miss on.
#[derive(Debug)]
struct StatusWord(AtomicU64);

impl StatusWord {
    fn new(status: Status) -> Self {
        StatusWord(AtomicU64::new(status.encode()))
    }

    fn load(&self) -> Status {
        Status::decode(self.0.load(ORDER))
    }

    /// Moves `from` to `to`; false (and no change) when the status is not `from`.
    fn transition(&self, from: Status, to: Status) -> bool {
        self.0
            .compare_exchange(from.encode(), to.encode(), ORDER, ORDER)
            .is_ok()
    }
}

/// The scheduler of one block of `num_txns` transactions.
#[derive(Debug)]
pub(crate) struct Scheduler {
    num_txns: usize,
    /// Indices a worker claims at a time.
    batch: usize,
    // Each counter on its own cache lines: they are updated by every thread, and sharing a
    // line would make every update of one invalidate the others.
    execution_idx: Padded<AtomicUsize>,
    validation_idx: Padded<AtomicUsize>,
    decrease_cnt: Padded<AtomicUsize>,
    /// Tasks handed out and not finished, per worker.
    active_tasks: Box<[Padded<AtomicUsize>]>,
    done_marker: Padded<AtomicBool>,
    /// Transactions that read an ESTIMATE of transaction `i` and wait for it to re-execute.
    txn_dependency: Box<[Padded<Mutex<Vec<TxnIndex>>>]>,
    txn_status: Box<[Padded<StatusWord>]>,
}

// Every atomic access is SeqCst: the termination argument of `check_done` relies on a single
// total order of the index, counter and task-count updates.
const ORDER: Ordering = Ordering::SeqCst;

impl Scheduler {
    /// A scheduler for `workers` workers with every transaction ready for its first
    /// incarnation.
    pub(crate) fn new(num_txns: usize, workers: usize) -> Self {
        // Enough claims per worker that the last ones still spread evenly, at most 8 (past
        // that the saved index updates no longer show and a claim holds back too much).
        let batch = (num_txns / (workers.max(1) * 16)).clamp(1, 8);
        Self::with_batch(num_txns, workers, batch)
    }

    /// [`Scheduler::new`] with claims of `batch` indices (at least 1).
    pub(crate) fn with_batch(num_txns: usize, workers: usize, batch: usize) -> Self {
        Scheduler {
            num_txns,
            batch: batch.max(1),
            execution_idx: Padded(AtomicUsize::new(0)),
            validation_idx: Padded(AtomicUsize::new(0)),
            decrease_cnt: Padded(AtomicUsize::new(0)),
            active_tasks: (0..workers.max(1))
                .map(|_| Padded(AtomicUsize::new(0)))
                .collect(),
            done_marker: Padded(AtomicBool::new(num_txns == 0)),
            txn_dependency: (0..num_txns)
                .map(|_| Padded(Mutex::new(Vec::new())))
                .collect(),
            txn_status: (0..num_txns)
                .map(|_| Padded(StatusWord::new(Status::ReadyToExecute(0))))
                .collect(),
        }
    }

    /// Whether every transaction is executed and validated (or the block was halted).
    pub(crate) fn done(&self) -> bool {
        self.done_marker.load(ORDER)
    }

    /// Stops every worker at its next look at [`Scheduler::done`]: the block failed (a storage
    /// error, a panicking worker) and its results will be thrown away.
    pub(crate) fn halt(&self) {
        self.done_marker.store(true, ORDER);
    }

    fn status(&self, txn: TxnIndex) -> Option<&StatusWord> {
        self.txn_status.get(txn).map(|slot| &slot.0)
    }

    fn decrease_execution_idx(&self, target: TxnIndex) {
        self.execution_idx.fetch_min(target, ORDER);
        self.decrease_cnt.fetch_add(1, ORDER);
    }

    fn decrease_validation_idx(&self, target: TxnIndex) {
        self.validation_idx.fetch_min(target, ORDER);
        self.decrease_cnt.fetch_add(1, ORDER);
    }

    fn active(&self, worker: Worker) -> &AtomicUsize {
        // Workers are numbered below the count the scheduler was made for; a stray index
        // shares the last counter, which keeps the sum right.
        let last = self.active_tasks.len() - 1;
        &self.active_tasks[worker.0.min(last)]
    }

    fn start_task(&self, worker: Worker) {
        self.active(worker).fetch_add(1, ORDER);
    }

    fn finish_task(&self, worker: Worker) {
        self.active(worker).fetch_sub(1, ORDER);
    }

    /// Tasks handed out and not finished, all workers together.
    fn active_tasks(&self) -> usize {
        self.active_tasks
            .iter()
            .map(|count| count.load(ORDER))
            .sum()
    }

    /// Sets the done marker when both indices are past the block, no task is in flight, and
    /// no index moved back while we looked.
    fn check_done(&self) {
        let observed = self.decrease_cnt.load(ORDER);
        let execution = self.execution_idx.load(ORDER);
        let validation = self.validation_idx.load(ORDER);
        if execution.min(validation) >= self.num_txns
            && self.active_tasks() == 0
            && observed == self.decrease_cnt.load(ORDER)
        {
            self.done_marker.store(true, ORDER);
        }
    }

    /// Moves a ready transaction to executing; `None` when it is not ready (another thread
    /// took it, it is already executed, or it is past the block).
    fn try_incarnate(&self, txn: TxnIndex) -> Option<Version> {
        let status = self.status(txn)?;
        match status.load() {
            Status::ReadyToExecute(incarnation)
                if status.transition(
                    Status::ReadyToExecute(incarnation),
                    Status::Executing(incarnation),
                ) =>
            {
                Some(Version { txn, incarnation })
            }
            _ => None,
        }
    }

    /// Claims the next `batch` indices of `index` for `worker`, counting the claim as one
    /// active task until its last index is handed out; empty once the index is past the
    /// block.
    fn claim(&self, index: &AtomicUsize, worker: Worker) -> Range<TxnIndex> {
        if index.load(ORDER) >= self.num_txns {
            self.check_done();
            return 0..0;
        }
        self.start_task(worker);
        let start = index.fetch_add(self.batch, ORDER);
        if start >= self.num_txns {
            self.finish_task(worker);
            return 0..0;
        }
        start..(start + self.batch).min(self.num_txns)
    }

    /// The next index of a claim, as a task of its own: the claim's count passes to the task
    /// taking its last index, every other one starts its own.
    fn take(&self, claim: &mut Range<TxnIndex>, worker: Worker) -> Option<TxnIndex> {
        let txn = claim.next()?;
        if claim.start < claim.end {
            self.start_task(worker);
        }
        Some(txn)
    }

    /// The next task for an idle worker: the rest of its claims first, then a validation
    /// when validation lags execution, an execution otherwise. `None` when there is nothing
    /// to do right now.
    pub(crate) fn next_task(&self, claims: &mut Claims) -> Option<Task> {
        let worker = claims.worker;
        loop {
            if let Some(txn) = self.take(&mut claims.validation, worker) {
                if let Some(Status::Executed(incarnation)) = self.status(txn).map(|s| s.load()) {
                    return Some(Task::Validate(Version { txn, incarnation }));
                }
                self.finish_task(worker);
                continue;
            }
            if let Some(txn) = self.take(&mut claims.execution, worker) {
                if let Some(version) = self.try_incarnate(txn) {
                    return Some(Task::Execute(version));
                }
                self.finish_task(worker);
                continue;
            }
            if self.validation_idx.load(ORDER) < self.execution_idx.load(ORDER) {
                claims.validation = self.claim(&self.validation_idx, worker);
                if claims.validation.is_empty() {
                    return None;
                }
            } else {
                claims.execution = self.claim(&self.execution_idx, worker);
                if claims.execution.is_empty() {
                    return None;
                }
            }
        }
    }

    /// `txn` (executing) read an ESTIMATE written by `blocking`. Returns `true` when `txn` is
    /// now parked until `blocking` re-executes (its execution task ends), `false` when
    /// `blocking` has already been re-executed and `txn` should simply run again.
    pub(crate) fn add_dependency(&self, txn: TxnIndex, blocking: TxnIndex, worker: Worker) -> bool {
        let (Some(dependents), Some(blocking_status), Some(status)) = (
            self.txn_dependency.get(blocking),
            self.status(blocking),
            self.status(txn),
        ) else {
            return false;
        };
        {
            // Under the blocking transaction's dependency lock: `finish_execution` marks it
            // executed before it takes that lock, so either we see it executed here or it
            // finds `txn` in the list and resumes it.
            let mut dependents = lock(dependents);
            if matches!(blocking_status.load(), Status::Executed(_)) {
                return false;
            }
            if let Status::Executing(incarnation) = status.load() {
                status.transition(
                    Status::Executing(incarnation),
                    Status::Aborting(incarnation),
                );
            }
            dependents.push(txn);
        }
        self.finish_task(worker);
        true
    }

    /// Aborting(i) → ReadyToExecute(i + 1).
    fn set_ready_status(&self, txn: TxnIndex) {
        if let Some(status) = self.status(txn) {
            if let Status::Aborting(incarnation) = status.load() {
                status.transition(
                    Status::Aborting(incarnation),
                    Status::ReadyToExecute(incarnation + 1),
                );
            }
        }
    }

    fn resume_dependencies(&self, dependents: Vec<TxnIndex>) {
        let min = dependents.iter().copied().min();
        for txn in dependents {
            self.set_ready_status(txn);
        }
        if let Some(min) = min {
            self.decrease_execution_idx(min);
        }
    }

    /// An incarnation finished and its writes are recorded. Wakes the transactions waiting
    /// for it, and returns its validation task when it can be done right away (validation
    /// already went past it and it wrote nothing new); when it wrote a new location every
    /// later transaction must be validated again, so the validation index moves back.
    pub(crate) fn finish_execution(
        &self,
        txn: TxnIndex,
        incarnation: Incarnation,
        wrote_new_location: bool,
        worker: Worker,
    ) -> Option<Task> {
        if let Some(status) = self.status(txn) {
            status.transition(
                Status::Executing(incarnation),
                Status::Executed(incarnation),
            );
        }
        let dependents = self
            .txn_dependency
            .get(txn)
            .map(|dependents| std::mem::take(&mut *lock(dependents)))
            .unwrap_or_default();
        self.resume_dependencies(dependents);
        if self.validation_idx.load(ORDER) > txn {
            if wrote_new_location {
                self.decrease_validation_idx(txn);
            } else {
                return Some(Task::Validate(Version { txn, incarnation }));
            }
        }
        self.finish_task(worker);
        None
    }

    /// A validation of `txn`'s `incarnation` failed: aborts it, unless it was already
    /// aborted (by another validation) or re-executed. Only the caller that gets `true` may
    /// turn the incarnation's writes into ESTIMATEs.
    pub(crate) fn try_validation_abort(&self, txn: TxnIndex, incarnation: Incarnation) -> bool {
        let Some(status) = self.status(txn) else {
            return false;
        };
        status.transition(Status::Executed(incarnation), Status::Aborting(incarnation))
    }

    /// A validation task ended. After an abort, every later transaction must be validated
    /// again, and the aborted one is re-executed right away by this worker when execution
    /// already went past it.
    pub(crate) fn finish_validation(
        &self,
        txn: TxnIndex,
        aborted: bool,
        worker: Worker,
    ) -> Option<Task> {
        if aborted {
            self.set_ready_status(txn);
            self.decrease_validation_idx(txn + 1);
            if self.execution_idx.load(ORDER) > txn {
                if let Some(version) = self.try_incarnate(txn) {
                    return Some(Task::Execute(version));
                }
            }
        }
        self.finish_task(worker);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W0: Worker = Worker(0);

    /// The next task for worker 0 (with claims of one index, a claim never outlives the
    /// call, so fresh claims each time are the same as kept ones).
    fn next(scheduler: &Scheduler) -> Option<Task> {
        assert_eq!(scheduler.batch, 1);
        scheduler.next_task(&mut Claims::new(W0))
    }

    /// Claims and starts the next execution directly, as the paper's
    /// `next_version_to_execute` does.
    fn next_execution(scheduler: &Scheduler) -> Option<Version> {
        let mut claims = Claims::new(W0);
        claims.execution = scheduler.claim(&scheduler.execution_idx, W0);
        match scheduler.next_task(&mut claims) {
            Some(Task::Execute(version)) => Some(version),
            _ => None,
        }
    }

    fn v(txn: TxnIndex, incarnation: Incarnation) -> Version {
        Version { txn, incarnation }
    }

    /// Drives a block with one worker, where no transaction conflicts: execute 0, validate 0,
    /// execute 1, ... and then done.
    #[test]
    fn one_worker_without_conflicts_alternates_execution_and_validation() {
        let scheduler = Scheduler::new(3, 1);
        let mut trace = Vec::new();
        let mut task = None;
        while !scheduler.done() {
            task = match task {
                Some(Task::Execute(version)) => {
                    trace.push(Task::Execute(version));
                    scheduler.finish_execution(version.txn, version.incarnation, true, W0)
                }
                Some(Task::Validate(version)) => {
                    trace.push(Task::Validate(version));
                    scheduler.finish_validation(version.txn, false, W0)
                }
                None => next(&scheduler),
            };
        }
        assert_eq!(
            trace,
            vec![
                Task::Execute(v(0, 0)),
                Task::Validate(v(0, 0)),
                Task::Execute(v(1, 0)),
                Task::Validate(v(1, 0)),
                Task::Execute(v(2, 0)),
                Task::Validate(v(2, 0)),
            ]
        );
        assert_eq!(scheduler.active_tasks(), 0);
    }

    #[test]
    fn a_status_word_round_trips_and_only_moves_from_the_expected_status() {
        for incarnation in [0, 1, 7, 1 << 40] {
            for status in [
                Status::ReadyToExecute(incarnation),
                Status::Executing(incarnation),
                Status::Executed(incarnation),
                Status::Aborting(incarnation),
            ] {
                assert_eq!(Status::decode(status.encode()), status);
            }
        }
        let word = StatusWord::new(Status::Executed(3));
        assert!(!word.transition(Status::Executed(2), Status::Aborting(2)));
        assert!(word.transition(Status::Executed(3), Status::Aborting(3)));
        assert!(!word.transition(Status::Executed(3), Status::Aborting(3)));
        assert_eq!(word.load(), Status::Aborting(3));
    }

    #[test]
    fn an_empty_block_is_done_at_once() {
        let scheduler = Scheduler::new(0, 1);
        assert!(scheduler.done());
        assert_eq!(next(&scheduler), None);
    }

    #[test]
    fn not_done_while_a_task_is_active() {
        let scheduler = Scheduler::new(1, 1);
        assert_eq!(next(&scheduler), Some(Task::Execute(v(0, 0))));
        // Both indices are past the block, but the execution is still running.
        assert_eq!(next(&scheduler), None);
        assert!(!scheduler.done());
        assert_eq!(scheduler.finish_execution(0, 0, true, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(0, 0))));
        assert!(!scheduler.done());
        assert_eq!(scheduler.finish_validation(0, false, W0), None);
        assert_eq!(next(&scheduler), None);
        assert!(scheduler.done());
    }

    #[test]
    fn a_failed_validation_aborts_once_and_reexecutes_the_next_incarnation() {
        let scheduler = Scheduler::new(2, 1);
        assert_eq!(next(&scheduler), Some(Task::Execute(v(0, 0))));
        // Validation lags execution, but 0 is not executed yet: claiming its validation
        // gives nothing, and the worker goes on to the next execution.
        assert_eq!(next(&scheduler), Some(Task::Execute(v(1, 0))));
        assert_eq!(scheduler.finish_execution(0, 0, true, W0), None);
        assert_eq!(scheduler.finish_execution(1, 0, true, W0), None);
        // Both wrote new locations, so validation starts over from 0.
        assert_eq!(next(&scheduler), Some(Task::Validate(v(0, 0))));
        assert_eq!(next(&scheduler), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(0, false, W0), None);
        // Two validators of the same incarnation: only the first abort counts.
        assert!(scheduler.try_validation_abort(1, 0));
        assert!(!scheduler.try_validation_abort(1, 0));
        // Execution went past 1, so the aborting worker re-executes it itself.
        assert_eq!(
            scheduler.finish_validation(1, true, W0),
            Some(Task::Execute(v(1, 1)))
        );
        // A stale validation of incarnation 0 can no longer abort anything.
        assert!(!scheduler.try_validation_abort(1, 0));
        // Wrote nothing new and validation is past 1: validate right away.
        assert_eq!(
            scheduler.finish_execution(1, 1, false, W0),
            Some(Task::Validate(v(1, 1)))
        );
        assert_eq!(scheduler.finish_validation(1, false, W0), None);
        assert_eq!(next(&scheduler), None);
        assert!(scheduler.done());
    }

    #[test]
    fn a_dependency_parks_the_reader_until_the_writer_reexecutes() {
        let scheduler = Scheduler::new(3, 1);
        for txn in 0..3 {
            assert_eq!(next_execution(&scheduler), Some(v(txn, 0)));
        }
        assert_eq!(scheduler.finish_execution(0, 0, true, W0), None);
        // 0 gets aborted by a validation: its writes become ESTIMATEs.
        assert_eq!(next(&scheduler), Some(Task::Validate(v(0, 0))));
        assert!(scheduler.try_validation_abort(0, 0));
        assert_eq!(
            scheduler.finish_validation(0, true, W0),
            Some(Task::Execute(v(0, 1)))
        );
        // 2 reads an ESTIMATE of 0 and is parked.
        assert!(scheduler.add_dependency(2, 0, W0));
        assert_eq!(scheduler.txn_status[2].load(), Status::Aborting(0));
        // 0 finishes: 2 is ready with its next incarnation and execution moves back to it.
        // Validation is already past 0 and 0 wrote nothing new: validate it right away.
        assert_eq!(
            scheduler.finish_execution(0, 1, false, W0),
            Some(Task::Validate(v(0, 1)))
        );
        assert_eq!(scheduler.txn_status[2].load(), Status::ReadyToExecute(1));
        assert_eq!(scheduler.execution_idx.load(ORDER), 2);
        assert_eq!(scheduler.finish_validation(0, false, W0), None);
        // A reader of an already re-executed writer just runs again.
        assert!(!scheduler.add_dependency(1, 0, W0));
        assert_eq!(scheduler.finish_execution(1, 0, false, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(1, false, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Execute(v(2, 1))));
        assert_eq!(scheduler.finish_execution(2, 1, true, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(2, 1))));
        assert_eq!(scheduler.finish_validation(2, false, W0), None);
        assert_eq!(next(&scheduler), None);
        assert!(scheduler.done());
        assert_eq!(scheduler.active_tasks(), 0);
    }

    #[test]
    fn a_new_write_location_sends_validation_back() {
        let scheduler = Scheduler::new(3, 1);
        assert_eq!(next(&scheduler), Some(Task::Execute(v(0, 0))));
        assert_eq!(scheduler.finish_execution(0, 0, true, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(0, 0))));
        assert_eq!(scheduler.finish_validation(0, false, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Execute(v(1, 0))));
        assert_eq!(scheduler.finish_execution(1, 0, true, W0), None);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(1, false, W0), None);
        // 0 is aborted late and its next incarnation writes somewhere new: 0 and 1 must be
        // validated again.
        assert!(scheduler.try_validation_abort(0, 0));
        assert_eq!(
            scheduler.finish_validation(0, true, W0),
            Some(Task::Execute(v(0, 1)))
        );
        assert_eq!(scheduler.finish_execution(0, 1, true, W0), None);
        assert_eq!(scheduler.validation_idx.load(ORDER), 0);
        assert_eq!(next(&scheduler), Some(Task::Validate(v(0, 1))));
    }

    #[test]
    fn halt_stops_the_block() {
        let scheduler = Scheduler::new(5, 1);
        assert!(!scheduler.done());
        scheduler.halt();
        assert!(scheduler.done());
    }

    /// Many threads drive the scheduler with random aborts and dependencies; the block must
    /// end with every transaction executed, and with no task left active.
    #[test]
    fn concurrent_workers_always_terminate_with_everything_executed() {
        for seed in 0..20u64 {
            let n = 1 + (seed as usize * 7) % 40;
            // Claims of one to four indices.
            let scheduler = Scheduler::with_batch(n, 4, 1 + seed as usize % 4);
            let counter = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for worker in 0..4u64 {
                    let (scheduler, counter) = (&scheduler, &counter);
                    scope.spawn(move || {
                        let me = Worker(worker as usize);
                        let mut claims = Claims::new(me);
                        let mut rng = seed.wrapping_mul(31).wrapping_add(worker) | 1;
                        let mut roll = move |modulo: u64| {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            rng % modulo
                        };
                        let mut task = None;
                        while !scheduler.done() {
                            task = match task {
                                Some(Task::Execute(version)) => {
                                    counter.fetch_add(1, ORDER);
                                    let Version { txn, incarnation } = version;
                                    if txn > 0 && roll(5) == 0 {
                                        let blocking = roll(txn as u64) as usize;
                                        if scheduler.add_dependency(txn, blocking, me) {
                                            None
                                        } else {
                                            Some(Task::Execute(version))
                                        }
                                    } else {
                                        scheduler.finish_execution(
                                            txn,
                                            incarnation,
                                            roll(3) == 0,
                                            me,
                                        )
                                    }
                                }
                                Some(Task::Validate(Version { txn, incarnation })) => {
                                    let aborted = roll(6) == 0
                                        && scheduler.try_validation_abort(txn, incarnation);
                                    scheduler.finish_validation(txn, aborted, me)
                                }
                                None => {
                                    std::thread::yield_now();
                                    scheduler.next_task(&mut claims)
                                }
                            };
                        }
                    });
                }
            });
            assert!(counter.load(ORDER) >= n);
            assert_eq!(scheduler.active_tasks(), 0, "seed {seed}");
            for status in scheduler.txn_status.iter() {
                assert!(matches!(status.load(), Status::Executed(_)), "seed {seed}");
            }
        }
    }
}
