//! [`OptimisticLedger`]: the replicated state of optimistic settlement and of the bridge, and
//! the rules that move it one block at a time (see the module documentation of
//! [`crate::optimistic`]).

use std::collections::{BTreeMap, BTreeSet};

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::bridge::{Challenge, Claim, Deposit, FinalizeWithdrawal, RejectedClaim};
use lamina_primitives::interfaces::settlement::{SettlementError, SettlementMessage};
use lamina_primitives::{Address, Hash};

use super::params::OptimisticParams;
use super::types::{
    Batch, BatchStatus, ClaimTarget, LedgerEvent, OptimisticError, QueuedDeposit, RejectReason,
    SkipReason,
};
use super::OutputOracle;

/// The optimistic settlement and bridge ledger. Every node feeds it the same blocks in the
/// same order and gets the same value (given the oracle requirement in the module
/// documentation), so it can be persisted, compared and hashed as one borsh value.
///
/// Structure it keeps: batches `0..finalized_batches` are finalized; batches
/// `finalized_batches..next_batch` are open (pending or challenged); a batch at or above
/// `next_batch`, if present, is the rejected last claim of that index.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OptimisticLedger {
    params: OptimisticParams,
    genesis_supply: u64,
    applied_height: u64,
    balances: BTreeMap<Address, u64>,
    deposit_nonces: BTreeMap<Address, u64>,
    batches: BTreeMap<u64, Batch>,
    finalized_batches: u64,
    next_batch: u64,
    /// Deposits in id (and so height) order up to `next_deposit_id`, minus those pruned.
    deposits: Vec<QueuedDeposit>,
    next_deposit_id: u64,
    total_deposited: u64,
    finalized_withdrawals: BTreeSet<u64>,
    total_withdrawn: u64,
    burned: u64,
    /// Proposers whose claim was shown wrong: out of the rotation.
    jailed: BTreeSet<Address>,
}

impl OptimisticLedger {
    /// A ledger at height 0 with `initial_balances` (an address listed twice gets the sum;
    /// zero balances are not stored). Fails if the parameters are invalid or the balances add
    /// up to more than a `u64`: every amount the ledger handles is part of that total, which
    /// is why its arithmetic cannot overflow.
    pub fn new(
        params: OptimisticParams,
        initial_balances: impl IntoIterator<Item = (Address, u64)>,
    ) -> Result<Self, OptimisticError> {
        params.validate()?;
        let mut balances = BTreeMap::new();
        let mut supply: u64 = 0;
        for (address, amount) in initial_balances {
            supply = supply
                .checked_add(amount)
                .ok_or(OptimisticError::SupplyOverflow)?;
            if amount > 0 {
                *balances.entry(address).or_insert(0) += amount;
            }
        }
        Ok(OptimisticLedger {
            params,
            genesis_supply: supply,
            applied_height: 0,
            balances,
            deposit_nonces: BTreeMap::new(),
            batches: BTreeMap::new(),
            finalized_batches: 0,
            next_batch: 0,
            deposits: Vec::new(),
            next_deposit_id: 0,
            total_deposited: 0,
            finalized_withdrawals: BTreeSet::new(),
            total_withdrawn: 0,
            burned: 0,
            jailed: BTreeSet::new(),
        })
    }

    /// Applies block `height`: its settlement `messages` (every settlement blob's messages,
    /// in block order) one by one, then the time step. `height` must be the next one
    /// (`applied_height + 1`); otherwise nothing changes and the error says which height is
    /// expected. `oracle` is this node's own output roots (see [`OutputOracle`]).
    pub fn apply_block(
        &mut self,
        height: u64,
        messages: &[SettlementMessage],
        chain_id: &str,
        oracle: &dyn OutputOracle,
    ) -> Result<Vec<LedgerEvent>, SettlementError> {
        let expected = self.applied_height.saturating_add(1);
        if height != expected {
            return Err(SettlementError::OutOfOrder {
                expected,
                got: height,
            });
        }
        self.applied_height = height;
        let mut events = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let outcome = match message {
                SettlementMessage::Attestation(_) => Err(SkipReason::WrongMode),
                SettlementMessage::Claim(claim) => self.apply_claim(height, claim, chain_id),
                SettlementMessage::Challenge(challenge) => {
                    self.apply_challenge(height, challenge, chain_id, oracle)
                }
                SettlementMessage::Deposit(deposit) => {
                    self.apply_deposit(height, deposit, chain_id)
                }
                SettlementMessage::FinalizeWithdrawal(finalize) => self.apply_finalize(finalize),
            };
            match outcome {
                Ok(mut produced) => events.append(&mut produced),
                Err(reason) => events.push(LedgerEvent::Skipped {
                    index_in_block: index as u64,
                    reason,
                }),
            }
        }
        self.resolve_open_challenges(height, oracle, &mut events);
        self.finalize_due(height, &mut events);
        Ok(events)
    }

    /// Whether `message` would be accepted if the next block (`applied_height + 1`) carried it
    /// now, and if not the reason it would be skipped: how a node refuses a submitted message
    /// up front with the reason the ledger would give.
    pub fn check(&self, message: &SettlementMessage, chain_id: &str) -> Result<(), SkipReason> {
        let height = self.applied_height.saturating_add(1);
        match message {
            SettlementMessage::Attestation(_) => Err(SkipReason::WrongMode),
            SettlementMessage::Claim(claim) => self.check_claim(height, claim, chain_id),
            SettlementMessage::Challenge(challenge) => {
                self.check_challenge(challenge, chain_id).map(|_| ())
            }
            SettlementMessage::Deposit(deposit) => self.check_deposit(deposit, chain_id),
            SettlementMessage::FinalizeWithdrawal(finalize) => self.check_finalize(finalize),
        }
    }

    /// What the next claim must say, and who may post it when. It is valid in any block
    /// above `last_height`: from its designated proposer at once, from any proposer once
    /// `open_to_all_at` has come.
    pub fn next_claim(&self) -> ClaimTarget {
        let batch = self.next_batch;
        // The entry at `next_batch`, if any, is the rejected previous claim of this index.
        let rejected = self.batches.get(&batch);
        let attempt = rejected.map_or(0, |rejected| rejected.attempt.saturating_add(1));
        let (first_height, last_height) = self.params.batch_range(batch);
        // The turn starts when the batch can first be claimed: once its heights are
        // executable, its predecessor claimed and its previous attempt rejected.
        let previous_claimed = batch
            .checked_sub(1)
            .and_then(|previous| self.batches.get(&previous))
            .map_or(0, |previous| previous.included_at);
        let rejected_at = rejected.map_or(0, |rejected| match rejected.status {
            BatchStatus::Rejected { at, .. } => at,
            _ => 0,
        });
        let turn_starts = last_height
            .saturating_add(1)
            .max(previous_claimed)
            .max(rejected_at);
        ClaimTarget {
            batch,
            attempt,
            first_height,
            last_height,
            designated: self.designated(batch, attempt),
            open_to_all_at: turn_starts.saturating_add(self.params.claim_timeout),
        }
    }

    /// The proposer whose turn it is to claim attempt `attempt` of batch `batch`: the
    /// `(batch + attempt) % len`-th of the proposers not jailed, in listed order (of all of
    /// them if every one is jailed).
    fn designated(&self, batch: u64, attempt: u32) -> Address {
        let mut rotation: Vec<&Address> = self
            .params
            .proposers
            .iter()
            .filter(|p| !self.jailed.contains(*p))
            .collect();
        if rotation.is_empty() {
            rotation = self.params.proposers.iter().collect();
        }
        let len = rotation.len().max(1) as u64;
        let turn = batch.wrapping_add(u64::from(attempt)) % len;
        usize::try_from(turn)
            .ok()
            .and_then(|turn| rotation.get(turn))
            .map(|p| **p)
            .unwrap_or_default()
    }

    /// Proposers out of the rotation because a claim of theirs was shown wrong.
    pub fn jailed(&self) -> &BTreeSet<Address> {
        &self.jailed
    }

    fn check_claim(&self, height: u64, claim: &Claim, chain_id: &str) -> Result<(), SkipReason> {
        // Cheap checks first, so junk costs no signature verification.
        if !self.params.proposers.contains(&claim.proposer) {
            return Err(SkipReason::NotProposer);
        }
        let target = self.next_claim();
        if claim.proposer != target.designated && height < target.open_to_all_at {
            return Err(SkipReason::NotYourTurn {
                designated: target.designated,
                open_to_all_at: target.open_to_all_at,
            });
        }
        if claim.bond != self.params.bond {
            return Err(SkipReason::WrongBond {
                expected: self.params.bond,
            });
        }
        if claim.batch != target.batch {
            return Err(SkipReason::OutOfOrder {
                expected: target.batch,
            });
        }
        if claim.attempt != target.attempt {
            return Err(SkipReason::WrongAttempt {
                expected: target.attempt,
            });
        }
        if (claim.first_height, claim.last_height) != (target.first_height, target.last_height) {
            return Err(SkipReason::WrongRange {
                first: target.first_height,
                last: target.last_height,
            });
        }
        if claim.last_height >= height {
            return Err(SkipReason::NotYetExecuted);
        }
        claim
            .verify(chain_id)
            .map_err(|_| SkipReason::BadSignature)?;
        self.check_balance(&claim.proposer, claim.bond)
    }

    fn apply_claim(
        &mut self,
        height: u64,
        claim: &Claim,
        chain_id: &str,
    ) -> Result<Vec<LedgerEvent>, SkipReason> {
        self.check_claim(height, claim, chain_id)?;
        self.debit(&claim.proposer, claim.bond);
        let deadline = height.saturating_add(self.params.challenge_window);
        // The entry this claim replaces, if any, is the batch's rejected previous claim.
        let rejected_claims = match self.batches.remove(&claim.batch) {
            Some(previous) => {
                let mut history = previous.rejected_claims;
                if let BatchStatus::Rejected { at, reason } = previous.status {
                    history.push(RejectedClaim {
                        attempt: previous.attempt,
                        proposer: previous.proposer,
                        output_root: previous.output_root,
                        included_at: previous.included_at,
                        rejected_at: at,
                        reason,
                    });
                }
                history
            }
            None => Vec::new(),
        };
        self.batches.insert(
            claim.batch,
            Batch {
                index: claim.batch,
                attempt: claim.attempt,
                first_height: claim.first_height,
                last_height: claim.last_height,
                output_root: claim.output_root,
                proposer: claim.proposer,
                bond: claim.bond,
                included_at: height,
                deadline,
                status: BatchStatus::Pending,
                failed_challengers: Vec::new(),
                rejected_claims,
            },
        );
        self.next_batch = self.next_batch.saturating_add(1);
        Ok(vec![LedgerEvent::ClaimPosted {
            batch: claim.batch,
            attempt: claim.attempt,
            output_root: claim.output_root,
            deadline,
        }])
    }

    /// On success, the challenged batch's heights.
    fn check_challenge(
        &self,
        challenge: &Challenge,
        chain_id: &str,
    ) -> Result<(u64, u64), SkipReason> {
        let batch = self
            .batches
            .get(&challenge.batch)
            .ok_or(SkipReason::UnknownBatch)?;
        if batch.status != BatchStatus::Pending {
            return Err(SkipReason::NotPending);
        }
        if (batch.attempt, batch.output_root) != (challenge.attempt, challenge.output_root) {
            return Err(SkipReason::WrongClaim);
        }
        if challenge.challenger == batch.proposer {
            return Err(SkipReason::SelfChallenge);
        }
        if batch.failed_challengers.contains(&challenge.challenger) {
            return Err(SkipReason::AlreadyChallenged);
        }
        challenge
            .verify(chain_id)
            .map_err(|_| SkipReason::BadSignature)?;
        self.check_balance(&challenge.challenger, self.params.bond)?;
        Ok((batch.first_height, batch.last_height))
    }

    fn apply_challenge(
        &mut self,
        height: u64,
        challenge: &Challenge,
        chain_id: &str,
        oracle: &dyn OutputOracle,
    ) -> Result<Vec<LedgerEvent>, SkipReason> {
        let (first, last) = self.check_challenge(challenge, chain_id)?;
        let bond = self.params.bond;
        self.debit(&challenge.challenger, bond);
        let mut events = Vec::new();
        let index = challenge.batch;
        match oracle.output_root(first, last) {
            Some(root) => self.decide(height, index, challenge.challenger, bond, root, &mut events),
            None => {
                if let Some(batch) = self.batches.get_mut(&index) {
                    batch.status = BatchStatus::Challenged {
                        challenger: challenge.challenger,
                        at: height,
                        bond,
                    };
                }
                events.push(LedgerEvent::ChallengeOpen {
                    batch: index,
                    challenger: challenge.challenger,
                });
            }
        }
        Ok(events)
    }

    /// Decides the dispute of open batch `index` by `challenger` (whose `bond` is already
    /// debited) given this node's output root `correct_root`.
    fn decide(
        &mut self,
        height: u64,
        index: u64,
        challenger: Address,
        bond: u64,
        correct_root: Hash,
        events: &mut Vec<LedgerEvent>,
    ) {
        let Some(batch) = self.batches.get_mut(&index) else {
            return;
        };
        if batch.output_root == correct_root {
            batch.status = BatchStatus::Pending;
            batch.failed_challengers.push(challenger);
            let proposer = batch.proposer;
            events.push(LedgerEvent::ChallengeFailed {
                batch: index,
                challenger,
            });
            events.push(self.slash(challenger, bond, proposer));
            return;
        }
        let reason = RejectReason::WrongOutput {
            challenger,
            correct_root,
        };
        batch.status = BatchStatus::Rejected { at: height, reason };
        batch.failed_challengers.clear();
        let (proposer, proposer_bond, attempt) = (batch.proposer, batch.bond, batch.attempt);
        events.push(LedgerEvent::ChallengeUpheld {
            batch: index,
            challenger,
            correct_root,
        });
        self.credit(&challenger, bond);
        events.push(self.slash(proposer, proposer_bond, challenger));
        self.jailed.insert(proposer);
        events.push(LedgerEvent::BatchRejected {
            batch: index,
            attempt,
            reason,
        });
        // Later claims were built on the rejected output; they are rejected without blame.
        let parent = RejectReason::ParentRejected { parent: index };
        for later in index.saturating_add(1)..self.next_batch {
            let Some(batch) = self.batches.get_mut(&later) else {
                continue;
            };
            let previous = batch.status;
            batch.status = BatchStatus::Rejected {
                at: height,
                reason: parent,
            };
            batch.failed_challengers.clear();
            let (proposer, proposer_bond, attempt) = (batch.proposer, batch.bond, batch.attempt);
            self.credit(&proposer, proposer_bond);
            if let BatchStatus::Challenged {
                challenger, bond, ..
            } = previous
            {
                self.credit(&challenger, bond);
            }
            events.push(LedgerEvent::BatchRejected {
                batch: later,
                attempt,
                reason: parent,
            });
        }
        self.next_batch = index;
    }

    /// Distributes a bond already debited from `who`: the reward to `reward_to`, the rest
    /// burned.
    fn slash(&mut self, who: Address, amount: u64, reward_to: Address) -> LedgerEvent {
        let reward = self.params.reward_of(amount);
        let burned = amount.saturating_sub(reward);
        self.credit(&reward_to, reward);
        self.burned = self.burned.saturating_add(burned);
        LedgerEvent::Slashed {
            who,
            amount,
            reward_to,
            reward,
            burned,
        }
    }

    /// Open batches that this node's oracle says are wrong: what a watcher should challenge
    /// (with the batch's index, attempt and output root).
    pub fn disputable(&self, oracle: &dyn OutputOracle) -> Vec<&Batch> {
        self.batches
            .range(self.finalized_batches..self.next_batch)
            .map(|(_, batch)| batch)
            .filter(|batch| batch.status == BatchStatus::Pending)
            .filter(|batch| {
                oracle
                    .output_root(batch.first_height, batch.last_height)
                    .is_some_and(|root| root != batch.output_root)
            })
            .collect()
    }

    fn check_deposit(&self, deposit: &Deposit, chain_id: &str) -> Result<(), SkipReason> {
        if deposit.amount == 0 {
            return Err(SkipReason::ZeroAmount);
        }
        let expected = self.deposit_nonce(&deposit.from);
        if deposit.nonce != expected {
            return Err(SkipReason::BadNonce { expected });
        }
        deposit
            .verify(chain_id)
            .map_err(|_| SkipReason::BadSignature)?;
        self.check_balance(&deposit.from, deposit.amount)
    }

    fn apply_deposit(
        &mut self,
        height: u64,
        deposit: &Deposit,
        chain_id: &str,
    ) -> Result<Vec<LedgerEvent>, SkipReason> {
        self.check_deposit(deposit, chain_id)?;
        self.debit(&deposit.from, deposit.amount);
        self.deposit_nonces
            .insert(deposit.from, deposit.nonce.saturating_add(1));
        let id = self.next_deposit_id;
        self.deposits.push(QueuedDeposit {
            id,
            from: deposit.from,
            to: deposit.to,
            amount: deposit.amount,
            queued_at: height,
        });
        self.next_deposit_id = id.saturating_add(1);
        self.total_deposited = self.total_deposited.saturating_add(deposit.amount);
        Ok(vec![LedgerEvent::DepositQueued {
            id,
            from: deposit.from,
            to: deposit.to,
            amount: deposit.amount,
        }])
    }

    /// The deposits block `height` queued, in id order: what executing `height` credits.
    /// Empty for a height whose deposits were pruned.
    pub fn deposits_queued_at(&self, height: u64) -> impl Iterator<Item = &QueuedDeposit> {
        // Queued in height order, so the ones of one height are contiguous.
        let start = self.deposits.partition_point(|d| d.queued_at < height);
        self.deposits[start..]
            .iter()
            .take_while(move |d| d.queued_at == height)
    }

    /// Forgets the deposits queued at heights up to `height`, once execution has durably
    /// credited them. Memory housekeeping only: no rule reads the queue, so pruning never
    /// changes what a message does (but two ledgers pruned differently no longer compare
    /// equal).
    pub fn prune_deposits_queued_through(&mut self, height: u64) {
        let keep_from = self.deposits.partition_point(|d| d.queued_at <= height);
        self.deposits.drain(..keep_from);
    }

    /// The id the next accepted deposit gets (the number of deposits ever accepted).
    pub fn next_deposit_id(&self) -> u64 {
        self.next_deposit_id
    }

    /// `address`'s next deposit nonce (its number of deposits accepted so far).
    pub fn deposit_nonce(&self, address: &Address) -> u64 {
        self.deposit_nonces.get(address).copied().unwrap_or(0)
    }

    /// Whether `msg` would be accepted now: the same checks, in the same order, as applying
    /// it, so an HTTP front end can refuse a bad one with the reason it would be skipped for.
    pub fn check_finalize(&self, msg: &FinalizeWithdrawal) -> Result<(), SkipReason> {
        let batch = self
            .batches
            .get(&msg.batch)
            .ok_or(SkipReason::UnknownBatch)?;
        if !matches!(batch.status, BatchStatus::Finalized { .. }) {
            return Err(SkipReason::NotFinalized);
        }
        if msg.preimage.output_root() != batch.output_root {
            return Err(SkipReason::WrongPreimage);
        }
        if msg.proof.index != msg.withdrawal.id {
            return Err(SkipReason::ProofIndexMismatch {
                index: msg.proof.index,
                id: msg.withdrawal.id,
            });
        }
        if !msg
            .proof
            .verify(&msg.preimage.withdrawals_root, &msg.withdrawal.leaf())
        {
            return Err(SkipReason::BadProof);
        }
        if self.finalized_withdrawals.contains(&msg.withdrawal.id) {
            return Err(SkipReason::AlreadyFinalized);
        }
        let escrowed = self.escrowed();
        if msg.withdrawal.amount > escrowed {
            return Err(SkipReason::EscrowInsufficient { escrowed });
        }
        Ok(())
    }

    fn apply_finalize(&mut self, msg: &FinalizeWithdrawal) -> Result<Vec<LedgerEvent>, SkipReason> {
        self.check_finalize(msg)?;
        let withdrawal = &msg.withdrawal;
        self.credit(&withdrawal.to, withdrawal.amount);
        self.finalized_withdrawals.insert(withdrawal.id);
        self.total_withdrawn = self.total_withdrawn.saturating_add(withdrawal.amount);
        Ok(vec![LedgerEvent::WithdrawalFinalized {
            id: withdrawal.id,
            batch: msg.batch,
            to: withdrawal.to,
            amount: withdrawal.amount,
        }])
    }

    /// Whether withdrawal `id` was credited.
    pub fn is_withdrawal_finalized(&self, id: u64) -> bool {
        self.finalized_withdrawals.contains(&id)
    }

    fn resolve_open_challenges(
        &mut self,
        height: u64,
        oracle: &dyn OutputOracle,
        events: &mut Vec<LedgerEvent>,
    ) {
        let mut index = self.finalized_batches;
        // `next_batch` shrinks when a resolution rejects a batch, which ends the loop there.
        while index < self.next_batch {
            if let Some(batch) = self.batches.get(&index) {
                if let BatchStatus::Challenged {
                    challenger, bond, ..
                } = batch.status
                {
                    if let Some(root) = oracle.output_root(batch.first_height, batch.last_height) {
                        self.decide(height, index, challenger, bond, root, events);
                    }
                }
            }
            index = index.saturating_add(1);
        }
    }

    fn finalize_due(&mut self, height: u64, events: &mut Vec<LedgerEvent>) {
        while self.finalized_batches < self.next_batch {
            let Some(batch) = self.batches.get_mut(&self.finalized_batches) else {
                break;
            };
            if batch.status != BatchStatus::Pending || batch.deadline > height {
                break;
            }
            batch.status = BatchStatus::Finalized { at: height };
            batch.failed_challengers.clear();
            let (proposer, bond) = (batch.proposer, batch.bond);
            events.push(LedgerEvent::BatchFinalized {
                batch: batch.index,
                last_height: batch.last_height,
                output_root: batch.output_root,
            });
            self.credit(&proposer, bond);
            self.finalized_batches = self.finalized_batches.saturating_add(1);
        }
    }

    fn check_balance(&self, address: &Address, needed: u64) -> Result<(), SkipReason> {
        let balance = self.balance(address);
        if balance < needed {
            return Err(SkipReason::InsufficientBalance { balance, needed });
        }
        Ok(())
    }

    /// Only after `check_balance` passed, so it never saturates.
    fn debit(&mut self, address: &Address, amount: u64) {
        if let Some(balance) = self.balances.get_mut(address) {
            *balance = balance.saturating_sub(amount);
            if *balance == 0 {
                self.balances.remove(address);
            }
        }
    }

    /// Never saturates: every balance is part of the genesis supply, which fits in a `u64`.
    fn credit(&mut self, address: &Address, amount: u64) {
        if amount > 0 {
            let balance = self.balances.entry(*address).or_insert(0);
            *balance = balance.saturating_add(amount);
        }
    }

    /// The parameters.
    pub fn params(&self) -> &OptimisticParams {
        &self.params
    }

    /// The last block applied (0: none yet).
    pub fn applied_height(&self) -> u64 {
        self.applied_height
    }

    /// `address`'s settlement-ledger balance (bonds it has locked are not included).
    pub fn balance(&self, address: &Address) -> u64 {
        self.balances.get(address).copied().unwrap_or(0)
    }

    /// Every non-zero balance.
    pub fn balances(&self) -> &BTreeMap<Address, u64> {
        &self.balances
    }

    /// The latest claim of batch `index`.
    pub fn batch(&self, index: u64) -> Option<&Batch> {
        self.batches.get(&index)
    }

    /// The latest claim of every batch ever claimed, by index.
    pub fn batches(&self) -> &BTreeMap<u64, Batch> {
        &self.batches
    }

    /// The next batch to claim (batches `finalized_batches..` this are open).
    pub fn next_batch(&self) -> u64 {
        self.next_batch
    }

    /// How many batches are finalized (batches `0..` this).
    pub fn finalized_batches(&self) -> u64 {
        self.finalized_batches
    }

    /// The highest finalized batch, whose output root is the settled one.
    pub fn settled_batch(&self) -> Option<&Batch> {
        let last = self.finalized_batches.checked_sub(1)?;
        self.batches.get(&last)
    }

    /// The last height of the highest finalized batch (0: none). Batches finalize only in
    /// index order, so every height up to it is settled.
    pub fn settled_height(&self) -> u64 {
        self.settled_batch().map_or(0, |batch| batch.last_height)
    }

    /// Bonds locked in open batches (proposers' and challengers').
    pub fn locked(&self) -> u64 {
        self.batches
            .range(self.finalized_batches..self.next_batch)
            .fold(0u64, |sum, (_, batch)| sum.saturating_add(batch.locked()))
    }

    /// Value destroyed by slashing.
    pub fn burned(&self) -> u64 {
        self.burned
    }

    /// Value ever deposited to the execution layer.
    pub fn total_deposited(&self) -> u64 {
        self.total_deposited
    }

    /// Value ever credited back by finalized withdrawals.
    pub fn total_withdrawn(&self) -> u64 {
        self.total_withdrawn
    }

    /// What the bridge holds for the execution side: deposited minus withdrawn.
    pub fn escrowed(&self) -> u64 {
        self.total_deposited.saturating_sub(self.total_withdrawn)
    }

    /// The sum of the initial balances.
    pub fn genesis_supply(&self) -> u64 {
        self.genesis_supply
    }

    /// Value on the settlement side: balances plus locked bonds (burned value and value
    /// escrowed for the execution side are not included). With them it adds up to
    /// [`genesis_supply`](Self::genesis_supply).
    pub fn total_supply_settlement_side(&self) -> u64 {
        self.balances
            .values()
            .fold(self.locked(), |sum, balance| sum.saturating_add(*balance))
    }
}
