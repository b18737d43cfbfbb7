//! Criterion benchmarks of the 2D Reed-Solomon square's inner loops: extension with
//! commitment, verifying one sample, and repair from the parity quadrant alone.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lamina_da::square::{Axis, CodecKind, ExtendedSquare, PartialSquare};
use lamina_da::SHARE_SIZE;

const KINDS: [CodecKind; 2] = [CodecKind::ReedSolomonSimd, CodecKind::ReedSolomonErasure];

fn original(k: usize) -> Vec<u8> {
    // Arbitrary but fixed bytes: the codecs' speed does not depend on the content.
    (0..k * k * SHARE_SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

fn extend(c: &mut Criterion) {
    let mut group = c.benchmark_group("extend_commit");
    group.sample_size(10);
    for kind in KINDS {
        for k in [64, 128] {
            let data = original(k);
            group.bench_function(format!("{kind}/k{k}"), |b| {
                b.iter(|| ExtendedSquare::extend(kind, k, &data, 1))
            });
        }
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let k = 128;
    let square = ExtendedSquare::extend(CodecKind::default(), k, &original(k), 1);
    let Ok(square) = square else {
        return;
    };
    let (row, col) = (3 * k / 2, k / 3);
    let (Some(share), Some(proof)) = (square.share(row, col), square.prove(row, col, Axis::Col))
    else {
        return;
    };
    let root = square.data_root();
    c.bench_function("verify_sample/k128", |b| {
        b.iter(|| proof.verify(&root, row as u64, col as u64, share))
    });
}

fn repair(c: &mut Criterion) {
    let mut group = c.benchmark_group("repair_from_q3");
    group.sample_size(10);
    for kind in KINDS {
        for k in [64, 128] {
            let Ok(square) = ExtendedSquare::extend(kind, k, &original(k), 1) else {
                continue;
            };
            let partial = || {
                let mut partial = PartialSquare::new(k).ok()?;
                for r in k..2 * k {
                    for c in k..2 * k {
                        partial.insert(r, c, square.share(r, c)?).ok()?;
                    }
                }
                Some(partial)
            };
            group.bench_function(format!("{kind}/k{k}"), |b| {
                b.iter_batched(
                    partial,
                    |partial| {
                        partial.map(|p| ExtendedSquare::repair(kind, p, square.axis_roots(), 1))
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, extend, verify, repair);
criterion_main!(benches);
