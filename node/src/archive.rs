//! Committed blocks whatever their age: whole from the block store while it keeps their
//! body, otherwise header and certificate from the store and the body from the DA layer,
//! which rebuilds it from its own rows and those gathered from peers once it has pruned the
//! height (`[data_availability] retention_window`).
//!
//! Pruning itself is driven here too ([`Pruner`]): it follows the executed height, so a body
//! is only ever dropped after every layer has applied its block.

use std::sync::Arc;

use lamina_primitives::interfaces::consensus::{ConsensusError, ConsensusHandle};
use lamina_primitives::interfaces::da::{DaError, DaHandle, ShareHolder};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::CommittedBlock;
use tokio::sync::watch;

use crate::network::ShareGatherer;

/// Most heights pruned per request to the DA layer (each costs one square extension).
const PRUNE_STEP: u64 = 8;

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
/// without a network: a single node holds every row of its own chain).
pub async fn committed_block(
    consensus: &ConsensusHandle,
    da: &DaHandle,
    gatherer: Option<&ShareGatherer>,
    height: u64,
) -> Result<Option<Arc<CommittedBlock>>, ArchiveError> {
    match consensus.block(height).await {
        Err(RequestError::Layer(ConsensusError::BodyPruned { .. })) => {}
        other => return Ok(other?),
    }
    let Some(header) = consensus.header(height).await? else {
        return Ok(None);
    };
    let body = match da.body(height).await {
        Err(RequestError::Layer(DaError::Pruned { .. })) => {
            let held = match gatherer {
                Some(gatherer) => gatherer.gather(height).await,
                None => Vec::new(),
            };
            da.restore(height, held).await?
        }
        other => other?,
    };
    Ok(Some(Arc::new(
        header.into_block(Arc::unwrap_or_clone(body)),
    )))
}

/// Prunes old heights to this node's share of them, in the DA layer first (it keeps the
/// assigned rows) and then in the block store (it drops the bodies), `window` blocks behind
/// the executed height it is told about.
#[derive(Debug)]
pub struct Pruner {
    /// Source of old blocks.
    pub consensus: ConsensusHandle,
    /// Keeps the assigned rows.
    pub da: DaHandle,
    /// Which rows are ours.
    pub holder: ShareHolder,
    /// Heights kept whole below the executed height.
    pub window: u64,
}

impl Pruner {
    /// Runs until `executed` closes. A failed prune is logged and retried at the next
    /// executed height: pruning late costs disk, never data.
    pub async fn run(self, mut executed: watch::Receiver<u64>) {
        let mut pruned = 0;
        loop {
            let through = executed.borrow_and_update().saturating_sub(self.window);
            // A few heights per request, so that a node switching the window on over a
            // long history does not hold its DA layer up for the whole backlog at once.
            while pruned < through {
                let step = through.min(pruned + PRUNE_STEP);
                match self.prune(step).await {
                    Ok(()) => pruned = step,
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
