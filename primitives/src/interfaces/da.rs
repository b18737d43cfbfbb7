//! The data-availability layer's contract: commit to a block body, keep it, and serve any
//! share of it with a proof against `data_root`.
//!
//! Implementations (in `lamina-da`): `replicated` (every node keeps the whole body) and
//! `reed-solomon` (the body as a 2D erasure-coded square).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::{flatten, ChannelError, Events, Mailbox, RequestError};
use crate::da::{NamespaceProof, ShareProof};
use crate::merkle::MerkleProof;
use crate::{Blob, Block, Hash, Namespace};

/// A body's commitment, as it goes into the block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCommitment {
    /// The root every share proves against.
    pub data_root: Hash,
    /// Size of the encoded body in bytes.
    pub body_size: u64,
    /// Number of shares the body was split into.
    pub share_count: u64,
}

/// Which share of a height's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharePosition {
    /// By index: `replicated`, the share's number; `reed-solomon`, `row × width + col` in
    /// the extended square.
    Index(u64),
    /// By cell of the extended square (`replicated` has a single row, 0).
    Cell {
        /// Row.
        row: u64,
        /// Column.
        col: u64,
    },
}

/// How a share proves to `data_root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DataProof {
    /// `replicated`: an RFC 9162 inclusion proof among all of the body's shares.
    Flat(MerkleProof),
    /// `reed-solomon`: the share within its row or column, and that line's root within
    /// `data_root`.
    Square(ShareProof),
}

impl DataProof {
    /// True when `share` is share `(row, col)` under `data_root` (`Flat`: row 0, index
    /// `col`).
    pub fn verify(&self, data_root: &Hash, row: u64, col: u64, share: &[u8]) -> bool {
        match self {
            DataProof::Flat(proof) => {
                row == 0 && proof.index == col && proof.verify(data_root, share)
            }
            DataProof::Square(proof) => proof.verify(data_root, row, col, share),
        }
    }
}

/// One share of a block's data with its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareWithProof {
    /// The block height.
    pub height: u64,
    /// The share's index (see [`SharePosition::Index`]).
    pub index: u64,
    /// Its row (0 in `replicated`).
    pub row: u64,
    /// Its column (the index in `replicated`).
    pub col: u64,
    /// The share's bytes.
    #[serde(with = "crate::da::serde_hex")]
    pub share: Vec<u8>,
    /// The root it proves against (the header's `data_root`).
    pub data_root: Hash,
    /// The proof.
    pub proof: DataProof,
}

/// Every row and column root of a height's extended square: with them a client checks
/// `data_root` and rebuilds the square from any sufficient set of shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SquareRoots {
    /// The height.
    pub height: u64,
    /// The root over the `2k` row roots then the `2k` column roots.
    pub data_root: Hash,
    /// Row roots, top to bottom.
    pub row_roots: Vec<Hash>,
    /// Column roots, left to right.
    pub col_roots: Vec<Hash>,
}

/// The blobs of one namespace at one height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceData {
    /// The height.
    pub height: u64,
    /// The header's `data_root`.
    pub data_root: Hash,
    /// The namespace's blobs' data, in body order (empty: none at this height).
    pub blobs: Vec<Vec<u8>>,
    /// `reed-solomon`: the proof of exactly these blobs against `data_root` (it proves an
    /// empty answer too). `None` in `replicated`, which commits to the body as a whole.
    pub proof: Option<NamespaceProof>,
}

/// The layer's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaStatus {
    /// Scheme name (`replicated`, ...).
    pub scheme: String,
    /// Share size in bytes.
    pub share_size: usize,
    /// Highest height whose data is stored.
    pub stored_height: u64,
    /// Outside blobs waiting for a block.
    pub pending_blobs: usize,
    /// Their total size in bytes.
    pub pending_blob_bytes: u64,
}

/// Why a DA request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaError {
    /// No data is stored for this height.
    #[error("no data stored for height {0}")]
    HeightNotFound(u64),
    /// The height's square has no such cell.
    #[error("share ({row}, {col}) does not exist; height {height} has {rows} × {cols} shares")]
    CellOutOfRange {
        /// Height.
        height: u64,
        /// Row asked for.
        row: u64,
        /// Column asked for.
        col: u64,
        /// Rows of the height's data.
        rows: u64,
        /// Columns of the height's data.
        cols: u64,
    },
    /// The scheme commits to the body as a whole (`replicated`): no square, no line roots.
    #[error("the {scheme} scheme has no extended square, so no row and column roots")]
    NoSquare {
        /// The running scheme.
        scheme: String,
    },
    /// This node withholds the share (fault injection: `withhold_parity`).
    #[error("share ({row}, {col}) of height {height} is withheld by this node")]
    Withheld {
        /// Height.
        height: u64,
        /// Row.
        row: u64,
        /// Column.
        col: u64,
    },
    /// The height's data has fewer shares.
    #[error("share {index} does not exist; height {height} has {count} shares")]
    ShareOutOfRange {
        /// Height.
        height: u64,
        /// Index asked for.
        index: u64,
        /// Number of shares.
        count: u64,
    },
    /// The body given to store does not match the root given with it.
    #[error("body does not match data root {0}")]
    RootMismatch(Hash),
    /// The body is larger than the scheme accepts.
    #[error("body is {size} bytes; the limit is {limit}")]
    BodyTooLarge {
        /// Size of the body.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The DA database failed.
    #[error("DA storage failed: {0}")]
    Storage(String),
    /// A submitted blob uses a namespace of the chain's own layers.
    #[error("namespace {0} is reserved for the chain's own layers; choose another")]
    ReservedNamespace(crate::Namespace),
    /// A submitted blob is larger than a block may carry.
    #[error("blob is {size} bytes; the limit is {limit}")]
    BlobTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The pool of blobs waiting for a block is full.
    #[error("the blob pool is full ({pending_bytes} bytes waiting); retry later")]
    PoolFull {
        /// Bytes of blobs waiting.
        pending_bytes: u64,
    },
}

/// What the DA layer publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaEvent {
    /// The data of a height is stored durably.
    Stored {
        /// The height.
        height: u64,
        /// Its root.
        data_root: Hash,
    },
}

/// Requests to the DA layer.
#[derive(Debug)]
pub enum DaRequest {
    /// Compute the commitment of a body, storing nothing (the proposer calls this to fill in
    /// the header). Deterministic: every node computes the same commitment for one body.
    /// Reply: the commitment, or `BodyTooLarge`.
    Commit {
        /// The body.
        body: Arc<Vec<Blob>>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<DataCommitment, DaError>>,
    },
    /// Keep the body of a committed block, under its header's height. Idempotent.
    /// Reply: once the data is flushed to disk; `RootMismatch` if the body does not commit
    /// to the header's `data_root` (nothing is stored then).
    Store {
        /// The committed block.
        block: Arc<Block>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), DaError>>,
    },
    /// Is the data of `height` with root `data_root` available to this node (what a
    /// validator asks before it votes)?
    /// Reply: `true` when it is stored here and matches.
    IsAvailable {
        /// The height.
        height: u64,
        /// The expected root.
        data_root: Hash,
        /// Where the answer goes.
        reply: oneshot::Sender<bool>,
    },
    /// One share of a height's data with its proof.
    /// Reply: the share, or `HeightNotFound` / `ShareOutOfRange` / `CellOutOfRange`.
    GetShare {
        /// The height.
        height: u64,
        /// Which share.
        position: SharePosition,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ShareWithProof, DaError>>,
    },
    /// The row and column roots of `height`'s extended square.
    /// Reply: the roots, or `HeightNotFound`, or `NoSquare` (`replicated`).
    GetRoots {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SquareRoots, DaError>>,
    },
    /// The blobs of `namespace` at `height`, with their proof where the scheme has one.
    /// Reply: the blobs (possibly none), or `HeightNotFound`.
    GetNamespace {
        /// The height.
        height: u64,
        /// The namespace.
        namespace: Namespace,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<NamespaceData, DaError>>,
    },
    /// Add an outside blob (any namespace but the reserved ones) to the pool this node's
    /// proposals draw from. Idempotent: a blob already waiting is not added twice.
    /// Reply: the blob's commitment ([`Blob::commitment`]), or `ReservedNamespace`,
    /// `BlobTooLarge`, `PoolFull`.
    SubmitBlob {
        /// The blob.
        blob: Blob,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Hash, DaError>>,
    },
    /// Blobs for the body of block `height`, oldest first, whose encoded size
    /// ([`Blob::encoded_len`]) adds up to at most `max_bytes`. They stay in the pool until a
    /// stored block carries them, so a proposal that fails loses nothing.
    /// Reply: the blobs (possibly none).
    PendingBlobs {
        /// The height being proposed (for logs).
        height: u64,
        /// The byte budget.
        max_bytes: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Blob>>,
    },
    /// Reply: the layer's status.
    GetStatus {
        /// Where the answer goes.
        reply: oneshot::Sender<DaStatus>,
    },
}

/// Cloneable handle to a DA layer.
#[derive(Debug, Clone)]
pub struct DaHandle {
    mailbox: Mailbox<DaRequest>,
    events: Events<DaEvent>,
}

impl DaHandle {
    /// A handle over an actor's mailbox and event publisher.
    pub fn new(mailbox: Mailbox<DaRequest>, events: Events<DaEvent>) -> Self {
        DaHandle { mailbox, events }
    }

    /// See [`DaRequest::Commit`].
    pub async fn commit(
        &self,
        body: Arc<Vec<Blob>>,
    ) -> Result<DataCommitment, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Commit { body, reply })
                .await,
        )
    }

    /// See [`DaRequest::Store`].
    pub async fn store(&self, block: Arc<Block>) -> Result<(), RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Store { block, reply })
                .await,
        )
    }

    /// See [`DaRequest::IsAvailable`].
    pub async fn is_available(&self, height: u64, data_root: Hash) -> Result<bool, ChannelError> {
        self.mailbox
            .ask(|reply| DaRequest::IsAvailable {
                height,
                data_root,
                reply,
            })
            .await
    }

    /// See [`DaRequest::GetShare`].
    pub async fn share(
        &self,
        height: u64,
        position: SharePosition,
    ) -> Result<ShareWithProof, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::GetShare {
                    height,
                    position,
                    reply,
                })
                .await,
        )
    }

    /// See [`DaRequest::GetRoots`].
    pub async fn roots(&self, height: u64) -> Result<SquareRoots, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::GetRoots { height, reply })
                .await,
        )
    }

    /// See [`DaRequest::GetNamespace`].
    pub async fn namespace(
        &self,
        height: u64,
        namespace: Namespace,
    ) -> Result<NamespaceData, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::GetNamespace {
                    height,
                    namespace,
                    reply,
                })
                .await,
        )
    }

    /// See [`DaRequest::SubmitBlob`].
    pub async fn submit_blob(&self, blob: Blob) -> Result<Hash, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::SubmitBlob { blob, reply })
                .await,
        )
    }

    /// See [`DaRequest::PendingBlobs`].
    pub async fn pending_blobs(
        &self,
        height: u64,
        max_bytes: usize,
    ) -> Result<Vec<Blob>, ChannelError> {
        self.mailbox
            .ask(|reply| DaRequest::PendingBlobs {
                height,
                max_bytes,
                reply,
            })
            .await
    }

    /// See [`DaRequest::GetStatus`].
    pub async fn status(&self) -> Result<DaStatus, ChannelError> {
        self.mailbox
            .ask(|reply| DaRequest::GetStatus { reply })
            .await
    }

    /// True once the layer's actor has stopped (it panicked or shut down): no request will
    /// be answered again.
    pub fn is_closed(&self) -> bool {
        self.mailbox.is_closed()
    }

    /// Subscribes to [`DaEvent`]s.
    pub fn subscribe(&self) -> broadcast::Receiver<DaEvent> {
        self.events.subscribe()
    }
}
