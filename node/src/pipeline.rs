//! The block pipeline: hands every committed block, in height order, to the DA, settlement
//! and execution layers, then reports each execution result to settlement.
//!
//! Every layer keeps its own "last applied height" durably and treats a replayed height as a
//! no-op, so after a crash the pipeline simply restarts from the lowest height any layer is
//! missing: nothing is lost and nothing is applied twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use lamina_primitives::interfaces::consensus::ConsensusHandle;
use lamina_primitives::interfaces::da::DaHandle;
use lamina_primitives::interfaces::execution::ExecutionHandle;
use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::Namespace;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The layers the pipeline feeds.
#[derive(Debug, Clone)]
pub struct Layers {
    /// Source of committed blocks.
    pub consensus: ConsensusHandle,
    /// Executes them.
    pub execution: ExecutionHandle,
    /// Stores their data.
    pub da: DaHandle,
    /// Applies their settlement messages and attests results.
    pub settlement: SettlementHandle,
}

/// How long to wait before retrying a height whose delivery failed.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Safety net: re-check the committed height this often even without an event.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

impl Layers {
    /// The name of a layer whose actor has stopped, if any: nothing can recover from that.
    fn stopped(&self) -> Option<&'static str> {
        [
            ("consensus", self.consensus.is_closed()),
            ("execution", self.execution.is_closed()),
            ("data-availability", self.da.is_closed()),
            ("settlement", self.settlement.is_closed()),
        ]
        .into_iter()
        .find_map(|(name, closed)| closed.then_some(name))
    }

    fn check_running(&self) -> anyhow::Result<()> {
        match self.stopped() {
            Some(layer) => Err(anyhow!("the {layer} layer has stopped; see the log above")),
            None => Ok(()),
        }
    }
}

/// Runs until `shutdown` flips to true (then `Ok`), or until a layer stops (then `Err`):
/// transient failures are retried, a dead layer is not. Publishes on `applied` the height
/// every layer has applied (what pruning may follow).
pub async fn run(
    layers: Layers,
    metrics: Arc<Metrics>,
    applied: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Subscribe before reading the tip, so no commit falls between the two.
    let mut commits = layers.consensus.subscribe();
    let mut next = loop {
        match start_height(&layers).await {
            Ok(height) => break height,
            Err(err) => {
                layers.check_running()?;
                tracing::error!("block pipeline cannot start: {err:#}");
                if wait_or_shutdown(&mut shutdown, RETRY_DELAY).await {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(next, "block pipeline started");
    if let (Ok(execution), Ok(settlement)) = (
        layers.execution.status().await,
        layers.settlement.status().await,
    ) {
        metrics.executed_height.set(execution.executed_height);
        metrics.settled_height.set(settlement.settled_height);
    }
    loop {
        let tip = match layers.consensus.status().await {
            Ok(status) => status.committed_height,
            Err(err) => {
                layers.check_running()?;
                tracing::error!("consensus did not answer, will retry: {err}");
                if wait_or_shutdown(&mut shutdown, RETRY_DELAY).await {
                    return Ok(());
                }
                continue;
            }
        };
        metrics.committed_height.set(tip);
        while next <= tip {
            if *shutdown.borrow() {
                return Ok(());
            }
            match deliver(&layers, &metrics, next).await {
                Ok(()) => {
                    applied.send_replace(next);
                    next += 1;
                }
                Err(err) => {
                    layers.check_running()?;
                    tracing::error!(
                        height = next,
                        "delivering block failed, will retry: {err:#}"
                    );
                    if wait_or_shutdown(&mut shutdown, RETRY_DELAY).await {
                        return Ok(());
                    }
                }
            }
        }
        tokio::select! {
            _ = commits.recv() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Waits `delay`; true if shutdown was requested meanwhile.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// The lowest height some layer has not applied yet.
async fn start_height(layers: &Layers) -> anyhow::Result<u64> {
    let executed = layers.execution.status().await?.executed_height;
    let stored = layers.da.status().await?.stored_height;
    let settlement = layers.settlement.status().await?;
    Ok(executed
        .min(stored)
        .min(settlement.applied_height)
        .min(settlement.executed_height)
        + 1)
}

/// Hands block `height` to every layer; each step is idempotent.
async fn deliver(layers: &Layers, metrics: &Metrics, height: u64) -> anyhow::Result<()> {
    let committed = layers
        .consensus
        .block(height)
        .await?
        .ok_or_else(|| anyhow!("committed block {height} is missing from the block store"))?;
    let block = Arc::new(committed.block.clone());
    layers
        .da
        .store(Arc::clone(&block))
        .await
        .context("DA store")?;
    let settlement_blobs = block.blobs(Namespace::SETTLEMENT).cloned().collect();
    let status = layers
        .settlement
        .apply_block(height, settlement_blobs)
        .await
        .context("settlement apply")?;
    metrics.settled_height.set(status.settled_height);
    // The deposits this block queued on the settlement ledger are credited by executing it.
    let deposits = layers
        .settlement
        .deposits(height)
        .await
        .context("settlement deposits")?;
    let executed = layers
        .execution
        .execute_block(block, deposits)
        .await
        .context("execution")?;
    layers
        .settlement
        .executed(executed.clone())
        .await
        .context("settlement attest")?;
    metrics.executed_height.set(executed.height);
    metrics
        .transactions_executed
        .inc_by(u64::from(executed.transactions));
    metrics
        .transactions_failed
        .inc_by(u64::from(executed.failed));
    tracing::debug!(
        height,
        txs = executed.transactions,
        state_root = %executed.state_root,
        "block applied"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use lamina_primitives::interfaces::{Events, Mailbox};

    use super::*;

    #[tokio::test]
    async fn a_stopped_layer_ends_the_pipeline_with_an_error() {
        // Handles whose actors are gone: their receivers are dropped at once.
        let layers = Layers {
            consensus: ConsensusHandle::new(Mailbox::new("consensus", 1).0, Events::new(1)),
            execution: ExecutionHandle::new(Mailbox::new("execution", 1).0, Events::new(1)),
            da: DaHandle::new(Mailbox::new("da", 1).0, Events::new(1)),
            settlement: SettlementHandle::new(Mailbox::new("settlement", 1).0, Events::new(1)),
        };
        let (_stop, shutdown) = watch::channel(false);
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            run(
                layers,
                Arc::new(Metrics::new()),
                watch::channel(0).0,
                shutdown,
            ),
        )
        .await
        .expect("the pipeline gives up instead of retrying forever");
        let message = outcome.expect_err("a dead layer is an error").to_string();
        assert!(message.contains("has stopped"), "{message}");
    }
}
