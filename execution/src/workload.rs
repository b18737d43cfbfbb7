//! Synthetic blocks of signed transfers for benchmarks. Deterministic (a fixed seed gives the
//! same block on every machine), so figures measured on different machines are comparable.

use std::collections::BTreeMap;

use lamina_primitives::{Account, Address, Keypair, Transaction};

/// Balance of every account in a synthetic block: enough that no transfer fails.
pub const BALANCE: u64 = 1 << 50;

/// SplitMix64: a tiny deterministic generator (no dependency, same sequence everywhere).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A block of transfers and the state it runs on.
#[derive(Debug, Clone)]
pub struct TransferBlock {
    /// `size` signed transfers of 1 unit, each sender's nonces in order.
    pub transactions: Vec<Transaction>,
    /// Every account funded with [`BALANCE`].
    pub state: BTreeMap<Address, Account>,
}

/// `size` transfers between random pairs of `accounts` (at least 1) funded accounts, signed
/// for `chain_id`.
pub fn transfer_block(chain_id: &str, accounts: usize, size: usize, seed: u64) -> TransferBlock {
    let accounts = accounts.max(1);
    let keys: Vec<Keypair> = (0..accounts)
        .map(|i| Keypair::deterministic(&format!("bench-{i}")))
        .collect();
    let mut nonces = vec![0u64; accounts];
    let mut rng = SplitMix(seed);
    let transactions = (0..size)
        .map(|_| {
            let from = rng.below(accounts);
            let mut to = rng.below(accounts);
            if to == from && accounts > 1 {
                to = (to + 1) % accounts;
            }
            let nonce = nonces[from];
            nonces[from] += 1;
            Transaction::transfer(chain_id, &keys[from], nonce, keys[to].address(), 1)
        })
        .collect();
    let state = keys
        .iter()
        .map(|key| {
            (
                key.address(),
                Account {
                    balance: BALANCE,
                    nonce: 0,
                },
            )
        })
        .collect();
    TransferBlock {
        transactions,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_deterministic_and_nonces_run_in_order() {
        let a = transfer_block("c", 5, 40, 3);
        let b = transfer_block("c", 5, 40, 3);
        assert_eq!(a.transactions, b.transactions);
        assert_eq!(a.state.len(), 5);
        let mut next: BTreeMap<Address, u64> = BTreeMap::new();
        for tx in &a.transactions {
            let nonce = next.entry(tx.sender).or_default();
            assert_eq!(tx.nonce, *nonce);
            *nonce += 1;
            assert!(tx.verify_signature().is_ok());
        }
    }
}
