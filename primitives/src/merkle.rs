//! A binary Merkle tree over an ordered list of leaves, exactly as RFC 6962 / RFC 9162
//! (Certificate Transparency) defines it: leaves hashed as `SHA-256(0x00 ‖ data)`, inner nodes
//! as `SHA-256(0x01 ‖ left ‖ right)`, a tree of `n` leaves split at the largest power of two
//! below `n`. The distinct prefixes make a leaf impossible to pass off as an inner node.
//!
//! Used for DA shares (`data_root`) and any other ordered commitment.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::Hash;

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Hash::digest_parts(&[&[0x00], data])
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::digest_parts(&[&[0x01], &left.0, &right.0])
}

/// The root over already-hashed leaves; the root of no leaves is `SHA-256("")`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::digest(b""),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// An inclusion proof: the audit path of leaf `index` in a tree of `total` leaves, siblings
/// ordered from the leaf upwards.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct MerkleProof {
    /// Position of the leaf, from 0.
    pub index: u64,
    /// Number of leaves in the tree.
    pub total: u64,
    /// Sibling hashes, from the bottom of the tree to the top.
    pub siblings: Vec<Hash>,
}

/// Builds the inclusion proof of leaf `index`; `None` when `index` is out of range.
pub fn prove(leaves: &[Hash], index: usize) -> Option<MerkleProof> {
    if index >= leaves.len() {
        return None;
    }
    let mut siblings = Vec::new();
    collect_path(leaves, index, &mut siblings);
    Some(MerkleProof {
        index: index as u64,
        total: leaves.len() as u64,
        siblings,
    })
}

fn collect_path(leaves: &[Hash], index: usize, out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    if index < k {
        collect_path(&leaves[..k], index, out);
        out.push(root(&leaves[k..]));
    } else {
        collect_path(&leaves[k..], index - k, out);
        out.push(root(&leaves[..k]));
    }
}

impl MerkleProof {
    /// The root this proof leads to from a leaf whose hash is `leaf`, or `None` if the proof
    /// is malformed (wrong number of siblings for its position). RFC 9162 §2.1.3.2.
    pub fn root_from_leaf_hash(&self, leaf: Hash) -> Option<Hash> {
        if self.index >= self.total {
            return None;
        }
        let (mut fnode, mut snode) = (self.index, self.total - 1);
        let mut acc = leaf;
        for sibling in &self.siblings {
            if snode == 0 {
                return None;
            }
            if fnode & 1 == 1 || fnode == snode {
                acc = node_hash(sibling, &acc);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                acc = node_hash(&acc, sibling);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        (snode == 0).then_some(acc)
    }

    /// True when `data` is leaf `index` of the tree whose root is `root`.
    pub fn verify(&self, root: &Hash, data: &[u8]) -> bool {
        self.root_from_leaf_hash(leaf_hash(data)).as_ref() == Some(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf-{i}").into_bytes()).collect()
    }

    #[test]
    fn small_trees_match_rfc_shape() {
        let data = leaves(3);
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let expected = node_hash(&node_hash(&hashes[0], &hashes[1]), &hashes[2]);
        assert_eq!(root(&hashes), expected);
        assert_eq!(root(&[]), Hash::digest(b""));
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_tampering_fails(n in 1usize..70, pick in any::<prop::sample::Index>()) {
            let data = leaves(n);
            let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
            let top = root(&hashes);
            let i = pick.index(n);
            let proof = prove(&hashes, i).unwrap();
            prop_assert!(proof.verify(&top, &data[i]));
            prop_assert!(!proof.verify(&top, b"tampered"));
            if n > 1 {
                let mut moved = proof.clone();
                moved.index = ((i + 1) % n) as u64;
                prop_assert!(!moved.verify(&top, &data[i]));
                let mut short = proof.clone();
                short.siblings.pop();
                prop_assert!(!short.verify(&top, &data[i]));
            }
        }
    }
}
