//! One row of an extended square rebuilt from its first `k` shares: what a node that pruned
//! a height keeps of each row it holds. Every row of a well-encoded square is a codeword, so
//! its last `k` shares are the extension of its first `k`, and the rebuilt row's Merkle root
//! is checked against the committed row root before the row is trusted.

use lamina_primitives::merkle::MerkleProof;
use lamina_primitives::Hash;

use super::codec::Codec;
use super::tree::Tree;
use super::{hash, SquareError};
use crate::SHARE_SIZE;

/// A full row (`2k` shares) with its Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendedRow {
    /// `2k * SHARE_SIZE` bytes.
    shares: Vec<u8>,
    tree: Tree,
}

impl ExtendedRow {
    /// Extends `left`, a row's first `k` shares back to back (`k` from `codec`), to the
    /// whole row and builds its tree.
    pub(crate) fn extend(codec: &Codec, left: &[u8]) -> Result<ExtendedRow, SquareError> {
        let k = codec.original_width();
        let expected = k * SHARE_SIZE;
        if left.len() != expected {
            return Err(SquareError::WrongDataLength {
                expected,
                got: left.len(),
            });
        }
        let mut shares = vec![0u8; 2 * expected];
        let (data, parity) = shares.split_at_mut(expected);
        data.copy_from_slice(left);
        let data: Vec<&[u8]> = data.chunks_exact(SHARE_SIZE).collect();
        let mut parity: Vec<&mut [u8]> = parity.chunks_exact_mut(SHARE_SIZE).collect();
        codec.encode(&data, &mut parity)?;
        let leaves = shares.chunks_exact(SHARE_SIZE).map(hash::leaf_of).collect();
        Ok(ExtendedRow {
            tree: Tree::new(leaves),
            shares,
        })
    }

    /// The row's Merkle root, to compare with the committed row root.
    pub(crate) fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Share `col`; `None` outside the row.
    pub(crate) fn share(&self, col: usize) -> Option<&[u8]> {
        let at = col.checked_mul(SHARE_SIZE)?;
        self.shares.get(at..at.checked_add(SHARE_SIZE)?)
    }

    /// Every share of the row, back to back.
    pub(crate) fn shares(&self) -> &[u8] {
        &self.shares
    }

    /// The proof of share `col` within the row; `None` outside the row.
    pub(crate) fn prove(&self, col: usize) -> Option<MerkleProof> {
        self.tree.proof(col)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::{pseudo_random_bytes, Axis, CodecKind, ExtendedSquare};

    #[test]
    fn every_row_rebuilds_from_its_first_half() {
        for kind in [CodecKind::ReedSolomonSimd, CodecKind::ReedSolomonErasure] {
            let k = 4;
            let original = pseudo_random_bytes(k * k * SHARE_SIZE, 7);
            let square = ExtendedSquare::extend(kind, k, &original, 1).unwrap();
            let codec = Codec::new(kind, k).unwrap();
            for r in 0..2 * k {
                let full = square.row(r).unwrap();
                let row = ExtendedRow::extend(&codec, &full[..k * SHARE_SIZE]).unwrap();
                assert_eq!(row.shares(), full);
                assert_eq!(row.root(), square.row_roots()[r]);
                for c in 0..2 * k {
                    assert_eq!(row.share(c), square.share(r, c));
                    let proof = square.prove(r, c, Axis::Row).unwrap();
                    assert_eq!(row.prove(c).unwrap(), proof.line_proof);
                }
                assert!(row.share(2 * k).is_none());
            }
            assert!(matches!(
                ExtendedRow::extend(&codec, &original[..SHARE_SIZE]),
                Err(SquareError::WrongDataLength { .. })
            ));
        }
    }
}
