//! The consensus layer's contract: order blocks and commit them with certificates.
//!
//! Implementations: `solo` (one validator) and `bft` (Tendermint-style, many validators), in
//! `lamina-consensus`. An engine is spawned with the handles of the other layers
//! ([`ConsensusDeps`]) so it can build proposals (transactions from execution, messages from
//! settlement, `data_root` from DA) without depending on any layer crate. It keeps the
//! committed chain durably; the node reads committed blocks from it in height order and
//! hands them to the other layers.
//!
//! Peers: an engine sends [`ConsensusMessage`]s to the other validators by pushing
//! [`ConsensusOutbound`] values into [`ConsensusDeps::outbound`]; the node's network carries
//! them and hands what peers send back through [`ConsensusRequest::Deliver`]. Blocks a node
//! missed (it was down, late or cut off) are fetched by the node from peers and handed over
//! with [`ConsensusRequest::ImportBlock`], which checks their certificates.
//!
//! Old bodies: once the DA layer keeps old block bodies as erasure-coded shares, the node
//! asks the engine to drop them from its store with [`ConsensusRequest::PruneBodies`]. The
//! header and certificate of every committed height stay ([`ConsensusRequest::GetHeader`]);
//! [`ConsensusRequest::GetBlock`] answers [`ConsensusError::BodyPruned`] for a pruned height,
//! and the node rebuilds such a body from the DA layer's shares.

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::da::DaHandle;
use super::execution::ExecutionHandle;
use super::settlement::SettlementHandle;
pub use super::Verdict;
use super::{flatten, ChannelError, Events, Mailbox, RequestError};
use crate::{
    Address, CommittedBlock, CommittedHeader, Equivocation, Hash, SignedProposal, SignedVote,
};

/// The other layers, as an engine sees them.
#[derive(Debug, Clone)]
pub struct ConsensusDeps {
    /// Source of transactions for proposals.
    pub execution: ExecutionHandle,
    /// Computes `data_root` for proposals; answers availability before votes.
    pub da: DaHandle,
    /// Source of settlement messages for proposals.
    pub settlement: SettlementHandle,
    /// Where the engine puts what it sends to peers. Bounded: an engine must not block on
    /// it (use `try_send`; the protocol tolerates lost messages). Engines without peers
    /// (`solo`) never use it.
    pub outbound: mpsc::Sender<ConsensusOutbound>,
}

/// Capacity of [`ConsensusDeps::outbound`] the node creates.
pub const OUTBOUND_CAPACITY: usize = 1024;

/// A consensus message between validators (borsh on the wire). New kinds are added as new
/// variants, at the end.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ConsensusMessage {
    /// A proposer's block for a round (boxed: it carries a whole block, votes are small).
    Proposal(Box<SignedProposal>),
    /// A prevote or precommit.
    Vote(SignedVote),
}

/// What an engine asks the node's network to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusOutbound {
    /// Send to every peer (gossip).
    Broadcast(ConsensusMessage),
    /// The engine saw valid messages for a height above its next one: it is behind, and the
    /// node should fetch committed blocks from `from_height` on from its peers and hand them
    /// over with [`ConsensusRequest::ImportBlock`].
    Behind {
        /// First height the engine lacks.
        from_height: u64,
    },
}

/// Why a fetched block was not imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The block is not the next one: only `committed_height + 1` can be imported.
    #[error("block {got} is not the next block; the next height is {expected}")]
    NotNext {
        /// Next height the engine needs.
        expected: u64,
        /// Height offered.
        got: u64,
    },
    /// The block does not extend the committed chain, or its certificate, header or body
    /// is invalid.
    #[error("invalid block: {0}")]
    Invalid(String),
    /// A different block is already committed at this height: the offered one carries a
    /// valid certificate, so more than a third of the voting power signed two blocks.
    #[error("conflicting certified block at committed height {height}")]
    Conflict {
        /// The height.
        height: u64,
    },
    /// The block store failed.
    #[error("block storage failed: {0}")]
    Storage(String),
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
    /// Round of the height being decided (0 for engines without rounds).
    pub round: u32,
    /// Number of validators.
    pub validators: usize,
    /// The bodies of committed blocks up to this height are pruned from the block store;
    /// only their headers and certificates are kept (0: no body is pruned). Always below
    /// `committed_height` once anything is pruned: the tip's body is never pruned.
    pub pruned_through: u64,
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
    /// The block at `height` is committed, but its body was pruned from the block store
    /// ([`ConsensusRequest::PruneBodies`]); its header and certificate are still there
    /// ([`ConsensusRequest::GetHeader`]).
    #[error(
        "the body of block {height} is pruned from the block store; \
         it is rebuilt from the DA layer's shares"
    )]
    BodyPruned {
        /// The height asked for.
        height: u64,
    },
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
    /// committed there (yet), or [`ConsensusError::BodyPruned`] when the block is committed
    /// but its body was pruned ([`ConsensusRequest::PruneBodies`]; its header is still
    /// answered by [`ConsensusRequest::GetHeader`]), or `Storage` when the block store cannot
    /// be read.
    GetBlock {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<Arc<CommittedBlock>>, ConsensusError>>,
    },
    /// Reply: the header and certificate of the committed block at `height`, whether its body
    /// is pruned or not, or `None` when no block is committed there (yet), or `Storage` when
    /// the block store cannot be read.
    GetHeader {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Option<CommittedHeader>, ConsensusError>>,
    },
    /// Drops the bodies of the committed blocks at heights `1..=through` from the block store,
    /// keeping their headers and certificates. The committed tip's block is never pruned:
    /// `through` is lowered to `committed_height - 1`. Idempotent, and incremental (heights
    /// pruned before are not visited again); a `through` at or below what is already pruned
    /// changes nothing.
    /// Reply: the height bodies are now pruned through (0: none), once that is durable; or
    /// `Storage` when the store cannot be written or flushed (heights pruned before the
    /// failure stay pruned, and a retry continues from there). The pruning runs off the
    /// engine's loop, so a long first call does not hold up consensus. A dropped reply (the
    /// engine stopped) may leave some heights pruned but not yet durable; a later call
    /// continues from whatever is stored.
    PruneBodies {
        /// Highest height whose body may be dropped.
        through: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, ConsensusError>>,
    },
    /// A message a peer sent. The engine checks it before answering (signature, signer in
    /// the validator set, size of what it refers to) and processes it afterwards.
    /// Reply: the [`Verdict`] deciding whether the network relays it.
    Deliver {
        /// The message.
        message: ConsensusMessage,
        /// Where the verdict goes.
        reply: oneshot::Sender<Verdict>,
    },
    /// A committed block fetched from a peer. The engine verifies the certificate against
    /// the validator set, the header against its committed tip, and the body against the
    /// header's `data_root`, then stores it as committed exactly as if it had decided it.
    /// Reply: the committed height after the import, once durable; a block at a height
    /// already committed with the same hash is answered `Ok` without change.
    ImportBlock {
        /// The block and its certificate.
        block: Arc<CommittedBlock>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, ImportError>>,
    },
    /// Reply: the equivocations seen (two conflicting signed votes from one validator),
    /// oldest first, kept durably.
    GetEvidence {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Equivocation>>,
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

    /// See [`ConsensusRequest::GetHeader`].
    pub async fn header(
        &self,
        height: u64,
    ) -> Result<Option<CommittedHeader>, RequestError<ConsensusError>> {
        flatten(
            self.mailbox
                .ask(|reply| ConsensusRequest::GetHeader { height, reply })
                .await,
        )
    }

    /// See [`ConsensusRequest::PruneBodies`].
    pub async fn prune_bodies(&self, through: u64) -> Result<u64, RequestError<ConsensusError>> {
        flatten(
            self.mailbox
                .ask(|reply| ConsensusRequest::PruneBodies { through, reply })
                .await,
        )
    }

    /// See [`ConsensusRequest::Deliver`]. Sheds load (fails with `Full`) rather than
    /// waiting when the engine is busy.
    pub async fn deliver(&self, message: ConsensusMessage) -> Result<Verdict, ChannelError> {
        self.mailbox
            .try_ask(|reply| ConsensusRequest::Deliver { message, reply })
            .await
    }

    /// See [`ConsensusRequest::ImportBlock`].
    pub async fn import_block(
        &self,
        block: Arc<CommittedBlock>,
    ) -> Result<u64, RequestError<ImportError>> {
        flatten(
            self.mailbox
                .ask(|reply| ConsensusRequest::ImportBlock { block, reply })
                .await,
        )
    }

    /// See [`ConsensusRequest::GetEvidence`].
    pub async fn evidence(&self) -> Result<Vec<Equivocation>, ChannelError> {
        self.mailbox
            .ask(|reply| ConsensusRequest::GetEvidence { reply })
            .await
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
