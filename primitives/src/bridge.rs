//! The vocabulary of `optimistic` settlement and of the bridge between the settlement ledger
//! and the execution layer: output roots and their preimage, withdrawals and their tree, and
//! the signed claim, challenge and deposit messages (plus the unsigned withdrawal
//! finalization) that travel in the `settlement` namespace.
//!
//! Every byte that is hashed or signed is spelled out here so that a client in another
//! language can rebuild it:
//!
//! * output root = `SHA-256(u64_le(version) ‖ state_root ‖ withdrawals_root ‖ last_block_hash
//!   ‖ data_root)`, 136 bytes hashed (which is also `SHA-256(borsh(OutputPreimage))`);
//! * withdrawal leaf = `borsh(Withdrawal)` = `u64_le(id) ‖ from ‖ to ‖ u64_le(amount)`, and the
//!   withdrawals tree is the RFC 9162 tree of [`crate::merkle`] over the leaves of every
//!   withdrawal so far, in id order;
//! * a claim signs `"LAMINA_CLAIM_V1" ‖ borsh(chain_id) ‖ borsh(ClaimData)`, a challenge
//!   `"LAMINA_CHALLENGE_V1" ‖ borsh(chain_id) ‖ borsh(ChallengeData)`, a deposit
//!   `"LAMINA_DEPOSIT_V1" ‖ borsh(chain_id) ‖ borsh(DepositData)`.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::{domain, SignatureError};
use crate::merkle::{self, MerkleProof};
use crate::{Address, Hash, Keypair, Signature};

/// Version of the output-root preimage layout; part of the hashed bytes, so a future layout
/// can never produce the same root as this one.
pub const OUTPUT_VERSION: u64 = 1;

/// What an output root commits to: the execution layer's state after the last height of a
/// batch. It is the one value a claim asserts and a withdrawal is proven against.
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
pub struct OutputPreimage {
    /// Layout version, [`OUTPUT_VERSION`].
    pub version: u64,
    /// The state root after executing the batch's last height.
    pub state_root: Hash,
    /// The root of the withdrawals tree after that height (every withdrawal so far).
    pub withdrawals_root: Hash,
    /// The hash of the block at that height.
    pub last_block_hash: Hash,
    /// The `data_root` of that block's header.
    pub data_root: Hash,
}

impl OutputPreimage {
    /// The output root: `SHA-256` of the 136 bytes `u64_le(version) ‖ state_root ‖
    /// withdrawals_root ‖ last_block_hash ‖ data_root` (byte-for-byte the borsh encoding of
    /// this struct).
    pub fn output_root(&self) -> Hash {
        Hash::digest_parts(&[
            &self.version.to_le_bytes(),
            &self.state_root.0,
            &self.withdrawals_root.0,
            &self.last_block_hash.0,
            &self.data_root.0,
        ])
    }
}

/// A withdrawal: value burned on the execution layer, to be credited on the settlement
/// ledger once a batch covering it is finalized.
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
pub struct Withdrawal {
    /// Position in the withdrawals tree: withdrawals are numbered 0, 1, 2, ... in execution
    /// order.
    pub id: u64,
    /// The execution account that burned the value.
    pub from: Address,
    /// The settlement-ledger account to credit.
    pub to: Address,
    /// Amount burned, and credited.
    pub amount: u64,
}

impl Withdrawal {
    /// The leaf data in the withdrawals tree: `borsh(self)`, 80 bytes.
    pub fn leaf(&self) -> Vec<u8> {
        codec::encode(self)
    }
}

/// The root of the withdrawals tree over `withdrawals`, which must be every withdrawal so far
/// in id order (ids 0, 1, 2, ...); the root of none is the Merkle root of no leaves.
pub fn withdrawals_root(withdrawals: &[Withdrawal]) -> Hash {
    merkle::root(&leaf_hashes(withdrawals))
}

/// The inclusion proof of withdrawal `id` in the tree over `withdrawals` (every withdrawal so
/// far in id order, as for [`withdrawals_root`]); `None` when `id` is not in it.
pub fn withdrawal_proof(withdrawals: &[Withdrawal], id: u64) -> Option<MerkleProof> {
    let index = usize::try_from(id).ok()?;
    merkle::prove(&leaf_hashes(withdrawals), index)
}

fn leaf_hashes(withdrawals: &[Withdrawal]) -> Vec<Hash> {
    withdrawals
        .iter()
        .map(|w| merkle::leaf_hash(&w.leaf()))
        .collect()
}

/// What the proposer signs in a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ClaimData {
    /// Batch index.
    pub batch: u64,
    /// How many earlier claims of this batch were rejected; binds the signature to one claim
    /// of the batch, so a rejected claim cannot be replayed to lock (and slash) the
    /// proposer's bond again.
    pub attempt: u32,
    /// First height of the batch.
    pub first_height: u64,
    /// Last height of the batch.
    pub last_height: u64,
    /// The output root after `last_height`.
    pub output_root: Hash,
    /// The bond the proposer agrees to lock.
    pub bond: u64,
}

/// The proposer's bonded assertion that executing up to `last_height` gives `output_root`.
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
pub struct Claim {
    /// Batch index (batch `b` covers heights `b * batch_size + 1 ..= (b + 1) * batch_size`).
    pub batch: u64,
    /// How many earlier claims of this batch were rejected (0 for the first claim).
    pub attempt: u32,
    /// First height of the batch.
    pub first_height: u64,
    /// Last height of the batch.
    pub last_height: u64,
    /// The output root after `last_height`.
    pub output_root: Hash,
    /// The bond locked by this claim.
    pub bond: u64,
    /// The proposer (signer).
    pub proposer: Address,
    /// Signature over `"LAMINA_CLAIM_V1" ‖ borsh(chain_id) ‖ borsh(ClaimData)`.
    pub signature: Signature,
}

impl Claim {
    /// What is signed.
    pub fn data(&self) -> ClaimData {
        ClaimData {
            batch: self.batch,
            attempt: self.attempt,
            first_height: self.first_height,
            last_height: self.last_height,
            output_root: self.output_root,
            bond: self.bond,
        }
    }

    /// Signs `data` as `key`.
    pub fn sign(chain_id: &str, key: &Keypair, data: ClaimData) -> Self {
        Claim {
            batch: data.batch,
            attempt: data.attempt,
            first_height: data.first_height,
            last_height: data.last_height,
            output_root: data.output_root,
            bond: data.bond,
            proposer: key.address(),
            signature: key.sign(domain::CLAIM, chain_id, &codec::encode(&data)),
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        self.proposer.verify(
            domain::CLAIM,
            chain_id,
            &codec::encode(&self.data()),
            &self.signature,
        )
    }
}

/// What a challenger signs in a [`Challenge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ChallengeData {
    /// Batch index.
    pub batch: u64,
    /// The attempt of the claim challenged (see [`ClaimData::attempt`]): a challenge of one
    /// claim is worthless against a later claim of the same batch.
    pub attempt: u32,
    /// The output root of the claim challenged.
    pub output_root: Hash,
}

/// A bonded dispute of a pending claim.
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
pub struct Challenge {
    /// Batch index.
    pub batch: u64,
    /// The attempt of the claim challenged.
    pub attempt: u32,
    /// The output root of the claim challenged.
    pub output_root: Hash,
    /// The challenger (signer), whose bond is locked.
    pub challenger: Address,
    /// Signature over `"LAMINA_CHALLENGE_V1" ‖ borsh(chain_id) ‖ borsh(ChallengeData)`.
    pub signature: Signature,
}

impl Challenge {
    /// What is signed.
    pub fn data(&self) -> ChallengeData {
        ChallengeData {
            batch: self.batch,
            attempt: self.attempt,
            output_root: self.output_root,
        }
    }

    /// Signs `data` as `key`.
    pub fn sign(chain_id: &str, key: &Keypair, data: ChallengeData) -> Self {
        Challenge {
            batch: data.batch,
            attempt: data.attempt,
            output_root: data.output_root,
            challenger: key.address(),
            signature: key.sign(domain::CHALLENGE, chain_id, &codec::encode(&data)),
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        self.challenger.verify(
            domain::CHALLENGE,
            chain_id,
            &codec::encode(&self.data()),
            &self.signature,
        )
    }
}

/// What a depositor signs in a [`Deposit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DepositData {
    /// The execution account to credit.
    pub to: Address,
    /// Amount moved.
    pub amount: u64,
    /// The depositor's deposit nonce (its number of deposits so far).
    pub nonce: u64,
}

/// A move of value from a settlement-ledger account to an execution account.
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
pub struct Deposit {
    /// The settlement-ledger account debited (signer).
    pub from: Address,
    /// The execution account to credit.
    pub to: Address,
    /// Amount moved.
    pub amount: u64,
    /// `from`'s deposit nonce: its number of deposits accepted so far.
    pub nonce: u64,
    /// Signature over `"LAMINA_DEPOSIT_V1" ‖ borsh(chain_id) ‖ borsh(DepositData)`.
    pub signature: Signature,
}

impl Deposit {
    /// What is signed.
    pub fn data(&self) -> DepositData {
        DepositData {
            to: self.to,
            amount: self.amount,
            nonce: self.nonce,
        }
    }

    /// Signs `data` as `key`.
    pub fn sign(chain_id: &str, key: &Keypair, data: DepositData) -> Self {
        Deposit {
            from: key.address(),
            to: data.to,
            amount: data.amount,
            nonce: data.nonce,
            signature: key.sign(domain::DEPOSIT, chain_id, &codec::encode(&data)),
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> Result<(), SignatureError> {
        self.from.verify(
            domain::DEPOSIT,
            chain_id,
            &codec::encode(&self.data()),
            &self.signature,
        )
    }
}

/// A proof that `withdrawal` is in the withdrawals tree committed by the output root of a
/// finalized batch. Unsigned: anyone may relay it, and the funds only ever go to
/// `withdrawal.to`.
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
pub struct FinalizeWithdrawal {
    /// A finalized batch at or after the height of the withdrawal (the tree is cumulative,
    /// so any later finalized batch proves it too).
    pub batch: u64,
    /// The withdrawal.
    pub withdrawal: Withdrawal,
    /// The preimage of that batch's output root.
    pub preimage: OutputPreimage,
    /// Inclusion of `withdrawal.leaf()` at index `withdrawal.id` under
    /// `preimage.withdrawals_root`.
    pub proof: MerkleProof,
}

/// A deposit the execution layer credits: queued by the settlement ledger when a block
/// carries a valid [`Deposit`], and credited by executing that same block, before its
/// transactions, in id order.
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
pub struct DepositCredit {
    /// Deposit id: 0, 1, 2, ... in the order the settlement ledger accepted them.
    pub id: u64,
    /// The execution account to credit.
    pub to: Address,
    /// Amount.
    pub amount: u64,
}

/// The latest claim of one batch and where it stands.
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
pub struct Batch {
    /// Batch index, from 0.
    pub index: u64,
    /// How many earlier claims of this batch were rejected.
    pub attempt: u32,
    /// First height covered.
    pub first_height: u64,
    /// Last height covered.
    pub last_height: u64,
    /// The output root claimed for `last_height`.
    pub output_root: Hash,
    /// Who claimed it.
    pub proposer: Address,
    /// The proposer's bond, locked while the claim is open.
    pub bond: u64,
    /// Height of the block that included the claim.
    pub included_at: u64,
    /// `included_at + challenge_window`: the claim can be challenged up to and including the
    /// block at this height and finalizes at the end of it (or later, after its predecessor).
    pub deadline: u64,
    /// Where the claim stands.
    pub status: BatchStatus,
    /// Challengers whose challenge of this claim failed, while it is open: a second challenge
    /// from one of them would be a replay of the same signed bytes, so it is refused rather
    /// than slashed again. Emptied once the claim is final (no challenge applies then), so
    /// the list never outlives the window.
    pub failed_challengers: Vec<Address>,
    /// The earlier claims of this batch that were rejected, oldest first: the history a
    /// watcher wants once the batch is claimed again.
    pub rejected_claims: Vec<RejectedClaim>,
}

/// A rejected claim of a batch, kept in the batch's history.
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
pub struct RejectedClaim {
    /// Its attempt.
    pub attempt: u32,
    /// Who claimed.
    pub proposer: Address,
    /// The output root it claimed.
    pub output_root: Hash,
    /// Height of the block that included it.
    pub included_at: u64,
    /// Height of the block that rejected it.
    pub rejected_at: u64,
    /// Why.
    pub reason: RejectReason,
}

impl Batch {
    /// Bonds this batch holds locked: the proposer's while open, plus the challenger's while
    /// challenged.
    pub fn locked(&self) -> u64 {
        match self.status {
            BatchStatus::Pending => self.bond,
            BatchStatus::Challenged { bond, .. } => self.bond.saturating_add(bond),
            BatchStatus::Finalized { .. } | BatchStatus::Rejected { .. } => 0,
        }
    }
}

/// Where a claim stands. Open states (`Pending`, `Challenged`) lead to final ones
/// (`Finalized`, `Rejected`); a final state never changes, but a `Rejected` batch is
/// replaced by its next claim.
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
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BatchStatus {
    /// Open to challenges; finalizes once its deadline has come and its predecessor is
    /// finalized.
    Pending,
    /// Disputed, and this node could not decide yet (it had not executed the batch). It
    /// cannot finalize until the dispute is resolved.
    Challenged {
        /// Who challenged.
        challenger: Address,
        /// Height of the block that included the challenge.
        at: u64,
        /// The challenger's locked bond.
        bond: u64,
    },
    /// Final: withdrawals can be proven against its output root.
    Finalized {
        /// Height of the block whose time step finalized it.
        at: u64,
    },
    /// Final: the claim was wrong or built on a wrong one; the batch is claimed again.
    Rejected {
        /// Height of the block that rejected it.
        at: u64,
        /// Why.
        reason: RejectReason,
    },
}

impl BatchStatus {
    /// `Pending` or `Challenged`.
    pub fn is_open(&self) -> bool {
        matches!(self, BatchStatus::Pending | BatchStatus::Challenged { .. })
    }
}

/// Why a claim was rejected.
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
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RejectReason {
    /// A challenge showed the claimed output root is not the one execution gives.
    WrongOutput {
        /// The winning challenger.
        challenger: Address,
        /// The output root this ledger's node computed.
        correct_root: Hash,
    },
    /// An earlier batch was rejected, so this one, built on it, cannot stand; its bond was
    /// returned (the claim itself was not shown wrong).
    ParentRejected {
        /// The rejected earlier batch.
        parent: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash_of;

    const CHAIN: &str = "bridge-test";

    fn withdrawals(n: u64) -> Vec<Withdrawal> {
        (0..n)
            .map(|id| Withdrawal {
                id,
                from: Keypair::deterministic("from").address(),
                to: Keypair::deterministic("to").address(),
                amount: 10 + id,
            })
            .collect()
    }

    #[test]
    fn output_root_is_the_hash_of_the_borsh_preimage() {
        let preimage = OutputPreimage {
            version: OUTPUT_VERSION,
            state_root: Hash::digest(b"state"),
            withdrawals_root: Hash::digest(b"withdrawals"),
            last_block_hash: Hash::digest(b"block"),
            data_root: Hash::digest(b"data"),
        };
        assert_eq!(codec::encode(&preimage).len(), 136);
        assert_eq!(preimage.output_root(), hash_of(&preimage));
        let mut bytes = OUTPUT_VERSION.to_le_bytes().to_vec();
        for part in [
            preimage.state_root,
            preimage.withdrawals_root,
            preimage.last_block_hash,
            preimage.data_root,
        ] {
            bytes.extend_from_slice(&part.0);
        }
        assert_eq!(preimage.output_root(), Hash::digest(&bytes));
        let other = OutputPreimage {
            version: 2,
            ..preimage
        };
        assert_ne!(other.output_root(), preimage.output_root());
    }

    #[test]
    fn withdrawal_leaf_layout() {
        let w = withdrawals(1)[0];
        let leaf = w.leaf();
        assert_eq!(leaf.len(), 80);
        assert_eq!(&leaf[..8], &0u64.to_le_bytes());
        assert_eq!(&leaf[8..40], &w.from.0);
        assert_eq!(&leaf[40..72], &w.to.0);
        assert_eq!(&leaf[72..], &10u64.to_le_bytes());
    }

    #[test]
    fn withdrawals_tree_proves_every_withdrawal() {
        assert_eq!(withdrawals_root(&[]), merkle::root(&[]));
        let all = withdrawals(5);
        let root = withdrawals_root(&all);
        for w in &all {
            let proof = withdrawal_proof(&all, w.id).unwrap();
            assert_eq!(proof.index, w.id);
            assert!(proof.verify(&root, &w.leaf()));
            let forged = Withdrawal {
                amount: w.amount + 1,
                ..*w
            };
            assert!(!proof.verify(&root, &forged.leaf()));
        }
        assert_eq!(withdrawal_proof(&all, 5), None);
        // The tree is cumulative: an earlier root does not prove later withdrawals.
        let earlier = withdrawals_root(&all[..3]);
        assert_ne!(earlier, root);
    }

    #[test]
    fn signatures_bind_every_field_and_the_chain() {
        let key = Keypair::deterministic("proposer");
        let claim = Claim::sign(
            CHAIN,
            &key,
            ClaimData {
                batch: 2,
                attempt: 1,
                first_height: 5,
                last_height: 6,
                output_root: Hash::digest(b"out"),
                bond: 7,
            },
        );
        assert_eq!(claim.verify(CHAIN), Ok(()));
        assert_eq!(
            claim.verify("other-chain"),
            Err(SignatureError::BadSignature)
        );
        let replayed = Claim {
            attempt: 2,
            ..claim
        };
        assert_eq!(replayed.verify(CHAIN), Err(SignatureError::BadSignature));

        let challenge = Challenge::sign(
            CHAIN,
            &key,
            ChallengeData {
                batch: 2,
                attempt: 1,
                output_root: Hash::digest(b"out"),
            },
        );
        assert_eq!(challenge.verify(CHAIN), Ok(()));
        let moved = Challenge {
            batch: 3,
            ..challenge
        };
        assert_eq!(moved.verify(CHAIN), Err(SignatureError::BadSignature));

        let deposit = Deposit::sign(
            CHAIN,
            &key,
            DepositData {
                to: Keypair::deterministic("to").address(),
                amount: 3,
                nonce: 0,
            },
        );
        assert_eq!(deposit.verify(CHAIN), Ok(()));
        let more = Deposit {
            amount: 4,
            ..deposit
        };
        assert_eq!(more.verify(CHAIN), Err(SignatureError::BadSignature));
        // The same bytes signed under one domain are worthless under another.
        let cross = Address::verify(
            &key.address(),
            domain::CHALLENGE,
            CHAIN,
            &codec::encode(&deposit.data()),
            &deposit.signature,
        );
        assert_eq!(cross, Err(SignatureError::BadSignature));
    }

    #[test]
    fn settlement_messages_keep_their_wire_tags() {
        use crate::interfaces::settlement::{Attestation, SettlementMessage};

        let key = Keypair::deterministic("relay");
        let root = Hash::digest(b"root");
        let w = withdrawals(1)[0];
        let messages = [
            SettlementMessage::Attestation(Attestation::sign(CHAIN, &key, 1, root)),
            SettlementMessage::Claim(Claim::sign(
                CHAIN,
                &key,
                ClaimData {
                    batch: 0,
                    attempt: 0,
                    first_height: 1,
                    last_height: 1,
                    output_root: root,
                    bond: 1,
                },
            )),
            SettlementMessage::Challenge(Challenge::sign(
                CHAIN,
                &key,
                ChallengeData {
                    batch: 0,
                    attempt: 0,
                    output_root: root,
                },
            )),
            SettlementMessage::Deposit(Deposit::sign(
                CHAIN,
                &key,
                DepositData {
                    to: key.address(),
                    amount: 1,
                    nonce: 0,
                },
            )),
            SettlementMessage::FinalizeWithdrawal(FinalizeWithdrawal {
                batch: 0,
                withdrawal: w,
                preimage: OutputPreimage {
                    version: OUTPUT_VERSION,
                    state_root: root,
                    withdrawals_root: withdrawals_root(&[w]),
                    last_block_hash: root,
                    data_root: root,
                },
                proof: withdrawal_proof(&[w], 0).unwrap(),
            }),
        ];
        let names = [
            "attestation",
            "claim",
            "challenge",
            "deposit",
            "finalize_withdrawal",
        ];
        for (tag, (message, name)) in messages.iter().zip(names).enumerate() {
            let bytes = codec::encode(message);
            // The attestation keeps tag 0: the new kinds were appended.
            assert_eq!(usize::from(bytes[0]), tag);
            assert_eq!(
                codec::decode::<SettlementMessage>(&bytes, 1 << 16).unwrap(),
                *message
            );
            let json = serde_json::to_value(message).unwrap();
            assert_eq!(json["type"], name);
            let back: SettlementMessage = serde_json::from_value(json).unwrap();
            assert_eq!(back, *message);
        }
    }
}
