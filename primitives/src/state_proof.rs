//! Proofs of account state against a state root, and their verification.
//!
//! The state tree is a Jellyfish Merkle Tree (a sparse Merkle tree over 256-bit key hashes,
//! SHA-256). This module does not build the tree (the execution layer uses the `jmt` crate
//! for that); it defines the proof format and verifies it independently, so a client needs
//! only this page of rules, which docs/wire-format.md repeats:
//!
//! * key hash = `SHA-256(borsh(StateKey))`, value hash = `SHA-256(value bytes)`;
//! * leaf node hash = `SHA-256("JMT::LeafNode" ‖ key_hash ‖ value_hash)`;
//! * internal node hash = `SHA-256("JMT::IntrnalNode" ‖ left ‖ right)`;
//! * an empty subtree hashes to the 32 ASCII bytes `SPARSE_MERKLE_PLACEHOLDER_HASH__`.
//!
//! The borsh layout of [`StateProof`] is byte-for-byte the layout of `jmt::proof::SparseMerkleProof`.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{codec, Address, Hash};

/// Domain prefix of a leaf node hash.
pub const LEAF_DOMAIN: &[u8] = b"JMT::LeafNode";
/// Domain prefix of an internal node hash.
pub const INTERNAL_DOMAIN: &[u8] = b"JMT::IntrnalNode";
/// Hash of an empty subtree.
pub const PLACEHOLDER_HASH: Hash = Hash(*b"SPARSE_MERKLE_PLACEHOLDER_HASH__");

/// A key of the authenticated state. Borsh-encoded and hashed, it addresses a leaf.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub enum StateKey {
    /// An account's balance and nonce (value: borsh [`crate::Account`]).
    Account(Address),
}

impl StateKey {
    /// `SHA-256(borsh(self))`: the 256-bit path of this key in the tree.
    pub fn key_hash(&self) -> Hash {
        Hash::digest(&codec::encode(self))
    }
}

/// A leaf as it appears in a proof.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct ProofLeaf {
    /// The leaf's key hash.
    pub key_hash: Hash,
    /// SHA-256 of the leaf's value bytes.
    pub value_hash: Hash,
}

impl ProofLeaf {
    /// `SHA-256("JMT::LeafNode" ‖ key_hash ‖ value_hash)`.
    pub fn hash(&self) -> Hash {
        Hash::digest_parts(&[LEAF_DOMAIN, &self.key_hash.0, &self.value_hash.0])
    }
}

/// A sibling on the path from the leaf to the root.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProofNode {
    /// An empty subtree.
    Null,
    /// An internal node, given by its two children.
    Internal {
        /// Left child hash.
        left: Hash,
        /// Right child hash.
        right: Hash,
    },
    /// A leaf.
    Leaf(ProofLeaf),
}

impl ProofNode {
    /// The node's hash.
    pub fn hash(&self) -> Hash {
        match self {
            ProofNode::Null => PLACEHOLDER_HASH,
            ProofNode::Internal { left, right } => internal_hash(left, right),
            ProofNode::Leaf(leaf) => leaf.hash(),
        }
    }
}

fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::digest_parts(&[INTERNAL_DOMAIN, &left.0, &right.0])
}

/// A sparse Merkle proof of one key: present (with its value) or absent.
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
pub struct StateProof {
    /// The leaf found on the key's path: the key's own leaf (inclusion), another key's leaf
    /// sharing the path (exclusion), or none (exclusion: the path ends in an empty subtree).
    pub leaf: Option<ProofLeaf>,
    /// Siblings from the bottom of the tree up to the root (at most 256).
    pub siblings: Vec<ProofNode>,
}

/// Why a state proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateProofError {
    /// More siblings than the tree has levels.
    #[error("proof has {0} siblings, more than 256")]
    TooDeep(usize),
    /// The leaf in the proof is not the requested key.
    #[error("the proof's leaf is for another key")]
    KeyMismatch,
    /// The value does not match the leaf's value hash.
    #[error("the value does not match the proof's value hash")]
    ValueMismatch,
    /// An inclusion was claimed but the proof shows absence, or the reverse.
    #[error("the proof shows {proves}, but {claimed} was claimed")]
    WrongKind {
        /// What the proof shows.
        proves: &'static str,
        /// What the caller claimed.
        claimed: &'static str,
    },
    /// The neighbouring leaf is not on the key's path, so it proves nothing about the key.
    #[error("the proof's leaf is not on the key's path")]
    NotOnPath,
    /// The recomputed root differs from the expected one.
    #[error("computed root {computed} differs from the expected root {expected}")]
    RootMismatch {
        /// What the proof leads to.
        computed: Hash,
        /// What the caller trusts.
        expected: Hash,
    },
}

impl StateProof {
    /// Verifies that `key_hash` holds `value` (Some) or is absent (None) under `root`.
    pub fn verify(
        &self,
        root: &Hash,
        key_hash: &Hash,
        value: Option<&[u8]>,
    ) -> Result<(), StateProofError> {
        let depth = self.siblings.len();
        if depth > 256 {
            return Err(StateProofError::TooDeep(depth));
        }
        match (value, &self.leaf) {
            (Some(value), Some(leaf)) => {
                if leaf.key_hash != *key_hash {
                    return Err(StateProofError::KeyMismatch);
                }
                if Hash::digest(value) != leaf.value_hash {
                    return Err(StateProofError::ValueMismatch);
                }
            }
            (Some(_), None) => {
                return Err(StateProofError::WrongKind {
                    proves: "absence",
                    claimed: "presence",
                })
            }
            (None, Some(leaf)) => {
                if leaf.key_hash == *key_hash {
                    return Err(StateProofError::WrongKind {
                        proves: "presence",
                        claimed: "absence",
                    });
                }
                if common_prefix_bits(&leaf.key_hash, key_hash) < depth {
                    return Err(StateProofError::NotOnPath);
                }
            }
            (None, None) => {}
        }
        let mut acc = self.leaf.map_or(PLACEHOLDER_HASH, |leaf| leaf.hash());
        // Sibling i (from the bottom) sits at tree depth `depth - 1 - i`; the key's bit at that
        // depth (most significant bit first) says which side we are on.
        for (i, sibling) in self.siblings.iter().enumerate() {
            let bit_index = depth - 1 - i;
            let bit = key_hash.0[bit_index / 8] >> (7 - bit_index % 8) & 1 == 1;
            acc = if bit {
                internal_hash(&sibling.hash(), &acc)
            } else {
                internal_hash(&acc, &sibling.hash())
            };
        }
        if acc != *root {
            return Err(StateProofError::RootMismatch {
                computed: acc,
                expected: *root,
            });
        }
        Ok(())
    }
}

fn common_prefix_bits(a: &Hash, b: &Hash) -> usize {
    for (i, (x, y)) in a.0.iter().zip(b.0.iter()).enumerate() {
        let diff = x ^ y;
        if diff != 0 {
            return i * 8 + diff.leading_zeros() as usize;
        }
    }
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_leaf_tree_proves_presence_and_absence() {
        let key = StateKey::Account(Address([1; 32])).key_hash();
        let value = b"value";
        let leaf = ProofLeaf {
            key_hash: key,
            value_hash: Hash::digest(value),
        };
        let root = leaf.hash();
        let proof = StateProof {
            leaf: Some(leaf),
            siblings: vec![],
        };
        assert!(proof.verify(&root, &key, Some(value)).is_ok());
        assert_eq!(
            proof.verify(&root, &key, Some(b"other")),
            Err(StateProofError::ValueMismatch)
        );
        let other = StateKey::Account(Address([2; 32])).key_hash();
        assert!(proof.verify(&root, &other, None).is_ok());
        assert!(matches!(
            proof.verify(&root, &key, None),
            Err(StateProofError::WrongKind { .. })
        ));
    }

    #[test]
    fn common_prefix_counts_bits() {
        let a = Hash([0b1010_0000; 32]);
        let mut b = a;
        b.0[1] = 0b1011_0000;
        assert_eq!(common_prefix_bits(&a, &b), 11);
        assert_eq!(common_prefix_bits(&a, &a), 256);
    }
}
