//! The actor: owns the [`DepthLedger`], persists it (one borsh value, flushed before any
//! reply says something is done) and answers every [`SettlementRequest`] variant.

use lamina_primitives::codec;
use lamina_primitives::interfaces::settlement::{
    HeightSettlement, SettlementError, SettlementEvent, SettlementRequest, SettlementStatus,
};
use lamina_primitives::interfaces::Events;
use lamina_primitives::Hash;
use tokio::sync::mpsc;

use crate::ledger::DepthLedger;
use crate::SetupError;

const TREE: &str = "settlement-depth";
const KEY: &[u8] = b"ledger";
const MODE: &str = "depth";

/// The ledger and where it is kept.
pub(crate) struct Store {
    ledger: DepthLedger,
    tree: sled::Tree,
    db: sled::Db,
}

impl Store {
    /// Opens the stored ledger, or starts one with `depth`.
    pub(crate) fn open(db: &sled::Db, depth: u64) -> Result<Store, SetupError> {
        let tree = db.open_tree(TREE)?;
        let ledger = match tree.get(KEY)? {
            Some(bytes) => {
                let ledger = codec::decode_trusted::<DepthLedger>(&bytes)
                    .map_err(|e| SetupError::Corrupt(e.to_string()))?;
                if ledger.depth() != depth {
                    return Err(SetupError::DepthChanged {
                        stored: ledger.depth(),
                        configured: depth,
                    });
                }
                ledger
            }
            None => DepthLedger::new(depth),
        };
        Ok(Store {
            ledger,
            tree,
            db: db.clone(),
        })
    }

    /// Writes and flushes the ledger.
    async fn persist(&self) -> Result<(), SettlementError> {
        let storage = |e: sled::Error| SettlementError::Storage(e.to_string());
        self.tree
            .insert(KEY, codec::encode(&self.ledger))
            .map_err(storage)?;
        self.db.flush_async().await.map_err(storage)?;
        Ok(())
    }

    fn status(&self) -> SettlementStatus {
        let settled = self.ledger.settled_height();
        SettlementStatus {
            mode: MODE.to_string(),
            settled_height: settled,
            settled_state_root: self.ledger.settled_root(settled),
            applied_height: self.ledger.applied_height(),
            executed_height: self.ledger.executed_height(),
            optimistic: None,
        }
    }
}

fn unsupported(what: &str) -> SettlementError {
    SettlementError::Unsupported {
        mode: MODE.to_string(),
        what: what.to_string(),
    }
}

fn publish(events: &Events<SettlementEvent>, settled: Vec<(u64, Hash)>) {
    for (height, state_root) in settled {
        events.publish(SettlementEvent::Settled { height, state_root });
    }
}

/// Serves requests until every handle is dropped. A reply that cannot be sent only means
/// the caller stopped waiting.
pub(crate) async fn run(
    mut store: Store,
    mut requests: mpsc::Receiver<SettlementRequest>,
    events: Events<SettlementEvent>,
) {
    while let Some(request) = requests.recv().await {
        match request {
            SettlementRequest::ApplyBlock { height, reply, .. } => {
                // The blobs are ignored: this mode has no messages.
                let result = match store.ledger.apply_block(height) {
                    Ok(settled) => store.persist().await.map(|()| {
                        publish(&events, settled);
                        store.status()
                    }),
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            SettlementRequest::Executed { executed, reply } => {
                let settled = store.ledger.executed(executed.height, executed.state_root);
                let result = store.persist().await;
                if result.is_ok() {
                    publish(&events, settled);
                }
                let _ = reply.send(result);
            }
            SettlementRequest::PendingBlobs { reply, .. } => {
                let _ = reply.send(Vec::new());
            }
            SettlementRequest::Deposits { height, reply } => {
                let applied = store.ledger.applied_height();
                let answer = if height > applied {
                    Err(SettlementError::OutOfOrder {
                        expected: applied + 1,
                        got: height,
                    })
                } else {
                    Ok(Vec::new())
                };
                let _ = reply.send(answer);
            }
            SettlementRequest::Submit { reply, .. } => {
                let _ = reply.send(Err(unsupported("settlement messages")));
            }
            SettlementRequest::GetBatches { reply, .. } => {
                let _ = reply.send(Err(unsupported("batches")));
            }
            SettlementRequest::GetLedgerAccount { reply, .. } => {
                let _ = reply.send(Err(unsupported("ledger accounts")));
            }
            SettlementRequest::GetStatus { reply } => {
                let _ = reply.send(store.status());
            }
            SettlementRequest::GetHeight { height, reply } => {
                let settled = store.ledger.settled_height();
                let answer = (height >= 1 && height <= settled).then(|| HeightSettlement {
                    height,
                    settled_root: store.ledger.settled_root(height),
                    attested_power: Vec::new(),
                    total_power: 0,
                });
                let _ = reply.send(Ok(answer));
            }
        }
    }
    tracing::debug!("depth settlement stopped: every handle was dropped");
}

#[cfg(test)]
mod tests {
    use lamina_primitives::interfaces::execution::ExecutedBlock;
    use lamina_primitives::interfaces::RequestError;

    use super::*;

    fn executed(height: u64) -> ExecutedBlock {
        ExecutedBlock {
            height,
            block_hash: Hash::ZERO,
            state_root: Hash::digest(&height.to_le_bytes()),
            transactions: 0,
            failed: 0,
            fees: 0,
            data_root: Hash::ZERO,
            withdrawals_root: Hash::ZERO,
            withdrawal_count: 0,
            deposits_credited: 0,
        }
    }

    #[tokio::test]
    async fn settles_through_the_handle_and_keeps_its_state_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let settlement = crate::spawn(1, &db).unwrap();
        let mut events = settlement.subscribe();
        settlement.apply_block(1, vec![]).await.unwrap();
        settlement.executed(executed(1)).await.unwrap();
        assert_eq!(settlement.deposits(1).await.unwrap(), vec![]);
        let status = settlement.apply_block(2, vec![]).await.unwrap();
        assert_eq!(status.mode, "depth");
        assert_eq!(status.settled_height, 1);
        assert_eq!(
            events.recv().await.unwrap(),
            SettlementEvent::Settled {
                height: 1,
                state_root: executed(1).state_root
            }
        );
        assert!(settlement
            .pending_blobs(3, 1 << 20)
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            settlement.batches(0, 10).await,
            Err(RequestError::Layer(SettlementError::Unsupported { .. }))
        ));
        assert!(matches!(
            settlement.apply_block(4, vec![]).await,
            Err(RequestError::Layer(SettlementError::OutOfOrder {
                expected: 3,
                got: 4
            }))
        ));
        let info = settlement.height(1).await.unwrap().unwrap();
        assert_eq!(info.settled_root, Some(executed(1).state_root));
        assert_eq!(settlement.height(2).await.unwrap(), None);
        drop(settlement);
        drop(events);

        // The actor may still hold the database for a moment; reopening the trees is fine.
        let reopened = Store::open(&db, 1).unwrap();
        assert_eq!(reopened.status().settled_height, 1);
        assert!(matches!(
            Store::open(&db, 5),
            Err(SetupError::DepthChanged {
                stored: 1,
                configured: 5
            })
        ));
    }
}
