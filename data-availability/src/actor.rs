//! The DA actor: a thin async loop that answers requests from the synchronous
//! [`Replicated`](crate::replicated::Replicated) state and awaits the flush that makes a
//! store durable before it answers.

use lamina_primitives::interfaces::da::{DaError, DaEvent, DaRequest, DaStatus};
use lamina_primitives::interfaces::Events;
use tokio::sync::mpsc;

use crate::pool::BlobPool;
use crate::replicated::{Replicated, Stored};

/// Serves requests until every handle is dropped.
pub(crate) async fn run(
    mut scheme: Replicated,
    mut pool: BlobPool,
    db: sled::Db,
    mut requests: mpsc::Receiver<DaRequest>,
    events: Events<DaEvent>,
) {
    while let Some(request) = requests.recv().await {
        // A send error only means the caller stopped waiting; the work is done either way.
        match request {
            DaRequest::Commit { body, reply } => {
                let _ = reply.send(scheme.commit(&body));
            }
            DaRequest::Store { block, reply } => {
                let (height, data_root) = (block.height(), block.header.data_root);
                // Whatever happens to the store, this block is committed: its blobs are in
                // the chain and must not be proposed again.
                pool.remove_included(&block.body);
                let result = match scheme.store(height, data_root, &block.body) {
                    // Flushing even when the data was already there: an earlier store may
                    // have written it and then failed to flush.
                    Ok(stored) => match db.flush_async().await {
                        Ok(_) => {
                            if stored == Stored::Written {
                                tracing::debug!(height, %data_root, "stored block data");
                                events.publish(DaEvent::Stored { height, data_root });
                            }
                            Ok(())
                        }
                        Err(error) => Err(DaError::Storage(error.to_string())),
                    },
                    Err(error) => Err(error),
                };
                if let Err(error) = &result {
                    tracing::warn!(height, %error, "refused to store block data");
                }
                let _ = reply.send(result);
            }
            DaRequest::IsAvailable {
                height,
                data_root,
                reply,
            } => {
                let _ = reply.send(scheme.is_available(height, data_root));
            }
            DaRequest::GetShare {
                height,
                index,
                reply,
            } => {
                let _ = reply.send(scheme.share(height, index));
            }
            DaRequest::SubmitBlob { blob, reply } => {
                let _ = reply.send(pool.submit(blob));
            }
            DaRequest::PendingBlobs {
                height,
                max_bytes,
                reply,
            } => {
                let blobs = pool.pending(max_bytes);
                if !blobs.is_empty() {
                    tracing::debug!(height, blobs = blobs.len(), "outside blobs for a proposal");
                }
                let _ = reply.send(blobs);
            }
            DaRequest::GetStatus { reply } => {
                let (pending_blobs, pending_blob_bytes) = pool.size();
                let _ = reply.send(DaStatus {
                    pending_blobs,
                    pending_blob_bytes,
                    ..scheme.status()
                });
            }
        }
    }
    tracing::debug!("DA layer stopped: every handle was dropped");
}
