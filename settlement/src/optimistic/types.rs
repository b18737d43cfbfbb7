//! The values an optimistic ledger holds and reports: batches and their status, queued
//! deposits, the events of applying a block and the reasons a message is skipped. (Batches
//! and their status are shared vocabulary, in [`lamina_primitives::bridge`].)

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::{Address, Hash};
use serde::{Deserialize, Serialize};

use super::params::ParamsError;

pub use lamina_primitives::bridge::{Batch, BatchStatus, RejectReason};

/// A deposit waiting for the execution layer to credit it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct QueuedDeposit {
    /// Deposit id: 0, 1, 2, ... in the order accepted; the execution layer credits them in
    /// this order.
    pub id: u64,
    /// The settlement-ledger account debited.
    pub from: Address,
    /// The execution account to credit.
    pub to: Address,
    /// Amount.
    pub amount: u64,
    /// Height of the block that included the deposit: how the node bounds how long a deposit
    /// may wait before a block must credit it.
    pub queued_at: u64,
}

/// What the next claim must say: the batch, attempt and heights the ledger expects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct ClaimTarget {
    /// Batch index.
    pub batch: u64,
    /// The attempt (earlier rejected claims of this batch).
    pub attempt: u32,
    /// First height of the batch.
    pub first_height: u64,
    /// Last height of the batch: the claim is valid only in a block above it.
    pub last_height: u64,
    /// The proposer whose turn it is (the ledger rotates the turn among unjailed proposers).
    pub designated: Address,
    /// From this block height on, any listed proposer may claim (the designated one did
    /// not).
    pub open_to_all_at: u64,
}

/// What applying a block did, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// A message was invalid and changed nothing.
    Skipped {
        /// Its position among the block's settlement messages (all blobs, in order).
        index_in_block: u64,
        /// Why.
        reason: SkipReason,
    },
    /// A claim was accepted and its bond locked.
    ClaimPosted {
        /// Batch index.
        batch: u64,
        /// Its attempt.
        attempt: u32,
        /// The claimed output root.
        output_root: Hash,
        /// Its deadline.
        deadline: u64,
    },
    /// A challenge was accepted but this node could not decide it yet.
    ChallengeOpen {
        /// Batch index.
        batch: u64,
        /// Who challenged.
        challenger: Address,
    },
    /// A challenge won: the claim is rejected (a `Slashed` and `BatchRejected` follow).
    ChallengeUpheld {
        /// Batch index.
        batch: u64,
        /// Who challenged.
        challenger: Address,
        /// The output root this node computed.
        correct_root: Hash,
    },
    /// A challenge lost: the claim stands (a `Slashed` follows).
    ChallengeFailed {
        /// Batch index.
        batch: u64,
        /// Who challenged.
        challenger: Address,
    },
    /// A bond was slashed.
    Slashed {
        /// Whose bond.
        who: Address,
        /// The bond.
        amount: u64,
        /// Who won the dispute.
        reward_to: Address,
        /// Paid to `reward_to`.
        reward: u64,
        /// Destroyed (`amount - reward`).
        burned: u64,
    },
    /// A claim was rejected.
    BatchRejected {
        /// Batch index.
        batch: u64,
        /// The attempt rejected.
        attempt: u32,
        /// Why.
        reason: RejectReason,
    },
    /// A batch finalized: its bond is back with the proposer and its output root is final.
    BatchFinalized {
        /// Batch index.
        batch: u64,
        /// Its last height, now settled.
        last_height: u64,
        /// Its output root.
        output_root: Hash,
    },
    /// A deposit was debited and queued for the execution layer.
    DepositQueued {
        /// Deposit id.
        id: u64,
        /// Settlement-ledger account debited.
        from: Address,
        /// Execution account to credit.
        to: Address,
        /// Amount.
        amount: u64,
    },
    /// A withdrawal was credited.
    WithdrawalFinalized {
        /// Withdrawal id.
        id: u64,
        /// The finalized batch it was proven against.
        batch: u64,
        /// Settlement-ledger account credited.
        to: Address,
        /// Amount.
        amount: u64,
    },
}

/// Why a settlement message was skipped. Every node computes the same reason for the same
/// message at the same point of the same chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// An attestation: a message of the `attested` mode, meaningless here.
    #[error("attestations have no meaning in optimistic settlement")]
    WrongMode,
    /// The signature does not verify (wrong key, chain id or content).
    #[error("the signature does not verify")]
    BadSignature,
    /// The claim is not from a designated proposer.
    #[error("only a designated proposer may claim")]
    NotProposer,
    /// Another proposer's turn to claim this batch, and its time is not up.
    #[error(
        "it is {designated}'s turn to claim; any proposer may claim from height {open_to_all_at}"
    )]
    NotYourTurn {
        /// The proposer whose turn it is.
        designated: Address,
        /// When any proposer may claim.
        open_to_all_at: u64,
    },
    /// The claim's bond is not the required one.
    #[error("the bond must be exactly {expected}")]
    WrongBond {
        /// The required bond.
        expected: u64,
    },
    /// The claim is not for the next batch to claim.
    #[error("batches are claimed in order; the next one is {expected}")]
    OutOfOrder {
        /// The next batch to claim.
        expected: u64,
    },
    /// The claim's attempt is not the batch's next one (an old claim replayed, or a new one
    /// miscounted).
    #[error("the next claim of this batch is attempt {expected}")]
    WrongAttempt {
        /// The attempt expected.
        expected: u32,
    },
    /// The claim's heights are not the batch's.
    #[error("the batch covers heights {first}..={last}")]
    WrongRange {
        /// The batch's first height.
        first: u64,
        /// The batch's last height.
        last: u64,
    },
    /// The claim covers heights at or above the block that carries it.
    #[error("a claim may only cover heights below the block that includes it")]
    NotYetExecuted,
    /// The signer cannot cover the bond or amount.
    #[error("balance {balance} does not cover {needed}")]
    InsufficientBalance {
        /// The signer's balance.
        balance: u64,
        /// What it would need.
        needed: u64,
    },
    /// No claim of this batch was ever accepted.
    #[error("no claim of this batch exists")]
    UnknownBatch,
    /// The batch is not pending (challenged, finalized or rejected).
    #[error("the claim is not open to challenges")]
    NotPending,
    /// The challenge names another claim of the batch than the current one (another attempt
    /// or output root).
    #[error("the challenge names another claim of this batch")]
    WrongClaim,
    /// The proposer challenged its own claim.
    #[error("a proposer cannot challenge its own claim")]
    SelfChallenge,
    /// This challenger already lost a challenge of this claim.
    #[error("this challenger already challenged this claim and lost")]
    AlreadyChallenged,
    /// A deposit of nothing.
    #[error("the amount must be positive")]
    ZeroAmount,
    /// The deposit nonce is not the depositor's next one.
    #[error("the depositor's next deposit nonce is {expected}")]
    BadNonce {
        /// The nonce expected.
        expected: u64,
    },
    /// The batch named by a withdrawal is not finalized.
    #[error("the batch is not finalized")]
    NotFinalized,
    /// The preimage does not hash to the batch's output root.
    #[error("the preimage does not hash to the batch's output root")]
    WrongPreimage,
    /// The proof is for another position than the withdrawal's id.
    #[error("the proof is for leaf {index}, the withdrawal's id is {id}")]
    ProofIndexMismatch {
        /// The proof's leaf index.
        index: u64,
        /// The withdrawal's id.
        id: u64,
    },
    /// The withdrawal is not in the preimage's withdrawals tree.
    #[error("the proof does not lead from the withdrawal to the withdrawals root")]
    BadProof,
    /// The withdrawal was already credited.
    #[error("the withdrawal was already finalized")]
    AlreadyFinalized,
    /// The bridge holds less than the withdrawal: the settlement side only pays out what was
    /// deposited. It can succeed later, after more deposits.
    #[error("the bridge holds {escrowed}, less than the withdrawal")]
    EscrowInsufficient {
        /// What the bridge holds.
        escrowed: u64,
    },
}

/// Why a ledger could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptimisticError {
    /// The parameters are unusable.
    #[error("invalid optimistic settlement parameters: {0}")]
    InvalidParams(#[from] ParamsError),
    /// The initial balances add up to more than a `u64`, the bound every amount relies on.
    #[error("the initial balances add up to more than {}", u64::MAX)]
    SupplyOverflow,
}
