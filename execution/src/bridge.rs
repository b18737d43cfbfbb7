//! The execution side of the bridge: deposits credited before a block's transactions, and the
//! withdrawals tree over the withdrawals its transactions make.
//!
//! Both are kept outside the executors: deposits are credited through a [`StateView`] wrapper
//! the executor reads through, and withdrawal ids are assigned from the receipts it returns,
//! so every executor gives the same result without knowing about the bridge.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use lamina_primitives::bridge::{DepositCredit, Withdrawal};
use lamina_primitives::merkle::{self, MerkleProof};
use lamina_primitives::{Account, Address, Hash, Receipt, Transaction, TxOutcome, TxPayload};

use crate::executor::StateView;
use crate::state::StoreError;

/// The state a block's transactions execute on: the previous height's, with the block's
/// deposits credited.
pub(crate) struct Credited<'a> {
    base: &'a dyn StateView,
    /// Each deposit recipient's account before the block's deposits and after them.
    credited: BTreeMap<Address, (Account, Account)>,
}

impl<'a> Credited<'a> {
    /// Credits `deposits` in order over `base`: each adds its amount to its recipient's
    /// balance (saturating, as a fee credit does), creating the account if absent.
    pub(crate) fn new(
        base: &'a dyn StateView,
        deposits: &[DepositCredit],
    ) -> Result<Self, StoreError> {
        let mut credited: BTreeMap<Address, (Account, Account)> = BTreeMap::new();
        for deposit in deposits {
            let (_, account) = match credited.entry(deposit.to) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let before = base.account(&deposit.to)?;
                    entry.insert((before, before))
                }
            };
            account.balance = account.balance.saturating_add(deposit.amount);
        }
        Ok(Credited { base, credited })
    }

    /// The block's writes: the credited accounts, overlaid by `executed` (the executor's
    /// writes, which win: they were computed from the credited values). A credit that left an
    /// account as it was (an amount of 0) is not written, as an executor skips unchanged
    /// accounts too.
    pub(crate) fn merge(self, executed: BTreeMap<Address, Account>) -> BTreeMap<Address, Account> {
        // Into the executor's map, so a block without deposits copies nothing.
        let mut writes = executed;
        for (address, (before, after)) in self.credited {
            if before != after {
                writes.entry(address).or_insert(after);
            }
        }
        writes
    }
}

impl StateView for Credited<'_> {
    fn account(&self, address: &Address) -> Result<Account, StoreError> {
        match self.credited.get(address) {
            Some((_, account)) => Ok(*account),
            None => self.base.account(address),
        }
    }
}

/// Numbers a block's successful withdrawals `first_id`, `first_id + 1`, ... in block order,
/// records each id in its receipt, and returns the withdrawals. `receipts` are the block's,
/// one per transaction.
pub(crate) fn assign_withdrawal_ids(
    first_id: u64,
    transactions: &[Transaction],
    receipts: &mut [Receipt],
) -> Vec<Withdrawal> {
    let mut withdrawals = Vec::new();
    for (transaction, receipt) in transactions.iter().zip(receipts) {
        let TxPayload::Withdraw { to, amount } = transaction.payload else {
            continue;
        };
        if receipt.outcome != TxOutcome::Success {
            continue;
        }
        // Ids count withdrawals, which are far fewer than u64::MAX.
        let id = first_id.saturating_add(withdrawals.len() as u64);
        receipt.withdrawal_id = Some(id);
        withdrawals.push(Withdrawal {
            id,
            from: transaction.sender,
            to,
            amount,
        });
    }
    withdrawals
}

/// The leaf hashes of every withdrawal so far, in id order: the withdrawals tree, kept in
/// memory so a block's root needs no store reads.
///
/// A block with withdrawals recomputes the root from all the leaves, O(total withdrawals)
/// hashing (twice: for the commit, then on append). That is cheap while withdrawals number
/// in the thousands; if they become numerous, keep an
/// incremental frontier instead (the roots of the perfect subtrees on the tree's right edge,
/// as Certificate Transparency logs do) to append and take the root in O(log n), and serve
/// proofs from stored inner nodes.
#[derive(Debug)]
pub(crate) struct WithdrawalTree {
    leaves: Vec<Hash>,
    /// The root over `leaves`: most blocks make no withdrawal and reuse it.
    root: Hash,
}

fn leaf(withdrawal: &Withdrawal) -> Hash {
    merkle::leaf_hash(&withdrawal.leaf())
}

impl WithdrawalTree {
    /// The tree over `withdrawals`, which must be every withdrawal so far in id order.
    pub(crate) fn new(withdrawals: &[Withdrawal]) -> Self {
        let leaves: Vec<Hash> = withdrawals.iter().map(leaf).collect();
        WithdrawalTree {
            root: merkle::root(&leaves),
            leaves,
        }
    }

    /// Withdrawals so far: the next withdrawal's id.
    pub(crate) fn count(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The root once `added` (the next ids) are appended, without appending them.
    pub(crate) fn root_with(&self, added: &[Withdrawal]) -> Hash {
        if added.is_empty() {
            return self.root;
        }
        let mut leaves = Vec::with_capacity(self.leaves.len() + added.len());
        leaves.extend_from_slice(&self.leaves);
        leaves.extend(added.iter().map(leaf));
        merkle::root(&leaves)
    }

    /// Appends `added` (the next ids), once they are committed; `root` is what
    /// [`WithdrawalTree::root_with`] gave for them, so the tree is not hashed twice.
    pub(crate) fn append(&mut self, added: &[Withdrawal], root: Hash) {
        self.leaves.extend(added.iter().map(leaf));
        self.root = root;
    }

    /// The proof of withdrawal `id` in the tree of the first `count` withdrawals; `None` when
    /// `id` is not in it.
    pub(crate) fn prove(&self, id: u64, count: u64) -> Option<MerkleProof> {
        let count = usize::try_from(count).ok()?;
        let index = usize::try_from(id).ok()?;
        merkle::prove(self.leaves.get(..count)?, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::bridge::{withdrawal_proof, withdrawals_root};
    use lamina_primitives::{Keypair, TxFailure};

    fn withdrawals(ids: std::ops::Range<u64>) -> Vec<Withdrawal> {
        ids.map(|id| Withdrawal {
            id,
            from: Address([1; 32]),
            to: Address([2; 32]),
            amount: id * 3,
        })
        .collect()
    }

    #[test]
    fn the_tree_matches_the_primitives_tree() {
        let all = withdrawals(0..7);
        let mut tree = WithdrawalTree::new(&all[..3]);
        assert_eq!(tree.count(), 3);
        assert_eq!(tree.root_with(&[]), withdrawals_root(&all[..3]));
        assert_eq!(tree.root_with(&all[3..]), withdrawals_root(&all));
        // Taking the root appends nothing.
        assert_eq!(tree.count(), 3);
        tree.append(&all[3..], tree.root_with(&all[3..]));
        assert_eq!(tree.root_with(&[]), withdrawals_root(&all));
        for count in 0..=7u64 {
            for id in 0..8u64 {
                assert_eq!(
                    tree.prove(id, count),
                    withdrawal_proof(&all[..count as usize], id),
                    "id {id}, count {count}"
                );
            }
        }
        assert_eq!(tree.prove(0, 8), None);
    }

    #[test]
    fn deposits_are_credited_in_order_and_merged_under_the_executor_writes() {
        let (a, b, c) = (Address([1; 32]), Address([2; 32]), Address([3; 32]));
        let base: BTreeMap<Address, Account> = [
            (
                a,
                Account {
                    balance: 10,
                    nonce: 4,
                },
            ),
            (
                c,
                Account {
                    balance: u64::MAX - 1,
                    nonce: 0,
                },
            ),
        ]
        .into_iter()
        .collect();
        let deposit = |to, amount| DepositCredit { id: 0, to, amount };
        let view = Credited::new(
            &base,
            &[deposit(a, 5), deposit(b, 7), deposit(a, 1), deposit(c, 9)],
        )
        .unwrap();
        assert_eq!(
            view.account(&a).unwrap(),
            Account {
                balance: 16,
                nonce: 4
            }
        );
        assert_eq!(view.account(&b).unwrap().balance, 7);
        assert_eq!(view.account(&c).unwrap().balance, u64::MAX);
        assert_eq!(view.account(&Address([4; 32])).unwrap(), Account::default());
        let spent = Account {
            balance: 3,
            nonce: 1,
        };
        let writes = view.merge([(b, spent)].into_iter().collect());
        assert_eq!(writes[&a].balance, 16);
        assert_eq!(writes[&b], spent);
        assert_eq!(writes[&c].balance, u64::MAX);
        assert_eq!(writes.len(), 3);

        // A credit of nothing, or one that saturates at the same value, writes nothing.
        let view = Credited::new(&base, &[deposit(Address([5; 32]), 0), deposit(a, 0)]).unwrap();
        assert!(view.merge(BTreeMap::new()).is_empty());
    }

    #[test]
    fn only_successful_withdrawals_get_ids_in_block_order() {
        let key = Keypair::deterministic("withdrawer");
        let to = Address([9; 32]);
        let transactions = [
            Transaction::withdraw("c", &key, 0, to, 5),
            Transaction::transfer("c", &key, 1, to, 5),
            Transaction::withdraw("c", &key, 2, to, 6),
            Transaction::withdraw("c", &key, 3, to, 7),
        ];
        let mut receipts: Vec<Receipt> = transactions
            .iter()
            .enumerate()
            .map(|(index, transaction)| Receipt {
                tx_hash: transaction.hash(),
                height: 1,
                index: index as u32,
                fee: 0,
                outcome: if index == 2 {
                    TxOutcome::Failed {
                        failure: TxFailure::WrongChainId,
                    }
                } else {
                    TxOutcome::Success
                },
                withdrawal_id: None,
            })
            .collect();
        let assigned = assign_withdrawal_ids(4, &transactions, &mut receipts);
        let ids: Vec<Option<u64>> = receipts.iter().map(|r| r.withdrawal_id).collect();
        assert_eq!(ids, [Some(4), None, None, Some(5)]);
        assert_eq!(
            assigned,
            [
                Withdrawal {
                    id: 4,
                    from: key.address(),
                    to,
                    amount: 5
                },
                Withdrawal {
                    id: 5,
                    from: key.address(),
                    to,
                    amount: 7
                }
            ]
        );
    }
}
