//! Rebuilding a whole square from part of its shares, as rsmt2d does: any row or column
//! with at least `k` known shares is decoded, which adds shares to the lines across it,
//! until the square is complete or nothing more can be decoded. A square that its
//! producer extended wrongly is caught on the way and answered with a
//! [`BadEncodingProof`].
//!
//! Two passes. The fast one decodes, in batches and in parallel, only until the original
//! quadrant is known, re-extends the square from it exactly as [`ExtendedSquare::extend`]
//! does (comparing every given share instead of overwriting it) and commits; when every
//! given share matches and every root is the committed one, that square is the committed
//! square, checked in full, at little more than the cost of an extension. Anything else
//! means bad encoding (given correct inputs), and the careful pass starts over from the
//! given shares, checking each line it decodes against its root before using it, so that
//! the first line found bad is one whose shares can be proven.
//!
//! Proofs in a [`BadEncodingProof`] come from what the repairing node can prove itself:
//! a share of a line (row or column) that is complete and whose root is the committed one
//! (given complete, or decoded and checked) is proven through that line's tree; any other
//! given share only if it was given with its own [`ShareProof`]
//! ([`PartialSquare::insert_proven`]). A bad line with fewer than `k` provable shares
//! yields [`RepairError::Inconsistent`]: the block is bad, but more proven shares are
//! needed to convince others.
//!
//! Every share given to repair must be a committed share of the square (checked against
//! `data_root`, e.g. with its [`ShareProof`], before it is inserted): repair trusts them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use lamina_primitives::merkle;

use super::codec::{Codec, CodecError, CodecKind};
use super::extended::{extend_in_place, lines_per_batch, ExtendedSquare, Trees};
use super::proof::{BadEncodingCheck, BadEncodingProof, ProvenShare, ShareProof};
use super::roots::AxisRoots;
use super::tree::Tree;
use super::{buffers, check_width, parallel, Axis, SquareError};
use crate::SHARE_SIZE;

/// Shares of a square as they arrive: a `2k × 2k` buffer and which cells are known.
#[derive(Clone)]
pub struct PartialSquare {
    k: usize,
    data: Vec<u8>,
    known: Vec<bool>,
    known_count: usize,
    proofs: BTreeMap<(usize, usize), ShareProof>,
}

impl fmt::Debug for PartialSquare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialSquare")
            .field("k", &self.k)
            .field("known", &self.known_count)
            .field("proven", &self.proofs.len())
            .finish_non_exhaustive()
    }
}

impl PartialSquare {
    /// An empty square of original width `k`.
    pub fn new(k: usize) -> Result<PartialSquare, SquareError> {
        check_width(k)?;
        let n = 2 * k;
        Ok(PartialSquare {
            k,
            // Only known cells are ever read, so a recycled buffer needs no clearing.
            data: buffers::take_shares(n * n * SHARE_SIZE),
            known: vec![false; n * n],
            known_count: 0,
            proofs: BTreeMap::new(),
        })
    }

    /// A square of original width `k` from its `(2k)²` cells, row-major (`None` =
    /// missing).
    pub fn from_cells(k: usize, cells: Vec<Option<Vec<u8>>>) -> Result<PartialSquare, SquareError> {
        let mut square = PartialSquare::new(k)?;
        let n = 2 * k;
        if cells.len() != n * n {
            return Err(SquareError::WrongDataLength {
                expected: n * n,
                got: cells.len(),
            });
        }
        for (at, cell) in cells.into_iter().enumerate() {
            if let Some(share) = cell {
                square.insert(at / n, at % n, &share)?;
            }
        }
        Ok(square)
    }

    /// Sets share `(row, col)` (replacing any earlier one).
    pub fn insert(&mut self, row: usize, col: usize, share: &[u8]) -> Result<(), SquareError> {
        let n = self.width();
        if row >= n || col >= n {
            return Err(SquareError::OutOfRange { row, col, width: n });
        }
        if share.len() != SHARE_SIZE {
            return Err(SquareError::WrongShareSize(share.len()));
        }
        let at = row * n + col;
        self.data[at * SHARE_SIZE..(at + 1) * SHARE_SIZE].copy_from_slice(share);
        if !self.known[at] {
            self.known[at] = true;
            self.known_count += 1;
        }
        self.proofs.remove(&(row, col));
        Ok(())
    }

    /// Sets share `(row, col)` with its proof, kept for any [`BadEncodingProof`] repair
    /// builds (a proof that does not verify is simply not used).
    pub fn insert_proven(
        &mut self,
        row: usize,
        col: usize,
        share: &[u8],
        proof: ShareProof,
    ) -> Result<(), SquareError> {
        self.insert(row, col, share)?;
        self.proofs.insert((row, col), proof);
        Ok(())
    }

    /// `k`.
    pub fn original_width(&self) -> usize {
        self.k
    }

    /// `2k`.
    pub fn width(&self) -> usize {
        2 * self.k
    }

    /// Whether share `(row, col)` is known.
    pub fn contains(&self, row: usize, col: usize) -> bool {
        row < self.width() && col < self.width() && self.known[row * self.width() + col]
    }

    /// Share `(row, col)` if known.
    pub fn share(&self, row: usize, col: usize) -> Option<&[u8]> {
        if !self.contains(row, col) {
            return None;
        }
        let at = row * self.width() + col;
        self.data.get(at * SHARE_SIZE..(at + 1) * SHARE_SIZE)
    }

    /// Number of known shares.
    pub fn known_count(&self) -> usize {
        self.known_count
    }

    /// Number of cells that stay missing after every possible decoding (0 when the square
    /// can be repaired). Cheap: a peeling pass over the known-cell map, no decoding.
    pub fn unrecoverable_count(&self) -> usize {
        unrecoverable(self.k, &self.known)
    }

    /// Whether [`ExtendedSquare::repair`] can rebuild the whole square (assuming it was
    /// well encoded).
    pub fn is_recoverable(&self) -> bool {
        self.unrecoverable_count() == 0
    }
}

/// Cells left missing after repeatedly filling every line with at least `k` known cells.
fn unrecoverable(k: usize, known: &[bool]) -> usize {
    let n = 2 * k;
    let mut filled = known.to_vec();
    let mut counts = [vec![0usize; n], vec![0usize; n]];
    for r in 0..n {
        for c in 0..n {
            if filled[r * n + c] {
                counts[0][r] += 1;
                counts[1][c] += 1;
            }
        }
    }
    let mut queue: Vec<(Axis, usize)> = (0..n)
        .flat_map(|i| [(Axis::Row, i), (Axis::Col, i)])
        .filter(|&(axis, i)| counts[axis_slot(axis)][i] >= k)
        .collect();
    while let Some((axis, i)) = queue.pop() {
        for p in 0..n {
            let (r, c) = axis.coordinates(i, p);
            if filled[r * n + c] {
                continue;
            }
            filled[r * n + c] = true;
            counts[0][r] += 1;
            counts[1][c] += 1;
            let across = axis.other();
            let line = match across {
                Axis::Row => r,
                Axis::Col => c,
            };
            if counts[axis_slot(across)][line] == k {
                queue.push((across, line));
            }
        }
    }
    filled.iter().filter(|f| !**f).count()
}

fn axis_slot(axis: Axis) -> usize {
    match axis {
        Axis::Row => 0,
        Axis::Col => 1,
    }
}

/// Why a square could not be repaired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    /// The partial square and the roots are for different sizes.
    #[error("partial square has k = {square}, roots have k = {roots}")]
    WidthMismatch {
        /// `k` of the partial square.
        square: usize,
        /// `k` of the roots.
        roots: usize,
    },
    /// Too few shares: this many cells cannot be decoded from the known ones.
    #[error("not enough shares to repair the square: {missing} cells cannot be recovered")]
    Unrecoverable {
        /// Cells that stay missing.
        missing: usize,
    },
    /// The square is not a valid extension of its original data; the proof shows it.
    #[error("the square is badly encoded ({} {})", .0.axis.name(), .0.index)]
    BadEncoding(Box<BadEncodingProof>),
    /// The line's known shares contradict its committed root, but fewer than `k` of them
    /// can be proven, so no [`BadEncodingProof`] could be built (more proven shares may
    /// allow one). Also returned when a given share was not a committed one.
    #[error(
        "{axis:?} {index} is inconsistent with its root, without enough proven shares to show it"
    )]
    Inconsistent {
        /// The line's axis.
        axis: Axis,
        /// The line.
        index: usize,
    },
    /// The codec failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl ExtendedSquare {
    /// Rebuilds the whole square from `partial` and checks it against `roots`, over
    /// `threads` threads. Every share in `partial` must already be verified against the
    /// roots' `data_root` (repair treats them as committed). Fails with `Unrecoverable`
    /// (without decoding anything) when too few shares are known, and with `BadEncoding`
    /// when the committed square is not a codeword, with a proof that verifies against
    /// `roots.data_root()`.
    pub fn repair(
        codec: CodecKind,
        partial: PartialSquare,
        roots: &AxisRoots,
        threads: usize,
    ) -> Result<ExtendedSquare, RepairError> {
        let k = partial.k;
        if roots.original_width() != k {
            return Err(RepairError::WidthMismatch {
                square: k,
                roots: roots.original_width(),
            });
        }
        let missing = partial.unrecoverable_count();
        if missing > 0 {
            return Err(RepairError::Unrecoverable { missing });
        }
        let coder = Codec::new(codec, k)?;
        let PartialSquare {
            mut data,
            known,
            proofs,
            ..
        } = partial;
        if let Some(trees) = fast_path(&coder, &mut data, &known, threads)? {
            let square = ExtendedSquare::from_trees(codec, k, data, trees);
            if square.row_roots() == roots.row_roots() && square.col_roots() == roots.col_roots() {
                return Ok(square);
            }
            data = square.into_data();
        }
        Careful::new(&coder, data, known, proofs, roots).run(threads)
    }
}

/// Decodes lines until the original quadrant is known, then re-extends and commits the
/// square in place, comparing known cells instead of writing them. Returns the trees when
/// every known cell matched the extension. Known cells are never written.
fn fast_path(
    coder: &Codec,
    data: &mut [u8],
    known: &[bool],
    threads: usize,
) -> Result<Option<Trees>, CodecError> {
    let k = coder.original_width();
    let n = 2 * k;
    let mut filled = known.to_vec();
    let mut counts = [vec![0usize; n], vec![0usize; n]];
    for r in 0..n {
        for c in 0..n {
            if filled[r * n + c] {
                counts[0][r] += 1;
                counts[1][c] += 1;
            }
        }
    }
    let decodable = |count: usize| count >= k && count < n;
    loop {
        let q0_missing = |axis: Axis, i: usize| {
            (0..k).any(|p| {
                let (r, c) = axis.coordinates(i, p);
                !filled[r * n + c]
            })
        };
        if !(0..k).any(|r| q0_missing(Axis::Row, r)) {
            break;
        }
        // Lines through the original quadrant first: they are what the extension needs.
        let pick = |axis: Axis, range: Range<usize>, q0: bool| -> Vec<usize> {
            range
                .filter(|&i| decodable(counts[axis_slot(axis)][i]) && (!q0 || q0_missing(axis, i)))
                .collect()
        };
        let candidates = [
            (Axis::Row, pick(Axis::Row, 0..k, true)),
            (Axis::Col, pick(Axis::Col, 0..k, true)),
            (Axis::Row, pick(Axis::Row, 0..n, false)),
            (Axis::Col, pick(Axis::Col, 0..n, false)),
        ];
        let Some((axis, lines)) = candidates.into_iter().find(|(_, lines)| !lines.is_empty())
        else {
            // Unreachable after the recoverability check; the careful pass will report.
            return Ok(None);
        };
        match axis {
            Axis::Row => decode_rows(coder, data, &filled, &lines, threads)?,
            Axis::Col => decode_cols(coder, data, &filled, &lines, threads)?,
        }
        for &i in &lines {
            for p in 0..n {
                let (r, c) = axis.coordinates(i, p);
                if !filled[r * n + c] {
                    filled[r * n + c] = true;
                    counts[0][r] += 1;
                    counts[1][c] += 1;
                }
            }
        }
    }
    let (consistent, trees) = extend_in_place(coder, data, None, Some(known), true, threads)?;
    Ok(consistent.then_some(trees))
}

/// Fills the unfilled cells of each of `rows` (ascending) from its filled ones. Rows with
/// the same filled pattern are decoded together, their shares gathered side by side.
fn decode_rows(
    coder: &Codec,
    data: &mut [u8],
    filled: &[bool],
    rows: &[usize],
    threads: usize,
) -> Result<(), CodecError> {
    let n = coder.width();
    let row_bytes = n * SHARE_SIZE;
    let groups = parallel::ranges(rows.len(), threads);
    let mut jobs: Vec<Vec<(usize, &mut [u8])>> = groups.iter().map(|_| Vec::new()).collect();
    let (mut next, mut group) = (0, 0);
    for (r, row) in data.chunks_exact_mut(row_bytes).enumerate() {
        if rows.get(next) != Some(&r) {
            continue;
        }
        while groups.get(group).is_some_and(|g| next >= g.end) {
            group += 1;
        }
        if let Some(job) = jobs.get_mut(group) {
            job.push((r, row));
        }
        next += 1;
    }
    let pattern = |r: usize| &filled[r * n..(r + 1) * n];
    let batch = lines_per_batch(n);
    let results = parallel::run(jobs, |mut lines| -> Result<(), CodecError> {
        let mut coder = coder.coder();
        lines.sort_by(|a, b| pattern(a.0).cmp(pattern(b.0)));
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); n];
        for same in lines.chunk_by_mut(|a, b| pattern(a.0) == pattern(b.0)) {
            for group in same.chunks_mut(batch) {
                let present = pattern(group[0].0);
                for (i, buffer) in buffers.iter_mut().enumerate() {
                    buffer.resize(group.len() * SHARE_SIZE, 0);
                    if present[i] {
                        for (to, (_, row)) in buffer.chunks_exact_mut(SHARE_SIZE).zip(&*group) {
                            to.copy_from_slice(&row[i * SHARE_SIZE..(i + 1) * SHARE_SIZE]);
                        }
                    }
                }
                let mut shards: Vec<&mut [u8]> =
                    buffers.iter_mut().map(Vec::as_mut_slice).collect();
                coder.reconstruct(&mut shards, present)?;
                for (i, buffer) in buffers.iter().enumerate() {
                    if !present[i] {
                        for (from, (_, row)) in buffer.chunks_exact(SHARE_SIZE).zip(&mut *group) {
                            row[i * SHARE_SIZE..(i + 1) * SHARE_SIZE].copy_from_slice(from);
                        }
                    }
                }
            }
        }
        Ok(())
    });
    results.into_iter().collect()
}

/// Fills the unfilled cells of each of `cols` (ascending) from its filled ones. Adjacent
/// columns with the same filled pattern are decoded together, in place.
fn decode_cols(
    coder: &Codec,
    data: &mut [u8],
    filled: &[bool],
    cols: &[usize],
    threads: usize,
) -> Result<(), CodecError> {
    let n = coder.width();
    let row_bytes = n * SHARE_SIZE;
    let groups = parallel::ranges(cols.len(), threads);
    let spans: Vec<Range<usize>> = groups
        .iter()
        .map(|g| cols[g.start]..cols[g.end - 1] + 1)
        .collect();
    let mut pieces: Vec<Vec<&mut [u8]>> = spans.iter().map(|_| Vec::with_capacity(n)).collect();
    for row in data.chunks_exact_mut(row_bytes) {
        for (list, piece) in pieces
            .iter_mut()
            .zip(parallel::split(row, SHARE_SIZE, &spans))
        {
            list.push(piece);
        }
    }
    let pattern = |c: usize| -> Vec<bool> { (0..n).map(|r| filled[r * n + c]).collect() };
    let batch = lines_per_batch(n);
    let jobs: Vec<_> = groups
        .into_iter()
        .map(|g| &cols[g])
        .zip(spans.iter().map(|s| s.start))
        .zip(pieces)
        .collect();
    let results = parallel::run(
        jobs,
        |((mine, base), mut pieces)| -> Result<(), CodecError> {
            let mut coder = coder.coder();
            let mut j = 0;
            while j < mine.len() {
                let first = mine[j];
                let present = pattern(first);
                let mut end = j + 1;
                while end < mine.len()
                    && end - j < batch
                    && mine[end] == first + (end - j)
                    && pattern(mine[end]) == present
                {
                    end += 1;
                }
                let (a, b) = (
                    (first - base) * SHARE_SIZE,
                    (first - base + end - j) * SHARE_SIZE,
                );
                let mut shards: Vec<&mut [u8]> = pieces.iter_mut().map(|p| &mut p[a..b]).collect();
                coder.reconstruct(&mut shards, &present)?;
                j = end;
            }
            Ok(())
        },
    );
    results.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Fewer than `k` shares known so far.
    Unchecked,
    /// A codeword with the committed root: its shares are all known and proven.
    Good,
    /// Its known shares are not one codeword, or decode to a line with another root.
    Bad,
}

/// The careful pass: decodes one line at a time from the given shares, and uses a line's
/// shares only once the line checks against its root.
struct Careful<'a> {
    coder: &'a Codec,
    k: usize,
    n: usize,
    data: Vec<u8>,
    have: Vec<bool>,
    counts: [Vec<usize>; 2],
    state: [Vec<LineState>; 2],
    /// Trees of lines that are complete with their committed root; they prove shares.
    trees: [Vec<Option<Tree>>; 2],
    proofs: BTreeMap<(usize, usize), ShareProof>,
    roots: &'a AxisRoots,
}

impl<'a> Careful<'a> {
    fn new(
        coder: &'a Codec,
        data: Vec<u8>,
        have: Vec<bool>,
        proofs: BTreeMap<(usize, usize), ShareProof>,
        roots: &'a AxisRoots,
    ) -> Careful<'a> {
        let k = coder.original_width();
        let n = 2 * k;
        let mut counts = [vec![0usize; n], vec![0usize; n]];
        for r in 0..n {
            for c in 0..n {
                if have[r * n + c] {
                    counts[0][r] += 1;
                    counts[1][c] += 1;
                }
            }
        }
        Careful {
            coder,
            k,
            n,
            data,
            have,
            counts,
            state: [vec![LineState::Unchecked; n], vec![LineState::Unchecked; n]],
            trees: [vec![None; n], vec![None; n]],
            proofs,
            roots,
        }
    }

    fn cell(&self, axis: Axis, index: usize, position: usize) -> usize {
        let (r, c) = axis.coordinates(index, position);
        r * self.n + c
    }

    fn share(&self, cell: usize) -> &[u8] {
        &self.data[cell * SHARE_SIZE..(cell + 1) * SHARE_SIZE]
    }

    fn run(mut self, threads: usize) -> Result<ExtendedSquare, RepairError> {
        loop {
            let mut progress = false;
            for axis in [Axis::Row, Axis::Col] {
                for index in 0..self.n {
                    let slot = axis_slot(axis);
                    if self.state[slot][index] == LineState::Unchecked
                        && self.counts[slot][index] >= self.k
                    {
                        self.check(axis, index)?;
                        progress = true;
                    }
                }
            }
            for axis in [Axis::Row, Axis::Col] {
                for index in 0..self.n {
                    if self.state[axis_slot(axis)][index] == LineState::Bad {
                        if let Some(proof) = self.prove_bad(axis, index) {
                            return Err(RepairError::BadEncoding(Box::new(proof)));
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        for axis in [Axis::Row, Axis::Col] {
            if let Some(index) = self.state[axis_slot(axis)]
                .iter()
                .position(|s| *s == LineState::Bad)
            {
                return Err(RepairError::Inconsistent { axis, index });
            }
        }
        let missing = self.have.iter().filter(|h| !**h).count();
        if missing > 0 {
            return Err(RepairError::Unrecoverable { missing });
        }
        let square = ExtendedSquare::commit(self.coder.kind(), self.k, self.data, threads);
        for axis in [Axis::Row, Axis::Col] {
            let (ours, theirs) = match axis {
                Axis::Row => (square.row_roots(), self.roots.row_roots()),
                Axis::Col => (square.col_roots(), self.roots.col_roots()),
            };
            if let Some(index) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                return Err(RepairError::Inconsistent { axis, index });
            }
        }
        Ok(square)
    }

    /// Decodes line `index` of `axis` from its first `k` known shares and checks it: all
    /// known shares agree and the root is the committed one (the line becomes `Good` and
    /// its missing shares known), or not (`Bad`).
    fn check(&mut self, axis: Axis, index: usize) -> Result<(), RepairError> {
        let (n, k) = (self.n, self.k);
        let slot = axis_slot(axis);
        let cells: Vec<usize> = (0..n).map(|p| self.cell(axis, index, p)).collect();
        let present: Vec<bool> = cells.iter().map(|&c| self.have[c]).collect();
        let mut line = vec![0u8; n * SHARE_SIZE];
        for (p, &cell) in cells.iter().enumerate() {
            if present[p] {
                line[p * SHARE_SIZE..(p + 1) * SHARE_SIZE].copy_from_slice(self.share(cell));
            }
        }
        let expected = self.roots.root(axis, index);
        let tree_of = |line: &[u8]| {
            Tree::new(
                line.chunks_exact(SHARE_SIZE)
                    .map(merkle::leaf_hash)
                    .collect(),
            )
        };
        let complete = present.iter().all(|p| *p);
        if complete {
            let tree = tree_of(&line);
            if Some(tree.root()) == expected {
                self.trees[slot][index] = Some(tree);
            }
        }
        let mut selected = vec![false; n];
        for p in (0..n).filter(|&p| present[p]).take(k) {
            selected[p] = true;
        }
        let mut decoded = line.clone();
        let mut shards: Vec<&mut [u8]> = decoded.chunks_exact_mut(SHARE_SIZE).collect();
        self.coder.coder().reconstruct(&mut shards, &selected)?;
        let consistent = decoded
            .chunks_exact(SHARE_SIZE)
            .zip(line.chunks_exact(SHARE_SIZE))
            .zip(&present)
            .all(|((new, old), present)| !present || new == old);
        if consistent {
            // A complete consistent line is its own decoding: its tree is already built.
            let tree = match self.trees[slot][index].take() {
                Some(tree) if complete => tree,
                _ => tree_of(&decoded),
            };
            if Some(tree.root()) == expected {
                for (p, &cell) in cells.iter().enumerate() {
                    if !present[p] {
                        self.data[cell * SHARE_SIZE..(cell + 1) * SHARE_SIZE]
                            .copy_from_slice(&decoded[p * SHARE_SIZE..(p + 1) * SHARE_SIZE]);
                        self.have[cell] = true;
                        self.counts[0][cell / n] += 1;
                        self.counts[1][cell % n] += 1;
                    }
                }
                self.trees[slot][index] = Some(tree);
                self.state[slot][index] = LineState::Good;
                return Ok(());
            }
        }
        self.state[slot][index] = LineState::Bad;
        Ok(())
    }

    /// A proof of share `cell` from a committed line through it, or the proof it was
    /// given with, if that verifies.
    fn prove_share(&self, cell: usize) -> Option<ShareProof> {
        let (r, c) = (cell / self.n, cell % self.n);
        for axis in [Axis::Row, Axis::Col] {
            let (line, position) = match axis {
                Axis::Row => (r, c),
                Axis::Col => (c, r),
            };
            if let Some(tree) = &self.trees[axis_slot(axis)][line] {
                return Some(ShareProof {
                    axis,
                    line_proof: tree.proof(position)?,
                    root_proof: self.roots.prove(axis, line)?,
                });
            }
        }
        let proof = self.proofs.get(&(r, c))?;
        proof
            .verify(
                &self.roots.data_root(),
                r as u64,
                c as u64,
                self.share(cell),
            )
            .then(|| proof.clone())
    }

    /// A verified proof that line `index` of `axis` is bad, if at least `k` of its known
    /// shares can be proven.
    fn prove_bad(&self, axis: Axis, index: usize) -> Option<BadEncodingProof> {
        let shares: Vec<ProvenShare> = (0..self.n)
            .filter_map(|p| {
                let cell = self.cell(axis, index, p);
                if !self.have[cell] {
                    return None;
                }
                Some(ProvenShare {
                    position: p as u64,
                    share: self.share(cell).to_vec(),
                    proof: self.prove_share(cell)?,
                })
            })
            .collect();
        let mut shares = shares;
        if shares.len() < self.k {
            return None;
        }
        // Keep the proof small: the first k shares decide the codeword; one more share is
        // needed only if it is a contradicting one that shows the bad encoding.
        let mut line = vec![0u8; self.n * SHARE_SIZE];
        let mut present = vec![false; self.n];
        for share in &shares[..self.k] {
            let at = share.position as usize;
            line[at * SHARE_SIZE..(at + 1) * SHARE_SIZE].copy_from_slice(&share.share);
            present[at] = true;
        }
        let mut shards: Vec<&mut [u8]> = line.chunks_exact_mut(SHARE_SIZE).collect();
        self.coder.coder().reconstruct(&mut shards, &present).ok()?;
        let contradiction = shares[self.k..].iter().position(|share| {
            let at = share.position as usize;
            line[at * SHARE_SIZE..(at + 1) * SHARE_SIZE] != share.share[..]
        });
        let extra = contradiction.map(|j| shares.swap_remove(self.k + j));
        shares.truncate(self.k);
        shares.extend(extra);
        let proof = BadEncodingProof {
            axis,
            index: index as u64,
            width: self.n as u64,
            codec: self.coder.kind(),
            line_root_proof: self.roots.prove(axis, index)?,
            line_root: self.roots.root(axis, index)?,
            shares,
        };
        proof
            .verify(&self.roots.data_root(), self.coder.kind())
            .is_ok()
            .then_some(proof)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::pseudo_random_bytes;
    use proptest::prelude::*;

    const KINDS: [CodecKind; 2] = [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd];

    fn extended(kind: CodecKind, k: usize, seed: u64) -> ExtendedSquare {
        let original = pseudo_random_bytes(k * k * SHARE_SIZE, seed);
        ExtendedSquare::extend(kind, k, &original, 2).unwrap()
    }

    /// The cells of `square` that `keep(row, col)` selects.
    fn partial_of(square: &ExtendedSquare, keep: impl Fn(usize, usize) -> bool) -> PartialSquare {
        let n = square.width();
        let mut partial = PartialSquare::new(square.original_width()).unwrap();
        for r in 0..n {
            for c in 0..n {
                if keep(r, c) {
                    partial.insert(r, c, square.share(r, c).unwrap()).unwrap();
                }
            }
        }
        partial
    }

    fn bits(count: usize, seed: u64, keep_per_256: u8) -> Vec<bool> {
        pseudo_random_bytes(count, seed)
            .into_iter()
            .map(|b| b < keep_per_256)
            .collect()
    }

    /// Repairs `partial` and checks the outcome against the recoverability oracle.
    fn check_repair(square: &ExtendedSquare, partial: PartialSquare, threads: usize) {
        let recoverable = partial.is_recoverable();
        let missing = partial.unrecoverable_count();
        let result = ExtendedSquare::repair(square.codec(), partial, square.axis_roots(), threads);
        if recoverable {
            let repaired = result.unwrap();
            assert_eq!(&repaired, square);
            assert_eq!(repaired.data_root(), square.data_root());
            assert_eq!(repaired.original_data(), square.original_data());
        } else {
            assert_eq!(result, Err(RepairError::Unrecoverable { missing }));
        }
    }

    #[test]
    fn quadrants_repair() {
        for kind in KINDS {
            for k in [1, 2, 8] {
                let sq = extended(kind, k, 5);
                for threads in [1, 3] {
                    // Q0 only, Q3 only, Q1 only, the top half, one row's worth short.
                    check_repair(&sq, partial_of(&sq, |r, c| r < k && c < k), threads);
                    check_repair(&sq, partial_of(&sq, |r, c| r >= k && c >= k), threads);
                    check_repair(&sq, partial_of(&sq, |r, c| r < k && c >= k), threads);
                    check_repair(&sq, partial_of(&sq, |r, _| r < k), threads);
                    check_repair(
                        &sq,
                        partial_of(&sq, |r, c| r >= k && c >= k && r + c > 2 * k),
                        threads,
                    );
                    check_repair(&sq, partial_of(&sq, |_, _| true), threads);
                }
                let none = partial_of(&sq, |_, _| false);
                assert_eq!(none.unrecoverable_count(), 4 * k * k);
                check_repair(&sq, none, 1);
            }
        }
    }

    #[test]
    fn partial_square_bookkeeping() {
        let sq = extended(CodecKind::default(), 2, 1);
        let mut partial = PartialSquare::new(2).unwrap();
        assert!(PartialSquare::new(3).is_err());
        assert_eq!(
            partial.insert(4, 0, sq.share(0, 0).unwrap()),
            Err(SquareError::OutOfRange {
                row: 4,
                col: 0,
                width: 4
            })
        );
        assert_eq!(
            partial.insert(0, 0, &[1, 2]),
            Err(SquareError::WrongShareSize(2))
        );
        partial.insert(1, 2, sq.share(1, 2).unwrap()).unwrap();
        partial.insert(1, 2, sq.share(1, 2).unwrap()).unwrap();
        assert_eq!(partial.known_count(), 1);
        assert!(partial.contains(1, 2) && !partial.contains(2, 1) && !partial.contains(9, 9));
        assert_eq!(partial.share(1, 2), sq.share(1, 2));
        assert_eq!(partial.share(0, 0), None);
        assert_eq!(partial.width(), 4);
        assert_eq!(partial.original_width(), 2);
        let cells: Vec<Option<Vec<u8>>> = (0..16)
            .map(|i| (i % 3 == 0).then(|| sq.share(i / 4, i % 4).unwrap().to_vec()))
            .collect();
        let from_cells = PartialSquare::from_cells(2, cells).unwrap();
        assert_eq!(from_cells.known_count(), 6);
        assert!(PartialSquare::from_cells(2, vec![None; 15]).is_err());
        let other = extended(CodecKind::default(), 4, 1);
        assert_eq!(
            ExtendedSquare::repair(CodecKind::default(), from_cells, other.axis_roots(), 1),
            Err(RepairError::WidthMismatch {
                square: 2,
                roots: 4
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_erasures_repair_or_report(
            log_k in 0u32..4,
            kind_index in 0usize..2,
            seed in any::<u64>(),
            keep_per_256 in 64u8..=255,
            threads in 1usize..4,
        ) {
            let k = 1usize << log_k;
            let sq = extended(KINDS[kind_index], k, seed);
            let n = 2 * k;
            let keep = bits(n * n, seed ^ 0xabc, keep_per_256);
            check_repair(&sq, partial_of(&sq, |r, c| keep[r * n + c]), threads);
            // Up to a quarter of the cells erased: always recoverable.
            let erase = bits(n * n, seed ^ 0x123, 64);
            let partial = partial_of(&sq, |r, c| !erase[r * n + c]);
            if erase.iter().filter(|e| **e).count() <= k * k {
                prop_assert!(partial.is_recoverable() || k == 1);
            }
            check_repair(&sq, partial, threads);
        }
    }

    /// `square` with share `(row, col)` changed and the commitment recomputed over the
    /// changed square: a committed square that is not a codeword.
    fn corrupted(square: &ExtendedSquare, row: usize, col: usize) -> ExtendedSquare {
        let n = square.width();
        let mut data = square.data().to_vec();
        data[(row * n + col) * SHARE_SIZE + 17] ^= 0x5a;
        ExtendedSquare::commit(square.codec(), square.original_width(), data, 1)
    }

    fn expect_bad_encoding(bad: &ExtendedSquare, partial: PartialSquare) -> BadEncodingProof {
        match ExtendedSquare::repair(bad.codec(), partial, bad.axis_roots(), 2) {
            Err(RepairError::BadEncoding(proof)) => {
                proof.verify(&bad.data_root(), bad.codec()).unwrap();
                // The first k shares, and one contradicting share at most.
                assert!(proof.shares.len() <= bad.original_width() + 1);
                *proof
            }
            other => panic!("expected a bad-encoding proof, got {other:?}"),
        }
    }

    #[test]
    fn bad_encoding_is_caught_with_a_proof() {
        for kind in KINDS {
            let k = 4;
            let sq = extended(kind, k, 9);
            // A parity share changed, everything known: the row through it is proven bad
            // through its own tree.
            let bad = corrupted(&sq, 0, 2 * k - 1);
            let proof = expect_bad_encoding(&bad, partial_of(&bad, |_, _| true));
            assert!(proof.index == 0 || proof.index == 2 * k as u64 - 1);
            // Only the original quadrant known: the bad row decodes to another root; its
            // proof comes from columns decoded and checked on the way.
            let bad = corrupted(&sq, 0, k);
            expect_bad_encoding(&bad, partial_of(&bad, |r, c| r < k && c < k));
            // Only the parity quadrant known.
            let bad = corrupted(&sq, 2 * k - 1, 1);
            expect_bad_encoding(&bad, partial_of(&bad, |r, c| r >= k && c >= k || r == 0));
            // An original share changed.
            let bad = corrupted(&sq, 1, 1);
            expect_bad_encoding(&bad, partial_of(&bad, |_, _| true));
        }
    }

    #[test]
    fn given_proofs_are_used_when_nothing_else_proves() {
        let kind = CodecKind::default();
        let k = 2;
        let sq = extended(kind, k, 4);
        // Every parity share replaced: no line of the committed square is a codeword, and
        // from Q0 alone no line can be checked, so only the given proofs can prove.
        let n = sq.width();
        let mut data = sq.data().to_vec();
        for r in 0..n {
            for c in 0..n {
                if r >= k || c >= k {
                    data[(r * n + c) * SHARE_SIZE] ^= 1;
                }
            }
        }
        let bad = ExtendedSquare::commit(kind, k, data, 1);
        let q0 = partial_of(&bad, |r, c| r < k && c < k);
        assert!(matches!(
            ExtendedSquare::repair(kind, q0, bad.axis_roots(), 1),
            Err(RepairError::Inconsistent { .. })
        ));
        let mut proven = PartialSquare::new(k).unwrap();
        for r in 0..k {
            for c in 0..k {
                let proof = bad.prove(r, c, Axis::Row).unwrap();
                proven
                    .insert_proven(r, c, bad.share(r, c).unwrap(), proof)
                    .unwrap();
            }
        }
        expect_bad_encoding(&bad, proven);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_corruption_is_refused(
            log_k in 1u32..4,
            kind_index in 0usize..2,
            seed in any::<u64>(),
            keep_per_256 in 128u8..=255,
        ) {
            let k = 1usize << log_k;
            let n = 2 * k;
            let sq = extended(KINDS[kind_index], k, seed);
            let at = (seed % (n * n) as u64) as usize;
            let bad = corrupted(&sq, at / n, at % n);
            let keep = bits(n * n, seed ^ 0x77, keep_per_256);
            let partial = partial_of(&bad, |r, c| keep[r * n + c]);
            let recoverable = partial.is_recoverable();
            match ExtendedSquare::repair(bad.codec(), partial, bad.axis_roots(), 2) {
                Err(RepairError::BadEncoding(proof)) => {
                    prop_assert!(proof.verify(&bad.data_root(), bad.codec()).is_ok());
                }
                Err(RepairError::Inconsistent { .. }) => {}
                Err(RepairError::Unrecoverable { .. }) => prop_assert!(!recoverable),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            // With every share known, the bad line is always provable.
            let full = partial_of(&bad, |_, _| true);
            let full_result = ExtendedSquare::repair(bad.codec(), full, bad.axis_roots(), 1);
            prop_assert!(matches!(full_result, Err(RepairError::BadEncoding(_))), "full: {:?}", full_result);
        }
    }
}
