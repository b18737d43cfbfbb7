//! The consensus layer's contract: order blocks and commit them with certificates.
//!
//! Implementations: `solo` (one validator; in `lamina-consensus`), later `bft`. An engine is
//! spawned with the handles of the other layers ([`ConsensusDeps`]) so it can build
//! proposals (transactions from execution, messages from settlement, `data_root` from DA)
//! without depending on any layer crate. It keeps the committed chain durably; the node
//! reads committed blocks from it in height order and hands them to the other layers.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::da::DaHandle;
use super::execution::ExecutionHandle;
use super::settlement::SettlementHandle;
use super::{flatten, ChannelError, Events, Mailbox, RequestError};
use crate::{Address, CommittedBlock, Hash};

/// The other layers, as an engine sees them.
#[derive(Debug, Clone)]
pub struct ConsensusDeps {
    /// Source of transactions for proposals.
    pub execution: ExecutionHandle,
    /// Computes `data_root` for proposals; answers availability before votes.
    pub da: DaHandle,
    /// Source of settlement messages for proposals.
    pub settlement: SettlementHandle,
}

/// The engine's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusStatus {
    /// Engine name (`solo`, `bft`).
    pub engine: String,
    /// Highest committed height (0: none yet).
    pub committed_height: u64,
    /// Hash of that block (the genesis hash at height 0).
    pub last_block_hash: Hash,
    /// This node's validator address, if it is one.
    pub validator: Option<Address>,
}

/// What a consensus engine publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusEvent {
    /// A block was committed and is durable; read it with [`ConsensusHandle::block`].
    Committed {
        /// Its height.
        height: u64,
        /// Its hash.
        block_hash: Hash,
    },
}

/// Why a consensus engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// The block store failed.
    #[error("block storage failed: {0}")]
    Storage(String),
}

/// Requests to a consensus engine.
#[derive(Debug)]
pub enum ConsensusRequest {
    /// Reply: the engine's status.
    GetStatus {
        /// Where the answer goes.
        reply: oneshot::Sender<ConsensusStatus>,
    },
    /// Reply: the committed block at `height` with its certificate, or `None` when no block is
    /// committed there (yet), or `Storage` when the block store cannot be read.
    GetBlock {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<Arc<CommittedBlock>>, ConsensusError>>,
    },
}

/// Cloneable handle to a consensus engine.
#[derive(Debug, Clone)]
pub struct ConsensusHandle {
    mailbox: Mailbox<ConsensusRequest>,
    events: Events<ConsensusEvent>,
}

impl ConsensusHandle {
    /// A handle over an engine's mailbox and event publisher.
    pub fn new(mailbox: Mailbox<ConsensusRequest>, events: Events<ConsensusEvent>) -> Self {
        ConsensusHandle { mailbox, events }
    }

    /// See [`ConsensusRequest::GetStatus`].
    pub async fn status(&self) -> Result<ConsensusStatus, ChannelError> {
        self.mailbox
            .ask(|reply| ConsensusRequest::GetStatus { reply })
            .await
    }

    /// See [`ConsensusRequest::GetBlock`].
    pub async fn block(
        &self,
        height: u64,
    ) -> Result<Option<Arc<CommittedBlock>>, RequestError<ConsensusError>> {
        flatten(
            self.mailbox
                .ask(|reply| ConsensusRequest::GetBlock { height, reply })
                .await,
        )
    }

    /// True once the layer's actor has stopped (it panicked or shut down): no request will
    /// be answered again.
    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Subscribes to [`ConsensusEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<ConsensusEvent> {
        self.events.subscribe()
    }
}
