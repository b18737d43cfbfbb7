//! The multi-version memory of Block-STM (arXiv 2203.06871, Algorithm 2): for every state key,
//! the value each transaction of the block wrote to it, tagged with the incarnation that wrote
//! it, or an ESTIMATE marker where that incarnation was aborted.
//!
//! A read by transaction `i` sees the write of the highest transaction below `i`, or the
//! state before the block when there is none. Keys are generic, so new transaction kinds
//! (with read and write sets only known while they run) need no change here.
//!
//! The map is split into shards, each a mutex over a hash map from key to that key's writes
//! (and its value before the block, read from storage once), so threads touching different
//! keys rarely meet on a lock. At the end of the block the last write of every key is the
//! block's write to it (lazy commit).

use ahash::RandomState;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

use super::scheduler::Version;
use super::{lock, Padded, TxnIndex};
use crate::state::StoreError;

/// What a transaction left at one key.
#[derive(Debug, Clone)]
enum Entry<V> {
    /// Written by this incarnation.
    Value { incarnation: usize, value: V },
    /// Written by an aborted incarnation; the next one will probably write it again, so a
    /// reader waits for it instead of reading the value below.
    Estimate,
}

/// Where a read found its value; what validation compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOrigin {
    /// The state before the block (no earlier transaction wrote the key).
    Storage,
    /// The write of this incarnation of an earlier transaction.
    Version(Version),
}

/// The result of reading a key as one transaction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MvRead<V> {
    /// No earlier transaction wrote the key: this is its value before the block.
    Storage(V),
    /// The value written by this earlier incarnation.
    Value(Version, V),
    /// An earlier transaction's write is an ESTIMATE: wait for that transaction.
    Estimate(TxnIndex),
}

/// Everything the block did to one key. Most keys are written by one or two transactions of
/// a block, so the writes sit inline (no allocation per key) and sorted (binary search).
#[derive(Debug)]
struct KeyVersions<V> {
    /// The key's value before the block, once a transaction has read it from storage: each
    /// key is read from storage at most once per block, however often it is re-executed.
    base: Option<V>,
    /// The writes, by transaction index.
    writes: SmallVec<[(TxnIndex, Entry<V>); 2]>,
}

impl<V> Default for KeyVersions<V> {
    fn default() -> Self {
        KeyVersions {
            base: None,
            writes: SmallVec::new(),
        }
    }
}

impl<V> KeyVersions<V> {
    /// The write of the highest transaction below `txn`.
    fn below(&self, txn: TxnIndex) -> Option<(TxnIndex, &Entry<V>)> {
        let end = self.writes.partition_point(|(writer, _)| *writer < txn);
        end.checked_sub(1)
            .and_then(|last| self.writes.get(last))
            .map(|(writer, entry)| (*writer, entry))
    }

    fn position(&self, txn: TxnIndex) -> Result<usize, usize> {
        self.writes
            .binary_search_by_key(&txn, |(writer, _)| *writer)
    }

    fn insert(&mut self, txn: TxnIndex, entry: Entry<V>) {
        match self.position(txn) {
            Ok(position) => self.writes[position].1 = entry,
            Err(position) => self.writes.insert(position, (txn, entry)),
        }
    }

    fn remove(&mut self, txn: TxnIndex) {
        if let Ok(position) = self.position(txn) {
            self.writes.remove(position);
        }
    }

    fn get_mut(&mut self, txn: TxnIndex) -> Option<&mut Entry<V>> {
        let position = self.position(txn).ok()?;
        self.writes.get_mut(position).map(|(_, entry)| entry)
    }
}

type Shard<K, V> = Mutex<HashMap<K, KeyVersions<V>, RandomState>>;

/// What the last finished incarnation of one transaction read and wrote.
#[derive(Debug)]
struct TxnFootprint<K> {
    /// Each key read, with where its value came from (validation checks these again).
    reads: Vec<(K, ReadOrigin)>,
    /// Each key written, once.
    written: Vec<K>,
}

/// A key's value at the end of the block (lazy commit: the last writer's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite<K, V> {
    /// The key.
    pub key: K,
    /// Its value after the block.
    pub value: V,
    /// Its value before the block, when a transaction read it (`None`: only written blind).
    pub before: Option<V>,
}

/// The multi-version memory, shared by every worker of one block.
#[derive(Debug)]
pub(crate) struct MvMemory<K, V> {
    shards: Box<[Padded<Shard<K, V>>]>,
    hasher: RandomState,
    /// Per transaction; locked before any shard, never while one is held.
    footprints: Box<[Padded<Mutex<TxnFootprint<K>>>]>,
}

/// Shards of the map: enough that two threads rarely want the same one at once.
const SHARDS: usize = 128;

impl<K, V> MvMemory<K, V>
where
    K: Eq + Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// An empty memory for a block of `num_txns` transactions.
    pub(crate) fn new(num_txns: usize) -> Self {
        // Room for about two keys per transaction up front: growing a shard's table while
        // other threads wait on its lock is the costliest thing a write can do.
        let per_shard = num_txns.saturating_mul(2) / SHARDS;
        MvMemory {
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(Mutex::new(HashMap::with_capacity_and_hasher(
                        per_shard,
                        RandomState::default(),
                    )))
                })
                .collect(),
            hasher: RandomState::new(),
            footprints: (0..num_txns)
                .map(|_| {
                    Padded(Mutex::new(TxnFootprint {
                        reads: Vec::new(),
                        written: Vec::new(),
                    }))
                })
                .collect(),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// Reads `key` as transaction `txn` sees it: the write of the highest transaction below
    /// `txn`, else the value before the block, fetched with `storage` the first time any
    /// transaction asks (under the shard's lock, so it is fetched once).
    pub(crate) fn read(
        &self,
        key: &K,
        txn: TxnIndex,
        storage: &(dyn Fn(&K) -> Result<V, StoreError> + Sync),
    ) -> Result<MvRead<V>, StoreError> {
        let mut shard = lock(self.shard(key));
        if let Some(versions) = shard.get(key) {
            match versions.below(txn) {
                Some((writer, Entry::Estimate)) => return Ok(MvRead::Estimate(writer)),
                Some((writer, Entry::Value { incarnation, value })) => {
                    let version = Version {
                        txn: writer,
                        incarnation: *incarnation,
                    };
                    return Ok(MvRead::Value(version, value.clone()));
                }
                None => {
                    if let Some(base) = &versions.base {
                        return Ok(MvRead::Storage(base.clone()));
                    }
                }
            }
        }
        let value = storage(key)?;
        shard.entry(key.clone()).or_default().base = Some(value.clone());
        Ok(MvRead::Storage(value))
    }

    /// Where a read of `key` by `txn` would come from now; `None` for an ESTIMATE.
    fn origin(&self, key: &K, txn: TxnIndex) -> Option<ReadOrigin> {
        let shard = lock(self.shard(key));
        match shard.get(key).and_then(|versions| versions.below(txn)) {
            None => Some(ReadOrigin::Storage),
            Some((_, Entry::Estimate)) => None,
            Some((writer, Entry::Value { incarnation, .. })) => {
                Some(ReadOrigin::Version(Version {
                    txn: writer,
                    incarnation: *incarnation,
                }))
            }
        }
    }

    /// Records a finished incarnation: its writes replace the previous incarnation's, whose
    /// keys not written again are removed; its read set is kept for validation. Returns
    /// whether it wrote a key the previous incarnation did not (then later transactions
    /// must be validated again).
    ///
    /// `reads` and `scratch` are the caller's buffers: `reads` is swapped with the stored
    /// read set and `scratch` used for the written keys, so both come back cleared but with
    /// their capacity, and a worker allocates nothing here once warmed up.
    pub(crate) fn record(
        &self,
        version: Version,
        reads: &mut Vec<(K, ReadOrigin)>,
        write_set: Vec<(K, V)>,
        scratch: &mut Vec<K>,
    ) -> bool {
        let Version { txn, incarnation } = version;
        let Some(footprint) = self.footprints.get(txn) else {
            return false;
        };
        scratch.clear();
        // The last write to a key in the set is the one that counts.
        for (key, value) in write_set.into_iter().rev() {
            if !scratch.contains(&key) {
                lock(self.shard(&key))
                    .entry(key.clone())
                    .or_default()
                    .insert(txn, Entry::Value { incarnation, value });
                scratch.push(key);
            }
        }
        let mut footprint = lock(footprint);
        for key in footprint
            .written
            .iter()
            .filter(|key| !scratch.contains(key))
        {
            if let Some(versions) = lock(self.shard(key)).get_mut(key) {
                versions.remove(txn);
            }
        }
        let wrote_new_location = scratch.iter().any(|key| !footprint.written.contains(key));
        std::mem::swap(&mut footprint.written, scratch);
        std::mem::swap(&mut footprint.reads, reads);
        scratch.clear();
        reads.clear();
        wrote_new_location
    }

    /// Turns the writes of `txn`'s last incarnation into ESTIMATE markers (it was aborted).
    pub(crate) fn convert_writes_to_estimates(&self, txn: TxnIndex) {
        let Some(footprint) = self.footprints.get(txn) else {
            return;
        };
        for key in &lock(footprint).written {
            if let Some(entry) = lock(self.shard(key))
                .get_mut(key)
                .and_then(|versions| versions.get_mut(txn))
            {
                *entry = Entry::Estimate;
            }
        }
    }

    /// Whether every read of `txn`'s last incarnation would still come from the same place
    /// (Algorithm 2's `validate_read_set`): versions are compared, not values.
    pub(crate) fn validate_read_set(&self, txn: TxnIndex) -> bool {
        let Some(footprint) = self.footprints.get(txn) else {
            return false;
        };
        lock(footprint)
            .reads
            .iter()
            .all(|(key, origin)| self.origin(key, txn) == Some(*origin))
    }

    /// The block's writes once every transaction is executed and validated (lazy commit):
    /// for each key written, the last writer's value and the value before the block. Keys
    /// come in no particular order. An ESTIMATE still in place means the block did not
    /// finish, which the caller has ruled out; such a key is reported as `Err`.
    pub(crate) fn into_writes(self) -> Result<Vec<KeyWrite<K, V>>, TxnIndex> {
        let mut writes = Vec::new();
        for shard in self.shards.into_vec() {
            let shard = shard.0.into_inner().unwrap_or_else(PoisonError::into_inner);
            for (key, versions) in shard {
                match versions.writes.last() {
                    None => {}
                    Some((writer, Entry::Estimate)) => return Err(*writer),
                    Some((_, Entry::Value { value, .. })) => writes.push(KeyWrite {
                        key,
                        value: value.clone(),
                        before: versions.base,
                    }),
                }
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(txn: TxnIndex, incarnation: usize) -> Version {
        Version { txn, incarnation }
    }

    /// Every key's value before the block, in these tests.
    const BASE: u32 = 7;

    fn read<K>(memory: &MvMemory<K, u32>, key: &K, txn: TxnIndex) -> MvRead<u32>
    where
        K: Eq + Hash + Clone + Send + Sync,
    {
        memory.read(key, txn, &|_| Ok(BASE)).unwrap()
    }

    fn record<K>(
        memory: &MvMemory<K, u32>,
        version: Version,
        mut reads: Vec<(K, ReadOrigin)>,
        writes: &[(K, u32)],
    ) -> bool
    where
        K: Eq + Hash + Clone + Send + Sync,
    {
        memory.record(version, &mut reads, writes.to_vec(), &mut Vec::new())
    }

    #[test]
    fn reads_see_the_highest_lower_writer() {
        let memory: MvMemory<&str, u32> = MvMemory::new(5);
        assert_eq!(read(&memory, &"a", 3), MvRead::Storage(BASE));
        assert!(record(&memory, v(1, 0), vec![], &[("a", 10)]));
        assert!(record(&memory, v(3, 0), vec![], &[("a", 30), ("b", 31)]));
        assert_eq!(read(&memory, &"a", 0), MvRead::Storage(BASE));
        assert_eq!(read(&memory, &"a", 1), MvRead::Storage(BASE));
        assert_eq!(read(&memory, &"a", 2), MvRead::Value(v(1, 0), 10));
        assert_eq!(read(&memory, &"a", 3), MvRead::Value(v(1, 0), 10));
        assert_eq!(read(&memory, &"a", 4), MvRead::Value(v(3, 0), 30));
        assert_eq!(read(&memory, &"b", 4), MvRead::Value(v(3, 0), 31));
        assert_eq!(read(&memory, &"c", 4), MvRead::Storage(BASE));
    }

    #[test]
    fn estimates_block_readers_until_the_next_incarnation_records() {
        let memory: MvMemory<&str, u32> = MvMemory::new(3);
        record(&memory, v(0, 0), vec![], &[("a", 1), ("b", 2)]);
        memory.convert_writes_to_estimates(0);
        assert_eq!(read(&memory, &"a", 2), MvRead::Estimate(0));
        assert_eq!(read(&memory, &"b", 1), MvRead::Estimate(0));
        // The next incarnation writes only `a`: `b` goes away, nothing new was written.
        assert!(!record(&memory, v(0, 1), vec![], &[("a", 5)]));
        assert_eq!(read(&memory, &"a", 2), MvRead::Value(v(0, 1), 5));
        assert_eq!(read(&memory, &"b", 2), MvRead::Storage(BASE));
        // Writing `b` again is new relative to the last incarnation.
        assert!(record(&memory, v(0, 2), vec![], &[("a", 5), ("b", 6)]));
        // Duplicates in a write set: the last value wins.
        assert!(!record(
            &memory,
            v(0, 3),
            vec![],
            &[("a", 7), ("b", 8), ("a", 9)]
        ));
        assert_eq!(read(&memory, &"a", 1), MvRead::Value(v(0, 3), 9));
    }

    #[test]
    fn validation_compares_versions_not_values() {
        let memory: MvMemory<&str, u32> = MvMemory::new(3);
        record(&memory, v(0, 0), vec![], &[("a", 1)]);
        record(
            &memory,
            v(2, 0),
            vec![
                ("a", ReadOrigin::Version(v(0, 0))),
                ("z", ReadOrigin::Storage),
            ],
            &[],
        );
        assert!(memory.validate_read_set(2));
        // Transaction 1 now writes `z`, which 2 read from storage.
        record(&memory, v(1, 0), vec![], &[("z", 0)]);
        assert!(!memory.validate_read_set(2));
        record(&memory, v(1, 1), vec![], &[]);
        assert!(memory.validate_read_set(2));
        // An ESTIMATE fails validation.
        memory.convert_writes_to_estimates(0);
        assert!(!memory.validate_read_set(2));
        // A new incarnation writing the same value is still another version.
        record(&memory, v(0, 1), vec![], &[("a", 1)]);
        assert!(!memory.validate_read_set(2));
        // A transaction never sees its own writes or later ones.
        record(
            &memory,
            v(2, 1),
            vec![("a", ReadOrigin::Version(v(0, 1)))],
            &[("a", 3)],
        );
        assert!(memory.validate_read_set(2));
        assert_eq!(read(&memory, &"a", 2), MvRead::Value(v(0, 1), 1));
    }

    #[test]
    fn concurrent_writers_on_many_keys() {
        let memory: MvMemory<u32, u32> = MvMemory::new(64);
        std::thread::scope(|scope| {
            for worker in 0..4usize {
                let memory = &memory;
                scope.spawn(move || {
                    for txn in (worker..64).step_by(4) {
                        let writes: Vec<(u32, u32)> = (0..50).map(|k| (k, txn as u32)).collect();
                        record(memory, v(txn, 0), vec![], &writes);
                    }
                });
            }
        });
        for key in 0..50 {
            assert_eq!(read(&memory, &key, 64), MvRead::Value(v(63, 0), 63));
            assert_eq!(read(&memory, &key, 10), MvRead::Value(v(9, 0), 9));
        }
    }
}
