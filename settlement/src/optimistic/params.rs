//! The fixed parameters of an optimistic settlement ledger.

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::Address;
use serde::{Deserialize, Serialize};

/// The parameters every node of a chain must share: they decide which messages are valid.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimisticParams {
    /// Blocks a claim stays open to challenges after the block that includes it.
    pub challenge_window: u64,
    /// Heights per batch.
    pub batch_size: u64,
    /// The exact bond a claim or a challenge locks.
    pub bond: u64,
    /// The designated proposers: the only accounts whose claims are accepted. Any of them may
    /// claim the next batch and the first valid claim included wins, so a proposer whose
    /// execution is wrong cannot stall settlement: once its claim is rejected, an honest one
    /// claims the batch again.
    pub proposers: Vec<Address>,
    /// Proposers take turns: attempt `a` of batch `b` belongs to the `(b + a) % len`-th of
    /// the proposers in rotation, so nobody races. A proposer whose claim is shown wrong
    /// leaves the rotation for good. If the designated proposer has not claimed
    /// `claim_timeout` blocks after the batch became claimable, any listed proposer may (so
    /// an offline one cannot stall settlement).
    pub claim_timeout: u64,
    /// Share of a slashed bond paid to the winner of the dispute (rounded down); the rest is
    /// burned, so a proposer cannot recover its whole bond by challenging itself through
    /// another account.
    pub challenger_reward_percent: u8,
}

/// Why parameters are unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A window of zero blocks would finalize a claim before anyone could see it.
    #[error("challenge_window must be at least 1 block")]
    ZeroChallengeWindow,
    /// Batches must cover at least one height.
    #[error("batch_size must be at least 1 height")]
    ZeroBatchSize,
    /// Nobody could claim.
    #[error("proposers must name at least one account")]
    NoProposers,
    /// A reward above 100% would mint value.
    #[error("challenger_reward_percent is {0}; it must be at most 100")]
    RewardPercentTooHigh(u8),
}

impl OptimisticParams {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.challenge_window == 0 {
            return Err(ParamsError::ZeroChallengeWindow);
        }
        if self.batch_size == 0 {
            return Err(ParamsError::ZeroBatchSize);
        }
        if self.proposers.is_empty() {
            return Err(ParamsError::NoProposers);
        }
        if self.challenger_reward_percent > 100 {
            return Err(ParamsError::RewardPercentTooHigh(
                self.challenger_reward_percent,
            ));
        }
        Ok(())
    }

    /// The heights `(first, last)` of batch `batch`. Saturates at `u64::MAX`, where a batch
    /// can never be claimed anyway (its last height is never below a block height).
    pub fn batch_range(&self, batch: u64) -> (u64, u64) {
        let first = batch.saturating_mul(self.batch_size).saturating_add(1);
        let last = batch
            .saturating_add(1)
            .saturating_mul(self.batch_size)
            .max(first);
        (first, last)
    }

    /// The batch covering `height` (≥ 1), the inverse of [`batch_range`](Self::batch_range).
    pub fn batch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.batch_size.max(1)
    }

    /// The part of a slashed `amount` paid to the winner: `amount * percent / 100`, rounded
    /// down.
    pub fn reward_of(&self, amount: u64) -> u64 {
        let reward = u128::from(amount) * u128::from(self.challenger_reward_percent.min(100)) / 100;
        // At most `amount`, so it fits.
        u64::try_from(reward).unwrap_or(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> OptimisticParams {
        OptimisticParams {
            challenge_window: 3,
            batch_size: 4,
            bond: 10,
            proposers: vec![Address::default()],
            claim_timeout: 5,
            challenger_reward_percent: 50,
        }
    }

    #[test]
    fn validate_rejects_degenerate_values() {
        assert_eq!(params().validate(), Ok(()));
        let zero_window = OptimisticParams {
            challenge_window: 0,
            ..params()
        };
        assert_eq!(
            zero_window.validate(),
            Err(ParamsError::ZeroChallengeWindow)
        );
        let zero_batch = OptimisticParams {
            batch_size: 0,
            ..params()
        };
        assert_eq!(zero_batch.validate(), Err(ParamsError::ZeroBatchSize));
        let greedy = OptimisticParams {
            challenger_reward_percent: 101,
            ..params()
        };
        assert_eq!(
            greedy.validate(),
            Err(ParamsError::RewardPercentTooHigh(101))
        );
        let all = OptimisticParams {
            challenger_reward_percent: 100,
            ..params()
        };
        assert_eq!(all.validate(), Ok(()));
        let nobody = OptimisticParams {
            proposers: vec![],
            ..params()
        };
        assert_eq!(nobody.validate(), Err(ParamsError::NoProposers));
    }

    #[test]
    fn ranges_and_rewards() {
        let p = params();
        assert_eq!(p.batch_range(0), (1, 4));
        assert_eq!(p.batch_range(2), (9, 12));
        assert_eq!(p.batch_range(u64::MAX), (u64::MAX, u64::MAX));
        for batch in 0..4 {
            let (first, last) = p.batch_range(batch);
            assert_eq!((p.batch_of(first), p.batch_of(last)), (batch, batch));
        }
        assert_eq!(p.reward_of(10), 5);
        assert_eq!(p.reward_of(7), 3);
        assert_eq!(p.reward_of(u64::MAX), u64::MAX / 2);
        let all = OptimisticParams {
            challenger_reward_percent: 100,
            ..p
        };
        assert_eq!(all.reward_of(u64::MAX), u64::MAX);
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_fields() {
        let text = format!(
            "challenge_window = 3\nbatch_size = 4\nbond = 10\nproposers = [\"{}\"]\nclaim_timeout = 5\n\
             challenger_reward_percent = 50\n",
            Address::default()
        );
        assert_eq!(toml::from_str::<OptimisticParams>(&text).unwrap(), params());
        assert!(toml::from_str::<OptimisticParams>(&format!("{text}window = 1\n")).is_err());
    }
}
