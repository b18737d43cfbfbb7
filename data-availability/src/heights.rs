//! Per-height storage shared by the schemes: one tree of data (a `replicated` body, a
//! `reed-solomon` original quadrant), one of `data_root`s kept apart so availability checks
//! stay cheap, and the highest height stored, all written in one sled transaction. A
//! height's data can later be swapped, atomically, for what a scheme keeps of it once
//! pruned (`reed-solomon`: its held rows), its root staying.

use lamina_primitives::interfaces::da::DaError;
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

/// Each height's data and root, keyed by big-endian height.
#[derive(Debug)]
pub(crate) struct HeightStore {
    data: sled::Tree,
    roots: sled::Tree,
    meta: sled::Tree,
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
    pub(crate) fn data_entry(&self, height: u64) -> Result<Option<sled::IVec>, DaError> {
        self.data.get(height.to_be_bytes()).map_err(storage)
    }

    /// Every height up to `through` whose data is stored, in increasing order.
    pub(crate) fn heights_through(&self, through: u64) -> Result<Vec<u64>, DaError> {
        self.data
            .range(..=through.to_be_bytes())
            .keys()
            .map(|key| {
                let key = key.map_err(storage)?;
                <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        storage(format!("a data key of {} bytes is not a height", key.len()))
                    })
            })
            .collect()
    }

    /// Replaces `height`'s data with `kept`, stored under `height` in `to`, in one
    /// transaction, so that a crash leaves either the data or what replaces it, never
    /// neither. The root stays. Writes but does not flush.
    pub(crate) fn replace_data(
        &self,
        height: u64,
        to: &sled::Tree,
        kept: &[u8],
    ) -> Result<(), DaError> {
        let key = height.to_be_bytes();
        (&self.data, to)
            .transaction(|(data, to)| {
                data.remove(&key)?;
                to.insert(&key, kept)?;
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
    pub(crate) fn data_at(&self, height: u64) -> Result<(sled::IVec, Hash), DaError> {
        let root = self
            .root_at(height)?
            .ok_or(DaError::HeightNotFound(height))?;
        let data = self
            .data
            .get(height.to_be_bytes())
            .map_err(storage)?
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
        (&self.data, &self.roots, &self.meta)
            .transaction(|(data_tree, roots, meta)| {
                data_tree.insert(&key, data)?;
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
