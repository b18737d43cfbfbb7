//! Proofs against a square's `data_root`: that a share sits at a coordinate
//! ([`ShareProof`]), and that a line of the square is not a codeword of the code it
//! should be ([`BadEncodingProof`]), which lets any node reject a block whose producer
//! extended it wrongly without downloading the block.
//!
//! Everything here is checked as untrusted input: sizes, indices and tree shapes are
//! validated before any hashing or decoding, and a malformed proof is refused, never a
//! panic.

use lamina_primitives::merkle;
use lamina_primitives::Hash;

use super::codec::{Codec, CodecError, CodecKind};
use super::tree::Tree;
use super::Axis;
use crate::SHARE_SIZE;
pub use lamina_primitives::da::{original_width_of, BadEncodingProof, ProvenShare, ShareProof};

/// Why a [`BadEncodingProof`] does not prove bad encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEncodingError {
    /// The proof is about another codec than the chain's.
    #[error("proof uses codec {got}, the chain uses {expected}")]
    CodecMismatch {
        /// The chain's codec.
        expected: CodecKind,
        /// The proof's.
        got: CodecKind,
    },
    /// `width` is not `2k` for a supported `k`.
    #[error("invalid square width {0}")]
    InvalidWidth(u64),
    /// `index` is outside the square.
    #[error("line {index} is outside a square of width {width}")]
    IndexOutOfRange {
        /// The line.
        index: u64,
        /// The width.
        width: u64,
    },
    /// `line_root` is not the committed root of that line.
    #[error("the line root is not committed at that line in data_root")]
    LineRootNotCommitted,
    /// Fewer than `k` shares.
    #[error("{got} shares given, at least {needed} needed")]
    TooFewShares {
        /// `k`.
        needed: usize,
        /// Shares given.
        got: usize,
    },
    /// More shares than the line has.
    #[error("{got} shares given for a line of {width}")]
    TooManyShares {
        /// `2k`.
        width: u64,
        /// Shares given.
        got: usize,
    },
    /// Positions are not strictly increasing inside the line.
    #[error("share position {0} is out of order or outside the line")]
    InvalidPosition(u64),
    /// A share's proof does not hold at its coordinates.
    #[error("the share at position {0} is not proven against data_root")]
    ShareNotProven(u64),
    /// Decoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The shares are consistent with the committed line: it is well encoded.
    #[error("the shares decode to the committed line: no bad encoding shown")]
    NotBadlyEncoded,
}

/// Checks a [`BadEncodingProof`] (defined in `lamina-primitives`, as data every node
/// exchanges; checking it needs this crate's codecs).
pub trait BadEncodingCheck {
    /// `Ok(())` exactly when the proof shows that the square under `data_root`, extended
    /// with `codec` (the chain's codec; a proof about another one is refused), is badly
    /// encoded: `line_root` is committed at this line in `data_root`; at least `k`
    /// distinct shares of the line are each proven against `data_root` at their
    /// coordinates; and decoding the line from the first `k` of them gives a line that
    /// disagrees with one of the others or whose root is not `line_root`.
    fn verify(&self, data_root: &Hash, codec: CodecKind) -> Result<(), BadEncodingError>;
}

impl BadEncodingCheck for BadEncodingProof {
    fn verify(&self, data_root: &Hash, codec: CodecKind) -> Result<(), BadEncodingError> {
        if self.codec != codec {
            return Err(BadEncodingError::CodecMismatch {
                expected: codec,
                got: self.codec,
            });
        }
        let k = original_width_of(self.width).ok_or(BadEncodingError::InvalidWidth(self.width))?;
        let width = 2 * k;
        if self.index >= self.width {
            return Err(BadEncodingError::IndexOutOfRange {
                index: self.index,
                width: self.width,
            });
        }
        let root_index = match self.axis {
            Axis::Row => self.index,
            Axis::Col => self.width + self.index,
        };
        let proof = &self.line_root_proof;
        if proof.total != 2 * self.width
            || proof.index != root_index
            || proof
                .root_from_leaf_hash(merkle::leaf_hash(&self.line_root.0))
                .as_ref()
                != Some(data_root)
        {
            return Err(BadEncodingError::LineRootNotCommitted);
        }
        if self.shares.len() > width {
            return Err(BadEncodingError::TooManyShares {
                width: self.width,
                got: self.shares.len(),
            });
        }
        if self.shares.len() < k {
            return Err(BadEncodingError::TooFewShares {
                needed: k,
                got: self.shares.len(),
            });
        }
        // Cheap checks on every share before any hashing.
        let mut next = 0u64;
        for share in &self.shares {
            if share.position < next || share.position >= self.width {
                return Err(BadEncodingError::InvalidPosition(share.position));
            }
            next = share.position + 1;
        }
        for share in &self.shares {
            let (row, col) = match self.axis {
                Axis::Row => (self.index, share.position),
                Axis::Col => (share.position, self.index),
            };
            if share.proof.square_width() != self.width
                || !share.proof.verify(data_root, row, col, &share.share)
            {
                return Err(BadEncodingError::ShareNotProven(share.position));
            }
        }
        let mut line = vec![0u8; width * SHARE_SIZE];
        let mut present = vec![false; width];
        for share in &self.shares[..k] {
            // Positions are below `width` (checked above), so they fit in usize.
            let at = share.position as usize;
            line[at * SHARE_SIZE..(at + 1) * SHARE_SIZE].copy_from_slice(&share.share);
            present[at] = true;
        }
        let codec = Codec::new(codec, k)?;
        let mut shards: Vec<&mut [u8]> = line.chunks_exact_mut(SHARE_SIZE).collect();
        codec.coder().reconstruct(&mut shards, &present)?;
        for share in &self.shares[k..] {
            let at = share.position as usize;
            if line[at * SHARE_SIZE..(at + 1) * SHARE_SIZE] != share.share[..] {
                return Ok(());
            }
        }
        let root = Tree::new(
            line.chunks_exact(SHARE_SIZE)
                .map(merkle::leaf_hash)
                .collect(),
        )
        .root();
        if root == self.line_root {
            Err(BadEncodingError::NotBadlyEncoded)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::{pseudo_random_bytes, ExtendedSquare};
    use borsh::BorshDeserialize;

    /// A proof about line `index` of `axis` of `square` from the shares at `positions`,
    /// each proven through `through`.
    fn proof_for(
        square: &ExtendedSquare,
        axis: Axis,
        index: usize,
        positions: impl Iterator<Item = usize>,
        through: Axis,
    ) -> BadEncodingProof {
        let roots = square.axis_roots();
        BadEncodingProof {
            axis,
            index: index as u64,
            width: square.width() as u64,
            codec: square.codec(),
            line_root_proof: roots.prove(axis, index).unwrap(),
            line_root: roots.root(axis, index).unwrap(),
            shares: positions
                .map(|p| {
                    let (r, c) = axis.coordinates(index, p);
                    ProvenShare {
                        position: p as u64,
                        share: square.share(r, c).unwrap().to_vec(),
                        proof: square.prove(r, c, through).unwrap(),
                    }
                })
                .collect(),
        }
    }

    fn good_square(kind: CodecKind, k: usize) -> ExtendedSquare {
        ExtendedSquare::extend(kind, k, &pseudo_random_bytes(k * k * SHARE_SIZE, 2), 1).unwrap()
    }

    #[test]
    fn a_well_encoded_line_proves_nothing() {
        for kind in [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd] {
            let sq = good_square(kind, 4);
            let root = sq.data_root();
            for (axis, through) in [
                (Axis::Row, Axis::Col),
                (Axis::Col, Axis::Row),
                (Axis::Row, Axis::Row),
            ] {
                for positions in [0..8, 4..8, 2..6] {
                    let proof = proof_for(&sq, axis, 3, positions, through);
                    assert_eq!(
                        proof.verify(&root, kind),
                        Err(BadEncodingError::NotBadlyEncoded)
                    );
                }
            }
        }
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let kind = CodecKind::default();
        let k = 4;
        let sq = good_square(kind, k);
        // A committed bad square, so the unmodified proof verifies.
        let mut data = sq.data().to_vec();
        data[(2 * 8 + 6) * SHARE_SIZE] ^= 1;
        let bad = ExtendedSquare::commit(kind, k, data, 1);
        let root = bad.data_root();
        let good = proof_for(&bad, Axis::Row, 2, 0..8, Axis::Col);
        good.verify(&root, kind).unwrap();
        // Only the first k shares, which decode to a line whose root differs.
        proof_for(&bad, Axis::Row, 2, 0..4, Axis::Row)
            .verify(&root, kind)
            .unwrap();
        let other = CodecKind::ReedSolomonErasure;
        assert!(matches!(
            good.verify(&root, other),
            Err(BadEncodingError::CodecMismatch { .. })
        ));
        assert_eq!(
            good.verify(&Hash::ZERO, kind),
            Err(BadEncodingError::LineRootNotCommitted)
        );

        let check = |change: &dyn Fn(&mut BadEncodingProof), expected: BadEncodingError| {
            let mut proof = good.clone();
            change(&mut proof);
            assert_eq!(proof.verify(&root, kind), Err(expected));
        };
        check(
            &|p| p.shares[1].share[0] ^= 1,
            BadEncodingError::ShareNotProven(1),
        );
        check(
            &|p| p.shares[1].share.push(0),
            BadEncodingError::ShareNotProven(1),
        );
        check(
            &|p| p.shares[1].position = 5,
            BadEncodingError::InvalidPosition(2),
        );
        check(
            &|p| p.shares.swap(2, 3),
            BadEncodingError::InvalidPosition(2),
        );
        check(
            &|p| p.shares[7].position = 8,
            BadEncodingError::InvalidPosition(8),
        );
        check(
            &|p| p.shares.truncate(3),
            BadEncodingError::TooFewShares { needed: 4, got: 3 },
        );
        check(
            &|p| {
                let extra = p.shares[0].clone();
                p.shares.push(extra);
            },
            BadEncodingError::TooManyShares { width: 8, got: 9 },
        );
        check(
            &|p| p.line_root = Hash::ZERO,
            BadEncodingError::LineRootNotCommitted,
        );
        check(&|p| p.index = 3, BadEncodingError::LineRootNotCommitted);
        check(
            &|p| p.axis = Axis::Col,
            BadEncodingError::LineRootNotCommitted,
        );
        check(
            &|p| p.index = 8,
            BadEncodingError::IndexOutOfRange { index: 8, width: 8 },
        );
        check(&|p| p.width = 6, BadEncodingError::InvalidWidth(6));
        check(&|p| p.width = 0, BadEncodingError::InvalidWidth(0));
        check(
            &|p| p.width = u64::MAX - 1,
            BadEncodingError::InvalidWidth(u64::MAX - 1),
        );
        check(&|p| p.width = 16, BadEncodingError::LineRootNotCommitted);
        // A share proven at another line's coordinates.
        check(
            &|p| {
                p.shares[0].proof = bad.prove(3, 0, Axis::Col).unwrap();
                p.shares[0].share = bad.share(3, 0).unwrap().to_vec();
            },
            BadEncodingError::ShareNotProven(0),
        );
    }

    #[test]
    fn proofs_round_trip_through_borsh_and_serde() {
        let sq = good_square(CodecKind::default(), 2);
        let proof = proof_for(&sq, Axis::Col, 1, 0..4, Axis::Row);
        let bytes = borsh::to_vec(&proof).unwrap();
        assert_eq!(BadEncodingProof::try_from_slice(&bytes).unwrap(), proof);
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrap {
            proof: BadEncodingProof,
        }
        let text = toml::to_string(&Wrap {
            proof: proof.clone(),
        })
        .unwrap();
        assert!(text.contains("codec = \"reed-solomon-simd\""), "{text}");
        assert!(text.contains("axis = \"col\""), "{text}");
        let back: Wrap = toml::from_str(&text).unwrap();
        assert_eq!(back.proof, proof);
    }
}
