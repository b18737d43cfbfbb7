//! Perfect binary Merkle trees (a power-of-two number of leaves, where an RFC 9162 tree is
//! simply balanced) kept level by level, so a proof is read off the stored levels instead
//! of being recomputed from every leaf.
//!
//! A tree over `n` leaves stores its `n - 1` inner nodes: the `n / 2` parents of the leaves,
//! then their `n / 4` parents, and so on up to the root, which comes last. The leaves live
//! elsewhere (a square's leaf hashes serve its row trees and its column trees alike), so
//! every function here reads them through a closure.

use lamina_primitives::merkle::MerkleProof;
use lamina_primitives::Hash;

/// Fills `inner` (`n - 1` hashes) with the inner nodes of the tree over the `n` leaves that
/// `leaf` returns, `n` a power of two. Does nothing when the sizes do not fit.
pub(crate) fn build(n: usize, leaf: impl Fn(usize) -> Hash, inner: &mut [Hash]) {
    if n < 2 || !n.is_power_of_two() || inner.len() != n - 1 {
        return;
    }
    let (parents, mut rest) = inner.split_at_mut(n / 2);
    for (i, node) in parents.iter_mut().enumerate() {
        *node = super::hash::node(&leaf(2 * i), &leaf(2 * i + 1));
    }
    let mut below: &[Hash] = parents;
    let mut width = n / 4;
    while width >= 1 {
        let (level, tail) = std::mem::take(&mut rest).split_at_mut(width);
        for (i, node) in level.iter_mut().enumerate() {
            *node = super::hash::node(&below[2 * i], &below[2 * i + 1]);
        }
        below = level;
        rest = tail;
        width /= 2;
    }
}

/// The root of a tree built by [`build`]: its last inner node, or the only leaf.
pub(crate) fn root(n: usize, first_leaf: Hash, inner: &[Hash]) -> Hash {
    if n < 2 {
        first_leaf
    } else {
        inner.get(n - 2).copied().unwrap_or(first_leaf)
    }
}

/// The inclusion proof of leaf `index` of a tree built by [`build`]; `None` when `index`
/// is out of range or `inner` does not hold `n - 1` nodes.
pub(crate) fn proof(
    n: usize,
    index: usize,
    leaf: impl Fn(usize) -> Hash,
    inner: &[Hash],
) -> Option<MerkleProof> {
    if index >= n || !n.is_power_of_two() || inner.len() != n - 1 {
        return None;
    }
    let mut siblings = Vec::with_capacity(n.trailing_zeros() as usize);
    if n >= 2 {
        siblings.push(leaf(index ^ 1));
        let (mut start, mut width, mut at) = (0, n / 2, index >> 1);
        while width >= 2 {
            siblings.push(*inner.get(start + (at ^ 1))?);
            start += width;
            width /= 2;
            at >>= 1;
        }
    }
    Some(MerkleProof {
        index: index as u64,
        total: n as u64,
        siblings,
    })
}

/// A whole tree with its leaves, for trees built one at a time (axis roots, single lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tree {
    leaves: Vec<Hash>,
    inner: Vec<Hash>,
}

impl Tree {
    /// The tree over `leaves` (already hashed); their number must be a power of two.
    pub(crate) fn new(leaves: Vec<Hash>) -> Tree {
        let n = leaves.len();
        let mut inner = vec![Hash::ZERO; n.saturating_sub(1)];
        build(n, |i| leaves[i], &mut inner);
        Tree { leaves, inner }
    }

    /// The root.
    pub(crate) fn root(&self) -> Hash {
        let first = self.leaves.first().copied().unwrap_or(Hash::ZERO);
        root(self.leaves.len(), first, &self.inner)
    }

    /// The proof of leaf `index`.
    pub(crate) fn proof(&self, index: usize) -> Option<MerkleProof> {
        proof(self.leaves.len(), index, |i| self.leaves[i], &self.inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_tree_and_its_proofs() {
        for n in [1usize, 2, 4, 8, 32] {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| lamina_primitives::merkle::leaf_hash(&(i as u64).to_le_bytes()))
                .collect();
            let tree = Tree::new(leaves.clone());
            assert_eq!(tree.root(), lamina_primitives::merkle::root(&leaves));
            for i in 0..n {
                let proof = tree.proof(i).unwrap();
                assert_eq!(
                    Some(proof.clone()),
                    lamina_primitives::merkle::prove(&leaves, i)
                );
                assert_eq!(proof.root_from_leaf_hash(leaves[i]), Some(tree.root()));
            }
            assert!(tree.proof(n).is_none());
        }
    }
}
