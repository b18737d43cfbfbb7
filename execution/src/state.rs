//! The authenticated state: a Jellyfish Merkle Tree stored in sled, together with the records
//! committed with each executed block (transactions, receipts, transaction index, block
//! summaries, withdrawals).
//!
//! Everything lives in one sled tree, [`TREE_NAME`], under one-byte key prefixes, so that a
//! block's writes are one `apply_batch`: sled applies a batch on a single tree atomically, so a
//! crash never leaves a half-applied block. Versions of the Merkle tree are block heights;
//! genesis is version 0. The store keeps the newest versions of the state (a configured
//! history, or all of them): each block's batch also deletes the tree nodes and values that
//! only versions older than that history need, so the database stops growing with state
//! versions. Reads of the newest version, the hot ones, are answered from an in-memory cache of
//! the newest values when they can be.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use jmt::storage::{LeafNode, NibblePath, Node, NodeBatch, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use lamina_primitives::bridge::Withdrawal;
use lamina_primitives::codec;
use lamina_primitives::interfaces::execution::{ExecutedBlock, WithdrawalAt};
use lamina_primitives::pieces::{self, PiecesError};
use lamina_primitives::state_proof::{StateKey, StateProof};
use lamina_primitives::{Account, Address, Genesis, Hash, Receipt, Transaction};

use crate::executor::{BlockOutput, StateView};

/// Name of the sled tree holding the execution layer's data.
pub const TREE_NAME: &str = "execution/state";

/// Key prefixes inside [`TREE_NAME`].
mod prefix {
    /// `n ‖ version (BE) ‖ borsh(nibble path)` → borsh(jmt `Node`).
    pub const NODE: u8 = b'n';
    /// `v ‖ key hash ‖ version (BE)` → borsh(`Option<value bytes>`). Big-endian versions make
    /// "newest value at or below a version" a reverse range scan.
    pub const VALUE: u8 = b'v';
    /// `b ‖ height (BE)` → borsh(`ExecutedBlock`).
    pub const BLOCK: u8 = b'b';
    /// `e ‖ height (BE) ‖ piece (BE u32)` → a [piece](lamina_primitives::pieces) of
    /// borsh(`Vec<Receipt>`): a height's receipts, in pieces so that the page cache counts
    /// them at their size. Databases written by earlier versions hold them under
    /// [`RECEIPTS`]; those are still read.
    pub const RECEIPT_PIECES: u8 = b'e';
    /// Earlier versions' receipts: `r ‖ height (BE)` → borsh(`Vec<Receipt>`), one record per
    /// block, or before that `r ‖ height (BE) ‖ index (BE)` → borsh(`Receipt`), one record
    /// per transaction. Read, never written.
    pub const RECEIPTS: u8 = b'r';
    /// `x ‖ height (BE) ‖ chunk (BE u32)` → borsh(`Vec<Transaction>`): a height's
    /// transactions in block order, [`super::TRANSACTIONS_PER_RECORD`] per record (64 in
    /// databases written by earlier versions: a lookup goes by the counts the records start
    /// with). Few records keep the per-insert cost down; small ones keep a page of them under
    /// sled's blob threshold, so the page cache counts them at their size (a blob is counted
    /// as its pointer), and a lookup decodes a few kilobytes, not a whole block.
    pub const TRANSACTIONS: u8 = b'x';
    /// `t ‖ tx hash` → borsh(`TxLocation`): where the transaction's inclusion is. The index
    /// takes one random key per transaction, so its records are kept small enough that the
    /// index stays in the page cache; the transaction and its receipt are read from their
    /// height's records. Databases written by earlier versions hold borsh(`TxRecord`) (the
    /// transaction and its receipt, never 12 bytes long) instead; those are still read.
    pub const TX: u8 = b't';
    /// `w ‖ withdrawal id (BE)` → borsh(`WithdrawalRecord`).
    pub const WITHDRAWAL: u8 = b'w';
    /// `s ‖ version (BE) ‖ piece (BE u32)` → a piece of borsh(`BTreeSet<Vec<u8>>`): the `n` and `v`
    /// keys that `version` replaced (tree nodes it made stale, values it overwrote). Only
    /// versions older than `version` need them, so they are deleted once `version` is the
    /// oldest one kept. Written only when the history is limited.
    pub const STALE: u8 = b's';
}

// Metadata keys, under the prefix `m`.
const GENESIS_HASH_KEY: &[u8] = b"mgenesis_hash";
const EXECUTED_HEIGHT_KEY: &[u8] = b"mexecuted_height";
const RIGHTMOST_LEAF_KEY: &[u8] = b"mrightmost_leaf";
/// The oldest version whose state is complete: every older one is pruned (absent: 0).
const OLDEST_VERSION_KEY: &[u8] = b"moldest_version";
/// borsh(`TxWindow`): the heights whose transactions are kept (absent: written by an earlier
/// version, which kept them all; counted at open).
const TX_WINDOW_KEY: &[u8] = b"mtx_window";

/// Most versions one block's batch prunes. In a steady state a block prunes one; more only
/// after the history was shortened, which is then caught up a few versions per block rather
/// than in one long batch.
const PRUNE_VERSIONS_PER_BLOCK: usize = 4;

/// Most heights whose transactions one block's batch deletes. In a steady state a block
/// deletes about one; more when its block is larger than the ones falling out of the history,
/// or after the history was shortened, which is then caught up over several blocks.
const PRUNE_TX_HEIGHTS_PER_BLOCK: usize = 16;

/// Most transactions one block's batch deletes, beyond twice its own: a shortened history of
/// large blocks is caught up over several blocks rather than in one long batch. The first
/// height is always pruned when due, so the history catches up whatever its heights hold.
const PRUNE_TRANSACTIONS_PER_BLOCK: u64 = 4_096;

/// How much history a [`Store`] keeps (`None`: all of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// How many of the newest versions of the state are kept whole.
    pub state: Option<NonZeroU64>,
    /// How many of the newest included transactions are kept, with their receipts, for lookup
    /// by hash: the newest heights that hold at least that many, whole.
    pub transactions: Option<NonZeroU64>,
}

/// The run of heights whose transactions, receipts and index entries are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
struct TxWindow {
    /// The oldest height kept: every older one's transactions are deleted.
    from: u64,
    /// The transactions heights `from` through the executed height hold.
    count: u64,
}

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    /// The Merkle tree could not be read or updated (a missing node, ...).
    #[error("state tree: {0}")]
    Tree(String),
    /// A stored record does not decode.
    #[error("corrupt {what} record: {detail}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// The decoding error.
        detail: String,
    },
    /// The state at `version` is older than the history the store keeps.
    #[error("the state at height {version} is pruned; the oldest height kept is {oldest}")]
    Pruned {
        /// The version asked for.
        version: u64,
        /// The oldest version kept.
        oldest: u64,
    },
}

impl From<anyhow::Error> for StoreError {
    fn from(error: anyhow::Error) -> Self {
        StoreError::Tree(format!("{error:#}"))
    }
}

/// Where an included transaction is: its height and its position in that block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
struct TxLocation {
    height: u64,
    index: u32,
}

/// Transactions per `x` record (see [`prefix::TRANSACTIONS`]): about 5 KB of transfers, so
/// that the 17 records of a full leaf page stay under sled's 128 KiB blob threshold.
const TRANSACTIONS_PER_RECORD: usize = 32;

/// The encoded length of a [`TxLocation`], which tells it from a legacy [`TxRecord`].
const TX_LOCATION_LEN: usize = 12;

/// How earlier versions indexed an included transaction by hash (see [`prefix::TX`]).
#[derive(Debug, Clone, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
struct TxRecord {
    transaction: Transaction,
    receipt: Receipt,
}

/// How a withdrawal is stored: with the height that executed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
struct WithdrawalRecord {
    height: u64,
    withdrawal: Withdrawal,
}

/// Everything [`Store::commit_block`] records for one executed block.
#[derive(Debug, Clone, Copy)]
pub struct BlockCommit<'a> {
    /// The height executed; the caller guarantees it is the next one.
    pub height: u64,
    /// Hash of the block executed.
    pub block_hash: Hash,
    /// The block header's `data_root`.
    pub data_root: Hash,
    /// The block's transactions, in block order.
    pub transactions: &'a [Transaction],
    /// What executing them did (deposits included in its writes, withdrawal ids in its
    /// receipts).
    pub output: &'a BlockOutput,
    /// Bridge deposits credited before the transactions.
    pub deposits_credited: u32,
    /// The block's withdrawals, numbered on from every earlier one.
    pub withdrawals: &'a [Withdrawal],
    /// Root of the withdrawals tree over every withdrawal up to and including this block's.
    pub withdrawals_root: Hash,
    /// Withdrawals up to and including this block's.
    pub withdrawal_count: u64,
    /// The testing fault of [`crate::ExecutionConfig::report_wrong_roots`]: record
    /// [`wrong_root`] of the new state root in the block summary instead of the root itself.
    pub report_wrong_root: bool,
}

/// The state root a node with [`crate::ExecutionConfig::report_wrong_roots`] reports in place
/// of `root`: `SHA-256("lamina/faulty-executor" ‖ root)`, which no state tree has.
pub fn wrong_root(root: &Hash) -> Hash {
    Hash::digest_parts(&[b"lamina/faulty-executor", &root.0])
}

/// The state key of an account as the Merkle tree sees it.
pub fn account_key_hash(address: &Address) -> Hash {
    StateKey::Account(*address).key_hash()
}

fn node_key_bytes(node_key: &NodeKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + 48);
    key.push(prefix::NODE);
    key.extend_from_slice(&node_key.version().to_be_bytes());
    key.extend_from_slice(&codec::encode(node_key.nibble_path()));
    key
}

fn value_key(key_hash: &KeyHash, version: Version) -> [u8; 41] {
    let mut key = [0u8; 41];
    key[0] = prefix::VALUE;
    key[1..33].copy_from_slice(&key_hash.0);
    key[33..].copy_from_slice(&version.to_be_bytes());
    key
}

fn block_key(height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::BLOCK;
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

fn receipt_pieces_key(height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::RECEIPT_PIECES;
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

/// The key of a height's receipts in the layout of earlier versions (see
/// [`prefix::RECEIPTS`]).
fn receipts_key(height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::RECEIPTS;
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

/// The key of one receipt in the layout of earlier versions (see [`prefix::RECEIPTS`]).
fn legacy_receipt_key(height: u64, index: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..9].copy_from_slice(&receipts_key(height));
    key[9..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The prefix of every `x` record of `height`.
fn transactions_prefix(height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::TRANSACTIONS;
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

fn transactions_key(height: u64, chunk: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..9].copy_from_slice(&transactions_prefix(height));
    key[9..].copy_from_slice(&chunk.to_be_bytes());
    key
}

fn tx_key(hash: &Hash) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = prefix::TX;
    key[1..].copy_from_slice(&hash.0);
    key
}

fn stale_key(version: Version) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::STALE;
    key[1..].copy_from_slice(&version.to_be_bytes());
    key
}

/// The version a `v` or `s` key is for (see [`prefix`]).
fn version_in(what: &'static str, key: &[u8]) -> Result<Version, StoreError> {
    let at = match key.first() {
        Some(&prefix::VALUE) => 33,
        _ => 1,
    };
    key.get(at..at + 8)
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what,
            detail: format!("a key of {} bytes has no version", key.len()),
        })
}

fn withdrawal_key(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix::WITHDRAWAL;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn decode<T: borsh::BorshDeserialize>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode_trusted(bytes).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// Most state keys [`LatestValues`] holds before it starts over: about 10 MB of accounts.
const LATEST_VALUES_CAPACITY: usize = 100_000;

/// The values of recently read or written state keys at one version, the newest committed
/// one, which is the version every hot read asks for: mempool admission reads each sender's
/// account, the proposer reads their nonces, and the executor reads every account a block
/// touches. In sled each such read is a reverse range scan over the key's versions, which
/// copies a page; from here it is a hash lookup.
///
/// Exact by construction: a value enters either from the store at that very version or from
/// the write set of the block that made the version, and a new version keeps an entry only
/// if that block did not write its key (so its value is unchanged). Nothing else writes
/// state values.
#[derive(Debug, Default)]
struct LatestValues {
    /// The version the values are valid at (`None`: none yet).
    version: Option<Version>,
    values: HashMap<KeyHash, NewestRecord>,
}

/// A state key's newest `v` record at or below some version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NewestRecord {
    /// The version the record was written at (`None`: the key has no record there).
    written_at: Option<Version>,
    /// Its value (`None`: absent or deleted).
    value: Option<OwnedValue>,
}

impl LatestValues {
    fn get(&self, version: Version, key_hash: &KeyHash) -> Option<NewestRecord> {
        if self.version != Some(version) {
            return None;
        }
        self.values.get(key_hash).cloned()
    }

    /// Remembers `record`, read from the store at `version`.
    fn remember(&mut self, version: Version, key_hash: KeyHash, record: NewestRecord) {
        if self.version != Some(version) {
            return;
        }
        if self.values.len() >= LATEST_VALUES_CAPACITY {
            // Starting over is simpler than an LRU, and the hot keys come back at once.
            self.values.clear();
        }
        self.values.insert(key_hash, record);
    }

    /// Moves to `version`, made from the one before by writing `written`.
    fn advance<'a>(
        &mut self,
        version: Version,
        written: impl Iterator<Item = (&'a KeyHash, &'a Option<OwnedValue>)>,
    ) {
        if self.version != version.checked_sub(1) {
            self.values.clear();
        }
        self.version = Some(version);
        for (key_hash, value) in written {
            let record = NewestRecord {
                written_at: Some(version),
                value: value.clone(),
            };
            self.remember(version, *key_hash, record);
        }
    }
}

/// The execution layer's storage: the versioned Merkle tree and the per-height records.
/// Clones share the sled tree, the cache of newest values and the pruning state.
#[derive(Debug, Clone)]
pub struct Store {
    tree: sled::Tree,
    latest: Arc<RwLock<LatestValues>>,
    retention: Retention,
    /// The oldest version kept whole ([`OLDEST_VERSION_KEY`]). A block that prunes raises it
    /// before its batch is applied (see [`Store::read_kept`]).
    oldest: Arc<AtomicU64>,
    /// The oldest height whose transactions are kept ([`TX_WINDOW_KEY`]), raised the same way
    /// (see [`Store::included_transaction`]).
    transactions_from: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates) the execution tree in `db`, keeping what `retention` says. Versions
    /// of the state committed while its history was unlimited are never pruned, since nothing
    /// recorded what they replaced.
    pub fn open(db: &sled::Db, retention: Retention) -> Result<Store, StoreError> {
        let tree = db.open_tree(TREE_NAME)?;
        let oldest = tree
            .get(OLDEST_VERSION_KEY)?
            .map(|bytes| decode::<u64>("oldest version", &bytes))
            .transpose()?
            .unwrap_or(0);
        let mut store = Store {
            tree,
            latest: Arc::default(),
            retention,
            oldest: Arc::new(AtomicU64::new(oldest)),
            transactions_from: Arc::default(),
        };
        // The newest version is the executed height: a block's values and its height are
        // written in one batch.
        let executed = store.executed_height()?;
        store.write_latest().version = executed;
        let window = match store.tree.get(TX_WINDOW_KEY)? {
            Some(bytes) => decode("transaction window", &bytes)?,
            None => {
                // Written by an earlier version, which kept every height's transactions.
                let window = TxWindow {
                    from: 1,
                    count: (1..=executed.unwrap_or(0)).try_fold(0, |count, height| {
                        Ok::<_, StoreError>(count + store.transactions_at(height)?)
                    })?,
                };
                store.tree.insert(TX_WINDOW_KEY, codec::encode(&window))?;
                window
            }
        };
        store.transactions_from = Arc::new(AtomicU64::new(window.from));
        Ok(store)
    }

    /// How many transactions the executed `height` holds, from its block summary.
    fn transactions_at(&self, height: u64) -> Result<u64, StoreError> {
        let executed = self
            .executed_block(height)?
            .ok_or_else(|| StoreError::Corrupt {
                what: "executed block",
                detail: format!("executed height {height} has no stored result"),
            })?;
        Ok(u64::from(executed.transactions))
    }

    /// The hash of the genesis this state was built from, `None` for an empty store.
    pub fn genesis_hash(&self) -> Result<Option<Hash>, StoreError> {
        self.tree
            .get(GENESIS_HASH_KEY)?
            .map(|bytes| decode("genesis hash", &bytes))
            .transpose()
    }

    /// The last executed height (0: genesis only), `None` for an empty store.
    pub fn executed_height(&self) -> Result<Option<u64>, StoreError> {
        self.tree
            .get(EXECUTED_HEIGHT_KEY)?
            .map(|bytes| decode("executed height", &bytes))
            .transpose()
    }

    /// Writes the genesis accounts as version 0 and records the genesis hash, atomically.
    /// Returns the genesis state root.
    pub fn write_genesis(&self, genesis: &Genesis) -> Result<Hash, StoreError> {
        // A map both orders the accounts and keeps one entry per address.
        let accounts: BTreeMap<Address, Account> = genesis
            .accounts
            .iter()
            .map(|a| {
                (
                    a.address,
                    Account {
                        balance: a.balance,
                        nonce: 0,
                    },
                )
            })
            .collect();
        let (root, update) = self.update_tree(&accounts, 0)?;
        let mut batch = sled::Batch::default();
        self.add_node_batch(&mut batch, &update.node_batch)?;
        batch.insert(GENESIS_HASH_KEY, codec::encode(&genesis.hash()));
        batch.insert(EXECUTED_HEIGHT_KEY, codec::encode(&0u64));
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.advance_latest(0, &update.node_batch);
        Ok(root)
    }

    /// Commits one executed block as version `height`: tree nodes, values, transactions,
    /// receipts, transaction index, withdrawals, block summary and the new executed height, in
    /// one atomic batch, flushed to disk before returning. With a limited history the batch
    /// also records what this version replaced and prunes the versions that fell out of the
    /// history.
    pub fn commit_block(&self, commit: &BlockCommit<'_>) -> Result<ExecutedBlock, StoreError> {
        let BlockCommit {
            height,
            transactions,
            output,
            ..
        } = *commit;
        let (state_root, update) = self.update_tree(&output.writes, height)?;
        let node_batch = &update.node_batch;
        let mut batch = sled::Batch::default();
        self.add_node_batch(&mut batch, node_batch)?;
        let mut new_oldest = None;
        if let Some(history) = self.retention.state {
            let replaced = self.replaced_by(height, &update)?;
            new_oldest = self.prune(&mut batch, (height + 1).saturating_sub(history.get()))?;
            if new_oldest.unwrap_or_else(|| self.oldest_version()) >= height {
                // A history of one version: what this one replaced is already out of it.
                for key in replaced {
                    batch.remove(key);
                }
            } else {
                let record = codec::encode(&replaced);
                for (piece, bytes) in pieces::pieces(&stale_key(height), &record) {
                    batch.insert(piece, bytes);
                }
            }
        }

        // Before this block's index entries, which must win over the deletions.
        let (window, unindexed) = self.prune_transactions(&mut batch, height, output)?;

        // The index keeps the inclusion that used the transaction's nonce: there is at most
        // one, so it is written without looking. An inclusion that changed nothing is
        // recorded only while the hash has no record (in this block or before), so it never
        // shadows the one that took effect; that lookup is paid only by such rare repeats.
        let mut indexed = HashSet::new();
        for (index, receipt) in (0u32..).zip(&output.receipts) {
            let key = tx_key(&receipt.tx_hash);
            let first_here = indexed.insert(receipt.tx_hash);
            let recorded = || -> Result<bool, StoreError> {
                Ok(!unindexed.contains(&key) && self.tree.contains_key(key)?)
            };
            if receipt.outcome.used_nonce() || (first_here && !recorded()?) {
                let location = TxLocation { height, index };
                batch.insert(&key[..], codec::encode(&location));
            }
        }

        for (chunk, records) in (0u32..).zip(transactions.chunks(TRANSACTIONS_PER_RECORD)) {
            batch.insert(&transactions_key(height, chunk)[..], codec::encode(records));
        }
        let receipts = codec::encode(&output.receipts);
        for (piece, bytes) in pieces::pieces(&receipt_pieces_key(height), &receipts) {
            batch.insert(piece, bytes);
        }

        for &withdrawal in commit.withdrawals {
            let record = WithdrawalRecord { height, withdrawal };
            batch.insert(&withdrawal_key(withdrawal.id)[..], codec::encode(&record));
        }

        let executed = ExecutedBlock {
            height,
            block_hash: commit.block_hash,
            state_root: if commit.report_wrong_root {
                wrong_root(&state_root)
            } else {
                state_root
            },
            transactions: u32::try_from(output.receipts.len()).unwrap_or(u32::MAX),
            failed: output.failed,
            fees: output.fees,
            data_root: commit.data_root,
            withdrawals_root: commit.withdrawals_root,
            withdrawal_count: commit.withdrawal_count,
            deposits_credited: commit.deposits_credited,
        };
        batch.insert(&block_key(height)[..], codec::encode(&executed));
        batch.insert(EXECUTED_HEIGHT_KEY, codec::encode(&height));
        if let Some(oldest) = new_oldest {
            batch.insert(OLDEST_VERSION_KEY, codec::encode(&oldest));
            // Before the batch, so that a read of a version it prunes cannot miss it.
            self.oldest.fetch_max(oldest, Ordering::SeqCst);
        }
        batch.insert(TX_WINDOW_KEY, codec::encode(&window));
        self.transactions_from
            .fetch_max(window.from, Ordering::SeqCst);
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        self.advance_latest(height, node_batch);
        Ok(executed)
    }

    /// The stored result of executing `height`, if it was executed.
    pub fn executed_block(&self, height: u64) -> Result<Option<ExecutedBlock>, StoreError> {
        self.tree
            .get(block_key(height))?
            .map(|bytes| decode("executed block", &bytes))
            .transpose()
    }

    /// The receipts of `height`, in block order.
    pub fn receipts(&self, height: u64) -> Result<Vec<Receipt>, StoreError> {
        if let Some(bytes) = self.reassemble("receipts", &receipt_pieces_key(height))? {
            return decode("receipts", &bytes);
        }
        if let Some(bytes) = self.tree.get(receipts_key(height))? {
            return decode("receipts", &bytes);
        }
        self.tree
            .range(legacy_receipt_key(height, 0)..=legacy_receipt_key(height, u32::MAX))
            .map(|item| {
                let (_, bytes) = item?;
                decode("receipt", &bytes)
            })
            .collect()
    }

    /// The value stored in [pieces](lamina_primitives::pieces) under `key`, if any.
    fn reassemble(&self, what: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        pieces::reassemble(key, self.tree.scan_prefix(key)).map_err(|error| match error {
            PiecesError::Storage(error) => StoreError::Sled(error),
            unexpected @ PiecesError::Unexpected { .. } => StoreError::Corrupt {
                what,
                detail: unexpected.to_string(),
            },
        })
    }

    /// An included transaction and its receipt.
    pub fn included_transaction(
        &self,
        hash: &Hash,
    ) -> Result<Option<(Transaction, Receipt)>, StoreError> {
        let Some(bytes) = self.tree.get(tx_key(hash))? else {
            return Ok(None);
        };
        if bytes.len() != TX_LOCATION_LEN {
            let record: TxRecord = decode("transaction", &bytes)?;
            return Ok(Some((record.transaction, record.receipt)));
        }
        let TxLocation { height, index } = decode("transaction location", &bytes)?;
        let slot = usize::try_from(index).unwrap_or(usize::MAX);
        let found = (
            self.transaction_at(height, index),
            self.receipts(height)
                .map(|receipts| receipts.into_iter().nth(slot)),
        );
        match found {
            (Ok(Some(transaction)), Ok(Some(receipt))) => Ok(Some((transaction, receipt))),
            // A block's batch deleted the height during the read, perhaps halfway through a
            // record's pieces. It raises `transactions_from` before it is applied, so a read
            // that saw a deletion sees it.
            _ if height < self.transactions_from.load(Ordering::SeqCst) => Ok(None),
            (Err(error), _) | (_, Err(error)) => Err(error),
            (Ok(transaction), Ok(_)) => Err(StoreError::Corrupt {
                what: "transaction location",
                detail: format!(
                    "{hash} is indexed at {height}/{index}, which has no {} at that position",
                    if transaction.is_none() {
                        "transaction"
                    } else {
                        "receipt"
                    }
                ),
            }),
        }
    }

    /// The transaction at position `index` of `height`'s block, from the `x` record that
    /// holds it.
    fn transaction_at(&self, height: u64, index: u32) -> Result<Option<Transaction>, StoreError> {
        // How many transactions a record holds has changed between versions, so the record is
        // found by the count each one opens with (borsh: a `u32`, little-endian) and only it
        // is decoded.
        let mut first = 0u64;
        for (chunk, record) in (0u32..).zip(self.tree.scan_prefix(transactions_prefix(height))) {
            let (key, bytes) = record?;
            // A missing record would shift every position after it.
            if key != transactions_key(height, chunk) {
                return Err(StoreError::Corrupt {
                    what: "transactions",
                    detail: format!("height {height} has no record {chunk}"),
                });
            }
            let count = bytes
                .get(..4)
                .and_then(|count| <[u8; 4]>::try_from(count).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    what: "transactions",
                    detail: format!("a record of height {height} is {} bytes", bytes.len()),
                })?;
            let next = first + u64::from(count);
            if u64::from(index) < next {
                let transactions: Vec<Transaction> = decode("transactions", &bytes)?;
                let within = usize::try_from(u64::from(index) - first).unwrap_or(usize::MAX);
                return Ok(transactions.into_iter().nth(within));
            }
            first = next;
        }
        Ok(None)
    }

    /// Withdrawal `id` and the height that executed it, `None` when there is none yet.
    pub fn withdrawal(&self, id: u64) -> Result<Option<WithdrawalAt>, StoreError> {
        self.tree
            .get(withdrawal_key(id))?
            .map(|bytes| {
                decode::<WithdrawalRecord>("withdrawal", &bytes).map(|record| WithdrawalAt {
                    height: record.height,
                    withdrawal: record.withdrawal,
                })
            })
            .transpose()
    }

    /// The first `count` withdrawals, in id order; an error unless all of them are stored
    /// under their own id.
    pub fn withdrawals(&self, count: u64) -> Result<Vec<Withdrawal>, StoreError> {
        let mut withdrawals = Vec::new();
        if count == 0 {
            return Ok(withdrawals);
        }
        for (expected, item) in (0..count).zip(
            self.tree
                .range(withdrawal_key(0)..=withdrawal_key(count - 1)),
        ) {
            let (_, bytes) = item?;
            let record: WithdrawalRecord = decode("withdrawal", &bytes)?;
            if record.withdrawal.id != expected {
                return Err(StoreError::Corrupt {
                    what: "withdrawal",
                    detail: format!(
                        "expected withdrawal {expected}, found {}",
                        record.withdrawal.id
                    ),
                });
            }
            withdrawals.push(record.withdrawal);
        }
        if withdrawals.len() as u64 != count {
            return Err(StoreError::Corrupt {
                what: "withdrawal",
                detail: format!("{count} withdrawals executed, {} stored", withdrawals.len()),
            });
        }
        Ok(withdrawals)
    }

    /// The account at `version`, `None` when it does not exist there.
    pub fn account(&self, address: &Address, version: u64) -> Result<Option<Account>, StoreError> {
        let key_hash = KeyHash(account_key_hash(address).0);
        self.read_kept(version, || {
            self.newest_record(version, key_hash)?
                .value
                .map(|bytes| decode("account", &bytes))
                .transpose()
        })
    }

    /// The state root at `version`.
    pub fn root(&self, version: u64) -> Result<Hash, StoreError> {
        self.read_kept(version, || {
            let root = Sha256Jmt::new(self).get_root_hash(version)?;
            Ok(Hash(root.0))
        })
    }

    /// The account at `version` with its proof against that version's root.
    pub fn account_proof(
        &self,
        address: &Address,
        version: u64,
    ) -> Result<(Option<Account>, StateProof), StoreError> {
        let key_hash = account_key_hash(address);
        self.read_kept(version, || {
            let (value, proof) =
                Sha256Jmt::new(self).get_with_proof(KeyHash(key_hash.0), version)?;
            let account = value
                .map(|bytes| decode::<Account>("account", &bytes))
                .transpose()?;
            Ok((account, state_proof_from_jmt(&proof)?))
        })
    }

    /// The oldest version whose state this store keeps.
    pub fn oldest_version(&self) -> u64 {
        self.oldest.load(Ordering::SeqCst)
    }

    /// Runs `read`, a read of the state at `version`, if the store keeps that version.
    fn read_kept<T>(
        &self,
        version: Version,
        read: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let kept = || match self.oldest_version() {
            oldest if version < oldest => Err(StoreError::Pruned { version, oldest }),
            _ => Ok(()),
        };
        kept()?;
        let answer = read();
        // A block's batch may have pruned the version during the read. It raises `oldest`
        // before it is applied, so a read that saw any of its deletions fails here instead of
        // answering from a half-pruned version.
        kept()?;
        answer
    }

    /// A view of the state at `version` for an executor.
    pub fn view(&self, version: u64) -> StoreView<'_> {
        StoreView {
            store: self,
            version,
        }
    }

    /// Computes the new tree version without writing it.
    fn update_tree(
        &self,
        accounts: &BTreeMap<Address, Account>,
        version: Version,
    ) -> Result<(Hash, TreeUpdateBatch), StoreError> {
        let value_set = accounts.iter().map(|(address, account)| {
            (
                KeyHash(account_key_hash(address).0),
                Some(codec::encode(account)),
            )
        });
        let (root, update) = Sha256Jmt::new(self).put_value_set(value_set, version)?;
        Ok((Hash(root.0), update))
    }

    /// The keys of what `version`, made by `update`, replaced: the tree nodes it made stale
    /// and the values it overwrote (see [`prefix::STALE`]).
    fn replaced_by(
        &self,
        version: Version,
        update: &TreeUpdateBatch,
    ) -> Result<BTreeSet<Vec<u8>>, StoreError> {
        let mut replaced: BTreeSet<Vec<u8>> = update
            .stale_node_index_batch
            .iter()
            .map(|stale| node_key_bytes(&stale.node_key))
            .collect();
        if let Some(previous) = version.checked_sub(1) {
            // jmt reports the previous root stale only when the version changed the tree; one
            // that changed nothing gets a copy of it instead. Either way no later version
            // reaches it.
            let root_path: NibblePath = std::iter::empty().collect();
            replaced.insert(node_key_bytes(&NodeKey::new(previous, root_path)));
            for (_, key_hash) in update.node_batch.values().keys() {
                // The executor has just read these keys at the previous version, so this is
                // almost always answered by the cache of newest values.
                if let Some(written_at) = self.newest_record(previous, *key_hash)?.written_at {
                    replaced.insert(value_key(key_hash, written_at).to_vec());
                }
            }
        }
        Ok(replaced)
    }

    /// Adds to `batch` the deletion of what only versions older than `through` need, at most
    /// [`PRUNE_VERSIONS_PER_BLOCK`] versions' worth. Returns the oldest version that is then
    /// whole, if that moves.
    fn prune(
        &self,
        batch: &mut sled::Batch,
        through: Version,
    ) -> Result<Option<Version>, StoreError> {
        let oldest = self.oldest_version();
        if through <= oldest {
            return Ok(None);
        }
        // Every record below `oldest` is gone, and pruning version `v`'s record breaks only
        // the versions below `v`.
        let mut from = oldest;
        for _ in 0..PRUNE_VERSIONS_PER_BLOCK {
            let next = self
                .tree
                .range(stale_key(from)..stale_key(through + 1))
                .next()
                .transpose()?;
            let Some((first_piece, _)) = next else {
                return Ok(Some(through));
            };
            let version = version_in("replaced keys", &first_piece)?;
            let key = stale_key(version);
            let bytes = self.reassemble("replaced keys", &key)?.unwrap_or_default();
            for replaced in decode::<BTreeSet<Vec<u8>>>("replaced keys", &bytes)? {
                batch.remove(replaced);
            }
            for (piece, _) in pieces::pieces(&key, &bytes) {
                batch.remove(piece);
            }
            from = version + 1;
        }
        Ok(Some(from - 1))
    }

    /// Adds to `batch` the deletion of the transactions, receipts and index entries of the
    /// oldest heights that the transaction history no longer needs once `height`, which
    /// `output` executed, is committed: while the newer heights still hold the
    /// history's count, at most [`PRUNE_TX_HEIGHTS_PER_BLOCK`] of them. Returns the window of
    /// heights kept after that, and the index keys deleted.
    fn prune_transactions(
        &self,
        batch: &mut sled::Batch,
        height: u64,
        output: &BlockOutput,
    ) -> Result<(TxWindow, HashSet<[u8; 33]>), StoreError> {
        let stored: TxWindow = match self.tree.get(TX_WINDOW_KEY)? {
            Some(bytes) => decode("transaction window", &bytes)?,
            None => TxWindow { from: 1, count: 0 },
        };
        let added = u64::try_from(output.receipts.len()).unwrap_or(u64::MAX);
        let mut window = TxWindow {
            count: stored.count.saturating_add(added),
            ..stored
        };
        let mut unindexed = HashSet::new();
        let Some(limit) = self.retention.transactions else {
            return Ok((window, unindexed));
        };
        let budget = added.saturating_mul(2).max(PRUNE_TRANSACTIONS_PER_BLOCK);
        let mut pruned = 0u64;
        for _ in 0..PRUNE_TX_HEIGHTS_PER_BLOCK {
            if window.from >= height || pruned >= budget {
                break;
            }
            let oldest = self.transactions_at(window.from)?;
            // Saturating: a count off by a corrupt record must not wrap into pruning all.
            if window.count.saturating_sub(oldest) < limit.get() {
                break;
            }
            for receipt in self.receipts(window.from)? {
                let key = tx_key(&receipt.tx_hash);
                // The inclusion that used the nonce is the one indexed (see `commit_block`);
                // one that changed nothing may have left the entry to a later one.
                let indexed_here = receipt.outcome.used_nonce()
                    || match self.tree.get(key)? {
                        None => false,
                        Some(bytes) if bytes.len() == TX_LOCATION_LEN => {
                            decode::<TxLocation>("transaction location", &bytes)?.height
                                == window.from
                        }
                        Some(bytes) => {
                            decode::<TxRecord>("transaction", &bytes)?.receipt == receipt
                        }
                    };
                if indexed_here {
                    batch.remove(&key[..]);
                    unindexed.insert(key);
                }
            }
            let records = [
                transactions_prefix(window.from),
                receipt_pieces_key(window.from),
                receipts_key(window.from),
            ];
            for prefix in records {
                for key in self.tree.scan_prefix(prefix).keys() {
                    batch.remove(key?);
                }
            }
            pruned += oldest;
            window = TxWindow {
                from: window.from + 1,
                count: window.count.saturating_sub(oldest),
            };
        }
        Ok((window, unindexed))
    }

    /// Adds a jmt node batch (nodes, values, rightmost-leaf record) to a sled batch.
    fn add_node_batch(
        &self,
        batch: &mut sled::Batch,
        node_batch: &NodeBatch,
    ) -> Result<(), StoreError> {
        let mut rightmost = self.rightmost_leaf()?;
        for (node_key, node) in node_batch.nodes() {
            batch.insert(node_key_bytes(node_key), codec::encode(node));
            if let Node::Leaf(leaf) = node {
                let further = rightmost
                    .as_ref()
                    .is_none_or(|(_, current)| leaf.key_hash() >= current.key_hash());
                if further {
                    rightmost = Some((node_key.clone(), leaf.clone()));
                }
            }
        }
        for ((version, key_hash), value) in node_batch.values() {
            batch.insert(&value_key(key_hash, *version)[..], codec::encode(value));
        }
        if let Some(rightmost) = rightmost {
            batch.insert(RIGHTMOST_LEAF_KEY, codec::encode(&rightmost));
        }
        Ok(())
    }

    /// Moves the cache of newest values to `version`, once `node_batch` (which made it) is
    /// stored.
    fn advance_latest(&self, version: Version, node_batch: &NodeBatch) {
        self.write_latest().advance(
            version,
            node_batch
                .values()
                .iter()
                .filter(|((written_at, _), _)| *written_at == version)
                .map(|((_, key_hash), value)| (key_hash, value)),
        );
    }

    fn write_latest(&self) -> std::sync::RwLockWriteGuard<'_, LatestValues> {
        self.latest
            .write()
            // Each change to the cache is one insert or one clear, and a value is inserted
            // only once it is known: a panic elsewhere cannot leave it half-updated.
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn rightmost_leaf(&self) -> Result<Option<(NodeKey, LeafNode)>, StoreError> {
        self.tree
            .get(RIGHTMOST_LEAF_KEY)?
            .map(|bytes| decode("rightmost leaf", &bytes))
            .transpose()
    }

    /// The newest record of `key_hash` at or below `max_version`.
    fn newest_record(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> Result<NewestRecord, StoreError> {
        let cached = self
            .latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(max_version, &key_hash);
        if let Some(record) = cached {
            return Ok(record);
        }
        let newest = self
            .tree
            .range(value_key(&key_hash, 0)..=value_key(&key_hash, max_version))
            .next_back()
            .transpose()?;
        let record = match newest {
            Some((key, bytes)) => NewestRecord {
                written_at: Some(version_in("value", &key)?),
                value: decode::<Option<OwnedValue>>("value", &bytes)?,
            },
            None => NewestRecord {
                written_at: None,
                value: None,
            },
        };
        self.write_latest()
            .remember(max_version, key_hash, record.clone());
        Ok(record)
    }
}

/// Converts a jmt proof to the wire format. The two borsh layouts are identical by design
/// (see `lamina_primitives::state_proof`), so the conversion is a re-decoding.
pub fn state_proof_from_jmt(
    proof: &jmt::proof::SparseMerkleProof<sha2::Sha256>,
) -> Result<StateProof, StoreError> {
    let bytes = borsh::to_vec(proof).map_err(|e| StoreError::Corrupt {
        what: "proof",
        detail: e.to_string(),
    })?;
    decode("proof", &bytes)
}

impl TreeReader for Store {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self
            .tree
            .get(node_key_bytes(node_key))?
            .map(|bytes| decode("node", &bytes))
            .transpose()?)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self.newest_record(max_version, key_hash)?.value)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        Ok(self.rightmost_leaf()?)
    }
}

/// The state at one version, as an executor reads it.
#[derive(Debug, Clone, Copy)]
pub struct StoreView<'a> {
    store: &'a Store,
    version: u64,
}

impl StateView for StoreView<'_> {
    fn account(&self, address: &Address) -> Result<Account, StoreError> {
        Ok(self
            .store
            .account(address, self.version)?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::GenesisAccount;
    use lamina_primitives::TxOutcome;
    use proptest::prelude::*;

    fn temp_db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    /// Keeps the newest `versions` of the state (0: all) and every transaction.
    fn state_history(versions: u64) -> Retention {
        Retention {
            state: NonZeroU64::new(versions),
            transactions: None,
        }
    }

    fn genesis(accounts: &[(Address, u64)]) -> Genesis {
        Genesis {
            chain_id: "test".into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: vec![],
            accounts: accounts
                .iter()
                .map(|&(address, balance)| GenesisAccount { address, balance })
                .collect(),
        }
    }

    /// Commits `writes` as `height`, with `withdrawals` (no transactions).
    fn commit_with(
        store: &Store,
        height: u64,
        writes: &[(Address, Account)],
        withdrawals: &[Withdrawal],
    ) -> ExecutedBlock {
        let output = BlockOutput {
            receipts: vec![],
            writes: writes.iter().copied().collect(),
            fees: 0,
            failed: 0,
        };
        store
            .commit_block(&BlockCommit {
                height,
                block_hash: Hash::ZERO,
                data_root: Hash::ZERO,
                transactions: &[],
                output: &output,
                deposits_credited: 0,
                withdrawals,
                withdrawals_root: Hash::ZERO,
                withdrawal_count: withdrawals.last().map_or(0, |w| w.id + 1),
                report_wrong_root: false,
            })
            .unwrap()
    }

    /// Commits a block of `transactions` with `output`, and no withdrawals.
    fn commit_transactions(
        store: &Store,
        height: u64,
        transactions: &[Transaction],
        output: &BlockOutput,
    ) {
        store
            .commit_block(&BlockCommit {
                height,
                block_hash: Hash::ZERO,
                data_root: Hash::ZERO,
                transactions,
                output,
                deposits_credited: 0,
                withdrawals: &[],
                withdrawals_root: Hash::ZERO,
                withdrawal_count: 0,
                report_wrong_root: false,
            })
            .unwrap();
    }

    /// Commits `height` with `included` transactions and their outcomes (no state writes).
    fn commit_included(store: &Store, height: u64, included: &[(Transaction, TxOutcome)]) {
        let receipts = (0u32..)
            .zip(included)
            .map(|(index, (transaction, outcome))| Receipt {
                tx_hash: transaction.hash(),
                height,
                index,
                fee: 0,
                outcome: outcome.clone(),
                withdrawal_id: None,
            })
            .collect();
        let output = BlockOutput {
            receipts,
            writes: BTreeMap::new(),
            fees: 0,
            failed: 0,
        };
        let transactions: Vec<Transaction> = included.iter().map(|(t, _)| t.clone()).collect();
        commit_transactions(store, height, &transactions, &output);
    }

    /// Keeps every version of the state and the newest `count` transactions.
    fn transaction_history(count: u64) -> Retention {
        Retention {
            state: None,
            transactions: NonZeroU64::new(count),
        }
    }

    /// The heights of the stored records under `prefix`, whose keys start with a height.
    fn stored_heights(store: &Store, prefix: u8) -> BTreeSet<u64> {
        stored_keys(store, prefix)
            .iter()
            .map(|key| u64::from_be_bytes(key[1..9].try_into().unwrap()))
            .collect()
    }

    fn commit(store: &Store, height: u64, writes: &[(Address, Account)]) -> ExecutedBlock {
        commit_with(store, height, writes, &[])
    }

    fn check_proof(store: &Store, address: &Address, version: u64) {
        let root = store.root(version).unwrap();
        let (account, proof) = store.account_proof(address, version).unwrap();
        assert_eq!(account, store.account(address, version).unwrap());
        let key_hash = account_key_hash(address);
        let value = account.map(|a| codec::encode(&a));
        proof
            .verify(&root, &key_hash, value.as_deref())
            .unwrap_or_else(|e| panic!("proof of {address} at {version}: {e}"));
        // A tampered value or root must not verify.
        let tampered = codec::encode(&Account {
            balance: account.map_or(1, |a| a.balance.wrapping_add(1)),
            nonce: 0,
        });
        assert!(proof.verify(&root, &key_hash, Some(&tampered)).is_err());
        let mut bad_root = root;
        bad_root.0[0] ^= 1;
        assert!(proof
            .verify(&bad_root, &key_hash, value.as_deref())
            .is_err());
    }

    #[test]
    fn empty_genesis_has_the_placeholder_root_and_proves_absence() {
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        let root = store.write_genesis(&genesis(&[])).unwrap();
        assert_eq!(root, lamina_primitives::state_proof::PLACEHOLDER_HASH);
        check_proof(&store, &Address([7; 32]), 0);
        // An empty block keeps the root and still yields a readable version.
        let executed = commit(&store, 1, &[]);
        assert_eq!(executed.state_root, root);
        assert_eq!(store.root(1).unwrap(), root);
    }

    #[test]
    fn versions_keep_their_values_and_proofs() {
        let a = Address([1; 32]);
        let b = Address([2; 32]);
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        let root0 = store.write_genesis(&genesis(&[(a, 100)])).unwrap();
        let account = |balance, nonce| Account { balance, nonce };
        commit(&store, 1, &[(a, account(50, 1)), (b, account(50, 0))]);
        commit(&store, 2, &[(b, account(10, 1))]);
        assert_eq!(store.root(0).unwrap(), root0);
        assert_eq!(store.account(&a, 0).unwrap(), Some(account(100, 0)));
        assert_eq!(store.account(&b, 0).unwrap(), None);
        assert_eq!(store.account(&a, 2).unwrap(), Some(account(50, 1)));
        assert_eq!(store.account(&b, 1).unwrap(), Some(account(50, 0)));
        assert_eq!(store.account(&b, 2).unwrap(), Some(account(10, 1)));
        assert_eq!(store.executed_height().unwrap(), Some(2));
        for version in 0..=2 {
            check_proof(&store, &a, version);
            check_proof(&store, &b, version);
            check_proof(&store, &Address([3; 32]), version);
        }
        // With two leaves the proof must climb through at least one internal node.
        assert!(!store.account_proof(&a, 1).unwrap().1.siblings.is_empty());
        // A proof from one height does not verify against another height's root.
        let (account_a, proof) = store.account_proof(&a, 0).unwrap();
        let value = codec::encode(&account_a.unwrap());
        assert!(proof
            .verify(&store.root(2).unwrap(), &account_key_hash(&a), Some(&value))
            .is_err());
    }

    #[test]
    fn every_version_reads_back_the_values_written_up_to_it() {
        let a = Address([1; 32]);
        let b = Address([2; 32]);
        let account = |balance, nonce| Account { balance, nonce };
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        store.write_genesis(&genesis(&[(a, 100)])).unwrap();
        commit(&store, 1, &[(b, account(5, 0))]);
        commit(&store, 2, &[(a, account(90, 1))]);
        commit(&store, 3, &[]);
        let expected = |address: &Address, version: u64| match (address == &a, version) {
            (true, 0 | 1) => Some(account(100, 0)),
            (true, _) => Some(account(90, 1)),
            (false, 0) => None,
            (false, _) => Some(account(5, 0)),
        };
        let read_all = |store: &Store| {
            for version in 0..=3 {
                for address in [&a, &b] {
                    assert_eq!(
                        store.account(address, version).unwrap(),
                        expected(address, version),
                        "{address} at {version}"
                    );
                }
            }
        };
        read_all(&store);
    }

    #[test]
    fn a_repeated_transaction_keeps_the_inclusion_that_used_its_nonce() {
        let key = lamina_primitives::Keypair::from_seed([9; 32]);
        let transaction = Transaction::transfer("test", &key, 0, Address([2; 32]), 1);
        let hash = transaction.hash();
        let bad_nonce = TxOutcome::Failed {
            failure: lamina_primitives::TxFailure::BadNonce {
                expected: 1,
                got: 0,
            },
        };
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        store.write_genesis(&genesis(&[])).unwrap();
        let include = |height: u64, outcomes: &[TxOutcome]| {
            let included: Vec<_> = outcomes
                .iter()
                .map(|outcome| (transaction.clone(), outcome.clone()))
                .collect();
            commit_included(&store, height, &included);
        };
        let recorded = || {
            let (_, receipt) = store.included_transaction(&hash).unwrap().unwrap();
            (receipt.height, receipt.index, receipt.outcome)
        };
        // Every inclusion has its receipt under its height, in block order.
        let receipt_outcomes = |height| -> Vec<TxOutcome> {
            let receipts = store.receipts(height).unwrap();
            assert!(receipts.iter().enumerate().all(|(index, receipt)| {
                receipt.height == height && receipt.index as usize == index
            }));
            receipts
                .into_iter()
                .map(|receipt| receipt.outcome)
                .collect()
        };
        // A repeat that changed nothing keeps the first such inclusion...
        include(1, &[bad_nonce.clone(), bad_nonce.clone()]);
        assert_eq!(recorded(), (1, 0, bad_nonce.clone()));
        include(2, std::slice::from_ref(&bad_nonce));
        assert_eq!(recorded(), (1, 0, bad_nonce.clone()));
        // ...until the inclusion that takes effect, which later repeats never shadow.
        include(
            3,
            &[bad_nonce.clone(), TxOutcome::Success, bad_nonce.clone()],
        );
        assert_eq!(recorded(), (3, 1, TxOutcome::Success));
        include(4, std::slice::from_ref(&bad_nonce));
        assert_eq!(recorded(), (3, 1, TxOutcome::Success));
        assert_eq!(
            receipt_outcomes(3),
            [bad_nonce.clone(), TxOutcome::Success, bad_nonce.clone()]
        );
        assert_eq!(receipt_outcomes(4), std::slice::from_ref(&bad_nonce));
        assert_eq!(receipt_outcomes(5), []);

        // Databases from earlier versions: one record per block under `r`, or before that one
        // record per receipt.
        let receipts = store.receipts(3).unwrap();
        for key in store.tree.scan_prefix(receipt_pieces_key(3)).keys() {
            store.tree.remove(key.unwrap()).unwrap();
        }
        assert_eq!(receipt_outcomes(3), []);
        store
            .tree
            .insert(receipts_key(3), codec::encode(&receipts))
            .unwrap();
        assert_eq!(store.receipts(3).unwrap(), receipts);
        store.tree.remove(receipts_key(3)).unwrap();
        for receipt in &receipts {
            let key = legacy_receipt_key(3, receipt.index);
            store.tree.insert(key, codec::encode(receipt)).unwrap();
        }
        assert_eq!(store.receipts(3).unwrap(), receipts);
    }

    #[test]
    fn transactions_are_found_by_hash_with_their_receipts() {
        let key = lamina_primitives::Keypair::from_seed([9; 32]);
        // More than two records' worth, in this version's layout and in earlier versions'.
        let count = TRANSACTIONS_PER_RECORD as u64 * 4 + 3;
        let transactions: Vec<Transaction> = (0..count)
            .map(|nonce| Transaction::transfer("test", &key, nonce, Address([2; 32]), 1))
            .collect();
        let receipts: Vec<Receipt> = (0u32..)
            .zip(&transactions)
            .map(|(index, transaction)| Receipt {
                tx_hash: transaction.hash(),
                height: 1,
                index,
                fee: 0,
                outcome: TxOutcome::Success,
                withdrawal_id: None,
            })
            .collect();
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        store.write_genesis(&genesis(&[])).unwrap();
        let output = BlockOutput {
            receipts: receipts.clone(),
            writes: BTreeMap::new(),
            fees: 0,
            failed: 0,
        };
        commit_transactions(&store, 1, &transactions, &output);
        let all_found = |store: &Store| {
            for (transaction, receipt) in transactions.iter().zip(&receipts) {
                let found = store.included_transaction(&transaction.hash()).unwrap();
                assert_eq!(found, Some((transaction.clone(), receipt.clone())));
            }
        };
        all_found(&store);
        assert_eq!(store.included_transaction(&Hash::ZERO).unwrap(), None);

        // Earlier versions wrote 64 transactions per record.
        let records: Vec<_> = store
            .tree
            .scan_prefix(transactions_prefix(1))
            .keys()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            records.len(),
            transactions.len().div_ceil(TRANSACTIONS_PER_RECORD)
        );
        for key in records {
            store.tree.remove(key).unwrap();
        }
        for (chunk, run) in (0u32..).zip(transactions.chunks(64)) {
            let key = transactions_key(1, chunk);
            store.tree.insert(key, codec::encode(run)).unwrap();
        }
        all_found(&store);

        // A database from before the location index holds the transaction with its receipt.
        let legacy = TxRecord {
            transaction: transactions[0].clone(),
            receipt: Receipt {
                height: 7,
                ..receipts[0].clone()
            },
        };
        store
            .tree
            .insert(tx_key(&receipts[0].tx_hash), codec::encode(&legacy))
            .unwrap();
        let found = store.included_transaction(&receipts[0].tx_hash).unwrap();
        assert_eq!(found, Some((legacy.transaction, legacy.receipt)));

        // A location whose height lost its transactions is a corrupt store, not "not found".
        store.tree.remove(transactions_key(1, 0)).unwrap();
        assert!(matches!(
            store.included_transaction(&receipts[1].tx_hash),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn withdrawals_are_stored_by_id_with_their_height() {
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        store.write_genesis(&genesis(&[])).unwrap();
        let withdrawals: Vec<Withdrawal> = (0..3)
            .map(|id| Withdrawal {
                id,
                from: Address([1; 32]),
                to: Address([2; 32]),
                amount: 10 + id,
            })
            .collect();
        commit_with(&store, 1, &[], &withdrawals[..2]);
        commit(&store, 2, &[]);
        let executed = commit_with(&store, 3, &[], &withdrawals[2..]);
        assert_eq!(executed.withdrawal_count, 3);
        assert_eq!(store.executed_block(3).unwrap(), Some(executed));
        assert_eq!(
            store.withdrawal(1).unwrap(),
            Some(WithdrawalAt {
                height: 1,
                withdrawal: withdrawals[1]
            })
        );
        assert_eq!(store.withdrawal(2).unwrap().map(|w| w.height), Some(3));
        assert_eq!(store.withdrawal(3).unwrap(), None);
        assert_eq!(store.withdrawals(0).unwrap(), vec![]);
        assert_eq!(store.withdrawals(2).unwrap(), withdrawals[..2]);
        assert_eq!(store.withdrawals(3).unwrap(), withdrawals);
        // More than are stored is a corrupt store, not a shorter list.
        assert!(matches!(
            store.withdrawals(4),
            Err(StoreError::Corrupt {
                what: "withdrawal",
                ..
            })
        ));
    }

    /// A `TreeReader` over a store that notes the key of every node read through it.
    struct NodeRecorder<'a> {
        store: &'a Store,
        read: std::sync::Mutex<std::collections::BTreeSet<Vec<u8>>>,
    }

    impl TreeReader for NodeRecorder<'_> {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            self.read.lock().unwrap().insert(node_key_bytes(node_key));
            self.store.get_node_option(node_key)
        }

        fn get_value_option(
            &self,
            max_version: Version,
            key_hash: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            self.store.get_value_option(max_version, key_hash)
        }

        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            self.store.get_rightmost_leaf()
        }
    }

    /// The keys of every tree node the versions from `oldest` to `latest` reach, found by
    /// iterating over each version's leaves (which visits every node of that version).
    fn reachable_nodes(store: &Store, oldest: u64, latest: u64) -> Vec<Vec<u8>> {
        let recorder = Arc::new(NodeRecorder {
            store,
            read: Default::default(),
        });
        for version in oldest..=latest {
            let leaves =
                jmt::JellyfishMerkleIterator::new(recorder.clone(), version, KeyHash([0; 32]))
                    .unwrap();
            for leaf in leaves {
                leaf.unwrap();
            }
        }
        let read = recorder.read.lock().unwrap();
        read.iter().cloned().collect()
    }

    /// The stored keys under `prefix`.
    fn stored_keys(store: &Store, prefix: u8) -> Vec<Vec<u8>> {
        store
            .tree
            .scan_prefix([prefix])
            .map(|item| item.unwrap().0.to_vec())
            .collect()
    }

    /// Commits `height`, writing `address` with the height as its balance and nonce.
    fn commit_height_marked(store: &Store, address: &Address, height: u64) {
        let marked = Account {
            balance: height,
            nonce: height,
        };
        commit(store, height, &[(*address, marked)]);
    }

    #[test]
    fn shortening_the_history_prunes_a_few_versions_per_block_until_caught_up() {
        let a = Address([1; 32]);
        let db = temp_db();
        let store = Store::open(&db, state_history(10)).unwrap();
        store.write_genesis(&genesis(&[(a, 100)])).unwrap();
        for height in 1..=12 {
            commit_height_marked(&store, &a, height);
        }
        assert_eq!(store.oldest_version(), 3);
        assert!(matches!(
            store.account(&a, 2),
            Err(StoreError::Pruned {
                version: 2,
                oldest: 3
            })
        ));
        assert_eq!(store.account(&a, 3).unwrap().unwrap().balance, 3);

        let store = Store::open(&db, state_history(1)).unwrap();
        assert_eq!(store.oldest_version(), 3, "kept across a restart");
        for (height, oldest) in [(13, 7), (14, 11), (15, 15), (16, 16)] {
            commit_height_marked(&store, &a, height);
            assert_eq!(store.oldest_version(), oldest, "after {height}");
            for version in oldest..=height {
                assert_eq!(
                    store.account(&a, version).unwrap().unwrap().balance,
                    version
                );
                check_proof(&store, &a, version);
            }
        }
        // With one version kept, what a version replaces is deleted with it, not recorded.
        assert!(stored_keys(&store, prefix::STALE).is_empty());
        assert_eq!(stored_keys(&store, prefix::VALUE).len(), 1);
    }

    #[test]
    fn versions_from_an_unlimited_history_stay_but_are_no_longer_served() {
        let a = Address([1; 32]);
        let db = temp_db();
        let store = Store::open(&db, Retention::default()).unwrap();
        store.write_genesis(&genesis(&[(a, 100)])).unwrap();
        for height in 1..=5 {
            commit_height_marked(&store, &a, height);
        }
        assert!(stored_keys(&store, prefix::STALE).is_empty());
        let store = Store::open(&db, state_history(2)).unwrap();
        commit_height_marked(&store, &a, 6);
        assert_eq!(store.oldest_version(), 5);
        let error = store.account_proof(&a, 4).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the state at height 4 is pruned; the oldest height kept is 5"
        );
        assert!(matches!(store.root(0), Err(StoreError::Pruned { .. })));
        // Nothing recorded what versions 1 to 5 replaced, so their data stays on disk.
        assert_eq!(stored_keys(&store, prefix::VALUE).len(), 7);
        check_proof(&store, &a, 5);
        check_proof(&store, &a, 6);
    }

    #[test]
    fn pruning_a_height_keeps_index_entries_that_point_elsewhere() {
        let key = lamina_primitives::Keypair::from_seed([9; 32]);
        let transfer = |nonce| Transaction::transfer("test", &key, nonce, Address([2; 32]), 1);
        let (a, b, c) = (transfer(0), transfer(1), transfer(2));
        let bad_nonce = TxOutcome::Failed {
            failure: lamina_primitives::TxFailure::BadNonce {
                expected: 1,
                got: 0,
            },
        };
        let found = |store: &Store, transaction: &Transaction| {
            store
                .included_transaction(&transaction.hash())
                .unwrap()
                .map(|(_, receipt)| (receipt.height, receipt.outcome))
        };
        let store = Store::open(&temp_db(), transaction_history(2)).unwrap();
        store.write_genesis(&genesis(&[])).unwrap();
        // `a` changes nothing at 1, then takes effect at 2, where the index then points.
        commit_included(&store, 1, &[(a.clone(), bad_nonce.clone())]);
        commit_included(&store, 2, &[(a.clone(), TxOutcome::Success)]);
        commit_included(&store, 3, &[(b.clone(), TxOutcome::Success)]);
        // Height 1 is pruned; the entry of `a` pointed at 2, so it stays.
        assert_eq!(store.transactions_from.load(Ordering::SeqCst), 2);
        assert_eq!(found(&store, &a), Some((2, TxOutcome::Success)));
        // Height 2 goes in the block that repeats `a` to no effect: that repeat, the only
        // inclusion left, is indexed in place of the pruned one.
        commit_included(
            &store,
            4,
            &[
                (a.clone(), bad_nonce.clone()),
                (c.clone(), TxOutcome::Success),
            ],
        );
        assert_eq!(store.transactions_from.load(Ordering::SeqCst), 4);
        assert_eq!(found(&store, &a), Some((4, bad_nonce)));
        assert_eq!(found(&store, &b), None);
        assert_eq!(found(&store, &c), Some((4, TxOutcome::Success)));
        assert_eq!(stored_keys(&store, prefix::TX).len(), 2);
        assert_eq!(
            stored_heights(&store, prefix::TRANSACTIONS),
            BTreeSet::from([4])
        );
        assert_eq!(
            stored_heights(&store, prefix::RECEIPT_PIECES),
            BTreeSet::from([4])
        );

        // An entry read just before its height was pruned finds nothing there: not found,
        // not a corrupt store.
        let location = TxLocation {
            height: 3,
            index: 0,
        };
        store
            .tree
            .insert(tx_key(&b.hash()), codec::encode(&location))
            .unwrap();
        assert_eq!(store.included_transaction(&b.hash()).unwrap(), None);
    }

    #[test]
    fn a_database_from_before_the_transaction_history_is_counted_then_pruned() {
        let key = lamina_primitives::Keypair::from_seed([9; 32]);
        let transfers: Vec<Transaction> = (0..6)
            .map(|nonce| Transaction::transfer("test", &key, nonce, Address([2; 32]), 1))
            .collect();
        let db = temp_db();
        let store = Store::open(&db, Retention::default()).unwrap();
        store.write_genesis(&genesis(&[])).unwrap();
        for (height, pair) in (1u64..).zip(transfers.chunks(2)) {
            let included: Vec<_> = pair
                .iter()
                .map(|t| (t.clone(), TxOutcome::Success))
                .collect();
            commit_included(&store, height, &included);
        }
        // Earlier versions wrote no window.
        store.tree.remove(TX_WINDOW_KEY).unwrap();
        drop(store);
        let store = Store::open(&db, transaction_history(1)).unwrap();
        let window = || {
            decode::<TxWindow>("window", &store.tree.get(TX_WINDOW_KEY).unwrap().unwrap()).unwrap()
        };
        assert_eq!(window(), TxWindow { from: 1, count: 6 });
        commit_included(&store, 4, &[]);
        // The empty height 4 holds none, so height 3 is kept as well.
        assert_eq!(window(), TxWindow { from: 3, count: 2 });
        assert_eq!(stored_keys(&store, prefix::TX).len(), 2);
        for (index, transfer) in transfers.iter().enumerate() {
            let kept = store
                .included_transaction(&transfer.hash())
                .unwrap()
                .is_some();
            assert_eq!(kept, index >= 4, "transfer {index}");
        }
    }

    #[test]
    fn rightmost_leaf_is_the_largest_key_hash() {
        let store = Store::open(&temp_db(), Retention::default()).unwrap();
        let addresses: Vec<Address> = (0..20u8).map(|i| Address([i; 32])).collect();
        let accounts: Vec<(Address, u64)> = addresses.iter().map(|a| (*a, 1)).collect();
        store.write_genesis(&genesis(&accounts)).unwrap();
        let max = addresses.iter().map(account_key_hash).max().unwrap();
        let (_, leaf) = store.get_rightmost_leaf().unwrap().unwrap();
        assert_eq!(leaf.key_hash().0, max.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// With a limited transaction history, after every block: the kept heights are the
        /// newest ones holding at least the history's count (older ones pruned at most
        /// [`PRUNE_TX_HEIGHTS_PER_BLOCK`] per block); a transaction whose inclusion took
        /// effect at a kept height is found there with its receipt; any other answer is a
        /// repeat of it (which changed nothing) at a kept height, or nothing; and nothing of
        /// the older heights is left: no index entry, transaction or receipt record. Blocks
        /// may repeat an earlier transaction, so the index's lookups before deleting are
        /// exercised. Reopening keeps the window.
        #[test]
        fn a_limited_transaction_history_keeps_the_newest_heights_and_nothing_else(
            limit in 1u64..12,
            blocks in proptest::collection::vec(
                (prop_oneof![Just(0usize), 1usize..6], proptest::option::of(any::<prop::sample::Index>())),
                1..30,
            ),
        ) {
            let key = lamina_primitives::Keypair::from_seed([9; 32]);
            let bad_nonce = TxOutcome::Failed {
                failure: lamina_primitives::TxFailure::BadNonce { expected: 0, got: 0 },
            };
            let db = temp_db();
            let mut store = Store::open(&db, transaction_history(limit)).unwrap();
            store.write_genesis(&genesis(&[])).unwrap();
            // What each height included, and the height where each transaction took effect.
            let mut included: Vec<Vec<(Transaction, TxOutcome)>> = vec![vec![]];
            let mut took_effect: Vec<(Transaction, u64, u32)> = Vec::new();
            let mut nonce = 0;
            let mut from = 1u64;
            for (height, (size, repeat)) in (1u64..).zip(&blocks) {
                let mut block: Vec<(Transaction, TxOutcome)> = (0..*size)
                    .map(|_| {
                        nonce += 1;
                        let transfer = Transaction::transfer("test", &key, nonce, Address([2; 32]), 1);
                        (transfer, TxOutcome::Success)
                    })
                    .collect();
                if let (Some(repeat), false) = (repeat, took_effect.is_empty()) {
                    let (earlier, _, _) = &took_effect[repeat.index(took_effect.len())];
                    block.push((earlier.clone(), bad_nonce.clone()));
                }
                commit_included(&store, height, &block);
                for (index, (transaction, outcome)) in (0u32..).zip(&block) {
                    if *outcome == TxOutcome::Success {
                        took_effect.push((transaction.clone(), height, index));
                    }
                }
                included.push(block);
                let held = |from: u64| -> usize {
                    included[from as usize..].iter().map(Vec::len).sum()
                };
                for _ in 0..PRUNE_TX_HEIGHTS_PER_BLOCK {
                    let without_oldest = held(from) - included[from as usize].len();
                    if from >= height || (without_oldest as u64) < limit {
                        break;
                    }
                    from += 1;
                }
                if height % 7 == 0 {
                    store = Store::open(&db, transaction_history(limit)).unwrap();
                }
                prop_assert_eq!(store.transactions_from.load(Ordering::SeqCst), from);
                for (transaction, at, index) in &took_effect {
                    let found = store.included_transaction(&transaction.hash()).unwrap();
                    if *at >= from {
                        let (stored, receipt) = found.unwrap();
                        prop_assert_eq!(&stored, transaction);
                        prop_assert_eq!((receipt.height, receipt.index), (*at, *index));
                    } else if let Some((stored, receipt)) = found {
                        prop_assert_eq!(&stored, transaction);
                        prop_assert!(receipt.height >= from, "{:?}", receipt);
                        let slot = receipt.index as usize;
                        let (repeated, outcome) = &included[receipt.height as usize][slot];
                        prop_assert_eq!(repeated, transaction);
                        prop_assert_eq!(outcome, &bad_nonce);
                    }
                }
                for (key, bytes) in store.tree.scan_prefix([prefix::TX]).map(Result::unwrap) {
                    let location: TxLocation = decode("location", &bytes).unwrap();
                    prop_assert!(location.height >= from, "{:?} left for {:?}", location, key);
                }
                for records in [prefix::TRANSACTIONS, prefix::RECEIPT_PIECES] {
                    let heights = stored_heights(&store, records);
                    prop_assert!(heights.iter().all(|&at| at >= from), "{:?}", heights);
                }
                let window: TxWindow =
                    decode("window", &store.tree.get(TX_WINDOW_KEY).unwrap().unwrap()).unwrap();
                prop_assert_eq!(window, TxWindow { from, count: held(from) as u64 });
            }
        }

        /// Reads answered from the cache of newest values match reads from sled: accounts
        /// over a few addresses, read before and after each random block (so the cache holds
        /// read, written and absent keys), checked against a store opened afresh on the same
        /// database at every version.
        #[test]
        fn the_newest_values_cache_answers_as_the_store_does(
            genesis_balances in proptest::collection::btree_map(0u8..8, 1..1_000u64, 0..8),
            blocks in proptest::collection::vec(
                proptest::collection::btree_map(0u8..8, (0..1_000u64, 0..5u64), 0..5),
                1..6,
            ),
        ) {
            let db = temp_db();
            let store = Store::open(&db, Retention::default()).unwrap();
            let address = |n: u8| Address([n; 32]);
            let initial: Vec<(Address, u64)> =
                genesis_balances.iter().map(|(&n, &b)| (address(n), b)).collect();
            store.write_genesis(&genesis(&initial)).unwrap();
            let read_all = |store: &Store, version: u64| -> Vec<Option<Account>> {
                (0u8..8).map(|n| store.account(&address(n), version).unwrap()).collect()
            };
            read_all(&store, 0);
            for (height, writes) in (1u64..).zip(&blocks) {
                let writes: Vec<(Address, Account)> = writes
                    .iter()
                    .map(|(&n, &(balance, nonce))| (address(n), Account { balance, nonce }))
                    .collect();
                commit(&store, height, &writes);
                let cached = read_all(&store, height);
                let fresh = Store::open(&db, Retention::default()).unwrap();
                prop_assert_eq!(&cached, &read_all(&fresh, height));
                // Twice: the second read is served from what the first remembered.
                prop_assert_eq!(&cached, &read_all(&store, height));
            }
            let fresh = Store::open(&db, Retention::default()).unwrap();
            for version in 0..=blocks.len() as u64 {
                prop_assert_eq!(read_all(&store, version), read_all(&fresh, version));
            }
        }

        /// With a limited history, after every block: the versions in the history read back
        /// as written, with proofs against the roots they had; older versions are refused;
        /// and the store holds exactly the tree nodes those versions reach and the values
        /// they read, nothing older. Reopening keeps the pruning state.
        #[test]
        fn a_limited_history_keeps_its_versions_whole_and_nothing_else(
            history in 1u64..4,
            genesis_balances in proptest::collection::btree_map(0u8..8, 1..1_000u64, 0..8),
            blocks in proptest::collection::vec(
                proptest::collection::btree_map(0u8..8, (0..1_000u64, 0..5u64), 0..5),
                1..10,
            ),
        ) {
            let db = temp_db();
            let store = Store::open(&db, state_history(history)).unwrap();
            let address = |n: u8| Address([n; 32]);
            let initial: Vec<(Address, u64)> =
                genesis_balances.iter().map(|(&n, &b)| (address(n), b)).collect();
            let mut roots = vec![store.write_genesis(&genesis(&initial)).unwrap()];
            // The accounts at every version, and the versions each address was written at.
            let mut states: Vec<BTreeMap<u8, Account>> = vec![genesis_balances
                .iter()
                .map(|(&n, &balance)| (n, Account { balance, nonce: 0 }))
                .collect()];
            let mut written: BTreeMap<u8, Vec<u64>> =
                genesis_balances.keys().map(|&n| (n, vec![0])).collect();
            for (height, writes) in (1u64..).zip(&blocks) {
                let writes: BTreeMap<u8, Account> = writes
                    .iter()
                    .map(|(&n, &(balance, nonce))| (n, Account { balance, nonce }))
                    .collect();
                let list: Vec<(Address, Account)> =
                    writes.iter().map(|(&n, &account)| (address(n), account)).collect();
                roots.push(commit(&store, height, &list).state_root);
                let mut state = states.last().unwrap().clone();
                for (&n, &account) in &writes {
                    state.insert(n, account);
                    written.entry(n).or_default().push(height);
                }
                states.push(state);

                let oldest = (height + 1).saturating_sub(history);
                prop_assert_eq!(store.oldest_version(), oldest);
                for version in 0..=height {
                    if version < oldest {
                        let pruned = matches!(
                            store.account(&address(0), version),
                            Err(StoreError::Pruned { .. })
                        );
                        prop_assert!(pruned, "version {} is below {}", version, oldest);
                        continue;
                    }
                    prop_assert_eq!(store.root(version).unwrap(), roots[version as usize]);
                    for n in 0u8..8 {
                        let expected = states[version as usize].get(&n).copied();
                        prop_assert_eq!(store.account(&address(n), version).unwrap(), expected);
                    }
                    check_proof(&store, &address(0), version);
                }
                prop_assert_eq!(
                    stored_keys(&store, prefix::NODE),
                    reachable_nodes(&store, oldest, height)
                );
                // A value is needed while it is the newest of its key at some kept version.
                let mut needed: Vec<Vec<u8>> = written
                    .iter()
                    .flat_map(|(&n, versions)| {
                        let first_needed = versions
                            .iter()
                            .rposition(|&version| version <= oldest)
                            .unwrap_or(0);
                        let key_hash = KeyHash(account_key_hash(&address(n)).0);
                        versions[first_needed..]
                            .iter()
                            .map(move |&version| value_key(&key_hash, version).to_vec())
                    })
                    .collect();
                needed.sort();
                prop_assert_eq!(stored_keys(&store, prefix::VALUE), needed);
            }
            let reopened = Store::open(&db, state_history(history)).unwrap();
            prop_assert_eq!(reopened.oldest_version(), store.oldest_version());
        }

        /// For random trees over several versions, converted proofs verify for present and
        /// absent keys, and fail for tampered values or roots.
        #[test]
        fn converted_proofs_verify(
            genesis_accounts in proptest::collection::btree_map(any::<[u8; 32]>(), 0..u64::MAX / 2, 0..12),
            updates in proptest::collection::vec(
                proptest::collection::btree_map(any::<[u8; 32]>(), any::<(u64, u64)>(), 0..6),
                0..3,
            ),
            absent in proptest::collection::vec(any::<[u8; 32]>(), 1..4),
        ) {
            let store = Store::open(&temp_db(), Retention::default()).unwrap();
            let initial: Vec<(Address, u64)> =
                genesis_accounts.iter().map(|(a, b)| (Address(*a), *b)).collect();
            store.write_genesis(&genesis(&initial)).unwrap();
            let mut touched: Vec<Address> = initial.iter().map(|(a, _)| *a).collect();
            for (i, update) in updates.iter().enumerate() {
                let writes: Vec<(Address, Account)> = update
                    .iter()
                    .map(|(a, (balance, nonce))| (Address(*a), Account { balance: *balance, nonce: *nonce }))
                    .collect();
                touched.extend(writes.iter().map(|(a, _)| *a));
                commit(&store, i as u64 + 1, &writes);
            }
            let latest = updates.len() as u64;
            for version in 0..=latest {
                for address in touched.iter().chain(absent.iter().map(|a| Address(*a)).collect::<Vec<_>>().iter()) {
                    check_proof(&store, address, version);
                }
            }
        }
    }
}
