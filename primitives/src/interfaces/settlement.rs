//! The settlement layer's contract: turn executed state roots into settled ones.
//!
//! Settlement messages travel inside blocks, in the `settlement` namespace, so every node's
//! ledger sees the same ordered stream and agrees. Implementations: `attested` (in
//! `lamina-settlement`), later `optimistic`.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::execution::ExecutedBlock;
use super::{flatten, ChannelError, Events, Mailbox, RequestError};
use crate::bridge::{Batch, Challenge, Claim, Deposit, DepositCredit, FinalizeWithdrawal};
use crate::codec;
use crate::crypto::{domain, SignatureError};
use crate::{Address, Blob, Hash, Keypair, Signature};

/// What a validator signs to attest a state root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AttestationData {
    /// The height attested.
    pub height: u64,
    /// The state root after executing that height.
    pub state_root: Hash,
}

/// A validator's signed statement that executing `height` gives `state_root`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Attestation {
    /// The height attested.
    pub height: u64,
    /// The state root after executing that height.
    pub state_root: Hash,
    /// The attesting validator.
    pub validator: Address,
    /// Its signature over `"LAMINA_ATTEST_V1" ‖ borsh(chain_id) ‖ borsh(AttestationData)`.
    pub signature: Signature,
}

impl Attestation {
    /// Signs an attestation as `key`.
    pub fn sign(chain_id: &str, key: &Keypair, height: u64, state_root: Hash) -> Self {
        let data = AttestationData { height, state_root };
        Attestation {
            height,
            state_root,
            validator: key.address(),
            signature: key.sign(domain::ATTESTATION, chain_id, &codec::encode(&data)),
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        let data = AttestationData {
            height: self.height,
            state_root: self.state_root,
        };
        self.validator.verify(
            domain::ATTESTATION,
            chain_id,
            &codec::encode(&data),
            &self.signature,
        )
    }
}

/// A message of the `settlement` namespace (a blob holds a borsh `Vec<SettlementMessage>`).
/// New kinds are added as new variants, at the end.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SettlementMessage {
    /// A validator attests a state root (`attested` mode).
    Attestation(Attestation),
    /// The proposer claims a batch's output root (`optimistic` mode).
    Claim(Claim),
    /// A challenger disputes a pending claim (`optimistic` mode).
    Challenge(Challenge),
    /// Value moves from a settlement-ledger account to an execution account (bridge).
    Deposit(Deposit),
    /// A withdrawal proven against a finalized output root is credited (bridge).
    FinalizeWithdrawal(FinalizeWithdrawal),
}

/// How far a height has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeightSettlement {
    /// The height.
    pub height: u64,
    /// The settled state root, once settled.
    pub settled_root: Option<Hash>,
    /// Voting power attesting each distinct root seen so far.
    pub attested_power: Vec<(Hash, u64)>,
    /// Total voting power.
    pub total_power: u64,
}

/// The layer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementStatus {
    /// Mode name (`attested`, ...).
    pub mode: String,
    /// Highest settled height (0: none yet).
    pub settled_height: u64,
    /// Its settled state root.
    pub settled_state_root: Option<Hash>,
    /// Last block height whose settlement messages were applied to the ledger.
    pub applied_height: u64,
    /// Last executed height reported to this layer.
    pub executed_height: u64,
    /// The bridge and claims, in `optimistic` mode.
    pub optimistic: Option<OptimisticSummary>,
}

/// The optimistic ledger at a glance: where claims stand and the bridge's accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OptimisticSummary {
    /// Blocks a claim stays open to challenges.
    pub challenge_window: u64,
    /// Heights per batch.
    pub batch_size: u64,
    /// The bond a claim or challenge locks.
    pub bond: u64,
    /// Accounts allowed to claim.
    pub proposers: Vec<Address>,
    /// Proposers out of the rotation because a claim of theirs was shown wrong.
    pub jailed_proposers: Vec<Address>,
    /// Batches `0..finalized_batches` are final.
    pub finalized_batches: u64,
    /// The next batch to claim.
    pub next_batch: u64,
    /// Bonds locked in open claims and challenges.
    pub locked: u64,
    /// Value slashed and destroyed.
    pub burned: u64,
    /// Value ever moved into the execution layer by deposits.
    pub total_deposited: u64,
    /// Value ever credited back by finalized withdrawals.
    pub total_withdrawn: u64,
    /// The ledger's starting supply.
    pub genesis_supply: u64,
    /// Sum of all ledger balances.
    pub total_balances: u64,
}

/// One settlement-ledger account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LedgerAccount {
    /// The account.
    pub address: Address,
    /// Its balance on the settlement ledger.
    pub balance: u64,
    /// Its next deposit nonce.
    pub deposit_nonce: u64,
}

/// Why a settlement request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    /// Blocks must be applied in height order.
    #[error("block {got} is out of order; next expected height is {expected}")]
    OutOfOrder {
        /// Next height to apply.
        expected: u64,
        /// Height sent.
        got: u64,
    },
    /// The settlement database failed.
    #[error("settlement storage failed: {0}")]
    Storage(String),
    /// The request has no meaning in the running mode (e.g. batches in `attested` mode).
    #[error("the {mode} settlement mode does not support this: {what}")]
    Unsupported {
        /// The running mode.
        mode: String,
        /// What was asked.
        what: String,
    },
    /// A submitted message would be skipped by the ledger as it stands.
    #[error("invalid settlement message: {0}")]
    InvalidMessage(String),
    /// Too many messages wait for inclusion already.
    #[error("{0} settlement messages are already waiting for inclusion; try again later")]
    PoolFull(usize),
}

/// What the settlement layer publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementEvent {
    /// `height` is settled with `state_root`.
    Settled {
        /// The height.
        height: u64,
        /// Its state root.
        state_root: Hash,
    },
}

/// Requests to the settlement layer.
#[derive(Debug)]
pub enum SettlementRequest {
    /// Apply the settlement-namespace blobs of committed block `height` to the ledger. Must
    /// come in height order, every height (with or without blobs); a height already applied is
    /// ignored. Malformed or invalid messages are skipped the same way on every node.
    /// Reply: the status after applying, once flushed to disk.
    ApplyBlock {
        /// The block height.
        height: u64,
        /// The block's `settlement` namespace blobs.
        blobs: Vec<Blob>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SettlementStatus, SettlementError>>,
    },
    /// This node executed a block. The layer may prepare messages (e.g. its validator's
    /// attestation) for a later block; a height reported twice is ignored.
    /// Reply: once any prepared message is durable.
    Executed {
        /// The execution result.
        executed: ExecutedBlock,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), SettlementError>>,
    },
    /// Messages to put in the block being proposed at `height`, at most `max_bytes` encoded.
    /// Reply: blobs of the `settlement` namespace (possibly none). Messages stay pending until
    /// a block that includes them is applied.
    PendingBlobs {
        /// Height of the proposal.
        height: u64,
        /// Cap on the encoded size.
        max_bytes: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Blob>>,
    },
    /// The bridge deposits that block `height` queued, which executing `height` credits
    /// (before its transactions, in id order). Asked after `ApplyBlock` of `height`.
    /// Reply: the deposits; none in a mode without a bridge, and none for a height already
    /// reported `Executed` (execution answers such a height from its stored result);
    /// `OutOfOrder` if `height` is not applied yet.
    Deposits {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<DepositCredit>, SettlementError>>,
    },
    /// Queue a message (a deposit, a withdrawal finalization, ...) from outside for the next
    /// block this node proposes. It is checked against the ledger as it stands now.
    /// Reply: `Ok` once queued; `InvalidMessage` when the ledger would skip it now;
    /// `PoolFull`; `Unsupported` when this mode takes no messages from outside (`attested`,
    /// whose attestations only validators make) or not this kind.
    Submit {
        /// The message.
        message: SettlementMessage,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), SettlementError>>,
    },
    /// Claims of batches `from ..` (at most `limit`), latest claim of each, in index order.
    /// Reply: the batches, or `Unsupported` outside `optimistic` mode.
    GetBatches {
        /// First batch index.
        from: u64,
        /// Cap on the number returned.
        limit: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Vec<Batch>, SettlementError>>,
    },
    /// A settlement-ledger account.
    /// Reply: its balance and deposit nonce, or `Unsupported` outside `optimistic` mode.
    GetLedgerAccount {
        /// The account.
        address: Address,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<LedgerAccount, SettlementError>>,
    },
    /// Reply: the layer's status.
    GetStatus {
        /// Where the answer goes.
        reply: oneshot::Sender<SettlementStatus>,
    },
    /// Reply: what the ledger knows of `height` (`None`: no attestation for it yet), or
    /// `Storage` when the ledger cannot be read.
    GetHeight {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<HeightSettlement>, SettlementError>>,
    },
}

/// Cloneable handle to a settlement layer.
#[derive(Debug, Clone)]
pub struct SettlementHandle {
    mailbox: Mailbox<SettlementRequest>,
    events: Events<SettlementEvent>,
}

impl SettlementHandle {
    /// A handle over an actor's mailbox and event publisher.
    pub fn new(mailbox: Mailbox<SettlementRequest>, events: Events<SettlementEvent>) -> Self {
        SettlementHandle { mailbox, events }
    }

    /// See [`SettlementRequest::ApplyBlock`].
    pub async fn apply_block(
        &self,
        height: u64,
        blobs: Vec<Blob>,
    ) -> Result<SettlementStatus, RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .ask(|reply| SettlementRequest::ApplyBlock {
                    height,
                    blobs,
                    reply,
                })
                .await,
        )
    }

    /// See [`SettlementRequest::Executed`].
    pub async fn executed(
        &self,
        executed: ExecutedBlock,
    ) -> Result<(), RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .ask(|reply| SettlementRequest::Executed { executed, reply })
                .await,
        )
    }

    /// See [`SettlementRequest::PendingBlobs`].
    pub async fn pending_blobs(
        &self,
        height: u64,
        max_bytes: usize,
    ) -> Result<Vec<Blob>, ChannelError> {
        self.mailbox
            .ask(|reply| SettlementRequest::PendingBlobs {
                height,
                max_bytes,
                reply,
            })
            .await
    }

    /// See [`SettlementRequest::GetStatus`].
    pub async fn status(&self) -> Result<SettlementStatus, ChannelError> {
        self.mailbox
            .ask(|reply| SettlementRequest::GetStatus { reply })
            .await
    }

    /// See [`SettlementRequest::GetHeight`].
    pub async fn height(
        &self,
        height: u64,
    ) -> Result<Option<HeightSettlement>, RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| SettlementRequest::GetHeight { height, reply })
                .await,
        )
    }

    /// See [`SettlementRequest::Deposits`].
    pub async fn deposits(
        &self,
        height: u64,
    ) -> Result<Vec<DepositCredit>, RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .ask(|reply| SettlementRequest::Deposits { height, reply })
                .await,
        )
    }

    /// See [`SettlementRequest::Submit`]; sheds load with [`ChannelError::Full`].
    pub async fn submit(
        &self,
        message: SettlementMessage,
    ) -> Result<(), RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| SettlementRequest::Submit { message, reply })
                .await,
        )
    }

    /// See [`SettlementRequest::GetBatches`]; sheds load with [`ChannelError::Full`].
    pub async fn batches(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Batch>, RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| SettlementRequest::GetBatches { from, limit, reply })
                .await,
        )
    }

    /// See [`SettlementRequest::GetLedgerAccount`]; sheds load with [`ChannelError::Full`].
    pub async fn ledger_account(
        &self,
        address: Address,
    ) -> Result<LedgerAccount, RequestError<SettlementError>> {
        flatten(
            self.mailbox
                .try_ask(|reply| SettlementRequest::GetLedgerAccount { address, reply })
                .await,
        )
    }

    /// True once the layer's actor has stopped (it panicked or shut down): no request will
    /// be answered again.
    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Subscribes to [`SettlementEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<SettlementEvent> {
        self.events.subscribe()
    }
}
