//! The execution layer's contract: the mempool, block execution and state queries.
//!
//! Implementations: `sequential` and `parallel` (both in `lamina-execution`). The layer owns
//! the authenticated state and the mempool; it never sees the network: transactions reach it
//! through [`ExecutionHandle::submit_transaction`] and committed blocks through
//! [`ExecutionHandle::execute_block`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::{flatten, ChannelError, Events, Mailbox, RequestError};
use crate::bridge::{DepositCredit, OutputPreimage, Withdrawal, OUTPUT_VERSION};
use crate::merkle::MerkleProof;
use crate::state_proof::StateProof;
use crate::{Account, Address, Block, Hash, Receipt, Transaction};

/// Why the mempool refused a transaction. Each reason has a stable machine-readable
/// [`code`](MempoolRejection::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum MempoolRejection {
    /// The encoded transaction is larger than allowed.
    #[error("transaction is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The signature does not verify for the sender, chain id and domain.
    #[error("invalid signature")]
    InvalidSignature,
    /// The transaction names another chain.
    #[error("wrong chain id: this chain is {expected:?}, the transaction says {got:?}")]
    WrongChainId {
        /// This chain.
        expected: String,
        /// The transaction's chain id.
        got: String,
    },
    /// The nonce was already used (a replay, or a transaction already executed).
    #[error("nonce {got} already used; the account's next nonce is {expected}")]
    NonceTooLow {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce is too far ahead of the account's next nonce.
    #[error("nonce {got} is too far ahead: the account's next nonce is {expected}, at most {window} ahead are kept")]
    NonceTooHigh {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
        /// How many future nonces are accepted.
        window: u64,
    },
    /// Another transaction with this sender and nonce is already pending.
    #[error("a transaction with nonce {nonce} from this sender is already pending")]
    NonceAlreadyPending {
        /// The nonce.
        nonce: u64,
    },
    /// The sender cannot pay the amount and fee, counting its pending transactions.
    #[error("insufficient balance: needs {needed} (amount + fee + pending), has {available}")]
    InsufficientBalance {
        /// Amount + fee of this and the sender's pending transactions.
        needed: u64,
        /// The sender's balance.
        available: u64,
    },
    /// This exact transaction is already pending.
    #[error("transaction already pending")]
    AlreadyPending,
    /// The node cannot read the sender's account right now (a storage failure); retry later.
    #[error("the node cannot check this transaction now: {0}")]
    StateUnavailable(String),
    /// The mempool is at its transaction-count or byte limit.
    #[error("mempool full ({txs} transactions, {bytes} bytes); retry later")]
    MempoolFull {
        /// Transactions pending.
        txs: usize,
        /// Bytes pending.
        bytes: usize,
    },
}

impl MempoolRejection {
    /// Stable machine-readable code (used as the HTTP `error_code`).
    pub fn code(&self) -> &'static str {
        match self {
            MempoolRejection::TooLarge { .. } => "tx_too_large",
            MempoolRejection::InvalidSignature => "invalid_signature",
            MempoolRejection::WrongChainId { .. } => "wrong_chain_id",
            MempoolRejection::NonceTooLow { .. } => "nonce_too_low",
            MempoolRejection::NonceTooHigh { .. } => "nonce_too_high",
            MempoolRejection::NonceAlreadyPending { .. } => "nonce_already_pending",
            MempoolRejection::InsufficientBalance { .. } => "insufficient_balance",
            MempoolRejection::AlreadyPending => "already_pending",
            MempoolRejection::StateUnavailable(_) => "state_unavailable",
            MempoolRejection::MempoolFull { .. } => "mempool_full",
        }
    }
}

/// Why a block could not be executed. The state is left at the last executed height,
/// nothing is half-applied; the node's block pipeline retries the height.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    /// Blocks must be executed in height order.
    #[error("block {got} is out of order; next expected height is {expected}")]
    OutOfOrder {
        /// Next height to execute.
        expected: u64,
        /// The height sent.
        got: u64,
    },
    /// A different block was already executed at this height (a fork, or a database from
    /// another chain): the state cannot reflect both.
    #[error("height {height} was executed with block {executed}, not {given}")]
    ConflictingBlock {
        /// The height.
        height: u64,
        /// Hash of the block executed there.
        executed: Hash,
        /// Hash of the block given now.
        given: Hash,
    },
    /// The state database failed.
    #[error("state storage failed: {0}")]
    Storage(String),
}

/// Why a state query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The height has not been executed (yet).
    #[error("height {height} has not been executed; latest executed height is {latest}")]
    HeightNotExecuted {
        /// Height asked for.
        height: u64,
        /// Latest executed height.
        latest: u64,
    },
    /// The height's state is older than the history this node keeps
    /// (`[execution] state_history`).
    #[error(
        "the state at height {height} is pruned; this node keeps the state of heights {oldest} and later"
    )]
    HeightPruned {
        /// Height asked for.
        height: u64,
        /// Oldest height whose state the node keeps.
        oldest: u64,
    },
    /// The state database failed.
    #[error("state storage failed: {0}")]
    Storage(String),
}

/// The result of executing one block.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct ExecutedBlock {
    /// Height executed.
    pub height: u64,
    /// Hash of the block executed.
    pub block_hash: Hash,
    /// State root after the block.
    pub state_root: Hash,
    /// Transactions in the block.
    pub transactions: u32,
    /// Of which failed (they have receipts saying why).
    pub failed: u32,
    /// Fees collected (credited to the proposer).
    pub fees: u64,
    /// The block's `data_root` (from its header).
    pub data_root: Hash,
    /// Root of the withdrawals tree after the block (every withdrawal so far, in id order).
    pub withdrawals_root: Hash,
    /// Withdrawals so far (the next withdrawal's id).
    pub withdrawal_count: u64,
    /// Bridge deposits credited before the block's transactions.
    pub deposits_credited: u32,
}

impl ExecutedBlock {
    /// What an output root for a batch ending at this height commits to.
    pub fn output_preimage(&self) -> OutputPreimage {
        OutputPreimage {
            version: OUTPUT_VERSION,
            state_root: self.state_root,
            withdrawals_root: self.withdrawals_root,
            last_block_hash: self.block_hash,
            data_root: self.data_root,
        }
    }
}

/// A withdrawal and the height that executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WithdrawalAt {
    /// The executed height whose block included the withdrawal transaction.
    pub height: u64,
    /// The withdrawal.
    pub withdrawal: Withdrawal,
}

/// The execution layer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStatus {
    /// Implementation name (`sequential`, `parallel`).
    pub executor: String,
    /// Last executed height (0: only genesis).
    pub executed_height: u64,
    /// State root at that height.
    pub state_root: Hash,
    /// Transactions waiting in the mempool.
    pub mempool_transactions: usize,
    /// Their encoded size.
    pub mempool_bytes: usize,
}

/// An account at a height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAt {
    /// The account.
    pub address: Address,
    /// The height whose state was read.
    pub height: u64,
    /// Balance and nonce (zero for an account that does not exist).
    pub account: Account,
}

/// An account with its Merkle proof against the state root of a height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProof {
    /// The account.
    pub address: Address,
    /// The height whose state root the proof is against.
    pub height: u64,
    /// That state root.
    pub state_root: Hash,
    /// `SHA-256(borsh(StateKey::Account(address)))`.
    pub key_hash: Hash,
    /// The account, or `None` when it does not exist (the proof then proves absence).
    pub account: Option<Account>,
    /// The proof.
    pub proof: StateProof,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxLookup {
    /// Waiting in the mempool.
    Pending {
        /// The transaction.
        transaction: Transaction,
    },
    /// Included in an executed block.
    Included {
        /// The transaction.
        transaction: Transaction,
        /// Its receipt.
        receipt: Receipt,
    },
}

/// What the execution layer publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// A block was executed and its new state is durable.
    Executed(ExecutedBlock),
}

/// Requests to the execution layer.
#[derive(Debug)]
pub enum ExecutionRequest {
    /// Check a transaction and admit it to the mempool.
    /// Reply: `Ok(tx hash)` once admitted, or the reason it was refused. Not durable: the
    /// mempool is lost on restart.
    SubmitTransaction {
        /// The transaction.
        transaction: Transaction,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Hash, MempoolRejection>>,
    },
    /// Check transactions that travelled together (a gossip batch) and admit each, in order,
    /// as [`ExecutionRequest::SubmitTransaction`] would. One request, so the whole batch is
    /// checked before any block queued after it is executed (a block that includes them then
    /// finds their signatures verified already).
    /// Reply: one result per transaction, in order.
    SubmitTransactions {
        /// The transactions.
        transactions: Vec<Transaction>,
        /// Where the answers go.
        reply: oneshot::Sender<Vec<Result<Hash, MempoolRejection>>>,
    },
    /// Take transactions for the block proposed at `height`: at most `max_transactions` and
    /// `max_bytes` encoded bytes, each sender's in nonce order without gaps.
    /// Reply: the transactions (possibly none). They are reserved (not handed out again)
    /// until `height` is executed; any not included by then become available again.
    ReapTransactions {
        /// Height of the proposal.
        height: u64,
        /// Cap on the number of transactions.
        max_transactions: usize,
        /// Cap on their total encoded size.
        max_bytes: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Transaction>>,
    },
    /// Execute a committed block. Blocks must come in height order, starting at
    /// `executed_height + 1`; a height already executed is answered with its stored result
    /// (so a restarted node can replay safely). `deposits` are credited first, in order,
    /// then the transactions run; every node must pass the same deposits for a height (the
    /// settlement ledger's deposits queued by this same block).
    /// Reply: once the new state, receipts and height are flushed to disk, the result; an
    /// error leaves the state at the previous height.
    ExecuteBlock {
        /// The block.
        block: Arc<Block>,
        /// Bridge deposits to credit before the block's transactions.
        deposits: Vec<DepositCredit>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ExecutedBlock, ExecutionError>>,
    },
    /// Reply: the layer's status.
    GetStatus {
        /// Where the answer goes.
        reply: oneshot::Sender<ExecutionStatus>,
    },
    /// Read an account at `height` (latest executed when `None`).
    /// Reply: the account (zeroes if absent) or why the height cannot be read.
    GetAccount {
        /// The account.
        address: Address,
        /// The height (latest when `None`).
        height: Option<u64>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AccountAt, QueryError>>,
    },
    /// Prove an account (present or absent) against the state root of `height` (latest
    /// executed when `None`). Every executed height is retained.
    /// Reply: the proof, or why the height cannot be read.
    GetAccountProof {
        /// The account.
        address: Address,
        /// The height (latest when `None`).
        height: Option<u64>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<AccountProof, QueryError>>,
    },
    /// The stored result of executing `height`.
    /// Reply: the result, `None` for a height not executed yet (or 0), or `Storage`.
    GetExecutedBlock {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<ExecutedBlock>, QueryError>>,
    },
    /// Find a withdrawal by id.
    /// Reply: the withdrawal and the height that executed it, `None` when no withdrawal has
    /// that id yet, or `Storage` when the withdrawal index cannot be read.
    GetWithdrawal {
        /// Withdrawal id.
        id: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<WithdrawalAt>, QueryError>>,
    },
    /// Prove withdrawal `id` against the withdrawals root after executed height `height`
    /// (the tree over every withdrawal up to that height).
    /// Reply: the proof; `None` when the withdrawal is not in that tree (a later id); or why
    /// the height cannot be read.
    ProveWithdrawal {
        /// Withdrawal id.
        id: u64,
        /// The executed height whose withdrawals root the proof leads to.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<MerkleProof>, QueryError>>,
    },
    /// Find a transaction by hash.
    /// Reply: pending, included (with its receipt), `None` when unknown, or `Storage` when
    /// the transaction index cannot be read.
    GetTransaction {
        /// The transaction hash.
        hash: Hash,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<TxLookup>, QueryError>>,
    },
}

/// Cloneable handle to an execution layer.
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    mailbox: Mailbox<ExecutionRequest>,
    events: Events<ExecutionEvent>,
}

impl ExecutionHandle {
    /// A handle over an actor's mailbox and event publisher.
    pub fn new(mailbox: Mailbox<ExecutionRequest>, events: Events<ExecutionEvent>) -> Self {
        ExecutionHandle { mailbox, events }
    }

    /// See [`ExecutionRequest::SubmitTransaction`]. Sheds load with [`ChannelError::Full`]
    /// rather than queueing when the layer is saturated.
    pub async fn submit_transaction(
        &self,
        transaction: Transaction,
    ) -> Result<Hash, RequestError<MempoolRejection>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::SubmitTransaction { transaction, reply })
                .await,
        )
    }

    /// See [`ExecutionRequest::SubmitTransactions`]. Sheds load with [`ChannelError::Full`]
    /// rather than queueing when the layer is saturated.
    pub async fn submit_transactions(
        &self,
        transactions: Vec<Transaction>,
    ) -> Result<Vec<Result<Hash, MempoolRejection>>, ChannelError> {
        self.mailbox
            .try_ask(|reply| ExecutionRequest::SubmitTransactions {
                transactions,
                reply,
            })
            .await
    }

    /// See [`ExecutionRequest::ReapTransactions`].
    pub async fn reap_transactions(
        &self,
        height: u64,
        max_transactions: usize,
        max_bytes: usize,
    ) -> Result<Vec<Transaction>, ChannelError> {
        self.mailbox
            .ask(|reply| ExecutionRequest::ReapTransactions {
                height,
                max_transactions,
                max_bytes,
                reply,
            })
            .await
    }

    /// See [`ExecutionRequest::ExecuteBlock`].
    pub async fn execute_block(
        &self,
        block: Arc<Block>,
        deposits: Vec<DepositCredit>,
    ) -> Result<ExecutedBlock, RequestError<ExecutionError>> {
        flatten(
            self.mailbox
                .ask(|reply| ExecutionRequest::ExecuteBlock {
                    block,
                    deposits,
                    reply,
                })
                .await,
        )
    }

    /// See [`ExecutionRequest::GetStatus`].
    pub async fn status(&self) -> Result<ExecutionStatus, ChannelError> {
        self.mailbox
            .ask(|reply| ExecutionRequest::GetStatus { reply })
            .await
    }

    /// See [`ExecutionRequest::GetAccount`]. Like every read meant for outside callers, it
    /// fails with [`ChannelError::Full`] instead of queueing when the layer is saturated, so
    /// reads can never crowd out block execution.
    pub async fn account(
        &self,
        address: Address,
        height: Option<u64>,
    ) -> Result<AccountAt, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::GetAccount {
                    address,
                    height,
                    reply,
                })
                .await,
        )
    }

    /// See [`ExecutionRequest::GetAccountProof`].
    pub async fn account_proof(
        &self,
        address: Address,
        height: Option<u64>,
    ) -> Result<AccountProof, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::GetAccountProof {
                    address,
                    height,
                    reply,
                })
                .await,
        )
    }

    /// See [`ExecutionRequest::GetTransaction`].
    pub async fn transaction(
        &self,
        hash: Hash,
    ) -> Result<Option<TxLookup>, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::GetTransaction { hash, reply })
                .await,
        )
    }

    /// See [`ExecutionRequest::GetExecutedBlock`]; sheds load like [`Self::account`].
    pub async fn executed_block(
        &self,
        height: u64,
    ) -> Result<Option<ExecutedBlock>, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::GetExecutedBlock { height, reply })
                .await,
        )
    }

    /// See [`ExecutionRequest::GetWithdrawal`]; sheds load like [`Self::account`].
    pub async fn withdrawal(
        &self,
        id: u64,
    ) -> Result<Option<WithdrawalAt>, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::GetWithdrawal { id, reply })
                .await,
        )
    }

    /// See [`ExecutionRequest::ProveWithdrawal`]; sheds load like [`Self::account`].
    pub async fn prove_withdrawal(
        &self,
        id: u64,
        height: u64,
    ) -> Result<Option<MerkleProof>, RequestError<QueryError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| ExecutionRequest::ProveWithdrawal { id, height, reply })
                .await,
        )
    }

    /// True once the layer's actor has stopped (it panicked or shut down): no request will
    /// be answered again.
    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Subscribes to [`ExecutionEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<ExecutionEvent> {
        self.events.subscribe()
    }
}
