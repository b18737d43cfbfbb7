//! The DA actor: a thin async loop that answers requests from the synchronous
//! [`Replicated`](crate::replicated::Replicated) state and awaits the flush that makes a
//! store durable before it answers.

use lamina_primitives::interfaces::da::{DaError, DaEvent, DaRequest};
use lamina_primitives::interfaces::Events;
use tokio::sync::mpsc;

use crate::replicated::{Replicated, Stored};

/// Serves requests until every handle is dropped.
pub(crate) async fn run(
    mut scheme: Replicated,
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
            DaRequest::GetStatus { reply } => {
                let _ = reply.send(scheme.status());
            }
        }
    }
    tracing::debug!("DA layer stopped: every handle was dropped");
}
