//! The settlement actor: a thin async loop over the synchronous ledger of the running mode
//! ([`Ledger`] for `attested`, [`OptimisticMode`] for `optimistic`) that flushes before it
//! reports anything as done and publishes `Settled` only for what is durable.

use lamina_primitives::bridge::{Batch, DepositCredit};
use lamina_primitives::interfaces::execution::ExecutedBlock;
use lamina_primitives::interfaces::settlement::{
    HeightSettlement, LedgerAccount, SettlementError, SettlementEvent, SettlementMessage,
    SettlementRequest, SettlementStatus,
};
use lamina_primitives::interfaces::Events;
use lamina_primitives::{Address, Blob};
use tokio::sync::mpsc;

use crate::ledger::{Applied, Ledger};
use crate::optimistic_mode::OptimisticMode;

/// The ledger of the running mode.
#[derive(Debug)]
pub(crate) enum Mode {
    Attested(Ledger),
    Optimistic(OptimisticMode),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Attested(_) => "attested",
            Mode::Optimistic(_) => "optimistic",
        }
    }

    fn unsupported(&self, what: &str) -> SettlementError {
        SettlementError::Unsupported {
            mode: self.name().to_string(),
            what: what.to_string(),
        }
    }

    fn apply_block(&mut self, height: u64, blobs: &[Blob]) -> Result<Applied, SettlementError> {
        match self {
            Mode::Attested(ledger) => ledger.apply_block(height, blobs),
            Mode::Optimistic(mode) => mode.apply_block(height, blobs),
        }
    }

    fn executed(&mut self, executed: &ExecutedBlock) -> Result<bool, SettlementError> {
        match self {
            Mode::Attested(ledger) => ledger.executed(executed),
            Mode::Optimistic(mode) => mode.executed(executed),
        }
    }

    fn pending_blobs(&mut self, height: u64, max_bytes: usize) -> Vec<Blob> {
        match self {
            Mode::Attested(ledger) => ledger.pending_blobs(height, max_bytes),
            Mode::Optimistic(mode) => mode.pending_blobs(height, max_bytes),
        }
    }

    fn status(&self) -> SettlementStatus {
        match self {
            Mode::Attested(ledger) => ledger.status(),
            Mode::Optimistic(mode) => mode.status(),
        }
    }

    fn height(&self, height: u64) -> Result<Option<HeightSettlement>, SettlementError> {
        match self {
            Mode::Attested(ledger) => ledger.height(height),
            Mode::Optimistic(mode) => mode.height(height),
        }
    }

    fn deposits(&self, height: u64) -> Result<Vec<DepositCredit>, SettlementError> {
        match self {
            // No bridge: nothing to credit, but the height must be applied all the same.
            Mode::Attested(ledger) => {
                let applied = ledger.applied_height();
                if height > applied {
                    return Err(SettlementError::OutOfOrder {
                        expected: applied.saturating_add(1),
                        got: height,
                    });
                }
                Ok(Vec::new())
            }
            Mode::Optimistic(mode) => mode.deposits(height),
        }
    }

    fn submit(&mut self, message: SettlementMessage) -> Result<(), SettlementError> {
        match self {
            Mode::Attested(_) => Err(self.unsupported("submitted messages")),
            Mode::Optimistic(mode) => mode.submit(message),
        }
    }

    fn batches(&self, from: u64, limit: usize) -> Result<Vec<Batch>, SettlementError> {
        match self {
            Mode::Attested(_) => Err(self.unsupported("batches")),
            Mode::Optimistic(mode) => Ok(mode.batches(from, limit)),
        }
    }

    fn ledger_account(&self, address: Address) -> Result<LedgerAccount, SettlementError> {
        match self {
            Mode::Attested(_) => Err(self.unsupported("ledger accounts")),
            Mode::Optimistic(mode) => Ok(mode.ledger_account(address)),
        }
    }
}

async fn flush(db: &sled::Db) -> Result<(), SettlementError> {
    db.flush_async()
        .await
        .map(|_| ())
        .map_err(|e| SettlementError::Storage(e.to_string()))
}

/// Serves requests until every handle is dropped.
pub(crate) async fn run(
    mut mode: Mode,
    db: sled::Db,
    mut requests: mpsc::Receiver<SettlementRequest>,
    events: Events<SettlementEvent>,
) {
    while let Some(request) = requests.recv().await {
        // A send error only means the caller stopped waiting; the work is done either way.
        match request {
            SettlementRequest::ApplyBlock {
                height,
                blobs,
                reply,
            } => {
                let result = match mode.apply_block(height, &blobs) {
                    Ok(applied) => flush(&db).await.map(|()| {
                        for (height, state_root) in applied.newly_settled {
                            tracing::info!(height, %state_root, "height settled");
                            events.publish(SettlementEvent::Settled { height, state_root });
                        }
                        applied.status
                    }),
                    Err(error) => Err(error),
                };
                if let Err(error) = &result {
                    tracing::warn!(height, %error, "cannot apply block to the settlement ledger");
                }
                let _ = reply.send(result);
            }
            SettlementRequest::Executed { executed, reply } => {
                let result = match mode.executed(&executed) {
                    Ok(_) => flush(&db).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = &result {
                    tracing::warn!(height = executed.height, %error, "cannot record execution");
                }
                let _ = reply.send(result);
            }
            SettlementRequest::PendingBlobs {
                height,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(mode.pending_blobs(height, max_bytes));
            }
            SettlementRequest::Deposits { height, reply } => {
                let _ = reply.send(mode.deposits(height));
            }
            SettlementRequest::Submit { message, reply } => {
                let _ = reply.send(mode.submit(message));
            }
            SettlementRequest::GetBatches { from, limit, reply } => {
                let _ = reply.send(mode.batches(from, limit));
            }
            SettlementRequest::GetLedgerAccount { address, reply } => {
                let _ = reply.send(mode.ledger_account(address));
            }
            SettlementRequest::GetStatus { reply } => {
                let _ = reply.send(mode.status());
            }
            SettlementRequest::GetHeight { height, reply } => {
                let answer = mode.height(height);
                if let Err(error) = &answer {
                    tracing::error!(height, %error, "cannot read the settlement ledger");
                }
                let _ = reply.send(answer);
            }
        }
    }
    tracing::debug!("settlement layer stopped: every handle was dropped");
}
