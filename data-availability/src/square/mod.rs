//! The `reed-solomon` scheme's data square: 2D Reed-Solomon extension, row/column Merkle
//! commitments, share and bad-encoding proofs, repair from a partial square, and the layout
//! of a block body in the square with namespace proofs.
//!
//! The layout follows Celestia's rsmt2d. A body becomes `k × k` shares of [`SHARE_SIZE`]
//! bytes (`k` a power of two, see [`layout`]), the original quadrant Q0. Each original row
//! is extended with `k` parity shares (Q1); then each of the `2k` columns of that top half
//! is extended (Q0 → Q2, Q1 → Q3). Every row and every column of the `2k × 2k` result is a
//! codeword of one systematic `[2k, k]` Reed-Solomon code ([`codec`]), so any `k` shares of a
//! line rebuild it, and a quarter of the square, well chosen, rebuilds all of it.
//!
//! Commitment: each row and each column gets the RFC 9162 Merkle root over its `2k` shares
//! (leaf = [`merkle::leaf_hash`] of the share); `data_root` is the Merkle root over the
//! `4k` axis roots, rows first (`row_0 … row_{2k-1}, col_0 … col_{2k-1}`), the leaf of each
//! being `merkle::leaf_hash(root)`. The codec is part of the commitment: the two codecs give
//! different parity, so every node of a chain must use the same [`CodecKind`].
//!
//! Everything here is plain synchronous code; functions that take `threads` spread their
//! work over that many scoped threads and run inline with `threads = 1`.
//!
//! [`merkle::leaf_hash`]: lamina_primitives::merkle::leaf_hash

mod buffers;
pub mod codec;
pub(crate) mod extended;
mod hash;
pub mod layout;
pub(crate) mod line;
pub(crate) mod parallel;
mod proof;
pub mod repair;
mod roots;
mod tree;

pub use crate::SHARE_SIZE;
pub use buffers::release_spare_buffers;
pub use codec::{Codec, CodecError, CodecKind};
pub use extended::ExtendedSquare;
pub use lamina_primitives::da::{is_valid_width, Axis, MAX_ORIGINAL_BYTES, MAX_SQUARE_WIDTH};
pub use proof::{BadEncodingCheck, BadEncodingError, BadEncodingProof, ProvenShare, ShareProof};
pub use repair::{PartialSquare, RepairError};
pub use roots::AxisRoots;

/// The smallest power of two `k` with `k * k >= share_count` (at least 1): the width of
/// the square that holds `share_count` original shares. Not capped at
/// [`MAX_SQUARE_WIDTH`]; callers compare.
pub fn square_width_for(share_count: usize) -> usize {
    let mut k = 1usize;
    while k.saturating_mul(k) < share_count {
        k = k.saturating_mul(2);
    }
    k
}

/// Why a square could not be built or a share placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SquareError {
    /// `k` is not a power of two in `1..=MAX_SQUARE_WIDTH`.
    #[error("invalid square width {0}: must be a power of two between 1 and {MAX_SQUARE_WIDTH}")]
    InvalidWidth(usize),
    /// The original data is not `k * k * SHARE_SIZE` bytes.
    #[error("original data must be {expected} bytes, got {got}")]
    WrongDataLength {
        /// `k * k * SHARE_SIZE`.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A share is not [`SHARE_SIZE`] bytes.
    #[error("a share must be {SHARE_SIZE} bytes, got {0}")]
    WrongShareSize(usize),
    /// A coordinate is outside the square.
    #[error("share ({row}, {col}) is outside a square of width {width}")]
    OutOfRange {
        /// Row asked for.
        row: usize,
        /// Column asked for.
        col: usize,
        /// The square's width (`2k`).
        width: usize,
    },
    /// Row and column roots are not `2k` each for a valid `k`.
    #[error("expected as many row roots as column roots, 2k for a valid k; got {rows} and {cols}")]
    InvalidRoots {
        /// Row roots given.
        rows: usize,
        /// Column roots given.
        cols: usize,
    },
    /// The axis roots do not hash to the expected `data_root`.
    #[error("axis roots do not match data root {0}")]
    DataRootMismatch(lamina_primitives::Hash),
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Checks `k` for [`SquareError::InvalidWidth`].
pub(crate) fn check_width(k: usize) -> Result<(), SquareError> {
    if is_valid_width(k) {
        Ok(())
    } else {
        Err(SquareError::InvalidWidth(k))
    }
}

/// Deterministic pseudo-random bytes (splitmix64 of `seed`), for tests and benchmarks.
pub(crate) fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert_eq!(square_width_for(0), 1);
        assert_eq!(square_width_for(1), 1);
        assert_eq!(square_width_for(2), 2);
        assert_eq!(square_width_for(4), 2);
        assert_eq!(square_width_for(5), 4);
        assert_eq!(square_width_for(2048), 64);
        assert_eq!(square_width_for(4097), 128);
        assert_eq!(square_width_for(512 * 512), 512);
        assert_eq!(square_width_for(512 * 512 + 1), 1024);
        assert!(square_width_for(usize::MAX) >= 1 << 32);
        assert!(is_valid_width(1) && is_valid_width(512));
        assert!(!is_valid_width(0) && !is_valid_width(3) && !is_valid_width(1024));
        assert_eq!(Axis::Row.coordinates(3, 5), (3, 5));
        assert_eq!(Axis::Col.coordinates(3, 5), (5, 3));
        assert_eq!(Axis::Row.other(), Axis::Col);
    }
}
