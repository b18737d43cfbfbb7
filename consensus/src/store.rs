//! The committed chain in sled: each height's [`CommittedBlock`] (block and certificate) and
//! the committed height, always written together in one transaction.
//!
//! Synchronous; the engine awaits the flush itself before it announces a block.

use lamina_primitives::{codec, CommittedBlock, Genesis, Hash};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::SetupError;

/// Tree of committed blocks, keyed by big-endian height.
pub(crate) const BLOCKS_TREE: &str = "consensus/blocks";
/// Tree of the engine's scalar state.
pub(crate) const META_TREE: &str = "consensus/meta";
const COMMITTED_HEIGHT_KEY: &[u8] = b"committed_height";

/// The end of the committed chain: what the next block builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tip {
    /// Committed height (0: only genesis).
    pub(crate) height: u64,
    /// Hash of that block (the genesis hash at height 0).
    pub(crate) hash: Hash,
    /// Its timestamp (the genesis time at height 0).
    pub(crate) timestamp_ms: u64,
}

impl Tip {
    /// The tip of a chain with no blocks yet.
    pub(crate) fn genesis(genesis: &Genesis) -> Self {
        Tip {
            height: 0,
            hash: genesis.hash(),
            timestamp_ms: genesis.genesis_time_ms,
        }
    }

    fn of(block: &CommittedBlock) -> Self {
        Tip {
            height: block.block.height(),
            hash: block.block.hash(),
            timestamp_ms: block.block.header.timestamp_ms,
        }
    }
}

/// Why a stored block could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error("stored block {height} does not decode: {message}")]
    Corrupt { height: u64, message: String },
}

/// The committed chain. Clones share the same sled trees.
#[derive(Debug, Clone)]
pub(crate) struct ChainStore {
    blocks: sled::Tree,
    meta: sled::Tree,
}

impl ChainStore {
    /// Opens the chain in `db` and finds its tip, checking that the stored chain belongs to
    /// `genesis` (a database reused with another genesis would fork silently otherwise).
    pub(crate) fn open(db: &sled::Db, genesis: &Genesis) -> Result<(Self, Tip), SetupError> {
        let store = ChainStore {
            blocks: db.open_tree(BLOCKS_TREE)?,
            meta: db.open_tree(META_TREE)?,
        };
        let height = match store.meta.get(COMMITTED_HEIGHT_KEY)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                    SetupError::Corrupt(format!("{META_TREE}/committed_height is not a u64"))
                })?;
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        if height == 0 {
            return Ok((store, Tip::genesis(genesis)));
        }
        let read = |h: u64| -> Result<CommittedBlock, SetupError> {
            store
                .get(h)
                .map_err(|e| SetupError::Corrupt(e.to_string()))?
                .ok_or_else(|| {
                    SetupError::Corrupt(format!(
                        "committed height is {height} but block {h} is missing"
                    ))
                })
        };
        let first = read(1)?;
        if first.block.header.chain_id != genesis.chain_id
            || first.block.header.parent_hash != genesis.hash()
        {
            return Err(SetupError::GenesisMismatch {
                stored_chain_id: first.block.header.chain_id,
                chain_id: genesis.chain_id.clone(),
            });
        }
        let tip = read(height)?;
        Ok((store, Tip::of(&tip)))
    }

    /// The committed block at `height`, if any.
    pub(crate) fn get(&self, height: u64) -> Result<Option<CommittedBlock>, StoreError> {
        let Some(bytes) = self.blocks.get(height.to_be_bytes())? else {
            return Ok(None);
        };
        codec::decode_trusted(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                height,
                message: e.to_string(),
            })
    }

    /// Writes `block` and makes its height the committed height, atomically. Does not flush.
    pub(crate) fn put(&self, block: &CommittedBlock) -> Result<Tip, StoreError> {
        let height = block.block.height();
        let key = height.to_be_bytes();
        let value = codec::encode(block);
        (&self.blocks, &self.meta)
            .transaction(|(blocks, meta)| {
                blocks.insert(&key, value.as_slice())?;
                meta.insert(COMMITTED_HEIGHT_KEY, &key)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(error) => StoreError::Sled(error),
                TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("block write aborted".to_string()))
                }
            })?;
        Ok(Tip::of(block))
    }
}
