//! Per-height storage shared by the schemes: one tree of data (a `replicated` body, a
//! `reed-solomon` original quadrant), one of `data_root`s kept apart so availability checks
//! stay cheap, and the highest height stored, all written in one sled transaction. A
//! height's data can later be swapped, atomically, for what a scheme keeps of it once
//! pruned (`reed-solomon`: its held rows), its root staying.
//!
//! A height's data is stored in [pieces](lamina_primitives::pieces) under the big-endian
//! height (`height ‖ piece (BE u32)`), so that the page cache counts the bodies it holds at
//! their size. Databases written by earlier versions hold the data whole under the height
//! alone; those are still read.

use lamina_primitives::interfaces::da::DaError;
use lamina_primitives::pieces::{self, PiecesError};
use lamina_primitives::Hash;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::SetupError;

const STORED_HEIGHT_KEY: &str = "stored_height";

/// A storage failure as the layer's error.
pub(crate) fn storage(error: impl std::fmt::Display) -> DaError {
    DaError::Storage(error.to_string())
}

/// What a successful store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The data was written; it still has to be flushed.
    Written,
    /// Exactly this data was already stored.
    AlreadyStored,
}

/// A failed transaction as the layer's error.
fn transaction_failed(error: TransactionError<()>) -> DaError {
    match error {
        TransactionError::Storage(error) => storage(error),
        TransactionError::Abort(()) => storage("transaction aborted"),
    }
}

/// The big-endian `u64` under `key` in `tree` (named `tree_name`), if any.
fn read_u64(tree: &sled::Tree, tree_name: &str, key: &str) -> Result<Option<u64>, SetupError> {
    let Some(bytes) = tree.get(key)? else {
        return Ok(None);
    };
    <[u8; 8]>::try_from(bytes.as_ref())
        .map(|bytes| Some(u64::from_be_bytes(bytes)))
        .map_err(|_| {
            SetupError::Corrupt(format!(
                "{tree_name}/{key} holds {} bytes, not a u64",
                bytes.len()
            ))
        })
}

/// The value stored in pieces under `height` in `tree` (named `tree_name`), if any.
pub(crate) fn read_pieces(
    tree: &sled::Tree,
    tree_name: &str,
    height: u64,
) -> Result<Option<Vec<u8>>, DaError> {
    let key = height.to_be_bytes();
    pieces::reassemble(&key, tree.scan_prefix(key)).map_err(|error| match error {
        PiecesError::Storage(error) => storage(error),
        unexpected @ PiecesError::Unexpected { .. } => storage(format!(
            "{tree_name} entry of height {height}: {unexpected}"
        )),
    })
}

/// Every key the value under `height` in `tree` is stored under.
pub(crate) fn piece_keys(tree: &sled::Tree, height: u64) -> Result<Vec<sled::IVec>, DaError> {
    tree.scan_prefix(height.to_be_bytes())
        .keys()
        .collect::<Result<_, _>>()
        .map_err(storage)
}

/// Each height's data (in pieces) and root, keyed by big-endian height.
#[derive(Debug)]
pub(crate) struct HeightStore {
    data: sled::Tree,
    roots: sled::Tree,
    meta: sled::Tree,
    data_name: &'static str,
    roots_name: &'static str,
    meta_name: &'static str,
    stored_height: u64,
}

impl HeightStore {
    /// Opens (or creates) the trees named `data`, `roots` and `meta` in `db`.
    pub(crate) fn open(
        db: &sled::Db,
        data: &'static str,
        roots: &'static str,
        meta: &'static str,
    ) -> Result<Self, SetupError> {
        let meta_tree = db.open_tree(meta)?;
        let stored_height = read_u64(&meta_tree, meta, STORED_HEIGHT_KEY)?.unwrap_or(0);
        Ok(HeightStore {
            data: db.open_tree(data)?,
            roots: db.open_tree(roots)?,
            meta: meta_tree,
            data_name: data,
            roots_name: roots,
            meta_name: meta,
            stored_height,
        })
    }

    /// The `u64` a scheme recorded under `key` in the meta tree, if any.
    pub(crate) fn read_meta(&self, key: &str) -> Result<Option<u64>, SetupError> {
        read_u64(&self.meta, self.meta_name, key)
    }

    /// Records `value` under `key` in the meta tree. Writes but does not flush.
    pub(crate) fn write_meta(&self, key: &str, value: u64) -> Result<(), DaError> {
        self.meta
            .insert(key, &value.to_be_bytes())
            .map_err(storage)?;
        Ok(())
    }

    /// `height`'s data if it is stored (whatever its root).
    pub(crate) fn data_entry(&self, height: u64) -> Result<Option<Vec<u8>>, DaError> {
        read_pieces(&self.data, self.data_name, height)
    }

    /// Every height up to `through` whose data is stored, in increasing order.
    pub(crate) fn heights_through(&self, through: u64) -> Result<Vec<u64>, DaError> {
        let mut heights: Vec<u64> = Vec::new();
        for key in self.data.iter().keys() {
            let key = key.map_err(storage)?;
            let height = key
                .get(..8)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| {
                    storage(format!("a data key of {} bytes is not a height", key.len()))
                })?;
            if height > through {
                break;
            }
            // A height's pieces are adjacent.
            if heights.last() != Some(&height) {
                heights.push(height);
            }
        }
        Ok(heights)
    }

    /// Replaces `height`'s data with `kept`, stored in pieces under `height` in `to`, in one
    /// transaction, so that a crash leaves either the data or what replaces it, never
    /// neither. The root stays. Writes but does not flush.
    pub(crate) fn replace_data(
        &self,
        height: u64,
        to: &sled::Tree,
        kept: &[u8],
    ) -> Result<(), DaError> {
        let key = height.to_be_bytes();
        let data_keys = piece_keys(&self.data, height)?;
        let stale = piece_keys(to, height)?;
        (&self.data, to)
            .transaction(|(data, to)| {
                for piece in &data_keys {
                    data.remove(piece)?;
                }
                for piece in &stale {
                    to.remove(piece)?;
                }
                for (piece, bytes) in pieces::pieces(&key, kept) {
                    to.insert(piece, bytes)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(transaction_failed)
    }

    /// Highest height whose data is stored.
    pub(crate) fn stored_height(&self) -> u64 {
        self.stored_height
    }

    /// The root stored for `height`, if any.
    pub(crate) fn root_at(&self, height: u64) -> Result<Option<Hash>, DaError> {
        let Some(bytes) = self.roots.get(height.to_be_bytes()).map_err(storage)? else {
            return Ok(None);
        };
        let root: [u8; 32] = bytes.as_ref().try_into().map_err(|_| {
            storage(format!(
                "{} entry of height {height} is corrupt",
                self.roots_name
            ))
        })?;
        Ok(Some(Hash(root)))
    }

    /// `height`'s data and root, or `HeightNotFound`.
    pub(crate) fn data_at(&self, height: u64) -> Result<(Vec<u8>, Hash), DaError> {
        let root = self
            .root_at(height)?
            .ok_or(DaError::HeightNotFound(height))?;
        let data = self
            .data_entry(height)?
            .ok_or(DaError::HeightNotFound(height))?;
        Ok((data, root))
    }

    /// Keeps `data` with `data_root` as `height`'s, unless exactly that root is already
    /// there. Writes but does not flush. Another root at the same height is replaced (a
    /// proposal re-made in a later round has the same height).
    pub(crate) fn write(
        &mut self,
        height: u64,
        data_root: Hash,
        data: &[u8],
    ) -> Result<Stored, DaError> {
        if self.root_at(height)? == Some(data_root) {
            return Ok(Stored::AlreadyStored);
        }
        let key = height.to_be_bytes();
        let new_stored_height = self.stored_height.max(height);
        // The data of the root replaced may have more pieces than this.
        let stale = piece_keys(&self.data, height)?;
        (&self.data, &self.roots, &self.meta)
            .transaction(|(data_tree, roots, meta)| {
                for piece in &stale {
                    data_tree.remove(piece)?;
                }
                for (piece, bytes) in pieces::pieces(&key, data) {
                    data_tree.insert(piece, bytes)?;
                }
                roots.insert(&key, &data_root.0)?;
                meta.insert(STORED_HEIGHT_KEY, &new_stored_height.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(transaction_failed)?;
        self.stored_height = new_stored_height;
        Ok(Stored::Written)
    }

    /// See `DaRequest::IsAvailable`. A storage failure counts as "not available": the
    /// caller must not vote for data it cannot read.
    pub(crate) fn is_available(&self, height: u64, data_root: Hash) -> bool {
        match self.root_at(height) {
            Ok(stored) => stored == Some(data_root),
            Err(error) => {
                tracing::error!(height, %error, "cannot read stored data root");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lamina_primitives::pieces::PIECE_BYTES;

    use super::*;

    fn open(db: &sled::Db) -> HeightStore {
        HeightStore::open(db, "data", "roots", "meta").unwrap()
    }

    #[test]
    fn data_larger_than_a_piece_is_written_read_replaced_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut store = open(&db);
        let large = vec![5u8; PIECE_BYTES * 2 + 1];
        for height in 1..=3 {
            store
                .write(height, Hash([height as u8; 32]), &large)
                .unwrap();
        }
        assert_eq!(piece_keys(&store.data, 2).unwrap().len(), 3);
        assert_eq!(store.data_at(2).unwrap(), (large.clone(), Hash([2; 32])));
        assert_eq!(store.heights_through(2).unwrap(), vec![1, 2]);
        assert_eq!(store.heights_through(u64::MAX).unwrap(), vec![1, 2, 3]);

        // Another root at the same height, with less data: nothing of the first is left.
        store.write(2, Hash([9; 32]), b"small").unwrap();
        assert_eq!(piece_keys(&store.data, 2).unwrap().len(), 1);
        assert_eq!(
            store.data_at(2).unwrap(),
            (b"small".to_vec(), Hash([9; 32]))
        );

        // Replaced by what pruning keeps: every piece goes.
        let kept = db.open_tree("kept").unwrap();
        store.replace_data(1, &kept, b"rows").unwrap();
        assert!(piece_keys(&store.data, 1).unwrap().is_empty());
        assert_eq!(store.data_entry(1).unwrap(), None);
        assert_eq!(
            read_pieces(&kept, "kept", 1).unwrap(),
            Some(b"rows".to_vec())
        );
        assert_eq!(store.heights_through(u64::MAX).unwrap(), vec![2, 3]);

        // Reopened, the data is all there.
        drop(store);
        let store = open(&db);
        assert_eq!(store.stored_height(), 3);
        assert_eq!(store.data_entry(3).unwrap(), Some(large));
    }

    #[test]
    fn data_stored_whole_by_an_earlier_version_is_read_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut store = open(&db);
        store.write(4, Hash([4; 32]), b"placeholder").unwrap();
        for key in piece_keys(&store.data, 4).unwrap() {
            store.data.remove(key).unwrap();
        }
        store
            .data
            .insert(4u64.to_be_bytes(), &b"whole"[..])
            .unwrap();
        assert_eq!(
            store.data_at(4).unwrap(),
            (b"whole".to_vec(), Hash([4; 32]))
        );
        assert_eq!(store.heights_through(4).unwrap(), vec![4]);
        let kept = db.open_tree("kept").unwrap();
        store.replace_data(4, &kept, b"rows").unwrap();
        assert!(store.data.is_empty());
    }
}
