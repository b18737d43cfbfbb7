//! A large value stored as a run of small records ("pieces") under one key, and put back
//! together from a prefix scan of that key.
//!
//! Why: the layers keep their data in sled, whose page cache bounds its memory by the size
//! each page took in the log. A page whose encoding is larger than a quarter of a log segment
//! (128 KiB by default) is written as a separate blob and counted as the few bytes that point
//! to it, while the page cache still holds all of it. A leaf page holds up to 17 records, so
//! a tree of whole blocks (hundreds of kilobytes each) kept far more in memory than the cache
//! was allowed. Pieces of [`PIECE_BYTES`] keep every page of such a tree under that size.
//!
//! Layout: piece `i` of the value under `key` is stored under `key ‖ i` (`i` a big-endian
//! `u32`), so a prefix scan of `key` returns the pieces in order. A value stored whole under
//! `key` itself (the layout before pieces) is read back as well: it sorts before its pieces.
//! Every key of one tree must have the same length, so no key is a prefix of another's
//! pieces.

/// Bytes per piece: seventeen pieces with their keys fit in one leaf page under 128 KiB.
pub const PIECE_BYTES: usize = 7 * 1024;

/// Why stored pieces do not make a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiecesError<E> {
    /// The storage failed while reading them.
    #[error("{0}")]
    Storage(E),
    /// A record under the key is not the next piece.
    #[error("unexpected record {key} under a key stored in pieces (expected piece {expected})")]
    Unexpected {
        /// The record's key, hex.
        key: String,
        /// The index of the piece expected in its place.
        expected: u32,
    },
}

/// The key of piece `index` of the value under `key`.
pub fn piece_key(key: &[u8], index: u32) -> Vec<u8> {
    let mut piece = Vec::with_capacity(key.len() + 4);
    piece.extend_from_slice(key);
    piece.extend_from_slice(&index.to_be_bytes());
    piece
}

/// The records `value` is stored as under `key`: each piece's key and bytes, in order. An
/// empty value is one empty piece, so that it is still there to be found.
pub fn pieces<'a>(key: &'a [u8], value: &'a [u8]) -> impl Iterator<Item = (Vec<u8>, &'a [u8])> {
    // `chunks` yields nothing for an empty slice.
    let empty = value.is_empty().then_some(value);
    (0u32..)
        .zip(empty.into_iter().chain(value.chunks(PIECE_BYTES)))
        .map(move |(index, chunk)| (piece_key(key, index), chunk))
}

/// The value under `key` from the records a prefix scan of `key` returns, in key order:
/// `None` when there are none. Pieces must run from 0 without a gap; a record stored whole
/// under `key` itself (the layout before pieces) must be the only one.
pub fn reassemble<K, V, E>(
    key: &[u8],
    records: impl IntoIterator<Item = Result<(K, V), E>>,
) -> Result<Option<Vec<u8>>, PiecesError<E>>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut value: Option<Vec<u8>> = None;
    let mut expected = 0u32;
    let mut whole = false;
    for record in records {
        let (record_key, bytes) = record.map_err(PiecesError::Storage)?;
        let record_key = record_key.as_ref();
        let is_whole = record_key == key && value.is_none();
        if !is_whole && (whole || record_key != piece_key(key, expected).as_slice()) {
            return Err(PiecesError::Unexpected {
                key: hex::encode(record_key),
                expected,
            });
        }
        whole = is_whole;
        if !is_whole {
            expected = expected.saturating_add(1);
        }
        value
            .get_or_insert_with(Vec::new)
            .extend_from_slice(bytes.as_ref());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Records = Vec<Result<(Vec<u8>, Vec<u8>), ()>>;

    fn stored(key: &[u8], value: &[u8]) -> Records {
        pieces(key, value)
            .map(|(key, bytes)| Ok((key, bytes.to_vec())))
            .collect()
    }

    proptest! {
        #[test]
        fn a_value_comes_back_from_its_pieces(
            value in proptest::collection::vec(any::<u8>(), 0..PIECE_BYTES * 3 + 10),
        ) {
            let key = 7u64.to_be_bytes();
            let records = stored(&key, &value);
            prop_assert_eq!(records.len(), value.len().div_ceil(PIECE_BYTES).max(1));
            prop_assert_eq!(reassemble(&key, records), Ok(Some(value)));
        }
    }

    #[test]
    fn pieces_fit_a_leaf_page_under_the_blob_threshold() {
        let key_and_index = 8 + 4;
        assert!(17 * (PIECE_BYTES + key_and_index) < 128 * 1024);
    }

    #[test]
    fn a_value_stored_whole_is_read_as_before() {
        let key = 3u64.to_be_bytes();
        let records: Records = vec![Ok((key.to_vec(), b"whole".to_vec()))];
        assert_eq!(reassemble(&key, records), Ok(Some(b"whole".to_vec())));
        assert_eq!(reassemble(&key, Records::new()), Ok(None));
    }

    #[test]
    fn a_missing_or_extra_piece_is_reported() {
        let key = 3u64.to_be_bytes();
        let value = vec![1u8; PIECE_BYTES * 2 + 1];
        let mut gap = stored(&key, &value);
        let _missing = gap.remove(1);
        assert!(matches!(
            reassemble(&key, gap),
            Err(PiecesError::Unexpected { expected: 1, .. })
        ));
        let mut after_whole: Records = vec![Ok((key.to_vec(), b"whole".to_vec()))];
        after_whole.extend(stored(&key, b"piece"));
        assert!(matches!(
            reassemble(&key, after_whole),
            Err(PiecesError::Unexpected { expected: 0, .. })
        ));
        let failed: Records = vec![Err(())];
        assert_eq!(reassemble(&key, failed), Err(PiecesError::Storage(())));
    }
}
