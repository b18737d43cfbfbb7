//! Fixtures shared by the unit and property tests: keys, parameters, a model of what
//! execution produces (output roots and a fixed list of withdrawals) and message builders.

use lamina_primitives::bridge::{
    self, Challenge, ChallengeData, Claim, ClaimData, Deposit, DepositData, FinalizeWithdrawal,
    OutputPreimage, Withdrawal, OUTPUT_VERSION,
};
use lamina_primitives::interfaces::settlement::SettlementMessage;
use lamina_primitives::{Address, Hash, Keypair};

use super::{LedgerEvent, OptimisticLedger, OptimisticParams, OutputOracle};

pub(super) const CHAIN: &str = "optimistic-test";

pub(super) fn proposer() -> Keypair {
    Keypair::deterministic("optimistic-proposer")
}

pub(super) fn alice() -> Keypair {
    Keypair::deterministic("optimistic-alice")
}

pub(super) fn bob() -> Keypair {
    Keypair::deterministic("optimistic-bob")
}

pub(super) fn carol() -> Keypair {
    Keypair::deterministic("optimistic-carol")
}

/// Window 4, two heights per batch, bond 100, 40% reward.
pub(super) fn params() -> OptimisticParams {
    OptimisticParams {
        challenge_window: 4,
        batch_size: 2,
        bond: 100,
        proposers: vec![proposer().address()],
        claim_timeout: 3,
        challenger_reward_percent: 40,
    }
}

/// Proposer, alice and bob hold 1000 each; carol nothing.
pub(super) fn ledger() -> OptimisticLedger {
    ledger_with(params())
}

pub(super) fn ledger_with(params: OptimisticParams) -> OptimisticLedger {
    OptimisticLedger::new(
        params,
        [
            (proposer().address(), 1000),
            (alice().address(), 1000),
            (bob().address(), 1000),
        ],
    )
    .unwrap()
}

/// What execution produces: the withdrawals made so far and each batch's output.
#[derive(Debug, Clone)]
pub(super) struct World {
    pub(super) batch_size: u64,
    pub(super) withdrawals: Vec<Withdrawal>,
}

impl World {
    /// Withdrawals 0..4 to carol, alice, bob and carol; two become visible per batch.
    pub(super) fn new(batch_size: u64) -> World {
        let from = Keypair::deterministic("execution-account").address();
        let to = [carol(), alice(), bob(), carol()];
        let amounts = [50, 70, 30, 20];
        World {
            batch_size,
            withdrawals: (0..4)
                .map(|id| Withdrawal {
                    id: id as u64,
                    from,
                    to: to[id].address(),
                    amount: amounts[id],
                })
                .collect(),
        }
    }

    /// Withdrawals made up to the end of `batch`: two per batch.
    pub(super) fn visible(&self, batch: u64) -> &[Withdrawal] {
        let n = usize::try_from(batch.saturating_add(1).saturating_mul(2))
            .unwrap_or(usize::MAX)
            .min(self.withdrawals.len());
        &self.withdrawals[..n]
    }

    pub(super) fn batch_of(&self, last_height: u64) -> u64 {
        (last_height / self.batch_size).saturating_sub(1)
    }

    /// The true output of `batch`.
    pub(super) fn preimage(&self, batch: u64) -> OutputPreimage {
        OutputPreimage {
            version: OUTPUT_VERSION,
            state_root: Hash::digest_parts(&[b"state", &batch.to_le_bytes()]),
            withdrawals_root: bridge::withdrawals_root(self.visible(batch)),
            last_block_hash: Hash::digest_parts(&[b"block", &batch.to_le_bytes()]),
            data_root: Hash::digest_parts(&[b"data", &batch.to_le_bytes()]),
        }
    }

    /// A wrong output of `batch`: another state root over the same withdrawals, so
    /// withdrawals can be proven against it too when a lying oracle lets it finalize.
    pub(super) fn bad_preimage(&self, batch: u64) -> OutputPreimage {
        OutputPreimage {
            state_root: Hash::digest_parts(&[b"bad-state", &batch.to_le_bytes()]),
            ..self.preimage(batch)
        }
    }

    pub(super) fn good(&self, batch: u64) -> Hash {
        self.preimage(batch).output_root()
    }

    pub(super) fn bad(&self, batch: u64) -> Hash {
        self.bad_preimage(batch).output_root()
    }

    /// An oracle that has executed up to `executed` and answers the true outputs.
    pub(super) fn oracle(&self, executed: u64) -> impl OutputOracle + '_ {
        move |_first: u64, last: u64| (last <= executed).then(|| self.good(self.batch_of(last)))
    }

    /// A valid finalization of withdrawal `id` against `batch` (with its true output).
    pub(super) fn finalize(&self, batch: u64, id: u64) -> FinalizeWithdrawal {
        let visible = self.visible(batch);
        FinalizeWithdrawal {
            batch,
            withdrawal: self.withdrawals[id as usize],
            preimage: self.preimage(batch),
            proof: bridge::withdrawal_proof(visible, id).unwrap(),
        }
    }
}

/// An oracle that has executed nothing.
pub(super) fn blind() -> impl OutputOracle {
    |_first: u64, _last: u64| None
}

pub(super) fn claim_as(
    key: &Keypair,
    batch: u64,
    attempt: u32,
    range: (u64, u64),
    output_root: Hash,
    bond: u64,
) -> SettlementMessage {
    SettlementMessage::Claim(Claim::sign(
        CHAIN,
        key,
        ClaimData {
            batch,
            attempt,
            first_height: range.0,
            last_height: range.1,
            output_root,
            bond,
        },
    ))
}

/// The proposer's claim of `batch` with the test parameters.
pub(super) fn claim(batch: u64, attempt: u32, output_root: Hash) -> SettlementMessage {
    let p = params();
    claim_as(
        &proposer(),
        batch,
        attempt,
        p.batch_range(batch),
        output_root,
        p.bond,
    )
}

pub(super) fn challenge(
    key: &Keypair,
    batch: u64,
    attempt: u32,
    output_root: Hash,
) -> SettlementMessage {
    SettlementMessage::Challenge(Challenge::sign(
        CHAIN,
        key,
        ChallengeData {
            batch,
            attempt,
            output_root,
        },
    ))
}

pub(super) fn deposit(key: &Keypair, to: Address, amount: u64, nonce: u64) -> SettlementMessage {
    SettlementMessage::Deposit(Deposit::sign(CHAIN, key, DepositData { to, amount, nonce }))
}

/// Applies block `height` and returns its events.
pub(super) fn apply(
    ledger: &mut OptimisticLedger,
    height: u64,
    messages: &[SettlementMessage],
    oracle: &dyn OutputOracle,
) -> Vec<LedgerEvent> {
    ledger.apply_block(height, messages, CHAIN, oracle).unwrap()
}

/// Applies empty blocks up to and including `to`, returning their events.
pub(super) fn advance(
    ledger: &mut OptimisticLedger,
    to: u64,
    oracle: &dyn OutputOracle,
) -> Vec<LedgerEvent> {
    let mut events = Vec::new();
    while ledger.applied_height() < to {
        let height = ledger.applied_height() + 1;
        events.extend(apply(ledger, height, &[], oracle));
    }
    events
}

/// The reasons of the block's skipped messages, by position.
pub(super) fn skipped(events: &[LedgerEvent]) -> Vec<(u64, super::SkipReason)> {
    events
        .iter()
        .filter_map(|event| match event {
            LedgerEvent::Skipped {
                index_in_block,
                reason,
            } => Some((*index_in_block, *reason)),
            _ => None,
        })
        .collect()
}
