//! The `reed-solomon` scheme's state: a block body laid out as a `k × k` square of shares
//! ([`layout`](crate::square::layout)), extended to `2k × 2k` and committed through its
//! row and column roots. A node keeps each height's original data (the `k × k` quadrant)
//! and its `data_root`; the extended square is rebuilt from them on demand and the last
//! few are kept in memory, since share and namespace requests cluster on recent heights.
//!
//! The CPU-heavy part (extending a square) is [`SquareBuilder`], a copyable value the actor
//! runs off the async workers; everything here that touches storage is synchronous and
//! unit-testable without a runtime.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::heights::{storage, HeightStore, Stored};
use crate::square::layout::{self, LayoutError};
use crate::square::{Axis, CodecKind, ExtendedSquare, MAX_ORIGINAL_BYTES};
use crate::{SetupError, SHARE_SIZE};
use lamina_primitives::interfaces::da::{
    DaError, DataCommitment, DataProof, NamespaceData, SharePosition, ShareWithProof,
};
use lamina_primitives::{Blob, Hash, Namespace};

/// Tree holding each height's original data (the `k × k` quadrant), keyed by big-endian
/// height.
pub(crate) const ORIGINALS_TREE: &str = "da/rs/originals";
/// Tree holding each height's `data_root`.
pub(crate) const ROOTS_TREE: &str = "da/rs/roots";
/// Tree holding scalar metadata.
pub(crate) const META_TREE: &str = "da/rs/meta";

/// Extended squares kept in memory (each up to 4× the original data).
const SQUARE_CACHE_LEN: usize = 2;

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
        let width = square.width() as u64;
        let commitment = DataCommitment {
            data_root: square.data_root(),
            body_size,
            share_count: width * width,
        };
        Ok((commitment, square))
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

/// The stored data of the `reed-solomon` scheme.
#[derive(Debug)]
pub(crate) struct ReedSolomon {
    builder: SquareBuilder,
    heights: HeightStore,
    squares: VecDeque<(u64, Arc<ExtendedSquare>)>,
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
        Ok(ReedSolomon {
            builder,
            heights: HeightStore::open(db, ORIGINALS_TREE, ROOTS_TREE, META_TREE)?,
            squares: VecDeque::with_capacity(SQUARE_CACHE_LEN),
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
            .find(|(h, _)| *h == height)
            .map(|(_, square)| Arc::clone(square))
    }

    /// Keeps `height`'s square in memory, dropping the oldest beyond the cache's size.
    pub(crate) fn remember(&mut self, height: u64, square: Arc<ExtendedSquare>) {
        self.squares.retain(|(h, _)| *h != height);
        if self.squares.len() >= SQUARE_CACHE_LEN {
            self.squares.pop_front();
        }
        self.squares.push_back((height, square));
    }

    /// `height`'s stored original data and root, to rebuild its square from.
    pub(crate) fn original_at(&self, height: u64) -> Result<(sled::IVec, Hash), DaError> {
        self.heights.data_at(height)
    }

    /// See `DaRequest::GetShare`, on `height`'s square.
    pub(crate) fn share(
        &self,
        square: &ExtendedSquare,
        height: u64,
        position: SharePosition,
    ) -> Result<ShareWithProof, DaError> {
        let share = share_of(square, height, position)?;
        let k = square.original_width() as u64;
        if self.withhold_parity && (share.row >= k || share.col >= k) {
            return Err(DaError::Withheld {
                height,
                row: share.row,
                col: share.col,
            });
        }
        Ok(share)
    }

    /// Highest height whose data is stored.
    pub(crate) fn stored_height(&self) -> u64 {
        self.heights.stored_height()
    }
}

/// Share `position` of `height`'s square with its proof.
fn share_of(
    square: &ExtendedSquare,
    height: u64,
    position: SharePosition,
) -> Result<ShareWithProof, DaError> {
    let width = square.width() as u64;
    let (row, col) = match position {
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
    Ok(ShareWithProof {
        height,
        index: row * width + col,
        row,
        col,
        share,
        data_root: square.data_root(),
        proof: DataProof::Square(proof),
    })
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
    use crate::square::{PartialSquare, RepairError};

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
}
