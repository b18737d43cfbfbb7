//! The chain's data types: accounts, transactions, receipts, namespaced blobs, blocks and
//! commit certificates. Everything here has one canonical borsh encoding (what is hashed,
//! signed and sent to peers) and a JSON form (what the HTTP API shows).

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::crypto::{domain, hash_of, SignatureBatch, SignatureError};
use crate::{Address, Hash, Keypair, Signature, ValidatorSet};

/// Longest chain id accepted anywhere (bytes).
pub const MAX_CHAIN_ID_LEN: usize = 64;

/// Checks a chain id: 1 to 64 characters of `a-z`, `0-9` and `-`.
pub fn validate_chain_id(chain_id: &str) -> Result<(), String> {
    let ok = !chain_id.is_empty()
        && chain_id.len() <= MAX_CHAIN_ID_LEN
        && chain_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "chain id {chain_id:?} must be 1 to {MAX_CHAIN_ID_LEN} characters of a-z, 0-9 and '-'"
        ))
    }
}

/// An account's state: what the state tree stores under [`crate::state_proof::StateKey::Account`].
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// Number of transactions this account has had executed; the next one must carry it.
    pub nonce: u64,
}

/// What a transaction does. New kinds are added as new variants (at the end, so existing
/// encodings keep their meaning).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxPayload {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// Recipient.
        to: Address,
        /// Amount moved (the fee is charged on top).
        amount: u64,
    },
    /// Burn `amount` from the sender on the execution side and record a withdrawal to the
    /// settlement-ledger account `to`, credited there once a finalized batch covers it (see
    /// [`crate::bridge`]).
    Withdraw {
        /// The settlement-ledger account to credit.
        to: Address,
        /// Amount burned (the fee is charged on top).
        amount: u64,
    },
}

/// The part of a transaction that is signed.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct UnsignedTransaction {
    /// Chain this transaction is valid on.
    pub chain_id: String,
    /// Signer and payer; its ed25519 public key.
    pub sender: Address,
    /// Must equal the sender's account nonce when executed.
    pub nonce: u64,
    /// What to do.
    pub payload: TxPayload,
}

impl UnsignedTransaction {
    /// The bytes the sender signs: `"LAMINA_TX_V1" ‖ borsh(chain_id) ‖ borsh(self)`
    /// (see [`crate::crypto::signing_bytes`]); this returns the `borsh(self)` part.
    pub fn message(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Signs with `key` (which should be the sender's).
    pub fn sign(self, key: &Keypair) -> Transaction {
        let signature = key.sign(domain::TRANSACTION, &self.chain_id, &self.message());
        Transaction {
            chain_id: self.chain_id,
            sender: self.sender,
            nonce: self.nonce,
            payload: self.payload,
            signature,
        }
    }
}

/// A signed transaction. Its hash is `SHA-256(borsh(transaction))`, signature included.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Transaction {
    /// Chain this transaction is valid on.
    pub chain_id: String,
    /// Signer and payer.
    pub sender: Address,
    /// Must equal the sender's account nonce when executed.
    pub nonce: u64,
    /// What to do.
    pub payload: TxPayload,
    /// ed25519 signature by `sender` over the signing bytes of the unsigned part.
    pub signature: Signature,
}

impl Transaction {
    /// Builds and signs a transfer.
    pub fn transfer(chain_id: &str, key: &Keypair, nonce: u64, to: Address, amount: u64) -> Self {
        UnsignedTransaction {
            chain_id: chain_id.to_string(),
            sender: key.address(),
            nonce,
            payload: TxPayload::Transfer { to, amount },
        }
        .sign(key)
    }

    /// Builds and signs a withdrawal to the settlement-ledger account `to`.
    pub fn withdraw(chain_id: &str, key: &Keypair, nonce: u64, to: Address, amount: u64) -> Self {
        UnsignedTransaction {
            chain_id: chain_id.to_string(),
            sender: key.address(),
            nonce,
            payload: TxPayload::Withdraw { to, amount },
        }
        .sign(key)
    }

    /// The unsigned part.
    pub fn unsigned(&self) -> UnsignedTransaction {
        UnsignedTransaction {
            chain_id: self.chain_id.clone(),
            sender: self.sender,
            nonce: self.nonce,
            payload: self.payload.clone(),
        }
    }

    /// `SHA-256(borsh(self))`.
    pub fn hash(&self) -> Hash {
        hash_of(self)
    }

    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a transaction of at most `limit` bytes.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, DecodeError> {
        codec::decode(bytes, limit)
    }

    /// Whether each of `transactions` carries a valid signature
    /// ([`Transaction::verify_signature`]), checked together as one [`SignatureBatch`].
    pub fn verify_signatures<'a>(
        transactions: impl IntoIterator<Item = &'a Transaction>,
    ) -> Vec<bool> {
        let transactions = transactions.into_iter();
        let mut batch = SignatureBatch::with_capacity(transactions.size_hint().0);
        for transaction in transactions {
            batch.push(
                &transaction.sender,
                domain::TRANSACTION,
                &transaction.chain_id,
                &transaction.unsigned().message(),
                &transaction.signature,
            );
        }
        batch.verify()
    }

    /// Checks the signature against the sender's key, this transaction's own chain id and
    /// the transaction domain tag.
    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        self.sender.verify(
            domain::TRANSACTION,
            &self.chain_id,
            &self.unsigned().message(),
            &self.signature,
        )
    }

    /// The amount the sender spends besides the fee.
    pub fn value(&self) -> u64 {
        match &self.payload {
            TxPayload::Transfer { amount, .. } | TxPayload::Withdraw { amount, .. } => *amount,
        }
    }
}

/// Why an included transaction had no effect beyond its nonce and fee (or none at all).
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum TxFailure {
    /// The signature does not verify; nothing was charged.
    InvalidSignature,
    /// The transaction is for another chain; nothing was charged.
    WrongChainId,
    /// The nonce is not the account's next one; nothing was charged.
    BadNonce {
        /// The account's nonce at execution.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The sender could not pay the fee; the nonce was used, nothing was charged.
    CannotPayFee {
        /// The fee.
        fee: u64,
        /// The sender's balance.
        balance: u64,
    },
    /// The fee was paid but the balance left could not cover the amount.
    InsufficientBalance {
        /// What the transfer needed.
        needed: u64,
        /// What was left after the fee.
        available: u64,
    },
    /// The recipient's balance would overflow.
    BalanceOverflow,
}

impl std::fmt::Display for TxFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxFailure::InvalidSignature => write!(f, "invalid signature"),
            TxFailure::WrongChainId => write!(f, "wrong chain id"),
            TxFailure::BadNonce { expected, got } => {
                write!(f, "bad nonce: expected {expected}, got {got}")
            }
            TxFailure::CannotPayFee { fee, balance } => {
                write!(f, "cannot pay fee {fee} with balance {balance}")
            }
            TxFailure::InsufficientBalance { needed, available } => {
                write!(
                    f,
                    "insufficient balance: needed {needed}, available {available}"
                )
            }
            TxFailure::BalanceOverflow => write!(f, "recipient balance would overflow"),
        }
    }
}

/// Outcome of one transaction.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxOutcome {
    /// Applied in full.
    Success,
    /// Not applied; see the reason for what was charged.
    Failed {
        /// Why.
        #[serde(flatten)]
        failure: TxFailure,
    },
}

impl TxOutcome {
    /// Whether the transaction used its sender's nonce: it succeeded, or failed after the
    /// nonce check. Nonces only go up, so a transaction hash takes effect at most once; the
    /// other failures (bad signature, wrong chain, bad nonce) change nothing.
    pub fn used_nonce(&self) -> bool {
        !matches!(
            self,
            TxOutcome::Failed {
                failure: TxFailure::InvalidSignature
                    | TxFailure::WrongChainId
                    | TxFailure::BadNonce { .. }
            }
        )
    }
}

/// The receipt of an included transaction.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Receipt {
    /// Hash of the transaction.
    pub tx_hash: Hash,
    /// Height of the block that included it.
    pub height: u64,
    /// Position in the block's transaction list.
    pub index: u32,
    /// Fee charged.
    pub fee: u64,
    /// What happened.
    pub outcome: TxOutcome,
    /// For a successful `Withdraw`: the withdrawal's id (its leaf index in the withdrawals
    /// tree), which proves and finalizes it on the settlement side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_id: Option<u64>,
}

/// A namespace: 8 bytes naming who a blob is for. Two are reserved by Lamina itself.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct Namespace(#[serde(with = "hex_bytes8")] pub [u8; 8]);

impl Namespace {
    /// Transactions for the execution layer (borsh `Vec<Transaction>`).
    pub const EXECUTION: Namespace = Namespace(*b"lam-exec");
    /// Messages for the settlement layer.
    pub const SETTLEMENT: Namespace = Namespace(*b"lam-sett");

    /// Whether the namespace belongs to a layer of the chain itself (outside data may not
    /// use it).
    pub fn is_reserved(&self) -> bool {
        *self == Namespace::EXECUTION || *self == Namespace::SETTLEMENT
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Namespace({})", hex::encode(self.0))
    }
}

/// Hex, as in JSON.
impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl utoipa::PartialSchema for Namespace {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("namespace, 16 hex characters"))
            .into()
    }
}
impl utoipa::ToSchema for Namespace {}

mod hex_bytes8 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 8], D::Error> {
        let text = <String as Deserialize<'de>>::deserialize(d)?;
        crate::hash::parse_hex_array(&text).map_err(serde::de::Error::custom)
    }
}

/// A piece of block data tagged with its namespace.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Blob {
    /// Who the data is for.
    pub namespace: Namespace,
    /// The data.
    pub data: Vec<u8>,
}

impl Blob {
    /// Encoded size of a blob besides its data: the namespace and the data's length prefix.
    pub const ENCODED_PREFIX_BYTES: usize = 8 + codec::VEC_PREFIX_BYTES;

    /// Domain tag of [`Blob::commitment`].
    pub const COMMITMENT_DOMAIN: &'static [u8] = b"lamina/blob/v1";

    /// The blob's commitment: `SHA-256("lamina/blob/v1" ‖ namespace ‖ data)`. It names the
    /// blob wherever it lands (the submitter learns it before the blob is in a block); the
    /// blob's place in a block is proven against the header's `data_root` separately.
    pub fn commitment(&self) -> Hash {
        Hash::digest_parts(&[Self::COMMITMENT_DOMAIN, &self.namespace.0, &self.data])
    }

    /// Its encoded size in a block body.
    pub fn encoded_len(&self) -> usize {
        Self::ENCODED_PREFIX_BYTES + self.data.len()
    }
}

/// A block header. The block hash is `SHA-256(borsh(header))`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct BlockHeader {
    /// The chain.
    pub chain_id: String,
    /// Height, from 1.
    pub height: u64,
    /// Hash of the previous block's header; for height 1, the genesis hash.
    pub parent_hash: Hash,
    /// Milliseconds since the Unix epoch, strictly increasing along the chain.
    pub timestamp_ms: u64,
    /// The validator that proposed the block.
    pub proposer: Address,
    /// Commitment to the body from the data-availability layer.
    pub data_root: Hash,
    /// Size of the encoded body in bytes.
    pub body_size: u64,
}

impl BlockHeader {
    /// `SHA-256(borsh(self))`.
    pub fn hash(&self) -> Hash {
        hash_of(self)
    }
}

/// A block: a header and a body of namespaced blobs, in namespace order.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The body.
    pub body: Vec<Blob>,
}

impl Block {
    /// The header's hash.
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The height.
    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// The blobs of one namespace, in body order.
    pub fn blobs(&self, namespace: Namespace) -> impl Iterator<Item = &Blob> {
        self.body
            .iter()
            .filter(move |blob| blob.namespace == namespace)
    }

    /// The transactions of the `execution` namespace. A blob that does not decode
    /// contributes none: every node reads the same body the same way.
    pub fn transactions(&self) -> Vec<Transaction> {
        self.blobs(Namespace::EXECUTION)
            .flat_map(|blob| {
                codec::decode_trusted::<Vec<Transaction>>(&blob.data).unwrap_or_default()
            })
            .collect()
    }

    /// Encodes the body canonically (what the DA layer commits to).
    pub fn encode_body(body: &[Blob]) -> Vec<u8> {
        codec::encode(body)
    }
}

/// A block with the certificate that committed it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CommittedBlock {
    /// The block.
    pub block: Block,
    /// Proof that a quorum of validators committed it.
    pub certificate: Certificate,
}

impl CommittedBlock {
    /// The block without its body: what a block store keeps of it once the body is pruned.
    pub fn header_only(&self) -> CommittedHeader {
        CommittedHeader {
            header: self.block.header.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

/// A committed block without its body: its header and the certificate that committed it.
///
/// Old bodies are dropped from the consensus block store once the DA layer keeps them as
/// erasure-coded shares; the header still chains the blocks together (its hash is the
/// block's hash), its `data_root` commits to the body, and the certificate proves the commit.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CommittedHeader {
    /// The block's header.
    pub header: BlockHeader,
    /// Proof that a quorum of validators committed it.
    pub certificate: Certificate,
}

impl CommittedHeader {
    /// The header's hash, which is the block's hash.
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The height.
    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// The whole committed block again, with `body` (e.g. rebuilt from DA shares). Nothing is
    /// checked here: the caller makes sure `body` matches the header's `data_root` and
    /// `body_size` (the DA layer's commitment) before trusting the result.
    pub fn into_block(self, body: Vec<Blob>) -> CommittedBlock {
        CommittedBlock {
            block: Block {
                header: self.header,
                body,
            },
            certificate: self.certificate,
        }
    }
}

/// The kind of a consensus vote.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    /// First round of voting.
    Prevote,
    /// Second round; a quorum of these commits a block.
    Precommit,
}

/// What a validator signs when it votes.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct VoteData {
    /// Height voted on.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for; `None` is a vote for nothing (nil).
    pub block_hash: Option<Hash>,
}

impl VoteData {
    /// Signs as `key`.
    pub fn sign(&self, chain_id: &str, key: &Keypair) -> Signature {
        key.sign(domain::VOTE, chain_id, &codec::encode(self))
    }

    /// Verifies `signature` by `validator`.
    pub fn verify(
        &self,
        chain_id: &str,
        validator: &Address,
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        validator.verify(domain::VOTE, chain_id, &codec::encode(self), signature)
    }
}

/// A vote with its signer and signature, as validators send it to each other.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct SignedVote {
    /// What was voted.
    pub vote: VoteData,
    /// The validator that voted.
    pub validator: Address,
    /// Its signature over [`VoteData`] (domain `LAMINA_VOTE_V1`).
    pub signature: Signature,
}

impl SignedVote {
    /// Signs `vote` as `key`.
    pub fn sign(chain_id: &str, key: &Keypair, vote: VoteData) -> Self {
        let signature = vote.sign(chain_id, key);
        SignedVote {
            vote,
            validator: key.address(),
            signature,
        }
    }

    /// Checks the signature (not whether the signer is a validator).
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        self.vote.verify(chain_id, &self.validator, &self.signature)
    }
}

/// What a proposer signs: its block for one round, and the round in which that block got a
/// quorum of prevotes if it re-proposes a block it saw locked (`pol_round`).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProposalData {
    /// Height proposed for.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// Proof-of-lock round of a re-proposed block; `None` for a fresh block.
    pub pol_round: Option<u32>,
    /// Hash of the proposed block's header.
    pub block_hash: Hash,
}

impl ProposalData {
    /// Signs as `key`.
    pub fn sign(&self, chain_id: &str, key: &Keypair) -> Signature {
        key.sign(domain::PROPOSAL, chain_id, &codec::encode(self))
    }

    /// Verifies `signature` by `proposer`.
    pub fn verify(
        &self,
        chain_id: &str,
        proposer: &Address,
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        proposer.verify(domain::PROPOSAL, chain_id, &codec::encode(self), signature)
    }
}

/// A signed proposal with the block it proposes. The signer is the proposer of the round,
/// which for a re-proposed block (`pol_round` set) may differ from `block.header.proposer`,
/// the validator that built it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedProposal {
    /// What was signed.
    pub data: ProposalData,
    /// The proposed block (header and body).
    pub block: Block,
    /// The proposer's signature over `data` (domain `LAMINA_PROPOSAL_V1`).
    pub signature: Signature,
}

impl SignedProposal {
    /// Builds and signs a proposal of `block` for `round` as `key`.
    pub fn sign(
        chain_id: &str,
        key: &Keypair,
        round: u32,
        pol_round: Option<u32>,
        block: Block,
    ) -> Self {
        let data = ProposalData {
            height: block.height(),
            round,
            pol_round,
            block_hash: block.hash(),
        };
        let signature = data.sign(chain_id, key);
        SignedProposal {
            data,
            block,
            signature,
        }
    }

    /// Checks that the signed data matches the block and that `proposer` (the round's
    /// proposer, which the caller determines) signed it.
    pub fn verify(&self, chain_id: &str, proposer: &Address) -> Result<(), SignatureError> {
        if self.data.height != self.block.height() || self.data.block_hash != self.block.hash() {
            return Err(SignatureError::BadSignature);
        }
        self.data.verify(chain_id, proposer, &self.signature)
    }
}

/// Two different signed votes by one validator for the same height, round and kind: proof
/// that it equivocated.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Equivocation {
    /// The vote seen first.
    pub first: SignedVote,
    /// The conflicting vote.
    pub second: SignedVote,
}

impl Equivocation {
    /// True when the two votes really convict their signer: same validator, height, round
    /// and kind, different blocks, both signatures valid on `chain_id`.
    pub fn is_valid(&self, chain_id: &str) -> bool {
        let (a, b) = (&self.first, &self.second);
        a.validator == b.validator
            && a.vote.height == b.vote.height
            && a.vote.round == b.vote.round
            && a.vote.kind == b.vote.kind
            && a.vote.block_hash != b.vote.block_hash
            && a.verify(chain_id).is_ok()
            && b.verify(chain_id).is_ok()
    }
}

/// One validator's signature in a certificate.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct CommitSignature {
    /// The validator.
    pub validator: Address,
    /// Its precommit signature.
    pub signature: Signature,
}

/// A commit certificate: precommits for one block from validators holding more than two
/// thirds of the voting power.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct Certificate {
    /// Height of the block.
    pub height: u64,
    /// Round in which it was committed.
    pub round: u32,
    /// Hash of the block.
    pub block_hash: Hash,
    /// The precommits.
    pub signatures: Vec<CommitSignature>,
}

/// Why a certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// It certifies another block.
    #[error("certificate is for block {got}, expected {expected}")]
    WrongBlock {
        /// The block expected.
        expected: Hash,
        /// The block certified.
        got: Hash,
    },
    /// It certifies another height.
    #[error("certificate is for height {got}, expected {expected}")]
    WrongHeight {
        /// The height expected.
        expected: u64,
        /// The height certified.
        got: u64,
    },
    /// A signer is not a validator.
    #[error("signer {0} is not a validator")]
    UnknownValidator(Address),
    /// A validator signed twice.
    #[error("validator {0} appears twice")]
    DuplicateSigner(Address),
    /// A signature does not verify.
    #[error("signature of {0} does not verify")]
    BadSignature(Address),
    /// The signers hold too little voting power.
    #[error("signers hold {signed} of {total} voting power; more than two thirds is needed")]
    NoQuorum {
        /// Power that signed.
        signed: u64,
        /// Total power.
        total: u64,
    },
}

impl Certificate {
    /// The vote each signature must be over.
    pub fn vote(&self) -> VoteData {
        VoteData {
            height: self.height,
            round: self.round,
            kind: VoteKind::Precommit,
            block_hash: Some(self.block_hash),
        }
    }

    /// Checks that this certificate commits `header` on `chain_id` under `validators`.
    pub fn verify(
        &self,
        chain_id: &str,
        header: &BlockHeader,
        validators: &ValidatorSet,
    ) -> Result<(), CertificateError> {
        if self.height != header.height {
            return Err(CertificateError::WrongHeight {
                expected: header.height,
                got: self.height,
            });
        }
        let expected = header.hash();
        if self.block_hash != expected {
            return Err(CertificateError::WrongBlock {
                expected,
                got: self.block_hash,
            });
        }
        let vote = self.vote();
        let mut seen = std::collections::BTreeSet::new();
        let mut signed: u64 = 0;
        for sig in &self.signatures {
            let power = validators
                .power_of(&sig.validator)
                .ok_or(CertificateError::UnknownValidator(sig.validator))?;
            if !seen.insert(sig.validator) {
                return Err(CertificateError::DuplicateSigner(sig.validator));
            }
            vote.verify(chain_id, &sig.validator, &sig.signature)
                .map_err(|_| CertificateError::BadSignature(sig.validator))?;
            signed = signed.saturating_add(power);
        }
        if !validators.is_quorum(signed) {
            return Err(CertificateError::NoQuorum {
                signed,
                total: validators.total_power(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, Validator};
    use proptest::prelude::*;

    fn arb_tx() -> impl Strategy<Value = Transaction> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            "[a-z0-9-]{1,20}",
        )
            .prop_map(|(seed, nonce, to, amount, chain)| {
                Transaction::transfer(
                    &chain,
                    &Keypair::from_seed(seed),
                    nonce,
                    Address(to),
                    amount,
                )
            })
    }

    proptest! {
        #[test]
        fn transaction_codec_round_trips(tx in arb_tx()) {
            let bytes = tx.encode();
            prop_assert_eq!(Transaction::decode(&bytes, 4096).unwrap(), tx.clone());
            prop_assert!(tx.verify_signature().is_ok());
            let json = serde_json::to_string(&tx).unwrap();
            prop_assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), tx);
        }

        #[test]
        fn block_codec_round_trips(height in 1u64.., data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let block = Block {
                header: BlockHeader {
                    chain_id: "lamina-test".into(),
                    height,
                    parent_hash: Hash::digest(&data),
                    timestamp_ms: height.wrapping_mul(1000),
                    proposer: Address([7; 32]),
                    data_root: Hash::digest(b"root"),
                    body_size: data.len() as u64,
                },
                body: vec![Blob { namespace: Namespace::SETTLEMENT, data }],
            };
            let bytes = codec::encode(&block);
            prop_assert_eq!(codec::decode::<Block>(&bytes, 1 << 20).unwrap(), block);
        }
    }

    #[test]
    fn committed_header_splits_and_rejoins_a_block() {
        let header = BlockHeader {
            chain_id: "c".into(),
            height: 5,
            parent_hash: Hash::digest(b"parent"),
            timestamp_ms: 9,
            proposer: Address([3; 32]),
            data_root: Hash::digest(b"root"),
            body_size: 3,
        };
        let block = CommittedBlock {
            certificate: Certificate {
                height: 5,
                round: 1,
                block_hash: header.hash(),
                signatures: vec![],
            },
            block: Block {
                header,
                body: vec![Blob {
                    namespace: Namespace::EXECUTION,
                    data: vec![1, 2, 3],
                }],
            },
        };
        let header = block.header_only();
        assert_eq!(header.hash(), block.block.hash());
        assert_eq!(header.height(), 5);
        let bytes = codec::encode(&header);
        assert_eq!(
            codec::decode::<CommittedHeader>(&bytes, 1 << 20).unwrap(),
            header
        );
        assert_eq!(header.into_block(block.block.body.clone()), block);
    }

    #[test]
    fn signature_for_one_chain_fails_on_another() {
        let key = Keypair::deterministic("alice");
        let mut tx = Transaction::transfer("chain-a", &key, 0, Address([2; 32]), 5);
        assert!(tx.verify_signature().is_ok());
        tx.chain_id = "chain-b".into();
        assert_eq!(tx.verify_signature(), Err(SignatureError::BadSignature));
    }

    #[test]
    fn certificate_needs_quorum_of_distinct_validators() {
        let keys: Vec<Keypair> = (0..4)
            .map(|i| Keypair::deterministic(&format!("v{i}")))
            .collect();
        let set = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 1,
                })
                .collect(),
        );
        let header = BlockHeader {
            chain_id: "c".into(),
            height: 3,
            parent_hash: Hash::ZERO,
            timestamp_ms: 1,
            proposer: keys[0].address(),
            data_root: Hash::ZERO,
            body_size: 0,
        };
        let mut cert = Certificate {
            height: 3,
            round: 0,
            block_hash: header.hash(),
            signatures: vec![],
        };
        let vote = cert.vote();
        for key in &keys[..2] {
            cert.signatures.push(CommitSignature {
                validator: key.address(),
                signature: vote.sign("c", key),
            });
        }
        assert!(matches!(
            cert.verify("c", &header, &set),
            Err(CertificateError::NoQuorum {
                signed: 2,
                total: 4
            })
        ));
        cert.signatures.push(cert.signatures[0].clone());
        assert!(matches!(
            cert.verify("c", &header, &set),
            Err(CertificateError::DuplicateSigner(_))
        ));
        cert.signatures.pop();
        cert.signatures.push(CommitSignature {
            validator: keys[2].address(),
            signature: vote.sign("c", &keys[2]),
        });
        assert!(cert.verify("c", &header, &set).is_ok());
        assert!(cert.verify("other", &header, &set).is_err());
    }
}

/// The worked example of docs/wire-format.md; if this test changes, the page must too.
#[cfg(test)]
mod wire_format_vector {
    use super::*;
    use crate::crypto::signing_bytes;

    pub(super) fn example() -> (Keypair, Transaction) {
        let key = Keypair::from_seed([0x01; 32]);
        let tx = Transaction::transfer("lamina-dev", &key, 0, Address([0x02; 32]), 1000);
        (key, tx)
    }

    #[test]
    fn documented_transaction_vector() {
        let (key, tx) = example();
        let unsigned = tx.unsigned().message();
        let signed = signing_bytes(domain::TRANSACTION, &tx.chain_id, &unsigned);
        let print = std::env::var("PRINT_VECTOR").is_ok();
        if print {
            println!("address   {}", key.address());
            println!("unsigned  {}", hex::encode(&unsigned));
            println!("signing   {}", hex::encode(&signed));
            println!("signature {}", tx.signature);
            println!("tx        {}", hex::encode(tx.encode()));
            println!("hash      {}", tx.hash());
        }
        assert_eq!(
            hex::encode(tx.encode()),
            include_str!("../../docs/vectors/transfer.hex").trim()
        );
        assert_eq!(
            tx.hash().to_string(),
            include_str!("../../docs/vectors/transfer.hash").trim()
        );
    }
}
