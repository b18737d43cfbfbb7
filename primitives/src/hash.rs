//! `Hash`: a SHA-256 digest, the one hash function of Lamina.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest. Shown and parsed as 64 lowercase hex characters (a `0x` prefix
/// is accepted when parsing).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash: the parent of the first block, the root of nothing.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 of the concatenation of `parts`, without copying them together first.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(hasher.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Why a hex string is not a valid 32-byte value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Not hex at all.
    #[error("not valid hex: {0}")]
    InvalidHex(String),
    /// Hex, but not 32 bytes.
    #[error("expected {expected} bytes (hex characters: {}), got {got} bytes", expected * 2)]
    WrongLength {
        /// The length that was expected, in bytes.
        expected: usize,
        /// The length that was found, in bytes.
        got: usize,
    },
}

/// Parses `N` bytes from hex, with or without a `0x` prefix.
pub fn parse_hex_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(text).map_err(|e| HexError::InvalidHex(e.to_string()))?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| HexError::WrongLength { expected: N, got })
}

impl FromStr for Hash {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array(s).map(Hash)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(&self.0[..8]))
    }
}

/// Implements hex `Serialize`/`Deserialize` and a string OpenAPI schema for a 32-byte newtype.
macro_rules! hex_serde {
    ($ty:ty, $desc:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as Deserialize<'de>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($desc))
                    .pattern(Some("^(0x)?[0-9a-f]{64}$"))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use hex_serde;

hex_serde!(Hash, "SHA-256 digest, 64 hex characters");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_accepts_prefix() {
        let hash = Hash::digest(b"lamina");
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Hash>().unwrap(), hash);
        assert_eq!(format!("0x{text}").parse::<Hash>().unwrap(), hash);
        assert!(matches!(
            "abcd".parse::<Hash>(),
            Err(HexError::WrongLength { got: 2, .. })
        ));
        assert!(matches!("zz".parse::<Hash>(), Err(HexError::InvalidHex(_))));
    }

    #[test]
    fn digest_parts_equals_digest_of_concatenation() {
        assert_eq!(
            Hash::digest_parts(&[b"la", b"mina"]),
            Hash::digest(b"lamina")
        );
    }
}
