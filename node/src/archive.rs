//! Committed blocks whatever their age: whole from the block store while it keeps their
//! body, otherwise header and certificate from the store and the body from the DA layer,
//! which rebuilds it from its own rows and those gathered from peers once it has pruned the
//! height (`[data_availability] retention_window`).
//!
//! Pruning itself is driven here too ([`Pruner`]): it follows the executed height, so a body
//! is only ever dropped after every layer has applied its block.

use std::future::Future;
use std::sync::Arc;

use lamina_primitives::interfaces::consensus::{ConsensusError, ConsensusHandle};
use lamina_primitives::interfaces::da::{DaError, DaHandle, ShareHolder};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::{Blob, CommittedBlock};
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;
use crate::network::ShareGatherer;

/// Most heights pruned per request to the DA layer: each costs one square extension in the
/// DA layer's request loop, where block proposals wait for their commitments.
const PRUNE_STEP: u64 = 1;

/// Fewest validators for which pruning saves space: each keeps `2/n` of a height's
/// original data as its rows, so with one or two validators pruning would keep as much as
/// the body, or more.
pub const MIN_VALIDATORS_TO_PRUNE: u32 = 3;

/// Why a committed block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The consensus engine could not answer.
    #[error(transparent)]
    Consensus(#[from] RequestError<ConsensusError>),
    /// The DA layer could not give the pruned body (e.g. too few peers answered with
    /// their rows).
    #[error(transparent)]
    Da(#[from] RequestError<DaError>),
}

/// The committed block at `height` with its body, or `None` above the committed height.
/// A body the block store pruned comes from the DA layer: from its original data while it
/// has it, else rebuilt from its held rows plus those `gatherer` collects from peers (none
/// without a network).
pub async fn committed_block(
    consensus: &ConsensusHandle,
    da: &DaHandle,
    gatherer: Option<&ShareGatherer>,
    height: u64,
) -> Result<Option<Arc<CommittedBlock>>, ArchiveError> {
    match consensus.block(height).await {
        Err(RequestError::Layer(ConsensusError::BodyPruned { .. })) => {
            pruned_block(consensus, da, gatherer, height).await
        }
        other => Ok(other?),
    }
}

/// [`committed_block`] for a height whose body the block store has pruned.
pub async fn pruned_block(
    consensus: &ConsensusHandle,
    da: &DaHandle,
    gatherer: Option<&ShareGatherer>,
    height: u64,
) -> Result<Option<Arc<CommittedBlock>>, ArchiveError> {
    let Some(header) = consensus.header(height).await? else {
        return Ok(None);
    };
    let body = match da.body(height).await {
        Err(RequestError::Layer(DaError::Pruned { .. })) => {
            restore_then(da, gatherer, height, || async {}).await?.0
        }
        other => other?,
    };
    Ok(Some(Arc::new(
        header.into_block(Arc::unwrap_or_clone(body)),
    )))
}

/// Rebuilds pruned `height` in the DA layer from its own rows and those `gatherer` collects
/// from peers, then runs `then` (e.g. a read of the rebuilt square, which the DA layer keeps
/// in memory for a while) and answers the body and what `then` gave. One rebuild at a time
/// per node, `then` included, so no other rebuild can push the square out before `then`
/// reads it, and since the DA layer runs each rebuild in its request loop, where block
/// proposals wait for their commitments, queued rebuilds must not pile up there.
pub async fn restore_then<T, F: Future<Output = T>>(
    da: &DaHandle,
    gatherer: Option<&ShareGatherer>,
    height: u64,
    then: impl FnOnce() -> F,
) -> Result<(Arc<Vec<Blob>>, T), RequestError<DaError>> {
    static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);
    let held = match gatherer {
        Some(gatherer) => gatherer.gather(height).await,
        None => Vec::new(),
    };
    let _turn = ONE_AT_A_TIME.acquire().await;
    let body = da.restore(height, held).await?;
    Ok((body, then().await))
}

/// Prunes old heights to this node's share of them, in the DA layer first (it keeps the
/// assigned rows) and then in the block store (it drops the bodies), `window` blocks behind
/// the executed height it is told about.
#[derive(Debug)]
pub struct Pruner {
    /// Drops old bodies from its block store.
    pub consensus: ConsensusHandle,
    /// Keeps the assigned rows.
    pub da: DaHandle,
    /// Which rows are ours.
    pub holder: ShareHolder,
    /// Heights kept whole below the executed height.
    pub window: u64,
    /// Where the pruned height is shown.
    pub metrics: Arc<Metrics>,
}

impl Pruner {
    /// Runs until `executed` closes. A failed prune is logged and retried at the next
    /// executed height: pruning late costs disk, never data.
    pub async fn run(self, mut executed: watch::Receiver<u64>) {
        // Where the last run stopped; pruning again below it would be a no-op per height.
        let mut pruned = match self.da.status().await {
            Ok(status) => status.pruned_through,
            Err(_) => return,
        };
        self.metrics.pruned_height.set(pruned);
        loop {
            let through = executed.borrow_and_update().saturating_sub(self.window);
            // One height per request, so that a node switching the window on over a long
            // history does not hold its DA layer up for the whole backlog at once.
            while pruned < through {
                let step = through.min(pruned + PRUNE_STEP);
                match self.prune(step).await {
                    Ok(()) => {
                        pruned = step;
                        self.metrics.pruned_height.set(pruned);
                    }
                    Err(err) => {
                        tracing::warn!(through = step, "pruning old heights failed: {err}");
                        break;
                    }
                }
            }
            if executed.changed().await.is_err() {
                return;
            }
        }
    }

    async fn prune(&self, through: u64) -> Result<(), ArchiveError> {
        // Rows first: once the store has dropped a body, the rows are all that is left.
        let kept = self.da.prune(through, self.holder).await?;
        let dropped = self.consensus.prune_bodies(kept).await?;
        tracing::debug!(through = dropped, "pruned old heights to this node's rows");
        Ok(())
    }
}
