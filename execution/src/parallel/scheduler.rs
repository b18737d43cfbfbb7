//! The collaborative scheduler of Block-STM (arXiv 2203.06871, Algorithms 4 and 5): it hands
//! out execution and validation tasks to worker threads in (roughly) block order and decides
//! when the block is done.
//!
//! The shared state is the paper's: two task indices (`execution_idx`, `validation_idx`) that
//! only ever move forward by `fetch_add` and back by `fetch_min`, `decrease_cnt` (how often one
//! moved back), `num_active_tasks` (tasks handed out and not finished), `done_marker`, and per
//! transaction a status `{ReadyToExecute, Executing, Executed, Aborting}(incarnation)` and the
//! list of transactions waiting for it (its dependencies). Everything here is plain
//! synchronous code over atomics and mutexes; the workers that call it live in
//! [`super::block_stm`].
//!
//! Task accounting: `try_incarnate` leaves `num_active_tasks` alone and each caller counts
//! its task down when it gets nothing (as aptos-core does), so every task handed out is
//! counted down exactly once, also when another thread incarnated the transaction first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// The scheduler of one block of `num_txns` transactions.
#[derive(Debug)]
pub(crate) struct Scheduler {
    num_txns: usize,
    // Each counter on its own cache lines: they are updated by every thread, and sharing a
    // line would make every update of one invalidate the others.
    execution_idx: Padded<AtomicUsize>,
    validation_idx: Padded<AtomicUsize>,
    decrease_cnt: Padded<AtomicUsize>,
    num_active_tasks: Padded<AtomicUsize>,
    done_marker: Padded<AtomicBool>,
    /// Transactions that read an ESTIMATE of transaction `i` and wait for it to re-execute.
    txn_dependency: Box<[Padded<Mutex<Vec<TxnIndex>>>]>,
    txn_status: Box<[Padded<Mutex<Status>>]>,
}

// Every atomic access is SeqCst: the termination argument of `check_done` relies on a single
// total order of the index, counter and task-count updates.
const ORDER: Ordering = Ordering::SeqCst;

impl Scheduler {
    /// A scheduler with every transaction ready for its first incarnation.
    pub(crate) fn new(num_txns: usize) -> Self {
        Scheduler {
            num_txns,
            execution_idx: Padded(AtomicUsize::new(0)),
            validation_idx: Padded(AtomicUsize::new(0)),
            decrease_cnt: Padded(AtomicUsize::new(0)),
            num_active_tasks: Padded(AtomicUsize::new(0)),
            done_marker: Padded(AtomicBool::new(num_txns == 0)),
            txn_dependency: (0..num_txns)
                .map(|_| Padded(Mutex::new(Vec::new())))
                .collect(),
            txn_status: (0..num_txns)
                .map(|_| Padded(Mutex::new(Status::ReadyToExecute(0))))
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

    fn status(&self, txn: TxnIndex) -> Option<&Mutex<Status>> {
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

    fn finish_task(&self) {
        self.num_active_tasks.fetch_sub(1, ORDER);
    }

    /// Sets the done marker when both indices are past the block, no task is in flight, and
    /// no index moved back while we looked.
    fn check_done(&self) {
        let observed = self.decrease_cnt.load(ORDER);
        let execution = self.execution_idx.load(ORDER);
        let validation = self.validation_idx.load(ORDER);
        if execution.min(validation) >= self.num_txns
            && self.num_active_tasks.load(ORDER) == 0
            && observed == self.decrease_cnt.load(ORDER)
        {
            self.done_marker.store(true, ORDER);
        }
    }

    /// Moves a ready transaction to executing; `None` when it is not ready (another thread
    /// took it, it is already executed, or it is past the block).
    fn try_incarnate(&self, txn: TxnIndex) -> Option<Version> {
        let mut status = lock(self.status(txn)?);
        match *status {
            Status::ReadyToExecute(incarnation) => {
                *status = Status::Executing(incarnation);
                Some(Version { txn, incarnation })
            }
            _ => None,
        }
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(ORDER) >= self.num_txns {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, ORDER);
        let txn = self.execution_idx.fetch_add(1, ORDER);
        let version = self.try_incarnate(txn);
        if version.is_none() {
            self.finish_task();
        }
        version
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(ORDER) >= self.num_txns {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, ORDER);
        let txn = self.validation_idx.fetch_add(1, ORDER);
        if let Some(status) = self.status(txn) {
            if let Status::Executed(incarnation) = *lock(status) {
                return Some(Version { txn, incarnation });
            }
        }
        self.finish_task();
        None
    }

    /// The next task for an idle worker: a validation when validation lags execution, an
    /// execution otherwise. `None` when there is nothing to do right now.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if self.validation_idx.load(ORDER) < self.execution_idx.load(ORDER) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
        }
    }

    /// `txn` (executing) read an ESTIMATE written by `blocking`. Returns `true` when `txn` is
    /// now parked until `blocking` re-executes (its execution task ends), `false` when
    /// `blocking` has already been re-executed and `txn` should simply run again.
    pub(crate) fn add_dependency(&self, txn: TxnIndex, blocking: TxnIndex) -> bool {
        let (Some(dependents), Some(blocking_status), Some(status)) = (
            self.txn_dependency.get(blocking),
            self.status(blocking),
            self.status(txn),
        ) else {
            return false;
        };
        {
            let mut dependents = lock(dependents);
            if matches!(*lock(blocking_status), Status::Executed(_)) {
                return false;
            }
            let mut status = lock(status);
            if let Status::Executing(incarnation) = *status {
                *status = Status::Aborting(incarnation);
            }
            dependents.push(txn);
        }
        self.finish_task();
        true
    }

    /// Aborting(i) → ReadyToExecute(i + 1).
    fn set_ready_status(&self, txn: TxnIndex) {
        if let Some(status) = self.status(txn) {
            let mut status = lock(status);
            if let Status::Aborting(incarnation) = *status {
                *status = Status::ReadyToExecute(incarnation + 1);
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
    ) -> Option<Task> {
        if let Some(status) = self.status(txn) {
            *lock(status) = Status::Executed(incarnation);
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
        self.finish_task();
        None
    }

    /// A validation of `txn`'s `incarnation` failed: aborts it, unless it was already
    /// aborted (by another validation) or re-executed. Only the caller that gets `true` may
    /// turn the incarnation's writes into ESTIMATEs.
    pub(crate) fn try_validation_abort(&self, txn: TxnIndex, incarnation: Incarnation) -> bool {
        let Some(status) = self.status(txn) else {
            return false;
        };
        let mut status = lock(status);
        if *status == Status::Executed(incarnation) {
            *status = Status::Aborting(incarnation);
            true
        } else {
            false
        }
    }

    /// A validation task ended. After an abort, every later transaction must be validated
    /// again, and the aborted one is re-executed right away by this worker when execution
    /// already went past it.
    pub(crate) fn finish_validation(&self, txn: TxnIndex, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready_status(txn);
            self.decrease_validation_idx(txn + 1);
            if self.execution_idx.load(ORDER) > txn {
                if let Some(version) = self.try_incarnate(txn) {
                    return Some(Task::Execute(version));
                }
            }
        }
        self.finish_task();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(txn: TxnIndex, incarnation: Incarnation) -> Version {
        Version { txn, incarnation }
    }

    /// Drives a block with one worker, where no transaction conflicts: execute 0, validate 0,
    /// execute 1, ... and then done.
    #[test]
    fn one_worker_without_conflicts_alternates_execution_and_validation() {
        let scheduler = Scheduler::new(3);
        let mut trace = Vec::new();
        let mut task = None;
        while !scheduler.done() {
            task = match task {
                Some(Task::Execute(version)) => {
                    trace.push(Task::Execute(version));
                    scheduler.finish_execution(version.txn, version.incarnation, true)
                }
                Some(Task::Validate(version)) => {
                    trace.push(Task::Validate(version));
                    scheduler.finish_validation(version.txn, false)
                }
                None => scheduler.next_task(),
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
        assert_eq!(scheduler.num_active_tasks.load(ORDER), 0);
    }

    #[test]
    fn an_empty_block_is_done_at_once() {
        let scheduler = Scheduler::new(0);
        assert!(scheduler.done());
        assert_eq!(scheduler.next_task(), None);
    }

    #[test]
    fn not_done_while_a_task_is_active() {
        let scheduler = Scheduler::new(1);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(0, 0))));
        // Both indices are past the block, but the execution is still running.
        assert_eq!(scheduler.next_task(), None);
        assert!(!scheduler.done());
        assert_eq!(scheduler.finish_execution(0, 0, true), None);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(0, 0))));
        assert!(!scheduler.done());
        assert_eq!(scheduler.finish_validation(0, false), None);
        assert_eq!(scheduler.next_task(), None);
        assert!(scheduler.done());
    }

    #[test]
    fn a_failed_validation_aborts_once_and_reexecutes_the_next_incarnation() {
        let scheduler = Scheduler::new(2);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(0, 0))));
        // Validation lags execution, but 0 is not executed yet: nothing to validate.
        assert_eq!(scheduler.next_task(), None);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(1, 0))));
        assert_eq!(scheduler.finish_execution(0, 0, true), None);
        assert_eq!(scheduler.finish_execution(1, 0, true), None);
        // Both wrote new locations, so validation starts over from 0.
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(0, 0))));
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(0, false), None);
        // Two validators of the same incarnation: only the first abort counts.
        assert!(scheduler.try_validation_abort(1, 0));
        assert!(!scheduler.try_validation_abort(1, 0));
        // Execution went past 1, so the aborting worker re-executes it itself.
        assert_eq!(
            scheduler.finish_validation(1, true),
            Some(Task::Execute(v(1, 1)))
        );
        // A stale validation of incarnation 0 can no longer abort anything.
        assert!(!scheduler.try_validation_abort(1, 0));
        // Wrote nothing new and validation is past 1: validate right away.
        assert_eq!(
            scheduler.finish_execution(1, 1, false),
            Some(Task::Validate(v(1, 1)))
        );
        assert_eq!(scheduler.finish_validation(1, false), None);
        assert_eq!(scheduler.next_task(), None);
        assert!(scheduler.done());
    }

    #[test]
    fn a_dependency_parks_the_reader_until_the_writer_reexecutes() {
        let scheduler = Scheduler::new(3);
        for txn in 0..3 {
            assert_eq!(scheduler.next_version_to_execute(), Some(v(txn, 0)));
        }
        assert_eq!(scheduler.finish_execution(0, 0, true), None);
        // 0 gets aborted by a validation: its writes become ESTIMATEs.
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(0, 0))));
        assert!(scheduler.try_validation_abort(0, 0));
        assert_eq!(
            scheduler.finish_validation(0, true),
            Some(Task::Execute(v(0, 1)))
        );
        // 2 reads an ESTIMATE of 0 and is parked.
        assert!(scheduler.add_dependency(2, 0));
        assert_eq!(*lock(&scheduler.txn_status[2]), Status::Aborting(0));
        // 0 finishes: 2 is ready with its next incarnation and execution moves back to it.
        // Validation is already past 0 and 0 wrote nothing new: validate it right away.
        assert_eq!(
            scheduler.finish_execution(0, 1, false),
            Some(Task::Validate(v(0, 1)))
        );
        assert_eq!(*lock(&scheduler.txn_status[2]), Status::ReadyToExecute(1));
        assert_eq!(scheduler.execution_idx.load(ORDER), 2);
        assert_eq!(scheduler.finish_validation(0, false), None);
        // A reader of an already re-executed writer just runs again.
        assert!(!scheduler.add_dependency(1, 0));
        assert_eq!(scheduler.finish_execution(1, 0, false), None);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(1, false), None);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(2, 1))));
        assert_eq!(scheduler.finish_execution(2, 1, true), None);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(2, 1))));
        assert_eq!(scheduler.finish_validation(2, false), None);
        assert_eq!(scheduler.next_task(), None);
        assert!(scheduler.done());
        assert_eq!(scheduler.num_active_tasks.load(ORDER), 0);
    }

    #[test]
    fn a_new_write_location_sends_validation_back() {
        let scheduler = Scheduler::new(3);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(0, 0))));
        assert_eq!(scheduler.finish_execution(0, 0, true), None);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(0, 0))));
        assert_eq!(scheduler.finish_validation(0, false), None);
        assert_eq!(scheduler.next_task(), Some(Task::Execute(v(1, 0))));
        assert_eq!(scheduler.finish_execution(1, 0, true), None);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(1, 0))));
        assert_eq!(scheduler.finish_validation(1, false), None);
        // 0 is aborted late and its next incarnation writes somewhere new: 0 and 1 must be
        // validated again.
        assert!(scheduler.try_validation_abort(0, 0));
        assert_eq!(
            scheduler.finish_validation(0, true),
            Some(Task::Execute(v(0, 1)))
        );
        assert_eq!(scheduler.finish_execution(0, 1, true), None);
        assert_eq!(scheduler.validation_idx.load(ORDER), 0);
        assert_eq!(scheduler.next_task(), Some(Task::Validate(v(0, 1))));
    }

    #[test]
    fn halt_stops_the_block() {
        let scheduler = Scheduler::new(5);
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
            let scheduler = Scheduler::new(n);
            let counter = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for worker in 0..4u64 {
                    let (scheduler, counter) = (&scheduler, &counter);
                    scope.spawn(move || {
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
                                        if scheduler.add_dependency(txn, blocking) {
                                            None
                                        } else {
                                            Some(Task::Execute(version))
                                        }
                                    } else {
                                        scheduler.finish_execution(txn, incarnation, roll(3) == 0)
                                    }
                                }
                                Some(Task::Validate(Version { txn, incarnation })) => {
                                    let aborted = roll(6) == 0
                                        && scheduler.try_validation_abort(txn, incarnation);
                                    scheduler.finish_validation(txn, aborted)
                                }
                                None => {
                                    std::thread::yield_now();
                                    scheduler.next_task()
                                }
                            };
                        }
                    });
                }
            });
            assert!(counter.load(ORDER) >= n);
            assert_eq!(scheduler.num_active_tasks.load(ORDER), 0, "seed {seed}");
            for status in scheduler.txn_status.iter() {
                assert!(matches!(*lock(status), Status::Executed(_)), "seed {seed}");
            }
        }
    }
}
