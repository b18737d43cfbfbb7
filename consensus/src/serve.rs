//! The answers both engines give alike from their [`ChainStore`]: committed blocks, committed
//! headers, and body pruning.
//!
//! Each takes the engine's committed height rather than reading the stored one: above it
//! nothing is committed, even if a write whose flush failed left a block readable there.

use std::sync::Arc;

use lamina_primitives::interfaces::consensus::ConsensusError;
use lamina_primitives::{CommittedBlock, CommittedHeader};
use tokio::sync::oneshot;

use crate::store::{ChainStore, StoreError};

impl StoreError {
    /// The error a requester sees: a pruned body is an answer of its own, anything else a
    /// storage failure.
    fn into_consensus(self) -> ConsensusError {
        match self {
            StoreError::Pruned { height } => ConsensusError::BodyPruned { height },
            error => ConsensusError::Storage(error.to_string()),
        }
    }
}

/// The answer to `GetBlock { height }`.
pub(crate) fn block(
    store: &ChainStore,
    height: u64,
    tip_height: u64,
) -> Result<Option<Arc<CommittedBlock>>, ConsensusError> {
    if height > tip_height {
        return Ok(None);
    }
    store
        .get(height)
        .map(|block| block.map(Arc::new))
        .map_err(|error| {
            if !matches!(error, StoreError::Pruned { .. }) {
                tracing::error!(height, %error, "cannot read committed block");
            }
            error.into_consensus()
        })
}

/// The answer to `GetHeader { height }`.
pub(crate) fn header(
    store: &ChainStore,
    height: u64,
    tip_height: u64,
) -> Result<Option<CommittedHeader>, ConsensusError> {
    if height > tip_height {
        return Ok(None);
    }
    store.header(height).map_err(|error| {
        tracing::error!(height, %error, "cannot read committed header");
        error.into_consensus()
    })
}

/// Answers `PruneBodies { through }` from a task of its own: the first prune of a long chain
/// reads every old body, which must not stall the engine's loop (a `bft` validator would
/// miss its timeouts). The store serialises overlapping prunes itself. The reply is sent
/// once the pruned state is flushed.
pub(crate) fn prune_bodies(
    store: &ChainStore,
    db: &sled::Db,
    through: u64,
    tip_height: u64,
    reply: oneshot::Sender<Result<u64, ConsensusError>>,
) {
    let store = store.clone();
    let db = db.clone();
    tokio::spawn(async move {
        let pruned = tokio::task::spawn_blocking(move || {
            let before = store.pruned_through();
            store
                .prune_bodies(through, tip_height)
                .map(|after| (before, after))
        })
        .await;
        let answer = match pruned {
            Ok(Ok((before, after))) => match db.flush_async().await {
                Ok(_) => {
                    if after > before {
                        tracing::debug!(through = after, "pruned old block bodies");
                    }
                    Ok(after)
                }
                Err(error) => Err(ConsensusError::Storage(format!(
                    "cannot flush the pruned block store: {error}"
                ))),
            },
            Ok(Err(error)) => Err(error.into_consensus()),
            Err(error) => Err(ConsensusError::Storage(format!(
                "the pruning task failed: {error}"
            ))),
        };
        if let Err(error) = &answer {
            tracing::error!(through, %error, "cannot prune old block bodies");
        }
        // A send error only means the caller stopped waiting.
        let _ = reply.send(answer);
    });
}
