//! The committed chain in sled: each height's [`CommittedBlock`] (block and certificate) and
//! the committed height, always written together in one transaction.
//!
//! Old bodies can be pruned ([`ChainStore::prune_bodies`]): a pruned height moves from
//! `consensus/blocks` to `consensus/headers` as a [`CommittedHeader`] (header and
//! certificate), in the same transaction that advances `pruned_through` in `consensus/meta`.
//! So every committed height is in exactly one of the two trees, and the heights
//! `1..=pruned_through` are exactly those in `consensus/headers`.
//!
//! A block with its body is stored in [pieces](lamina_primitives::pieces) under its height,
//! so that the page cache counts the blocks it holds at their size.
//!
//! Synchronous; the engine awaits the flush itself before it announces a block or answers a
//! prune.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lamina_primitives::pieces::{self, PiecesError};
use lamina_primitives::{codec, BlockHeader, CommittedBlock, CommittedHeader, Genesis, Hash};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::SetupError;

/// Tree of committed blocks whose body is kept: `height (BE) ‖ piece (BE u32)` → a piece of
/// borsh(`CommittedBlock`). Databases written by earlier versions hold the whole block under
/// the height alone; those are still read.
pub(crate) const BLOCKS_TREE: &str = "consensus/blocks";
/// Tree of committed blocks whose body is pruned ([`CommittedHeader`]s), keyed by big-endian
/// height.
pub(crate) const HEADERS_TREE: &str = "consensus/headers";
/// Tree of the engine's scalar state.
pub(crate) const META_TREE: &str = "consensus/meta";
const COMMITTED_HEIGHT_KEY: &[u8] = b"committed_height";
const PRUNED_THROUGH_KEY: &[u8] = b"pruned_through";
/// Heights moved per transaction when pruning: large enough to amortise the transaction,
/// small enough that a failure loses little work and the write set stays small (only the
/// headers are held; each body is read and dropped one at a time).
const PRUNE_BATCH: u64 = 64;

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

    fn of(header: &BlockHeader) -> Self {
        Tip {
            height: header.height,
            hash: header.hash(),
            timestamp_ms: header.timestamp_ms,
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
    /// The block is committed but only its header and certificate are kept.
    #[error("the body of block {height} is pruned")]
    Pruned { height: u64 },
    /// A committed height below the tip is in neither tree.
    #[error("committed block {height} is missing from the store")]
    Missing { height: u64 },
}

/// What pruning shares between the clones of a store.
#[derive(Debug)]
struct PruneState {
    /// The stored `pruned_through`, mirrored so that status reads and the next prune do not
    /// touch sled; written only after the transaction that stores it succeeded.
    through: AtomicU64,
    /// Held for a whole prune: two overlapping prunes would move the same heights and
    /// race on `through`.
    running: Mutex<()>,
}

/// The committed chain. Clones share the same sled trees.
#[derive(Debug, Clone)]
pub(crate) struct ChainStore {
    blocks: sled::Tree,
    headers: sled::Tree,
    meta: sled::Tree,
    pruned: Arc<PruneState>,
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, SetupError> {
    match tree.get(key)? {
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                SetupError::Corrupt(format!(
                    "{META_TREE}/{} is not a u64",
                    String::from_utf8_lossy(key)
                ))
            })?;
            Ok(u64::from_be_bytes(bytes))
        }
        None => Ok(0),
    }
}

fn transaction_error(error: TransactionError<()>) -> StoreError {
    match error {
        TransactionError::Storage(error) => StoreError::Sled(error),
        TransactionError::Abort(()) => StoreError::Sled(sled::Error::Unsupported(
            "block store write aborted".to_string(),
        )),
    }
}

impl ChainStore {
    /// Opens the chain in `db` and finds its tip, checking that the stored chain belongs to
    /// `genesis` (a database reused with another genesis would fork silently otherwise).
    pub(crate) fn open(db: &sled::Db, genesis: &Genesis) -> Result<(Self, Tip), SetupError> {
        let meta = db.open_tree(META_TREE)?;
        let height = read_u64(&meta, COMMITTED_HEIGHT_KEY)?;
        let pruned_through = read_u64(&meta, PRUNED_THROUGH_KEY)?;
        let store = ChainStore {
            blocks: db.open_tree(BLOCKS_TREE)?,
            headers: db.open_tree(HEADERS_TREE)?,
            meta,
            pruned: Arc::new(PruneState {
                through: AtomicU64::new(pruned_through),
                running: Mutex::new(()),
            }),
        };
        if pruned_through != 0 && pruned_through >= height {
            // Pruning never reaches the tip: a store that says otherwise is damaged.
            return Err(SetupError::Corrupt(format!(
                "bodies are pruned through {pruned_through} but the committed height is {height}"
            )));
        }
        if height == 0 {
            return Ok((store, Tip::genesis(genesis)));
        }
        // Headers only: block 1's body, and any body but the tip's, may be pruned.
        let read = |h: u64| -> Result<CommittedHeader, SetupError> {
            store
                .header(h)
                .map_err(|e| SetupError::Corrupt(e.to_string()))?
                .ok_or_else(|| {
                    SetupError::Corrupt(format!(
                        "committed height is {height} but block {h} is missing"
                    ))
                })
        };
        let first = read(1)?;
        if first.header.chain_id != genesis.chain_id || first.header.parent_hash != genesis.hash() {
            return Err(SetupError::GenesisMismatch {
                stored_chain_id: first.header.chain_id,
                chain_id: genesis.chain_id.clone(),
            });
        }
        let tip = read(height)?;
        Ok((store, Tip::of(&tip.header)))
    }

    /// The committed block at `height`: `None` when there is none, [`StoreError::Pruned`]
    /// when only its header and certificate are kept.
    pub(crate) fn get(&self, height: u64) -> Result<Option<CommittedBlock>, StoreError> {
        // `blocks` before `headers`: a prune moves a height from the first to the second
        // atomically, so in this order a concurrent prune cannot make a height look absent.
        if let Some(bytes) = self.block_bytes(height)? {
            return decode(height, &bytes).map(Some);
        }
        if self.headers.contains_key(height.to_be_bytes())? {
            return Err(StoreError::Pruned { height });
        }
        Ok(None)
    }

    /// The header and certificate of the committed block at `height`, whether its body is
    /// pruned or not; `None` when there is none.
    pub(crate) fn header(&self, height: u64) -> Result<Option<CommittedHeader>, StoreError> {
        // Same order as `get`, for the same reason.
        if let Some(bytes) = self.block_bytes(height)? {
            let block: CommittedBlock = decode(height, &bytes)?;
            return Ok(Some(block.header_only()));
        }
        match self.headers.get(height.to_be_bytes())? {
            Some(bytes) => decode(height, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The stored bytes of the block at `height` with its body, `None` when its body is not
    /// kept (or there is no such block).
    fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let key = height.to_be_bytes();
        pieces::reassemble(&key, self.blocks.scan_prefix(key)).map_err(|error| match error {
            PiecesError::Storage(error) => StoreError::Sled(error),
            unexpected @ PiecesError::Unexpected { .. } => StoreError::Corrupt {
                height,
                message: unexpected.to_string(),
            },
        })
    }

    /// Every key the block at `height` is stored under in `consensus/blocks`.
    fn block_keys(&self, height: u64) -> Result<Vec<sled::IVec>, StoreError> {
        Ok(self
            .blocks
            .scan_prefix(height.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?)
    }

    /// The height bodies are pruned through (0: none).
    pub(crate) fn pruned_through(&self) -> u64 {
        self.pruned.through.load(Ordering::Acquire)
    }

    /// Moves the committed blocks at heights up to `through` (at most `tip_height - 1`: the
    /// tip keeps its body) from `consensus/blocks` to `consensus/headers`, starting after the
    /// heights pruned before, a batch of heights per transaction. Returns the height bodies
    /// are now pruned through. Blocking (it reads every body it drops) and not flushed.
    ///
    /// `tip_height` must be the engine's committed height, not the stored one: a block
    /// written above it whose flush failed is not committed, and its parent is the tip.
    pub(crate) fn prune_bodies(&self, through: u64, tip_height: u64) -> Result<u64, StoreError> {
        let target = through.min(tip_height.saturating_sub(1));
        let _running = self
            .pruned
            .running
            .lock()
            // The guarded data is `()`: a panic in another prune leaves nothing half-changed
            // in memory (sled transactions are atomic), so the lock is still good.
            .unwrap_or_else(PoisonError::into_inner);
        let mut done = self.pruned_through();
        while done < target {
            let last = done.saturating_add(PRUNE_BATCH).min(target);
            let mut moved = Vec::new();
            for height in done.saturating_add(1)..=last {
                let Some(bytes) = self.block_bytes(height)? else {
                    return Err(StoreError::Missing { height });
                };
                let block: CommittedBlock = decode(height, &bytes)?;
                let header = codec::encode(&block.header_only());
                moved.push((height.to_be_bytes(), header, self.block_keys(height)?));
            }
            (&self.blocks, &self.headers, &self.meta)
                .transaction(|(blocks, headers, meta)| {
                    for (key, header, pieces) in &moved {
                        headers.insert(key, header.as_slice())?;
                        for piece in pieces {
                            blocks.remove(piece)?;
                        }
                    }
                    meta.insert(PRUNED_THROUGH_KEY, &last.to_be_bytes())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(transaction_error)?;
            self.pruned.through.store(last, Ordering::Release);
            done = last;
        }
        Ok(done)
    }

    /// Writes `block` and makes its height the committed height, atomically. Does not flush.
    pub(crate) fn put(&self, block: &CommittedBlock) -> Result<Tip, StoreError> {
        let height = block.block.height();
        let key = height.to_be_bytes();
        let value = codec::encode(block);
        // A block written at this height before, and not committed (its flush failed),
        // may have more pieces than this one.
        let stale = self.block_keys(height)?;
        (&self.blocks, &self.meta)
            .transaction(|(blocks, meta)| {
                for piece in &stale {
                    blocks.remove(piece)?;
                }
                for (piece, bytes) in pieces::pieces(&key, &value) {
                    blocks.insert(piece, bytes)?;
                }
                meta.insert(COMMITTED_HEIGHT_KEY, &key)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(transaction_error)?;
        Ok(Tip::of(&block.block.header))
    }
}

fn decode<T: borsh::BorshDeserialize>(height: u64, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode_trusted(bytes).map_err(|e| StoreError::Corrupt {
        height,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use lamina_primitives::{Blob, Block, Keypair, Namespace};

    use super::*;
    use crate::proposal;
    use crate::tests::{fake_commitment, genesis};

    /// A chain of `count` certified blocks on `genesis`, each with a one-blob body.
    fn chain(genesis: &Genesis, key: &Keypair, count: u64) -> Vec<CommittedBlock> {
        let mut tip = Tip::genesis(genesis);
        let mut blocks = Vec::new();
        for height in 1..=count {
            let body = vec![Blob {
                namespace: Namespace::EXECUTION,
                data: vec![height as u8; 10],
            }];
            let header = proposal::header(
                &genesis.chain_id,
                &tip,
                tip.timestamp_ms + 1,
                key.address(),
                &fake_commitment(&body),
            );
            let certificate = proposal::certify_alone(&genesis.chain_id, key, &header);
            let block = CommittedBlock {
                block: Block { header, body },
                certificate,
            };
            tip = Tip::of(&block.block.header);
            blocks.push(block);
        }
        blocks
    }

    fn open_with(count: u64) -> (tempfile::TempDir, sled::Db, Genesis, Vec<CommittedBlock>) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let key = Keypair::deterministic("validator");
        let genesis = genesis(&[&key]);
        let blocks = chain(&genesis, &key, count);
        let (store, _) = ChainStore::open(&db, &genesis).unwrap();
        for block in &blocks {
            store.put(block).unwrap();
        }
        (dir, db, genesis, blocks)
    }

    #[test]
    fn pruning_keeps_headers_and_survives_a_reopen() {
        // More heights than one batch, so several transactions are needed.
        let count = PRUNE_BATCH * 2 + 10;
        let (_dir, db, genesis, blocks) = open_with(count);
        let (store, tip) = ChainStore::open(&db, &genesis).unwrap();
        assert_eq!(store.pruned_through(), 0);
        assert_eq!(
            store.prune_bodies(PRUNE_BATCH + 3, tip.height).unwrap(),
            PRUNE_BATCH + 3
        );
        assert_eq!(store.pruned_through(), PRUNE_BATCH + 3);
        let check = |store: &ChainStore, pruned: u64| {
            for block in &blocks {
                let height = block.block.height();
                assert_eq!(store.header(height).unwrap(), Some(block.header_only()));
                if height <= pruned {
                    assert!(matches!(
                        store.get(height),
                        Err(StoreError::Pruned { height: h }) if h == height
                    ));
                } else {
                    assert_eq!(store.get(height).unwrap().as_ref(), Some(block));
                }
            }
            assert!(store.get(count + 1).unwrap().is_none());
            assert!(store.header(count + 1).unwrap().is_none());
            assert!(store.header(0).unwrap().is_none());
        };
        check(&store, PRUNE_BATCH + 3);
        // Each height is in exactly one tree.
        assert_eq!(store.headers.len() as u64, PRUNE_BATCH + 3);
        assert_eq!(store.blocks.len() as u64, count - PRUNE_BATCH - 3);

        // Reopened, with block 1's body gone: the genesis check and the tip read headers.
        drop(store);
        let (store, reopened) = ChainStore::open(&db, &genesis).unwrap();
        assert_eq!(reopened, tip);
        assert_eq!(store.pruned_through(), PRUNE_BATCH + 3);
        check(&store, PRUNE_BATCH + 3);

        // Incremental: the next prune continues from there.
        assert_eq!(store.prune_bodies(count, tip.height).unwrap(), count - 1);
        check(&store, count - 1);

        // Another genesis is still refused with block 1 pruned.
        let mut other = genesis.clone();
        other.chain_id = "another-chain".into();
        assert!(matches!(
            ChainStore::open(&db, &other),
            Err(SetupError::GenesisMismatch { .. })
        ));
    }

    #[test]
    fn pruning_spares_the_tip_and_is_idempotent() {
        let (_dir, db, genesis, blocks) = open_with(5);
        let (store, tip) = ChainStore::open(&db, &genesis).unwrap();
        // Clamped below the tip, however far `through` goes.
        assert_eq!(store.prune_bodies(u64::MAX, tip.height).unwrap(), 4);
        assert_eq!(store.get(5).unwrap().as_ref(), Some(&blocks[4]));
        // Again, or lower: nothing changes.
        assert_eq!(store.prune_bodies(u64::MAX, tip.height).unwrap(), 4);
        assert_eq!(store.prune_bodies(2, tip.height).unwrap(), 4);
        assert_eq!(store.prune_bodies(0, tip.height).unwrap(), 4);
        assert_eq!(store.get(5).unwrap().as_ref(), Some(&blocks[4]));
        assert_eq!(store.headers.len(), 4);

        // The next block can still be written and pruning then reaches the old tip.
        let key = Keypair::deterministic("validator");
        let next = chain(&genesis, &key, 6).pop().unwrap();
        let tip = store.put(&next).unwrap();
        assert_eq!(tip.height, 6);
        assert_eq!(store.prune_bodies(10, tip.height).unwrap(), 5);
        assert_eq!(store.get(6).unwrap(), Some(next));
    }

    #[test]
    fn a_block_larger_than_a_piece_is_stored_in_pieces_and_pruned_whole() {
        let (_dir, db, genesis, blocks) = open_with(3);
        let (store, tip) = ChainStore::open(&db, &genesis).unwrap();
        let mut large = blocks[1].clone();
        large.block.body[0].data = vec![7; pieces::PIECE_BYTES * 3 + 5];
        let pieces_of = |store: &ChainStore, height: u64| store.block_keys(height).unwrap().len();

        store.put(&large).unwrap();
        assert_eq!(store.get(2).unwrap().as_ref(), Some(&large));
        assert!(pieces_of(&store, 2) > 3);
        // Written over by a smaller block, no piece of the larger one is left behind.
        store.put(&blocks[1]).unwrap();
        assert_eq!(pieces_of(&store, 2), 1);
        assert_eq!(store.get(2).unwrap().as_ref(), Some(&blocks[1]));

        store.put(&large).unwrap();
        store.put(&blocks[2]).unwrap();
        assert_eq!(store.prune_bodies(2, tip.height).unwrap(), 2);
        assert_eq!(pieces_of(&store, 2), 0);
        assert_eq!(store.header(2).unwrap(), Some(large.header_only()));
        assert_eq!(store.get(3).unwrap().as_ref(), Some(&blocks[2]));
    }

    #[test]
    fn a_block_stored_whole_by_an_earlier_version_is_read_and_pruned() {
        let (_dir, db, genesis, blocks) = open_with(3);
        let (store, tip) = ChainStore::open(&db, &genesis).unwrap();
        for key in store.block_keys(2).unwrap() {
            store.blocks.remove(key).unwrap();
        }
        store
            .blocks
            .insert(2u64.to_be_bytes(), codec::encode(&blocks[1]))
            .unwrap();
        assert_eq!(store.get(2).unwrap().as_ref(), Some(&blocks[1]));
        assert_eq!(store.header(2).unwrap(), Some(blocks[1].header_only()));
        assert_eq!(store.prune_bodies(2, tip.height).unwrap(), 2);
        assert!(store.blocks.get(2u64.to_be_bytes()).unwrap().is_none());
        assert!(matches!(
            store.get(2),
            Err(StoreError::Pruned { height: 2 })
        ));
    }

    #[test]
    fn nothing_to_prune_on_short_chains() {
        let (_dir, db, genesis, blocks) = open_with(1);
        let (store, tip) = ChainStore::open(&db, &genesis).unwrap();
        assert_eq!(store.prune_bodies(1, tip.height).unwrap(), 0);
        assert_eq!(store.get(1).unwrap().as_ref(), Some(&blocks[0]));
        assert_eq!(store.prune_bodies(5, 0).unwrap(), 0);
        assert_eq!(store.pruned_through(), 0);
    }
}
