//! The pure core of `optimistic` settlement and of the bridge ledger: bonded claims of output
//! roots that finalize once their challenge window passes unchallenged, challenges decided by
//! re-execution, deposits from settlement-ledger accounts to execution accounts, and
//! withdrawals proven against finalized output roots. Plain synchronous, deterministic code
//! with no storage and no runtime; the actor persists an [`OptimisticLedger`] as one value.
//!
//! # Rules
//!
//! Batch `b` (from 0) covers heights `b * batch_size + 1 ..= (b + 1) * batch_size`. Each block
//! is applied once, in height order, by [`OptimisticLedger::apply_block`]: its settlement
//! messages in order, then a time step.
//!
//! * **Claim**: a designated proposer locks exactly `bond` to assert a batch's output root.
//!   Proposers take turns: attempt `a` of batch `b` is the `(b + a) % len`-th proposer's
//!   among those still in rotation (a proposer whose claim is shown wrong leaves it), and
//!   any listed proposer may claim once `claim_timeout` blocks have passed since the batch
//!   became claimable (its heights executable, its predecessor claimed, its previous attempt
//!   rejected), so a silent proposer cannot stall settlement. Batches are claimed in index
//!   order; a rejected batch is claimed again with the next `attempt`
//!   (which the signature covers, so an old claim cannot be replayed). Only heights below
//!   the including block can be claimed. The claim's deadline is its inclusion height
//!   plus `challenge_window`.
//! * **Challenge**: anyone but the claim's proposer locks `bond` to dispute a pending claim
//!   (one attempt of one batch). It is decided at once by this node's own output root for the
//!   batch's heights (the [`OutputOracle`]): a different root rejects the claim (the
//!   proposer's bond is slashed, the challenger's returned, every later open claim rejected
//!   with its bond returned); the same root fails the challenge (the challenger's bond is
//!   slashed; it may not challenge that claim again); no answer yet leaves the batch
//!   `Challenged`, with both bonds locked, until a later block's time step gets an answer.
//! * **Slashing**: `challenger_reward_percent` of the slashed bond (rounded down) goes to the
//!   winner, the rest is burned.
//! * **Deposit**: a settlement-ledger account moves value to an execution account: debited
//!   here, queued with the next deposit id for the execution layer to credit in id order.
//! * **FinalizeWithdrawal**: a withdrawal proven (Merkle proof of its leaf at index `id`)
//!   against the preimage of a finalized batch's output root is credited once, as long as the
//!   bridge holds that much (see below).
//! * **Time step**: challenged batches whose oracle now answers are resolved, in index order;
//!   then, in index order, a pending batch whose deadline has come (`deadline <= height`) and
//!   whose predecessor is finalized becomes finalized and its bond returns to the proposer.
//!   Finalization stops at the first batch that cannot finalize.
//!
//! An invalid message is skipped, changing nothing, with a typed [`SkipReason`] that every
//! node computes alike; nothing a block carries can make this code panic.
//!
//! # Accounting
//!
//! The bridge escrows what was deposited: a withdrawal is credited only while
//! `total_deposited - total_withdrawn` covers it, so the settlement side never mints value
//! that the execution side did not first receive from it. Then, after every block,
//! `sum(balances) + locked bonds + burned + (total_deposited - total_withdrawn)` equals the
//! genesis supply given to [`OptimisticLedger::new`].
//!
//! # Determinism and the oracle
//!
//! Every rule depends only on the ordered messages, except challenge decisions, which depend
//! on the oracle: this node's own output root for a batch, computed from its own execution.
//! Execution is deterministic, so honest nodes agree on that root, but only once they have
//! executed the batch. A node whose oracle answers `None` where others answer leaves the
//! batch `Challenged` where they decide it, and the two ledgers can then skip later messages
//! differently. The node must therefore apply block `h` only after it has executed every
//! height below `h`: claims only cover heights below their including block, so the oracle
//! then always answers, and `None` (with the `Challenged` state it leads to) remains a
//! safety net for a node that applies ahead of its execution, not a normal path.

mod ledger;
mod params;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use lamina_primitives::Hash;

pub use ledger::OptimisticLedger;
pub use params::{OptimisticParams, ParamsError};
pub use types::{
    Batch, BatchStatus, ClaimTarget, LedgerEvent, OptimisticError, QueuedDeposit, RejectReason,
    SkipReason,
};

/// This node's own view of execution, which decides challenges.
pub trait OutputOracle {
    /// The output root after executing heights `batch_first ..= batch_last` (the
    /// [`OutputPreimage`](lamina_primitives::bridge::OutputPreimage) at `batch_last`, computed
    /// from this node's own execution), or `None` if this node has not executed `batch_last`
    /// yet; a dispute then stays open and is retried at every later block.
    fn output_root(&self, batch_first: u64, batch_last: u64) -> Option<Hash>;
}

impl<F: Fn(u64, u64) -> Option<Hash>> OutputOracle for F {
    fn output_root(&self, batch_first: u64, batch_last: u64) -> Option<Hash> {
        self(batch_first, batch_last)
    }
}
