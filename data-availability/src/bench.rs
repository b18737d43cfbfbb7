//! A self-contained benchmark of the 2D Reed-Solomon square at block sizes (extension and
//! commitment, sample verification, repair from the parity quadrant, restoring a pruned
//! height from peers' rows, raw codec speed), for both codecs, printed as a table. Run it
//! through `lamina bench da` (release build); the criterion benchmarks
//! (`cargo bench -p lamina-da`) cover the same inner loops at small sizes.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::reed_solomon::{rebuild_pruned, PrunedHeight, SquareBuilder};
use crate::square::codec::{Codec, CodecKind};
use crate::square::extended::extend_in_place;
use crate::square::{
    pseudo_random_bytes, release_spare_buffers, square_width_for, Axis, ExtendedSquare,
    PartialSquare, RepairError, SquareError, MAX_SQUARE_WIDTH,
};
use crate::SHARE_SIZE;
use lamina_primitives::interfaces::da::{DaError, HeldShares, ShareHolder};

/// Largest `k` benchmarked with `reed-solomon-erasure`: above 128 a line has more than 256
/// shares and that crate switches to its GF(2^16), a table-driven `O(k²)` matrix code
/// whose encoding alone takes about 20 s for a 32 MiB square (k = 256) and 2.5 min for
/// 128 MiB (k = 512) on one core of the reference machine, where the FFT codec takes a
/// fraction of a second; such rows are reported as skipped.
pub const ERASURE_MAX_BENCH_K: usize = 128;

/// Share proofs verified per timing run (their mean is one sample).
const VERIFY_BATCH: usize = 2000;

/// Validators the rows of a pruned height are spread over in the restore measurement;
/// two of them together hold `2k / 4 × 2 = k` rows, exactly enough to rebuild.
const RESTORE_HOLDERS: u32 = 4;
/// Height the restore measurement prunes at: any works, it only shifts which rows each
/// holder keeps.
const RESTORE_HEIGHT: u64 = 1;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaBenchOptions {
    /// Sizes of original data in MiB (1 MiB = 2048 shares, padded up to a square:
    /// 1 → k 64, 8 → k 128, 32 → k 256, 128 → k 512).
    pub sizes_mib: Vec<u64>,
    /// Threads for extension and repair.
    pub threads: usize,
    /// Timed runs per measurement; the median is reported.
    pub runs: usize,
}

impl Default for DaBenchOptions {
    fn default() -> Self {
        DaBenchOptions {
            sizes_mib: vec![1, 8, 32, 128],
            threads: 1,
            runs: 3,
        }
    }
}

/// One size × codec × thread count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaBenchRow {
    /// Original data in MiB.
    pub size_mib: u64,
    /// Original shares per line.
    pub k: usize,
    /// The codec.
    pub codec: CodecKind,
    /// Threads used.
    pub threads: usize,
    /// Median time to extend the original data and commit (leaf hashes, every row and
    /// column tree, `data_root`) in steady state: the buffers of the previous square are
    /// recycled (see [`release_spare_buffers`]).
    pub extend_commit_ms: Option<f64>,
    /// The same for the first square of a process: fresh memory, every page faulted in.
    pub extend_commit_cold_ms: Option<f64>,
    /// Median time to verify one share proof against `data_root` (mean over a batch of
    /// random shares and axes).
    pub sample_verify_us: Option<f64>,
    /// Median time to repair the whole square from its parity quadrant Q3 alone (`k × k`
    /// shares, the least data that rebuilds it, and the case that needs the most
    /// decoding: every row of the bottom half, then the left columns), checked against
    /// the roots; buffers recycled as for `extend_commit_ms`.
    pub rebuild_ms: Option<f64>,
    /// `rebuild_ms / extend_commit_ms`.
    pub rebuild_ratio: Option<f64>,
    /// Median time to restore a pruned height as a node does when two holders answer:
    /// rows spread over four validators (`ShareHolder { index, count: 4 }`), the node's own
    /// left out, and the `k` rows of holders 0 and 1 given to `rebuild_pruned`, which
    /// extends each from its first `k` shares and checks it against its row root, repairs
    /// the square from those `k` verified rows and checks `data_root`; buffers recycled as
    /// for `extend_commit_ms`.
    pub restore_rows_ms: Option<f64>,
    /// `restore_rows_ms / extend_commit_ms`.
    pub restore_ratio: Option<f64>,
    /// MiB of the original quadrant (padding included) per second through the codec
    /// alone: the `k` row and `2k` column encodings an extension does, into a ready
    /// buffer, without hashing: the bound on extension speed.
    pub raw_codec_mib_per_s: Option<f64>,
    /// Why measurements are missing, if they are.
    pub note: String,
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A size needs a square wider than [`MAX_SQUARE_WIDTH`] (or is zero).
    #[error("{0} MiB does not fit a square of width at most {MAX_SQUARE_WIDTH}")]
    InvalidSize(u64),
    /// Building a square failed.
    #[error(transparent)]
    Square(#[from] SquareError),
    /// Repairing failed.
    #[error(transparent)]
    Repair(#[from] RepairError),
    /// Restoring a pruned height from held rows failed.
    #[error(transparent)]
    Restore(#[from] DaError),
    /// A repaired square differed from the original one.
    #[error("the repaired square differs from the extended one ({0}, k = {1})")]
    Mismatch(CodecKind, usize),
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Runs every size with each codec and returns one row per pair.
pub fn run(options: &DaBenchOptions) -> Result<Vec<DaBenchRow>, BenchError> {
    let runs = options.runs.max(1);
    let threads = options.threads.max(1);
    let mut rows = Vec::new();
    for &size_mib in &options.sizes_mib {
        let bytes = usize::try_from(size_mib)
            .ok()
            .and_then(|mib| mib.checked_mul(1 << 20))
            .filter(|bytes| *bytes > 0)
            .ok_or(BenchError::InvalidSize(size_mib))?;
        let k = square_width_for(bytes.div_ceil(SHARE_SIZE));
        if k > MAX_SQUARE_WIDTH {
            return Err(BenchError::InvalidSize(size_mib));
        }
        let mut original = pseudo_random_bytes(bytes, size_mib);
        original.resize(k * k * SHARE_SIZE, 0);
        for codec in [CodecKind::ReedSolomonSimd, CodecKind::ReedSolomonErasure] {
            let mut row = DaBenchRow {
                size_mib,
                k,
                codec,
                threads,
                extend_commit_ms: None,
                extend_commit_cold_ms: None,
                sample_verify_us: None,
                rebuild_ms: None,
                rebuild_ratio: None,
                restore_rows_ms: None,
                restore_ratio: None,
                raw_codec_mib_per_s: None,
                note: String::new(),
            };
            if codec == CodecKind::ReedSolomonErasure && k > ERASURE_MAX_BENCH_K {
                row.note = format!(
                    "skipped above k = {ERASURE_MAX_BENCH_K}: GF(2^16), ~20 s at k 256, ~2.5 min at k 512"
                );
                rows.push(row);
                continue;
            }
            measure(&mut row, &original, runs)?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn measure(row: &mut DaBenchRow, original: &[u8], runs: usize) -> Result<(), BenchError> {
    let (codec, k, threads) = (row.codec, row.k, row.threads);
    let n = 2 * k;
    // Cold: fresh memory, as for the first square a process builds.
    release_spare_buffers();
    let start = Instant::now();
    let mut square = ExtendedSquare::extend(codec, k, original, threads)?;
    row.extend_commit_cold_ms = Some(ms(start.elapsed()));
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        // The previous square goes first, as a node drops old squares, so its buffers
        // can be recycled.
        drop(square);
        let start = Instant::now();
        square = ExtendedSquare::extend(codec, k, original, threads)?;
        times.push(start.elapsed());
    }
    let extend = median(times);
    row.extend_commit_ms = Some(ms(extend));

    let root = square.data_root();
    let picks = pseudo_random_bytes(VERIFY_BATCH * 8, k as u64);
    let samples: Vec<_> = picks
        .chunks_exact(8)
        .filter_map(|pick| {
            let (r, c) = (
                usize::from(pick[0]) * 256 + usize::from(pick[1]),
                usize::from(pick[2]) * 256 + usize::from(pick[3]),
            );
            let (r, c) = (r % n, c % n);
            let axis = if pick[4] % 2 == 0 {
                Axis::Row
            } else {
                Axis::Col
            };
            Some((
                r as u64,
                c as u64,
                square.share(r, c)?.to_vec(),
                square.prove(r, c, axis)?,
            ))
        })
        .collect();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let valid = samples
            .iter()
            .filter(|(r, c, share, proof)| proof.verify(&root, *r, *c, share))
            .count();
        let elapsed = start.elapsed();
        if valid != samples.len() {
            return Err(BenchError::Mismatch(codec, k));
        }
        times.push(elapsed / samples.len().max(1) as u32);
    }
    row.sample_verify_us = Some(median(times).as_secs_f64() * 1e6);

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut partial = PartialSquare::new(k)?;
        for r in k..n {
            for c in k..n {
                if let Some(share) = square.share(r, c) {
                    partial.insert(r, c, share)?;
                }
            }
        }
        let start = Instant::now();
        let repaired = ExtendedSquare::repair(codec, partial, square.axis_roots(), threads)?;
        times.push(start.elapsed());
        if repaired != square {
            return Err(BenchError::Mismatch(codec, k));
        }
    }
    let rebuild = median(times);
    row.rebuild_ms = Some(ms(rebuild));
    row.rebuild_ratio = Some(rebuild.as_secs_f64() / extend.as_secs_f64().max(1e-12));

    let restore = time_restore(&square, threads, runs)?;
    row.restore_rows_ms = Some(ms(restore));
    row.restore_ratio = Some(restore.as_secs_f64() / extend.as_secs_f64().max(1e-12));

    let coder = Codec::new(codec, k).map_err(SquareError::from)?;
    let mut buffer = vec![0u8; n * n * SHARE_SIZE];
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        extend_in_place(&coder, &mut buffer, Some(original), None, false, threads)
            .map_err(SquareError::from)?;
        times.push(start.elapsed());
    }
    let mib = original.len() as f64 / f64::from(1 << 20);
    row.raw_codec_mib_per_s = Some(mib / median(times).as_secs_f64().max(1e-12));
    Ok(())
}

/// Median time of `rebuild_pruned` restoring `square` from the rows holders 0 and 1 of
/// [`RESTORE_HOLDERS`] keep, each as its first `k` shares as a pruned height stores it; the
/// node's own entry (holder 2) holds no rows, so every row comes from a peer and is checked.
fn time_restore(
    square: &ExtendedSquare,
    threads: usize,
    runs: usize,
) -> Result<Duration, BenchError> {
    let (codec, k) = (square.codec(), square.original_width());
    let data_root = square.data_root();
    let builder = SquareBuilder {
        codec,
        threads,
        // Only checked when committing a new body, never by a rebuild.
        max_body_bytes: u64::MAX,
        bad_encoding: false,
    };
    let held = |index: u32| -> Result<HeldShares, BenchError> {
        let holder = ShareHolder {
            index,
            count: RESTORE_HOLDERS,
        };
        let rows = crate::reed_solomon::held_rows(square, RESTORE_HEIGHT, holder)?;
        Ok(HeldShares {
            columns: Vec::new(),
            height: RESTORE_HEIGHT,
            data_root,
            original_width: k as u64,
            rows,
        })
    };
    let given = vec![held(0)?, held(1)?];
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        // Owned inputs, as a node gets them from storage and peers; copied outside the
        // timing.
        let kept = PrunedHeight {
            roots: square.axis_roots().clone(),
            rows: Vec::new(),
        };
        let given = given.clone();
        let start = Instant::now();
        let restored = rebuild_pruned(&builder, RESTORE_HEIGHT, data_root, kept, given)?;
        times.push(start.elapsed());
        if restored != *square {
            return Err(BenchError::Mismatch(codec, k));
        }
        // Dropped here so the next run reuses its buffers, as the repair loop does.
        drop(restored);
    }
    Ok(median(times))
}

/// The rows as an aligned text table.
pub fn render(rows: &[DaBenchRow]) -> String {
    let header = [
        "size MiB",
        "k",
        "codec",
        "threads",
        "extend+commit ms",
        "cold ms",
        "verify us",
        "rebuild ms",
        "rebuild/extend",
        "restore ms",
        "restore/extend",
        "codec MiB/s",
        "note",
    ];
    let number = |value: Option<f64>, digits: usize| {
        value.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
    };
    let cells: Vec<[String; 13]> = rows
        .iter()
        .map(|row| {
            [
                row.size_mib.to_string(),
                row.k.to_string(),
                row.codec.to_string(),
                row.threads.to_string(),
                number(row.extend_commit_ms, 1),
                number(row.extend_commit_cold_ms, 1),
                number(row.sample_verify_us, 2),
                number(row.rebuild_ms, 1),
                number(row.rebuild_ratio, 2),
                number(row.restore_rows_ms, 1),
                number(row.restore_ratio, 2),
                number(row.raw_codec_mib_per_s, 0),
                row.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |line: Vec<&str>| {
        let text: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                // Text columns left-aligned, numbers right-aligned.
                if i == 2 || i == 12 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    push(header.to_vec());
    for line in &cells {
        push(line.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_and_tables_render() {
        let options = DaBenchOptions {
            sizes_mib: vec![0],
            ..DaBenchOptions::default()
        };
        assert!(matches!(run(&options), Err(BenchError::InvalidSize(0))));
        let options = DaBenchOptions {
            sizes_mib: vec![129],
            ..DaBenchOptions::default()
        };
        assert!(matches!(run(&options), Err(BenchError::InvalidSize(129))));
        let row = DaBenchRow {
            size_mib: 32,
            k: 256,
            codec: CodecKind::ReedSolomonErasure,
            threads: 2,
            extend_commit_ms: None,
            extend_commit_cold_ms: None,
            sample_verify_us: None,
            rebuild_ms: None,
            rebuild_ratio: None,
            restore_rows_ms: None,
            restore_ratio: None,
            raw_codec_mib_per_s: None,
            note: "skipped".into(),
        };
        let mut restored = row.clone();
        restored.restore_rows_ms = Some(98.76);
        restored.restore_ratio = Some(1.234);
        let mut fast = row.clone();
        fast.codec = CodecKind::ReedSolomonSimd;
        fast.extend_commit_ms = Some(123.456);
        fast.note.clear();
        let table = render(&[fast, row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("size MiB"));
        assert!(lines[1].contains("reed-solomon-simd") && lines[1].contains("123.5"));
        assert!(lines[2].ends_with("skipped"));
        assert!(lines[0].contains("restore ms") && lines[0].contains("restore/extend"));
        let table = render(&[restored]);
        let line = table.lines().nth(1).unwrap();
        assert!(line.contains("98.8") && line.contains("1.23"));
    }

    #[test]
    fn restore_rebuilds_from_two_of_four_holders() {
        // A 4 × 4 square (8 × 8 extended): each of the four holders keeps 2 rows, so two of
        // them give exactly k = 4; the timing fails unless the rebuilt square is the same.
        for codec in [CodecKind::ReedSolomonSimd, CodecKind::ReedSolomonErasure] {
            let k = 4;
            let original = pseudo_random_bytes(k * k * SHARE_SIZE, 7);
            let square = ExtendedSquare::extend(codec, k, &original, 1).unwrap();
            time_restore(&square, 1, 2).unwrap();
        }
    }
}
