//! Who proposes at `(height, round)`.
//!
//! Round 0 of each height goes to a validator drawn with probability proportional to its
//! voting power: `SHA-256("LAMINA_BFT_PROPOSER_V1" ‖ height)` is read as a number below the
//! total power and located on the cumulative power of the validators in genesis order. Later
//! rounds of the same height rotate from there through the validators in genesis order.
//!
//! Why both: round 0 decides almost every height, so block production (and its fees) follows
//! voting power over time; the rotation makes a failed round pass the turn to the next
//! validator, so a crashed or faulty proposer costs one round and any `n` consecutive rounds
//! see every validator propose once. The choice needs no state beyond the genesis validator
//! set, so every node computes the same proposer, a restarted node included.

use lamina_primitives::{Address, Hash, ValidatorSet};

/// Domain tag of the proposer draw.
const PROPOSER_TAG: &[u8] = b"LAMINA_BFT_PROPOSER_V1";

/// The proposer of every `(height, round)` of one validator set.
#[derive(Debug, Clone)]
pub struct ProposerSchedule {
    addresses: Vec<Address>,
    /// Cumulative power: `cumulative[i]` is the power of validators `0..=i`.
    cumulative: Vec<u64>,
}

impl ProposerSchedule {
    /// The schedule of `validators` (in genesis order).
    pub fn new(validators: &ValidatorSet) -> Self {
        let mut total: u64 = 0;
        let mut addresses = Vec::with_capacity(validators.len());
        let mut cumulative = Vec::with_capacity(validators.len());
        for validator in validators.validators() {
            total = total.saturating_add(validator.power);
            addresses.push(validator.address);
            cumulative.push(total);
        }
        ProposerSchedule {
            addresses,
            cumulative,
        }
    }

    /// The proposer of `(height, round)`; `None` only for an empty validator set.
    pub fn proposer(&self, height: u64, round: u32) -> Option<Address> {
        let n = self.addresses.len();
        let total = *self.cumulative.last()?;
        let first = if total == 0 {
            0
        } else {
            let digest = Hash::digest_parts(&[PROPOSER_TAG, &height.to_be_bytes()]);
            let mut word = [0u8; 8];
            word.copy_from_slice(&digest.0[..8]);
            // Scales a uniform 64-bit draw to [0, total) without the bias of a remainder.
            let draw = ((u128::from(u64::from_be_bytes(word)) * u128::from(total)) >> 64) as u64;
            self.cumulative.partition_point(|&c| c <= draw)
        };
        let index = (first as u64 + u64::from(round)) % n as u64;
        self.addresses.get(index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Validator;

    fn set(powers: &[u64]) -> ValidatorSet {
        ValidatorSet::new(
            powers
                .iter()
                .enumerate()
                .map(|(i, &power)| Validator {
                    address: Address([i as u8; 32]),
                    power,
                })
                .collect(),
        )
    }

    #[test]
    fn round_zero_follows_power_and_rounds_rotate() {
        let schedule = ProposerSchedule::new(&set(&[1, 2, 7]));
        let mut counts = [0u32; 3];
        for height in 1..=10_000 {
            let proposer = schedule.proposer(height, 0).unwrap();
            counts[proposer.0[0] as usize] += 1;
            // Any three consecutive rounds see each validator once.
            let mut seen: Vec<u8> = (5..8)
                .map(|round| schedule.proposer(height, round).unwrap().0[0])
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, vec![0, 1, 2]);
        }
        // Expected 1000 / 2000 / 7000.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((1750..2250).contains(&counts[1]), "{counts:?}");
        assert!((6700..7300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn deterministic_and_total() {
        let a = ProposerSchedule::new(&set(&[3, 3, 3, 3]));
        let b = ProposerSchedule::new(&set(&[3, 3, 3, 3]));
        for height in 0..50 {
            for round in [0, 1, 2, u32::MAX] {
                assert_eq!(a.proposer(height, round), b.proposer(height, round));
            }
        }
        assert_eq!(ProposerSchedule::new(&set(&[])).proposer(1, 0), None);
        let single = ProposerSchedule::new(&set(&[u64::MAX]));
        assert_eq!(single.proposer(9, 4), Some(Address([0; 32])));
    }
}
