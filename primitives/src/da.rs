//! Data-availability vocabulary every client needs to check a share: the share size, the
//! square's limits, and the proof that a share sits at a coordinate of a committed 2D
//! Reed-Solomon square. Pure data and hashing, so light clients verify without the
//! erasure-coding code (which lives in `lamina-da`).

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, MerkleProof};
use crate::{Hash, Namespace};

/// Size of one share in bytes.
pub const SHARE_SIZE: usize = 512;

/// Largest `k` (original shares per row): `512 × 512` shares of 512 bytes, 128 MiB of
/// original data, extended to a `1024 × 1024` square.
pub const MAX_SQUARE_WIDTH: usize = 512;

/// Whether `k` is a supported original width: a power of two in `1..=MAX_SQUARE_WIDTH`.
pub fn is_valid_width(k: usize) -> bool {
    k.is_power_of_two() && k <= MAX_SQUARE_WIDTH
}

/// `k` for a square of `width` (= `2k`) shares per line, when that is a supported size.
pub fn original_width_of(width: u64) -> Option<usize> {
    let width = usize::try_from(width).ok()?;
    (width % 2 == 0 && is_valid_width(width / 2)).then_some(width / 2)
}

/// Which Reed-Solomon implementation extends squares.
///
/// The two produce different parity for the same data (different fields and generator
/// matrices), so the codec is part of the commitment: `data_root` depends on it, and every
/// node of a chain must use the same one. It is a chain parameter, not a per-node choice.
///
/// The default is [`CodecKind::ReedSolomonSimd`], the faster one by far: an `O(n log n)`
/// FFT code over GF(2^16) with AVX2 kernels. In this crate's benchmark
/// (`lamina_da::bench`, one core) it codes an 8 MiB square (k = 128) at about 700 MiB/s
/// against about 80 MiB/s for `reed-solomon-erasure`'s `O(k²)` matrix code, which makes
/// extension with commitment about 46 ms against 130 ms; above k = 128, where
/// `reed-solomon-erasure` must switch to its table-driven GF(2^16), its encoding alone
/// takes about 20 s at k = 256 and 2.5 min at k = 512, where the FFT code takes a fraction
/// of a second. The FFT code handles every
/// size here, k = 1 included (it supports any count of original and recovery shards from
/// 1 up, and its one constraint on shards, an even size, holds for 512-byte shares).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
#[borsh(use_discriminant = false)]
pub enum CodecKind {
    /// The `reed-solomon-erasure` crate: a Vandermonde-derived systematic matrix code over
    /// GF(2^8) while a line has at most 256 shares (k ≤ 128), over GF(2^16) above.
    ReedSolomonErasure,
    /// The `reed-solomon-simd` crate (Leopard-RS): an FFT code over GF(2^16).
    #[default]
    ReedSolomonSimd,
}

impl CodecKind {
    /// The name used in configuration files and reports.
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::ReedSolomonErasure => "reed-solomon-erasure",
            CodecKind::ReedSolomonSimd => "reed-solomon-simd",
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A share of a line, at `position` within it, with its proof against `data_root`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct ProvenShare {
    /// Position within the line (`0..2k`).
    pub position: u64,
    /// The share ([`SHARE_SIZE`] bytes; hex in JSON).
    #[serde(with = "serde_hex")]
    #[schema(value_type = String)]
    pub share: Vec<u8>,
    /// The share's proof, through either axis.
    pub proof: ShareProof,
}

/// The proof that line `index` of `axis` in a committed square is not a codeword: its
/// committed root, and at least `k` of its shares, each proven against `data_root`, that
/// either contradict one another (no codeword holds them all) or decode to a line whose
/// root is not the committed one.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct BadEncodingProof {
    /// The axis of the bad line.
    pub axis: Axis,
    /// The row or column.
    pub index: u64,
    /// The square's width, `2k`.
    pub width: u64,
    /// The codec the square claims to use; must be the chain's.
    pub codec: CodecKind,
    /// `line_root` within `data_root` (leaf `index` for a row, `2k + index` for a column).
    pub line_root_proof: MerkleProof,
    /// The line's committed root.
    pub line_root: Hash,
    /// At least `k` shares of the line, by strictly increasing position.
    pub shares: Vec<ProvenShare>,
}

/// A line of the square: a row or a column.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[borsh(use_discriminant = false)]
pub enum Axis {
    /// A row: shares `(r, 0..2k)`.
    Row,
    /// A column: shares `(0..2k, c)`.
    Col,
}

impl Axis {
    /// `row` or `column`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Row => "row",
            Axis::Col => "column",
        }
    }

    /// The other axis.
    pub fn other(self) -> Axis {
        match self {
            Axis::Row => Axis::Col,
            Axis::Col => Axis::Row,
        }
    }

    /// The `(row, col)` of the share at `position` in line `index` of this axis.
    pub fn coordinates(self, index: usize, position: usize) -> (usize, usize) {
        match self {
            Axis::Row => (index, position),
            Axis::Col => (position, index),
        }
    }
}

/// The proof that a share is share `(row, col)` of the square under a `data_root`: the
/// share within its row (`axis = Row`, leaf `col` of `2k`) or its column (`axis = Col`,
/// leaf `row` of `2k`), then that line's root among the `4k` axis roots (leaf `row` for a
/// row, `2k + col` for a column).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct ShareProof {
    /// The line the share is proven through.
    pub axis: Axis,
    /// The share within its line: leaf `col` (rows) or `row` (columns), total `2k`.
    pub line_proof: MerkleProof,
    /// The line's root within `data_root`: leaf `row` (rows) or `2k + col` (columns),
    /// total `4k`.
    pub root_proof: MerkleProof,
}

impl ShareProof {
    /// The width (`2k`) of the square the proof claims; check it with [`Self::verify`].
    pub fn square_width(&self) -> u64 {
        self.line_proof.total
    }

    /// The root of the share's line if the proof's shape fits `(row, col)` and the share
    /// is one share long: the line root it leads to, not yet checked against `data_root`.
    fn line_root(&self, row: u64, col: u64, share: &[u8]) -> Option<Hash> {
        if share.len() != SHARE_SIZE {
            return None;
        }
        let width = self.line_proof.total;
        original_width_of(width)?;
        if self.root_proof.total != 2 * width || row >= width || col >= width {
            return None;
        }
        let (position, root_index) = match self.axis {
            Axis::Row => (col, row),
            Axis::Col => (row, width + col),
        };
        if self.line_proof.index != position || self.root_proof.index != root_index {
            return None;
        }
        self.line_proof
            .root_from_leaf_hash(merkle::leaf_hash(share))
    }

    /// True when `share` is share `(row, col)` of the square whose commitment is
    /// `data_root`: the share is [`SHARE_SIZE`] bytes, the proof's indices and tree sizes
    /// fit the coordinates (`2k` leaves per line, `4k` axis roots), and the hashes lead to
    /// `data_root`.
    pub fn verify(&self, data_root: &Hash, row: u64, col: u64, share: &[u8]) -> bool {
        self.line_root(row, col, share).is_some_and(|root| {
            self.root_proof
                .root_from_leaf_hash(merkle::leaf_hash(&root.0))
                .as_ref()
                == Some(data_root)
        })
    }
}

/// Largest original data of one square, in bytes.
pub const MAX_ORIGINAL_BYTES: usize = MAX_SQUARE_WIDTH * MAX_SQUARE_WIDTH * SHARE_SIZE;

/// Byte fields as hex strings in JSON (the HTTP API's convention for raw bytes), for
/// `#[serde(with = "...")]`.
pub mod serde_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the bytes as a hex string.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Reads a hex string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as Deserialize<'de>>::deserialize(d)?;
        hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

// The table of contents at the start of a square's original data, and the proofs that show
// every blob of one namespace (the layout itself is built in `lamina-da`).

/// Bytes of the table's header: the blob count.
pub const TOC_HEADER_BYTES: usize = 4;
/// Bytes of one table entry: namespace, offset, length.
pub const TOC_ENTRY_BYTES: usize = 16;

/// One entry of the table of contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TocEntry {
    /// The blob's namespace.
    pub namespace: Namespace,
    /// Where its data starts, in bytes from the start of the original data.
    pub offset: u32,
    /// Its length in bytes.
    pub len: u32,
}

impl TocEntry {
    /// The byte range of the blob's data.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset as usize..self.offset as usize + self.len as usize
    }
}

/// Why a body cannot be laid out, or bytes are not a valid layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The body needs more than a square of [`super::MAX_SQUARE_WIDTH`] holds.
    #[error("the body needs {bytes} bytes of original data; a square holds at most {MAX_ORIGINAL_BYTES}")]
    TooLarge {
        /// Bytes needed (table included), saturated on overflow.
        bytes: usize,
    },
    /// The data is not `k * k * SHARE_SIZE` bytes for a valid `k`.
    #[error("original data of {0} bytes is not a k × k square of shares")]
    InvalidSize(usize),
    /// The table of contents is malformed.
    #[error("invalid table of contents: {0}")]
    InvalidToc(String),
    /// Bytes after the last blob are not all zero.
    #[error("padding after the last blob is not zero")]
    NonZeroPadding,
    /// The data would fit a smaller square.
    #[error("a {got}-wide square holds data that fits a {expected}-wide one")]
    NotMinimal {
        /// The smallest width that holds the data.
        expected: usize,
        /// The width given.
        got: usize,
    },
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// Size in bytes of the table whose header is at the start of `prefix`, checked to fit in
/// original data of `total` bytes.
pub fn toc_len(prefix: &[u8], total: usize) -> Result<usize, LayoutError> {
    let count = read_u32(prefix, 0)
        .ok_or_else(|| LayoutError::InvalidToc("shorter than its header".into()))?
        as usize;
    count
        .checked_mul(TOC_ENTRY_BYTES)
        .and_then(|entries| entries.checked_add(TOC_HEADER_BYTES))
        .filter(|len| *len <= total)
        .ok_or_else(|| {
            LayoutError::InvalidToc(format!("{count} entries do not fit in {total} bytes"))
        })
}

/// Reads and checks the table at the start of `prefix` (which holds at least the whole
/// table) for original data of `total` bytes: entries contiguous from the end of the table,
/// the last ending inside the data. Returns the entries and where the data ends.
pub fn read_toc(prefix: &[u8], total: usize) -> Result<(Vec<TocEntry>, usize), LayoutError> {
    let len = toc_len(prefix, total)?;
    if prefix.len() < len {
        return Err(LayoutError::InvalidToc(format!(
            "{} bytes given of a {len}-byte table",
            prefix.len()
        )));
    }
    let count = (len - TOC_HEADER_BYTES) / TOC_ENTRY_BYTES;
    let mut entries = Vec::with_capacity(count);
    let mut end = len;
    for i in 0..count {
        let at = TOC_HEADER_BYTES + i * TOC_ENTRY_BYTES;
        let mut namespace = [0u8; 8];
        namespace.copy_from_slice(&prefix[at..at + 8]);
        let offset = read_u32(prefix, at + 8).unwrap_or(0);
        let blob_len = read_u32(prefix, at + 12).unwrap_or(0);
        if offset as usize != end {
            return Err(LayoutError::InvalidToc(format!(
                "blob {i} starts at {offset}, expected {end}"
            )));
        }
        end = end
            .checked_add(blob_len as usize)
            .filter(|end| *end <= total)
            .ok_or_else(|| LayoutError::InvalidToc(format!("blob {i} ends past the data")))?;
        entries.push(TocEntry {
            namespace: Namespace(namespace),
            offset,
            len: blob_len,
        });
    }
    Ok((entries, end))
}

/// A share of the original quadrant at `(row, col)`, with its proof through its row.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct QuadrantShare {
    /// Row in the square (`< k`).
    pub row: u64,
    /// Column in the square (`< k`).
    pub col: u64,
    /// The share (hex in JSON).
    #[serde(with = "serde_hex")]
    #[schema(value_type = String)]
    pub share: Vec<u8>,
    /// Its proof against `data_root`.
    pub proof: ShareProof,
}

/// The shares holding one blob's data.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct BlobProof {
    /// The blob's entry in the table of contents.
    pub entry: u64,
    /// The shares covering its bytes, in order (none for an empty blob).
    pub shares: Vec<QuadrantShare>,
}

/// Every blob of one namespace in a square, with the table of contents that shows no
/// other blob of that namespace exists there.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct NamespaceProof {
    /// The shares holding the table of contents: the first shares of the original data.
    pub toc: Vec<QuadrantShare>,
    /// One entry per blob of the namespace, in table order.
    pub blobs: Vec<BlobProof>,
}

/// Why a [`NamespaceProof`] does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceProofError {
    /// No table shares.
    #[error("the proof holds no table of contents")]
    EmptyToc,
    /// The proofs claim an unsupported square size.
    #[error("invalid square width {0}")]
    InvalidWidth(u64),
    /// A share is not at the place it must be, or its proof fails.
    #[error("share {index} of the original data is not proven at ({row}, {col})")]
    ShareNotProven {
        /// Its index in the original data.
        index: usize,
        /// Row given.
        row: u64,
        /// Column given.
        col: u64,
    },
    /// The table shares do not cover the table exactly.
    #[error("the table takes {expected} shares, the proof has {got}")]
    TocShares {
        /// Shares the table takes.
        expected: usize,
        /// Shares given.
        got: usize,
    },
    /// The table is malformed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The blobs are not exactly the table's entries of the namespace.
    #[error("blob {got:?} given where the table has {expected:?}")]
    WrongBlobs {
        /// The next entry of the namespace in the table, if any.
        expected: Option<u64>,
        /// The entry the proof gives, if any.
        got: Option<u64>,
    },
    /// A blob's shares do not cover its byte range exactly.
    #[error("blob {entry} takes {expected} shares, the proof has {got}")]
    BlobShares {
        /// The entry.
        entry: u64,
        /// Shares its range covers.
        expected: usize,
        /// Shares given.
        got: usize,
    },
}

/// The shares (indices into the original data) that cover bytes `range`.
pub fn covering(range: std::ops::Range<usize>) -> std::ops::Range<usize> {
    if range.is_empty() {
        return 0..0;
    }
    range.start / SHARE_SIZE..range.end.div_ceil(SHARE_SIZE)
}

impl NamespaceProof {
    /// The data of every blob of `namespace` in the square under `data_root`, in body
    /// order (empty when the square has none): checks that every share is proven at its
    /// place, that the table shares are the first shares of the original data and cover
    /// the whole (well-formed) table, that each blob's shares cover exactly the bytes the
    /// table gives it, and that every entry of `namespace` in the table has its blob here.
    pub fn verify(
        &self,
        data_root: &Hash,
        namespace: Namespace,
    ) -> Result<Vec<Vec<u8>>, NamespaceProofError> {
        let first = self.toc.first().ok_or(NamespaceProofError::EmptyToc)?;
        let width = first.proof.square_width();
        let k = original_width_of(width).ok_or(NamespaceProofError::InvalidWidth(width))?;
        let total = k * k * SHARE_SIZE;
        let check = |index: usize, share: &QuadrantShare| {
            let (row, col) = ((index / k) as u64, (index % k) as u64);
            let placed = share.row == row && share.col == col && row < k as u64;
            if placed
                && share.proof.square_width() == width
                && share.proof.verify(data_root, row, col, &share.share)
            {
                Ok(())
            } else {
                Err(NamespaceProofError::ShareNotProven {
                    index,
                    row: share.row,
                    col: share.col,
                })
            }
        };
        // The table's size comes from the first share; bound the rest by it before
        // checking any more proofs.
        check(0, first)?;
        let expected = toc_len(&first.share, total)?.div_ceil(SHARE_SIZE);
        if self.toc.len() != expected {
            return Err(NamespaceProofError::TocShares {
                expected,
                got: self.toc.len(),
            });
        }
        let mut bytes = Vec::with_capacity(expected * SHARE_SIZE);
        for (i, share) in self.toc.iter().enumerate() {
            check(i, share)?;
            bytes.extend_from_slice(&share.share);
        }
        let (entries, _) = read_toc(&bytes, total)?;
        let mut wanted = entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.namespace == namespace);
        let mut out = Vec::with_capacity(self.blobs.len().min(entries.len()));
        let mut given = self.blobs.iter();
        loop {
            let (want, blob) = (wanted.next(), given.next());
            let (Some((i, entry)), Some(blob)) = (want, blob) else {
                if want.is_none() && blob.is_none() {
                    return Ok(out);
                }
                return Err(NamespaceProofError::WrongBlobs {
                    expected: want.map(|(i, _)| i as u64),
                    got: blob.map(|b| b.entry),
                });
            };
            if blob.entry != i as u64 {
                return Err(NamespaceProofError::WrongBlobs {
                    expected: Some(i as u64),
                    got: Some(blob.entry),
                });
            }
            let shares = covering(entry.range());
            if blob.shares.len() != shares.len() {
                return Err(NamespaceProofError::BlobShares {
                    entry: blob.entry,
                    expected: shares.len(),
                    got: blob.shares.len(),
                });
            }
            if entry.len == 0 {
                out.push(Vec::new());
                continue;
            }
            let mut data = Vec::with_capacity(blob.shares.len() * SHARE_SIZE);
            for (index, share) in shares.clone().zip(&blob.shares) {
                check(index, share)?;
                data.extend_from_slice(&share.share);
            }
            let skip = entry.offset as usize - shares.start * SHARE_SIZE;
            out.push(data[skip..skip + entry.len as usize].to_vec());
        }
    }
}
