//! Block executors: the [`Executor`] trait every implementation provides, the transaction
//! rules they all share ([`execute_transaction`]), and the sequential executor (the parallel
//! one is in [`crate::parallel`]).
//!
//! An executor is a pure function of the block and the state it reads: it returns receipts
//! and the accounts to write, and never touches storage itself, so two executors can be
//! compared on the same input and must agree byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use lamina_primitives::{Account, Address, Receipt, Transaction, TxFailure, TxOutcome, TxPayload};

use crate::config::{ExecutionConfig, ExecutorKind};
use crate::parallel::ParallelExecutor;
use crate::state::StoreError;

/// Read access to the state a block executes on (the previous height's).
pub trait StateView: Sync {
    /// The account, zeroes when it does not exist.
    fn account(&self, address: &Address) -> Result<Account, StoreError>;
}

impl StateView for BTreeMap<Address, Account> {
    fn account(&self, address: &Address) -> Result<Account, StoreError> {
        Ok(self.get(address).copied().unwrap_or_default())
    }
}

/// What a block's execution depends on besides its transactions and the state.
#[derive(Debug, Clone, Copy)]
pub struct BlockEnv<'a> {
    /// Height of the block.
    pub height: u64,
    /// Who gets the fees.
    pub proposer: Address,
    /// This chain's id; transactions for another chain fail.
    pub chain_id: &'a str,
    /// Flat fee per transaction.
    pub fee_per_transaction: u64,
}

/// The result of executing a block, before it is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockOutput {
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// Accounts whose value changed, with their new value.
    pub writes: BTreeMap<Address, Account>,
    /// Fees collected (credited to the proposer).
    pub fees: u64,
    /// How many receipts are failures.
    pub failed: u32,
}

/// Which of a block's transactions this node has already verified the signature of, so
/// execution can skip that check (ed25519 verification is most of a transfer's cost).
///
/// A flag may only be set for a transaction whose exact hash (`SHA-256(borsh(tx))`, signature
/// included) this node verified as valid, e.g. when its mempool admitted it: the hash pins the
/// bytes, so the answer is already known and skipping the check cannot change any result.
/// Flags are never taken from a peer. A transaction without a flag (index past the end
/// included) is verified at execution as usual.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreVerified<'a>(&'a [bool]);

impl<'a> PreVerified<'a> {
    /// Nothing pre-verified: every signature is checked at execution.
    pub const NONE: PreVerified<'static> = PreVerified(&[]);

    /// `flags[i]`: transaction `i`'s signature was verified valid by this node.
    pub fn new(flags: &'a [bool]) -> Self {
        PreVerified(flags)
    }

    /// Whether transaction `index`'s signature is known to be valid.
    pub fn is_verified(&self, index: usize) -> bool {
        self.0.get(index).copied().unwrap_or(false)
    }
}

/// Executes blocks. Implementations differ in how (one thread, many), never in the result.
pub trait Executor: Send + fmt::Debug {
    /// The name reported in the layer's status.
    fn name(&self) -> &'static str;

    /// Runs `transactions` in order on `state`. Failing transactions get failure receipts;
    /// only a state read error fails the whole block. Signatures are verified except for the
    /// transactions `pre_verified` marks; the result is the same either way.
    fn execute(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        pre_verified: PreVerified<'_>,
        state: &dyn StateView,
    ) -> Result<BlockOutput, StoreError>;
}

/// The executor selected by the config (`kind`, and `threads` for `parallel`).
pub fn executor_for(config: &ExecutionConfig) -> Box<dyn Executor> {
    match config.kind {
        ExecutorKind::Sequential => Box::new(SequentialExecutor),
        ExecutorKind::Parallel => Box::new(ParallelExecutor::new(config.threads())),
    }
}

/// What one transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxEffect {
    /// Its receipt.
    pub receipt: Receipt,
    /// Accounts it changed, with their new value (at most sender and recipient).
    pub writes: Vec<(Address, Account)>,
}

/// Applies the transaction rules to one transaction, reading accounts through `read` (which
/// must see the effects of every earlier transaction of the block). `signature_valid` is
/// passed in so an executor can check signatures up front, in parallel or once per block.
///
/// The rules, in order: an invalid signature, a wrong chain id or a nonce other than the
/// account's fail with no effect; a sender that cannot pay the fee fails but uses its nonce;
/// otherwise the fee is charged and the nonce used, then, unless the sender cannot cover the
/// amount (the fee stays charged):
///
/// - a transfer moves the amount to its recipient, unless the recipient would overflow (the
///   fee stays charged);
/// - a withdrawal burns the amount: it leaves the execution side, to be credited on the
///   settlement ledger. It writes only the sender; its receipt carries no withdrawal id here,
///   the actor numbers successful withdrawals when it commits the block.
pub fn execute_transaction<E>(
    env: &BlockEnv<'_>,
    index: u32,
    transaction: &Transaction,
    signature_valid: bool,
    read: &mut dyn FnMut(&Address) -> Result<Account, E>,
) -> Result<TxEffect, E> {
    let fee = env.fee_per_transaction;
    let effect = |fee: u64, outcome: TxOutcome, writes: Vec<(Address, Account)>| TxEffect {
        receipt: Receipt {
            tx_hash: transaction.hash(),
            height: env.height,
            index,
            fee,
            outcome,
            withdrawal_id: None,
        },
        writes,
    };
    let failed = |failure| TxOutcome::Failed { failure };

    if !signature_valid {
        return Ok(effect(0, failed(TxFailure::InvalidSignature), vec![]));
    }
    if transaction.chain_id != env.chain_id {
        return Ok(effect(0, failed(TxFailure::WrongChainId), vec![]));
    }
    let sender_address = transaction.sender;
    let mut sender = read(&sender_address)?;
    if transaction.nonce != sender.nonce {
        let failure = TxFailure::BadNonce {
            expected: sender.nonce,
            got: transaction.nonce,
        };
        return Ok(effect(0, failed(failure), vec![]));
    }
    // The nonce equals the stored one, which only ever counted executed transactions, so it
    // cannot be u64::MAX in practice; saturating keeps a hostile state from panicking us.
    sender.nonce = sender.nonce.saturating_add(1);
    if sender.balance < fee {
        let failure = TxFailure::CannotPayFee {
            fee,
            balance: sender.balance,
        };
        return Ok(effect(0, failed(failure), vec![(sender_address, sender)]));
    }
    sender.balance -= fee;

    let amount = transaction.value();
    if sender.balance < amount {
        let failure = TxFailure::InsufficientBalance {
            needed: amount,
            available: sender.balance,
        };
        return Ok(effect(fee, failed(failure), vec![(sender_address, sender)]));
    }
    let to = match transaction.payload {
        TxPayload::Transfer { to, .. } => to,
        TxPayload::Withdraw { .. } => {
            sender.balance -= amount;
            return Ok(effect(
                fee,
                TxOutcome::Success,
                vec![(sender_address, sender)],
            ));
        }
    };
    if to == sender_address {
        // Paying oneself moves nothing; only the fee and nonce change.
        return Ok(effect(
            fee,
            TxOutcome::Success,
            vec![(sender_address, sender)],
        ));
    }
    let mut recipient = read(&to)?;
    let Some(credited) = recipient.balance.checked_add(amount) else {
        return Ok(effect(
            fee,
            failed(TxFailure::BalanceOverflow),
            vec![(sender_address, sender)],
        ));
    };
    sender.balance -= amount;
    recipient.balance = credited;
    Ok(effect(
        fee,
        TxOutcome::Success,
        vec![(sender_address, sender), (to, recipient)],
    ))
}

/// Accounts read and written during one block, over the state before it.
pub(crate) struct Overlay<'a> {
    state: &'a dyn StateView,
    /// Address → (value before the block, current value). Hashed rather than ordered: it
    /// is probed several times per transaction, and sorted once, at the end.
    accounts: HashMap<Address, (Account, Account), ahash::RandomState>,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(state: &'a dyn StateView) -> Self {
        Overlay {
            state,
            accounts: HashMap::default(),
        }
    }

    fn read(&mut self, address: &Address) -> Result<Account, StoreError> {
        if let Some((_, current)) = self.accounts.get(address) {
            return Ok(*current);
        }
        let account = self.state.account(address)?;
        self.accounts.insert(*address, (account, account));
        Ok(account)
    }

    fn write(&mut self, address: Address, account: Account) {
        // Every write follows a read of the same address, so the entry exists.
        if let Some((_, current)) = self.accounts.get_mut(&address) {
            *current = account;
        }
    }

    /// Records an account's value before the block and after it, as computed elsewhere
    /// (the parallel executor's merged writes).
    pub(crate) fn preload(&mut self, address: Address, before: Account, after: Account) {
        self.accounts.insert(address, (before, after));
    }

    /// The accounts whose value differs from before the block: writing back an unchanged
    /// value would not change the root, and skipping it keeps the write set minimal.
    pub(crate) fn into_writes(self) -> BTreeMap<Address, Account> {
        self.accounts
            .into_iter()
            .filter(|(_, (before, after))| before != after)
            .map(|(address, (_, after))| (address, after))
            .collect()
    }
}

/// Credits the block's fees to its proposer; a balance at the top saturates rather than
/// failing the block.
pub(crate) fn credit_proposer(
    env: &BlockEnv<'_>,
    fees: u64,
    overlay: &mut Overlay<'_>,
) -> Result<(), StoreError> {
    if fees == 0 {
        return Ok(());
    }
    let mut proposer = overlay.read(&env.proposer)?;
    proposer.balance = proposer.balance.saturating_add(fees);
    overlay.write(env.proposer, proposer);
    Ok(())
}

/// Executes transactions one after another, in block order.
#[derive(Debug, Default, Clone, Copy)]
pub struct SequentialExecutor;

impl Executor for SequentialExecutor {
    fn name(&self) -> &'static str {
        ExecutorKind::Sequential.name()
    }

    fn execute(
        &self,
        env: &BlockEnv<'_>,
        transactions: &[Transaction],
        pre_verified: PreVerified<'_>,
        state: &dyn StateView,
    ) -> Result<BlockOutput, StoreError> {
        let unverified: Vec<usize> = (0..transactions.len())
            .filter(|&index| !pre_verified.is_verified(index))
            .collect();
        let mut signed = vec![true; transactions.len()];
        let verdicts =
            Transaction::verify_signatures(unverified.iter().map(|&index| &transactions[index]));
        for (index, valid) in unverified.into_iter().zip(verdicts) {
            signed[index] = valid;
        }
        execute_in_order(env, transactions, state, &|index, _| signed[index])
    }
}

/// The block's fees and failure count, summed from its receipts.
pub(crate) fn fees_and_failures(receipts: &[Receipt]) -> (u64, u32) {
    receipts
        .iter()
        .fold((0u64, 0u32), |(fees, failed), receipt| {
            let failed = if receipt.outcome == TxOutcome::Success {
                failed
            } else {
                failed.saturating_add(1)
            };
            (fees.saturating_add(receipt.fee), failed)
        })
}

/// The sequential loop: runs `transactions` one after another on `state`, then credits the
/// fees to the proposer. `signature_valid(index, transaction)` says whether a transaction's
/// signature verifies (the parallel executor checks them all up front).
pub(crate) fn execute_in_order(
    env: &BlockEnv<'_>,
    transactions: &[Transaction],
    state: &dyn StateView,
    signature_valid: &dyn Fn(usize, &Transaction) -> bool,
) -> Result<BlockOutput, StoreError> {
    let mut overlay = Overlay::new(state);
    let mut receipts = Vec::with_capacity(transactions.len());
    for (position, transaction) in transactions.iter().enumerate() {
        let index = u32::try_from(position).unwrap_or(u32::MAX);
        let valid = signature_valid(position, transaction);
        let effect = execute_transaction(env, index, transaction, valid, &mut |address| {
            overlay.read(address)
        })?;
        for (address, account) in effect.writes {
            overlay.write(address, account);
        }
        receipts.push(effect.receipt);
    }
    let (fees, failed) = fees_and_failures(&receipts);
    credit_proposer(env, fees, &mut overlay)?;
    Ok(BlockOutput {
        receipts,
        writes: overlay.into_writes(),
        fees,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Keypair;

    const CHAIN: &str = "test-chain";
    const FEE: u64 = 10;

    fn env(proposer: Address) -> BlockEnv<'static> {
        BlockEnv {
            height: 1,
            proposer,
            chain_id: CHAIN,
            fee_per_transaction: FEE,
        }
    }

    fn key(label: &str) -> Keypair {
        Keypair::deterministic(label)
    }

    fn state(accounts: &[(Address, u64)]) -> BTreeMap<Address, Account> {
        accounts
            .iter()
            .map(|&(address, balance)| (address, Account { balance, nonce: 0 }))
            .collect()
    }

    fn run(state: &BTreeMap<Address, Account>, txs: &[Transaction]) -> BlockOutput {
        SequentialExecutor
            .execute(
                &env(key("proposer").address()),
                txs,
                PreVerified::NONE,
                state,
            )
            .unwrap()
    }

    fn run_pre_verified(
        state: &BTreeMap<Address, Account>,
        txs: &[Transaction],
        flags: &[bool],
    ) -> BlockOutput {
        SequentialExecutor
            .execute(
                &env(key("proposer").address()),
                txs,
                PreVerified::new(flags),
                state,
            )
            .unwrap()
    }

    fn failure(receipt: &Receipt) -> Option<TxFailure> {
        match &receipt.outcome {
            TxOutcome::Success => None,
            TxOutcome::Failed { failure } => Some(failure.clone()),
        }
    }

    #[test]
    fn transfer_moves_amount_charges_fee_and_pays_proposer() {
        let (alice, bob) = (key("alice"), key("bob"));
        let proposer = key("proposer").address();
        let state = state(&[(alice.address(), 100)]);
        let tx = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 30);
        let out = run(&state, std::slice::from_ref(&tx));
        assert_eq!(out.receipts.len(), 1);
        let receipt = &out.receipts[0];
        assert_eq!(receipt.outcome, TxOutcome::Success);
        assert_eq!((receipt.fee, receipt.index, receipt.height), (FEE, 0, 1));
        assert_eq!(receipt.tx_hash, tx.hash());
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 60,
                nonce: 1
            }
        );
        assert_eq!(out.writes[&bob.address()].balance, 30);
        assert_eq!(out.writes[&proposer].balance, FEE);
        assert_eq!((out.fees, out.failed), (FEE, 0));
    }

    #[test]
    fn invalid_signature_wrong_chain_and_bad_nonce_change_nothing() {
        let (alice, bob) = (key("alice"), key("bob"));
        let state = state(&[(alice.address(), 100)]);
        let mut forged = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 1);
        forged.sender = bob.address();
        let other_chain = Transaction::transfer("other", &alice, 0, bob.address(), 1);
        let future = Transaction::transfer(CHAIN, &alice, 5, bob.address(), 1);
        let out = run(&state, &[forged, other_chain, future]);
        assert_eq!(failure(&out.receipts[0]), Some(TxFailure::InvalidSignature));
        assert_eq!(failure(&out.receipts[1]), Some(TxFailure::WrongChainId));
        assert_eq!(
            failure(&out.receipts[2]),
            Some(TxFailure::BadNonce {
                expected: 0,
                got: 5
            })
        );
        assert!(out.receipts.iter().all(|r| r.fee == 0));
        assert!(out.writes.is_empty(), "{:?}", out.writes);
        assert_eq!((out.fees, out.failed), (0, 3));
    }

    #[test]
    fn pre_verified_flags_change_nothing_for_valid_signatures() {
        let (alice, bob) = (key("alice"), key("bob"));
        let state = state(&[(alice.address(), 100), (bob.address(), 50)]);
        let txs = [
            Transaction::transfer(CHAIN, &alice, 0, bob.address(), 30),
            Transaction::transfer(CHAIN, &bob, 0, alice.address(), 5),
            Transaction::transfer(CHAIN, &alice, 1, bob.address(), 500),
            Transaction::transfer("other", &alice, 2, bob.address(), 1),
        ];
        let expected = run(&state, &txs);
        for flags in [
            &[true; 4][..],
            &[true, false, true, false],
            &[false, true],
            &[],
        ] {
            assert_eq!(run_pre_verified(&state, &txs, flags), expected, "{flags:?}");
        }
    }

    #[test]
    fn pre_verified_signatures_are_not_checked_again() {
        // The flag replaces the check outright, which is why only the node's own mempool
        // sets it. A corrupted signature marked as verified shows the check was skipped;
        // unmarked, it fails.
        let (alice, bob) = (key("alice"), key("bob"));
        let state = state(&[(alice.address(), 100)]);
        let mut corrupted = Transaction::transfer(CHAIN, &alice, 0, bob.address(), 1);
        corrupted.signature.0[0] ^= 1;
        let txs = [corrupted];
        let skipped = run_pre_verified(&state, &txs, &[true]);
        assert_eq!(skipped.receipts[0].outcome, TxOutcome::Success);
        let checked = run_pre_verified(&state, &txs, &[false]);
        assert_eq!(
            failure(&checked.receipts[0]),
            Some(TxFailure::InvalidSignature)
        );
    }

    #[test]
    fn cannot_pay_fee_uses_the_nonce_only() {
        let (alice, bob) = (key("alice"), key("bob"));
        let state = state(&[(alice.address(), FEE - 1)]);
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &alice, 0, bob.address(), 1)],
        );
        assert_eq!(
            failure(&out.receipts[0]),
            Some(TxFailure::CannotPayFee {
                fee: FEE,
                balance: FEE - 1
            })
        );
        assert_eq!(out.receipts[0].fee, 0);
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: FEE - 1,
                nonce: 1
            }
        );
        assert_eq!(out.writes.len(), 1);
    }

    #[test]
    fn earlier_spend_makes_a_later_transfer_fail_and_the_block_continues() {
        let (alice, bob, carol) = (key("alice"), key("bob"), key("carol"));
        let state = state(&[(alice.address(), 100), (carol.address(), 50)]);
        let txs = [
            Transaction::transfer(CHAIN, &alice, 0, bob.address(), 80),
            // Alice has 100 - 10 - 80 = 10 left: enough for the fee, not for the amount.
            Transaction::transfer(CHAIN, &alice, 1, bob.address(), 5),
            Transaction::transfer(CHAIN, &carol, 0, bob.address(), 20),
        ];
        let out = run(&state, &txs);
        assert_eq!(out.receipts[0].outcome, TxOutcome::Success);
        assert_eq!(
            failure(&out.receipts[1]),
            Some(TxFailure::InsufficientBalance {
                needed: 5,
                available: 0
            })
        );
        assert_eq!(out.receipts[1].fee, FEE);
        assert_eq!(out.receipts[2].outcome, TxOutcome::Success);
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 0,
                nonce: 2
            }
        );
        assert_eq!(out.writes[&bob.address()].balance, 100);
        assert_eq!(out.writes[&carol.address()].balance, 20);
        assert_eq!(out.fees, 3 * FEE);
        assert_eq!(out.writes[&key("proposer").address()].balance, 3 * FEE);
        assert_eq!(out.failed, 1);
    }

    #[test]
    fn recipient_overflow_fails_but_keeps_the_fee() {
        let (alice, bob) = (key("alice"), key("bob"));
        let state = state(&[(alice.address(), 100), (bob.address(), u64::MAX - 5)]);
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &alice, 0, bob.address(), 10)],
        );
        assert_eq!(failure(&out.receipts[0]), Some(TxFailure::BalanceOverflow));
        assert_eq!(out.receipts[0].fee, FEE);
        assert_eq!(out.writes[&alice.address()].balance, 90);
        assert!(!out.writes.contains_key(&bob.address()));
    }

    #[test]
    fn transfer_to_self_only_costs_the_fee() {
        let alice = key("alice");
        let state = state(&[(alice.address(), 100)]);
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &alice, 0, alice.address(), 90)],
        );
        assert_eq!(out.receipts[0].outcome, TxOutcome::Success);
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 90,
                nonce: 1
            }
        );
        // More than is left after the fee still fails, even to oneself.
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &alice, 0, alice.address(), 95)],
        );
        assert!(matches!(
            failure(&out.receipts[0]),
            Some(TxFailure::InsufficientBalance { .. })
        ));
    }

    #[test]
    fn withdraw_burns_the_amount_and_charges_the_fee() {
        let alice = key("alice");
        let proposer = key("proposer").address();
        let ledger_account = key("ledger-account").address();
        let state = state(&[(alice.address(), 100)]);
        let tx = Transaction::withdraw(CHAIN, &alice, 0, ledger_account, 30);
        let out = run(&state, std::slice::from_ref(&tx));
        let receipt = &out.receipts[0];
        assert_eq!(receipt.outcome, TxOutcome::Success);
        assert_eq!(receipt.fee, FEE);
        // Ids are assigned when the block is committed, not by the executor.
        assert_eq!(receipt.withdrawal_id, None);
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 100 - FEE - 30,
                nonce: 1
            }
        );
        // The amount leaves the execution side: only the sender and the fee's proposer are
        // written, nothing is credited to `to` here.
        assert_eq!(out.writes[&proposer].balance, FEE);
        assert_eq!(out.writes.len(), 2);
        assert!(!out.writes.contains_key(&ledger_account));
    }

    #[test]
    fn withdraw_beyond_the_balance_fails_and_only_the_fee_is_charged() {
        let alice = key("alice");
        let ledger_account = key("ledger-account").address();
        let state = state(&[(alice.address(), 100)]);
        let out = run(
            &state,
            &[
                Transaction::withdraw(CHAIN, &alice, 0, ledger_account, 91),
                // Exactly what is left after both fees: succeeds.
                Transaction::withdraw(CHAIN, &alice, 1, ledger_account, 80),
            ],
        );
        assert_eq!(
            failure(&out.receipts[0]),
            Some(TxFailure::InsufficientBalance {
                needed: 91,
                available: 90
            })
        );
        assert_eq!(out.receipts[0].fee, FEE);
        assert_eq!(out.receipts[1].outcome, TxOutcome::Success);
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 0,
                nonce: 2
            }
        );
        assert_eq!((out.fees, out.failed), (2 * FEE, 1));

        // Alone, the failed withdrawal costs the fee and the nonce, nothing more.
        let out = run(
            &state,
            &[Transaction::withdraw(CHAIN, &alice, 0, ledger_account, 91)],
        );
        assert_eq!(
            out.writes[&alice.address()],
            Account {
                balance: 100 - FEE,
                nonce: 1
            }
        );
    }

    #[test]
    fn proposer_credit_saturates() {
        let alice = key("alice");
        let proposer = key("proposer").address();
        let state = state(&[(alice.address(), 100), (proposer, u64::MAX - 1)]);
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &alice, 0, alice.address(), 0)],
        );
        assert_eq!(out.writes[&proposer].balance, u64::MAX);
        assert_eq!(out.fees, FEE);
    }

    #[test]
    fn proposer_can_spend_in_its_own_block_before_the_credit() {
        let proposer = key("proposer");
        let bob = key("bob");
        let state = state(&[(proposer.address(), 15)]);
        let out = run(
            &state,
            &[Transaction::transfer(CHAIN, &proposer, 0, bob.address(), 5)],
        );
        assert_eq!(out.receipts[0].outcome, TxOutcome::Success);
        // 15 - 10 fee - 5 amount + 10 fee credited at the end of the block.
        assert_eq!(out.writes[&proposer.address()].balance, FEE);
    }
}
