//! The mempool: transactions admitted but not yet executed, and the reservations that keep a
//! transaction handed to one proposal out of the next until its height is executed.
//!
//! Plain synchronous code; account state comes from the caller (the latest executed state), so
//! the mempool itself never reads storage.
//!
//! The mempool also answers which of a block's transactions this node has already verified
//! the signature of ([`Mempool::pre_verified`]), so block execution does not verify them a
//! second time: every pending transaction was verified on admission, and a bounded memory
//! keeps the hashes of verified transactions that are not pending (refused after the check,
//! evicted, or dropped unexecuted), which may still arrive in another proposer's block.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use lamina_primitives::interfaces::execution::MempoolRejection;
use lamina_primitives::{Account, Address, Hash, Transaction};

use crate::config::ExecutionConfig;

/// Admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    /// Most transactions held.
    pub max_transactions: usize,
    /// Most encoded bytes held.
    pub max_bytes: usize,
    /// How many nonces past the account's next one are accepted.
    pub nonce_window: u64,
    /// Largest encoded transaction accepted.
    pub max_transaction_bytes: usize,
}

impl From<&ExecutionConfig> for MempoolLimits {
    fn from(config: &ExecutionConfig) -> Self {
        MempoolLimits {
            max_transactions: config.max_mempool_transactions,
            max_bytes: config.max_mempool_bytes,
            nonce_window: config.nonce_window,
            max_transaction_bytes: config.max_transaction_bytes,
        }
    }
}

#[derive(Debug)]
struct Entry {
    transaction: Transaction,
    size: usize,
    /// The height of the proposal this transaction was handed to, until that height executes.
    reserved_for: Option<u64>,
    /// Admission order, and whether the transaction could not run yet when admitted (a nonce
    /// gap): such transactions are the first evicted when the pool is full.
    seq: u64,
    queued: bool,
}

/// Hashes of transactions whose signature verified but which are not pending, at most
/// `capacity` of them, the oldest forgotten first. Only ever filled with hashes this node
/// verified itself, so membership means "signature valid".
#[derive(Debug)]
struct RecentlyVerified {
    capacity: usize,
    order: VecDeque<Hash>,
    hashes: HashSet<Hash>,
}

impl RecentlyVerified {
    fn new(capacity: usize) -> Self {
        RecentlyVerified {
            capacity,
            order: VecDeque::new(),
            hashes: HashSet::new(),
        }
    }

    fn insert(&mut self, hash: Hash) {
        if self.capacity == 0 || !self.hashes.insert(hash) {
            return;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.hashes.remove(&oldest);
            }
        }
    }

    fn contains(&self, hash: &Hash) -> bool {
        self.hashes.contains(hash)
    }
}

#[derive(Debug)]
struct SenderQueue {
    /// When this sender's oldest pending transaction arrived: the order senders are served in.
    arrival: u64,
    by_nonce: BTreeMap<u64, Hash>,
}

/// Pending transactions.
#[derive(Debug)]
pub struct Mempool {
    limits: MempoolLimits,
    chain_id: String,
    fee_per_transaction: u64,
    entries: HashMap<Hash, Entry>,
    senders: HashMap<Address, SenderQueue>,
    /// Height → transactions reserved for a proposal at that height.
    reservations: BTreeMap<u64, HashSet<Hash>>,
    /// Transactions admitted with a nonce gap, by admission order. A full pool evicts the
    /// newest of these to admit a transaction that can run, so nonce-gapped transactions
    /// (which cost their sender nothing until they run) cannot lock everyone else out.
    queued: BTreeSet<(u64, Hash)>,
    /// Verified transactions that are not pending, remembered for [`Mempool::pre_verified`]
    /// (as many as the pool holds, so the memory stays proportional to the pool's).
    recently_verified: RecentlyVerified,
    bytes: usize,
    next_arrival: u64,
    executed_height: u64,
}

impl Mempool {
    /// An empty mempool for `chain_id`, whose state is executed up to `executed_height`.
    pub fn new(
        limits: MempoolLimits,
        chain_id: &str,
        fee_per_transaction: u64,
        executed_height: u64,
    ) -> Self {
        Mempool {
            limits,
            chain_id: chain_id.to_string(),
            fee_per_transaction,
            entries: HashMap::new(),
            senders: HashMap::new(),
            reservations: BTreeMap::new(),
            queued: BTreeSet::new(),
            recently_verified: RecentlyVerified::new(limits.max_transactions),
            bytes: 0,
            next_arrival: 0,
            executed_height,
        }
    }

    /// Transactions pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded bytes pending.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A pending transaction.
    pub fn get(&self, hash: &Hash) -> Option<&Transaction> {
        self.entries.get(hash).map(|entry| &entry.transaction)
    }

    /// Whether this node verified the signature of the transaction with this hash and found
    /// it valid: it is pending (admission verified it), or it is among the last
    /// `max_transactions` verified transactions that were refused after the check, evicted,
    /// or dropped without being executed. The hash covers the signature, so it names exactly
    /// the bytes that were verified.
    pub fn signature_verified(&self, hash: &Hash) -> bool {
        self.entries.contains_key(hash) || self.recently_verified.contains(hash)
    }

    /// For each of a block's transactions, whether its signature is already known to be
    /// valid ([`Mempool::signature_verified`]): the flags block execution takes so it skips
    /// those checks. Call it before [`Mempool::executed`] for the block, which drops the
    /// included transactions.
    pub fn pre_verified(&self, transactions: &[Transaction]) -> Vec<bool> {
        transactions
            .iter()
            .map(|transaction| self.signature_verified(&transaction.hash()))
            .collect()
    }

    /// Checks `transaction` against `account` (its sender's account in the latest executed
    /// state) and the pending set, and admits it.
    pub fn insert(
        &mut self,
        transaction: Transaction,
        account: Account,
    ) -> Result<Hash, MempoolRejection> {
        let (hash, size) = self.precheck(&transaction, &account)?;
        if transaction.verify_signature().is_err() {
            return Err(MempoolRejection::InvalidSignature);
        }
        self.admit_signed(transaction, hash, size, account)
    }

    /// [`Mempool::insert`] for many transactions, each with its sender's account, answered
    /// in order. The signatures that pass the cheap checks are verified as one batch, which
    /// costs about half as much as verifying each.
    pub fn insert_batch(
        &mut self,
        submissions: Vec<(Transaction, Account)>,
    ) -> Vec<Result<Hash, MempoolRejection>> {
        let prechecked: Vec<_> = submissions
            .iter()
            .map(|(transaction, account)| self.precheck(transaction, account))
            .collect();
        let mut signed = Transaction::verify_signatures(
            submissions
                .iter()
                .zip(&prechecked)
                .filter(|(_, checked)| checked.is_ok())
                .map(|((transaction, _), _)| transaction),
        )
        .into_iter();
        submissions
            .into_iter()
            .zip(prechecked)
            .map(|((transaction, account), checked)| {
                let (hash, size) = checked?;
                if !signed.next().unwrap_or(false) {
                    return Err(MempoolRejection::InvalidSignature);
                }
                if self.entries.contains_key(&hash) {
                    // Twice in this batch.
                    return Err(MempoolRejection::AlreadyPending);
                }
                self.admit_signed(transaction, hash, size, account)
            })
            .collect()
    }

    /// The checks that come before the signature's, cheapest first, so that a flood of
    /// duplicates or stale nonces does not cost a signature verification each. Answers the
    /// transaction's hash and encoded size.
    fn precheck(
        &self,
        transaction: &Transaction,
        account: &Account,
    ) -> Result<(Hash, usize), MempoolRejection> {
        // Encoded once for both the size and the hash (`Transaction::hash` is the SHA-256 of
        // these bytes).
        let encoded = transaction.encode();
        let size = encoded.len();
        if size > self.limits.max_transaction_bytes {
            return Err(MempoolRejection::TooLarge {
                size,
                limit: self.limits.max_transaction_bytes,
            });
        }
        if transaction.chain_id != self.chain_id {
            return Err(MempoolRejection::WrongChainId {
                expected: self.chain_id.clone(),
                got: transaction.chain_id.clone(),
            });
        }
        let hash = Hash::digest(&encoded);
        if self.entries.contains_key(&hash) {
            return Err(MempoolRejection::AlreadyPending);
        }
        if transaction.nonce < account.nonce {
            return Err(MempoolRejection::NonceTooLow {
                expected: account.nonce,
                got: transaction.nonce,
            });
        }
        if transaction.nonce >= account.nonce.saturating_add(self.limits.nonce_window) {
            return Err(MempoolRejection::NonceTooHigh {
                expected: account.nonce,
                got: transaction.nonce,
                window: self.limits.nonce_window,
            });
        }
        Ok((hash, size))
    }

    /// Admits a transaction whose signature verified, or remembers that it verified.
    fn admit_signed(
        &mut self,
        transaction: Transaction,
        hash: Hash,
        size: usize,
        account: Account,
    ) -> Result<Hash, MempoolRejection> {
        let admitted = self.admit_verified(transaction, hash, size, account);
        if admitted.is_err() {
            // Refused for now, but the check is done: if the transaction reaches us in a
            // block (another node admitted it), execution need not verify it again.
            self.recently_verified.insert(hash);
        }
        admitted
    }

    /// The admission checks that come after the signature verified: pending nonces, the
    /// balance, and room in the pool.
    fn admit_verified(
        &mut self,
        transaction: Transaction,
        hash: Hash,
        size: usize,
        account: Account,
    ) -> Result<Hash, MempoolRejection> {
        let queue = self.senders.get(&transaction.sender);
        if queue.is_some_and(|q| q.by_nonce.contains_key(&transaction.nonce)) {
            return Err(MempoolRejection::NonceAlreadyPending {
                nonce: transaction.nonce,
            });
        }
        let pending_cost = queue
            .into_iter()
            .flat_map(|q| q.by_nonce.values())
            .filter_map(|hash| self.entries.get(hash))
            .fold(0u64, |sum, entry| {
                sum.saturating_add(self.cost(&entry.transaction))
            });
        let needed = pending_cost.saturating_add(self.cost(&transaction));
        if account.balance < needed {
            return Err(MempoolRejection::InsufficientBalance {
                needed,
                available: account.balance,
            });
        }
        // Runnable: the account's next nonce, or right after a pending runnable transaction.
        let follows_runnable = queue
            .and_then(|q| q.by_nonce.get(&transaction.nonce.wrapping_sub(1)))
            .and_then(|hash| self.entries.get(hash))
            .is_some_and(|previous| !previous.queued);
        let queued = transaction.nonce != account.nonce && !follows_runnable;
        while self.entries.len() >= self.limits.max_transactions
            || self.bytes.saturating_add(size) > self.limits.max_bytes
        {
            let victim = if queued {
                None
            } else {
                self.queued
                    .iter()
                    .rev()
                    .map(|(_, hash)| *hash)
                    .find(|hash| {
                        self.entries
                            .get(hash)
                            .is_some_and(|e| e.reserved_for.is_none())
                    })
            };
            match victim {
                Some(hash) => self.drop_unexecuted(&hash),
                None => {
                    return Err(MempoolRejection::MempoolFull {
                        txs: self.entries.len(),
                        bytes: self.bytes,
                    })
                }
            }
        }

        let arrival = self.next_arrival;
        self.next_arrival += 1;
        if queued {
            self.queued.insert((arrival, hash));
        }
        self.senders
            .entry(transaction.sender)
            .or_insert_with(|| SenderQueue {
                arrival,
                by_nonce: BTreeMap::new(),
            })
            .by_nonce
            .insert(transaction.nonce, hash);
        self.bytes += size;
        self.entries.insert(
            hash,
            Entry {
                transaction,
                size,
                reserved_for: None,
                seq: arrival,
                queued,
            },
        );
        Ok(hash)
    }

    /// What a transaction can take from its sender's balance: amount plus fee.
    fn cost(&self, transaction: &Transaction) -> u64 {
        transaction.value().saturating_add(self.fee_per_transaction)
    }

    /// Takes transactions for the proposal at `height`: for each sender a run of consecutive
    /// nonces from its account nonce (`nonce_of`, `None` to skip the sender), senders served
    /// round-robin in order of arrival, at most `max_transactions` and `max_bytes` encoded
    /// bytes. What is returned is reserved until `height` is executed.
    ///
    /// A transaction reserved for an earlier, not yet executed height is skipped over (the run
    /// continues after it, as the earlier block will have used its nonce); one reserved for
    /// this same height may be handed out again, because a re-proposal at the same height
    /// replaces the first and at most one of them is committed.
    pub fn reap(
        &mut self,
        height: u64,
        max_transactions: usize,
        max_bytes: usize,
        mut nonce_of: impl FnMut(&Address) -> Option<u64>,
    ) -> Vec<Transaction> {
        if height <= self.executed_height || max_transactions == 0 {
            // A proposal at an executed height can never be committed.
            return Vec::new();
        }
        let mut senders: Vec<(&Address, &SenderQueue)> = self.senders.iter().collect();
        senders.sort_by_key(|(_, queue)| queue.arrival);

        let mut runs: Vec<Vec<(Hash, usize)>> = Vec::new();
        for (sender, queue) in senders {
            let Some(mut nonce) = nonce_of(sender) else {
                continue;
            };
            let mut run = Vec::new();
            while let Some(hash) = queue.by_nonce.get(&nonce) {
                let Some(entry) = self.entries.get(hash) else {
                    break;
                };
                match entry.reserved_for {
                    Some(reserved) if reserved != height => {}
                    _ => run.push((*hash, entry.size)),
                }
                let Some(next) = nonce.checked_add(1) else {
                    break;
                };
                nonce = next;
            }
            if !run.is_empty() {
                runs.push(run);
            }
        }

        // Round-robin: each turn a sender contributes its next transaction and goes to the
        // back of the queue.
        let mut queue: VecDeque<std::vec::IntoIter<(Hash, usize)>> =
            runs.into_iter().map(Vec::into_iter).collect();
        let mut taken: Vec<Hash> = Vec::new();
        let mut bytes = 0usize;
        while taken.len() < max_transactions {
            let Some(mut run) = queue.pop_front() else {
                break;
            };
            let Some((hash, size)) = run.next() else {
                continue;
            };
            // A sender whose next transaction does not fit is done: its later nonces would be
            // useless without it. Others may still fit.
            if bytes.saturating_add(size) > max_bytes {
                continue;
            }
            bytes += size;
            taken.push(hash);
            queue.push_back(run);
        }

        let mut out = Vec::with_capacity(taken.len());
        for hash in taken {
            if let Some(entry) = self.entries.get_mut(&hash) {
                entry.reserved_for = Some(height);
                out.push(entry.transaction.clone());
                self.reservations.entry(height).or_default().insert(hash);
            }
        }
        out
    }

    /// Updates the pool after `height` was executed with `transactions`: drops those whose
    /// nonce is now used, included or not (`nonce_of` gives the new account nonce), and
    /// releases reservations for heights up to `height` that were not included.
    ///
    /// An included transaction whose nonce the block did not use (it failed for a nonce gap:
    /// its proposer had skipped a transaction reserved for a proposal that lost) stays
    /// pending: dropping it would open a gap in its sender's queue that nothing refills.
    pub fn executed(
        &mut self,
        height: u64,
        transactions: &[Transaction],
        mut nonce_of: impl FnMut(&Address) -> Option<u64>,
    ) {
        self.executed_height = self.executed_height.max(height);
        // Only senders with a transaction in the block can have a new nonce.
        let mut nonces: BTreeMap<Address, Option<u64>> = BTreeMap::new();
        for transaction in transactions {
            let nonce = *nonces
                .entry(transaction.sender)
                .or_insert_with(|| nonce_of(&transaction.sender));
            // Unknown nonce (storage failed): drop what the block carried, as it most likely
            // ran.
            if nonce.is_none_or(|nonce| transaction.nonce < nonce) {
                self.remove(&transaction.hash());
            }
        }
        for (sender, nonce) in nonces {
            let Some(nonce) = nonce else {
                continue;
            };
            let used: Vec<Hash> = self
                .senders
                .get(&sender)
                .map(|queue| queue.by_nonce.range(..nonce).map(|(_, h)| *h).collect())
                .unwrap_or_default();
            for hash in used {
                self.drop_unexecuted(&hash);
            }
        }
        let later = self.reservations.split_off(&height.saturating_add(1));
        let released = std::mem::replace(&mut self.reservations, later);
        for hash in released.into_values().flatten() {
            if let Some(entry) = self.entries.get_mut(&hash) {
                if entry.reserved_for.is_some_and(|h| h <= height) {
                    entry.reserved_for = None;
                }
            }
        }
    }

    /// Removes a pending transaction that leaves without being executed, remembering that its
    /// signature verified.
    fn drop_unexecuted(&mut self, hash: &Hash) {
        if self.entries.contains_key(hash) {
            self.remove(hash);
            self.recently_verified.insert(*hash);
        }
    }

    fn remove(&mut self, hash: &Hash) {
        let Some(entry) = self.entries.remove(hash) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(entry.size);
        if entry.queued {
            self.queued.remove(&(entry.seq, *hash));
        }
        let sender = entry.transaction.sender;
        if let Some(queue) = self.senders.get_mut(&sender) {
            queue.by_nonce.remove(&entry.transaction.nonce);
            if queue.by_nonce.is_empty() {
                self.senders.remove(&sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Keypair;

    const CHAIN: &str = "test-chain";
    const FEE: u64 = 1;

    fn limits() -> MempoolLimits {
        MempoolLimits::from(&ExecutionConfig::default())
    }

    fn pool(limits: MempoolLimits) -> Mempool {
        Mempool::new(limits, CHAIN, FEE, 0)
    }

    fn key(label: &str) -> Keypair {
        Keypair::deterministic(label)
    }

    fn rich() -> Account {
        Account {
            balance: 1_000_000,
            nonce: 0,
        }
    }

    fn tx(key: &Keypair, nonce: u64, amount: u64) -> Transaction {
        Transaction::transfer(CHAIN, key, nonce, key.address(), amount)
    }

    fn nonces(txs: &[Transaction]) -> Vec<(Address, u64)> {
        txs.iter().map(|t| (t.sender, t.nonce)).collect()
    }

    #[test]
    fn admits_and_counts() {
        let mut pool = pool(limits());
        let alice = key("alice");
        let t = tx(&alice, 0, 5);
        let hash = pool.insert(t.clone(), rich()).unwrap();
        assert_eq!(hash, t.hash());
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.bytes(), t.encode().len());
        assert_eq!(pool.get(&hash), Some(&t));
    }

    #[test]
    fn rejects_oversize() {
        let t = tx(&key("alice"), 0, 5);
        let size = t.encode().len();
        let mut pool = pool(MempoolLimits {
            max_transaction_bytes: size - 1,
            ..limits()
        });
        assert_eq!(
            pool.insert(t, rich()),
            Err(MempoolRejection::TooLarge {
                size,
                limit: size - 1
            })
        );
    }

    #[test]
    fn rejects_wrong_chain_id() {
        let mut pool = pool(limits());
        let alice = key("alice");
        let t = Transaction::transfer("other", &alice, 0, alice.address(), 1);
        assert_eq!(
            pool.insert(t, rich()),
            Err(MempoolRejection::WrongChainId {
                expected: CHAIN.into(),
                got: "other".into()
            })
        );
    }

    #[test]
    fn rejects_bad_signature() {
        let mut pool = pool(limits());
        let mut t = tx(&key("alice"), 0, 1);
        t.payload = lamina_primitives::TxPayload::Transfer {
            to: key("mallory").address(),
            amount: 1,
        };
        assert_eq!(
            pool.insert(t, rich()),
            Err(MempoolRejection::InvalidSignature)
        );
    }

    #[test]
    fn a_batch_gets_the_verdicts_of_inserting_one_by_one() {
        let (alice, bob) = (key("alice"), key("bob"));
        let mut forged = tx(&bob, 0, 1);
        forged.signature.0[0] ^= 1;
        let submissions = vec![
            (tx(&alice, 0, 1), rich()),
            (forged, rich()),
            (tx(&alice, 0, 1), rich()),
            (tx(&alice, 1, 1), rich()),
            (tx(&bob, 0, 1), Account { nonce: 1, ..rich() }),
            (tx(&bob, 1, 1), Account { nonce: 1, ..rich() }),
            (tx(&alice, 0, 2), rich()),
        ];
        let mut one_by_one = pool(limits());
        let expected: Vec<_> = submissions
            .iter()
            .map(|(t, account)| one_by_one.insert(t.clone(), *account))
            .collect();
        assert!(matches!(
            expected[..],
            [
                Ok(_),
                Err(MempoolRejection::InvalidSignature),
                Err(MempoolRejection::AlreadyPending),
                Ok(_),
                Err(MempoolRejection::NonceTooLow { .. }),
                Ok(_),
                Err(MempoolRejection::NonceAlreadyPending { nonce: 0 }),
            ]
        ));
        let mut batched = pool(limits());
        assert_eq!(batched.insert_batch(submissions.clone()), expected);
        let hashes: Vec<Hash> = submissions.iter().map(|(t, _)| t.hash()).collect();
        let verified = |pool: &Mempool| -> Vec<bool> {
            hashes.iter().map(|h| pool.signature_verified(h)).collect()
        };
        assert_eq!(verified(&batched), verified(&one_by_one));
    }

    #[test]
    fn rejects_duplicates_and_replays() {
        let mut pool = pool(limits());
        let alice = key("alice");
        pool.insert(tx(&alice, 3, 1), Account { nonce: 3, ..rich() })
            .unwrap();
        assert_eq!(
            pool.insert(tx(&alice, 3, 1), Account { nonce: 3, ..rich() }),
            Err(MempoolRejection::AlreadyPending)
        );
        assert_eq!(
            pool.insert(tx(&alice, 3, 2), Account { nonce: 3, ..rich() }),
            Err(MempoolRejection::NonceAlreadyPending { nonce: 3 })
        );
        assert_eq!(
            pool.insert(tx(&alice, 2, 1), Account { nonce: 3, ..rich() }),
            Err(MempoolRejection::NonceTooLow {
                expected: 3,
                got: 2
            })
        );
    }

    #[test]
    fn rejects_nonce_beyond_the_window() {
        let mut pool = pool(MempoolLimits {
            nonce_window: 4,
            ..limits()
        });
        let alice = key("alice");
        assert!(pool.insert(tx(&alice, 3, 1), rich()).is_ok());
        assert_eq!(
            pool.insert(tx(&alice, 4, 1), rich()),
            Err(MempoolRejection::NonceTooHigh {
                expected: 0,
                got: 4,
                window: 4
            })
        );
    }

    #[test]
    fn rejects_what_the_balance_cannot_cover_counting_pending() {
        let mut pool = pool(limits());
        let alice = key("alice");
        let account = Account {
            balance: 25,
            nonce: 0,
        };
        // Each costs amount + fee = 11.
        pool.insert(tx(&alice, 0, 10), account).unwrap();
        pool.insert(tx(&alice, 1, 10), account).unwrap();
        assert_eq!(
            pool.insert(tx(&alice, 2, 10), account),
            Err(MempoolRejection::InsufficientBalance {
                needed: 33,
                available: 25
            })
        );
        assert!(pool.insert(tx(&alice, 2, 2), account).is_ok());
    }

    #[test]
    fn a_withdrawal_is_admitted_like_a_transfer_counting_its_amount() {
        let mut pool = pool(limits());
        let alice = key("alice");
        let account = Account {
            balance: 25,
            nonce: 0,
        };
        let withdraw = |nonce, amount| {
            Transaction::withdraw(CHAIN, &alice, nonce, key("l1").address(), amount)
        };
        // A transfer and a withdrawal of 10 each cost amount + fee = 11.
        pool.insert(tx(&alice, 0, 10), account).unwrap();
        pool.insert(withdraw(1, 10), account).unwrap();
        assert_eq!(
            pool.insert(withdraw(2, 10), account),
            Err(MempoolRejection::InsufficientBalance {
                needed: 33,
                available: 25
            })
        );
        assert_eq!(
            pool.insert(withdraw(1, 2), account),
            Err(MempoolRejection::NonceAlreadyPending { nonce: 1 })
        );
        let mut forged = withdraw(2, 1);
        forged.signature.0[0] ^= 1;
        assert_eq!(
            pool.insert(forged, account),
            Err(MempoolRejection::InvalidSignature)
        );
        assert!(pool.insert(withdraw(2, 2), account).is_ok());
    }

    #[test]
    fn rejects_when_full_by_count_or_bytes() {
        let (alice, bob) = (key("alice"), key("bob"));
        let mut by_count = pool(MempoolLimits {
            max_transactions: 1,
            ..limits()
        });
        by_count.insert(tx(&alice, 0, 1), rich()).unwrap();
        assert!(matches!(
            by_count.insert(tx(&bob, 0, 1), rich()),
            Err(MempoolRejection::MempoolFull { txs: 1, .. })
        ));
        let size = tx(&alice, 0, 1).encode().len();
        let mut by_bytes = pool(MempoolLimits {
            max_bytes: size + size / 2,
            ..limits()
        });
        by_bytes.insert(tx(&alice, 0, 1), rich()).unwrap();
        assert_eq!(
            by_bytes.insert(tx(&bob, 0, 1), rich()),
            Err(MempoolRejection::MempoolFull {
                txs: 1,
                bytes: size
            })
        );
    }

    #[test]
    fn a_full_pool_evicts_nonce_gapped_transactions_for_runnable_ones() {
        let (mallory, alice, bob) = (key("mallory"), key("alice"), key("bob"));
        let mut pool = pool(MempoolLimits {
            max_transactions: 3,
            ..limits()
        });
        // Mallory fills the pool with transactions that cannot run (nonces 5.. with 0 unused).
        let gapped: Vec<Transaction> = (5..8).map(|n| tx(&mallory, n, 1)).collect();
        for t in &gapped {
            pool.insert(t.clone(), rich()).unwrap();
        }
        // Another gapped transaction finds the pool full...
        assert!(matches!(
            pool.insert(tx(&bob, 3, 1), rich()),
            Err(MempoolRejection::MempoolFull { .. })
        ));
        // ...but runnable ones evict the newest gapped transactions.
        pool.insert(tx(&alice, 0, 1), rich()).unwrap();
        pool.insert(tx(&alice, 1, 1), rich()).unwrap();
        assert_eq!(pool.len(), 3);
        assert!(pool.get(&gapped[0].hash()).is_some());
        assert!(pool.get(&gapped[1].hash()).is_none());
        assert!(pool.get(&gapped[2].hash()).is_none());
        // With no gapped transaction left to evict, the pool is simply full.
        pool.insert(tx(&bob, 0, 1), rich()).unwrap();
        assert!(matches!(
            pool.insert(tx(&bob, 1, 1), rich()),
            Err(MempoolRejection::MempoolFull { .. })
        ));
    }

    #[test]
    fn reap_takes_contiguous_runs_fairly_and_skips_gaps() {
        let mut pool = pool(limits());
        let (alice, bob, carol) = (key("alice"), key("bob"), key("carol"));
        for nonce in [0, 1, 2] {
            pool.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        for nonce in [0, 1] {
            pool.insert(tx(&bob, nonce, 1), rich()).unwrap();
        }
        // Carol's next nonce is 0 but only 1 is pending: a gap, so none of hers.
        pool.insert(tx(&carol, 1, 1), rich()).unwrap();
        let reaped = pool.reap(1, 100, usize::MAX, |_| Some(0));
        let (a, b) = (alice.address(), bob.address());
        assert_eq!(
            nonces(&reaped),
            vec![(a, 0), (b, 0), (a, 1), (b, 1), (a, 2)]
        );

        // Caps: count, then bytes.
        let mut pool2 = self::pool(limits());
        for nonce in [0, 1, 2] {
            pool2.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        assert_eq!(pool2.reap(1, 2, usize::MAX, |_| Some(0)).len(), 2);
        let size = tx(&alice, 0, 1).encode().len();
        let mut pool3 = self::pool(limits());
        for nonce in [0, 1, 2] {
            pool3.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        assert_eq!(pool3.reap(1, 100, 2 * size + 1, |_| Some(0)).len(), 2);
        assert!(pool3.reap(2, 100, 0, |_| Some(0)).is_empty());
    }

    #[test]
    fn reap_starts_at_the_account_nonce() {
        let mut pool = pool(limits());
        let alice = key("alice");
        for nonce in [0, 1, 2] {
            pool.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        let reaped = pool.reap(1, 100, usize::MAX, |_| Some(1));
        assert_eq!(
            nonces(&reaped),
            vec![(alice.address(), 1), (alice.address(), 2)]
        );
        assert!(pool.reap(2, 100, usize::MAX, |_| None).is_empty());
    }

    #[test]
    fn reserved_transactions_are_not_handed_out_again_until_released() {
        let mut pool = pool(limits());
        let (alice, bob) = (key("alice"), key("bob"));
        for nonce in [0, 1] {
            pool.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        let first = pool.reap(1, 1, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&first), vec![(alice.address(), 0)]);
        // Pipelined proposal at the next height continues after the reserved nonce.
        let second = pool.reap(2, 100, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&second), vec![(alice.address(), 1)]);
        assert!(pool.reap(3, 100, usize::MAX, |_| Some(0)).is_empty());
        // A re-proposal at height 1 may use height 1's reservation again.
        assert_eq!(pool.reap(1, 100, usize::MAX, |_| Some(0)), first);

        // Height 1 executes without Alice's transaction (someone else's block): her nonce is
        // unchanged, and height 1's reservation is released, height 2's is kept.
        pool.insert(tx(&bob, 0, 1), rich()).unwrap();
        let bobs = tx(&bob, 0, 1);
        pool.executed(1, std::slice::from_ref(&bobs), |a| {
            Some(u64::from(*a == bob.address()))
        });
        assert_eq!(pool.len(), 2);
        assert!(pool.get(&bobs.hash()).is_none());
        let again = pool.reap(3, 100, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&again), vec![(alice.address(), 0)]);
        // A proposal for an executed height gets nothing.
        assert!(pool.reap(1, 100, usize::MAX, |_| Some(0)).is_empty());
    }

    #[test]
    fn execution_drops_included_and_used_nonces() {
        let mut pool = pool(limits());
        let alice = key("alice");
        for nonce in [0, 1, 2] {
            pool.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        let reaped = pool.reap(1, 1, usize::MAX, |_| Some(0));
        // The block carried a different transaction with nonce 1 (from elsewhere) too.
        let mut included = reaped.clone();
        included.push(tx(&alice, 1, 7));
        pool.executed(1, &included, |_| Some(2));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.bytes(), tx(&alice, 2, 1).encode().len());
        let next = pool.reap(2, 100, usize::MAX, |_| Some(2));
        assert_eq!(nonces(&next), vec![(alice.address(), 2)]);
        pool.executed(2, &next, |_| Some(3));
        assert!(pool.is_empty());
        assert_eq!(pool.bytes(), 0);
    }

    #[test]
    fn an_included_transaction_whose_nonce_was_not_used_stays_pending() {
        let mut pool = pool(limits());
        let alice = key("alice");
        for nonce in 0..4 {
            pool.insert(tx(&alice, nonce, 1), rich()).unwrap();
        }
        // Nonce 0 is reserved for a proposal at height 1 that lost; the block committed at
        // height 2 carries nonces 1 to 3 without it, so they fail and the nonce stays 0.
        let lost = pool.reap(1, 1, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&lost), vec![(alice.address(), 0)]);
        let skipped = pool.reap(2, 100, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&skipped).len(), 3);
        pool.executed(1, &[], |_| Some(0));
        pool.executed(2, &skipped, |_| Some(0));
        assert_eq!(pool.len(), 4);
        let next = pool.reap(3, 100, usize::MAX, |_| Some(0));
        assert_eq!(nonces(&next).len(), 4);
        // The next block runs them all: all gone.
        pool.executed(3, &next, |_| Some(4));
        assert!(pool.is_empty());
    }

    #[test]
    fn pending_and_reserved_transactions_count_as_verified_until_executed() {
        let mut pool = pool(limits());
        let (alice, bob) = (key("alice"), key("bob"));
        let admitted: Vec<Transaction> = (0..3).map(|n| tx(&alice, n, 1)).collect();
        for t in &admitted {
            pool.insert(t.clone(), rich()).unwrap();
        }
        let unseen = tx(&bob, 0, 1);
        let mut block = admitted.clone();
        block.push(unseen.clone());
        assert_eq!(pool.pre_verified(&block), vec![true, true, true, false]);
        // Reaping reserves transactions but keeps them, so a block built from them is still
        // known when it executes.
        let reaped = pool.reap(1, 2, usize::MAX, |_| Some(0));
        assert_eq!(pool.pre_verified(&reaped), vec![true, true]);
        // Executed transactions leave without being remembered: they are done.
        pool.executed(1, &reaped, |_| Some(2));
        assert_eq!(pool.pre_verified(&block), vec![false, false, true, false]);
    }

    #[test]
    fn a_forged_or_unchecked_transaction_is_never_marked_verified() {
        let mut pool = pool(limits());
        let alice = key("alice");
        let genuine = tx(&alice, 1, 5);
        pool.insert(genuine.clone(), rich()).unwrap();
        // Same sender, nonce and payload, another signature: another hash.
        let mut forged = genuine.clone();
        forged.signature.0[0] ^= 1;
        assert_ne!(forged.hash(), genuine.hash());
        assert_eq!(
            pool.insert(forged.clone(), rich()),
            Err(MempoolRejection::InvalidSignature)
        );
        // Refused before the signature was checked: nothing is known about it.
        let stale = tx(&alice, 0, 5);
        assert!(matches!(
            pool.insert(stale.clone(), Account { nonce: 1, ..rich() }),
            Err(MempoolRejection::NonceTooLow { .. })
        ));
        let other_chain = Transaction::transfer("other", &alice, 2, alice.address(), 1);
        assert!(pool.insert(other_chain.clone(), rich()).is_err());
        assert_eq!(
            pool.pre_verified(&[forged, stale, other_chain, genuine]),
            vec![false, false, false, true]
        );
    }

    #[test]
    fn verified_transactions_that_leave_unexecuted_are_remembered() {
        let (alice, bob, carol, mallory) = (key("alice"), key("bob"), key("carol"), key("mallory"));
        // The memory holds as many hashes as the pool holds transactions: 3.
        let mut pool = pool(MempoolLimits {
            max_transactions: 3,
            ..limits()
        });
        let poor = Account {
            balance: 0,
            nonce: 0,
        };
        // Verified, then refused: the nonce is taken, or the balance is short.
        pool.insert(tx(&alice, 0, 1), rich()).unwrap();
        let same_nonce = tx(&alice, 0, 2);
        assert!(matches!(
            pool.insert(same_nonce.clone(), rich()),
            Err(MempoolRejection::NonceAlreadyPending { .. })
        ));
        let unaffordable = tx(&bob, 0, 1);
        assert!(matches!(
            pool.insert(unaffordable.clone(), poor),
            Err(MempoolRejection::InsufficientBalance { .. })
        ));
        assert_eq!(
            pool.pre_verified(&[same_nonce.clone(), unaffordable.clone()]),
            vec![true, true]
        );
        // A nonce-gapped transaction, evicted when a runnable one needs the room.
        let gapped = tx(&mallory, 5, 1);
        pool.insert(gapped.clone(), rich()).unwrap();
        pool.insert(tx(&alice, 1, 1), rich()).unwrap();
        pool.insert(tx(&carol, 0, 1), rich()).unwrap();
        assert!(pool.get(&gapped.hash()).is_none());
        assert!(pool.signature_verified(&gapped.hash()));
        // Refused by a full pool: remembered, and the oldest hash is forgotten for it.
        let full = tx(&bob, 1, 1);
        assert!(matches!(
            pool.insert(full.clone(), rich()),
            Err(MempoolRejection::MempoolFull { .. })
        ));
        assert_eq!(
            pool.pre_verified(&[
                same_nonce,
                unaffordable.clone(),
                gapped.clone(),
                full.clone()
            ]),
            vec![false, true, true, true]
        );

        // Dropped because a block from elsewhere used its nonce: remembered as well.
        let dropped = tx(&carol, 0, 1);
        let elsewhere = tx(&carol, 0, 9);
        pool.executed(1, std::slice::from_ref(&elsewhere), |_| Some(1));
        assert!(pool.get(&dropped.hash()).is_none());
        assert_eq!(
            pool.pre_verified(&[dropped, elsewhere, unaffordable, gapped, full]),
            vec![true, false, false, true, true]
        );
    }
}
