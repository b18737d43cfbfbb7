//! The settlement actor: a thin async loop over the synchronous
//! [`Ledger`](crate::ledger::Ledger) that flushes before it reports anything as done and
//! publishes `Settled` only for what is durable.

use lamina_primitives::interfaces::settlement::{
    SettlementError, SettlementEvent, SettlementRequest,
};
use lamina_primitives::interfaces::Events;
use tokio::sync::mpsc;

use crate::ledger::Ledger;

async fn flush(db: &sled::Db) -> Result<(), SettlementError> {
    db.flush_async()
        .await
        .map(|_| ())
        .map_err(|e| SettlementError::Storage(e.to_string()))
}

/// Serves requests until every handle is dropped.
pub(crate) async fn run(
    mut ledger: Ledger,
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
                let result = match ledger.apply_block(height, &blobs) {
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
                let result = match ledger.executed(&executed) {
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
                let _ = reply.send(ledger.pending_blobs(height, max_bytes));
            }
            SettlementRequest::GetStatus { reply } => {
                let _ = reply.send(ledger.status());
            }
            SettlementRequest::GetHeight { height, reply } => {
                let answer = ledger.height(height);
                if let Err(error) = &answer {
                    tracing::error!(height, %error, "cannot read the settlement ledger");
                }
                let _ = reply.send(answer);
            }
        }
    }
    tracing::debug!("settlement layer stopped: every handle was dropped");
}
