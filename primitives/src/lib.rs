//! Lamina's shared vocabulary: the types every layer speaks (hashes, keys, transactions,
//! blocks, certificates), their canonical encoding, the crypto rules, Merkle proofs, and in
//! [`interfaces`] the typed channel contract of each layer.
//!
//! Nothing here does I/O; every layer crate depends on this one and on no other layer.

pub mod bridge;
pub mod codec;
pub mod crypto;
pub mod da;
pub mod genesis;
pub mod hash;
pub mod interfaces;
pub mod merkle;
pub mod pieces;
pub mod state_proof;
pub mod types;

pub use crypto::{Address, Keypair, Signature};
pub use genesis::{Genesis, GenesisAccount, Validator, ValidatorSet};
pub use hash::Hash;
pub use types::*;
