//! The Tendermint state machine (Buchman, Kwon, Milosevic, "The latest gossip on BFT
//! consensus", 2018, Algorithm 1), for validators with weighted voting power.
//!
//! Synchronous and deterministic: no clock, no channel, no I/O. A driver feeds it [`Input`]s
//! (messages whose signatures it has checked, timeouts it has timed, blocks it has built) and
//! carries out the [`Output`]s that [`Core::handle`] returns, **in order**: in particular a
//! [`Output::Persist`] must be durable (written and flushed) before anything after it in the
//! same list is sent, because the messages that follow it were signed on the strength of
//! that state.
//!
//! Thresholds use voting power: "2f + 1" is more than two thirds of the total power
//! ([`ValidatorSet::is_quorum`]) and "f + 1" is more than one third.
//!
//! Beyond the paper:
//! - **Double-sign protection.** The core remembers the last `(height, round, step)` it
//!   signed at and never signs at or before it again, except to re-send the very message it
//!   signed. That position, the messages signed at the current height and the lock are the
//!   [`DurableState`] it asks the driver to persist; a core built from it after a restart
//!   re-sends what it signed rather than signing anew, and keeps its lock.
//! - **Retransmission.** Links lose messages, so the propose timer of the current round is
//!   re-armed each time it fires while the round lasts, and each firing re-sends the round's
//!   proposal (if ours) and every vote we signed at this height: all of them, because a peer
//!   still in an earlier round needs our votes of that round to leave it.
//! - **Next-height buffer.** Messages for `height + 1` (one proposal per round and one vote
//!   per validator, round and kind, for the first rounds) are kept and replayed when that
//!   height starts, so a node that commits a little after the others still sees the next
//!   proposal.
//! - **Falling behind.** More than a third of the power at higher heights, or a quorum of
//!   precommits for a block we do not have, makes the core ask the driver to sync.
//! - **Proof of lock.** A proposer sending a proposal with a `pol_round` also re-sends the
//!   prevotes of that round for the block, so validators that missed some of them (lost
//!   messages, or an equivocator's vote that reached only part of the network) can still
//!   check the proof.
//! - **Commit in any round** uses any block of the height that the driver judged valid
//!   with the precommitted hash, whichever proposal carried it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lamina_primitives::interfaces::consensus::ConsensusMessage;
use lamina_primitives::{
    Address, Block, Certificate, Equivocation, Hash, Keypair, ProposalData, SignedProposal,
    SignedVote, ValidatorSet, VoteData, VoteKind,
};

use super::proposer::ProposerSchedule;
use super::state::{DurableState, Lock, Position, Step, ValidBlock};
use super::votes::{Added, VoteBook};

/// Votes of the current height are kept for rounds up to this far above the current round;
/// later ones only count towards skipping rounds (a Byzantine validator cannot make us store
/// votes for every round there is).
pub(crate) const VOTE_ROUNDS_AHEAD: u32 = 64;
/// Proposals of the current height are kept for rounds up to this far ahead (they carry
/// whole blocks).
pub(crate) const PROPOSAL_ROUNDS_AHEAD: u32 = 4;
/// Rounds of the next height whose messages are buffered.
pub(crate) const NEXT_HEIGHT_ROUNDS: u32 = 8;
/// Proposals kept per round. An honest proposer signs one; an equivocating one may sign
/// several, and the rules match whichever gathers the votes, so a second is kept too (but
/// not an unbounded number).
const PROPOSALS_PER_ROUND: usize = 2;

/// Timeout lengths: `base + round × increase`, so rounds lengthen until the network's real
/// delays fit in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// Base of the propose timeout, in milliseconds.
    pub(crate) propose_ms: u64,
    /// Base of the prevote and precommit timeouts, in milliseconds.
    pub(crate) vote_ms: u64,
    /// Added per round, in milliseconds.
    pub(crate) increase_ms: u64,
}

impl Timeouts {
    /// How long the `step` timeout of `round` lasts.
    pub(crate) fn duration(&self, step: Step, round: u32) -> Duration {
        let base = match step {
            Step::Propose => self.propose_ms,
            Step::Prevote | Step::Precommit => self.vote_ms,
        };
        Duration::from_millis(
            base.saturating_add(u64::from(round).saturating_mul(self.increase_ms)),
        )
    }
}

/// What the core is configured with.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// The chain id every signature is bound to.
    pub(crate) chain_id: String,
    /// The validators (genesis).
    pub(crate) validators: ValidatorSet,
    /// Timeout lengths.
    pub(crate) timeouts: Timeouts,
}

/// What the driver feeds the core.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// Start deciding `height`, on top of the committed block `parent`. Stale starts (at or
    /// below the current height) are ignored.
    StartHeight {
        /// The height.
        height: u64,
        /// Hash of the committed block below it.
        parent: Hash,
    },
    /// A proposal whose signature the driver checked against the proposer of its
    /// `(height, round)`, with the driver's verdict on its block (Tendermint's `valid(v)`),
    /// or `None` when the driver has not checked the block yet: the core then answers
    /// [`Output::CheckProposal`] if the proposal matters to it.
    Proposal {
        /// The proposal.
        proposal: SignedProposal,
        /// Whether its block is valid on the current tip; `None`: not checked.
        valid: Option<bool>,
    },
    /// A vote whose signature the driver checked.
    Vote(SignedVote),
    /// The block the driver built after [`Output::BuildBlock`].
    BlockBuilt {
        /// Height it was asked for.
        height: u64,
        /// Round it was asked for.
        round: u32,
        /// The block.
        block: Block,
    },
    /// A timeout scheduled with [`Output::ScheduleTimeout`] expired.
    Timeout {
        /// Its height.
        height: u64,
        /// Its round.
        round: u32,
        /// Its step.
        step: Step,
    },
}

/// What the core asks the driver to do, in order.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// Write this state durably (and flush it) before sending anything that follows.
    Persist(Box<DurableState>),
    /// Send to every peer.
    Broadcast(Box<ConsensusMessage>),
    /// Feed back [`Input::Timeout`] for `(height, round, step)` after `after`.
    ScheduleTimeout {
        /// Its height.
        height: u64,
        /// Its round.
        round: u32,
        /// Its step.
        step: Step,
        /// When, from now.
        after: Duration,
    },
    /// We propose at `(height, round)` and have no valid block to re-propose: build a block on
    /// `parent` and feed it back with [`Input::BlockBuilt`].
    BuildBlock {
        /// Its height.
        height: u64,
        /// Its round.
        round: u32,
        /// The block to build on.
        parent: Hash,
    },
    /// Check this proposal's block and feed it back with its verdict.
    CheckProposal(Box<SignedProposal>),
    /// The height is decided: store the block with its certificate, then (after the commit
    /// pause) start the next height.
    Commit {
        /// The block.
        block: Box<Block>,
        /// Precommits of more than two thirds of the power for it, in one round.
        certificate: Certificate,
    },
    /// Others are ahead: fetch committed blocks from `from_height` on.
    Behind {
        /// First height this node lacks.
        from_height: u64,
    },
    /// A validator signed two different votes for one height, round and kind.
    Evidence(Box<Equivocation>),
}

/// A proposal of the current height, as far as the rules need it.
#[derive(Debug, Clone)]
struct Proposed {
    data: ProposalData,
    valid: bool,
}

/// Messages for the next height, replayed when it starts.
#[derive(Debug, Clone, Default)]
struct NextHeight {
    proposals: BTreeMap<u32, SignedProposal>,
    votes: BTreeMap<(Address, u32, u8), SignedVote>,
    /// The first conflicting vote of an equivocator (already reported), replayed too so
    /// that it counts toward its value.
    conflicting: BTreeMap<(Address, u32, u8), SignedVote>,
}

fn kind_key(kind: VoteKind) -> u8 {
    match kind {
        VoteKind::Prevote => 0,
        VoteKind::Precommit => 1,
    }
}

impl NextHeight {
    fn vote_key(vote: &SignedVote) -> (Address, u32, u8) {
        (vote.validator, vote.vote.round, kind_key(vote.vote.kind))
    }

    fn vote_is_new(&self, vote: &SignedVote) -> bool {
        if vote.vote.round >= NEXT_HEIGHT_ROUNDS {
            return false;
        }
        let key = Self::vote_key(vote);
        match self.votes.get(&key) {
            None => true,
            Some(first) if first == vote => false,
            Some(_) => !self.conflicting.contains_key(&key),
        }
    }

    fn proposal_is_new(&self, proposal: &SignedProposal) -> bool {
        proposal.data.round < NEXT_HEIGHT_ROUNDS
            && !self.proposals.contains_key(&proposal.data.round)
    }
}

/// The Tendermint state machine of one validator (or observer).
#[derive(Debug)]
pub(crate) struct Core {
    chain_id: String,
    validators: ValidatorSet,
    schedule: ProposerSchedule,
    timeouts: Timeouts,
    /// Signing key; `None` for an observer, which follows and commits but never signs.
    key: Option<Keypair>,
    /// `key`'s address.
    me: Option<Address>,

    /// Height being decided; 0 before the first [`Input::StartHeight`].
    height: u64,
    parent: Hash,
    round: u32,
    step: Step,
    decided: bool,
    locked: Option<Lock>,
    /// Valid round and block hash (the block is in `blocks`).
    valid: Option<(u32, Hash)>,
    /// The proposals of each round, in arrival order (at most [`PROPOSALS_PER_ROUND`]).
    proposals: BTreeMap<u32, Vec<Proposed>>,
    /// Blocks of this height's proposals the driver judged valid, by hash.
    blocks: HashMap<Hash, Block>,
    votes: VoteBook,
    /// Once-only rules of the current round (lines 34, 36 and 47 of Algorithm 1).
    prevote_timer_set: bool,
    polka_seen: bool,
    precommit_timer_set: bool,
    /// Highest round each validator sent something in at this height (round skipping).
    highest_round: HashMap<Address, u32>,
    /// Highest height above ours each validator sent something for.
    ahead: HashMap<Address, u64>,
    /// Whether this height's sync request went out (repeated on each retransmission).
    behind: bool,
    next: NextHeight,

    /// Last position signed at, any height.
    last_signed: Option<Position>,
    /// Votes signed at this height, in order.
    own_votes: Vec<SignedVote>,
    /// Latest proposal signed at this height.
    own_proposal: Option<SignedProposal>,
    /// A restored state for a height not started yet.
    restored: Option<DurableState>,
}

impl Core {
    /// A core signing with `key` (an observer without one, or when the key is not a
    /// validator), resuming from `restored` (the last [`Output::Persist`]) after a restart.
    pub(crate) fn new(
        params: Params,
        key: Option<Keypair>,
        restored: Option<DurableState>,
    ) -> Self {
        let key = key.filter(|key| params.validators.power_of(&key.address()).is_some());
        let me = key.as_ref().map(Keypair::address);
        // A state written under another key says nothing about what this key signed.
        let restored = restored.filter(|state| Some(state.validator) == me);
        Core {
            chain_id: params.chain_id,
            schedule: ProposerSchedule::new(&params.validators),
            validators: params.validators,
            timeouts: params.timeouts,
            key,
            me,
            height: 0,
            parent: Hash::ZERO,
            round: 0,
            step: Step::Propose,
            decided: false,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            blocks: HashMap::new(),
            votes: VoteBook::default(),
            prevote_timer_set: false,
            polka_seen: false,
            precommit_timer_set: false,
            highest_round: HashMap::new(),
            ahead: HashMap::new(),
            behind: false,
            next: NextHeight::default(),
            last_signed: restored.as_ref().and_then(|state| state.last_signed),
            own_votes: Vec::new(),
            own_proposal: None,
            restored,
        }
    }

    /// Height being decided (0 before the first start).
    #[cfg(test)]
    pub(crate) fn height(&self) -> u64 {
        self.height
    }

    /// Current round.
    pub(crate) fn round(&self) -> u32 {
        self.round
    }

    /// Whether the current height is decided (the driver is committing it).
    #[cfg(test)]
    pub(crate) fn is_decided(&self) -> bool {
        self.decided
    }

    /// The proposer of `(height, round)`.
    pub(crate) fn proposer(&self, height: u64, round: u32) -> Option<Address> {
        self.schedule.proposer(height, round)
    }

    /// Whether feeding `message` (signature already checked) would tell the core anything
    /// new: the driver relays new messages and ignores the rest.
    pub(crate) fn is_new(&self, message: &ConsensusMessage) -> bool {
        match message {
            ConsensusMessage::Vote(vote) => self.vote_is_new(vote),
            ConsensusMessage::Proposal(proposal) => self.proposal_is_new(proposal),
        }
    }

    fn vote_is_new(&self, vote: &SignedVote) -> bool {
        let (height, round) = (vote.vote.height, vote.vote.round);
        if height == 0 || height < self.height {
            return false;
        }
        if height == self.height {
            if self.decided {
                return false;
            }
            if round > self.round.saturating_add(VOTE_ROUNDS_AHEAD) {
                return self.raises_round(&vote.validator, round);
            }
            return self.votes.is_new(vote);
        }
        (height == self.height.saturating_add(1) && self.next.vote_is_new(vote))
            || self.raises_height(&vote.validator, height)
    }

    fn proposal_is_new(&self, proposal: &SignedProposal) -> bool {
        let (height, round) = (proposal.data.height, proposal.data.round);
        let Some(signer) = self.schedule.proposer(height, round) else {
            return false;
        };
        if height == 0 || height < self.height {
            return false;
        }
        if height == self.height {
            if self.decided {
                return false;
            }
            if round > self.round.saturating_add(PROPOSAL_ROUNDS_AHEAD) {
                return self.raises_round(&signer, round);
            }
            return self.has_room_for(&proposal.data);
        }
        (height == self.height.saturating_add(1) && self.next.proposal_is_new(proposal))
            || self.raises_height(&signer, height)
    }

    /// Whether a proposal with `data` would be kept: not known yet, and its round not full.
    fn has_room_for(&self, data: &ProposalData) -> bool {
        self.proposals.get(&data.round).is_none_or(|kept| {
            kept.len() < PROPOSALS_PER_ROUND && kept.iter().all(|p| p.data != *data)
        })
    }

    fn raises_round(&self, validator: &Address, round: u32) -> bool {
        self.highest_round
            .get(validator)
            .is_none_or(|&seen| round > seen)
    }

    fn raises_height(&self, validator: &Address, height: u64) -> bool {
        self.ahead.get(validator).is_none_or(|&seen| height > seen)
    }

    /// Processes one input; the outputs must be carried out in order.
    pub(crate) fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::StartHeight { height, parent } => self.start_height(height, parent, &mut out),
            Input::Proposal { proposal, valid } => self.on_proposal(proposal, valid, &mut out),
            Input::Vote(vote) => self.on_vote(vote, &mut out),
            Input::BlockBuilt {
                height,
                round,
                block,
            } => self.on_block_built(height, round, block, &mut out),
            Input::Timeout {
                height,
                round,
                step,
            } => self.on_timeout(height, round, step, &mut out),
        }
        self.progress(&mut out);
        out
    }

    // ---- inputs ----

    fn start_height(&mut self, height: u64, parent: Hash, out: &mut Vec<Output>) {
        if self.height != 0 && height <= self.height {
            return;
        }
        let buffered = std::mem::take(&mut self.next);
        // Before the first start the buffer holds height 1's messages.
        let replay = height == self.height.saturating_add(1);
        self.height = height;
        self.parent = parent;
        self.decided = false;
        self.locked = None;
        self.valid = None;
        self.proposals.clear();
        self.blocks.clear();
        self.votes = VoteBook::default();
        self.highest_round.clear();
        self.ahead.retain(|_, seen| *seen > height);
        self.behind = false;
        self.own_votes.clear();
        self.own_proposal = None;

        match self.restored.take() {
            Some(state) if state.height == height => self.restore(state, out),
            Some(state) => {
                // A state for a later height (the block store is behind the consensus state)
                // waits for that height; an older one is finished.
                if state.height > height {
                    self.restored = Some(state);
                }
                self.enter_round(0, Step::Propose, out);
            }
            None => self.enter_round(0, Step::Propose, out),
        }

        if replay {
            for vote in buffered.votes.into_values() {
                self.on_vote(vote, out);
            }
            for vote in buffered.conflicting.into_values() {
                // Reported when it was buffered.
                self.votes
                    .mark_convicted(vote.validator, vote.vote.round, vote.vote.kind);
                self.on_vote(vote, out);
            }
            for proposal in buffered.proposals.into_values() {
                self.on_proposal(proposal, None, out);
            }
        }
        self.check_ahead(out);
    }

    /// Resumes `state` (this height's, persisted before a restart): the lock, the valid block,
    /// the signed messages (re-sent, never signed again) and the round.
    fn restore(&mut self, state: DurableState, out: &mut Vec<Output>) {
        let height = self.height;
        self.locked = state.locked;
        if let Some(valid) = state.valid {
            let hash = valid.block.hash();
            self.blocks.insert(hash, valid.block);
            self.valid = Some((valid.round, hash));
        }
        for vote in state.votes {
            if Some(vote.validator) != self.me || vote.vote.height != height {
                continue;
            }
            let power = self.validators.power_of(&vote.validator).unwrap_or(0);
            self.votes.add(vote.clone(), power);
            self.own_votes.push(vote);
        }
        if let Some(proposal) = state.proposal.filter(|p| p.data.height == height) {
            self.store_proposal(proposal.clone(), true);
            self.own_proposal = Some(proposal);
        }
        let signed_here = self.last_signed.filter(|pos| pos.height == height);
        let round = state
            .round
            .max(signed_here.map_or(0, |position| position.round));
        let step = match signed_here {
            Some(position) if position.round == round => position.step,
            _ => Step::Propose,
        };
        self.enter_round(round, step, out);
        self.rebroadcast(out);
    }

    fn on_vote(&mut self, vote: SignedVote, out: &mut Vec<Output>) {
        let Some(power) = self.validators.power_of(&vote.validator) else {
            return;
        };
        let (height, round) = (vote.vote.height, vote.vote.round);
        if height == 0 || height < self.height {
            return;
        }
        if height > self.height {
            self.note_ahead(vote.validator, height);
            if height == self.height.saturating_add(1) {
                self.buffer_vote(vote, out);
            }
            self.check_ahead(out);
            return;
        }
        if self.decided {
            return;
        }
        self.note_round(vote.validator, round);
        if round > self.round.saturating_add(VOTE_ROUNDS_AHEAD) {
            return;
        }
        if let Added::Conflict(evidence) = self.votes.add(vote, power) {
            out.push(Output::Evidence(evidence));
        }
    }

    fn buffer_vote(&mut self, vote: SignedVote, out: &mut Vec<Output>) {
        if vote.vote.round >= NEXT_HEIGHT_ROUNDS {
            return;
        }
        let key = NextHeight::vote_key(&vote);
        match self.next.votes.get(&key) {
            None => {
                self.next.votes.insert(key, vote);
            }
            Some(first) if *first == vote => {}
            Some(first) => {
                if let Entry::Vacant(slot) = self.next.conflicting.entry(key) {
                    out.push(Output::Evidence(Box::new(Equivocation {
                        first: first.clone(),
                        second: vote.clone(),
                    })));
                    slot.insert(vote);
                }
            }
        }
    }

    fn on_proposal(
        &mut self,
        proposal: SignedProposal,
        valid: Option<bool>,
        out: &mut Vec<Output>,
    ) {
        let (height, round) = (proposal.data.height, proposal.data.round);
        let Some(signer) = self.schedule.proposer(height, round) else {
            return;
        };
        // The driver checked the signature over `data`; `data` must describe this block.
        if proposal.data.height != proposal.block.height()
            || proposal.data.block_hash != proposal.block.hash()
        {
            return;
        }
        if height == 0 || height < self.height {
            return;
        }
        if height > self.height {
            self.note_ahead(signer, height);
            if height == self.height.saturating_add(1) && round < NEXT_HEIGHT_ROUNDS {
                self.next.proposals.entry(round).or_insert(proposal);
            }
            self.check_ahead(out);
            return;
        }
        if self.decided {
            return;
        }
        self.note_round(signer, round);
        if round > self.round.saturating_add(PROPOSAL_ROUNDS_AHEAD)
            || !self.has_room_for(&proposal.data)
        {
            return;
        }
        match valid {
            None => out.push(Output::CheckProposal(Box::new(proposal))),
            Some(valid) => self.store_proposal(proposal, valid),
        }
    }

    fn store_proposal(&mut self, proposal: SignedProposal, valid: bool) {
        if !self.has_room_for(&proposal.data) {
            return;
        }
        if valid {
            self.blocks
                .entry(proposal.data.block_hash)
                .or_insert(proposal.block);
        }
        self.proposals
            .entry(proposal.data.round)
            .or_default()
            .push(Proposed {
                data: proposal.data,
                valid,
            });
    }

    fn on_block_built(&mut self, height: u64, round: u32, block: Block, out: &mut Vec<Output>) {
        if height != self.height
            || round != self.round
            || self.decided
            || self.step != Step::Propose
            || block.height() != height
            || self.me.is_none()
            || self.schedule.proposer(height, round) != self.me
            || self
                .own_proposal
                .as_ref()
                .is_some_and(|p| p.data.height == height && p.data.round == round)
        {
            return;
        }
        self.sign_proposal(block, None, out);
    }

    fn on_timeout(&mut self, height: u64, round: u32, step: Step, out: &mut Vec<Output>) {
        if height != self.height || round != self.round || self.decided {
            return;
        }
        match step {
            Step::Propose => {
                // The propose timer doubles as the retransmission timer of the round.
                self.rebroadcast(out);
                if self.behind {
                    out.push(Output::Behind {
                        from_height: self.height,
                    });
                }
                if self.step == Step::Propose {
                    self.vote(VoteKind::Prevote, None, out);
                    self.step = Step::Prevote;
                }
                self.schedule(Step::Propose, out);
            }
            Step::Prevote => {
                if self.step == Step::Prevote {
                    self.vote(VoteKind::Precommit, None, out);
                    self.step = Step::Precommit;
                }
            }
            Step::Precommit => self.enter_round(round.saturating_add(1), Step::Propose, out),
        }
    }

    // ---- the rules ----

    /// Applies every rule that holds until none does.
    fn progress(&mut self, out: &mut Vec<Output>) {
        loop {
            if self.height == 0 || self.decided || self.try_commit(out) {
                return;
            }
            if self.try_round_skip(out) {
                continue;
            }
            let fired = self.on_proposal_rule(out)
                | self.on_prevotes_any(out)
                | self.on_polka(out)
                | self.on_polka_nil(out)
                | self.on_precommits_any(out);
            if !fired {
                return;
            }
        }
    }

    /// Lines 49-54: a quorum of precommits for a block we hold, in any round, decides it.
    fn try_commit(&mut self, out: &mut Vec<Output>) -> bool {
        let mut decided = None;
        let mut missing = false;
        'rounds: for (round, votes) in self.votes.rounds() {
            for value in votes.precommits.quorum_values(&self.validators) {
                let Some(hash) = value else { continue };
                if self.blocks.contains_key(&hash) {
                    decided = Some((round, hash));
                    break 'rounds;
                }
                missing = true;
            }
        }
        let Some((round, block_hash)) = decided else {
            if missing && !self.behind {
                // Others decided a block we lack (or judged invalid): fetch it.
                self.behind = true;
                out.push(Output::Behind {
                    from_height: self.height,
                });
            }
            return false;
        };
        let Some(block) = self.blocks.get(&block_hash).cloned() else {
            return false;
        };
        let certificate = Certificate {
            height: self.height,
            round,
            block_hash,
            signatures: self
                .votes
                .round(round)
                .precommits
                .signatures_for(block_hash),
        };
        self.decided = true;
        out.push(Output::Commit {
            block: Box::new(block),
            certificate,
        });
        true
    }

    /// Line 55: more than a third of the power in higher rounds moves us to the highest round
    /// that still has more than a third of the power at or above it. Counting "at or above"
    /// rather than "exactly at" keeps one entry per validator, and still needs an honest
    /// validator to be that far.
    fn try_round_skip(&mut self, out: &mut Vec<Output>) -> bool {
        let mut above: Vec<(u32, u64)> = self
            .highest_round
            .iter()
            .filter(|(_, &round)| round > self.round)
            .map(|(validator, &round)| (round, self.validators.power_of(validator).unwrap_or(0)))
            .collect();
        above.sort_unstable_by(|a, b| b.cmp(a));
        let total = u128::from(self.validators.total_power());
        let mut power: u128 = 0;
        for (round, weight) in above {
            power += u128::from(weight);
            if power * 3 > total {
                self.enter_round(round, Step::Propose, out);
                return true;
            }
        }
        false
    }

    /// Lines 22-33: prevote on the round's proposal (the first one that a rule applies to).
    fn on_proposal_rule(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some(kept) = self.proposals.get(&self.round) else {
            return false;
        };
        let mut decision = None;
        for proposed in kept {
            let (hash, valid) = (proposed.data.block_hash, proposed.valid);
            let acceptable = match proposed.data.pol_round {
                None => valid && self.locked.is_none_or(|lock| lock.block_hash == hash),
                Some(pol_round) if pol_round < self.round => {
                    let polka = self.votes.round(pol_round).prevotes.power_for(Some(hash));
                    if !self.validators.is_quorum(polka) {
                        // Wait for the proof of lock (or the propose timeout).
                        continue;
                    }
                    valid
                        && self
                            .locked
                            .is_none_or(|lock| lock.round <= pol_round || lock.block_hash == hash)
                }
                // A proof of lock from this round or a later one proves nothing.
                Some(_) => continue,
            };
            decision = Some(acceptable.then_some(hash));
            break;
        }
        let Some(value) = decision else {
            return false;
        };
        self.vote(VoteKind::Prevote, value, out);
        self.step = Step::Prevote;
        true
    }

    /// Line 34: a quorum of prevotes of any kind starts the prevote timeout.
    fn on_prevotes_any(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Prevote || self.prevote_timer_set {
            return false;
        }
        let any = self.votes.round(self.round).prevotes.power_any();
        if !self.validators.is_quorum(any) {
            return false;
        }
        self.prevote_timer_set = true;
        self.schedule(Step::Prevote, out);
        true
    }

    /// Lines 36-43: a quorum of prevotes for the round's valid proposal locks it (if we are
    /// still at prevote) and makes it the valid block.
    fn on_polka(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step < Step::Prevote || self.polka_seen {
            return false;
        }
        let prevotes = &self.votes.round(self.round).prevotes;
        let Some(hash) = self.proposals.get(&self.round).and_then(|kept| {
            kept.iter()
                .find(|p| {
                    p.valid
                        && self
                            .validators
                            .is_quorum(prevotes.power_for(Some(p.data.block_hash)))
                })
                .map(|p| p.data.block_hash)
        }) else {
            return false;
        };
        self.polka_seen = true;
        self.valid = Some((self.round, hash));
        if self.step == Step::Prevote {
            self.locked = Some(Lock {
                round: self.round,
                block_hash: hash,
            });
            // The persist inside `vote` carries the new lock with the precommit.
            self.vote(VoteKind::Precommit, Some(hash), out);
            self.step = Step::Precommit;
        } else {
            self.persist(out);
        }
        true
    }

    /// Lines 44-46: a quorum of nil prevotes: precommit nil.
    fn on_polka_nil(&mut self, out: &mut Vec<Output>) -> bool {
        if self.step != Step::Prevote
            || !self
                .validators
                .is_quorum(self.votes.round(self.round).prevotes.power_for(None))
        {
            return false;
        }
        self.vote(VoteKind::Precommit, None, out);
        self.step = Step::Precommit;
        true
    }

    /// Line 47: a quorum of precommits of any kind starts the precommit timeout.
    fn on_precommits_any(&mut self, out: &mut Vec<Output>) -> bool {
        if self.precommit_timer_set {
            return false;
        }
        let any = self.votes.round(self.round).precommits.power_any();
        if !self.validators.is_quorum(any) {
            return false;
        }
        self.precommit_timer_set = true;
        self.schedule(Step::Precommit, out);
        true
    }

    // ---- rounds, signing, bookkeeping ----

    /// Enters `round` at `step` (`Propose` for a fresh round; a restored round resumes at the
    /// step last signed).
    fn enter_round(&mut self, round: u32, step: Step, out: &mut Vec<Output>) {
        self.round = round;
        self.step = step;
        self.prevote_timer_set = false;
        self.polka_seen = false;
        self.precommit_timer_set = false;
        if step == Step::Propose {
            self.propose(out);
        }
        self.schedule(Step::Propose, out);
    }

    /// Lines 14-19: the proposer re-proposes its valid block, or asks for a new one.
    fn propose(&mut self, out: &mut Vec<Output>) {
        let Some(me) = self.me else { return };
        if self.schedule.proposer(self.height, self.round) != Some(me) {
            return;
        }
        if let Some(proposal) = &self.own_proposal {
            if proposal.data.height == self.height && proposal.data.round == self.round {
                // Signed before a restart: send the same one again.
                self.send_proposal(proposal, out);
                return;
            }
        }
        if !self.may_sign(Step::Propose) {
            return;
        }
        if let Some((valid_round, hash)) = self.valid {
            if let Some(block) = self.blocks.get(&hash).cloned() {
                self.sign_proposal(block, Some(valid_round), out);
                return;
            }
        }
        out.push(Output::BuildBlock {
            height: self.height,
            round: self.round,
            parent: self.parent,
        });
    }

    fn may_sign(&self, step: Step) -> bool {
        let position = Position {
            height: self.height,
            round: self.round,
            step,
        };
        self.last_signed.is_none_or(|last| position > last)
    }

    fn sign_proposal(&mut self, block: Block, pol_round: Option<u32>, out: &mut Vec<Output>) {
        if !self.may_sign(Step::Propose) {
            return;
        }
        let Some(key) = &self.key else { return };
        let proposal = SignedProposal::sign(&self.chain_id, key, self.round, pol_round, block);
        self.last_signed = Some(Position {
            height: self.height,
            round: self.round,
            step: Step::Propose,
        });
        self.own_proposal = Some(proposal.clone());
        self.store_proposal(proposal.clone(), true);
        self.persist(out);
        self.send_proposal(&proposal, out);
    }

    /// Sends our proposal, with the prevotes proving its lock if it re-proposes a block.
    fn send_proposal(&self, proposal: &SignedProposal, out: &mut Vec<Output>) {
        out.push(Output::Broadcast(Box::new(ConsensusMessage::Proposal(
            Box::new(proposal.clone()),
        ))));
        if let Some(pol_round) = proposal.data.pol_round {
            for vote in self
                .votes
                .round(pol_round)
                .prevotes
                .votes_for(proposal.data.block_hash)
            {
                out.push(Output::Broadcast(Box::new(ConsensusMessage::Vote(
                    vote.clone(),
                ))));
            }
        }
    }

    /// Signs and sends our vote of `kind` for `value` in the current round, unless this
    /// validator already signed at this step: then only the identical vote is re-sent.
    fn vote(&mut self, kind: VoteKind, value: Option<Hash>, out: &mut Vec<Output>) {
        let Some(me) = self.me else { return };
        let data = VoteData {
            height: self.height,
            round: self.round,
            kind,
            block_hash: value,
        };
        if let Some(signed) = self.own_votes.iter().find(|v| {
            v.vote.height == data.height && v.vote.round == data.round && v.vote.kind == kind
        }) {
            if signed.vote == data {
                out.push(Output::Broadcast(Box::new(ConsensusMessage::Vote(
                    signed.clone(),
                ))));
            } else {
                tracing::warn!(
                    height = data.height,
                    round = data.round,
                    ?kind,
                    "refusing to sign a vote conflicting with one already signed"
                );
            }
            return;
        }
        let step = Step::of_vote(kind);
        if !self.may_sign(step) {
            tracing::warn!(
                height = data.height,
                round = data.round,
                ?kind,
                last_signed = ?self.last_signed,
                "refusing to sign at or before the last signed step"
            );
            return;
        }
        let Some(key) = &self.key else { return };
        let vote = SignedVote::sign(&self.chain_id, key, data);
        self.last_signed = Some(Position {
            height: self.height,
            round: self.round,
            step,
        });
        let power = self.validators.power_of(&me).unwrap_or(0);
        self.votes.add(vote.clone(), power);
        self.own_votes.push(vote.clone());
        self.persist(out);
        out.push(Output::Broadcast(Box::new(ConsensusMessage::Vote(vote))));
    }

    /// Re-sends the round's proposal (if ours) and every vote signed at this height.
    fn rebroadcast(&self, out: &mut Vec<Output>) {
        if let Some(proposal) = &self.own_proposal {
            if proposal.data.height == self.height && proposal.data.round == self.round {
                self.send_proposal(proposal, out);
            }
        }
        for vote in &self.own_votes {
            out.push(Output::Broadcast(Box::new(ConsensusMessage::Vote(
                vote.clone(),
            ))));
        }
    }

    fn persist(&self, out: &mut Vec<Output>) {
        let Some(validator) = self.me else { return };
        let valid = self.valid.and_then(|(round, hash)| {
            self.blocks.get(&hash).map(|block| ValidBlock {
                round,
                block: block.clone(),
            })
        });
        out.push(Output::Persist(Box::new(DurableState {
            validator,
            height: self.height,
            round: self.round,
            last_signed: self.last_signed,
            locked: self.locked,
            valid,
            votes: self.own_votes.clone(),
            proposal: self.own_proposal.clone(),
        })));
    }

    fn schedule(&self, step: Step, out: &mut Vec<Output>) {
        out.push(Output::ScheduleTimeout {
            height: self.height,
            round: self.round,
            step,
            after: self.timeouts.duration(step, self.round),
        });
    }

    fn note_round(&mut self, validator: Address, round: u32) {
        let seen = self.highest_round.entry(validator).or_insert(round);
        *seen = (*seen).max(round);
    }

    fn note_ahead(&mut self, validator: Address, height: u64) {
        let seen = self.ahead.entry(validator).or_insert(height);
        *seen = (*seen).max(height);
    }

    /// More than a third of the power at higher heights: at least one honest validator
    /// committed what we have not, so ask for the blocks.
    fn check_ahead(&mut self, out: &mut Vec<Output>) {
        if self.behind || self.decided || self.height == 0 {
            return;
        }
        let power: u128 = self
            .ahead
            .iter()
            .filter(|(_, &height)| height > self.height)
            .map(|(validator, _)| u128::from(self.validators.power_of(validator).unwrap_or(0)))
            .sum();
        if power * 3 > u128::from(self.validators.total_power()) {
            self.behind = true;
            out.push(Output::Behind {
                from_height: self.height,
            });
        }
    }
}
