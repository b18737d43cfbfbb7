//! [`ExtendedSquare`]: a `2k × 2k` square with its row and column trees, built from the
//! original data by extension (or by [`ExtendedSquare::repair`] from part of it).

use std::fmt;

use lamina_primitives::Hash;

use super::codec::{Codec, CodecError, CodecKind, LineCoder};
use super::proof::ShareProof;
use super::roots::AxisRoots;
use super::{buffers, check_width, hash, parallel, tree, Axis, SquareError};
use crate::SHARE_SIZE;

/// Shards coded per call are sized to keep a call's working set near this many bytes:
/// large enough to amortise the per-call cost of the FFT code (its decoder evaluates an
/// erasure polynomial over the whole field on every call), small enough to stay in cache.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// Lines (shares side by side) coded per call for lines of `width` shares.
pub(crate) fn lines_per_batch(width: usize) -> usize {
    (BATCH_BYTES / (width * SHARE_SIZE)).max(1)
}

/// A `2k × 2k` extended square with its commitment: the shares (row-major, one buffer),
/// one leaf hash per share, every row and column tree, and the axis roots under
/// `data_root`. Proofs are read off the stored trees. A dropped square's buffers are kept
/// for the next square (within a bound; see [`super::release_spare_buffers`]).
#[derive(Clone)]
pub struct ExtendedSquare {
    k: usize,
    codec: CodecKind,
    /// `(2k)² × SHARE_SIZE` bytes: share `(r, c)` at `(r * 2k + c) * SHARE_SIZE`.
    data: Vec<u8>,
    /// Leaf hash of every share, row-major; shared by the row and the column trees.
    leaves: Vec<Hash>,
    /// Inner nodes of each row tree, `2k - 1` per row (see `tree`).
    row_nodes: Vec<Hash>,
    /// Inner nodes of each column tree, `2k - 1` per column.
    col_nodes: Vec<Hash>,
    roots: AxisRoots,
}

impl fmt::Debug for ExtendedSquare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtendedSquare")
            .field("k", &self.k)
            .field("codec", &self.codec)
            .field("data_root", &self.data_root())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ExtendedSquare {
    fn eq(&self, other: &Self) -> bool {
        // The trees follow from the data.
        self.k == other.k && self.codec == other.codec && self.data == other.data
    }
}

impl Eq for ExtendedSquare {}

impl ExtendedSquare {
    /// Extends `original` (`k * k * SHARE_SIZE` bytes: the original shares, row-major) to
    /// a `2k × 2k` square with `codec` and commits to it, over `threads` threads.
    pub fn extend(
        codec: CodecKind,
        k: usize,
        original: &[u8],
        threads: usize,
    ) -> Result<ExtendedSquare, SquareError> {
        check_width(k)?;
        let expected = k * k * SHARE_SIZE;
        if original.len() != expected {
            return Err(SquareError::WrongDataLength {
                expected,
                got: original.len(),
            });
        }
        let coder = Codec::new(codec, k)?;
        // Every byte is written below, so a recycled buffer needs no clearing.
        let mut data = buffers::take_shares(4 * expected);
        let (_, trees) = extend_in_place(&coder, &mut data, Some(original), None, true, threads)?;
        Ok(ExtendedSquare::from_trees(codec, k, data, trees))
    }

    /// The square over `data` with the trees [`extend_in_place`] computed for it.
    pub(crate) fn from_trees(
        codec: CodecKind,
        k: usize,
        data: Vec<u8>,
        trees: Trees,
    ) -> ExtendedSquare {
        let n = 2 * k;
        let inner = n - 1;
        let Trees {
            leaves,
            row_nodes,
            col_nodes,
        } = trees;
        let root = |nodes: &[Hash], line: usize, leaf: Hash| {
            tree::root(
                n,
                leaf,
                nodes
                    .get(line * inner..(line + 1) * inner)
                    .unwrap_or_default(),
            )
        };
        let leaf = |at: usize| leaves.get(at).copied().unwrap_or_default();
        let row_roots = (0..n).map(|r| root(&row_nodes, r, leaf(r * n))).collect();
        let col_roots = (0..n).map(|c| root(&col_nodes, c, leaf(c))).collect();
        ExtendedSquare {
            k,
            codec,
            data,
            leaves,
            row_nodes,
            col_nodes,
            roots: AxisRoots::build(row_roots, col_roots),
        }
    }

    /// Commits to `data`, a full `2k × 2k` square, without checking that it is a codeword
    /// (repair has checked; tests build bad squares this way). `data` must be
    /// `4 * k * k * SHARE_SIZE` bytes for a valid `k`.
    pub(crate) fn commit(
        codec: CodecKind,
        k: usize,
        data: Vec<u8>,
        threads: usize,
    ) -> ExtendedSquare {
        let n = 2 * k;
        let row_bytes = n * SHARE_SIZE;
        let inner = n - 1;
        let mut leaves = buffers::take_hashes(n * n);
        let mut row_nodes = buffers::take_hashes(n * inner);
        let ranges = parallel::ranges(n, threads);
        let jobs: Vec<_> = ranges
            .iter()
            .map(|range| &data[range.start * row_bytes..range.end * row_bytes])
            .zip(parallel::split(&mut leaves, n, &ranges))
            .zip(parallel::split(&mut row_nodes, inner, &ranges))
            .collect();
        parallel::run(jobs, |((rows, leaves), nodes)| {
            for ((row, leaves), nodes) in rows
                .chunks_exact(row_bytes)
                .zip(leaves.chunks_exact_mut(n))
                .zip(nodes.chunks_exact_mut(inner))
            {
                for (leaf, share) in leaves.iter_mut().zip(row.chunks_exact(SHARE_SIZE)) {
                    *leaf = hash::leaf_of(share);
                }
                tree::build(n, |i| leaves[i], nodes);
            }
        });
        let mut col_nodes = buffers::take_hashes(n * inner);
        let leaves_ref = &leaves;
        let jobs: Vec<_> = ranges
            .iter()
            .cloned()
            .zip(parallel::split(&mut col_nodes, inner, &ranges))
            .collect();
        parallel::run(jobs, |(range, nodes)| {
            for (c, nodes) in range.zip(nodes.chunks_exact_mut(inner)) {
                tree::build(n, |i| leaves_ref[i * n + c], nodes);
            }
        });
        let trees = Trees {
            leaves,
            row_nodes,
            col_nodes,
        };
        ExtendedSquare::from_trees(codec, k, data, trees)
    }

    /// `2k`: shares per row and per column.
    pub fn width(&self) -> usize {
        2 * self.k
    }

    /// `k`: original shares per row and per column.
    pub fn original_width(&self) -> usize {
        self.k
    }

    /// The codec the square was extended with.
    pub fn codec(&self) -> CodecKind {
        self.codec
    }

    /// Share `(row, col)`; `None` outside the square.
    pub fn share(&self, row: usize, col: usize) -> Option<&[u8]> {
        let n = self.width();
        if row >= n || col >= n {
            return None;
        }
        let at = (row * n + col) * SHARE_SIZE;
        self.data.get(at..at + SHARE_SIZE)
    }

    /// The shares of row `row`, back to back (`2k * SHARE_SIZE` bytes).
    pub fn row(&self, row: usize) -> Option<&[u8]> {
        let row_bytes = self.width() * SHARE_SIZE;
        if row >= self.width() {
            return None;
        }
        self.data.get(row * row_bytes..(row + 1) * row_bytes)
    }

    /// The shares of column `col`, back to back (`2k * SHARE_SIZE` bytes, copied: a
    /// column is not contiguous in the square).
    pub fn col(&self, col: usize) -> Option<Vec<u8>> {
        if col >= self.width() {
            return None;
        }
        let mut out = Vec::with_capacity(self.width() * SHARE_SIZE);
        for row in 0..self.width() {
            out.extend_from_slice(self.share(row, col)?);
        }
        Some(out)
    }

    /// The whole square, row-major.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The original `k × k` quadrant, row-major: the data the square was extended from.
    pub fn original_data(&self) -> Vec<u8> {
        let half = self.k * SHARE_SIZE;
        let mut out = Vec::with_capacity(self.k * half);
        for row in self.data.chunks_exact(2 * half).take(self.k) {
            out.extend_from_slice(&row[..half]);
        }
        out
    }

    /// The `2k` row roots.
    pub fn row_roots(&self) -> &[Hash] {
        self.roots.row_roots()
    }

    /// The `2k` column roots.
    pub fn col_roots(&self) -> &[Hash] {
        self.roots.col_roots()
    }

    /// The axis roots with their tree.
    pub fn axis_roots(&self) -> &AxisRoots {
        &self.roots
    }

    /// The commitment: the Merkle root over the row roots then the column roots.
    pub fn data_root(&self) -> Hash {
        self.roots.data_root()
    }

    /// The proof of share `(row, col)` through its row (`Axis::Row`) or its column;
    /// `None` outside the square.
    pub fn prove(&self, row: usize, col: usize, axis: Axis) -> Option<ShareProof> {
        let n = self.width();
        if row >= n || col >= n {
            return None;
        }
        let inner = n - 1;
        let (line, position) = match axis {
            Axis::Row => (row, col),
            Axis::Col => (col, row),
        };
        let nodes = match axis {
            Axis::Row => &self.row_nodes,
            Axis::Col => &self.col_nodes,
        }
        .get(line * inner..(line + 1) * inner)?;
        let line_proof = match axis {
            Axis::Row => tree::proof(n, position, |i| self.leaves[row * n + i], nodes),
            Axis::Col => tree::proof(n, position, |i| self.leaves[i * n + col], nodes),
        }?;
        Some(ShareProof {
            axis,
            line_proof,
            root_proof: self.roots.prove(axis, line)?,
        })
    }

    /// The leaf hash of share `(row, col)`.
    #[cfg(test)]
    pub(crate) fn leaf(&self, row: usize, col: usize) -> Option<Hash> {
        self.leaves.get(row * self.width() + col).copied()
    }

    /// Consumes the square, returning its shares (row-major).
    pub fn into_data(mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }
}

impl Drop for ExtendedSquare {
    fn drop(&mut self) {
        buffers::give_shares(std::mem::take(&mut self.data));
        buffers::give_hashes(std::mem::take(&mut self.leaves));
        buffers::give_hashes(std::mem::take(&mut self.row_nodes));
        buffers::give_hashes(std::mem::take(&mut self.col_nodes));
    }
}

/// Leaf hashes and inner tree nodes of a square, as [`ExtendedSquare`] keeps them.
#[derive(Debug, Default)]
pub(crate) struct Trees {
    leaves: Vec<Hash>,
    row_nodes: Vec<Hash>,
    col_nodes: Vec<Hash>,
}

/// Extends `data`, a `2k × 2k` buffer, in place and (with `hash`) commits to it, each share
/// hashed while it is still in cache from being coded.
///
/// With `original`, the top-left quadrant is first copied from it; without, it must already
/// hold the original shares. Every top row is extended into its right half, then every
/// column of the top half into the bottom half. With `known`, a parity share whose cell is
/// known is compared with the computed one instead of overwritten (the given value stays);
/// the returned flag says whether every comparison matched.
pub(crate) fn extend_in_place(
    coder: &Codec,
    data: &mut [u8],
    original: Option<&[u8]>,
    known: Option<&[bool]>,
    hash: bool,
    threads: usize,
) -> Result<(bool, Trees), CodecError> {
    let k = coder.original_width();
    let n = 2 * k;
    let inner = n - 1;
    let row_bytes = n * SHARE_SIZE;
    let mut trees = Trees::default();
    if hash {
        // Every hash is written below.
        trees.leaves = buffers::take_hashes(n * n);
        trees.row_nodes = buffers::take_hashes(n * inner);
        trees.col_nodes = buffers::take_hashes(n * inner);
    }
    let hashed = |count: usize| if hash { count } else { 0 };
    let (top, bottom) = data.split_at_mut(k * row_bytes);
    let (top_leaves, bottom_leaves) = trees.leaves.split_at_mut(hashed(k * n));
    let (top_nodes, bottom_nodes) = trees.row_nodes.split_at_mut(hashed(k * inner));

    // Top rows: copy, extend, hash, build the row tree, one row at a time.
    let ranges = parallel::ranges(k, threads);
    let jobs: Vec<_> = ranges
        .iter()
        .cloned()
        .zip(parallel::split(top, row_bytes, &ranges))
        .zip(parallel::split(top_leaves, n, &ranges))
        .zip(parallel::split(top_nodes, inner, &ranges))
        .collect();
    let top_results = parallel::run(jobs, |(((range, rows), leaves), nodes)| {
        let mut coder = coder.coder();
        let mut scratch = Vec::new();
        let mut consistent = true;
        for (i, (r, row)) in range.zip(rows.chunks_exact_mut(row_bytes)).enumerate() {
            let (left, right) = row.split_at_mut(k * SHARE_SIZE);
            if let Some(original) = original {
                left.copy_from_slice(&original[r * k * SHARE_SIZE..(r + 1) * k * SHARE_SIZE]);
            }
            let shares: Vec<&[u8]> = left.chunks_exact(SHARE_SIZE).collect();
            consistent &= encode_placing(
                &mut coder,
                &shares,
                &mut right.chunks_exact_mut(SHARE_SIZE).collect::<Vec<_>>(),
                known.map(|known| &known[r * n + k..(r + 1) * n]),
                &mut scratch,
            )?;
            if let (Some(leaves), Some(nodes)) = (
                leaves.get_mut(i * n..(i + 1) * n),
                nodes.get_mut(i * inner..(i + 1) * inner),
            ) {
                for (leaf, share) in leaves.iter_mut().zip(row.chunks_exact(SHARE_SIZE)) {
                    *leaf = hash::leaf_of(share);
                }
                tree::build(n, |j| leaves[j], nodes);
            }
        }
        Ok::<bool, CodecError>(consistent)
    });
    let mut consistent = true;
    for result in top_results {
        consistent &= result?;
    }

    // Columns: extend a batch of adjacent columns, hash the new shares, build the batch's
    // column trees.
    let top: &[u8] = top;
    let top_leaves: &[Hash] = top_leaves;
    let ranges = parallel::ranges(n, threads);
    let mut pieces: Vec<Vec<&mut [u8]>> = ranges.iter().map(|_| Vec::with_capacity(k)).collect();
    for row in bottom.chunks_exact_mut(row_bytes) {
        for (list, piece) in pieces
            .iter_mut()
            .zip(parallel::split(row, SHARE_SIZE, &ranges))
        {
            list.push(piece);
        }
    }
    let mut leaf_pieces: Vec<Vec<&mut [Hash]>> = ranges.iter().map(|_| Vec::new()).collect();
    for row in bottom_leaves.chunks_exact_mut(n) {
        for (list, piece) in leaf_pieces.iter_mut().zip(parallel::split(row, 1, &ranges)) {
            list.push(piece);
        }
    }
    let mut node_pieces = parallel::split(&mut trees.col_nodes, inner, &ranges);
    node_pieces.resize_with(ranges.len(), Default::default);
    let batch = lines_per_batch(k);
    let jobs: Vec<_> = ranges
        .into_iter()
        .zip(pieces)
        .zip(leaf_pieces)
        .zip(node_pieces)
        .collect();
    let col_results = parallel::run(jobs, |(((range, mut pieces), mut leaves), nodes)| {
        let mut coder = coder.coder();
        let mut scratch = Vec::new();
        let mut consistent = true;
        let base = range.start;
        let mut c0 = base;
        while c0 < range.end {
            let c1 = (c0 + batch).min(range.end);
            let (a, b) = ((c0 - base) * SHARE_SIZE, (c1 - base) * SHARE_SIZE);
            let shares: Vec<&[u8]> = (0..k)
                .map(|i| &top[i * row_bytes + c0 * SHARE_SIZE..i * row_bytes + c1 * SHARE_SIZE])
                .collect();
            let mut parity: Vec<&mut [u8]> = pieces.iter_mut().map(|p| &mut p[a..b]).collect();
            consistent &= match known {
                None => encode_placing(&mut coder, &shares, &mut parity, None, &mut scratch)?,
                Some(known) => {
                    // This batch's known flags, row by row.
                    let flags: Vec<bool> = (0..k)
                        .flat_map(|i| known[(k + i) * n + c0..(k + i) * n + c1].iter().copied())
                        .collect();
                    let width = c1 - c0;
                    encode_batch_placing(
                        &mut coder,
                        &shares,
                        &mut parity,
                        &flags,
                        width,
                        &mut scratch,
                    )?
                }
            };
            if hash {
                for (row, leaves) in pieces.iter().zip(leaves.iter_mut()) {
                    for (c, share) in (c0..c1).zip(row[a..b].chunks_exact(SHARE_SIZE)) {
                        leaves[c - base] = hash::leaf_of(share);
                    }
                }
                for c in c0..c1 {
                    let at = (c - base) * inner;
                    if let Some(nodes) = nodes.get_mut(at..at + inner) {
                        tree::build(
                            n,
                            |j| {
                                if j < k {
                                    top_leaves[j * n + c]
                                } else {
                                    leaves[j - k][c - base]
                                }
                            },
                            nodes,
                        );
                    }
                }
            }
            c0 = c1;
        }
        Ok::<bool, CodecError>(consistent)
    });
    for result in col_results {
        consistent &= result?;
    }

    // Bottom row trees, from the leaves the column pass hashed.
    if hash {
        let bottom_leaves: &[Hash] = bottom_leaves;
        let ranges = parallel::ranges(k, threads);
        let jobs: Vec<_> = ranges
            .iter()
            .cloned()
            .zip(parallel::split(bottom_nodes, inner, &ranges))
            .collect();
        parallel::run(jobs, |(range, nodes)| {
            for (i, nodes) in range.zip(nodes.chunks_exact_mut(inner)) {
                tree::build(n, |j| bottom_leaves[i * n + j], nodes);
            }
        });
    }
    Ok((consistent, trees))
}

/// Encodes `data` into `parity`, one share per parity entry; with `known` flags (one per
/// parity share), a known share is compared rather than overwritten. Returns whether all
/// comparisons matched.
fn encode_placing(
    coder: &mut LineCoder<'_>,
    data: &[&[u8]],
    parity: &mut [&mut [u8]],
    known: Option<&[bool]>,
    scratch: &mut Vec<Vec<u8>>,
) -> Result<bool, CodecError> {
    match known {
        None => {
            coder.encode(data, parity)?;
            Ok(true)
        }
        Some(known) => encode_batch_placing(coder, data, parity, known, 1, scratch),
    }
}

/// Like [`encode_placing`] for parity entries of `width` shares each: `known` holds
/// `width` flags per entry.
fn encode_batch_placing(
    coder: &mut LineCoder<'_>,
    data: &[&[u8]],
    parity: &mut [&mut [u8]],
    known: &[bool],
    width: usize,
    scratch: &mut Vec<Vec<u8>>,
) -> Result<bool, CodecError> {
    let size = width * SHARE_SIZE;
    scratch.resize_with(parity.len(), Vec::new);
    for buffer in scratch.iter_mut() {
        buffer.resize(size, 0);
    }
    let mut outs: Vec<&mut [u8]> = scratch.iter_mut().map(Vec::as_mut_slice).collect();
    coder.encode(data, &mut outs)?;
    let mut consistent = true;
    for ((target, computed), flags) in parity
        .iter_mut()
        .zip(scratch.iter())
        .zip(known.chunks(width))
    {
        for ((out, new), known) in target
            .chunks_exact_mut(SHARE_SIZE)
            .zip(computed.chunks_exact(SHARE_SIZE))
            .zip(flags)
        {
            if *known {
                consistent &= out == new;
            } else {
                out.copy_from_slice(new);
            }
        }
    }
    Ok(consistent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::pseudo_random_bytes;
    use lamina_primitives::merkle;

    const KINDS: [CodecKind; 2] = [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd];

    fn square(kind: CodecKind, k: usize, seed: u64, threads: usize) -> (Vec<u8>, ExtendedSquare) {
        let original = pseudo_random_bytes(k * k * SHARE_SIZE, seed);
        let square = ExtendedSquare::extend(kind, k, &original, threads).unwrap();
        (original, square)
    }

    #[test]
    fn extension_is_deterministic_and_keeps_the_original() {
        for kind in KINDS {
            for k in [1, 2, 4, 8] {
                let (original, one) = square(kind, k, 7, 1);
                let (_, three) = square(kind, k, 7, 3);
                assert_eq!(one, three, "{kind} k={k}");
                assert_eq!(one.data_root(), three.data_root());
                assert_eq!(one.row_roots(), three.row_roots());
                assert_eq!(one.col_roots(), three.col_roots());
                assert_eq!(one.original_data(), original);
                assert_eq!(one.width(), 2 * k);
                assert_eq!(one.original_width(), k);
                assert_eq!(one.codec(), kind);
                assert_eq!(one.data().len(), 4 * k * k * SHARE_SIZE);
                let (_, other) = square(kind, k, 8, 1);
                assert_ne!(one.data_root(), other.data_root());
            }
        }
    }

    #[test]
    fn commitment_is_the_documented_one() {
        for kind in KINDS {
            let (_, sq) = square(kind, 4, 1, 2);
            let n = sq.width();
            let row_leaves = |r: usize| -> Vec<Hash> {
                (0..n)
                    .map(|c| merkle::leaf_hash(sq.share(r, c).unwrap()))
                    .collect()
            };
            let col_leaves = |c: usize| -> Vec<Hash> {
                (0..n)
                    .map(|r| merkle::leaf_hash(sq.share(r, c).unwrap()))
                    .collect()
            };
            for i in 0..n {
                assert_eq!(sq.row_roots()[i], merkle::root(&row_leaves(i)));
                assert_eq!(sq.col_roots()[i], merkle::root(&col_leaves(i)));
                assert_eq!(sq.leaf(i, 0), Some(row_leaves(i)[0]));
                let row = sq.row(i).unwrap();
                assert_eq!(
                    row,
                    &sq.data()[i * n * SHARE_SIZE..(i + 1) * n * SHARE_SIZE]
                );
                let col = sq.col(i).unwrap();
                assert_eq!(&col[SHARE_SIZE..2 * SHARE_SIZE], sq.share(1, i).unwrap());
            }
            let axis_leaves: Vec<Hash> = sq
                .row_roots()
                .iter()
                .chain(sq.col_roots())
                .map(|r| merkle::leaf_hash(&r.0))
                .collect();
            assert_eq!(sq.data_root(), merkle::root(&axis_leaves));
            assert!(sq.share(n, 0).is_none() && sq.row(n).is_none() && sq.col(n).is_none());
        }
    }

    #[test]
    fn every_share_proves_through_both_axes() {
        for kind in KINDS {
            for k in [1, 4] {
                let (_, sq) = square(kind, k, 3, 2);
                let root = sq.data_root();
                let n = sq.width();
                for r in 0..n {
                    for c in 0..n {
                        let share = sq.share(r, c).unwrap();
                        for axis in [Axis::Row, Axis::Col] {
                            let proof = sq.prove(r, c, axis).unwrap();
                            let (r, c) = (r as u64, c as u64);
                            assert_eq!(proof.square_width(), n as u64);
                            assert!(proof.verify(&root, r, c, share));
                            let mut tampered = share.to_vec();
                            tampered[(r * 7 + c) as usize % SHARE_SIZE] ^= 1;
                            assert!(!proof.verify(&root, r, c, &tampered));
                            assert!(!proof.verify(&root, (r + 1) % n as u64, c, share));
                            assert!(!proof.verify(&root, r, (c + 1) % n as u64, share));
                            assert!(!proof.verify(&root, r + n as u64, c, share));
                            assert!(!proof.verify(&Hash::ZERO, r, c, share));
                            assert!(!proof.verify(&root, r, c, &share[1..]));
                            let mut flipped = proof.clone();
                            flipped.axis = axis.other();
                            assert!(!flipped.verify(&root, r, c, share));
                            let mut short = proof.clone();
                            short.root_proof.siblings.pop();
                            assert!(!short.verify(&root, r, c, share));
                            let mut wide = proof.clone();
                            wide.line_proof.total = 4 * n as u64;
                            wide.root_proof.total = 8 * n as u64;
                            assert!(!wide.verify(&root, r, c, share));
                        }
                    }
                }
                assert!(sq.prove(n, 0, Axis::Row).is_none());
                assert!(sq.prove(0, n, Axis::Col).is_none());
            }
        }
    }

    #[test]
    fn every_line_is_a_codeword() {
        for kind in KINDS {
            for k in [1, 2, 8] {
                let (_, sq) = square(kind, k, 11, 3);
                let n = sq.width();
                let codec = Codec::new(kind, k).unwrap();
                let lines: Vec<Vec<u8>> = (0..n)
                    .map(|r| sq.row(r).unwrap().to_vec())
                    .chain((0..n).map(|c| sq.col(c).unwrap()))
                    .collect();
                for (l, line) in lines.iter().enumerate() {
                    // Several choices of k shares: the data half, the parity half, every
                    // other share, and a window that wraps around.
                    let choices: [Box<dyn Fn(usize) -> bool>; 4] = [
                        Box::new(|p| p < k),
                        Box::new(|p| p >= k),
                        Box::new(|p| p % 2 == 1),
                        Box::new(|p| (p + l) % n < k),
                    ];
                    for keep in &choices {
                        let mut partial: Vec<Option<Vec<u8>>> = line
                            .chunks_exact(SHARE_SIZE)
                            .enumerate()
                            .map(|(p, s)| keep(p).then(|| s.to_vec()))
                            .collect();
                        codec.reconstruct(&mut partial).unwrap();
                        let rebuilt: Vec<u8> =
                            partial.into_iter().flat_map(Option::unwrap).collect();
                        assert_eq!(&rebuilt, line, "{kind} k={k} line {l}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let kind = CodecKind::default();
        assert_eq!(
            ExtendedSquare::extend(kind, 3, &[0; 9 * SHARE_SIZE], 1),
            Err(SquareError::InvalidWidth(3))
        );
        assert_eq!(
            ExtendedSquare::extend(kind, 0, &[], 1),
            Err(SquareError::InvalidWidth(0))
        );
        assert_eq!(
            ExtendedSquare::extend(kind, 1024, &[], 1),
            Err(SquareError::InvalidWidth(1024))
        );
        assert!(matches!(
            ExtendedSquare::extend(kind, 2, &[0; 3 * SHARE_SIZE], 1),
            Err(SquareError::WrongDataLength { .. })
        ));
        // Zero threads means one.
        assert!(ExtendedSquare::extend(kind, 2, &[0; 4 * SHARE_SIZE], 0).is_ok());
    }
}
