//! The multi-version memory of Block-STM (arXiv 2203.06871, Algorithm 2): for every state key,
//! the value each transaction of the block wrote to it, tagged with the incarnation that wrote
//! it, or an ESTIMATE marker where that incarnation was aborted.
//!
//! A read by transaction `i` sees the write of the highest transaction below `i`, or the
//! state before the block when there is none. Keys are generic, so new transaction kinds
//! (with read and write sets only known while they run) need no change here.
//!
//! The map is split into shards, each a `Mutex<HashMap<K, BTreeMap<TxnIndex, Entry>>>`, so
//! threads touching different keys rarely meet on a lock.

use ahash::RandomState;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use super::scheduler::Version;
use super::{lock, Padded, TxnIndex};

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
    /// No earlier transaction wrote the key: read the state before the block.
    Storage,
    /// The value written by this earlier incarnation.
    Value(Version, V),
    /// An earlier transaction's write is an ESTIMATE: wait for that transaction.
    Estimate(TxnIndex),
}

type Shard<K, V> = Mutex<HashMap<K, Versions<V>, RandomState>>;

/// The writes to one key, sorted by transaction index. Most keys are written by one or two
/// transactions of a block, so a sorted vector beats a tree (no node allocation per key).
#[derive(Debug)]
struct Versions<V>(Vec<(TxnIndex, Entry<V>)>);

impl<V> Default for Versions<V> {
    fn default() -> Self {
        Versions(Vec::new())
    }
}

impl<V> Versions<V> {
    /// The write of the highest transaction below `txn`.
    fn below(&self, txn: TxnIndex) -> Option<(TxnIndex, &Entry<V>)> {
        let end = self.0.partition_point(|(writer, _)| *writer < txn);
        end.checked_sub(1)
            .and_then(|last| self.0.get(last))
            .map(|(writer, entry)| (*writer, entry))
    }

    fn insert(&mut self, txn: TxnIndex, entry: Entry<V>) {
        match self.0.binary_search_by_key(&txn, |(writer, _)| *writer) {
            Ok(position) => self.0[position].1 = entry,
            Err(position) => self.0.insert(position, (txn, entry)),
        }
    }

    fn remove(&mut self, txn: TxnIndex) {
        if let Ok(position) = self.0.binary_search_by_key(&txn, |(writer, _)| *writer) {
            self.0.remove(position);
        }
    }

    fn get_mut(&mut self, txn: TxnIndex) -> Option<&mut Entry<V>> {
        let position = self
            .0
            .binary_search_by_key(&txn, |(writer, _)| *writer)
            .ok()?;
        self.0.get_mut(position).map(|(_, entry)| entry)
    }
}

/// A read set, shared with the validators reading it while a new one is recorded.
type ReadSlot<K> = Mutex<Arc<[(K, ReadOrigin)]>>;

/// The multi-version memory of one block.
#[derive(Debug)]
pub(crate) struct MvMemory<K, V> {
    shards: Box<[Padded<Shard<K, V>>]>,
    hasher: RandomState,
    /// Keys written by each transaction's last recorded incarnation.
    last_written: Box<[Padded<Mutex<Vec<K>>>]>,
    /// Keys read by each transaction's last recorded incarnation, and where each came from.
    last_read: Box<[Padded<ReadSlot<K>>]>,
}

/// Shards of the map: enough that a few dozen threads rarely share one.
const SHARDS: usize = 128;

impl<K, V> MvMemory<K, V>
where
    K: Eq + Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// An empty memory for a block of `num_txns` transactions.
    pub(crate) fn new(num_txns: usize) -> Self {
        MvMemory {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(HashMap::default())))
                .collect(),
            hasher: RandomState::new(),
            last_written: (0..num_txns)
                .map(|_| Padded(Mutex::new(Vec::new())))
                .collect(),
            last_read: (0..num_txns)
                .map(|_| Padded(Mutex::new(Arc::from(Vec::new()))))
                .collect(),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        // The modulo keeps the index in bounds; SHARDS is not zero.
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[index]
    }

    /// The value of `key` as transaction `txn` sees it: the write of the highest transaction
    /// below `txn`.
    pub(crate) fn read(&self, key: &K, txn: TxnIndex) -> MvRead<V> {
        let shard = lock(self.shard(key));
        let Some((writer, entry)) = shard.get(key).and_then(|versions| versions.below(txn)) else {
            return MvRead::Storage;
        };
        match entry {
            Entry::Estimate => MvRead::Estimate(writer),
            Entry::Value { incarnation, value } => MvRead::Value(
                Version {
                    txn: writer,
                    incarnation: *incarnation,
                },
                value.clone(),
            ),
        }
    }

    /// Where a read of `key` by `txn` would come from now (`None`: an ESTIMATE), without
    /// copying the value.
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

    /// Records what an incarnation read and wrote: its writes replace the previous
    /// incarnation's (keys no longer written are removed). Returns whether it wrote a key the
    /// previous incarnation did not, which invalidates every later transaction's validation.
    pub(crate) fn record(
        &self,
        version: Version,
        read_set: Vec<(K, ReadOrigin)>,
        write_set: &[(K, V)],
    ) -> bool {
        let Version { txn, incarnation } = version;
        let (Some(last_written), Some(last_read)) =
            (self.last_written.get(txn), self.last_read.get(txn))
        else {
            return false;
        };
        // Each key once, with its last value: publishing an earlier value of a key written
        // twice, even for a moment, would let a reader see it under this same version.
        // Write sets are small (a transfer writes two keys): linear scans beat hashing here.
        // A transaction kind with large write sets would want a set instead.
        let mut written: Vec<K> = Vec::with_capacity(write_set.len());
        for (key, value) in write_set.iter().rev() {
            if !written.contains(key) {
                lock(self.shard(key))
                    .entry(key.clone())
                    .or_default()
                    .insert(
                        txn,
                        Entry::Value {
                            incarnation,
                            value: value.clone(),
                        },
                    );
                written.push(key.clone());
            }
        }
        // Same lock order as `convert_writes_to_estimates`: the transaction's slot, then shards.
        let mut previous = lock(last_written);
        for key in previous.iter().filter(|key| !written.contains(key)) {
            if let Some(versions) = lock(self.shard(key)).get_mut(key) {
                versions.remove(txn);
            }
        }
        let wrote_new_location = written.iter().any(|key| !previous.contains(key));
        *previous = written;
        drop(previous);
        *lock(last_read) = Arc::from(read_set);
        wrote_new_location
    }

    /// Turns the writes of `txn`'s last incarnation into ESTIMATEs (it was just aborted).
    pub(crate) fn convert_writes_to_estimates(&self, txn: TxnIndex) {
        let Some(last_written) = self.last_written.get(txn) else {
            return;
        };
        for key in lock(last_written).iter() {
            if let Some(entry) = lock(self.shard(key))
                .get_mut(key)
                .and_then(|versions| versions.get_mut(txn))
            {
                *entry = Entry::Estimate;
            }
        }
    }

    /// Whether every read of `txn`'s last incarnation would still find the same version.
    pub(crate) fn validate_read_set(&self, txn: TxnIndex) -> bool {
        let Some(last_read) = self.last_read.get(txn) else {
            return false;
        };
        let reads = Arc::clone(&lock(last_read));
        reads
            .iter()
            .all(|(key, origin)| self.origin(key, txn) == Some(*origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(txn: TxnIndex, incarnation: usize) -> Version {
        Version { txn, incarnation }
    }

    #[test]
    fn reads_see_the_highest_lower_writer() {
        let memory: MvMemory<&str, u64> = MvMemory::new(5);
        assert_eq!(memory.read(&"a", 3), MvRead::Storage);
        assert!(memory.record(v(1, 0), vec![], &[("a", 10)]));
        assert!(memory.record(v(3, 0), vec![], &[("a", 30), ("b", 31)]));
        assert_eq!(memory.read(&"a", 0), MvRead::Storage);
        assert_eq!(memory.read(&"a", 1), MvRead::Storage);
        assert_eq!(memory.read(&"a", 2), MvRead::Value(v(1, 0), 10));
        assert_eq!(memory.read(&"a", 3), MvRead::Value(v(1, 0), 10));
        assert_eq!(memory.read(&"a", 4), MvRead::Value(v(3, 0), 30));
        assert_eq!(memory.read(&"b", 4), MvRead::Value(v(3, 0), 31));
        assert_eq!(memory.read(&"c", 4), MvRead::Storage);
    }

    #[test]
    fn estimates_block_readers_until_the_next_incarnation_records() {
        let memory: MvMemory<&str, u64> = MvMemory::new(3);
        memory.record(v(0, 0), vec![], &[("a", 1), ("b", 2)]);
        memory.convert_writes_to_estimates(0);
        assert_eq!(memory.read(&"a", 2), MvRead::Estimate(0));
        assert_eq!(memory.read(&"b", 1), MvRead::Estimate(0));
        // The next incarnation writes only `a`: `b` goes away, nothing new was written.
        assert!(!memory.record(v(0, 1), vec![], &[("a", 5)]));
        assert_eq!(memory.read(&"a", 2), MvRead::Value(v(0, 1), 5));
        assert_eq!(memory.read(&"b", 2), MvRead::Storage);
        // Writing `b` again is new relative to the last incarnation.
        assert!(memory.record(v(0, 2), vec![], &[("a", 5), ("b", 6)]));
        // Duplicates in a write set: the last value wins.
        assert!(!memory.record(v(0, 3), vec![], &[("a", 7), ("b", 8), ("a", 9)]));
        assert_eq!(memory.read(&"a", 1), MvRead::Value(v(0, 3), 9));
    }

    #[test]
    fn validation_compares_versions_not_values() {
        let memory: MvMemory<&str, u64> = MvMemory::new(3);
        memory.record(v(0, 0), vec![], &[("a", 1)]);
        memory.record(
            v(2, 0),
            vec![
                ("a", ReadOrigin::Version(v(0, 0))),
                ("z", ReadOrigin::Storage),
            ],
            &[],
        );
        assert!(memory.validate_read_set(2));
        // Transaction 1 now writes `z`, which 2 read from storage.
        memory.record(v(1, 0), vec![], &[("z", 0)]);
        assert!(!memory.validate_read_set(2));
        memory.record(v(1, 1), vec![], &[]);
        assert!(memory.validate_read_set(2));
        // An ESTIMATE fails validation.
        memory.convert_writes_to_estimates(0);
        assert!(!memory.validate_read_set(2));
        // A new incarnation writing the same value is still another version.
        memory.record(v(0, 1), vec![], &[("a", 1)]);
        assert!(!memory.validate_read_set(2));
        // A transaction never sees its own writes or later ones.
        memory.record(
            v(2, 1),
            vec![("a", ReadOrigin::Version(v(0, 1)))],
            &[("a", 3)],
        );
        assert!(memory.validate_read_set(2));
        assert_eq!(memory.read(&"a", 2), MvRead::Value(v(0, 1), 1));
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
                        memory.record(v(txn, 0), vec![], &writes);
                    }
                });
            }
        });
        for key in 0..50 {
            assert_eq!(memory.read(&key, 64), MvRead::Value(v(63, 0), 63));
            assert_eq!(memory.read(&key, 10), MvRead::Value(v(9, 0), 9));
        }
    }
}
