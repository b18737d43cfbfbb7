//! The square's two hashes, `merkle::leaf_hash` of a share and `merkle::node_hash`, computed
//! with SHA-256's raw compression function over message blocks laid out in advance.
//!
//! The digests are exactly those of `lamina_primitives::merkle`; the streaming API they go
//! through there buffers and copies every input and finalises in a separate call, which on
//! the square's hot path (one leaf per share, one node per pair, millions per block) costs
//! a sizeable fraction of the hashing itself.

use lamina_primitives::Hash;
use sha2::compress256;
use sha2::digest::generic_array::GenericArray;

use crate::SHARE_SIZE;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

type Block = GenericArray<u8, sha2::digest::consts::U64>;

fn digest(blocks: &[Block]) -> Hash {
    let mut state = H0;
    compress256(&mut state, blocks);
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    Hash(out)
}

/// Blocks of a padded leaf message: `0x00 ‖ share` is 513 bytes, padded to nine blocks.
const LEAF_BLOCKS: usize = (1 + SHARE_SIZE + 1 + 8).div_ceil(64);

/// `merkle::leaf_hash(share)` for a share of exactly [`SHARE_SIZE`] bytes.
pub(crate) fn leaf(share: &[u8; SHARE_SIZE]) -> Hash {
    let mut blocks = [Block::default(); LEAF_BLOCKS];
    // Block b holds message bytes 64b..64b+64, i.e. share bytes 64b-1..64b+63.
    for (b, block) in blocks.iter_mut().enumerate().take(SHARE_SIZE / 64) {
        block[0] = if b == 0 { 0x00 } else { share[64 * b - 1] };
        block[1..].copy_from_slice(&share[64 * b..64 * b + 63]);
    }
    let last = &mut blocks[LEAF_BLOCKS - 1];
    last[0] = share[SHARE_SIZE - 1];
    last[1] = 0x80;
    last[56..].copy_from_slice(&(((1 + SHARE_SIZE) * 8) as u64).to_be_bytes());
    digest(&blocks)
}

/// `merkle::leaf_hash(share)`, through the fast path when the share is [`SHARE_SIZE`]
/// bytes.
pub(crate) fn leaf_of(share: &[u8]) -> Hash {
    match <&[u8; SHARE_SIZE]>::try_from(share) {
        Ok(share) => leaf(share),
        Err(_) => lamina_primitives::merkle::leaf_hash(share),
    }
}

/// `merkle::node_hash(left, right)`: `0x01 ‖ left ‖ right` is 65 bytes, two blocks.
pub(crate) fn node(left: &Hash, right: &Hash) -> Hash {
    let mut blocks = [Block::default(); 2];
    blocks[0][0] = 0x01;
    blocks[0][1..33].copy_from_slice(&left.0);
    blocks[0][33..].copy_from_slice(&right.0[..31]);
    blocks[1][0] = right.0[31];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&(65u64 * 8).to_be_bytes());
    digest(&blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::square::pseudo_random_bytes;
    use lamina_primitives::merkle;

    #[test]
    fn same_digests_as_the_merkle_module() {
        for seed in 0..50 {
            let bytes = pseudo_random_bytes(SHARE_SIZE + 64, seed);
            let share = &bytes[..SHARE_SIZE];
            assert_eq!(leaf_of(share), merkle::leaf_hash(share));
            assert_eq!(leaf_of(&bytes[..7]), merkle::leaf_hash(&bytes[..7]));
            let (a, b) = (Hash::digest(&bytes[..3]), Hash::digest(&bytes[3..9]));
            assert_eq!(node(&a, &b), merkle::node_hash(&a, &b));
        }
        assert_eq!(
            leaf_of(&[0; SHARE_SIZE]),
            merkle::leaf_hash(&[0; SHARE_SIZE])
        );
    }
}
