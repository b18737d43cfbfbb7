//! Keys, addresses and signatures: ed25519 everywhere, verified under the ZIP 215 rules (so
//! that checking signatures one by one and checking them as a batch always agree), and every
//! signed message prefixed by a domain tag and the chain id so a signature made for one
//! purpose or chain is worthless for any other.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::hash::{hex_serde, parse_hex_array, Hash, HexError};

/// Domain tags: the first bytes of every signed message, one per kind of message.
pub mod domain {
    /// A transaction.
    pub const TRANSACTION: &[u8] = b"LAMINA_TX_V1";
    /// A consensus vote (and the signatures of a commit certificate).
    pub const VOTE: &[u8] = b"LAMINA_VOTE_V1";
    /// A consensus proposal.
    pub const PROPOSAL: &[u8] = b"LAMINA_PROPOSAL_V1";
    /// A settlement attestation of a state root.
    pub const ATTESTATION: &[u8] = b"LAMINA_ATTEST_V1";
    /// An optimistic-settlement claim of an output root.
    pub const CLAIM: &[u8] = b"LAMINA_CLAIM_V1";
    /// A challenge of an optimistic-settlement claim.
    pub const CHALLENGE: &[u8] = b"LAMINA_CHALLENGE_V1";
    /// A deposit from the settlement ledger to the execution layer.
    pub const DEPOSIT: &[u8] = b"LAMINA_DEPOSIT_V1";
}

/// The bytes that get signed: `tag ‖ borsh(chain_id) ‖ message`.
pub fn signing_bytes(tag: &[u8], chain_id: &str, message: &[u8]) -> Vec<u8> {
    let chain = codec::encode(chain_id);
    let mut bytes = Vec::with_capacity(tag.len() + chain.len() + message.len());
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(&chain);
    bytes.extend_from_slice(message);
    bytes
}

/// An account or validator address: the 32-byte ed25519 public key itself.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The ed25519 public key, if these bytes are one (not every 32-byte string is).
    pub fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::InvalidPublicKey)
    }

    /// Checks that `signature` is this key's signature over `tag ‖ chain_id ‖ message`,
    /// under the ZIP 215 rules: cofactored verification, canonical `S`, any valid encoding
    /// of the key and of `R`. These are the rules that make [`SignatureBatch`] agree with
    /// this check on every input, which consensus needs: a node that checked a signature in
    /// a batch and one that checked it alone must reach the same verdict. Every signature an
    /// RFC 8032 signer produces passes.
    pub fn verify(
        &self,
        tag: &[u8],
        chain_id: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = ed25519_zebra::VerificationKey::try_from(self.0)
            .map_err(|_| SignatureError::InvalidPublicKey)?;
        let signature = ed25519_zebra::Signature::from_bytes(&signature.0);
        key.verify(&signature, &signing_bytes(tag, chain_id, message))
            .map_err(|_| SignatureError::BadSignature)
    }

    /// Whether this key has small order: a "key" for which signatures can be made without
    /// any secret, so it never belongs to anyone. Validator keys are refused if they are.
    pub fn is_weak(&self) -> bool {
        self.verifying_key().is_ok_and(|key| key.is_weak())
    }
}

/// Signatures checked together: when all are valid, one ed25519 batch verification costs
/// about half of checking each alone. Verdicts are exactly [`Address::verify`]'s.
#[derive(Debug, Default)]
pub struct SignatureBatch {
    items: Vec<ed25519_zebra::batch::Item>,
}

impl SignatureBatch {
    /// An empty batch with room for `capacity` signatures.
    pub fn with_capacity(capacity: usize) -> Self {
        SignatureBatch {
            items: Vec::with_capacity(capacity),
        }
    }

    /// Adds `signer`'s `signature` over `tag ‖ chain_id ‖ message` (as [`Address::verify`]).
    pub fn push(
        &mut self,
        signer: &Address,
        tag: &[u8],
        chain_id: &str,
        message: &[u8],
        signature: &Signature,
    ) {
        let key = ed25519_zebra::VerificationKeyBytes::from(signer.0);
        let signature = ed25519_zebra::Signature::from_bytes(&signature.0);
        let message = signing_bytes(tag, chain_id, message);
        self.items.push((key, signature, &message).into());
    }

    /// Whether each signature is valid, in the order they were pushed. One batch check
    /// answers when all are valid; otherwise each is checked alone to find the bad ones, so
    /// an invalid signature costs its sender's batch a second pass.
    pub fn verify(self) -> Vec<bool> {
        let all_valid = match self.items.len() {
            0 => true,
            // A batch of one saves nothing: it is checked alone below.
            1 => false,
            _ => {
                let mut verifier = ed25519_zebra::batch::Verifier::new();
                for item in &self.items {
                    verifier.queue(item.clone());
                }
                // The coefficients must be unpredictable to whoever chose the signatures.
                verifier.verify(rand::thread_rng()).is_ok()
            }
        };
        if all_valid {
            return vec![true; self.items.len()];
        }
        self.items
            .into_iter()
            .map(|item| item.verify_single().is_ok())
            .collect()
    }
}

impl FromStr for Address {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array(s).map(Address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", hex::encode(&self.0[..8]))
    }
}

hex_serde!(Address, "ed25519 public key, 64 hex characters");

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signer's 32 bytes are not a valid ed25519 public key.
    #[error("the signer is not a valid ed25519 public key")]
    InvalidPublicKey,
    /// The signature does not verify for this message, key, domain and chain id.
    #[error("signature does not verify")]
    BadSignature,
}

/// A 64-byte ed25519 signature, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

impl FromStr for Signature {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array(s).map(Signature)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as Deserialize<'de>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Signature {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("ed25519 signature, 128 hex characters"))
            .into()
    }
}
impl utoipa::ToSchema for Signature {}

/// An ed25519 key pair. The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Keypair, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(Keypair::from_seed(seed))
    }

    /// The key whose 32-byte secret seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(&seed))
    }

    /// A deterministic key derived from a label, for development accounts only: anyone can
    /// recompute it.
    pub fn deterministic(label: &str) -> Keypair {
        Keypair::from_seed(Hash::digest_parts(&[b"lamina-dev-key:", label.as_bytes()]).0)
    }

    /// The secret seed as hex (what key files and the CLI take).
    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Parses a secret seed from hex.
    pub fn from_secret_hex(text: &str) -> Result<Keypair, HexError> {
        parse_hex_array(text.trim()).map(Keypair::from_seed)
    }

    /// The public key, which is the address.
    pub fn address(&self) -> Address {
        Address(self.0.verifying_key().to_bytes())
    }

    /// Signs `tag ‖ borsh(chain_id) ‖ message`.
    pub fn sign(&self, tag: &[u8], chain_id: &str, message: &[u8]) -> Signature {
        Signature(
            self.0
                .sign(&signing_bytes(tag, chain_id, message))
                .to_bytes(),
        )
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

impl PartialEq for Keypair {
    fn eq(&self, other: &Self) -> bool {
        self.address() == other.address()
    }
}

impl Eq for Keypair {}

/// Shorthand for a hash of canonical bytes (`SHA-256(borsh(value))`).
pub fn hash_of<T: BorshSerialize>(value: &T) -> Hash {
    Hash::digest(&codec::encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_bound_to_domain_and_chain() {
        let key = Keypair::deterministic("alice");
        let sig = key.sign(domain::TRANSACTION, "lamina-1", b"message");
        let addr = key.address();
        assert!(addr
            .verify(domain::TRANSACTION, "lamina-1", b"message", &sig)
            .is_ok());
        assert_eq!(
            addr.verify(domain::TRANSACTION, "lamina-2", b"message", &sig),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            addr.verify(domain::VOTE, "lamina-1", b"message", &sig),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            addr.verify(domain::TRANSACTION, "lamina-1", b"messagf", &sig),
            Err(SignatureError::BadSignature)
        );
    }

    /// The identity point: a key of small order.
    const IDENTITY_KEY: Address = Address({
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        bytes
    });

    #[test]
    fn small_order_keys_are_weak_because_anyone_can_sign_for_them() {
        assert!(IDENTITY_KEY.is_weak());
        assert!(!Keypair::deterministic("alice").address().is_weak());
        // R = B and S = 1 satisfy the verification equation for the identity key and any
        // message: no secret needed.
        let mut forged = [0x66u8; 64];
        forged[0] = 0x58;
        forged[32..].copy_from_slice(&[0; 32]);
        forged[32] = 1;
        for message in [&b"one"[..], b"another"] {
            assert_eq!(
                IDENTITY_KEY.verify(domain::TRANSACTION, "c", message, &Signature(forged)),
                Ok(())
            );
        }
    }

    /// Bytes that are no ed25519 point at all.
    fn not_a_key() -> Address {
        (0..=u8::MAX)
            .map(|i| Address([i; 32]))
            .find(|address| address.verifying_key().is_err())
            .unwrap()
    }

    proptest::proptest! {
        /// Each entry: which key signs, and how the signature is spoiled (0 and 1: not).
        #[test]
        fn a_batch_agrees_with_checking_each_signature_alone(
            entries in proptest::collection::vec((0usize..3, 0u8..6, 0usize..64), 0..20)
        ) {
            let keys = ["alice", "bob", "carol"].map(Keypair::deterministic);
            let mut batch = SignatureBatch::default();
            let mut alone = Vec::new();
            for (index, &(signer, spoil, byte)) in entries.iter().enumerate() {
                let message = index.to_le_bytes();
                let mut signature = keys[signer].sign(domain::TRANSACTION, "c", &message);
                let mut address = keys[signer].address();
                let mut chain = "c";
                match spoil {
                    2 => signature.0[byte] ^= 1,
                    3 => address = keys[(signer + 1) % keys.len()].address(),
                    4 => address = not_a_key(),
                    5 => chain = "d",
                    _ => {}
                }
                batch.push(&address, domain::TRANSACTION, chain, &message, &signature);
                alone.push(address.verify(domain::TRANSACTION, chain, &message, &signature).is_ok());
            }
            proptest::prop_assert_eq!(batch.verify(), alone);
        }
    }

    #[test]
    fn secret_hex_round_trips() {
        let key = Keypair::generate().unwrap();
        let back = Keypair::from_secret_hex(&key.secret_hex()).unwrap();
        assert_eq!(back.address(), key.address());
        assert_eq!(
            key.address().to_string().parse::<Address>().unwrap(),
            key.address()
        );
    }
}
