//! The systematic `[2k, k]` Reed-Solomon codes a square's rows and columns are codewords
//! of: which implementation, encoding `k` data shares into `k` parity shares, and rebuilding
//! a whole line from any `k` of its shares.
//!
//! Both implementations code every byte position of a shard independently of the others
//! (position by position in GF(2^8) or GF(2^16) elements, the latter in 64-byte blocks), so
//! a "shard" made of several shares side by side codes all of them at once: the square code
//! uses that to code a batch of adjacent columns, or of rows with the same erasure pattern,
//! in one call, exactly as it would code each line alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use reed_solomon_erasure::{galois_16, galois_8};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::MAX_SQUARE_WIDTH;
use crate::SHARE_SIZE;

pub use lamina_primitives::da::CodecKind;

/// Why a line could not be encoded or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// `k` is not a power of two in `1..=MAX_SQUARE_WIDTH`.
    #[error(
        "unsupported square width {0}: must be a power of two between 1 and {MAX_SQUARE_WIDTH}"
    )]
    UnsupportedWidth(usize),
    /// The wrong number of shares was given.
    #[error("expected {expected} shares, got {got}")]
    WrongShareCount {
        /// The number the code works on.
        expected: usize,
        /// The number given.
        got: usize,
    },
    /// A share (or batch of shares) has the wrong size.
    #[error(
        "shares must be one or more whole {SHARE_SIZE}-byte shares of equal size, got {got} bytes"
    )]
    WrongShareSize {
        /// The size found.
        got: usize,
    },
    /// Fewer than `k` shares are present, so the line cannot be rebuilt.
    #[error("{present} shares present, {needed} needed to rebuild the line")]
    TooFewShares {
        /// Shares needed (`k`).
        needed: usize,
        /// Shares present.
        present: usize,
    },
    /// The underlying implementation refused the input.
    #[error("reed-solomon backend failed: {0}")]
    Backend(String),
}

fn backend(error: impl fmt::Display) -> CodecError {
    CodecError::Backend(error.to_string())
}

/// Largest line (in shares) that GF(2^8) can code: its field has 256 elements.
const GF8_MAX_SHARDS: usize = 256;

/// Matrix codes built so far, one per `k`: building one inverts a `k × k` matrix, which
/// would otherwise be paid again for every square.
type Cache<T> = OnceLock<Mutex<HashMap<usize, Arc<T>>>>;
static GF8_CODES: Cache<galois_8::ReedSolomon> = OnceLock::new();
static GF16_CODES: Cache<galois_16::ReedSolomon> = OnceLock::new();

fn cached<T>(
    cache: &'static Cache<T>,
    k: usize,
    build: impl FnOnce() -> Result<T, reed_solomon_erasure::Error>,
) -> Result<Arc<T>, CodecError> {
    let map = cache.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while inserting; the map itself
    // holds only finished codes, so it is still usable.
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(code) = map.get(&k) {
        return Ok(Arc::clone(code));
    }
    let code = Arc::new(build().map_err(backend)?);
    map.insert(k, Arc::clone(&code));
    Ok(code)
}

#[derive(Clone)]
enum Backend {
    Gf8(Arc<galois_8::ReedSolomon>),
    Gf16(Arc<galois_16::ReedSolomon>),
    Simd,
}

/// The `[2k, k]` code of one square size: cheap to clone and shareable between threads.
#[derive(Clone)]
pub struct Codec {
    kind: CodecKind,
    k: usize,
    backend: Backend,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("kind", &self.kind)
            .field("k", &self.k)
            .finish()
    }
}

impl Codec {
    /// The code of `kind` for lines of `2k` shares (`k` data, `k` parity).
    pub fn new(kind: CodecKind, k: usize) -> Result<Codec, CodecError> {
        if !k.is_power_of_two() || k > MAX_SQUARE_WIDTH {
            return Err(CodecError::UnsupportedWidth(k));
        }
        let backend = match kind {
            CodecKind::ReedSolomonSimd => Backend::Simd,
            CodecKind::ReedSolomonErasure if 2 * k <= GF8_MAX_SHARDS => {
                Backend::Gf8(cached(&GF8_CODES, k, || galois_8::ReedSolomon::new(k, k))?)
            }
            CodecKind::ReedSolomonErasure => Backend::Gf16(cached(&GF16_CODES, k, || {
                galois_16::ReedSolomon::new(k, k)
            })?),
        };
        Ok(Codec { kind, k, backend })
    }

    /// The implementation.
    pub fn kind(&self) -> CodecKind {
        self.kind
    }

    /// `k`: data shares per line.
    pub fn original_width(&self) -> usize {
        self.k
    }

    /// `2k`: shares per line.
    pub fn width(&self) -> usize {
        2 * self.k
    }

    /// Writes the `k` parity shards of the `k` data shards `data` into `parity`. Every
    /// shard has the same size, a non-zero multiple of [`SHARE_SIZE`]; a shard of several
    /// shares codes each share position as its own line.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), CodecError> {
        self.coder().encode(data, parity)
    }

    /// Rebuilds every missing share of a line of `2k` shares (`None` = missing) from the
    /// first `k` present ones, in position order. Present shares are left as they are (a
    /// present share that disagrees with the others is not detected here). Fails, leaving
    /// `line` untouched, when fewer than `k` shares are present or a share is not
    /// [`SHARE_SIZE`] bytes.
    pub fn reconstruct(&self, line: &mut [Option<Vec<u8>>]) -> Result<(), CodecError> {
        if line.len() != self.width() {
            return Err(CodecError::WrongShareCount {
                expected: self.width(),
                got: line.len(),
            });
        }
        let present: Vec<bool> = line.iter().map(Option::is_some).collect();
        let mut buffers: Vec<Vec<u8>> = line
            .iter()
            .map(|share| share.clone().unwrap_or_else(|| vec![0; SHARE_SIZE]))
            .collect();
        if let Some(bad) = buffers.iter().find(|b| b.len() != SHARE_SIZE) {
            return Err(CodecError::WrongShareSize { got: bad.len() });
        }
        let mut shards: Vec<&mut [u8]> = buffers.iter_mut().map(Vec::as_mut_slice).collect();
        self.coder().reconstruct(&mut shards, &present)?;
        for ((slot, buffer), was_present) in line.iter_mut().zip(buffers).zip(present) {
            if !was_present {
                *slot = Some(buffer);
            }
        }
        Ok(())
    }

    /// A worker that keeps its scratch space between calls (one per thread).
    pub(crate) fn coder(&self) -> LineCoder<'_> {
        LineCoder {
            codec: self,
            encoder: None,
            decoder: None,
        }
    }
}

/// Checks that all `shards` have one size, a non-zero multiple of [`SHARE_SIZE`], and
/// returns it.
fn shard_size<'a>(mut shards: impl Iterator<Item = &'a [u8]>) -> Result<usize, CodecError> {
    let size = shards.next().map_or(0, <[u8]>::len);
    if size == 0 || size % SHARE_SIZE != 0 {
        return Err(CodecError::WrongShareSize { got: size });
    }
    match shards.find(|s| s.len() != size) {
        Some(other) => Err(CodecError::WrongShareSize { got: other.len() }),
        None => Ok(size),
    }
}

fn to_elements(bytes: &[u8]) -> Vec<[u8; 2]> {
    bytes.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

fn from_elements(elements: &[[u8; 2]], out: &mut [u8]) {
    for (pair, element) in out.chunks_exact_mut(2).zip(elements) {
        pair.copy_from_slice(element);
    }
}

/// One thread's handle on a [`Codec`], keeping the FFT code's work buffers alive between
/// lines (allocating them per line would cost as much as coding a small line).
pub(crate) struct LineCoder<'a> {
    codec: &'a Codec,
    encoder: Option<(ReedSolomonEncoder, usize)>,
    decoder: Option<(ReedSolomonDecoder, usize)>,
}

impl fmt::Debug for LineCoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineCoder")
            .field("codec", self.codec)
            .finish()
    }
}

impl LineCoder<'_> {
    /// See [`Codec::encode`].
    pub(crate) fn encode(
        &mut self,
        data: &[&[u8]],
        parity: &mut [&mut [u8]],
    ) -> Result<(), CodecError> {
        let k = self.codec.k;
        for count in [data.len(), parity.len()] {
            if count != k {
                return Err(CodecError::WrongShareCount {
                    expected: k,
                    got: count,
                });
            }
        }
        let size = shard_size(data.iter().copied().chain(parity.iter().map(|p| &**p)))?;
        match &self.codec.backend {
            Backend::Gf8(code) => code.encode_sep(data, parity).map_err(backend),
            Backend::Gf16(code) => {
                let input: Vec<Vec<[u8; 2]>> = data.iter().map(|d| to_elements(d)).collect();
                let mut output = vec![vec![[0u8; 2]; size / 2]; k];
                code.encode_sep(&input, &mut output).map_err(backend)?;
                for (out, elements) in parity.iter_mut().zip(&output) {
                    from_elements(elements, out);
                }
                Ok(())
            }
            Backend::Simd => {
                let result = self.simd_encode(data, size, |index, shard| {
                    if let Some(out) = parity.get_mut(index) {
                        out.copy_from_slice(shard);
                    }
                });
                if result.is_err() {
                    // A failed round may leave shards queued in the encoder.
                    self.encoder = None;
                }
                result
            }
        }
    }

    /// Encodes with the FFT code, handing each recovery shard to `out` with its index.
    fn simd_encode(
        &mut self,
        data: &[&[u8]],
        size: usize,
        mut out: impl FnMut(usize, &[u8]),
    ) -> Result<(), CodecError> {
        let k = self.codec.k;
        match self.encoder.as_mut() {
            Some((_, bytes)) if *bytes == size => {}
            Some((encoder, bytes)) => {
                encoder.reset(k, k, size).map_err(backend)?;
                *bytes = size;
            }
            None => {
                let encoder = ReedSolomonEncoder::new(k, k, size).map_err(backend)?;
                self.encoder = Some((encoder, size));
            }
        }
        let Some((encoder, _)) = self.encoder.as_mut() else {
            return Err(CodecError::Backend("encoder missing".into()));
        };
        for shard in data {
            encoder.add_original_shard(shard).map_err(backend)?;
        }
        let result = encoder.encode().map_err(backend)?;
        for (index, shard) in result.recovery_iter().enumerate() {
            out(index, shard);
        }
        Ok(())
    }

    /// Rebuilds every shard of `shards` (a line of `2k`) whose `present` flag is false from
    /// the first `k` present ones, in position order; present shards are not written.
    pub(crate) fn reconstruct(
        &mut self,
        shards: &mut [&mut [u8]],
        present: &[bool],
    ) -> Result<(), CodecError> {
        let k = self.codec.k;
        let width = 2 * k;
        for count in [shards.len(), present.len()] {
            if count != width {
                return Err(CodecError::WrongShareCount {
                    expected: width,
                    got: count,
                });
            }
        }
        let size = shard_size(shards.iter().map(|s| &**s))?;
        let present_count = present.iter().filter(|p| **p).count();
        if present_count < k {
            return Err(CodecError::TooFewShares {
                needed: k,
                present: present_count,
            });
        }
        if present_count == width {
            return Ok(());
        }
        match &self.codec.backend {
            Backend::Gf8(code) => {
                let mut slots: Vec<(&mut [u8], bool)> = shards
                    .iter_mut()
                    .zip(present)
                    .map(|(shard, present)| (&mut **shard, *present))
                    .collect();
                code.reconstruct(&mut slots).map_err(backend)
            }
            Backend::Gf16(code) => {
                let mut slots: Vec<(Vec<[u8; 2]>, bool)> = shards
                    .iter()
                    .zip(present)
                    .map(|(shard, present)| (to_elements(shard), *present))
                    .collect();
                code.reconstruct(&mut slots).map_err(backend)?;
                for (shard, (elements, present)) in shards.iter_mut().zip(&slots) {
                    if !present {
                        from_elements(elements, shard);
                    }
                }
                Ok(())
            }
            Backend::Simd => {
                let result = self.simd_reconstruct(shards, present, size);
                if result.is_err() {
                    self.encoder = None;
                    self.decoder = None;
                }
                result
            }
        }
    }

    fn simd_reconstruct(
        &mut self,
        shards: &mut [&mut [u8]],
        present: &[bool],
        size: usize,
    ) -> Result<(), CodecError> {
        let k = self.codec.k;
        // The first k present positions, as the GF(2^8) code chooses them, so that both
        // codes rebuild a line that disagrees with itself the same way.
        let selected: Vec<usize> = (0..2 * k).filter(|&i| present[i]).take(k).collect();
        let (original, recovery) = shards.split_at_mut(k);
        if selected.iter().any(|&i| i >= k) {
            match self.decoder.as_mut() {
                Some((_, bytes)) if *bytes == size => {}
                Some((decoder, bytes)) => {
                    decoder.reset(k, k, size).map_err(backend)?;
                    *bytes = size;
                }
                None => {
                    let decoder = ReedSolomonDecoder::new(k, k, size).map_err(backend)?;
                    self.decoder = Some((decoder, size));
                }
            }
            let Some((decoder, _)) = self.decoder.as_mut() else {
                return Err(CodecError::Backend("decoder missing".into()));
            };
            for &i in &selected {
                if i < k {
                    decoder.add_original_shard(i, &*original[i])
                } else {
                    decoder.add_recovery_shard(i - k, &*recovery[i - k])
                }
                .map_err(backend)?;
            }
            let result = decoder.decode().map_err(backend)?;
            for (i, shard) in original.iter_mut().enumerate() {
                if !present[i] {
                    let restored = result
                        .restored_original(i)
                        .ok_or_else(|| CodecError::Backend(format!("shard {i} not restored")))?;
                    shard.copy_from_slice(restored);
                }
            }
        }
        if present[k..].iter().all(|p| *p) {
            return Ok(());
        }
        let data: Vec<&[u8]> = original.iter().map(|s| &**s).collect();
        self.simd_encode(&data, size, |index, shard| {
            if !present[k + index] {
                if let Some(out) = recovery.get_mut(index) {
                    out.copy_from_slice(shard);
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shares(count: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                (0..SHARE_SIZE)
                    .map(|j| (i * 31 + j * 7) as u8 ^ seed)
                    .collect()
            })
            .collect()
    }

    fn encode_line(codec: &Codec, data: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let k = codec.original_width();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity = vec![vec![0u8; SHARE_SIZE]; k];
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&refs, &mut outs).unwrap();
        data.iter().cloned().chain(parity).collect()
    }

    const KINDS: [CodecKind; 2] = [CodecKind::ReedSolomonErasure, CodecKind::ReedSolomonSimd];

    #[test]
    fn config_names() {
        assert_eq!(CodecKind::default(), CodecKind::ReedSolomonSimd);
        for kind in KINDS {
            let json = serde_json_like(kind);
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }

    fn serde_json_like(kind: CodecKind) -> String {
        // toml cannot serialise a bare value; a one-field table shows the spelling.
        #[derive(serde::Serialize)]
        struct Wrap {
            codec: CodecKind,
        }
        let text = toml::to_string(&Wrap { codec: kind }).unwrap();
        text.trim().trim_start_matches("codec = ").to_string()
    }

    #[test]
    fn widths_are_checked() {
        for kind in KINDS {
            assert!(Codec::new(kind, 0).is_err());
            assert!(Codec::new(kind, 3).is_err());
            assert!(Codec::new(kind, 1024).is_err());
            for k in [1, 2, 4, 128, 256] {
                assert_eq!(Codec::new(kind, k).unwrap().width(), 2 * k);
            }
        }
    }

    #[test]
    fn tiny_and_gf16_lines_round_trip() {
        for kind in KINDS {
            for k in [1, 2, 256] {
                let codec = Codec::new(kind, k).unwrap();
                let line = encode_line(&codec, &shares(k, 3));
                // Keep only the parity half: the hardest case.
                let mut partial: Vec<Option<Vec<u8>>> = line
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i >= k).then(|| s.clone()))
                    .collect();
                codec.reconstruct(&mut partial).unwrap();
                let rebuilt: Vec<Vec<u8>> = partial.into_iter().map(Option::unwrap).collect();
                assert_eq!(rebuilt, line, "{kind} k={k}");
            }
        }
    }

    #[test]
    fn codecs_differ() {
        let a = encode_line(
            &Codec::new(CodecKind::ReedSolomonErasure, 4).unwrap(),
            &shares(4, 1),
        );
        let b = encode_line(
            &Codec::new(CodecKind::ReedSolomonSimd, 4).unwrap(),
            &shares(4, 1),
        );
        assert_eq!(a[..4], b[..4]);
        assert_ne!(a[4..], b[4..]);
    }

    #[test]
    fn bad_input_is_an_error() {
        for kind in KINDS {
            let codec = Codec::new(kind, 2).unwrap();
            let mut line = vec![Some(vec![0u8; SHARE_SIZE]), None, None, None];
            assert_eq!(
                codec.reconstruct(&mut line),
                Err(CodecError::TooFewShares {
                    needed: 2,
                    present: 1
                })
            );
            assert_eq!(line[1], None);
            let mut short = vec![Some(vec![0u8; 3]), Some(vec![0u8; 3]), None, None];
            assert!(matches!(
                codec.reconstruct(&mut short),
                Err(CodecError::WrongShareSize { got: 3 })
            ));
            let mut wrong_count = vec![None; 3];
            assert!(codec.reconstruct(&mut wrong_count).is_err());
            let data = [&[0u8; SHARE_SIZE][..]];
            let mut out = [0u8; SHARE_SIZE];
            assert!(codec.encode(&data, &mut [&mut out[..]]).is_err());
        }
    }

    #[test]
    fn batched_shards_code_like_single_lines() {
        for kind in KINDS {
            let k = 4;
            let codec = Codec::new(kind, k).unwrap();
            let lines: Vec<Vec<Vec<u8>>> = (0..3)
                .map(|seed| encode_line(&codec, &shares(k, seed)))
                .collect();
            // Shard i of the batch = share i of each line, side by side.
            let mut batch: Vec<Vec<u8>> = (0..2 * k)
                .map(|i| lines.iter().flat_map(|l| l[i].clone()).collect())
                .collect();
            let present = [false, true, false, true, true, false, true, false];
            for (i, shard) in batch.iter_mut().enumerate() {
                if !present[i] {
                    shard.fill(0);
                }
            }
            let mut shards: Vec<&mut [u8]> = batch.iter_mut().map(Vec::as_mut_slice).collect();
            codec.coder().reconstruct(&mut shards, &present).unwrap();
            for (i, shard) in batch.iter().enumerate() {
                for (l, line) in lines.iter().enumerate() {
                    assert_eq!(&shard[l * SHARE_SIZE..(l + 1) * SHARE_SIZE], &line[i][..]);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_k_shares_rebuild_the_line(
            log_k in 0u32..4,
            seed in any::<u8>(),
            keep in proptest::collection::vec(any::<bool>(), 16),
            kind_index in 0usize..2,
        ) {
            let k = 1usize << log_k;
            let codec = Codec::new(KINDS[kind_index], k).unwrap();
            let line = encode_line(&codec, &shares(k, seed));
            let mut partial: Vec<Option<Vec<u8>>> = line
                .iter()
                .zip(&keep)
                .map(|(s, keep)| keep.then(|| s.clone()))
                .collect();
            let present = partial.iter().filter(|s| s.is_some()).count();
            let result = codec.reconstruct(&mut partial);
            if present >= k {
                prop_assert!(result.is_ok());
                let rebuilt: Vec<Vec<u8>> = partial.into_iter().map(Option::unwrap).collect();
                prop_assert_eq!(rebuilt, line);
            } else {
                prop_assert!(result.is_err());
            }
        }
    }
}
