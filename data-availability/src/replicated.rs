//! The `replicated` scheme's state: every node keeps every body whole, in sled, and proves
//! any share of it on request.
//!
//! Synchronous on purpose: the actor calls in here and only adds the awaited flush, so all of
//! the storage rules are unit-testable without a runtime.

use std::collections::VecDeque;
use std::sync::Arc;

use lamina_primitives::interfaces::da::{
    DaError, DataCommitment, DataProof, NamespaceData, SharePosition, ShareWithProof,
};
use lamina_primitives::{codec, Blob, Block, Hash, Namespace};

use crate::heights::{storage, HeightStore, Stored};
use crate::shares;
use crate::SetupError;

/// Tree holding each height's encoded body, in pieces under the big-endian height (see
/// `heights`).
pub(crate) const BODIES_TREE: &str = "da/bodies";
/// Tree holding each height's `data_root`.
pub(crate) const ROOTS_TREE: &str = "da/roots";
/// Tree holding scalar metadata.
pub(crate) const META_TREE: &str = "da/meta";

/// Bodies whose leaf hashes are kept in memory: share requests tend to cluster on the
/// latest heights, and re-hashing a large body per share would dominate serving time.
const LEAF_CACHE_LEN: usize = 4;

/// The stored data of the `replicated` scheme.
#[derive(Debug)]
pub(crate) struct Replicated {
    heights: HeightStore,
    max_body_bytes: u64,
    leaf_cache: VecDeque<(u64, Hash, Arc<Vec<Hash>>)>,
}

impl Replicated {
    /// Opens (or creates) the scheme's trees in `db`.
    pub(crate) fn open(db: &sled::Db, max_body_bytes: u64) -> Result<Self, SetupError> {
        Ok(Replicated {
            heights: HeightStore::open(db, BODIES_TREE, ROOTS_TREE, META_TREE)?,
            max_body_bytes,
            leaf_cache: VecDeque::with_capacity(LEAF_CACHE_LEN),
        })
    }

    fn check_size(&self, encoded: &[u8]) -> Result<(), DaError> {
        let size = encoded.len() as u64;
        if size > self.max_body_bytes {
            return Err(DaError::BodyTooLarge {
                size,
                limit: self.max_body_bytes,
            });
        }
        Ok(())
    }

    /// See `DaRequest::Commit`.
    pub(crate) fn commit(&self, body: &[Blob]) -> Result<DataCommitment, DaError> {
        let encoded = Block::encode_body(body);
        self.check_size(&encoded)?;
        Ok(shares::commit_encoded(&encoded).0)
    }

    /// See `DaRequest::Store`. Writes but does not flush: the caller flushes before it
    /// reports the data as stored. A different body later stored at the same height replaces
    /// the first (a proposal re-made in a later round has the same height). The size limit
    /// is not applied here: the body is already committed, and refusing it would stall this
    /// node forever (e.g. after its limit was lowered).
    pub(crate) fn store(
        &mut self,
        height: u64,
        data_root: Hash,
        body: &[Blob],
    ) -> Result<Stored, DaError> {
        let encoded = Block::encode_body(body);
        let (commitment, leaves) = shares::commit_encoded(&encoded);
        if commitment.data_root != data_root {
            return Err(DaError::RootMismatch(data_root));
        }
        let stored = self.heights.write(height, data_root, &encoded)?;
        if stored == Stored::AlreadyStored {
            return Ok(stored);
        }
        self.leaf_cache.retain(|(h, _, _)| *h != height);
        self.remember_leaves(height, data_root, Arc::new(leaves));
        Ok(Stored::Written)
    }

    /// See `DaRequest::IsAvailable`.
    pub(crate) fn is_available(&self, height: u64, data_root: Hash) -> bool {
        self.heights.is_available(height, data_root)
    }

    /// Highest height whose data is stored.
    pub(crate) fn stored_height(&self) -> u64 {
        self.heights.stored_height()
    }

    fn remember_leaves(&mut self, height: u64, root: Hash, leaves: Arc<Vec<Hash>>) {
        if self.leaf_cache.len() >= LEAF_CACHE_LEN {
            self.leaf_cache.pop_front();
        }
        self.leaf_cache.push_back((height, root, leaves));
    }

    /// See `DaRequest::GetShare`. The shares form a single row.
    pub(crate) fn share(
        &mut self,
        height: u64,
        position: SharePosition,
    ) -> Result<ShareWithProof, DaError> {
        let (encoded, root) = self.heights.data_at(height)?;
        let count = shares::share_count(encoded.len());
        let index = match position {
            SharePosition::Index(index) => index,
            SharePosition::Cell { row: 0, col } => col,
            SharePosition::Cell { row, col } => {
                return Err(DaError::CellOutOfRange {
                    height,
                    row,
                    col,
                    rows: 1,
                    cols: count,
                })
            }
        };
        if index >= count {
            return Err(DaError::ShareOutOfRange {
                height,
                index,
                count,
            });
        }
        let cached = self
            .leaf_cache
            .iter()
            .find(|(h, r, _)| *h == height && *r == root)
            .map(|(_, _, leaves)| Arc::clone(leaves));
        let leaves = match cached {
            Some(leaves) => leaves,
            None => {
                let leaves = Arc::new(shares::leaf_hashes(&encoded));
                self.remember_leaves(height, root, Arc::clone(&leaves));
                leaves
            }
        };
        let (share, proof) =
            shares::prove_share(&encoded, &leaves, index).ok_or(DaError::ShareOutOfRange {
                height,
                index,
                count,
            })?;
        Ok(ShareWithProof {
            height,
            index,
            row: 0,
            col: index,
            share,
            data_root: root,
            proof: DataProof::Flat(proof),
        })
    }

    /// See `DaRequest::GetNamespace`: the stored body's blobs of `namespace`, without a
    /// proof (this scheme commits to the body as a whole).
    pub(crate) fn namespace(
        &self,
        height: u64,
        namespace: Namespace,
    ) -> Result<NamespaceData, DaError> {
        let (body, data_root) = self.decoded_body(height)?;
        Ok(NamespaceData {
            height,
            data_root,
            blobs: body
                .into_iter()
                .filter(|blob| blob.namespace == namespace)
                .map(|blob| blob.data)
                .collect(),
            proof: None,
        })
    }

    /// See `DaRequest::GetBody`: the stored body, decoded.
    pub(crate) fn body(&self, height: u64) -> Result<Arc<Vec<Blob>>, DaError> {
        self.decoded_body(height).map(|(body, _)| Arc::new(body))
    }

    /// `height`'s stored body and root.
    fn decoded_body(&self, height: u64) -> Result<(Vec<Blob>, Hash), DaError> {
        let (encoded, data_root) = self.heights.data_at(height)?;
        let body = codec::decode_trusted(&encoded).map_err(|error| {
            storage(format!(
                "{BODIES_TREE} entry of height {height} is corrupt: {error}"
            ))
        })?;
        Ok((body, data_root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Namespace;

    fn body(fill: u8, len: usize) -> Vec<Blob> {
        vec![Blob {
            namespace: Namespace::EXECUTION,
            data: vec![fill; len],
        }]
    }

    fn open(dir: &tempfile::TempDir, max: u64) -> (sled::Db, Replicated) {
        let db = sled::open(dir.path()).unwrap();
        let scheme = Replicated::open(&db, max).unwrap();
        (db, scheme)
    }

    #[test]
    fn store_then_serve_shares() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut da) = open(&dir, 1 << 20);
        let body = body(9, 2000);
        let commitment = da.commit(&body).unwrap();
        assert_eq!(commitment.share_count, 4);
        assert_eq!(
            da.store(3, commitment.data_root, &body).unwrap(),
            Stored::Written
        );
        assert_eq!(
            da.store(3, commitment.data_root, &body).unwrap(),
            Stored::AlreadyStored
        );
        assert_eq!(da.stored_height(), 3);
        assert!(da.is_available(3, commitment.data_root));
        assert!(!da.is_available(3, Hash::ZERO));
        assert!(!da.is_available(2, commitment.data_root));
        for index in 0..commitment.share_count {
            let share = da.share(3, SharePosition::Index(index)).unwrap();
            assert_eq!((share.row, share.col), (0, index));
            assert!(share
                .proof
                .verify(&commitment.data_root, 0, index, &share.share));
            let cell = SharePosition::Cell { row: 0, col: index };
            assert_eq!(da.share(3, cell).unwrap(), share);
        }
        assert_eq!(
            da.share(3, SharePosition::Cell { row: 1, col: 0 }),
            Err(DaError::CellOutOfRange {
                height: 3,
                row: 1,
                col: 0,
                rows: 1,
                cols: 4
            })
        );
        assert_eq!(
            da.namespace(3, Namespace::EXECUTION).unwrap().blobs,
            vec![body[0].data.clone()]
        );
        assert!(da
            .namespace(3, Namespace::SETTLEMENT)
            .unwrap()
            .blobs
            .is_empty());
        assert_eq!(
            da.namespace(4, Namespace::SETTLEMENT),
            Err(DaError::HeightNotFound(4))
        );
        assert_eq!(*da.body(3).unwrap(), body);
        assert_eq!(da.body(4), Err(DaError::HeightNotFound(4)));
        assert_eq!(
            da.share(3, SharePosition::Index(4)),
            Err(DaError::ShareOutOfRange {
                height: 3,
                index: 4,
                count: 4
            })
        );
        assert_eq!(
            da.share(4, SharePosition::Index(0)),
            Err(DaError::HeightNotFound(4))
        );
    }

    #[test]
    fn mismatched_root_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut da) = open(&dir, 1 << 20);
        let wrong = Hash::digest(b"wrong");
        assert_eq!(
            da.store(1, wrong, &body(1, 10)),
            Err(DaError::RootMismatch(wrong))
        );
        assert_eq!(da.stored_height(), 0);
        assert_eq!(
            da.share(1, SharePosition::Index(0)),
            Err(DaError::HeightNotFound(1))
        );
    }

    #[test]
    fn oversize_body_is_refused_for_proposals_but_stored_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut da) = open(&dir, 100);
        let big = body(1, 200);
        let size = Block::encode_body(&big).len() as u64;
        let expected = DaError::BodyTooLarge { size, limit: 100 };
        assert_eq!(da.commit(&big), Err(expected));
        // A committed body is stored whatever this node's limit: refusing it would stall
        // the node on a block the chain already agreed on.
        let root = shares::commit_encoded(&Block::encode_body(&big))
            .0
            .data_root;
        assert!(da.store(1, root, &big).is_ok());
    }

    #[test]
    fn later_body_replaces_and_heights_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (body(1, 600), body(2, 50));
        let (root1, root2) = {
            let (db, mut da) = open(&dir, 1 << 20);
            let root1 = da.commit(&first).unwrap().data_root;
            let root2 = da.commit(&second).unwrap().data_root;
            da.store(5, root1, &first).unwrap();
            assert!(da.share(5, SharePosition::Index(1)).is_ok());
            da.store(5, root2, &second).unwrap();
            da.store(2, root1, &first).unwrap();
            db.flush().unwrap();
            (root1, root2)
        };
        let (_db, mut da) = open(&dir, 1 << 20);
        assert_eq!(da.stored_height(), 5);
        assert!(da.is_available(5, root2));
        assert!(!da.is_available(5, root1));
        assert!(da.is_available(2, root1));
        let share = da.share(5, SharePosition::Index(0)).unwrap();
        assert!(share.proof.verify(&root2, 0, 0, &share.share));
        assert!(matches!(
            da.share(5, SharePosition::Index(1)),
            Err(DaError::ShareOutOfRange { count: 1, .. })
        ));
    }
}
