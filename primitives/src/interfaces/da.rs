//! The data-availability layer's contract: commit to a block body, keep it, and serve any
//! share of it with a proof against `data_root`.
//!
//! Implementations (in `lamina-da`): `replicated` (every node keeps the whole body) and
//! `reed-solomon` (the body as a 2D erasure-coded square).

use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
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
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
    utoipa::ToSchema,
)]
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

/// Which rows of each height's extended square a node keeps once it prunes the height
/// (`reed-solomon` storage partitioning): this node is holder `index` of `count` (its
/// validator index in the validator set). Row `r` of height `h` is held by holder
/// `(r + h) mod count`, so the rows of one square are spread over the holders and which
/// holder gets the original rows rotates with the height, spreading the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareHolder {
    /// This node's place among the holders (`0..count`).
    pub index: u32,
    /// Number of holders (0: nobody holds anything).
    pub count: u32,
}

impl ShareHolder {
    /// Whether this holder keeps row `row` of height `height`'s extended square.
    pub fn holds_row(&self, height: u64, row: u64) -> bool {
        if self.count == 0 {
            return false;
        }
        let count = u64::from(self.count);
        // Both remainders are below 2^32, so their sum cannot overflow.
        (row % count + height % count) % count == u64::from(self.index)
    }

    /// The rows this holder keeps of height `height`'s `width`-wide extended square, in
    /// increasing order.
    pub fn rows(&self, height: u64, width: u64) -> Vec<u64> {
        (0..width)
            .filter(|row| self.holds_row(height, *row))
            .collect()
    }
}

/// One row of a height's extended square as a node keeps it after pruning: only the row's
/// first `original_width` shares, since the rest of the row is their Reed-Solomon extension
/// and is recomputed rather than stored. A column sent with a proposal's rows travels the
/// same way ([`HeldShares::columns`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct HeldRow {
    /// The row of the extended square (`0..2k`).
    pub index: u64,
    /// Its first `k` shares, [`crate::da::SHARE_SIZE`] bytes each, back to back.
    #[serde(with = "crate::da::serde_hex")]
    pub shares: Vec<u8>,
}

/// The rows of one height's extended square that a node keeps: what one node gives
/// another to rebuild a pruned height ([`DaRequest::GetHeldShares`], [`DaRequest::Restore`]).
/// Nothing here is trusted: the receiver checks every row against its stored row root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct HeldShares {
    /// The height.
    pub height: u64,
    /// The header's `data_root` the rows belong to.
    pub data_root: Hash,
    /// `k`: original shares per row (the square is `2k` wide).
    pub original_width: u64,
    /// The rows, by increasing index.
    pub rows: Vec<HeldRow>,
    /// Columns, by increasing index, each its first `k` shares top to bottom: a proposal's
    /// part carries its holder's columns (the same indices as its rows) so the holder
    /// checks its shares along both axes; empty in what a node keeps of a pruned height.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<HeldRow>,
}

/// A proposed body cut into its holders' rows ([`DaRequest::Disperse`]): what a proposer
/// sends each validator instead of the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispersal {
    /// The extended square's roots (they hash to the body's `data_root`).
    pub roots: SquareRoots,
    /// Holder `i`'s rows at index `i`: the rows [`ShareHolder::rows`] gives holder `i` of
    /// `holders` at the height, each as its first `k` shares.
    pub parts: Vec<HeldShares>,
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
    /// The configured `retention_window`: heights more than this many blocks below the
    /// applied tip are pruned to this node's assigned rows, if the node prunes at all (it
    /// does not when it is not a validator, or with fewer than three validators).
    pub retention_window: u64,
    /// Highest height pruned to this node's assigned rows (0: nothing pruned). Heights up
    /// to it keep their roots but no longer their whole body.
    pub pruned_through: u64,
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
    /// The height is pruned here: this node keeps only its assigned rows of it, and what
    /// was asked needs more (rebuild it with [`DaRequest::Restore`]).
    #[error(
        "height {height} is pruned: this node keeps only its assigned rows of it; rebuild the \
         body from peers"
    )]
    Pruned {
        /// The height.
        height: u64,
    },
    /// Shares a peer sent do not match the roots they claim, or the roots do not match
    /// their `data_root`.
    #[error("invalid shares: {0}")]
    InvalidShares(String),
    /// The square is badly encoded: the rows gathered to rebuild it each match their
    /// committed root, yet one of its lines is not a codeword of the chain's code. No honest
    /// producer makes such a square; the proof shows it to anyone who has the header.
    #[error(
        "the square of height {height} is badly encoded: {} {} is not a codeword",
        proof.axis.name(),
        proof.index
    )]
    BadEncoding {
        /// The height.
        height: u64,
        /// The proof, checked against the square's `data_root`.
        proof: Box<crate::da::BadEncodingProof>,
    },
    /// Too few rows that verify against their row roots were given to rebuild a pruned
    /// height.
    #[error("cannot rebuild height {height}: {rows} verified rows gathered, {needed} needed")]
    NotEnoughShares {
        /// The height.
        height: u64,
        /// Distinct rows that verified.
        rows: u64,
        /// Rows needed (`k`).
        needed: u64,
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
    /// One share of a height's data with its proof. On a pruned height, only shares of the
    /// rows this node holds (or of a square rebuilt in memory) are served.
    /// Reply: the share, or `HeightNotFound` / `ShareOutOfRange` / `CellOutOfRange` /
    /// `Pruned`.
    GetShare {
        /// The height.
        height: u64,
        /// Which share.
        position: SharePosition,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ShareWithProof, DaError>>,
    },
    /// The row and column roots of `height`'s extended square (kept when it is pruned).
    /// Reply: the roots, or `HeightNotFound`, or `NoSquare` (`replicated`).
    GetRoots {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<SquareRoots, DaError>>,
    },
    /// The blobs of `namespace` at `height`, with their proof where the scheme has one.
    /// Reply: the blobs (possibly none), or `HeightNotFound`, or `Pruned` (pruned and not
    /// rebuilt in memory).
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
    /// Prune every stored height up to `through` (at most the stored height) that is not
    /// pruned yet: keep only the rows of its extended square that `holder` holds (their
    /// first `k` shares) with the square's row and column roots, and delete its original
    /// data, atomically per height. Roots, [`DaRequest::GetRoots`] and
    /// [`DaRequest::IsAvailable`] keep working; whole-body requests then answer `Pruned`
    /// until the height is rebuilt with [`DaRequest::Restore`]. Idempotent.
    /// Reply: once flushed, the highest height pruned through so far (below `through` when
    /// less is stored, above it after an earlier, larger prune); `NoSquare` (`replicated`),
    /// `Storage` (also for a `holder` whose index is not below its count: it holds no
    /// rows).
    Prune {
        /// Highest height to prune.
        through: u64,
        /// Which rows this node keeps.
        holder: ShareHolder,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, DaError>>,
    },
    /// The rows of `height`'s extended square this node keeps, to give a peer rebuilding
    /// the height: while the height is whole, the original rows `0..k` (enough by
    /// themselves to rebuild it); once pruned, its held rows.
    /// Reply: the rows, or `HeightNotFound`, `NoSquare` (`replicated`), `Storage`.
    GetHeldShares {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<HeldShares, DaError>>,
    },
    /// The whole body of `height`: from its stored data, or from a square in memory (e.g.
    /// one rebuilt by [`DaRequest::Restore`]).
    /// Reply: the blobs, or `HeightNotFound`, `Pruned` (pruned and not in memory).
    GetBody {
        /// The height.
        height: u64,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Arc<Vec<Blob>>, DaError>>,
    },
    /// Rebuild pruned `height` from this node's held rows and `held`, rows gathered from
    /// peers. Shares for another height, root or width are ignored; each row is checked
    /// against its stored row root and dropped if wrong, so a lying peer cannot change the
    /// result. With `k` distinct verified rows the square is rebuilt, checked against
    /// `data_root` and kept in memory for a while (so shares, namespaces and the body of the
    /// height are served again), but not written back to disk: the height stays pruned.
    /// A height that is not pruned is answered as [`DaRequest::GetBody`].
    /// Reply: the body, or `NotEnoughShares`, `HeightNotFound`, `NoSquare` (`replicated`),
    /// `Storage`.
    Restore {
        /// The height.
        height: u64,
        /// Rows gathered from peers.
        held: Vec<HeldShares>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Arc<Vec<Blob>>, DaError>>,
    },
    /// Extend a proposed `body` for `height` and cut its square into the rows of each of
    /// `holders` holders ([`ShareHolder`] `{ index, count: holders }`), for a proposer to
    /// send each validator its own. Stores nothing.
    /// Reply: the roots and every holder's rows, or `NoSquare` (`replicated`),
    /// `BodyTooLarge`, `Storage` (`holders` is 0).
    Disperse {
        /// The height being proposed (the rows a holder gets rotate with it).
        height: u64,
        /// The body.
        body: Arc<Vec<Blob>>,
        /// Number of holders (validators).
        holders: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Dispersal, DaError>>,
    },
    /// Check rows a peer sent against a proposed square's `roots`: the roots hash to
    /// `roots.data_root` (`2k` of each, `k` a power of two), and every row of `rows` (same
    /// height, root and width as `roots`, inside the square, no index twice) extends from its
    /// first `k` shares to its row root. Stores nothing.
    /// Reply: the rows themselves when everything checks (handed back rather than copied
    /// for the check: a part is megabytes), `InvalidShares` saying what does not, `NoSquare`
    /// (`replicated`).
    CheckRows {
        /// The square's roots, as the sender claims them.
        roots: SquareRoots,
        /// The rows.
        rows: HeldShares,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<HeldShares, DaError>>,
    },
    /// Rebuild a proposed body from rows gathered from peers: rows for another height,
    /// root or width are ignored and each row is checked against its root in `roots` (a
    /// wrong one is dropped), so only the square `roots` commits to can come out. Writes
    /// nothing; the square stays in memory, so the [`DaRequest::Commit`] and
    /// [`DaRequest::Store`] of the same body that follow do not extend it again.
    /// Reply: the body, or `InvalidShares` (the roots do not hash to `roots.data_root`),
    /// `NotEnoughShares` (fewer than `k` distinct verified rows), `NoSquare` (`replicated`).
    Reassemble {
        /// The square's roots, checked against `roots.data_root`.
        roots: SquareRoots,
        /// Rows gathered from peers.
        rows: Vec<HeldShares>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Arc<Vec<Blob>>, DaError>>,
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

    /// See [`DaRequest::Prune`].
    pub async fn prune(
        &self,
        through: u64,
        holder: ShareHolder,
    ) -> Result<u64, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Prune {
                    through,
                    holder,
                    reply,
                })
                .await,
        )
    }

    /// See [`DaRequest::GetHeldShares`].
    pub async fn held_shares(&self, height: u64) -> Result<HeldShares, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::GetHeldShares { height, reply })
                .await,
        )
    }

    /// See [`DaRequest::GetBody`].
    pub async fn body(&self, height: u64) -> Result<Arc<Vec<Blob>>, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::GetBody { height, reply })
                .await,
        )
    }

    /// See [`DaRequest::Restore`].
    pub async fn restore(
        &self,
        height: u64,
        held: Vec<HeldShares>,
    ) -> Result<Arc<Vec<Blob>>, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Restore {
                    height,
                    held,
                    reply,
                })
                .await,
        )
    }

    /// See [`DaRequest::Disperse`].
    pub async fn disperse(
        &self,
        height: u64,
        body: Arc<Vec<Blob>>,
        holders: u32,
    ) -> Result<Dispersal, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Disperse {
                    height,
                    body,
                    holders,
                    reply,
                })
                .await,
        )
    }

    /// See [`DaRequest::CheckRows`].
    pub async fn check_rows(
        &self,
        roots: SquareRoots,
        rows: HeldShares,
    ) -> Result<HeldShares, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::CheckRows { roots, rows, reply })
                .await,
        )
    }

    /// See [`DaRequest::Reassemble`].
    pub async fn reassemble(
        &self,
        roots: SquareRoots,
        rows: Vec<HeldShares>,
    ) -> Result<Arc<Vec<Blob>>, RequestError<DaError>> {
        flatten(
            self.mailbox
                .ask(|reply| DaRequest::Reassemble { roots, rows, reply })
                .await,
        )
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn holders_split_every_row_and_rotate_with_height() {
        let holders: Vec<ShareHolder> = (0..3)
            .map(|index| ShareHolder { index, count: 3 })
            .collect();
        for height in 0..6 {
            let mut all: Vec<u64> = holders.iter().flat_map(|h| h.rows(height, 8)).collect();
            all.sort_unstable();
            assert_eq!(all, (0..8).collect::<Vec<_>>());
        }
        assert_eq!(holders[0].rows(0, 8), vec![0, 3, 6]);
        assert_eq!(holders[0].rows(1, 8), vec![2, 5]);
        let nobody = ShareHolder { index: 0, count: 0 };
        assert!(nobody.rows(5, 8).is_empty());
        let outside = ShareHolder { index: 4, count: 2 };
        assert!(outside.rows(5, 8).is_empty());
        // 2^64 - 1 = (2^32 - 1)(2^32 + 1): both remainders are 0, and nothing overflows.
        let first = ShareHolder {
            index: 0,
            count: u32::MAX,
        };
        assert!(first.holds_row(u64::MAX, u64::MAX));
    }

    #[test]
    fn held_shares_round_trip_through_borsh_and_json() {
        let held = HeldShares {
            columns: Vec::new(),
            height: 7,
            data_root: Hash::digest(b"root"),
            original_width: 1,
            rows: vec![HeldRow {
                index: 1,
                shares: vec![3; 4],
            }],
        };
        let bytes = borsh::to_vec(&held).unwrap();
        assert_eq!(HeldShares::try_from_slice(&bytes).unwrap(), held);
        let json = serde_json::to_string(&held).unwrap();
        assert!(json.contains("\"shares\":\"03030303\""), "{json}");
        assert_eq!(serde_json::from_str::<HeldShares>(&json).unwrap(), held);
    }
}
