//! Scoped-thread helpers: split work into contiguous parts and run each part on its own
//! thread, so a square's rows, columns and hashes spread over the cores a caller grants.

use std::ops::Range;

/// Splits `0..n` into at most `parts` contiguous, non-empty ranges of near-equal length.
pub(crate) fn ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let (base, extra) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 0..parts {
        let len = base + usize::from(part < extra);
        if len > 0 {
            out.push(start..start + len);
        }
        start += len;
    }
    out
}

/// Cuts `buffer` into the pieces that hold `ranges` (ascending, disjoint) of items made of
/// `unit` elements each; elements between the ranges are skipped. Ranges past the end get
/// empty pieces.
pub(crate) fn split<'a, T>(
    mut buffer: &'a mut [T],
    unit: usize,
    ranges: &[Range<usize>],
) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut at = 0;
    for range in ranges {
        let skip = (range.start.saturating_sub(at) * unit).min(buffer.len());
        let rest = std::mem::take(&mut buffer).split_at_mut(skip).1;
        let take = (range.len() * unit).min(rest.len());
        let (piece, tail) = rest.split_at_mut(take);
        out.push(piece);
        buffer = tail;
        at = range.end;
    }
    out
}

/// Runs `work` on every job, the first on the calling thread and each other on a scoped
/// thread of its own; returns the results in job order. One job runs without any thread.
pub(crate) fn run<J: Send, R: Send>(jobs: Vec<J>, work: impl Fn(J) -> R + Sync) -> Vec<R> {
    if jobs.len() <= 1 {
        return jobs.into_iter().map(work).collect();
    }
    let count = jobs.len();
    std::thread::scope(|scope| {
        let work = &work;
        let mut jobs = jobs.into_iter();
        let first = jobs.next();
        let handles: Vec<_> = jobs.map(|job| scope.spawn(move || work(job))).collect();
        let mut out = Vec::with_capacity(count);
        out.extend(first.map(work));
        for handle in handles {
            // A panic in a worker is a bug here; carry it to the caller as-is.
            out.push(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        assert_eq!(ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(ranges(2, 8), vec![0..1, 1..2]);
        assert_eq!(ranges(5, 0), vec![0..5]);
        assert_eq!(ranges(0, 4), Vec::<Range<usize>>::new());
    }

    #[test]
    fn split_and_run() {
        let mut buffer: Vec<u8> = (0..10).collect();
        let pieces = split(&mut buffer, 2, &[0..1, 3..5]);
        assert_eq!(pieces.len(), 2);
        let sums = run(pieces, |piece: &mut [u8]| {
            piece.iter_mut().for_each(|b| *b += 100);
            piece.len()
        });
        assert_eq!(sums, vec![2, 4]);
        assert_eq!(buffer, vec![100, 101, 2, 3, 4, 5, 106, 107, 108, 109]);
    }
}
