//! The DA actor: a thin async loop that answers requests from the synchronous scheme state
//! ([`Replicated`] or [`ReedSolomon`]) and the blob pool, awaits the flush that makes a
//! store (or a prune) durable before it answers, and runs the extension, repair and parsing
//! of a square (tens of milliseconds for a full block) on the blocking pool rather than on
//! an async worker. Requests that need nothing of the scheme but its [`SquareBuilder`]
//! (dispersing a proposal, checking and reassembling its rows) run in a task of their own
//! that answers them, so the loop does not wait for them and many peers' rows are checked
//! at once; a reassembled square comes back to the loop through a channel of its own, to be
//! kept like a committed body's.

use std::sync::Arc;

use lamina_primitives::interfaces::da::{
    DaError, DaEvent, DaRequest, DaStatus, DataCommitment, HeldShares, ShareHolder, SquareRoots,
};
use lamina_primitives::interfaces::Events;
use lamina_primitives::{Blob, Block, Hash};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::heights::Stored;
use crate::pool::BlobPool;
use crate::reed_solomon::{self, BodySource, ReedSolomon, SquareBuilder};
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

/// `height`'s square: from memory, or rebuilt from its stored original data and then kept
/// in memory; `Pruned` when only its held rows are left.
async fn square_at(scheme: &mut ReedSolomon, height: u64) -> Result<Arc<ExtendedSquare>, DaError> {
    if let Some(square) = scheme.cached(height) {
        return Ok(square);
    }
    let square = load_square(scheme, height).await?;
    scheme.remember(height, Arc::clone(&square));
    Ok(square)
}

/// `height`'s square rebuilt from its stored original data and checked against its root,
/// without looking in memory or keeping it; `Pruned` when only its held rows are left.
async fn load_square(scheme: &ReedSolomon, height: u64) -> Result<Arc<ExtendedSquare>, DaError> {
    let (original, root) = scheme.original_at(height)?;
    let builder: SquareBuilder = scheme.builder();
    let square = off_the_runtime(move || builder.rebuild(&original)).await?;
    if square.data_root() != root {
        return Err(DaError::Storage(format!(
            "the stored data of height {height} does not match its root {root}"
        )));
    }
    Ok(Arc::new(square))
}

/// See `DaRequest::GetRoots`.
async fn roots(scheme: &mut ReedSolomon, height: u64) -> Result<SquareRoots, DaError> {
    match square_at(scheme, height).await {
        Ok(square) => Ok(SquareRoots {
            height,
            data_root: square.data_root(),
            row_roots: square.row_roots().to_vec(),
            col_roots: square.col_roots().to_vec(),
        }),
        Err(DaError::Pruned { .. }) => {
            let (pruned, data_root) = scheme.pruned_at(height)?;
            Ok(SquareRoots {
                height,
                data_root,
                row_roots: pruned.roots.row_roots().to_vec(),
                col_roots: pruned.roots.col_roots().to_vec(),
            })
        }
        Err(error) => Err(error),
    }
}

/// See `DaRequest::Prune`, not yet flushed. One height at a time, each in its own
/// transaction, so a failure part-way leaves every height either whole or pruned.
async fn prune(
    scheme: &mut ReedSolomon,
    through: u64,
    holder: ShareHolder,
) -> Result<u64, DaError> {
    if holder.index >= holder.count {
        // Such a holder keeps no rows: pruning would throw the data away.
        return Err(DaError::Storage(format!(
            "refusing to prune as holder {} of {}: it holds no rows",
            holder.index, holder.count
        )));
    }
    let through = through.min(scheme.stored_height());
    for height in scheme.unpruned_through(through)? {
        // Neither looked for nor kept in memory: pruning walks old heights, which are not
        // there and would push out the recent squares that share requests are about.
        let square = load_square(scheme, height).await?;
        scheme.prune_height(height, &square, holder)?;
        tracing::debug!(height, "pruned block data to this node's rows");
    }
    scheme.set_pruned_through(through)
}

/// See `DaRequest::GetBody`.
async fn body(scheme: &Scheme, height: u64) -> Result<Arc<Vec<Blob>>, DaError> {
    match scheme {
        Scheme::Replicated(scheme) => scheme.body(height),
        Scheme::ReedSolomon(scheme) => {
            let source = scheme.body_source(height)?;
            off_the_runtime(move || source.parse(height)).await
        }
    }
}

/// See `DaRequest::Restore`.
async fn restore(
    scheme: &mut ReedSolomon,
    height: u64,
    held: Vec<HeldShares>,
) -> Result<Arc<Vec<Blob>>, DaError> {
    match scheme.body_source(height) {
        Ok(source) => return off_the_runtime(move || source.parse(height)).await,
        Err(DaError::Pruned { .. }) => {}
        Err(error) => return Err(error),
    }
    let (kept, data_root) = scheme.pruned_at(height)?;
    let builder = scheme.builder();
    let (square, body) = off_the_runtime(move || {
        let square = reed_solomon::rebuild_pruned(&builder, height, data_root, kept, held)?;
        let square = Arc::new(square);
        let body = BodySource::Square(Arc::clone(&square)).parse(height)?;
        Ok((square, body))
    })
    .await?;
    tracing::debug!(height, "rebuilt pruned block data from held rows");
    scheme.remember_restored(height, square);
    Ok(body)
}

/// Flushes what a request wrote, then answers with `result`.
async fn flushed<T>(db: &sled::Db, result: Result<T, DaError>) -> Result<T, DaError> {
    let value = result?;
    db.flush_async()
        .await
        .map_err(|error| DaError::Storage(error.to_string()))?;
    Ok(value)
}

/// Requests answered beside the loop that run at once; more wait for a turn, so that peers
/// sending many parts cannot make the node extend them all at the same time.
const BESIDE_THE_LOOP_AT_ONCE: usize = 4;

/// Answers `reply` with `work` of `scheme`'s builder, run on the blocking pool by a task of
/// its own so the loop goes on meanwhile: for requests that need no other state of the
/// scheme. At most [`BESIDE_THE_LOOP_AT_ONCE`] run at a time (`turns`). `NoSquare` at once
/// for `replicated`.
fn beside_the_loop<T: Send + 'static>(
    scheme: &Scheme,
    turns: &Arc<Semaphore>,
    reply: oneshot::Sender<Result<T, DaError>>,
    work: impl FnOnce(SquareBuilder) -> Result<T, DaError> + Send + 'static,
) {
    match scheme {
        Scheme::Replicated(_) => {
            let _ = reply.send(Err(no_square()));
        }
        Scheme::ReedSolomon(scheme) => {
            let builder = scheme.builder();
            let turns = Arc::clone(turns);
            tokio::spawn(async move {
                // The semaphore is never closed, so a turn always comes.
                let Ok(_turn) = turns.acquire_owned().await else {
                    return;
                };
                let _ = reply.send(off_the_runtime(move || work(builder)).await);
            });
        }
    }
}

/// The answer of the `replicated` scheme to requests about an extended square.
fn no_square() -> DaError {
    DaError::NoSquare {
        scheme: "replicated".to_string(),
    }
}

/// See `DaRequest::Commit`: the body's commitment, its square kept for the block that will
/// carry it (the proposer's, every validator's check of a proposal and every fetched block
/// commit the body before the block is stored).
async fn commit(scheme: &mut ReedSolomon, body: Arc<Vec<Blob>>) -> Result<DataCommitment, DaError> {
    let digest = {
        let body = Arc::clone(&body);
        off_the_runtime(move || Ok(reed_solomon::body_digest(&body))).await?
    };
    if let Some((commitment, _)) = scheme.proposed(&digest) {
        // A body committed again (a proposal checked twice): hashing it spared the extension.
        return Ok(commitment);
    }
    let builder = scheme.builder();
    let (commitment, square) = off_the_runtime(move || builder.build(&body, true)).await?;
    scheme.remember_proposed(digest, commitment, Arc::new(square));
    Ok(commitment)
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
            let body = Arc::clone(&block);
            let digest = off_the_runtime(move || Ok(reed_solomon::body_digest(&body.body))).await?;
            let square = match scheme.proposed(&digest) {
                Some((_, square)) => square,
                None => {
                    let builder = scheme.builder();
                    let (_, square) =
                        off_the_runtime(move || builder.build(&block.body, false)).await?;
                    Arc::new(square)
                }
            };
            if square.data_root() != data_root {
                return Err(DaError::RootMismatch(data_root));
            }
            scheme.store(height, square)
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
    retention_window: u64,
    mut requests: mpsc::Receiver<DaRequest>,
    events: Events<DaEvent>,
) {
    let turns = Arc::new(Semaphore::new(BESIDE_THE_LOOP_AT_ONCE));
    // Squares of proposals rebuilt beside the loop, to keep as if their bodies were
    // committed here.
    let (rebuilt_tx, mut rebuilt) = mpsc::channel(BESIDE_THE_LOOP_AT_ONCE);
    loop {
        let request = tokio::select! {
            Some((digest, commitment, square)) = rebuilt.recv() => {
                if let Scheme::ReedSolomon(scheme) = &mut scheme {
                    scheme.remember_proposed(digest, commitment, square);
                }
                continue;
            }
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        // A send error only means the caller stopped waiting; the work is done either way.
        match request {
            DaRequest::Commit { body, reply } => {
                let result = match &mut scheme {
                    Scheme::Replicated(scheme) => scheme.commit(&body),
                    Scheme::ReedSolomon(scheme) => commit(scheme, body).await,
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
                        Err(DaError::Pruned { .. }) => scheme.held_share(height, position),
                        Err(error) => Err(error),
                    },
                };
                let _ = reply.send(result);
            }
            DaRequest::GetRoots { height, reply } => {
                let result = match &mut scheme {
                    Scheme::Replicated(_) => Err(no_square()),
                    Scheme::ReedSolomon(scheme) => roots(scheme, height).await,
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
                let (scheme, stored_height, pruned_through) = match &scheme {
                    Scheme::Replicated(scheme) => ("replicated", scheme.stored_height(), 0),
                    Scheme::ReedSolomon(scheme) => (
                        "reed-solomon",
                        scheme.stored_height(),
                        scheme.pruned_through(),
                    ),
                };
                let _ = reply.send(DaStatus {
                    scheme: scheme.to_string(),
                    share_size: SHARE_SIZE,
                    stored_height,
                    pending_blobs,
                    pending_blob_bytes,
                    retention_window,
                    pruned_through,
                });
            }
            DaRequest::Prune {
                through,
                holder,
                reply,
            } => {
                let result = match &mut scheme {
                    Scheme::Replicated(_) => Err(no_square()),
                    // Flushing even when nothing was pruned: an earlier prune may have
                    // written and then failed to flush.
                    Scheme::ReedSolomon(scheme) => {
                        flushed(&db, prune(scheme, through, holder).await).await
                    }
                };
                if let Err(error) = &result {
                    tracing::warn!(through, %error, "could not prune block data");
                }
                let _ = reply.send(result);
            }
            DaRequest::GetHeldShares { height, reply } => {
                let result = match &scheme {
                    Scheme::Replicated(_) => Err(no_square()),
                    Scheme::ReedSolomon(scheme) => scheme.held_shares(height),
                };
                let _ = reply.send(result);
            }
            DaRequest::GetBody { height, reply } => {
                let _ = reply.send(body(&scheme, height).await);
            }
            DaRequest::Restore {
                height,
                held,
                reply,
            } => {
                let result = match &mut scheme {
                    Scheme::Replicated(_) => Err(no_square()),
                    Scheme::ReedSolomon(scheme) => restore(scheme, height, held).await,
                };
                if let Err(error) = &result {
                    tracing::debug!(height, %error, "could not rebuild block data");
                }
                let _ = reply.send(result);
            }
            DaRequest::Disperse {
                height,
                body,
                holders,
                reply,
            } => beside_the_loop(&scheme, &turns, reply, move |builder| {
                reed_solomon::disperse(&builder, height, &body, holders)
            }),
            DaRequest::CheckRows { roots, rows, reply } => {
                beside_the_loop(&scheme, &turns, reply, move |builder| {
                    reed_solomon::check_rows(&builder, roots, &rows).map(|()| rows)
                });
            }
            DaRequest::Reassemble { roots, rows, reply } => {
                let rebuilt = rebuilt_tx.clone();
                beside_the_loop(&scheme, &turns, reply, move |builder| {
                    let (body, committed) =
                        reed_solomon::reassemble_committed(&builder, roots, rows)?;
                    if let Some((commitment, square)) = committed {
                        // The engine commits the rebuilt body next, then stores it: both
                        // find its square rather than extend the body again. Full: forgo it.
                        let digest = reed_solomon::body_digest(&body);
                        let _ = rebuilt.try_send((digest, commitment, square));
                    }
                    Ok(body)
                });
            }
        }
    }
    tracing::debug!("DA layer stopped: every handle was dropped");
}
