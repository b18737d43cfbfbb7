//! The pool of outside blobs (rollup data, any namespace but the chain's own) waiting for a
//! block: filled by `POST /v1/da/blobs`, drained into proposals, emptied of what stored
//! blocks carry.
//!
//! Synchronous and bounded: a blob larger than a block can carry is refused up front, and
//! the pool refuses new blobs once it holds `max_pool_bytes`.

use std::collections::{HashMap, VecDeque};

use lamina_primitives::interfaces::da::DaError;
use lamina_primitives::{Blob, Hash};

/// Blobs waiting for a block, oldest first.
#[derive(Debug)]
pub(crate) struct BlobPool {
    /// Largest blob accepted, in data bytes.
    max_blob_bytes: u64,
    /// Most data bytes the pool holds at once.
    max_pool_bytes: u64,
    /// Arrival order; an entry whose commitment left `waiting` is skipped and dropped lazily.
    order: VecDeque<Hash>,
    /// Commitment → blob.
    waiting: HashMap<Hash, Blob>,
    /// Data bytes in `waiting`.
    bytes: u64,
}

impl BlobPool {
    pub(crate) fn new(max_blob_bytes: u64, max_pool_bytes: u64) -> Self {
        BlobPool {
            max_blob_bytes,
            max_pool_bytes,
            order: VecDeque::new(),
            waiting: HashMap::new(),
            bytes: 0,
        }
    }

    /// See `DaRequest::SubmitBlob`.
    pub(crate) fn submit(&mut self, blob: Blob) -> Result<Hash, DaError> {
        if blob.namespace.is_reserved() {
            return Err(DaError::ReservedNamespace(blob.namespace));
        }
        let size = blob.data.len() as u64;
        if size > self.max_blob_bytes {
            return Err(DaError::BlobTooLarge {
                size,
                limit: self.max_blob_bytes,
            });
        }
        let commitment = blob.commitment();
        if self.waiting.contains_key(&commitment) {
            return Ok(commitment);
        }
        if self.bytes.saturating_add(size) > self.max_pool_bytes {
            return Err(DaError::PoolFull {
                pending_bytes: self.bytes,
            });
        }
        self.bytes += size;
        self.order.push_back(commitment);
        self.waiting.insert(commitment, blob);
        Ok(commitment)
    }

    /// See `DaRequest::PendingBlobs`: the oldest blobs that fit in `max_bytes` (encoded), in
    /// arrival order; one too large for what is left does not stop smaller later ones.
    pub(crate) fn pending(&self, max_bytes: usize) -> Vec<Blob> {
        let mut left = max_bytes;
        let mut out = Vec::new();
        for commitment in &self.order {
            let Some(blob) = self.waiting.get(commitment) else {
                continue;
            };
            if let Some(rest) = left.checked_sub(blob.encoded_len()) {
                left = rest;
                out.push(blob.clone());
            }
        }
        out
    }

    /// Drops the blobs a stored block carries.
    pub(crate) fn remove_included(&mut self, body: &[Blob]) {
        for blob in body.iter().filter(|blob| !blob.namespace.is_reserved()) {
            if let Some(removed) = self.waiting.remove(&blob.commitment()) {
                self.bytes -= removed.data.len() as u64;
            }
        }
        if self.waiting.is_empty() {
            self.order.clear();
        } else if self.order.len() > 2 * self.waiting.len() {
            let waiting = &self.waiting;
            self.order
                .retain(|commitment| waiting.contains_key(commitment));
        }
    }

    /// Number of blobs and data bytes waiting.
    pub(crate) fn size(&self) -> (usize, u64) {
        (self.waiting.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Namespace;

    fn blob(tag: u8, len: usize) -> Blob {
        Blob {
            namespace: Namespace(*b"rollup-a"),
            data: vec![tag; len],
        }
    }

    #[test]
    fn refuses_reserved_namespaces_oversized_blobs_and_overflow() {
        let mut pool = BlobPool::new(100, 150);
        for namespace in [Namespace::EXECUTION, Namespace::SETTLEMENT] {
            let reserved = Blob {
                namespace,
                data: vec![1],
            };
            assert_eq!(
                pool.submit(reserved),
                Err(DaError::ReservedNamespace(namespace))
            );
        }
        assert_eq!(
            pool.submit(blob(1, 101)),
            Err(DaError::BlobTooLarge {
                size: 101,
                limit: 100
            })
        );
        let first = pool.submit(blob(1, 100)).unwrap();
        assert_eq!(first, blob(1, 100).commitment());
        // Submitting the same blob again is a no-op, not an overflow.
        assert_eq!(pool.submit(blob(1, 100)), Ok(first));
        assert_eq!(
            pool.submit(blob(2, 51)),
            Err(DaError::PoolFull { pending_bytes: 100 })
        );
        pool.submit(blob(2, 50)).unwrap();
        assert_eq!(pool.size(), (2, 150));
    }

    #[test]
    fn pending_keeps_arrival_order_within_the_budget_until_a_block_carries_them() {
        let mut pool = BlobPool::new(1000, 10_000);
        for (tag, len) in [(1, 100), (2, 500), (3, 50)] {
            pool.submit(blob(tag, len)).unwrap();
        }
        let prefix = Blob::ENCODED_PREFIX_BYTES;
        // Room for the first and third only: the second is skipped, not a stopper.
        let taken = pool.pending(100 + 50 + 2 * prefix);
        assert_eq!(taken, vec![blob(1, 100), blob(3, 50)]);
        // Taking does not remove: a failed proposal loses nothing.
        assert_eq!(pool.pending(usize::MAX).len(), 3);
        let block_body = vec![
            Blob {
                namespace: Namespace::EXECUTION,
                data: vec![],
            },
            blob(1, 100),
            blob(3, 50),
        ];
        pool.remove_included(&block_body);
        assert_eq!(pool.pending(usize::MAX), vec![blob(2, 500)]);
        assert_eq!(pool.size(), (1, 500));
        pool.remove_included(&[blob(2, 500)]);
        assert_eq!(pool.size(), (0, 0));
        assert!(pool.pending(usize::MAX).is_empty());
    }
}
