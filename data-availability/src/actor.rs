//! The DA actor: a thin async loop that answers requests from the synchronous scheme state
//! ([`Replicated`] or [`ReedSolomon`]) and the blob pool, awaits the flush that makes a
//! store durable before it answers, and runs the extension of a square (tens of
//! milliseconds for a full block) on the blocking pool rather than on an async worker.

use std::sync::Arc;

use lamina_primitives::interfaces::da::{DaError, DaEvent, DaRequest, DaStatus, SquareRoots};
use lamina_primitives::interfaces::Events;
use lamina_primitives::{Block, Hash};
use tokio::sync::mpsc;

use crate::heights::Stored;
use crate::pool::BlobPool;
use crate::reed_solomon::{self, ReedSolomon, SquareBuilder};
use crate::replicated::Replicated;
use crate::square::ExtendedSquare;
use crate::SHARE_SIZE;

/// The state of the configured scheme.
#[derive(Debug)]
pub(crate) enum Scheme {
    /// See [`Replicated`].
    Replicated(Replicated),
    /// See [`ReedSolomon`].
    ReedSolomon(ReedSolomon),
}

/// Runs `work` on the blocking pool; a panic there becomes a storage error of this request
/// rather than the end of the actor.
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DaError> + Send + 'static,
) -> Result<T, DaError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(DaError::Storage(format!("square task failed: {error}"))))
}

/// `height`'s square: from memory, or rebuilt from its stored original data.
async fn square_at(scheme: &mut ReedSolomon, height: u64) -> Result<Arc<ExtendedSquare>, DaError> {
    if let Some(square) = scheme.cached(height) {
        return Ok(square);
    }
    let (original, root) = scheme.original_at(height)?;
    let builder: SquareBuilder = scheme.builder();
    let square = off_the_runtime(move || builder.rebuild(&original)).await?;
    if square.data_root() != root {
        return Err(DaError::Storage(format!(
            "the stored data of height {height} does not match its root {root}"
        )));
    }
    let square = Arc::new(square);
    scheme.remember(height, Arc::clone(&square));
    Ok(square)
}

/// Keeps a committed block's data (see `DaRequest::Store`), not yet flushed.
async fn store(scheme: &mut Scheme, block: Arc<Block>) -> Result<Stored, DaError> {
    let (height, data_root) = (block.height(), block.header.data_root);
    match scheme {
        Scheme::Replicated(scheme) => scheme.store(height, data_root, &block.body),
        Scheme::ReedSolomon(scheme) => {
            if scheme.root_at(height)? == Some(data_root) {
                return Ok(Stored::AlreadyStored);
            }
            let builder = scheme.builder();
            let (_, square) = off_the_runtime(move || builder.build(&block.body, false)).await?;
            if square.data_root() != data_root {
                return Err(DaError::RootMismatch(data_root));
            }
            scheme.store(height, Arc::new(square))
        }
    }
}

fn is_available(scheme: &Scheme, height: u64, data_root: Hash) -> bool {
    match scheme {
        Scheme::Replicated(scheme) => scheme.is_available(height, data_root),
        Scheme::ReedSolomon(scheme) => scheme.is_available(height, data_root),
    }
}

/// Serves requests until every handle is dropped.
pub(crate) async fn run(
    mut scheme: Scheme,
    mut pool: BlobPool,
    db: sled::Db,
    mut requests: mpsc::Receiver<DaRequest>,
    events: Events<DaEvent>,
) {
    while let Some(request) = requests.recv().await {
        // A send error only means the caller stopped waiting; the work is done either way.
        match request {
            DaRequest::Commit { body, reply } => {
                let result = match &scheme {
                    Scheme::Replicated(scheme) => scheme.commit(&body),
                    Scheme::ReedSolomon(scheme) => {
                        let builder = scheme.builder();
                        off_the_runtime(move || builder.build(&body, true))
                            .await
                            .map(|(commitment, _)| commitment)
                    }
                };
                let _ = reply.send(result);
            }
            DaRequest::Store { block, reply } => {
                let (height, data_root) = (block.height(), block.header.data_root);
                // Whatever happens to the store, this block is committed: its blobs are in
                // the chain and must not be proposed again.
                pool.remove_included(&block.body);
                let result = match store(&mut scheme, block).await {
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
                let _ = reply.send(is_available(&scheme, height, data_root));
            }
            DaRequest::GetShare {
                height,
                position,
                reply,
            } => {
                let result = match &mut scheme {
                    Scheme::Replicated(scheme) => scheme.share(height, position),
                    Scheme::ReedSolomon(scheme) => match square_at(scheme, height).await {
                        Ok(square) => scheme.share(&square, height, position),
                        Err(error) => Err(error),
                    },
                };
                let _ = reply.send(result);
            }
            DaRequest::GetRoots { height, reply } => {
                let result = match &mut scheme {
                    Scheme::Replicated(_) => Err(DaError::NoSquare {
                        scheme: "replicated".to_string(),
                    }),
                    Scheme::ReedSolomon(scheme) => {
                        square_at(scheme, height).await.map(|square| SquareRoots {
                            height,
                            data_root: square.data_root(),
                            row_roots: square.row_roots().to_vec(),
                            col_roots: square.col_roots().to_vec(),
                        })
                    }
                };
                let _ = reply.send(result);
            }
            DaRequest::GetNamespace {
                height,
                namespace,
                reply,
            } => {
                let result = match &mut scheme {
                    Scheme::Replicated(scheme) => scheme.namespace(height, namespace),
                    Scheme::ReedSolomon(scheme) => match square_at(scheme, height).await {
                        Ok(square) => reed_solomon::namespace_of(&square, height, namespace),
                        Err(error) => Err(error),
                    },
                };
                let _ = reply.send(result);
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
                let (scheme, stored_height) = match &scheme {
                    Scheme::Replicated(scheme) => ("replicated", scheme.stored_height()),
                    Scheme::ReedSolomon(scheme) => ("reed-solomon", scheme.stored_height()),
                };
                let _ = reply.send(DaStatus {
                    scheme: scheme.to_string(),
                    share_size: SHARE_SIZE,
                    stored_height,
                    pending_blobs,
                    pending_blob_bytes,
                });
            }
        }
    }
    tracing::debug!("DA layer stopped: every handle was dropped");
}
