//! The axis roots of a square (one Merkle root per row and per column) and the tree over
//! them whose root is `data_root`.

use lamina_primitives::merkle::{self, MerkleProof};
use lamina_primitives::Hash;

use super::tree::Tree;
use super::{is_valid_width, Axis, SquareError};

/// The `2k` row roots and `2k` column roots of a square with the tree over them, checked
/// to hash to `data_root`: what a node needs, besides `data_root`, to check shares and
/// to repair a square.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisRoots {
    row_roots: Vec<Hash>,
    col_roots: Vec<Hash>,
    tree: Tree,
}

impl AxisRoots {
    /// Checks `row_roots` and `col_roots` (each `2k` long for a valid `k`) against
    /// `data_root`.
    pub fn new(
        row_roots: Vec<Hash>,
        col_roots: Vec<Hash>,
        data_root: &Hash,
    ) -> Result<AxisRoots, SquareError> {
        let width = row_roots.len();
        if width != col_roots.len() || width % 2 != 0 || !is_valid_width(width / 2) {
            return Err(SquareError::InvalidRoots {
                rows: row_roots.len(),
                cols: col_roots.len(),
            });
        }
        let roots = AxisRoots::build(row_roots, col_roots);
        if roots.data_root() != *data_root {
            return Err(SquareError::DataRootMismatch(*data_root));
        }
        Ok(roots)
    }

    /// The roots as computed from a square (so trusted without a check).
    pub(crate) fn build(row_roots: Vec<Hash>, col_roots: Vec<Hash>) -> AxisRoots {
        let leaves = row_roots
            .iter()
            .chain(&col_roots)
            .map(|root| merkle::leaf_hash(&root.0))
            .collect();
        AxisRoots {
            row_roots,
            col_roots,
            tree: Tree::new(leaves),
        }
    }

    /// `data_root`: the Merkle root over the row roots then the column roots.
    pub fn data_root(&self) -> Hash {
        self.tree.root()
    }

    /// The `2k` row roots.
    pub fn row_roots(&self) -> &[Hash] {
        &self.row_roots
    }

    /// The `2k` column roots.
    pub fn col_roots(&self) -> &[Hash] {
        &self.col_roots
    }

    /// `2k`: shares per line.
    pub fn width(&self) -> usize {
        self.row_roots.len()
    }

    /// `k`: original shares per line.
    pub fn original_width(&self) -> usize {
        self.row_roots.len() / 2
    }

    /// The root of line `index` of `axis`.
    pub fn root(&self, axis: Axis, index: usize) -> Option<Hash> {
        match axis {
            Axis::Row => self.row_roots.get(index).copied(),
            Axis::Col => self.col_roots.get(index).copied(),
        }
    }

    /// The proof that the root of line `index` of `axis` is leaf `index` (rows) or
    /// `2k + index` (columns) of the tree under `data_root`.
    pub fn prove(&self, axis: Axis, index: usize) -> Option<MerkleProof> {
        if index >= self.width() {
            return None;
        }
        let leaf = match axis {
            Axis::Row => index,
            Axis::Col => self.width() + index,
        };
        self.tree.proof(leaf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn roots_check_against_data_root() {
        let rows: Vec<Hash> = (0..4u8).map(|i| Hash::digest(&[i])).collect();
        let cols: Vec<Hash> = (4..8u8).map(|i| Hash::digest(&[i])).collect();
        let built = AxisRoots::build(rows.clone(), cols.clone());
        let leaves: Vec<Hash> = rows
            .iter()
            .chain(&cols)
            .map(|r| merkle::leaf_hash(&r.0))
            .collect();
        assert_eq!(built.data_root(), merkle::root(&leaves));
        let checked = AxisRoots::new(rows.clone(), cols.clone(), &built.data_root()).unwrap();
        assert_eq!(checked, built);
        assert_eq!(checked.width(), 4);
        assert_eq!(checked.original_width(), 2);
        let proof = checked.prove(Axis::Col, 1).unwrap();
        assert_eq!(proof.index, 5);
        assert_eq!(
            proof.root_from_leaf_hash(merkle::leaf_hash(&cols[1].0)),
            Some(built.data_root())
        );
        assert!(checked.prove(Axis::Row, 4).is_none());
        assert!(matches!(
            AxisRoots::new(rows.clone(), cols.clone(), &Hash::ZERO),
            Err(SquareError::DataRootMismatch(_))
        ));
        assert!(matches!(
            AxisRoots::new(rows[..3].to_vec(), cols[..3].to_vec(), &Hash::ZERO),
            Err(SquareError::InvalidRoots { .. })
        ));
        assert!(AxisRoots::new(vec![], vec![], &Hash::ZERO).is_err());
    }
}
