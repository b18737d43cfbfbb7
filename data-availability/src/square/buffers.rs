//! Recycled square-sized buffers. Fresh memory costs a page fault for every 4 KiB page on
//! first write, about a sixth of the time of extending a square, so the buffers of dropped
//! squares are kept (up to a bound) and handed to the next square, which overwrites them.
//!
//! A buffer handed out here has the requested length but unspecified contents (zeros or
//! what an earlier square left): only code that writes every element before reading it
//! asks for one.

use std::mem::size_of;
use std::sync::{Mutex, MutexGuard};

use lamina_primitives::Hash;

/// Most bytes kept in spare share buffers: one square of the largest size (k = 512), or
/// four of k = 256. Only sizes actually built are kept; [`release_spare_buffers`] frees
/// them.
pub const MAX_SPARE_SHARE_BYTES: usize = 512 << 20;
/// Most bytes kept in spare hash buffers (leaf hashes and tree nodes): those of one
/// square of the largest size.
pub const MAX_SPARE_HASH_BYTES: usize = 128 << 20;

static SPARE_SHARES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static SPARE_HASHES: Mutex<Vec<Vec<Hash>>> = Mutex::new(Vec::new());

fn lock<T>(spares: &Mutex<Vec<Vec<T>>>) -> MutexGuard<'_, Vec<Vec<T>>> {
    // A panic while holding the lock cannot leave the list half-updated (every change is
    // one push or one removal), so a poisoned list is still sound.
    spares
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take<T: Clone>(spares: &Mutex<Vec<Vec<T>>>, len: usize, fill: T) -> Vec<T> {
    let reused = {
        let mut spares = lock(spares);
        let best = spares
            .iter()
            .enumerate()
            .filter(|(_, buffer)| buffer.capacity() >= len)
            .min_by_key(|(_, buffer)| buffer.capacity())
            .map(|(at, _)| at);
        best.map(|at| spares.swap_remove(at))
    };
    match reused {
        Some(mut buffer) => {
            if buffer.len() >= len {
                buffer.truncate(len);
            } else {
                buffer.resize(len, fill);
            }
            buffer
        }
        None => vec![fill; len],
    }
}

fn give<T>(spares: &Mutex<Vec<Vec<T>>>, buffer: Vec<T>, max_bytes: usize) {
    let bytes = buffer.capacity() * size_of::<T>();
    if bytes == 0 || bytes > max_bytes {
        return;
    }
    let mut spares = lock(spares);
    let held: usize = spares.iter().map(|b| b.capacity() * size_of::<T>()).sum();
    if held + bytes <= max_bytes {
        spares.push(buffer);
    }
}

/// A share buffer of `len` bytes, contents unspecified.
pub(crate) fn take_shares(len: usize) -> Vec<u8> {
    take(&SPARE_SHARES, len, 0)
}

/// A hash buffer of `len` hashes, contents unspecified.
pub(crate) fn take_hashes(len: usize) -> Vec<Hash> {
    take(&SPARE_HASHES, len, Hash::ZERO)
}

/// Keeps `buffer` for a later square if the bound allows.
pub(crate) fn give_shares(buffer: Vec<u8>) {
    give(&SPARE_SHARES, buffer, MAX_SPARE_SHARE_BYTES);
}

/// Keeps `buffer` for a later square if the bound allows.
pub(crate) fn give_hashes(buffer: Vec<Hash>) {
    give(&SPARE_HASHES, buffer, MAX_SPARE_HASH_BYTES);
}

/// Frees every spare buffer (for a node that wants its memory back, and for measuring
/// the cold cost of a square).
pub fn release_spare_buffers() {
    lock(&SPARE_SHARES).clear();
    lock(&SPARE_HASHES).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_asked_length() {
        let mut buffer = take_shares(1000);
        assert_eq!(buffer.len(), 1000);
        buffer.fill(7);
        give_shares(buffer);
        // Another test may take it first; either way the length is right.
        assert_eq!(take_shares(10).len(), 10);
        assert_eq!(take_shares(5000).len(), 5000);
        give_shares(Vec::with_capacity(MAX_SPARE_SHARE_BYTES + 1));
        assert!(lock(&SPARE_SHARES)
            .iter()
            .all(|b| b.capacity() <= MAX_SPARE_SHARE_BYTES));
        let hashes = take_hashes(64);
        assert_eq!(hashes.len(), 64);
        give_hashes(hashes);
        release_spare_buffers();
    }
}
