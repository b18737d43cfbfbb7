//! The canonical binary encoding (borsh) of everything hashed, signed or sent to peers, with
//! a size limit on decoding so untrusted bytes cannot make us allocate without bound.

use borsh::{BorshDeserialize, BorshSerialize};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the caller allows.
    #[error("input is {len} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The caller's limit.
        limit: usize,
    },
    /// The bytes are not a canonical encoding of the expected type (including trailing bytes).
    #[error("malformed encoding: {0}")]
    Malformed(String),
}

/// Encoded size of the length prefix of a `Vec` or `String`.
pub const VEC_PREFIX_BYTES: usize = 4;

/// Canonical encoding of `value`.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing to a Vec cannot fail.
    borsh::to_vec(value).unwrap_or_default()
}

/// Decodes exactly one `T` from `bytes` (no trailing bytes), refusing inputs over `limit`.
pub fn decode<T: BorshDeserialize>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Decodes from trusted storage (our own writes): no size limit.
pub fn decode_trusted<T: BorshDeserialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode(bytes, usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_oversize_and_trailing_bytes() {
        let bytes = encode(&(7u64, String::from("x")));
        assert_eq!(
            decode::<(u64, String)>(&bytes, 64).unwrap(),
            (7, "x".to_string())
        );
        assert!(matches!(
            decode::<(u64, String)>(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<(u64, String)>(&trailing, 64),
            Err(DecodeError::Malformed(_))
        ));
    }
}
