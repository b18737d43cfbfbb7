//! The core's durable state: what a validator must remember across a restart so it never
//! signs two different messages for one step, and never forgets a lock.
//!
//! Stored as `borsh(StoredState::V1(DurableState))` under the key `state` of the sled tree
//! `consensus/bft`. The driver writes it and flushes it before it sends anything the core
//! emitted after it (see [`super::core::Output::Persist`]).

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::{codec, Address, Block, Hash, SignedProposal, SignedVote, VoteKind};

/// A step of a round: the three things a validator signs, in the order it signs them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub(crate) enum Step {
    /// Waiting for (or making) the round's proposal.
    Propose,
    /// Prevoted; waiting for a quorum of prevotes.
    Prevote,
    /// Precommitted; waiting for a quorum of precommits.
    Precommit,
}

impl Step {
    /// The step at which a vote of `kind` is signed.
    pub(crate) fn of_vote(kind: VoteKind) -> Step {
        match kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        }
    }
}

/// A point in the protocol, ordered by height, then round, then step. A validator signs at
/// strictly increasing positions only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub(crate) struct Position {
    /// The height.
    pub(crate) height: u64,
    /// The round.
    pub(crate) round: u32,
    /// The step.
    pub(crate) step: Step,
}

/// The block a validator is locked on (Tendermint's `lockedRound`/`lockedValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub(crate) struct Lock {
    /// Round in which it precommitted the block.
    pub(crate) round: u32,
    /// The block's hash.
    pub(crate) block_hash: Hash,
}

/// The latest block seen with a quorum of prevotes (Tendermint's `validRound`/`validValue`),
/// kept whole because the validator re-proposes it when it is the proposer.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub(crate) struct ValidBlock {
    /// Round of the quorum of prevotes.
    pub(crate) round: u32,
    /// The block.
    pub(crate) block: Block,
}

/// What a validator persists before it sends anything it signed.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub(crate) struct DurableState {
    /// The validator that signed the messages below (a state written under another key is
    /// not this validator's).
    pub(crate) validator: Address,
    /// Height being decided.
    pub(crate) height: u64,
    /// Its current round.
    pub(crate) round: u32,
    /// The last position signed at, any height: nothing at or before it is signed again,
    /// except the identical message re-sent.
    pub(crate) last_signed: Option<Position>,
    /// Lock at `height`.
    pub(crate) locked: Option<Lock>,
    /// Valid block at `height`.
    pub(crate) valid: Option<ValidBlock>,
    /// Every vote signed at `height`, in signing order: re-sent after a restart instead of
    /// being signed again.
    pub(crate) votes: Vec<SignedVote>,
    /// The latest proposal signed at `height`.
    pub(crate) proposal: Option<SignedProposal>,
}

/// The stored form, versioned so a later format can still read this one.
#[derive(Debug, BorshSerialize, BorshDeserialize)]
enum StoredState {
    V1(DurableState),
}

impl DurableState {
    /// The stored bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding a clone keeps the stored enum private without a borrowed twin type.
        codec::encode(&StoredState::V1(self.clone()))
    }

    /// Reads stored bytes (our own writes).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        codec::decode_trusted::<StoredState>(bytes).map(|StoredState::V1(state)| state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::{BlockHeader, Keypair, VoteData};

    #[test]
    fn positions_order_by_height_round_step() {
        let at = |height, round, step| Position {
            height,
            round,
            step,
        };
        assert!(at(1, 0, Step::Precommit) < at(2, 0, Step::Propose));
        assert!(at(2, 0, Step::Precommit) < at(2, 1, Step::Propose));
        assert!(at(2, 1, Step::Propose) < at(2, 1, Step::Prevote));
        assert!(at(2, 1, Step::Prevote) < at(2, 1, Step::Precommit));
    }

    #[test]
    fn state_round_trips() {
        let key = Keypair::deterministic("v");
        let block = Block {
            header: BlockHeader {
                chain_id: "c".into(),
                height: 3,
                parent_hash: Hash::ZERO,
                timestamp_ms: 5,
                proposer: key.address(),
                data_root: Hash::ZERO,
                body_size: 0,
            },
            body: vec![],
        };
        let vote = SignedVote::sign(
            "c",
            &key,
            VoteData {
                height: 3,
                round: 1,
                kind: VoteKind::Prevote,
                block_hash: Some(block.hash()),
            },
        );
        let state = DurableState {
            validator: key.address(),
            height: 3,
            round: 1,
            last_signed: Some(Position {
                height: 3,
                round: 1,
                step: Step::Prevote,
            }),
            locked: Some(Lock {
                round: 0,
                block_hash: block.hash(),
            }),
            valid: Some(ValidBlock {
                round: 0,
                block: block.clone(),
            }),
            votes: vec![vote],
            proposal: Some(SignedProposal::sign("c", &key, 1, Some(0), block)),
        };
        let bytes = state.encode();
        // The first byte is the format version (enum tag).
        assert_eq!(bytes[0], 0);
        assert_eq!(DurableState::decode(&bytes).unwrap(), state);
        assert!(DurableState::decode(&bytes[1..]).is_err());
    }
}
