//! The vote book of one height: every validator's first prevote and first precommit of each
//! round, the voting power behind each value, and the equivocations seen.
//!
//! Per `(round, kind)` a validator's first vote is kept; the same vote again is a duplicate;
//! a vote with a different value is evidence, reported once. That conflicting vote also
//! counts toward its own value (never toward "any", and at most one conflict per validator is
//! kept). This is safe: two values can only both reach more than two thirds if validators
//! with more than a third of the power voted for both, which needs an honest validator to
//! equivocate. And it is needed for liveness: Tendermint's liveness argument assumes every
//! correct validator eventually sees the votes any other correct validator counted. If each
//! node counted only the first vote it happened to receive, an equivocator sending one
//! prevote to some nodes and another to the rest could show a quorum to one honest validator
//! (which locks on it) and hide it forever from the others (which then never accept the
//! locked block's re-proposal), stalling the height for many rounds.

use std::collections::{BTreeMap, HashSet};

use lamina_primitives::{
    Address, CommitSignature, Equivocation, Hash, SignedVote, ValidatorSet, VoteKind,
};

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new vote, now counted.
    Counted,
    /// Nothing new: the same vote again, or a further conflict from a validator already
    /// convicted at this `(round, kind)`.
    Duplicate,
    /// The validator already voted differently at this `(round, kind)`: evidence. The vote
    /// counts toward its own value only.
    Conflict(Box<Equivocation>),
}

/// The votes of one kind in one round.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Each validator's first vote.
    votes: BTreeMap<Address, SignedVote>,
    /// Each equivocator's first conflicting vote.
    conflicting: BTreeMap<Address, SignedVote>,
    by_value: BTreeMap<Option<Hash>, u64>,
    /// Power of the validators that voted, each once.
    any: u64,
}

impl Tally {
    fn add(&mut self, vote: SignedVote, power: u64) -> Added {
        let first = match self.votes.get(&vote.validator) {
            Some(first) if *first == vote => return Added::Duplicate,
            Some(first) => first.clone(),
            None => {
                self.count(vote.vote.block_hash, power);
                self.any = self.any.saturating_add(power);
                self.votes.insert(vote.validator, vote);
                return Added::Counted;
            }
        };
        if self.conflicting.contains_key(&vote.validator) {
            return Added::Duplicate;
        }
        self.count(vote.vote.block_hash, power);
        self.conflicting.insert(vote.validator, vote.clone());
        Added::Conflict(Box::new(Equivocation {
            first,
            second: vote,
        }))
    }

    fn count(&mut self, value: Option<Hash>, power: u64) {
        let slot = self.by_value.entry(value).or_insert(0);
        *slot = slot.saturating_add(power);
    }

    /// Power of the votes for `value` (`None`: nil).
    pub(crate) fn power_for(&self, value: Option<Hash>) -> u64 {
        self.by_value.get(&value).copied().unwrap_or(0)
    }

    /// Power of all votes, whatever their value.
    pub(crate) fn power_any(&self) -> u64 {
        self.any
    }

    /// The values with more than two thirds of the power (at most one unless validators
    /// with more than a third of the power equivocated).
    pub(crate) fn quorum_values<'a>(
        &'a self,
        validators: &'a ValidatorSet,
    ) -> impl Iterator<Item = Option<Hash>> + 'a {
        self.by_value
            .iter()
            .filter(|(_, power)| validators.is_quorum(**power))
            .map(|(value, _)| *value)
    }

    /// The votes for `block_hash`, in address order (a validator's two votes differ in
    /// value, so each appears at most once).
    pub(crate) fn votes_for(&self, block_hash: Hash) -> Vec<&SignedVote> {
        let mut votes: Vec<&SignedVote> = self
            .votes
            .values()
            .chain(self.conflicting.values())
            .filter(|vote| vote.vote.block_hash == Some(block_hash))
            .collect();
        votes.sort_by_key(|vote| vote.validator);
        votes
    }

    /// The signatures of the votes for `block_hash`, in address order: a certificate's body.
    pub(crate) fn signatures_for(&self, block_hash: Hash) -> Vec<CommitSignature> {
        self.votes_for(block_hash)
            .into_iter()
            .map(|vote| CommitSignature {
                validator: vote.validator,
                signature: vote.signature,
            })
            .collect()
    }

    #[cfg(test)]
    fn contains(&self, vote: &SignedVote) -> bool {
        self.votes.get(&vote.validator) == Some(vote)
            || self.conflicting.get(&vote.validator) == Some(vote)
    }

    fn is_new(&self, vote: &SignedVote) -> bool {
        match self.votes.get(&vote.validator) {
            None => true,
            Some(first) if first == vote => false,
            Some(_) => !self.conflicting.contains_key(&vote.validator),
        }
    }
}

/// Prevotes and precommits of one round.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundVotes {
    /// Prevotes.
    pub(crate) prevotes: Tally,
    /// Precommits.
    pub(crate) precommits: Tally,
}

impl RoundVotes {
    fn tally(&self, kind: VoteKind) -> &Tally {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    fn tally_mut(&mut self, kind: VoteKind) -> &mut Tally {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }
}

/// All votes of one height, by round.
#[derive(Debug, Clone, Default)]
pub(crate) struct VoteBook {
    rounds: BTreeMap<u32, RoundVotes>,
    /// `(validator, round, kind)` already convicted: reported once, later conflicts ignored.
    convicted: HashSet<(Address, u32, VoteKind)>,
}

static EMPTY: RoundVotes = RoundVotes {
    prevotes: Tally {
        votes: BTreeMap::new(),
        conflicting: BTreeMap::new(),
        by_value: BTreeMap::new(),
        any: 0,
    },
    precommits: Tally {
        votes: BTreeMap::new(),
        conflicting: BTreeMap::new(),
        by_value: BTreeMap::new(),
        any: 0,
    },
};

impl VoteBook {
    /// Adds a vote (signature and signer already checked) worth `power`. A conflict is
    /// reported once per `(validator, round, kind)`: a conflict already reported elsewhere
    /// (see [`VoteBook::mark_convicted`]) is counted but comes back as a duplicate.
    pub(crate) fn add(&mut self, vote: SignedVote, power: u64) -> Added {
        let (round, kind, validator) = (vote.vote.round, vote.vote.kind, vote.validator);
        let added = self
            .rounds
            .entry(round)
            .or_default()
            .tally_mut(kind)
            .add(vote, power);
        if let Added::Conflict(_) = &added {
            if !self.convicted.insert((validator, round, kind)) {
                return Added::Duplicate;
            }
        }
        added
    }

    /// Records that `validator` was already reported for `(round, kind)` (while its votes
    /// waited in the next-height buffer), so the conflict is not reported twice.
    pub(crate) fn mark_convicted(&mut self, validator: Address, round: u32, kind: VoteKind) {
        self.convicted.insert((validator, round, kind));
    }

    /// Whether adding `vote` would change anything (a new vote or a first conflict).
    pub(crate) fn is_new(&self, vote: &SignedVote) -> bool {
        self.round(vote.vote.round)
            .tally(vote.vote.kind)
            .is_new(vote)
    }

    /// Whether this exact vote is counted.
    #[cfg(test)]
    pub(crate) fn contains(&self, vote: &SignedVote) -> bool {
        self.round(vote.vote.round)
            .tally(vote.vote.kind)
            .contains(vote)
    }

    /// The votes of `round` (empty if none).
    pub(crate) fn round(&self, round: u32) -> &RoundVotes {
        self.rounds.get(&round).unwrap_or(&EMPTY)
    }

    /// The rounds holding votes, with their votes.
    pub(crate) fn rounds(&self) -> impl Iterator<Item = (u32, &RoundVotes)> {
        self.rounds.iter().map(|(round, votes)| (*round, votes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::{Keypair, Validator, VoteData};

    fn vote(key: &Keypair, round: u32, kind: VoteKind, value: Option<Hash>) -> SignedVote {
        SignedVote::sign(
            "c",
            key,
            VoteData {
                height: 1,
                round,
                kind,
                block_hash: value,
            },
        )
    }

    #[test]
    fn counts_votes_and_reports_a_conflict_once() {
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
        let (x, y) = (Some(Hash::digest(b"x")), Some(Hash::digest(b"y")));
        let mut book = VoteBook::default();
        for key in &keys[..2] {
            assert_eq!(
                book.add(vote(key, 0, VoteKind::Prevote, x), 1),
                Added::Counted
            );
        }
        assert_eq!(book.round(0).prevotes.quorum_values(&set).count(), 0);
        let first = vote(&keys[2], 0, VoteKind::Prevote, x);
        assert!(book.is_new(&first));
        assert_eq!(book.add(first.clone(), 1), Added::Counted);
        assert!(!book.is_new(&first));
        assert!(book.contains(&first));
        assert_eq!(book.add(first.clone(), 1), Added::Duplicate);
        let second = vote(&keys[2], 0, VoteKind::Prevote, y);
        assert!(book.is_new(&second));
        let Added::Conflict(evidence) = book.add(second.clone(), 1) else {
            panic!("expected a conflict");
        };
        assert_eq!(evidence.first, first);
        assert_eq!(evidence.second, second);
        assert!(evidence.is_valid("c"));
        assert!(!book.is_new(&second));
        assert_eq!(book.add(second, 1), Added::Duplicate);
        let third = vote(&keys[2], 0, VoteKind::Prevote, None);
        assert!(!book.is_new(&third));
        assert_eq!(book.add(third, 1), Added::Duplicate);
        // The first conflict counts toward its own value, not toward "any"; later ones not
        // at all.
        assert_eq!(book.round(0).prevotes.power_for(x), 3);
        assert_eq!(book.round(0).prevotes.power_for(y), 1);
        assert_eq!(book.round(0).prevotes.power_for(None), 0);
        assert_eq!(book.round(0).prevotes.power_any(), 3);
        assert_eq!(book.round(0).prevotes.votes_for(y.unwrap()).len(), 1);
        assert_eq!(
            book.round(0)
                .prevotes
                .quorum_values(&set)
                .collect::<Vec<_>>(),
            vec![x]
        );
        // Another kind or round is independent.
        assert_eq!(
            book.add(vote(&keys[2], 0, VoteKind::Precommit, y), 1),
            Added::Counted
        );
        assert_eq!(book.round(1).precommits.power_any(), 0);
        assert_eq!(book.round(0).prevotes.signatures_for(x.unwrap()).len(), 3);
    }
}
