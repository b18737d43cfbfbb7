//! The `reed-solomon` scheme's state: a block body laid out as a `k × k` square of shares
//! ([`layout`](crate::square::layout)), extended to `2k × 2k` and committed through its
//! row and column roots. A node keeps each height's original data (the `k × k` quadrant)
//! and its `data_root`; the extended square is rebuilt from them on demand and the last
//! few are kept in memory, since share and namespace requests cluster on recent heights.
//!
//! The CPU-heavy part (extending a square) is [`SquareBuilder`], a copyable value the actor
//! runs off the async workers; everything here that touches storage is synchronous and
//! unit-testable without a runtime.
//!
//! Storage partitioning: a height can be *pruned* (`DaRequest::Prune`). Its original data
//! is then replaced, in one transaction, by a [`HeldEntry`]: the square's row and column
//! roots and only the rows this node holds (see `ShareHolder`), each as its first `k`
//! shares, the rest of a row being their extension. Such a height still answers roots,
//! availability and the shares of its held rows; anything that needs the whole square
//! needs it rebuilt from `k` verified rows gathered from peers ([`rebuild_pruned`]), which
//! is kept in memory only, so the height stays pruned on disk.
//!
//! Dispersal: a proposer cuts a proposed body's square into each holder's rows
//! ([`disperse`]); a validator checks a peer's rows against the proposal's roots
//! ([`check_rows`]) and rebuilds the body from `k` verified rows ([`reassemble`]), trusting
//! peers' rows exactly as a pruned height's rebuild does. None of it touches storage.

use std::collections::VecDeque;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::heights::{piece_keys, read_pieces, storage, HeightStore, Stored};
use crate::square::layout::{self, LayoutError};
use crate::square::line::ExtendedRow;
use crate::square::parallel;
use crate::square::{
    square_width_for, Axis, AxisRoots, Codec, CodecKind, ExtendedSquare, PartialSquare,
    RepairError, ShareProof, MAX_ORIGINAL_BYTES,
};
use crate::{SetupError, SHARE_SIZE};
use lamina_primitives::interfaces::da::{
    DaError, DataCommitment, DataProof, Dispersal, HeldRow, HeldShares, NamespaceData, ShareHolder,
    SharePosition, ShareWithProof, SquareRoots,
};
use lamina_primitives::{Blob, Hash, Namespace};

/// Tree holding each height's original data (the `k × k` quadrant), in pieces under the
/// big-endian height (see `heights`).
pub(crate) const ORIGINALS_TREE: &str = "da/rs/originals";
/// Tree holding each height's `data_root`.
pub(crate) const ROOTS_TREE: &str = "da/rs/roots";
/// Tree holding scalar metadata.
pub(crate) const META_TREE: &str = "da/rs/meta";
/// Tree holding what each pruned height keeps (a borsh [`HeldEntry`]), in pieces under the
/// big-endian height (see `heights`); earlier versions stored it whole under the height.
pub(crate) const HELD_TREE: &str = "da/rs/held";
/// Meta key of the highest height pruned so far.
const PRUNED_THROUGH_KEY: &str = "pruned_through";

/// Extended squares kept in memory (each up to 4× the original data).
const SQUARE_CACHE_LEN: usize = 2;
/// Squares rebuilt from peers' rows kept in memory, apart from the recent ones so that the
/// next stored blocks do not push a square out right after it was rebuilt.
const RESTORED_CACHE_LEN: usize = 2;

/// Squares of bodies committed lately (`DaRequest::Commit`: proposals built or checked),
/// kept by the digest of the body, so that the block that carries one is stored from its
/// square rather than extended a second time.
const PROPOSED_CACHE_LEN: usize = 2;

/// The digest a body's square is remembered by: SHA-256 of its borsh encoding.
pub(crate) fn body_digest(body: &[Blob]) -> Hash {
    lamina_primitives::crypto::hash_of(&body)
}

/// The commitment of a body of `body_size` encoded bytes whose square is `square`.
fn commitment_of(square: &ExtendedSquare, body_size: u64) -> DataCommitment {
    let width = square.width() as u64;
    DataCommitment {
        data_root: square.data_root(),
        body_size,
        share_count: width * width,
    }
}

/// Builds squares: the codec, the threads to extend on, and the body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SquareBuilder {
    pub(crate) codec: CodecKind,
    pub(crate) threads: usize,
    pub(crate) max_body_bytes: u64,
    /// Fault injection (`DaConfig::bad_encoding`): alter the first parity share before
    /// committing.
    pub(crate) bad_encoding: bool,
}

/// `borsh(body)`'s length without encoding it: the count, then each blob's namespace,
/// length prefix and data.
fn encoded_body_len(body: &[Blob]) -> u64 {
    body.iter()
        .map(|blob| blob.encoded_len() as u64)
        .sum::<u64>()
        + lamina_primitives::codec::VEC_PREFIX_BYTES as u64
}

impl SquareBuilder {
    /// The commitment and extended square of `body`. With `check_size`, a body over the
    /// limit is refused (`Commit`); a committed block's body is accepted whatever its size
    /// (`Store`), as in the `replicated` scheme.
    pub(crate) fn build(
        &self,
        body: &[Blob],
        check_size: bool,
    ) -> Result<(DataCommitment, ExtendedSquare), DaError> {
        let body_size = encoded_body_len(body);
        if check_size && body_size > self.max_body_bytes {
            return Err(DaError::BodyTooLarge {
                size: body_size,
                limit: self.max_body_bytes,
            });
        }
        let (k, original) = layout::layout(body).map_err(|error| match error {
            LayoutError::TooLarge { bytes } => DaError::BodyTooLarge {
                size: bytes as u64,
                limit: MAX_ORIGINAL_BYTES as u64,
            },
            other => storage(other),
        })?;
        let square = self.extend(k, &original)?;
        Ok((commitment_of(&square, body_size), square))
    }

    /// The extended square of stored original data.
    pub(crate) fn rebuild(&self, original: &[u8]) -> Result<ExtendedSquare, DaError> {
        let shares = original.len() / SHARE_SIZE;
        let k = crate::square::square_width_for(shares);
        self.extend(k, original)
    }

    fn extend(&self, k: usize, original: &[u8]) -> Result<ExtendedSquare, DaError> {
        let square =
            ExtendedSquare::extend(self.codec, k, original, self.threads).map_err(storage)?;
        if !self.bad_encoding {
            return Ok(square);
        }
        // Share (k, 0), the first of the parity rows: flipping a bit breaks row k and
        // column 0, and the square is committed as it stands.
        let mut data = square.into_data();
        let at = k * 2 * k * SHARE_SIZE;
        if let Some(byte) = data.get_mut(at) {
            *byte ^= 1;
        }
        Ok(ExtendedSquare::commit(self.codec, k, data, self.threads))
    }
}

/// What a pruned height keeps on disk (borsh, in [`HELD_TREE`]).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct HeldEntry {
    /// The square's `2k` row roots (which give `k`): each held row is checked against its
    /// own, and any share of it is proven through it.
    row_roots: Vec<Hash>,
    /// The square's `2k` column roots (with the row roots, they hash to `data_root`).
    col_roots: Vec<Hash>,
    /// The held rows, by increasing index, each its first `k` shares.
    rows: Vec<HeldRow>,
}

/// A pruned height as read back: its roots, checked against its `data_root`, and its held
/// rows (not yet checked: each is checked when it is extended).
#[derive(Debug, Clone)]
pub(crate) struct PrunedHeight {
    /// The square's axis roots.
    pub(crate) roots: AxisRoots,
    /// The rows this node holds.
    pub(crate) rows: Vec<HeldRow>,
}

/// Where a whole body is read from: stored original data, or a square in memory.
#[derive(Debug)]
pub(crate) enum BodySource {
    /// The stored original quadrant.
    Original(Vec<u8>),
    /// A square in memory (recent, or rebuilt from peers).
    Square(Arc<ExtendedSquare>),
}

impl BodySource {
    /// The body laid out in the source's original quadrant (copies it for a square).
    pub(crate) fn parse(&self, height: u64) -> Result<Arc<Vec<Blob>>, DaError> {
        let parsed = match self {
            BodySource::Original(original) => layout::parse(original),
            BodySource::Square(square) => layout::parse(&square.original_data()),
        };
        parsed.map(Arc::new).map_err(|error| {
            storage(format!(
                "the stored data of height {height} has no valid layout: {error}"
            ))
        })
    }
}

/// The stored data of the `reed-solomon` scheme.
#[derive(Debug)]
pub(crate) struct ReedSolomon {
    builder: SquareBuilder,
    heights: HeightStore,
    /// What pruned heights keep (see [`HELD_TREE`]).
    held: sled::Tree,
    /// Highest height pruned so far (0: none).
    pruned_through: u64,
    squares: VecDeque<(u64, Arc<ExtendedSquare>)>,
    /// Squares of pruned heights rebuilt from peers' rows.
    restored: VecDeque<(u64, Arc<ExtendedSquare>)>,
    /// Lately committed bodies' commitments and squares, by [`body_digest`].
    proposed: VecDeque<(Hash, (DataCommitment, Arc<ExtendedSquare>))>,
    /// Fault injection: refuse to serve parity shares (see `DaConfig::withhold_parity`).
    withhold_parity: bool,
}

impl ReedSolomon {
    /// Opens (or creates) the scheme's trees in `db`.
    pub(crate) fn open(
        db: &sled::Db,
        builder: SquareBuilder,
        withhold_parity: bool,
    ) -> Result<Self, SetupError> {
        let heights = HeightStore::open(db, ORIGINALS_TREE, ROOTS_TREE, META_TREE)?;
        let pruned_through = heights.read_meta(PRUNED_THROUGH_KEY)?.unwrap_or(0);
        Ok(ReedSolomon {
            builder,
            heights,
            held: db.open_tree(HELD_TREE)?,
            pruned_through,
            squares: VecDeque::with_capacity(SQUARE_CACHE_LEN),
            restored: VecDeque::with_capacity(RESTORED_CACHE_LEN),
            proposed: VecDeque::with_capacity(PROPOSED_CACHE_LEN),
            withhold_parity,
        })
    }

    /// What extends this scheme's squares.
    pub(crate) fn builder(&self) -> SquareBuilder {
        self.builder
    }

    /// The root stored for `height`, if any.
    pub(crate) fn root_at(&self, height: u64) -> Result<Option<Hash>, DaError> {
        self.heights.root_at(height)
    }

    /// Keeps `square` (already checked against the header's `data_root`) as `height`'s
    /// data. Writes but does not flush. A different square later stored at the same height
    /// replaces the first (a proposal re-made in a later round has the same height).
    pub(crate) fn store(
        &mut self,
        height: u64,
        square: Arc<ExtendedSquare>,
    ) -> Result<Stored, DaError> {
        let stored = self
            .heights
            .write(height, square.data_root(), &square.original_data())?;
        if stored == Stored::Written {
            // Another root at a pruned height (not expected of committed blocks): what was
            // kept of the old one is stale. Reads prefer the original data, so a crash
            // before this removal only leaves a stale entry that the next prune replaces.
            let mut stale = sled::Batch::default();
            for piece in piece_keys(&self.held, height)? {
                stale.remove(piece);
            }
            self.held.apply_batch(stale).map_err(storage)?;
            self.restored.retain(|(h, _)| *h != height);
            self.remember(height, square);
        }
        Ok(stored)
    }

    /// See `DaRequest::IsAvailable`.
    pub(crate) fn is_available(&self, height: u64, data_root: Hash) -> bool {
        self.heights.is_available(height, data_root)
    }

    /// `height`'s square if it is in memory.
    pub(crate) fn cached(&self, height: u64) -> Option<Arc<ExtendedSquare>> {
        self.squares
            .iter()
            .chain(&self.restored)
            .find(|(h, _)| *h == height)
            .map(|(_, square)| Arc::clone(square))
    }

    /// The commitment and square of a lately committed body, by its [`body_digest`].
    pub(crate) fn proposed(&self, digest: &Hash) -> Option<(DataCommitment, Arc<ExtendedSquare>)> {
        self.proposed
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, (commitment, square))| (*commitment, Arc::clone(square)))
    }

    /// Keeps a committed body's commitment and square, by its [`body_digest`].
    pub(crate) fn remember_proposed(
        &mut self,
        digest: Hash,
        commitment: DataCommitment,
        square: Arc<ExtendedSquare>,
    ) {
        keep_latest(
            &mut self.proposed,
            PROPOSED_CACHE_LEN,
            digest,
            (commitment, square),
        );
    }

    /// Keeps `height`'s square, rebuilt from peers' rows, in memory.
    pub(crate) fn remember_restored(&mut self, height: u64, square: Arc<ExtendedSquare>) {
        keep_latest(&mut self.restored, RESTORED_CACHE_LEN, height, square);
    }

    /// Keeps `height`'s square in memory, dropping the oldest beyond the cache's size.
    pub(crate) fn remember(&mut self, height: u64, square: Arc<ExtendedSquare>) {
        keep_latest(&mut self.squares, SQUARE_CACHE_LEN, height, square);
    }

    /// `height`'s stored original data and root, to rebuild its square from; `Pruned` when
    /// only its held rows are left.
    pub(crate) fn original_at(&self, height: u64) -> Result<(Vec<u8>, Hash), DaError> {
        let root = self
            .root_at(height)?
            .ok_or(DaError::HeightNotFound(height))?;
        match self.heights.data_entry(height)? {
            Some(original) => Ok((original, root)),
            None if self.is_pruned(height)? => Err(DaError::Pruned { height }),
            None => Err(DaError::HeightNotFound(height)),
        }
    }

    fn is_pruned(&self, height: u64) -> Result<bool, DaError> {
        let mut pieces = self.held.scan_prefix(height.to_be_bytes()).keys();
        Ok(pieces.next().transpose().map_err(storage)?.is_some())
    }

    /// What pruned `height` keeps, with its root; `HeightNotFound` when nothing is stored,
    /// and `Storage` when the height is not pruned or its entry is corrupt.
    pub(crate) fn pruned_at(&self, height: u64) -> Result<(PrunedHeight, Hash), DaError> {
        let root = self
            .root_at(height)?
            .ok_or(DaError::HeightNotFound(height))?;
        let bytes = read_pieces(&self.held, HELD_TREE, height)?
            .ok_or_else(|| storage(format!("height {height} is not pruned")))?;
        let corrupt = |error: &dyn std::fmt::Display| {
            storage(format!(
                "{HELD_TREE} entry of height {height} is corrupt: {error}"
            ))
        };
        let entry = HeldEntry::try_from_slice(&bytes).map_err(|e| corrupt(&e))?;
        let roots =
            AxisRoots::new(entry.row_roots, entry.col_roots, &root).map_err(|e| corrupt(&e))?;
        Ok((
            PrunedHeight {
                roots,
                rows: entry.rows,
            },
            root,
        ))
    }

    /// Where `height`'s body is read from: its original data, else a square in memory;
    /// `Pruned` when neither is left.
    pub(crate) fn body_source(&self, height: u64) -> Result<BodySource, DaError> {
        match self.original_at(height) {
            Ok((original, _)) => Ok(BodySource::Original(original)),
            Err(DaError::Pruned { height }) => self
                .cached(height)
                .map(BodySource::Square)
                .ok_or(DaError::Pruned { height }),
            Err(error) => Err(error),
        }
    }

    /// See `DaRequest::GetHeldShares`.
    pub(crate) fn held_shares(&self, height: u64) -> Result<HeldShares, DaError> {
        let (original_width, rows, data_root) = match self.original_at(height) {
            Ok((original, data_root)) => {
                let k = square_width_for(original.len() / SHARE_SIZE);
                let row_bytes = k * SHARE_SIZE;
                if original.len() != k * row_bytes {
                    return Err(storage(format!(
                        "{ORIGINALS_TREE} entry of height {height} is {} bytes, not a square",
                        original.len()
                    )));
                }
                let rows = original
                    .chunks_exact(row_bytes)
                    .zip(0u64..)
                    .map(|(shares, index)| HeldRow {
                        index,
                        shares: shares.to_vec(),
                    })
                    .collect();
                (k as u64, rows, data_root)
            }
            Err(DaError::Pruned { .. }) => {
                let (pruned, data_root) = self.pruned_at(height)?;
                let k = pruned.roots.original_width() as u64;
                (k, pruned.rows, data_root)
            }
            Err(error) => return Err(error),
        };
        Ok(HeldShares {
            columns: Vec::new(),
            height,
            data_root,
            original_width,
            rows,
        })
    }

    /// See `DaRequest::GetShare` on pruned `height` whose square is not in memory: a share
    /// of a held row, its row extended from the row's first `k` shares and checked against
    /// the row root; `Pruned` for any other row.
    pub(crate) fn held_share(
        &self,
        height: u64,
        position: SharePosition,
    ) -> Result<ShareWithProof, DaError> {
        let (pruned, data_root) = self.pruned_at(height)?;
        let roots = &pruned.roots;
        let width = roots.width() as u64;
        let (row, col) = cell_of(width, height, position)?;
        self.check_not_withheld(roots.original_width(), height, row, col)?;
        let held = pruned
            .rows
            .iter()
            .find(|held| held.index == row)
            .ok_or(DaError::Pruned { height })?;
        let codec = Codec::new(self.builder.codec, roots.original_width()).map_err(storage)?;
        // In range, so the conversions and lookups succeed.
        let (r, c) = (row as usize, col as usize);
        let extended = check_line(&codec, roots, Axis::Row, r, &held.shares)
            .map_err(|reason| storage(format!("held row {row} of height {height}: {reason}")))?;
        let missing = || {
            storage(format!(
                "share ({row}, {col}) of height {height} is missing"
            ))
        };
        let share = extended.share(c).ok_or_else(missing)?.to_vec();
        let proof = ShareProof {
            axis: Axis::Row,
            line_proof: extended.prove(c).ok_or_else(missing)?,
            root_proof: roots.prove(Axis::Row, r).ok_or_else(missing)?,
        };
        Ok(served(height, width, (row, col), share, data_root, proof))
    }

    /// Every height up to `through` still stored whole, in increasing order.
    pub(crate) fn unpruned_through(&self, through: u64) -> Result<Vec<u64>, DaError> {
        self.heights.heights_through(through)
    }

    /// Prunes `height`, whose committed square is `square` (checked against its root by
    /// the caller): keeps `holder`'s rows and the roots and deletes the original data, in
    /// one transaction, then raises `pruned_through`. Writes but does not flush.
    pub(crate) fn prune_height(
        &mut self,
        height: u64,
        square: &ExtendedSquare,
        holder: ShareHolder,
    ) -> Result<(), DaError> {
        let rows = held_rows(square, height, holder)?;
        let entry = HeldEntry {
            row_roots: square.row_roots().to_vec(),
            col_roots: square.col_roots().to_vec(),
            rows,
        };
        let bytes = borsh::to_vec(&entry).map_err(storage)?;
        self.heights.replace_data(height, &self.held, &bytes)?;
        // Written apart from the entry: after a crash in between, `pruned_through` only
        // lags, which is harmless since whether a height is pruned is read from its entry
        // and pruning it again finds nothing left to do.
        self.set_pruned_through(height)?;
        Ok(())
    }

    /// Records that every height up to `through` is pruned (heights never stored
    /// included); the highest so far is kept. Writes but does not flush.
    pub(crate) fn set_pruned_through(&mut self, through: u64) -> Result<u64, DaError> {
        if through > self.pruned_through {
            self.heights.write_meta(PRUNED_THROUGH_KEY, through)?;
            self.pruned_through = through;
        }
        Ok(self.pruned_through)
    }

    /// Highest height pruned so far (0: none).
    pub(crate) fn pruned_through(&self) -> u64 {
        self.pruned_through
    }

    /// See `DaRequest::GetShare`, on `height`'s square.
    pub(crate) fn share(
        &self,
        square: &ExtendedSquare,
        height: u64,
        position: SharePosition,
    ) -> Result<ShareWithProof, DaError> {
        let share = share_of(square, height, position)?;
        self.check_not_withheld(square.original_width(), height, share.row, share.col)?;
        Ok(share)
    }

    /// Fault injection (`DaConfig::withhold_parity`): `Withheld` for cell `(row, col)` of
    /// `height`'s square (original width `k`) when it lies outside the original quadrant.
    fn check_not_withheld(&self, k: usize, height: u64, row: u64, col: u64) -> Result<(), DaError> {
        let k = k as u64;
        if self.withhold_parity && (row >= k || col >= k) {
            return Err(DaError::Withheld { height, row, col });
        }
        Ok(())
    }

    /// Highest height whose data is stored.
    pub(crate) fn stored_height(&self) -> u64 {
        self.heights.stored_height()
    }
}

/// Rebuilds pruned `height` (root `data_root`, keeping `kept`) from its own rows and the
/// rows peers gave (`given`); see [`rebuild_from_rows`].
pub(crate) fn rebuild_pruned(
    builder: &SquareBuilder,
    height: u64,
    data_root: Hash,
    kept: PrunedHeight,
    given: Vec<HeldShares>,
) -> Result<ExtendedSquare, DaError> {
    rebuild_from_rows(builder, height, data_root, kept.roots, kept.rows, given)
}

/// Rebuilds the square of `height` whose checked axis roots are `roots` (under
/// `data_root`) from rows of its own (`own`, a pruned height's held rows; none for a
/// proposal) and the rows peers gave (`given`): rows for another height, root or width are
/// ignored, every row is extended from its first `k` shares and dropped unless its root is
/// the committed row root, and `k` distinct verified rows rebuild the square, checked
/// against `data_root`. A row a peer lied about can only be dropped, never change the
/// result. Shared by the restore of a pruned height and the reassembly of a proposal, so
/// both trust peers' rows exactly as far.
pub(crate) fn rebuild_from_rows(
    builder: &SquareBuilder,
    height: u64,
    data_root: Hash,
    roots: AxisRoots,
    own: Vec<HeldRow>,
    given: Vec<HeldShares>,
) -> Result<ExtendedSquare, DaError> {
    let k = roots.original_width();
    let width = roots.width();
    let codec = Codec::new(builder.codec, k).map_err(storage)?;
    let mut partial = PartialSquare::new(k).map_err(storage)?;
    let mut verified = vec![false; width];
    let mut verified_count = 0usize;
    let theirs = given
        .into_iter()
        .filter(|held| {
            let fits = held.height == height
                && held.data_root == data_root
                && held.original_width == k as u64;
            if !fits {
                tracing::debug!(
                    height,
                    given_height = held.height,
                    given_root = %held.data_root,
                    given_width = held.original_width,
                    "ignored shares for another height, root or width"
                );
            }
            fits
        })
        .flat_map(|held| held.rows);
    let mut candidates = own.into_iter().chain(theirs).filter_map(|row| {
        let index = usize::try_from(row.index).ok().filter(|i| *i < width);
        if index.is_none() {
            tracing::debug!(height, row = row.index, "dropped a row outside the square");
        }
        index.map(|index| (index, row))
    });
    // Another copy of a row already in a round's batch, kept for a later round: the copy
    // in the batch may be the wrong one, and then this one is still needed.
    let mut deferred = VecDeque::new();
    // k full rows give every column k shares: enough. Each round checks, on every thread,
    // just as many new rows as are still missing, so honest rows take one round and each
    // wrong one costs only its own check.
    while verified_count < k {
        let needed = k - verified_count;
        let mut in_batch = vec![false; width];
        let mut batch = Vec::with_capacity(needed);
        let mut again = Vec::new();
        while batch.len() < needed {
            let Some((index, row)) = deferred.pop_front().or_else(|| candidates.next()) else {
                break;
            };
            if verified[index] {
                continue;
            }
            if in_batch[index] {
                again.push((index, row));
                continue;
            }
            in_batch[index] = true;
            batch.push((index, row));
        }
        // Only after the round, so a round never meets its own copies again.
        deferred.extend(again);
        if batch.is_empty() {
            break;
        }
        // A few rows per thread at a time: each rebuilt row is copied into the square and
        // dropped before the next window, so memory stays small and warm.
        let threads = builder.threads.max(1);
        for window in batch.chunks(threads * ROWS_PER_THREAD_AT_ONCE) {
            let per_thread = window.len().div_ceil(threads);
            let checked = parallel::run(window.chunks(per_thread).collect(), |rows| {
                rows.iter()
                    .map(|(index, row)| {
                        (
                            *index,
                            check_line(&codec, &roots, Axis::Row, *index, &row.shares),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            for (index, checked) in checked.into_iter().flatten() {
                match checked {
                    Ok(extended) => {
                        for (col, share) in extended.shares().chunks_exact(SHARE_SIZE).enumerate() {
                            partial.insert(index, col, share).map_err(storage)?;
                        }
                        verified[index] = true;
                        verified_count += 1;
                    }
                    Err(reason) => {
                        tracing::debug!(height, row = index, "dropped a row: {reason}");
                    }
                }
            }
        }
    }
    if verified_count < k {
        return Err(DaError::NotEnoughShares {
            height,
            rows: verified_count as u64,
            needed: k as u64,
        });
    }
    let square = ExtendedSquare::repair(builder.codec, partial, &roots, builder.threads).map_err(
        |error| match error {
            RepairError::BadEncoding(proof) => DaError::BadEncoding { height, proof },
            error => storage(format!(
                "cannot rebuild height {height} from verified rows: {error}"
            )),
        },
    )?;
    if square.data_root() != data_root {
        return Err(storage(format!(
            "the square rebuilt for height {height} does not match its root {data_root}"
        )));
    }
    Ok(square)
}

/// Rows each thread checks per window of [`rebuild_from_rows`].
const ROWS_PER_THREAD_AT_ONCE: usize = 4;

/// See `DaRequest::Disperse`: `body`'s square, proposed for `height`, cut into the rows of
/// each of `holders` holders, for the proposer to send each validator its own part rather
/// than the whole body.
pub(crate) fn disperse(
    builder: &SquareBuilder,
    height: u64,
    body: &[Blob],
    holders: u32,
) -> Result<Dispersal, DaError> {
    if holders == 0 {
        // Nobody would hold a row, so the body could never be reassembled.
        return Err(storage(format!(
            "cannot disperse the body of height {height} among 0 holders: nobody would hold \
             a row"
        )));
    }
    // Limited as `Commit` is: this is a proposal, not yet a committed block.
    let (_, square) = builder.build(body, true)?;
    let data_root = square.data_root();
    let original_width = square.original_width() as u64;
    let parts = (0..holders)
        .map(|index| {
            let holder = ShareHolder {
                index,
                count: holders,
            };
            Ok(HeldShares {
                height,
                data_root,
                original_width,
                rows: held_rows(&square, height, holder)?,
                columns: held_columns(&square, height, holder),
            })
        })
        .collect::<Result<Vec<_>, DaError>>()?;
    Ok(Dispersal {
        roots: SquareRoots {
            height,
            data_root,
            row_roots: square.row_roots().to_vec(),
            col_roots: square.col_roots().to_vec(),
        },
        parts,
    })
}

/// See `DaRequest::CheckRows`: `Ok` when every row of `rows`, a peer's part of a proposed
/// square, is the committed row of the square `roots` commits to, else `InvalidShares`
/// saying which row is wrong and how. Unlike [`reassemble`], which drops a wrong row, this
/// answers for the part as a whole, so a validator can tell a peer's part is bad.
pub(crate) fn check_rows(
    builder: &SquareBuilder,
    roots: SquareRoots,
    rows: &HeldShares,
) -> Result<(), DaError> {
    let (height, data_root) = (roots.height, roots.data_root);
    let roots = checked_roots(roots)?;
    let (k, width) = (roots.original_width(), roots.width());
    if (rows.height, rows.data_root, rows.original_width) != (height, data_root, k as u64) {
        return Err(DaError::InvalidShares(format!(
            "rows of height {}, root {}, width {} checked against the roots of height \
             {height}, root {data_root}, width {k}",
            rows.height, rows.data_root, rows.original_width
        )));
    }
    // The cheap checks first, so a malformed part costs no extension.
    let line_bytes = k * SHARE_SIZE;
    for (axis, lines) in [(Axis::Row, &rows.rows), (Axis::Col, &rows.columns)] {
        let mut previous: Option<u64> = None;
        for line in lines {
            let index = line.index;
            let name = axis.name();
            if index >= width as u64 {
                return Err(DaError::InvalidShares(format!(
                    "{name} {index} of height {height} is outside the {width}-wide square"
                )));
            }
            if let Some(previous) = previous.filter(|previous| index <= *previous) {
                return Err(DaError::InvalidShares(format!(
                    "{name} {index} of height {height} comes after {name} {previous}: lines \
                     must be given by increasing index, each once"
                )));
            }
            if line.shares.len() != line_bytes {
                return Err(DaError::InvalidShares(format!(
                    "{name} {index} of height {height} is {} bytes, not {line_bytes} ({k} \
                     shares)",
                    line.shares.len()
                )));
            }
            previous = Some(index);
        }
    }
    let codec = Codec::new(builder.codec, k).map_err(storage)?;
    // A contiguous run of lines per thread; each extended line is dropped once checked, so
    // memory stays at one line per thread. The first wrong line, rows first, is reported.
    let lines: Vec<(Axis, &HeldRow)> = (rows.rows.iter().map(|row| (Axis::Row, row)))
        .chain(rows.columns.iter().map(|col| (Axis::Col, col)))
        .collect();
    let threads = builder.threads.max(1);
    let per_thread = lines.len().div_ceil(threads).max(1);
    let verdicts = parallel::run(lines.chunks(per_thread).collect(), |run| {
        run.iter().try_for_each(|(axis, line)| {
            // Below `width` (checked above), so the conversion is exact.
            check_line(&codec, &roots, *axis, line.index as usize, &line.shares)
                .map(drop)
                .map_err(|reason| {
                    DaError::InvalidShares(format!(
                        "{} {} of height {height}: {reason}",
                        axis.name(),
                        line.index
                    ))
                })
        })
    });
    verdicts.into_iter().collect()
}

/// [`reassemble_committed`]'s body alone, as tests compare it.
#[cfg(test)]
fn reassemble(
    builder: &SquareBuilder,
    roots: SquareRoots,
    rows: Vec<HeldShares>,
) -> Result<Arc<Vec<Blob>>, DaError> {
    reassemble_committed(builder, roots, rows).map(|(body, _)| body)
}

/// See `DaRequest::Reassemble`: the proposed body `roots` commits to, rebuilt from rows
/// gathered from peers. Each row is checked against its root and a wrong one dropped (see
/// [`rebuild_from_rows`]), so nothing but that body can come out. With it, the body's
/// commitment and square when the body is within the limit a proposal's must be (`None`
/// beyond it: `Commit` would refuse such a body, so its square must not stand in for that
/// check).
pub(crate) fn reassemble_committed(
    builder: &SquareBuilder,
    roots: SquareRoots,
    rows: Vec<HeldShares>,
) -> Result<Committed, DaError> {
    let (height, data_root) = (roots.height, roots.data_root);
    let roots = checked_roots(roots)?;
    // No rows of its own: a proposal is only held, in parts, by the validators.
    let square = Arc::new(rebuild_from_rows(
        builder,
        height,
        data_root,
        roots,
        Vec::new(),
        rows,
    )?);
    let body = BodySource::Square(Arc::clone(&square)).parse(height)?;
    let body_size = encoded_body_len(&body);
    let committed =
        (body_size <= builder.max_body_bytes).then(|| (commitment_of(&square, body_size), square));
    Ok((body, committed))
}

/// A rebuilt body, with its commitment and square when a proposal may carry it.
pub(crate) type Committed = (
    Arc<Vec<Blob>>,
    Option<(DataCommitment, Arc<ExtendedSquare>)>,
);

/// `roots` as [`AxisRoots`], once they hash to their `data_root`: a peer's claim about a
/// proposed square is trusted no further than that.
fn checked_roots(roots: SquareRoots) -> Result<AxisRoots, DaError> {
    let (height, data_root) = (roots.height, roots.data_root);
    AxisRoots::new(roots.row_roots, roots.col_roots, &data_root).map_err(|error| {
        DaError::InvalidShares(format!("the roots given for height {height}: {error}"))
    })
}

/// The rows of `square` that `holder` keeps at `height`, each as its first `k` shares.
pub(crate) fn held_rows(
    square: &ExtendedSquare,
    height: u64,
    holder: ShareHolder,
) -> Result<Vec<HeldRow>, DaError> {
    let k = square.original_width();
    holder
        .rows(height, square.width() as u64)
        .into_iter()
        .map(|index| {
            let shares = usize::try_from(index)
                .ok()
                .and_then(|index| square.row(index))
                .and_then(|row| row.get(..k * SHARE_SIZE))
                .ok_or_else(|| storage(format!("row {index} of height {height} is missing")))?;
            Ok(HeldRow {
                index,
                shares: shares.to_vec(),
            })
        })
        .collect()
}

/// The columns of `square` that `holder` is sent with a proposal at `height` (the same
/// indices as its rows), each as its first `k` shares, top to bottom.
pub(crate) fn held_columns(
    square: &ExtendedSquare,
    height: u64,
    holder: ShareHolder,
) -> Vec<HeldRow> {
    let k = square.original_width();
    holder
        .rows(height, square.width() as u64)
        .into_iter()
        .map(|index| {
            let mut shares = Vec::with_capacity(k * SHARE_SIZE);
            for row in 0..k {
                // Inside the square: `index` is below its width, `row` below `k`.
                if let Some(share) = square.share(row, index as usize) {
                    shares.extend_from_slice(share);
                }
            }
            HeldRow { index, shares }
        })
        .collect()
}

/// Line `index` of `axis` extended from its first `k` shares, if it is the committed line
/// (rows and columns are extended and hashed alike).
fn check_line(
    codec: &Codec,
    roots: &AxisRoots,
    axis: Axis,
    index: usize,
    left: &[u8],
) -> Result<ExtendedRow, String> {
    let extended = ExtendedRow::extend(codec, left).map_err(|error| error.to_string())?;
    if roots.root(axis, index) != Some(extended.root()) {
        return Err("it does not match its root".to_string());
    }
    Ok(extended)
}

/// The `(row, col)` that `position` names in a `width`-wide square of `height`.
fn cell_of(width: u64, height: u64, position: SharePosition) -> Result<(u64, u64), DaError> {
    let cell = match position {
        SharePosition::Index(index) => {
            if index >= width * width {
                return Err(DaError::ShareOutOfRange {
                    height,
                    index,
                    count: width * width,
                });
            }
            (index / width, index % width)
        }
        SharePosition::Cell { row, col } => {
            if row >= width || col >= width {
                return Err(DaError::CellOutOfRange {
                    height,
                    row,
                    col,
                    rows: width,
                    cols: width,
                });
            }
            (row, col)
        }
    };
    Ok(cell)
}

/// Puts `value` last in `cache` under `key` (replacing an entry of that key), dropping the
/// oldest beyond `len`.
fn keep_latest<K: PartialEq, V>(cache: &mut VecDeque<(K, V)>, len: usize, key: K, value: V) {
    cache.retain(|(k, _)| *k != key);
    if cache.len() >= len {
        cache.pop_front();
    }
    cache.push_back((key, value));
}

/// Share `position` of `height`'s square with its proof.
fn share_of(
    square: &ExtendedSquare,
    height: u64,
    position: SharePosition,
) -> Result<ShareWithProof, DaError> {
    let width = square.width() as u64;
    let (row, col) = cell_of(width, height, position)?;
    // In range, so both conversions and lookups succeed.
    let (r, c) = (row as usize, col as usize);
    let out_of_range = || DaError::CellOutOfRange {
        height,
        row,
        col,
        rows: width,
        cols: width,
    };
    let share = square.share(r, c).ok_or_else(out_of_range)?.to_vec();
    let proof = square.prove(r, c, Axis::Row).ok_or_else(out_of_range)?;
    let data_root = square.data_root();
    Ok(served(height, width, (row, col), share, data_root, proof))
}

/// Share `(row, col)` of `height`'s `width`-wide square, proven by `proof`, as served.
fn served(
    height: u64,
    width: u64,
    (row, col): (u64, u64),
    share: Vec<u8>,
    data_root: Hash,
    proof: ShareProof,
) -> ShareWithProof {
    ShareWithProof {
        height,
        index: row * width + col,
        row,
        col,
        share,
        data_root,
        proof: DataProof::Square(proof),
    }
}

/// See `DaRequest::GetNamespace`, on `height`'s square.
pub(crate) fn namespace_of(
    square: &ExtendedSquare,
    height: u64,
    namespace: Namespace,
) -> Result<NamespaceData, DaError> {
    let data_root = square.data_root();
    let proof = layout::prove_namespace(square, namespace).map_err(|error| {
        storage(format!(
            "the stored square of height {height} has no valid layout: {error}"
        ))
    })?;
    let blobs = proof.verify(&data_root, namespace).map_err(|error| {
        storage(format!(
            "the namespace proof of height {height} does not verify: {error}"
        ))
    })?;
    Ok(NamespaceData {
        height,
        data_root,
        blobs,
        proof: Some(proof),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::BadEncodingCheck;

    fn builder() -> SquareBuilder {
        SquareBuilder {
            codec: CodecKind::default(),
            threads: 1,
            max_body_bytes: 1 << 20,
            bad_encoding: false,
        }
    }

    #[test]
    fn a_bad_encoding_builder_commits_squares_whose_repair_proves_it() {
        let bad = SquareBuilder {
            bad_encoding: true,
            ..builder()
        };
        let (honest, _) = builder().build(&body(), true).unwrap();
        let (commitment, square) = bad.build(&body(), true).unwrap();
        assert_ne!(commitment.data_root, honest.data_root);
        // Deterministic, so every faulty validator agrees on the bad root.
        assert_eq!(bad.build(&body(), true).unwrap().0, commitment);
        // Rebuilding from parity shares alone finds the bad line and proves it.
        let k = square.original_width();
        let mut partial = PartialSquare::new(k).unwrap();
        for row in 0..2 * k {
            for col in 0..2 * k {
                if row >= k || col >= k {
                    let proof = square.prove(row, col, Axis::Row).unwrap();
                    partial
                        .insert_proven(row, col, square.share(row, col).unwrap(), proof)
                        .unwrap();
                }
            }
        }
        let roots = square.axis_roots().clone();
        match ExtendedSquare::repair(CodecKind::default(), partial, &roots, 1) {
            Err(RepairError::BadEncoding(proof)) => {
                proof
                    .verify(&commitment.data_root, CodecKind::default())
                    .unwrap();
            }
            other => panic!("expected a bad-encoding proof, got {other:?}"),
        }
    }

    fn body() -> Vec<Blob> {
        vec![
            Blob {
                namespace: Namespace(*b"aaa-roll"),
                data: vec![7; 1500],
            },
            Blob {
                namespace: Namespace::EXECUTION,
                data: vec![1; 700],
            },
        ]
    }

    #[test]
    fn commitment_is_deterministic_and_sized() {
        let (a, square) = builder().build(&body(), true).unwrap();
        let (b, _) = builder().build(&body(), true).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.body_size,
            lamina_primitives::Block::encode_body(&body()).len() as u64
        );
        // 36 bytes of table and 2200 of data: 5 shares, a 4 × 4 square extended to 8 × 8.
        assert_eq!(square.original_width(), 4);
        assert_eq!(a.share_count, 64);
        let too_big = SquareBuilder {
            max_body_bytes: 100,
            ..builder()
        };
        assert!(matches!(
            too_big.build(&body(), true),
            Err(DaError::BodyTooLarge { limit: 100, .. })
        ));
        assert!(too_big.build(&body(), false).is_ok());
    }

    #[test]
    fn stores_serves_shares_and_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut scheme = ReedSolomon::open(&db, builder(), false).unwrap();
        let (commitment, square) = builder().build(&body(), false).unwrap();
        let square = Arc::new(square);
        assert_eq!(
            scheme.store(3, Arc::clone(&square)).unwrap(),
            Stored::Written
        );
        assert_eq!(
            scheme.store(3, Arc::clone(&square)).unwrap(),
            Stored::AlreadyStored
        );
        assert!(scheme.is_available(3, commitment.data_root));
        assert!(!scheme.is_available(4, commitment.data_root));

        // The square rebuilt from storage is the one stored.
        let (original, root) = scheme.original_at(3).unwrap();
        assert_eq!(root, commitment.data_root);
        assert_eq!(builder().rebuild(&original).unwrap(), *square);

        for (row, col) in [(0, 0), (7, 7), (2, 5)] {
            let share = share_of(&square, 3, SharePosition::Cell { row, col }).unwrap();
            assert_eq!(share.index, row * 8 + col);
            assert!(share
                .proof
                .verify(&commitment.data_root, row, col, &share.share));
            let by_index = share_of(&square, 3, SharePosition::Index(row * 8 + col)).unwrap();
            assert_eq!(by_index, share);
        }
        assert!(matches!(
            share_of(&square, 3, SharePosition::Cell { row: 8, col: 0 }),
            Err(DaError::CellOutOfRange { rows: 8, .. })
        ));
        assert!(matches!(
            share_of(&square, 3, SharePosition::Index(64)),
            Err(DaError::ShareOutOfRange { count: 64, .. })
        ));

        let rollup = namespace_of(&square, 3, Namespace(*b"aaa-roll")).unwrap();
        assert_eq!(rollup.blobs, vec![vec![7; 1500]]);
        let proof = rollup.proof.unwrap();
        assert_eq!(
            proof.verify(&commitment.data_root, Namespace(*b"aaa-roll")),
            Ok(vec![vec![7; 1500]])
        );
        let none = namespace_of(&square, 3, Namespace(*b"zzz-none")).unwrap();
        assert!(none.blobs.is_empty());
        assert_eq!(
            none.proof
                .unwrap()
                .verify(&commitment.data_root, Namespace(*b"zzz-none")),
            Ok(vec![])
        );

        // A withholding node serves the original quadrant only.
        let withholding = ReedSolomon::open(&db, builder(), true).unwrap();
        let cell = |row, col| SharePosition::Cell { row, col };
        assert!(withholding.share(&square, 3, cell(3, 3)).is_ok());
        assert_eq!(
            withholding.share(&square, 3, cell(3, 4)),
            Err(DaError::Withheld {
                height: 3,
                row: 3,
                col: 4
            })
        );
        assert!(scheme.share(&square, 3, cell(7, 7)).is_ok());
        drop(withholding);

        // Reopened, the scheme remembers what it stored.
        drop(scheme);
        let scheme = ReedSolomon::open(&db, builder(), false).unwrap();
        assert_eq!(scheme.stored_height(), 3);
        assert!(scheme.cached(3).is_none());
        assert!(matches!(
            scheme.original_at(9),
            Err(DaError::HeightNotFound(9))
        ));
    }

    /// A scheme over a fresh temporary database.
    fn temporary_scheme() -> ReedSolomon {
        let db = sled::Config::new().temporary(true).open().unwrap();
        ReedSolomon::open(&db, builder(), false).unwrap()
    }

    /// `body` stored at `height` of `scheme` then pruned to `holder`'s rows; its square.
    fn stored_and_pruned(
        scheme: &mut ReedSolomon,
        height: u64,
        body: &[Blob],
        holder: ShareHolder,
    ) -> Arc<ExtendedSquare> {
        let (_, square) = builder().build(body, false).unwrap();
        let square = Arc::new(square);
        scheme.store(height, Arc::clone(&square)).unwrap();
        // As the actor does: pruning does not rely on the square being in memory.
        scheme.squares.clear();
        scheme.prune_height(height, &square, holder).unwrap();
        square
    }

    /// What each of `count` holders keeps of `body` at `height`.
    fn holders_shares(height: u64, body: &[Blob], count: u32) -> Vec<HeldShares> {
        (0..count)
            .map(|index| {
                let mut scheme = temporary_scheme();
                stored_and_pruned(&mut scheme, height, body, ShareHolder { index, count });
                scheme.held_shares(height).unwrap()
            })
            .collect()
    }

    /// Rebuilds pruned `height` of `scheme` from `given`.
    fn rebuild(
        scheme: &ReedSolomon,
        height: u64,
        given: Vec<HeldShares>,
    ) -> Result<ExtendedSquare, DaError> {
        let (kept, root) = scheme.pruned_at(height)?;
        rebuild_pruned(&builder(), height, root, kept, given)
    }

    /// Copies of `part` addressed to something else: another height, another data root,
    /// and a square of another width.
    fn misaddressed(part: &HeldShares) -> [HeldShares; 3] {
        let mut elsewhere = part.clone();
        elsewhere.height += 1;
        let mut other_root = part.clone();
        other_root.data_root = Hash::ZERO;
        let mut wide = part.clone();
        wide.original_width = 8;
        [elsewhere, other_root, wide]
    }

    fn body_of(square: &ExtendedSquare) -> Vec<Blob> {
        layout::parse(&square.original_data()).unwrap()
    }

    #[test]
    fn the_latest_committed_bodies_are_found_by_their_digest() {
        let mut scheme = temporary_scheme();
        let bodies: Vec<Vec<Blob>> = (0..3u8)
            .map(|i| {
                vec![Blob {
                    namespace: Namespace(*b"cache-ns"),
                    data: vec![i; 600],
                }]
            })
            .collect();
        let digests: Vec<Hash> = bodies.iter().map(|body| body_digest(body)).collect();
        for body in &bodies {
            let (commitment, square) = builder().build(body, true).unwrap();
            scheme.remember_proposed(body_digest(body), commitment, Arc::new(square));
        }
        // Only the last two are kept; each is the square of its own body.
        assert!(scheme.proposed(&digests[0]).is_none());
        for (body, digest) in bodies.iter().zip(&digests).skip(1) {
            let (commitment, square) = scheme.proposed(digest).unwrap();
            let (expected, _) = builder().build(body, true).unwrap();
            assert_eq!(commitment, expected);
            assert_eq!(square.data_root(), expected.data_root);
        }
        assert_ne!(digests[1], digests[2]);
    }

    #[test]
    fn prune_keeps_exactly_the_holders_rows_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let holder = ShareHolder { index: 1, count: 3 };
        let (square, root) = {
            let db = sled::open(dir.path()).unwrap();
            let mut scheme = ReedSolomon::open(&db, builder(), false).unwrap();
            let square = stored_and_pruned(&mut scheme, 5, &body(), holder);
            let root = square.data_root();
            assert_eq!(scheme.pruned_through(), 5);
            db.flush().unwrap();
            (square, root)
        };
        let db = sled::open(dir.path()).unwrap();
        let scheme = ReedSolomon::open(&db, builder(), false).unwrap();
        assert_eq!(scheme.pruned_through(), 5);
        assert_eq!(scheme.stored_height(), 5);
        assert!(scheme.is_available(5, root));
        assert!(db
            .open_tree(ORIGINALS_TREE)
            .unwrap()
            .get(5u64.to_be_bytes())
            .unwrap()
            .is_none());
        assert_eq!(
            scheme.unpruned_through(u64::MAX).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(scheme.original_at(5), Err(DaError::Pruned { height: 5 }));
        assert!(matches!(
            scheme.body_source(5),
            Err(DaError::Pruned { height: 5 })
        ));

        // Rows 2 and 5 of the 8: (row + 5) mod 3 = 1.
        let (kept, kept_root) = scheme.pruned_at(5).unwrap();
        assert_eq!(kept_root, root);
        assert_eq!(kept.roots, *square.axis_roots());
        let k = square.original_width();
        let expected: Vec<HeldRow> = [2u64, 5]
            .into_iter()
            .map(|index| HeldRow {
                index,
                shares: square.row(index as usize).unwrap()[..k * SHARE_SIZE].to_vec(),
            })
            .collect();
        assert_eq!(holder.rows(5, 8), vec![2, 5]);
        assert_eq!(kept.rows, expected);
        let held = scheme.held_shares(5).unwrap();
        assert_eq!(
            held,
            HeldShares {
                columns: Vec::new(),
                height: 5,
                data_root: root,
                original_width: 4,
                rows: expected,
            }
        );
        assert_eq!(scheme.held_shares(6), Err(DaError::HeightNotFound(6)));
    }

    #[test]
    fn an_unpruned_height_gives_its_original_rows() {
        let mut scheme = temporary_scheme();
        let (_, square) = builder().build(&body(), false).unwrap();
        scheme.store(2, Arc::new(square.clone())).unwrap();
        let held = scheme.held_shares(2).unwrap();
        assert_eq!(held.original_width, 4);
        assert_eq!(
            held.rows.iter().map(|row| row.index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        // Enough by themselves to rebuild the height.
        let mut pruned = temporary_scheme();
        stored_and_pruned(&mut pruned, 2, &body(), ShareHolder { index: 0, count: 0 });
        assert!(pruned.pruned_at(2).unwrap().0.rows.is_empty());
        assert_eq!(rebuild(&pruned, 2, vec![held]).unwrap(), square);
    }

    #[test]
    fn restores_from_enough_holders_and_never_from_wrong_rows() {
        let body = body();
        let height = 9;
        let shares = holders_shares(height, &body, 4);
        let mut scheme = temporary_scheme();
        let square = stored_and_pruned(
            &mut scheme,
            height,
            &body,
            ShareHolder { index: 0, count: 4 },
        );

        // All four, and any two of the four (2 rows each, k = 4).
        assert_eq!(rebuild(&scheme, height, shares.clone()).unwrap(), *square);
        for a in 0..4 {
            for b in a + 1..4 {
                let given = vec![shares[a].clone(), shares[b].clone()];
                let rebuilt = rebuild(&scheme, height, given).unwrap();
                assert_eq!(body_of(&rebuilt), body);
            }
        }
        // Alone, holder 0 has 2 rows of the 4 needed.
        assert_eq!(
            rebuild(&scheme, height, vec![]),
            Err(DaError::NotEnoughShares {
                height,
                rows: 2,
                needed: 4
            })
        );

        // A tampered row is dropped: enough others still rebuild the body, too few fail.
        let mut tampered = shares[1].clone();
        tampered.rows[0].shares[3] ^= 1;
        let mut given = shares.clone();
        given[1] = tampered.clone();
        assert_eq!(body_of(&rebuild(&scheme, height, given).unwrap()), body);
        assert_eq!(
            rebuild(&scheme, height, vec![tampered.clone()]),
            Err(DaError::NotEnoughShares {
                height,
                rows: 3,
                needed: 4
            })
        );
        // A right row given after a wrong copy of it still counts.
        let given = vec![tampered, shares[1].clone()];
        assert!(rebuild(&scheme, height, given).is_ok());

        // Rows of the wrong size, outside the square, or for another height or root are
        // not used.
        let mut short = shares[1].clone();
        short.rows[0].shares.pop();
        let mut outside = shares[1].clone();
        outside.rows[0].index = 8;
        let [elsewhere, other_root, wide] = misaddressed(&shares[2]);
        for wrong in [short, outside, elsewhere, other_root, wide] {
            let given = vec![wrong, shares[0].clone()];
            assert!(matches!(
                rebuild(&scheme, height, given),
                Err(DaError::NotEnoughShares { height: 9, .. })
            ));
        }
    }

    #[test]
    fn a_pruned_height_serves_its_held_rows_only() {
        let mut scheme = temporary_scheme();
        let height = 4;
        let holder = ShareHolder { index: 0, count: 2 };
        let square = stored_and_pruned(&mut scheme, height, &body(), holder);
        let root = square.data_root();
        let cell = |row, col| SharePosition::Cell { row, col };
        // Rows 0, 2, 4, 6 are held: (row + 4) mod 2 = 0.
        for (row, col) in [(0, 0), (2, 7), (6, 3), (4, 4)] {
            let share = scheme.held_share(height, cell(row, col)).unwrap();
            assert_eq!(
                share,
                share_of(&square, height, cell(row, col)).unwrap(),
                "({row}, {col})"
            );
            assert!(share.proof.verify(&root, row, col, &share.share));
            let by_index = scheme
                .held_share(height, SharePosition::Index(row * 8 + col))
                .unwrap();
            assert_eq!(by_index, share);
        }
        assert_eq!(
            scheme.held_share(height, cell(1, 0)),
            Err(DaError::Pruned { height })
        );
        assert!(matches!(
            scheme.held_share(height, cell(8, 0)),
            Err(DaError::CellOutOfRange { rows: 8, .. })
        ));
        assert!(matches!(
            scheme.held_share(height, SharePosition::Index(64)),
            Err(DaError::ShareOutOfRange { count: 64, .. })
        ));

        // Rebuilt from peers, the square is kept in memory and serves every cell.
        let given = holders_shares(height, &body(), 2);
        let rebuilt = Arc::new(rebuild(&scheme, height, given).unwrap());
        scheme.remember_restored(height, rebuilt);
        let square = scheme.cached(height).unwrap();
        let share = scheme.share(&square, height, cell(1, 0)).unwrap();
        assert!(share.proof.verify(&root, 1, 0, &share.share));
        let Ok(BodySource::Square(_)) = scheme.body_source(height) else {
            panic!("expected the rebuilt square as the body's source");
        };
        assert_eq!(
            *scheme.body_source(height).unwrap().parse(height).unwrap(),
            body()
        );
        // It stays pruned on disk.
        assert_eq!(scheme.original_at(height), Err(DaError::Pruned { height }));
    }

    #[test]
    fn a_badly_encoded_pruned_square_is_an_error_not_a_wrong_answer() {
        let bad = SquareBuilder {
            bad_encoding: true,
            ..builder()
        };
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut scheme = ReedSolomon::open(&db, bad, false).unwrap();
        let (_, square) = bad.build(&body(), false).unwrap();
        scheme.store(1, Arc::new(square.clone())).unwrap();
        // Height 1, one holder: every row held, row 4 (= k) being the altered one.
        scheme
            .prune_height(1, &square, ShareHolder { index: 0, count: 1 })
            .unwrap();
        scheme.squares.clear();
        assert!(matches!(
            scheme.held_share(1, SharePosition::Cell { row: 4, col: 5 }),
            Err(DaError::Storage(_))
        ));
        let (kept, root) = scheme.pruned_at(1).unwrap();
        assert!(matches!(
            rebuild_pruned(&bad, 1, root, kept, vec![]),
            Err(DaError::BadEncoding { height: 1, proof }) if proof.verify(&root, bad.codec).is_ok()
        ));
    }

    /// The reason of an `InvalidShares`, failing the test on anything else.
    fn invalid_reason<T: std::fmt::Debug>(result: Result<T, DaError>) -> String {
        match result {
            Err(DaError::InvalidShares(reason)) => reason,
            other => panic!("expected InvalidShares, got {other:?}"),
        }
    }

    #[test]
    fn a_dispersed_body_checks_part_by_part_and_any_two_parts_reassemble_it() {
        let (body, height) = (body(), 9);
        let dispersal = disperse(&builder(), height, &body, 4).unwrap();
        let roots = dispersal.roots.clone();
        let (commitment, square) = builder().build(&body, true).unwrap();
        assert_eq!(roots.height, height);
        assert_eq!(roots.data_root, commitment.data_root);
        assert_eq!(roots.row_roots, square.row_roots());
        assert_eq!(roots.col_roots, square.col_roots());

        // Each holder gets exactly its rows, as it would keep them after pruning, and the
        // columns of the same indices, each its first k shares top to bottom.
        assert_eq!(dispersal.parts.len(), 4);
        let rows_only: Vec<HeldShares> = (dispersal.parts.iter())
            .map(|part| HeldShares {
                columns: Vec::new(),
                ..part.clone()
            })
            .collect();
        assert_eq!(rows_only, holders_shares(height, &body, 4));
        for (index, part) in (0u32..).zip(&dispersal.parts) {
            let holder = ShareHolder { index, count: 4 };
            assert_eq!(
                part.rows.iter().map(|row| row.index).collect::<Vec<_>>(),
                holder.rows(height, 8),
                "holder {index}"
            );
            for column in &part.columns {
                let expected: Vec<u8> = (0..4)
                    .flat_map(|row| square.share(row, column.index as usize).unwrap().to_vec())
                    .collect();
                assert_eq!(column.shares, expected, "holder {index}");
            }
            assert_eq!(part.columns.len(), part.rows.len(), "holder {index}");
            assert_eq!((part.height, part.original_width), (height, 4));
            assert_eq!(part.data_root, roots.data_root);
            check_rows(&builder(), roots.clone(), part).unwrap();
        }
        // Several threads check the same way.
        let threaded = SquareBuilder {
            threads: 3,
            ..builder()
        };
        let everything = HeldShares {
            rows: held_rows(&square, height, ShareHolder { index: 0, count: 1 }).unwrap(),
            ..dispersal.parts[0].clone()
        };
        check_rows(&threaded, roots.clone(), &everything).unwrap();

        // Any two parts of four (2 rows each, k = 4) reassemble the body; one does not.
        let parts = &dispersal.parts;
        let given = vec![parts[1].clone(), parts[3].clone()];
        assert_eq!(*reassemble(&builder(), roots.clone(), given).unwrap(), body);
        for a in 0..4 {
            for b in a + 1..4 {
                let given = vec![parts[a].clone(), parts[b].clone()];
                assert_eq!(*reassemble(&threaded, roots.clone(), given).unwrap(), body);
            }
            assert_eq!(
                reassemble(&builder(), roots.clone(), vec![parts[a].clone()]),
                Err(DaError::NotEnoughShares {
                    height,
                    rows: 2,
                    needed: 4
                })
            );
        }

        // No holders, or a body over the limit: nothing to disperse.
        assert!(matches!(
            disperse(&builder(), height, &body, 0),
            Err(DaError::Storage(reason)) if reason.contains("0 holders")
        ));
        let small = SquareBuilder {
            max_body_bytes: 100,
            ..builder()
        };
        assert!(matches!(
            disperse(&small, height, &body, 4),
            Err(DaError::BodyTooLarge { limit: 100, .. })
        ));
        // More holders than rows: some get none, and an empty part is no wrong part.
        let thin = disperse(&builder(), height, &body, 10).unwrap();
        assert!(thin.parts.iter().any(|part| part.rows.is_empty()));
        assert_eq!(
            thin.parts.iter().map(|part| part.rows.len()).sum::<usize>(),
            8
        );
        for part in &thin.parts {
            check_rows(&builder(), thin.roots.clone(), part).unwrap();
        }
    }

    #[test]
    fn a_badly_encoded_proposal_rebuilt_from_rows_is_proven_bad() {
        let bad = SquareBuilder {
            bad_encoding: true,
            ..builder()
        };
        let (body, height) = (body(), 9);
        let Dispersal { roots, parts } = disperse(&bad, height, &body, 4).unwrap();
        // The holder of row k (and column 0), where the altered share sits, sees its part
        // fail; every other line is consistent with its root.
        let (good, failed): (Vec<HeldShares>, Vec<HeldShares>) = parts
            .into_iter()
            .partition(|part| check_rows(&builder(), roots.clone(), part).is_ok());
        assert_eq!(failed.len(), 1);
        match reassemble(&builder(), roots.clone(), good) {
            Err(DaError::BadEncoding { height: at, proof }) => {
                assert_eq!(at, height);
                proof.verify(&roots.data_root, builder().codec).unwrap();
            }
            other => panic!("expected a bad-encoding proof, got {other:?}"),
        }
    }

    #[test]
    fn wrong_rows_fail_their_check_and_are_dropped_from_a_reassembly() {
        let (body, height) = (body(), 9);
        let Dispersal { roots, parts } = disperse(&builder(), height, &body, 4).unwrap();
        let check = |rows: &HeldShares| check_rows(&builder(), roots.clone(), rows);
        let reassembled = |rows: Vec<HeldShares>| reassemble(&builder(), roots.clone(), rows);

        // A tampered share: the part fails its check, naming the row; a reassembly drops
        // the row and still succeeds with enough good ones, else falls short.
        let mut tampered = parts[1].clone();
        tampered.rows[1].shares[3] ^= 1;
        let wrong_row = tampered.rows[1].index;
        let reason = invalid_reason(check(&tampered));
        assert!(
            reason.contains(&format!("row {wrong_row} ")) && reason.contains("root"),
            "{reason}"
        );
        let given = vec![tampered.clone(), parts[2].clone(), parts[3].clone()];
        assert_eq!(*reassembled(given).unwrap(), body);
        assert_eq!(
            reassembled(vec![tampered.clone(), parts[2].clone()]),
            Err(DaError::NotEnoughShares {
                height,
                rows: 3,
                needed: 4
            })
        );
        // The right copy of the row, given after the wrong one, still counts.
        let given = vec![tampered, parts[1].clone(), parts[2].clone()];
        assert_eq!(*reassembled(given).unwrap(), body);

        // A tampered column share fails the part's check too, naming the column.
        let mut tampered = parts[2].clone();
        tampered.columns[0].shares[SHARE_SIZE + 7] ^= 1;
        let wrong_column = tampered.columns[0].index;
        let reason = invalid_reason(check(&tampered));
        assert!(
            reason.contains(&format!("column {wrong_column} ")) && reason.contains("root"),
            "{reason}"
        );
        let mut out_of_order = parts[2].clone();
        out_of_order.columns.reverse();
        let reason = invalid_reason(check(&out_of_order));
        assert!(reason.contains("increasing index"), "{reason}");

        // Roots that do not hash to their data_root are refused by both.
        let mut forged = roots.clone();
        forged.row_roots[0] = Hash::digest(b"forged");
        let mut other_root = roots.clone();
        other_root.data_root = Hash::digest(b"other");
        let mut uneven = roots.clone();
        uneven.col_roots.pop();
        for bad in [forged, other_root, uneven] {
            let reason = invalid_reason(check_rows(&builder(), bad.clone(), &parts[0]));
            assert!(reason.contains("roots given for height 9"), "{reason}");
            invalid_reason(reassemble(&builder(), bad, parts.clone()));
        }

        // Parts for another height or root fail their check and are ignored when
        // reassembling.
        let [elsewhere, other, wide] = misaddressed(&parts[1]);
        for wrong in [&elsewhere, &other, &wide] {
            let reason = invalid_reason(check(wrong));
            assert!(reason.contains("checked against the roots"), "{reason}");
        }
        assert_eq!(
            reassembled(vec![parts[0].clone(), elsewhere, other, wide]),
            Err(DaError::NotEnoughShares {
                height,
                rows: 2,
                needed: 4
            })
        );

        // A row twice, rows out of order, outside the square or of the wrong size.
        let mut twice = parts[0].clone();
        twice.rows.push(twice.rows[1].clone());
        let mut reversed = parts[0].clone();
        reversed.rows.reverse();
        let mut outside = parts[0].clone();
        outside.rows[1].index = 8;
        let mut short = parts[0].clone();
        short.rows[0].shares.pop();
        for (wrong, expected) in [
            (twice, "each once"),
            (reversed, "each once"),
            (outside, "outside the 8-wide square"),
            (short, "is 2047 bytes, not 2048 (4 shares)"),
        ] {
            let reason = invalid_reason(check(&wrong));
            assert!(reason.contains(expected), "{reason}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn every_holders_rows_together_restore_the_body(
            sizes in proptest::collection::vec(0usize..3000, 0..5),
            fill in proptest::prelude::any::<u8>(),
            count in 1u32..=5,
            height in 1u64..1000,
        ) {
            let body: Vec<Blob> = sizes
                .iter()
                .enumerate()
                .map(|(i, size)| Blob {
                    namespace: Namespace([i as u8; 8]),
                    data: (0..*size).map(|j| (j as u8).wrapping_mul(fill)).collect(),
                })
                .collect();
            let shares = holders_shares(height, &body, count);
            let mut scheme = temporary_scheme();
            let holder = ShareHolder { index: 0, count };
            let square = stored_and_pruned(&mut scheme, height, &body, holder);
            let rebuilt = rebuild(&scheme, height, shares.clone()).unwrap();
            proptest::prop_assert_eq!(&rebuilt, &*square);
            proptest::prop_assert_eq!(body_of(&rebuilt), body.clone());
            // A proposer's dispersal gives each holder what it keeps once it prunes, and
            // together the parts check and reassemble the body.
            let dispersal = disperse(&builder(), height, &body, count).unwrap();
            let rows_only: Vec<HeldShares> = (dispersal.parts.iter())
                .map(|part| HeldShares { columns: Vec::new(), ..part.clone() })
                .collect();
            proptest::prop_assert_eq!(&rows_only, &shares);
            for part in &dispersal.parts {
                proptest::prop_assert_eq!(check_rows(&builder(), dispersal.roots.clone(), part), Ok(()));
            }
            let reassembled = reassemble(&builder(), dispersal.roots, dispersal.parts).unwrap();
            proptest::prop_assert_eq!(&*reassembled, &body);
        }
    }
}
