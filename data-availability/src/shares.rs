//! The `replicated` scheme's commitment: the encoded body cut into fixed-size shares, each a
//! leaf of an RFC 9162 Merkle tree whose root is the header's `data_root`.
//!
//! Pure functions over bytes, so every node (and any outside verifier) computes the same
//! commitment for the same body.

use lamina_primitives::interfaces::da::DataCommitment;
use lamina_primitives::merkle::{self, MerkleProof};
use lamina_primitives::{Blob, Block, Hash};

/// Size of one share in bytes; the last share of a body is zero-padded to this size.
pub use lamina_primitives::da::SHARE_SIZE;

/// Number of shares an encoded body of `encoded_len` bytes is split into (at least one, so
/// even an empty encoding has a root that commits to its length through `body_size`).
pub fn share_count(encoded_len: usize) -> u64 {
    encoded_len.div_ceil(SHARE_SIZE).max(1) as u64
}

/// Share `index` of `encoded`, zero-padded to [`SHARE_SIZE`]; `None` past the last share.
pub fn share(encoded: &[u8], index: u64) -> Option<Vec<u8>> {
    if index >= share_count(encoded.len()) {
        return None;
    }
    let start = usize::try_from(index).ok()?.checked_mul(SHARE_SIZE)?;
    let end = start.saturating_add(SHARE_SIZE).min(encoded.len());
    let mut out = vec![0u8; SHARE_SIZE];
    // An empty encoding still has share 0 (all zeroes), where `start == end == 0`.
    let part = encoded.get(start..end).unwrap_or_default();
    out[..part.len()].copy_from_slice(part);
    Some(out)
}

/// The Merkle leaf hash of every share of `encoded`, in order.
pub fn leaf_hashes(encoded: &[u8]) -> Vec<Hash> {
    if encoded.is_empty() {
        return vec![merkle::leaf_hash(&[0u8; SHARE_SIZE])];
    }
    encoded
        .chunks(SHARE_SIZE)
        .map(|chunk| {
            if chunk.len() == SHARE_SIZE {
                merkle::leaf_hash(chunk)
            } else {
                let mut padded = [0u8; SHARE_SIZE];
                padded[..chunk.len()].copy_from_slice(chunk);
                merkle::leaf_hash(&padded)
            }
        })
        .collect()
}

/// The commitment of an already encoded body, with the leaf hashes it was built from (kept
/// by callers that go on to prove shares).
pub fn commit_encoded(encoded: &[u8]) -> (DataCommitment, Vec<Hash>) {
    let leaves = leaf_hashes(encoded);
    let commitment = DataCommitment {
        data_root: merkle::root(&leaves),
        body_size: encoded.len() as u64,
        share_count: leaves.len() as u64,
    };
    (commitment, leaves)
}

/// The commitment of a block body: its canonical encoding ([`Block::encode_body`]) split
/// into shares.
pub fn commit(body: &[Blob]) -> DataCommitment {
    commit_encoded(&Block::encode_body(body)).0
}

/// Share `index` of `encoded` with its inclusion proof, given the body's leaf hashes (from
/// [`leaf_hashes`]); `None` past the last share.
pub fn prove_share(encoded: &[u8], leaves: &[Hash], index: u64) -> Option<(Vec<u8>, MerkleProof)> {
    let share = share(encoded, index)?;
    let proof = merkle::prove(leaves, usize::try_from(index).ok()?)?;
    Some((share, proof))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Namespace;
    use proptest::prelude::*;

    #[test]
    fn empty_body_has_one_share() {
        let body: Vec<Blob> = Vec::new();
        let commitment = commit(&body);
        assert_eq!(commitment.body_size, 4);
        assert_eq!(commitment.share_count, 1);
        assert_eq!(share_count(0), 1);
        let (empty, leaves) = commit_encoded(&[]);
        assert_eq!(empty.share_count, 1);
        let (zeroes, proof) = prove_share(&[], &leaves, 0).unwrap();
        assert_eq!(zeroes, vec![0u8; SHARE_SIZE]);
        assert!(proof.verify(&empty.data_root, &zeroes));
    }

    #[test]
    fn share_boundaries() {
        assert_eq!(share_count(SHARE_SIZE), 1);
        assert_eq!(share_count(SHARE_SIZE + 1), 2);
        let encoded = vec![7u8; SHARE_SIZE + 1];
        assert_eq!(share(&encoded, 0).unwrap(), vec![7u8; SHARE_SIZE]);
        let last = share(&encoded, 1).unwrap();
        assert_eq!(last[0], 7);
        assert!(last[1..].iter().all(|b| *b == 0));
        assert_eq!(share(&encoded, 2), None);
    }

    #[test]
    fn commitment_depends_on_the_body() {
        let a = vec![Blob {
            namespace: Namespace::EXECUTION,
            data: vec![1, 2, 3],
        }];
        let mut b = a.clone();
        b[0].data[2] = 4;
        assert_eq!(commit(&a), commit(&a));
        assert_ne!(commit(&a).data_root, commit(&b).data_root);
    }

    proptest! {
        #[test]
        fn every_share_proves_and_tampering_fails(
            encoded in proptest::collection::vec(any::<u8>(), 0..4000),
            flip in any::<prop::sample::Index>(),
        ) {
            let (commitment, leaves) = commit_encoded(&encoded);
            prop_assert_eq!(commitment.share_count, share_count(encoded.len()));
            prop_assert_eq!(commitment.body_size, encoded.len() as u64);
            let mut rebuilt = Vec::new();
            for index in 0..commitment.share_count {
                let (data, proof) = prove_share(&encoded, &leaves, index).unwrap();
                prop_assert_eq!(data.len(), SHARE_SIZE);
                prop_assert!(proof.verify(&commitment.data_root, &data));
                let mut tampered = data.clone();
                let at = flip.index(SHARE_SIZE);
                tampered[at] ^= 0x01;
                prop_assert!(!proof.verify(&commitment.data_root, &tampered));
                rebuilt.extend_from_slice(&data);
            }
            prop_assert!(prove_share(&encoded, &leaves, commitment.share_count).is_none());
            rebuilt.truncate(encoded.len());
            prop_assert_eq!(rebuilt, encoded);
        }
    }
}
