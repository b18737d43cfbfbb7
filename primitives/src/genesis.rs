//! The genesis file: chain id, validators with their voting power, prefunded accounts and the
//! chain's economic constants. Every node of a chain starts from the same file.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::hash_of;
use crate::types::validate_chain_id;
use crate::{Address, Hash};

/// A validator and its voting power.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Validator {
    /// Its ed25519 public key.
    pub address: Address,
    /// Its voting power (> 0).
    pub power: u64,
}

/// The validators of a chain, in genesis order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
}

impl ValidatorSet {
    /// A set of the given validators.
    pub fn new(validators: Vec<Validator>) -> Self {
        ValidatorSet { validators }
    }

    /// The validators in order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Voting power of `address`, if it is a validator.
    pub fn power_of(&self, address: &Address) -> Option<u64> {
        self.validators
            .iter()
            .find(|v| v.address == *address)
            .map(|v| v.power)
    }

    /// Sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.validators
            .iter()
            .map(|v| v.power)
            .fold(0, u64::saturating_add)
    }

    /// True when `power` is more than two thirds of the total: the quorum for commits and
    /// attestations. With `n = 3f + 1` equal validators this is `2f + 1` of them.
    pub fn is_quorum(&self, power: u64) -> bool {
        (power as u128) * 3 > (self.total_power() as u128) * 2
    }
}

/// A prefunded account.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct GenesisAccount {
    /// The account.
    pub address: Address,
    /// Its starting balance.
    pub balance: u64,
}

/// The genesis file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id, signed into every transaction and vote.
    pub chain_id: String,
    /// Milliseconds since the Unix epoch; the first block's timestamp is later.
    pub genesis_time_ms: u64,
    /// Flat fee charged per executed transaction, credited to the block's proposer.
    pub fee_per_transaction: u64,
    /// The validators.
    pub validators: Vec<Validator>,
    /// Prefunded accounts.
    pub accounts: Vec<GenesisAccount>,
}

impl Genesis {
    /// `SHA-256(borsh(genesis))`: the parent hash of block 1.
    pub fn hash(&self) -> Hash {
        hash_of(self)
    }

    /// The validator set.
    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet::new(self.validators.clone())
    }

    /// Checks everything a node relies on: a valid chain id, at least one validator, no zero
    /// power, no duplicates, and balances that cannot overflow.
    pub fn validate(&self) -> Result<(), String> {
        validate_chain_id(&self.chain_id)?;
        if self.validators.is_empty() {
            return Err("genesis has no validators".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for v in &self.validators {
            if v.power == 0 {
                return Err(format!("validator {} has zero voting power", v.address));
            }
            if !seen.insert(v.address) {
                return Err(format!("validator {} is listed twice", v.address));
            }
            v.address
                .verifying_key()
                .map_err(|_| format!("validator {} is not an ed25519 key", v.address))?;
            if v.address.is_weak() {
                return Err(format!(
                    "validator {} is a small-order ed25519 key: anyone could sign for it",
                    v.address
                ));
            }
        }
        self.validators
            .iter()
            .try_fold(0u64, |acc, v| acc.checked_add(v.power))
            .ok_or("total voting power overflows u64")?;
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.accounts {
            if !seen.insert(a.address) {
                return Err(format!("account {} is listed twice", a.address));
            }
        }
        self.accounts
            .iter()
            .try_fold(0u64, |acc, a| acc.checked_add(a.balance))
            .ok_or("total genesis supply overflows u64")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_more_than_two_thirds() {
        let set = ValidatorSet::new(
            (0..4)
                .map(|i| Validator {
                    address: Address([i; 32]),
                    power: 1,
                })
                .collect(),
        );
        assert!(!set.is_quorum(2));
        assert!(set.is_quorum(3));
        let solo = ValidatorSet::new(vec![Validator {
            address: Address([1; 32]),
            power: 10,
        }]);
        assert!(solo.is_quorum(10));
        assert!(!solo.is_quorum(6));
    }

    #[test]
    fn a_small_order_validator_key_is_refused() {
        let validator = |address| Validator { address, power: 1 };
        let mut genesis = Genesis {
            chain_id: "c".into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: vec![validator(crate::Keypair::deterministic("v").address())],
            accounts: vec![],
        };
        assert_eq!(genesis.validate(), Ok(()));
        let mut identity = [0u8; 32];
        identity[0] = 1;
        genesis.validators.push(validator(Address(identity)));
        let error = genesis.validate().unwrap_err();
        assert!(error.contains("small-order"), "{error}");
    }
}
