//! How a block body (its namespaced blobs) becomes the original data of a square, and
//! proofs that show a light client every blob of one namespace, or that there is none.
//!
//! The original data is a table of contents followed by the blobs' data, back to back in
//! body order, then zeros up to `k * k * SHARE_SIZE` bytes, `k` the smallest square width
//! that holds it ([`square_width_for`]):
//!
//! ```text
//! u32 LE blob_count
//! blob_count × ( namespace: 8 bytes ‖ offset: u32 LE ‖ length: u32 LE )
//! blob data, in body order
//! zero padding
//! ```
//!
//! `offset` counts bytes from the start of the original data; the first blob starts right
//! after the table and each next one right after the previous. [`parse`] accepts exactly
//! these bytes (contiguous offsets, zero padding, smallest `k`), so a body has exactly one
//! layout and a square exactly one body. Share `i` of the original data is cell
//! `(i / k, i % k)` of the square.

use lamina_primitives::{Blob, Namespace};

pub use lamina_primitives::da::{
    covering, read_toc, toc_len, BlobProof, LayoutError, NamespaceProof, NamespaceProofError,
    QuadrantShare, TocEntry, TOC_ENTRY_BYTES, TOC_HEADER_BYTES,
};

use super::extended::ExtendedSquare;
use super::{is_valid_width, square_width_for, Axis, MAX_ORIGINAL_BYTES};
use crate::SHARE_SIZE;

/// The original data of `body` and its square width `k`.
pub fn layout(body: &[Blob]) -> Result<(usize, Vec<u8>), LayoutError> {
    let too_large = |bytes: usize| LayoutError::TooLarge { bytes };
    let toc = body
        .len()
        .checked_mul(TOC_ENTRY_BYTES)
        .and_then(|entries| entries.checked_add(TOC_HEADER_BYTES))
        .ok_or(too_large(usize::MAX))?;
    let total = body
        .iter()
        .try_fold(toc, |sum, blob| sum.checked_add(blob.data.len()))
        .ok_or(too_large(usize::MAX))?;
    if total > MAX_ORIGINAL_BYTES {
        return Err(too_large(total));
    }
    let k = square_width_for(total.div_ceil(SHARE_SIZE));
    let to_u32 = |value: usize| u32::try_from(value).map_err(|_| too_large(total));
    let mut out = Vec::with_capacity(k * k * SHARE_SIZE);
    out.extend_from_slice(&to_u32(body.len())?.to_le_bytes());
    let mut offset = toc;
    for blob in body {
        out.extend_from_slice(&blob.namespace.0);
        out.extend_from_slice(&to_u32(offset)?.to_le_bytes());
        out.extend_from_slice(&to_u32(blob.data.len())?.to_le_bytes());
        offset += blob.data.len();
    }
    for blob in body {
        out.extend_from_slice(&blob.data);
    }
    out.resize(k * k * SHARE_SIZE, 0);
    Ok((k, out))
}

/// `k` for original data of `len` bytes, if that is `k * k * SHARE_SIZE` for a valid `k`.
fn width_of_len(len: usize) -> Option<usize> {
    if len == 0 || len % SHARE_SIZE != 0 {
        return None;
    }
    let shares = len / SHARE_SIZE;
    let k = square_width_for(shares);
    (k * k == shares && is_valid_width(k)).then_some(k)
}

/// The body whose layout is `original`, refusing anything [`layout`] would not produce.
pub fn parse(original: &[u8]) -> Result<Vec<Blob>, LayoutError> {
    let k = width_of_len(original.len()).ok_or(LayoutError::InvalidSize(original.len()))?;
    let (entries, end) = read_toc(original, original.len())?;
    if original[end..].iter().any(|b| *b != 0) {
        return Err(LayoutError::NonZeroPadding);
    }
    let expected = square_width_for(end.div_ceil(SHARE_SIZE));
    if expected != k {
        return Err(LayoutError::NotMinimal { expected, got: k });
    }
    Ok(entries
        .iter()
        .map(|entry| Blob {
            namespace: entry.namespace,
            data: original[entry.range()].to_vec(),
        })
        .collect())
}

fn quadrant_share(square: &ExtendedSquare, index: usize) -> Option<QuadrantShare> {
    let k = square.original_width();
    let (row, col) = (index / k, index % k);
    if row >= k {
        return None;
    }
    Some(QuadrantShare {
        row: row as u64,
        col: col as u64,
        share: square.share(row, col)?.to_vec(),
        proof: square.prove(row, col, Axis::Row)?,
    })
}

/// Proves every blob of `namespace` in `square` (whose original data must be a valid
/// layout's table of contents; the rest is not read): the table's shares and each of
/// that namespace's blobs' shares.
pub fn prove_namespace(
    square: &ExtendedSquare,
    namespace: Namespace,
) -> Result<NamespaceProof, LayoutError> {
    let k = square.original_width();
    let total = k * k * SHARE_SIZE;
    let missing = || LayoutError::InvalidToc("table runs past the square".into());
    let first = square.share(0, 0).ok_or_else(missing)?;
    let toc_shares = toc_len(first, total)?.div_ceil(SHARE_SIZE);
    let toc: Vec<QuadrantShare> = (0..toc_shares)
        .map(|i| quadrant_share(square, i).ok_or_else(missing))
        .collect::<Result<_, _>>()?;
    let bytes: Vec<u8> = toc.iter().flat_map(|s| s.share.iter().copied()).collect();
    let (entries, _) = read_toc(&bytes, total)?;
    let blobs = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.namespace == namespace)
        .map(|(i, entry)| {
            let shares = covering(entry.range())
                .map(|s| quadrant_share(square, s).ok_or_else(missing))
                .collect::<Result<_, _>>()?;
            Ok(BlobProof {
                entry: i as u64,
                shares,
            })
        })
        .collect::<Result<_, LayoutError>>()?;
    Ok(NamespaceProof { toc, blobs })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::square::{pseudo_random_bytes, CodecKind, MAX_SQUARE_WIDTH};
    use proptest::prelude::*;

    const A: Namespace = Namespace(*b"rollup-a");
    const B: Namespace = Namespace(*b"rollup-b");
    const C: Namespace = Namespace(*b"rollup-c");

    fn blob(namespace: Namespace, len: usize, seed: u64) -> Blob {
        Blob {
            namespace,
            data: pseudo_random_bytes(len, seed),
        }
    }

    fn square_of(body: &[Blob]) -> ExtendedSquare {
        let (k, original) = layout(body).unwrap();
        ExtendedSquare::extend(CodecKind::default(), k, &original, 2).unwrap()
    }

    #[test]
    fn small_layouts() {
        let (k, empty) = layout(&[]).unwrap();
        assert_eq!((k, empty.len()), (1, SHARE_SIZE));
        assert!(empty.iter().all(|b| *b == 0));
        assert_eq!(parse(&empty).unwrap(), Vec::<Blob>::new());
        let body = vec![blob(A, 3, 1), blob(B, 0, 2)];
        let (k, original) = layout(&body).unwrap();
        assert_eq!(k, 1);
        assert_eq!(&original[..4], &2u32.to_le_bytes());
        assert_eq!(&original[4..12], &A.0);
        assert_eq!(&original[12..16], &36u32.to_le_bytes());
        assert_eq!(&original[16..20], &3u32.to_le_bytes());
        assert_eq!(&original[28..32], &39u32.to_le_bytes());
        assert_eq!(&original[36..39], &body[0].data[..]);
        assert_eq!(parse(&original).unwrap(), body);
        // Exactly one share more than a 1×1 square holds: a 2×2 square.
        let (k, original) = layout(&[blob(A, SHARE_SIZE - 20 + 1, 3)]).unwrap();
        assert_eq!((k, original.len()), (2, 4 * SHARE_SIZE));
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let huge = Blob {
            namespace: A,
            data: vec![0; MAX_ORIGINAL_BYTES - 20],
        };
        assert_eq!(
            layout(std::slice::from_ref(&huge)).unwrap().0,
            MAX_SQUARE_WIDTH
        );
        let too_big = Blob {
            namespace: A,
            data: vec![0; MAX_ORIGINAL_BYTES - 19],
        };
        assert_eq!(
            layout(&[too_big]),
            Err(LayoutError::TooLarge {
                bytes: MAX_ORIGINAL_BYTES + 1
            })
        );
    }

    #[test]
    fn parse_is_strict() {
        let body = vec![blob(A, 100, 1), blob(B, 700, 2)];
        let (k, original) = layout(&body).unwrap();
        assert_eq!(k, 2);
        let refuse = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = original.clone();
            change(&mut bytes);
            parse(&bytes).unwrap_err()
        };
        assert_eq!(
            refuse(&|b| *b.last_mut().unwrap() = 1),
            LayoutError::NonZeroPadding
        );
        assert!(matches!(
            refuse(&|b| b.truncate(3 * SHARE_SIZE)),
            LayoutError::InvalidSize(_)
        ));
        assert!(matches!(
            refuse(&|b| b.clear()),
            LayoutError::InvalidSize(0)
        ));
        // Offsets: a gap, an overlap, a blob running past the end.
        assert!(matches!(
            refuse(&|b| b[12] += 1),
            LayoutError::InvalidToc(_)
        ));
        assert!(matches!(
            refuse(&|b| b[28] -= 1),
            LayoutError::InvalidToc(_)
        ));
        assert!(matches!(
            refuse(&|b| b[32..36].copy_from_slice(&5000u32.to_le_bytes())),
            LayoutError::InvalidToc(_)
        ));
        assert!(matches!(
            refuse(&|b| b[..4].copy_from_slice(&u32::MAX.to_le_bytes())),
            LayoutError::InvalidToc(_)
        ));
        // The same body padded into a wider square.
        let mut wide = original.clone();
        wide.resize(16 * SHARE_SIZE, 0);
        assert_eq!(
            parse(&wide),
            Err(LayoutError::NotMinimal {
                expected: 2,
                got: 4
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn layout_round_trips(
            blobs in proptest::collection::vec((0u8..3, 0usize..1500, any::<u64>()), 0..12),
        ) {
            let body: Vec<Blob> = blobs
                .iter()
                .map(|&(ns, len, seed)| blob([A, B, C][ns as usize], len, seed))
                .collect();
            let (k, original) = layout(&body).unwrap();
            prop_assert_eq!(original.len(), k * k * SHARE_SIZE);
            prop_assert_eq!(parse(&original).unwrap(), body.clone());
            // Namespace proofs give back exactly each namespace's blobs.
            let sq = square_of(&body);
            for namespace in [A, B, C, Namespace(*b"nobody..")] {
                let proof = prove_namespace(&sq, namespace).unwrap();
                let data = proof.verify(&sq.data_root(), namespace).unwrap();
                let expected: Vec<Vec<u8>> = body
                    .iter()
                    .filter(|b| b.namespace == namespace)
                    .map(|b| b.data.clone())
                    .collect();
                prop_assert_eq!(data, expected);
            }
        }
    }

    #[test]
    fn namespace_proofs() {
        // 40 blobs: the table alone takes two shares.
        let mut body: Vec<Blob> = (0..40)
            .map(|i| blob([A, B, C][i % 3], 10 + i * 37, i as u64))
            .collect();
        body.push(blob(A, 0, 99));
        body.push(blob(A, 3 * SHARE_SIZE, 100));
        let sq = square_of(&body);
        let root = sq.data_root();
        let proof = prove_namespace(&sq, A).unwrap();
        assert_eq!(proof.toc.len(), 2);
        let expected: Vec<Vec<u8>> = body
            .iter()
            .filter(|b| b.namespace == A)
            .map(|b| b.data.clone())
            .collect();
        assert_eq!(proof.verify(&root, A).unwrap(), expected);
        let none = prove_namespace(&sq, Namespace(*b"nobody..")).unwrap();
        assert!(none.blobs.is_empty());
        assert_eq!(
            none.verify(&root, Namespace(*b"nobody..")).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        // A proof for one namespace says nothing about another.
        assert!(matches!(
            proof.verify(&root, B),
            Err(NamespaceProofError::WrongBlobs { .. })
        ));
        assert!(proof.verify(&lamina_primitives::Hash::ZERO, A).is_err());

        let refuse = |change: &dyn Fn(&mut NamespaceProof)| {
            let mut bad = proof.clone();
            change(&mut bad);
            bad.verify(&root, A).unwrap_err()
        };
        assert!(matches!(
            refuse(&|p| {
                p.blobs.remove(3);
            }),
            NamespaceProofError::WrongBlobs { .. }
        ));
        assert!(matches!(
            refuse(&|p| {
                p.blobs.pop();
            }),
            NamespaceProofError::WrongBlobs { .. }
        ));
        assert!(matches!(
            refuse(&|p| {
                let extra = p.blobs[0].clone();
                p.blobs.push(extra);
            }),
            NamespaceProofError::WrongBlobs { .. }
        ));
        assert!(matches!(
            refuse(&|p| p.blobs[2].shares[0].share[5] ^= 1),
            NamespaceProofError::ShareNotProven { .. }
        ));
        assert!(matches!(
            refuse(&|p| p.toc[1].share[5] ^= 1),
            NamespaceProofError::ShareNotProven { index: 1, .. }
        ));
        assert!(matches!(
            refuse(&|p| {
                p.toc.pop();
            }),
            NamespaceProofError::TocShares { .. }
        ));
        assert!(matches!(
            refuse(&|p| p.toc.clear()),
            NamespaceProofError::EmptyToc
        ));
        assert!(matches!(
            refuse(&|p| {
                p.blobs[1].shares.pop();
            }),
            NamespaceProofError::BlobShares { .. }
        ));
        assert!(matches!(
            refuse(&|p| p.blobs.last_mut().unwrap().shares.swap(0, 1)),
            NamespaceProofError::ShareNotProven { .. }
        ));
        // A share moved to other coordinates with a proof for them.
        assert!(matches!(
            refuse(&|p| {
                let s = &mut p.blobs[1].shares[0];
                s.row += 1;
                s.proof = sq.prove(s.row as usize, s.col as usize, Axis::Row).unwrap();
                s.share = sq.share(s.row as usize, s.col as usize).unwrap().to_vec();
            }),
            NamespaceProofError::ShareNotProven { .. }
        ));
        // Through the column instead of the row is still a proof of the same share.
        let mut by_column = proof.clone();
        let s = &mut by_column.blobs[0].shares[0];
        s.proof = sq.prove(s.row as usize, s.col as usize, Axis::Col).unwrap();
        assert_eq!(by_column.verify(&root, A).unwrap(), expected);
    }

    #[test]
    fn squares_that_are_not_layouts_have_no_proofs() {
        let k = 2;
        let mut original = vec![0xff; k * k * SHARE_SIZE];
        original[..4].copy_from_slice(&1000u32.to_le_bytes());
        let sq = ExtendedSquare::extend(CodecKind::default(), k, &original, 1).unwrap();
        assert!(matches!(
            prove_namespace(&sq, A),
            Err(LayoutError::InvalidToc(_))
        ));
    }
}
