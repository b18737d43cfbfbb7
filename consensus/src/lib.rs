//! Lamina's consensus layer: orders blocks and commits them with certificates, keeping the
//! committed chain durably.
//!
//! Two engines, chosen with [`ConsensusConfig::kind`] and reached through the
//! [`ConsensusHandle`] that [`spawn`] returns:
//!
//! - `solo`: the chain's only validator proposes and commits a block every `block_time_ms`
//!   when there are transactions or settlement messages (or always, with
//!   `create_empty_blocks`), certifying it with its own precommit.
//! - `bft`: Tendermint among the genesis validators, weighted by voting power. Validators
//!   exchange signed proposals and votes through the node's network
//!   ([`ConsensusDeps::outbound`] out, [`ConsensusRequest::Deliver`] in), commit a block every
//!   height (empty ones too) with a certificate of precommits from more than two thirds of the
//!   power, pause `block_time_ms` after each commit, and ask the node to fetch blocks
//!   ([`ConsensusRequest::ImportBlock`]) when they fall behind. A node without a validator key
//!   follows the chain as an observer. Equivocations seen are kept as evidence. The protocol
//!   itself is a pure state machine tested under a simulated lossy network with a Byzantine
//!   validator; see `docs/adr/0001-bft-consensus.md`.
//!
//! [`ConsensusDeps::outbound`]: lamina_primitives::interfaces::consensus::ConsensusDeps::outbound
//! [`ConsensusRequest::Deliver`]: lamina_primitives::interfaces::consensus::ConsensusRequest::Deliver
//! [`ConsensusRequest::ImportBlock`]: lamina_primitives::interfaces::consensus::ConsensusRequest::ImportBlock

mod bft;
mod proposal;
mod serve;
mod solo;
mod store;

/// Who proposes at each `(height, round)` under `bft`: for the node, which checks the signer
/// of a proposal that reaches it in pieces before it spends anything on them.
pub use bft::proposer::ProposerSchedule;

use lamina_primitives::interfaces::consensus::{ConsensusDeps, ConsensusHandle};
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};
use lamina_primitives::{Address, Genesis, Keypair};
use serde::{Deserialize, Serialize};

/// Default time between blocks: one second.
pub const DEFAULT_BLOCK_TIME_MS: u64 = 1_000;
/// Default cap on transactions per block.
pub const DEFAULT_MAX_BLOCK_TRANSACTIONS: usize = 10_000;
/// Default cap on a block's encoded body: 4 MiB.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

const BLOCK_TIME_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600_000;
const MAX_BLOCK_TRANSACTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
const MAX_BLOCK_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=(256 * 1024 * 1024);
/// Default base of the `bft` propose timeout: one second.
pub const DEFAULT_TIMEOUT_PROPOSE_MS: u64 = 1_000;
/// Default base of the `bft` prevote and precommit timeouts.
pub const DEFAULT_TIMEOUT_VOTE_MS: u64 = 500;
/// Default growth of every `bft` timeout per round.
pub const DEFAULT_TIMEOUT_INCREASE_MS: u64 = 500;

const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=600_000;
const TIMEOUT_INCREASE_RANGE: std::ops::RangeInclusive<u64> = 0..=600_000;

/// Which consensus engine to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// One validator commits every block alone.
    #[default]
    Solo,
    /// Tendermint among the genesis validators (`kind = "bft"`).
    Bft,
}

/// Configuration of the consensus layer (the `[consensus]` part of a node's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// The engine.
    pub kind: EngineKind,
    /// `solo`: time between block proposals, in milliseconds. `bft`: the pause after each
    /// commit before the next height starts (Tendermint's `timeout_commit`), which sets the
    /// block time when the network is fast.
    pub block_time_ms: u64,
    /// `solo` only: whether to commit blocks with no transactions and no settlement messages.
    /// The `bft` engine makes a block every height, empty or not (its rounds need a value to
    /// decide, and a steady chain of certified blocks shows liveness).
    pub create_empty_blocks: bool,
    /// Most transactions in one block.
    pub max_block_transactions: usize,
    /// Largest encoded block body, in bytes. `bft` rejects larger proposals from peers.
    pub max_block_bytes: usize,
    /// `bft`: base of the propose timeout, in milliseconds: how long a validator waits for a
    /// round's proposal before prevoting nil. Also the period at which a validator re-sends
    /// its messages of the round, for peers that missed them.
    pub timeout_propose_ms: u64,
    /// `bft`: base of the prevote and precommit timeouts, in milliseconds: how long a
    /// validator waits for more votes once a quorum of mixed votes is in.
    pub timeout_vote_ms: u64,
    /// `bft`: added to every timeout per round, in milliseconds, so that rounds lengthen
    /// until they fit the network's real delays.
    pub timeout_increase_ms: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            kind: EngineKind::Solo,
            block_time_ms: DEFAULT_BLOCK_TIME_MS,
            create_empty_blocks: false,
            max_block_transactions: DEFAULT_MAX_BLOCK_TRANSACTIONS,
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
            timeout_propose_ms: DEFAULT_TIMEOUT_PROPOSE_MS,
            timeout_vote_ms: DEFAULT_TIMEOUT_VOTE_MS,
            timeout_increase_ms: DEFAULT_TIMEOUT_INCREASE_MS,
        }
    }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} must be between {} and {}, got {value}",
            range.start(),
            range.end()
        ))
    }
}

impl ConsensusConfig {
    /// Checks the values serde cannot: each number's range.
    pub fn validate(&self) -> Result<(), String> {
        check_range("block_time_ms", self.block_time_ms, &BLOCK_TIME_MS_RANGE)?;
        check_range(
            "max_block_transactions",
            self.max_block_transactions,
            &MAX_BLOCK_TRANSACTIONS_RANGE,
        )?;
        check_range(
            "max_block_bytes",
            self.max_block_bytes,
            &MAX_BLOCK_BYTES_RANGE,
        )?;
        check_range(
            "timeout_propose_ms",
            self.timeout_propose_ms,
            &TIMEOUT_RANGE,
        )?;
        check_range("timeout_vote_ms", self.timeout_vote_ms, &TIMEOUT_RANGE)?;
        check_range(
            "timeout_increase_ms",
            self.timeout_increase_ms,
            &TIMEOUT_INCREASE_RANGE,
        )
    }
}

/// Why the consensus engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is invalid.
    #[error("invalid consensus config: {0}")]
    InvalidConfig(String),
    /// `solo` was configured for a chain with more or fewer than one validator.
    #[error(
        "the solo engine needs exactly one validator in genesis, found {count}; \
         use a multi-validator engine for this genesis"
    )]
    SoloNeedsOneValidator {
        /// Validators in genesis.
        count: usize,
    },
    /// `solo` needs the validator's key to sign blocks.
    #[error(
        "the solo engine needs the validator key of the genesis validator {validator}, \
         but this node has no validator key"
    )]
    MissingValidatorKey {
        /// The genesis validator.
        validator: Address,
    },
    /// The node's key is not the chain's validator.
    #[error(
        "the solo engine must run as the genesis validator {validator}, \
         but this node's validator key is {key}"
    )]
    NotTheValidator {
        /// This node's key.
        key: Address,
        /// The genesis validator.
        validator: Address,
    },
    /// `bft` was given a validator key that is not a genesis validator.
    #[error(
        "the validator key {key} is not in the genesis validator set; use the key of a \
         genesis validator, or no validator key to follow the chain as an observer"
    )]
    NotAValidator {
        /// This node's key.
        key: Address,
    },
    /// `bft` needs at least one validator in genesis.
    #[error("the bft engine needs at least one validator in genesis, found none")]
    NoValidators,
    /// The stored chain was built from another genesis.
    #[error(
        "the stored chain belongs to another genesis (its chain id is {stored_chain_id:?}, \
         this genesis says {chain_id:?}); use a fresh data directory"
    )]
    GenesisMismatch {
        /// Chain id of the stored blocks.
        stored_chain_id: String,
        /// Chain id of this genesis.
        chain_id: String,
    },
    /// The database could not be opened or read.
    #[error("consensus storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The database holds data the engine cannot read.
    #[error("consensus storage is corrupt: {0}")]
    Corrupt(String),
    /// `spawn` was called outside a tokio runtime.
    #[error("the consensus engine must be spawned from within a tokio runtime")]
    NoRuntime,
}

/// Starts the configured engine on the current tokio runtime, keeping the committed chain in
/// `db` (trees `consensus/*`) and resuming from its stored tip. `validator_key` is the key
/// this node signs with; `bft` runs without one as an observer. The engine stops once every
/// clone of the returned handle is dropped.
pub fn spawn(
    config: ConsensusConfig,
    genesis: &Genesis,
    validator_key: Option<Keypair>,
    db: &sled::Db,
    deps: ConsensusDeps,
) -> Result<ConsensusHandle, SetupError> {
    config.validate().map_err(SetupError::InvalidConfig)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    let (mailbox, requests) = Mailbox::new("consensus", DEFAULT_MAILBOX_CAPACITY);
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    match config.kind {
        EngineKind::Solo => {
            let engine = solo::Solo::open(config, genesis, validator_key, db)?;
            runtime.spawn(solo::run(
                engine,
                deps,
                db.clone(),
                requests,
                events.clone(),
            ));
        }
        EngineKind::Bft => {
            let engine = bft::actor::Bft::open(config, genesis, validator_key, db)?;
            runtime.spawn(bft::actor::run(
                engine,
                deps,
                db.clone(),
                requests,
                events.clone(),
            ));
        }
    }
    Ok(ConsensusHandle::new(mailbox, events))
}

/// Outside blobs (rollup data) for the body of block `height`, within `max_bytes`. The DA
/// layer's pool is a convenience, not a duty: when it cannot be reached the block goes out
/// without them (they stay in the pool for a later block) rather than not at all.
pub(crate) async fn outside_blobs(
    deps: &ConsensusDeps,
    height: u64,
    max_bytes: usize,
) -> Vec<lamina_primitives::Blob> {
    deps.da
        .pending_blobs(height, max_bytes)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(height, %error, "cannot get outside blobs; proposing without them");
            Vec::new()
        })
}

#[cfg(test)]
mod tests;
