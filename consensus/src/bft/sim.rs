//! Simulation of the bft core: validators (and an observer) driven by a virtual clock over a
//! seeded network, with one Byzantine validator and validators that restart from their
//! persisted state.
//!
//! - **Network.** Every message is delayed (2-40 ms; 2-500 ms during the bad period), hence
//!   reordered; 5% are duplicated; during a bad period of 1 to 6 s a per-run share of 5-30% is
//!   dropped. Then it heals.
//! - **Gossip.** Honest nodes relay each message new to them, to every peer or, in half of the
//!   runs, to each peer with a per-run probability (a sparse mesh), so relaying cannot be
//!   relied on to repair what the adversary splits.
//! - **Equivocator.** It runs an honest core but signs a conflicting twin of everything it
//!   sends: the other value of each vote (nil for a block, a made-up block for nil) and another
//!   block for each fresh proposal. Each peer consistently gets one of the two; a precommit for
//!   a block reaches a single peer, so that one node may commit while the others move on,
//!   which is where locks must hold.
//! - **Driver.** The simulation checks signatures, judges a proposal valid when its block is
//!   the next one on the node's tip with a matching data root, times timeouts, keeps each
//!   node's committed chain, and syncs a node that reports falling behind from the most
//!   advanced honest node.
//!
//! Checked for every seed: honest nodes never commit different blocks at one height; every
//! certificate verifies; an honest validator never signs two different messages for one
//! step, restarts included; all honest nodes reach the target height within a bound after
//! the network heals; every evidence reported is valid and convicts the equivocator only, and
//! an honest node that counted two conflicting votes reported them.
//!
//! A run can be traced with `SIM_TRACE=<seed>`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use lamina_primitives::crypto::hash_of;
use lamina_primitives::interfaces::consensus::ConsensusMessage;
use lamina_primitives::interfaces::da::DataCommitment;
use lamina_primitives::{
    codec, merkle, Address, Blob, Block, CommittedBlock, Equivocation, Hash, Keypair, Namespace,
    SignedProposal, SignedVote, Validator, ValidatorSet, VoteData, VoteKind,
};

use super::core::{Core, Input, Output, Params, Timeouts};
use super::state::{DurableState, Step};
use super::{check_next_header, check_proposed_header};
use crate::proposal;
use crate::store::Tip;

const CHAIN: &str = "bft-sim";
const GENESIS_TIME_MS: u64 = 1_000_000;
const COMMIT_PAUSE_MS: u64 = 50;
const TIMEOUTS: Timeouts = Timeouts {
    propose_ms: 300,
    vote_ms: 150,
    increase_ms: 100,
};
/// Virtual time after the network heals by which every honest node must reach the target.
const LIVENESS_BOUND_MS: u64 = 30_000;

/// SplitMix64: tiny, seedable, good enough to drive a simulation.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The commitment the simulated DA layer gives a body.
pub(crate) fn commitment(body: &[Blob]) -> DataCommitment {
    let encoded = Block::encode_body(body);
    DataCommitment {
        data_root: merkle::root(&[merkle::leaf_hash(&encoded)]),
        body_size: encoded.len() as u64,
        share_count: 1,
    }
}

/// One run's shape.
#[derive(Debug, Clone)]
struct Scenario {
    powers: Vec<u64>,
    byzantine: Option<usize>,
    observer: bool,
    heights: u64,
}

#[derive(Debug)]
struct Node {
    core: Core,
    key: Option<Keypair>,
    byzantine: bool,
    chain: Vec<CommittedBlock>,
    tip: Tip,
    persisted: Option<DurableState>,
    generation: u32,
    last_sync_ms: Option<u64>,
    /// Values of the Byzantine validator's votes fed to the core at its current height, by
    /// `(height, round, kind)`.
    byzantine_votes: HashMap<(u64, u32, bool), HashSet<Option<Hash>>>,
    /// `(height, round, kind)` this node reported the Byzantine validator for.
    reported: HashSet<(u64, u32, bool)>,
    /// Byzantine only: the conflicting twin of each message it signed, and who gets it.
    twins: HashMap<Vec<u8>, (ConsensusMessage, u64)>,
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        to: usize,
        message: Box<ConsensusMessage>,
    },
    Timeout {
        node: usize,
        generation: u32,
        height: u64,
        round: u32,
        step: Step,
    },
    StartHeight {
        node: usize,
        generation: u32,
        height: u64,
    },
    Restart {
        node: usize,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What one run observed.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Whether some honest node reported the Byzantine validator.
    pub(crate) evidence_reported: bool,
    /// Virtual time at which every honest node had reached the target height.
    pub(crate) finished_ms: u64,
    /// Highest round any commit needed.
    pub(crate) max_round: u32,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<Node>,
    params: Params,
    bad_until: u64,
    drop_rate: f64,
    /// Chance that a node relays a new message to each peer.
    relay_rate: f64,
    /// Agreement: the block each height committed at an honest node.
    decided: BTreeMap<u64, Hash>,
    /// Every message an honest validator signed, by `(validator, height, round, step)`.
    signed: HashMap<(Address, u64, u32, Step), Hash>,
    byzantine: Option<Address>,
    outcome: Outcome,
}

impl Sim {
    fn new(seed: u64, scenario: &Scenario) -> Self {
        let mut rng = Rng::new(seed);
        let keys: Vec<Keypair> = (0..scenario.powers.len())
            .map(|i| Keypair::deterministic(&format!("sim-validator-{i}")))
            .collect();
        let validators = ValidatorSet::new(
            keys.iter()
                .zip(&scenario.powers)
                .map(|(key, &power)| Validator {
                    address: key.address(),
                    power,
                })
                .collect(),
        );
        let params = Params {
            chain_id: CHAIN.to_string(),
            validators,
            timeouts: TIMEOUTS,
        };
        let genesis_hash = Hash::digest(b"bft-sim-genesis");
        let tip = Tip {
            height: 0,
            hash: genesis_hash,
            timestamp_ms: GENESIS_TIME_MS,
        };
        let mut nodes: Vec<Node> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| Node {
                core: Core::new(params.clone(), Some(key.clone()), None),
                key: Some(key),
                byzantine: scenario.byzantine == Some(i),
                chain: Vec::new(),
                tip,
                persisted: None,
                generation: 0,
                last_sync_ms: None,
                byzantine_votes: HashMap::new(),
                reported: HashSet::new(),
                twins: HashMap::new(),
            })
            .collect();
        if scenario.observer {
            nodes.push(Node {
                core: Core::new(params.clone(), None, None),
                key: None,
                byzantine: false,
                chain: Vec::new(),
                tip,
                persisted: None,
                generation: 0,
                last_sync_ms: None,
                byzantine_votes: HashMap::new(),
                reported: HashSet::new(),
                twins: HashMap::new(),
            });
        }
        let byzantine = scenario
            .byzantine
            .and_then(|i| nodes[i].key.as_ref().map(Keypair::address));
        let bad_until = rng.range(1_000, 6_000);
        let drop_rate = rng.range(5, 30) as f64 / 100.0;
        let relay_rate = if rng.chance(0.5) {
            1.0
        } else {
            rng.range(0, 100) as f64 / 100.0
        };
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            params,
            bad_until,
            drop_rate,
            relay_rate,
            decided: BTreeMap::new(),
            signed: HashMap::new(),
            byzantine,
            outcome: Outcome::default(),
        };
        // Some runs restart an honest validator once, from its persisted state.
        if sim.rng.chance(0.5) {
            let honest: Vec<usize> = (0..scenario.powers.len())
                .filter(|&i| scenario.byzantine != Some(i))
                .collect();
            let node = honest[sim.rng.range(0, honest.len() as u64 - 1) as usize];
            let at = sim.rng.range(0, sim.bad_until + 1_500);
            sim.push(at, Event::Restart { node });
        }
        for node in 0..sim.nodes.len() {
            // Nodes start a little apart.
            let at = sim.rng.range(0, 100);
            sim.push(
                at,
                Event::StartHeight {
                    node,
                    generation: 0,
                    height: 1,
                },
            );
        }
        sim
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn fail(&self, what: &str) -> ! {
        panic!("seed {}: t={}ms: {what}", self.seed, self.now);
    }

    /// Sends over the simulated network: maybe dropped, delayed, duplicated.
    fn send(&mut self, to: usize, message: ConsensusMessage) {
        let bad = self.now < self.bad_until;
        let copies = if self.rng.chance(0.05) { 2 } else { 1 };
        for _ in 0..copies {
            if bad && self.rng.chance(self.drop_rate) {
                continue;
            }
            let delay = if bad {
                self.rng.range(2, 500)
            } else {
                self.rng.range(2, 40)
            };
            self.push(
                self.now + delay,
                Event::Deliver {
                    to,
                    message: Box::new(message.clone()),
                },
            );
        }
    }

    fn send_to_others(&mut self, from: usize, message: &ConsensusMessage) {
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(to, message.clone());
            }
        }
    }

    fn honest(&self, node: usize) -> bool {
        !self.nodes[node].byzantine
    }

    fn all_reached(&self, heights: u64) -> bool {
        (0..self.nodes.len())
            .filter(|&i| self.honest(i))
            .all(|i| self.nodes[i].tip.height >= heights)
    }

    fn run(mut self, heights: u64) -> Outcome {
        let deadline = self.bad_until + LIVENESS_BOUND_MS;
        let mut steps: u64 = 0;
        while let Some(Reverse(next)) = self.queue.pop() {
            self.now = next.at;
            if self.now > deadline {
                let tips: Vec<u64> = self.nodes.iter().map(|n| n.tip.height).collect();
                self.fail(&format!(
                    "not every honest node reached height {heights} within {LIVENESS_BOUND_MS}ms \
                     of healing (bad until {}ms, drop rate {}); heights {tips:?}",
                    self.bad_until, self.drop_rate
                ));
            }
            steps += 1;
            if steps > 2_000_000 {
                self.fail("too many events");
            }
            self.on_event(next.event);
            if self.all_reached(heights) {
                self.check_evidence();
                self.outcome.finished_ms = self.now;
                return self.outcome;
            }
        }
        self.fail("the event queue ran dry");
    }

    fn trace(&self) -> bool {
        std::env::var("SIM_TRACE").is_ok_and(|v| v == self.seed.to_string())
    }

    fn on_event(&mut self, event: Event) {
        if self.trace() {
            let summary = match &event {
                Event::Deliver { to, message } => format!("deliver to {to}: {}", describe(message)),
                other => format!("{other:?}"),
            };
            eprintln!("[{:>6}] {summary}", self.now);
        }
        match event {
            Event::Deliver { to, message } => self.deliver(to, *message),
            Event::Timeout {
                node,
                generation,
                height,
                round,
                step,
            } => {
                if generation == self.nodes[node].generation {
                    self.feed(
                        node,
                        Input::Timeout {
                            height,
                            round,
                            step,
                        },
                    );
                }
            }
            Event::StartHeight {
                node,
                generation,
                height,
            } => {
                let tip = self.nodes[node].tip;
                if generation == self.nodes[node].generation && height == tip.height + 1 {
                    self.feed(
                        node,
                        Input::StartHeight {
                            height,
                            parent: tip.hash,
                        },
                    );
                }
            }
            Event::Restart { node } => {
                let n = &mut self.nodes[node];
                n.generation += 1;
                n.core = Core::new(self.params.clone(), n.key.clone(), n.persisted.clone());
                n.byzantine_votes.clear();
                let tip = n.tip;
                self.feed(
                    node,
                    Input::StartHeight {
                        height: tip.height + 1,
                        parent: tip.hash,
                    },
                );
            }
        }
    }

    /// The driver's judgement of a delivered message, then the core.
    fn deliver(&mut self, to: usize, message: ConsensusMessage) {
        let core = &self.nodes[to].core;
        if !core.is_new(&message) {
            return;
        }
        let input = match &message {
            ConsensusMessage::Vote(vote) => {
                if vote.verify(CHAIN).is_err() {
                    self.fail("a vote with a bad signature was sent");
                }
                if Some(vote.validator) == self.byzantine
                    && core.height() == vote.vote.height
                    && !core.is_decided()
                {
                    let key = (
                        vote.vote.height,
                        vote.vote.round,
                        vote.vote.kind == VoteKind::Precommit,
                    );
                    self.nodes[to]
                        .byzantine_votes
                        .entry(key)
                        .or_default()
                        .insert(vote.vote.block_hash);
                }
                Input::Vote(vote.clone())
            }
            ConsensusMessage::Proposal(p) => {
                let Some(proposer) = core.proposer(p.data.height, p.data.round) else {
                    self.fail("no proposer");
                };
                if p.data.block_hash != p.block.hash()
                    || p.data.verify(CHAIN, &proposer, &p.signature).is_err()
                {
                    self.fail("a proposal with a bad signature was sent");
                }
                Input::Proposal {
                    proposal: (**p).clone(),
                    valid: None,
                }
            }
        };
        // Honest nodes relay what is new to them, as gossip does, to a random part of their
        // peers in runs with a sparse mesh.
        if self.honest(to) {
            for peer in 0..self.nodes.len() {
                if peer != to && self.rng.chance(self.relay_rate) {
                    self.send(peer, message.clone());
                }
            }
        }
        self.feed(to, input);
    }

    fn valid(&self, node: usize, proposal: &SignedProposal) -> bool {
        let header = &proposal.block.header;
        let tip = &self.nodes[node].tip;
        let expected = commitment(&proposal.block.body);
        check_proposed_header(header, CHAIN, tip, GENESIS_TIME_MS + self.now).is_ok()
            && header.data_root == expected.data_root
            && header.body_size == expected.body_size
    }

    fn feed(&mut self, node: usize, input: Input) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let outputs = self.nodes[node].core.handle(input);
            for output in outputs {
                if let Some(next) = self.apply(node, output) {
                    inputs.push(next);
                }
            }
        }
    }

    /// Carries out one output; returns an input to feed back, if any.
    fn apply(&mut self, node: usize, output: Output) -> Option<Input> {
        if self.trace() {
            let summary = match &output {
                Output::Broadcast(message) => format!("broadcast {}", describe(message)),
                Output::Persist(_) => "persist".to_string(),
                Output::CheckProposal(p) => {
                    format!("check {}", describe(&ConsensusMessage::Proposal(p.clone())))
                }
                Output::Commit { certificate, .. } => {
                    format!("COMMIT h{} r{}", certificate.height, certificate.round)
                }
                other => format!("{other:?}"),
            };
            eprintln!(
                "         node {node} (h{} r{}) -> {summary}",
                self.nodes[node].core.height(),
                self.nodes[node].core.round()
            );
        }
        match output {
            Output::Persist(state) => {
                self.nodes[node].persisted = Some(*state);
                None
            }
            Output::Broadcast(message) => {
                self.broadcast(node, *message);
                None
            }
            Output::ScheduleTimeout {
                height,
                round,
                step,
                after,
            } => {
                let generation = self.nodes[node].generation;
                self.push(
                    self.now + after.as_millis() as u64,
                    Event::Timeout {
                        node,
                        generation,
                        height,
                        round,
                        step,
                    },
                );
                None
            }
            Output::BuildBlock {
                height,
                round,
                parent,
            } => {
                let n = &self.nodes[node];
                if parent != n.tip.hash || height != n.tip.height + 1 {
                    return None;
                }
                let address = n.key.as_ref().map(Keypair::address)?;
                let body = vec![Blob {
                    namespace: Namespace::SETTLEMENT,
                    data: format!("block {height}/{round} by {node}").into_bytes(),
                }];
                let header = proposal::header(
                    CHAIN,
                    &n.tip,
                    GENESIS_TIME_MS + self.now,
                    address,
                    &commitment(&body),
                );
                Some(Input::BlockBuilt {
                    height,
                    round,
                    block: Block { header, body },
                })
            }
            Output::CheckProposal(p) => {
                let valid = self.valid(node, &p);
                Some(Input::Proposal {
                    proposal: *p,
                    valid: Some(valid),
                })
            }
            Output::Commit { block, certificate } => {
                let committed = CommittedBlock {
                    block: *block,
                    certificate,
                };
                self.commit(node, committed);
                let generation = self.nodes[node].generation;
                let height = self.nodes[node].tip.height + 1;
                self.push(
                    self.now + COMMIT_PAUSE_MS,
                    Event::StartHeight {
                        node,
                        generation,
                        height,
                    },
                );
                None
            }
            Output::Behind { .. } => self.sync(node),
            Output::Evidence(evidence) => {
                self.on_evidence(node, &evidence);
                None
            }
        }
    }

    fn on_evidence(&mut self, node: usize, evidence: &Equivocation) {
        if !evidence.is_valid(CHAIN) {
            self.fail("invalid evidence reported");
        }
        if Some(evidence.first.validator) != self.byzantine {
            self.fail(&format!(
                "node {node} convicted an honest validator: {evidence:?}"
            ));
        }
        let vote = &evidence.first.vote;
        if self.honest(node) {
            self.outcome.evidence_reported = true;
            self.nodes[node].reported.insert((
                vote.height,
                vote.round,
                vote.kind == VoteKind::Precommit,
            ));
        }
    }

    /// Checks and records what an honest validator signs; the Byzantine one also sends a
    /// conflicting twin to part of the network.
    fn broadcast(&mut self, node: usize, message: ConsensusMessage) {
        let own = self.nodes[node].key.as_ref().map(Keypair::address);
        if let ConsensusMessage::Vote(vote) = &message {
            if Some(vote.validator) != own {
                // Someone else's vote (a proof of lock): passed on as it is.
                self.send_to_others(node, &message);
                return;
            }
        }
        if !self.nodes[node].byzantine {
            let Some(validator) = self.nodes[node].key.as_ref().map(Keypair::address) else {
                self.fail(&format!("observer {node} sent a message"));
            };
            let (position, digest) = match &message {
                ConsensusMessage::Vote(vote) => (
                    (
                        vote.vote.height,
                        vote.vote.round,
                        Step::of_vote(vote.vote.kind),
                    ),
                    hash_of(&vote.vote),
                ),
                ConsensusMessage::Proposal(p) => (
                    (p.data.height, p.data.round, Step::Propose),
                    hash_of(&p.data),
                ),
            };
            let key = (validator, position.0, position.1, position.2);
            match self.signed.get(&key) {
                Some(previous) if *previous != digest => {
                    self.fail(&format!(
                        "honest node {node} signed two different messages at {position:?}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.signed.insert(key, digest);
                }
            }
            self.send_to_others(node, &message);
            return;
        }
        // The equivocator: each peer gets either the message or its twin, consistently.
        let id = codec::encode(&message);
        let (twin, split) = match self.nodes[node].twins.get(&id) {
            Some(entry) => entry.clone(),
            None => {
                let twin = self.twin(node, &message);
                let split = match &message {
                    // A precommit for a block reaches one node only: that node may commit
                    // while the rest move on, where locks must keep them from deciding
                    // anything else.
                    ConsensusMessage::Vote(vote)
                        if vote.vote.kind == VoteKind::Precommit
                            && vote.vote.block_hash.is_some() =>
                    {
                        !(1u64 << self.rng.range(0, self.nodes.len() as u64 - 1))
                    }
                    _ => self.rng.next_u64(),
                };
                self.nodes[node].twins.insert(id, (twin.clone(), split));
                (twin, split)
            }
        };
        for to in 0..self.nodes.len() {
            if to == node {
                continue;
            }
            if split >> to & 1 == 1 {
                self.send(to, twin.clone());
            } else {
                self.send(to, message.clone());
            }
        }
    }

    /// A conflicting message signed by the Byzantine validator: the other value for a vote
    /// (nil for a block, a made-up block for nil), another block for a fresh proposal.
    fn twin(&mut self, node: usize, message: &ConsensusMessage) -> ConsensusMessage {
        let Some(key) = self.nodes[node].key.clone() else {
            return message.clone();
        };
        match message {
            ConsensusMessage::Vote(vote) => {
                let other = match vote.vote.block_hash {
                    Some(_) => None,
                    None => Some(Hash::digest(&self.rng.next_u64().to_be_bytes())),
                };
                ConsensusMessage::Vote(SignedVote::sign(
                    CHAIN,
                    &key,
                    VoteData {
                        block_hash: other,
                        ..vote.vote.clone()
                    },
                ))
            }
            ConsensusMessage::Proposal(p) if p.data.pol_round.is_none() => {
                let mut block = p.block.clone();
                block.header.timestamp_ms += 1;
                ConsensusMessage::Proposal(Box::new(SignedProposal::sign(
                    CHAIN,
                    &key,
                    p.data.round,
                    None,
                    block,
                )))
            }
            ConsensusMessage::Proposal(_) => message.clone(),
        }
    }

    /// Stores a block committed by `node` (decided or synced), checking it.
    fn commit(&mut self, node: usize, committed: CommittedBlock) {
        let n = &self.nodes[node];
        let header = &committed.block.header;
        if let Err(error) = check_next_header(header, CHAIN, &n.tip) {
            self.fail(&format!(
                "node {node} committed a block that does not chain: {error}"
            ));
        }
        if let Err(error) = committed
            .certificate
            .verify(CHAIN, header, &self.params.validators)
        {
            self.fail(&format!("node {node} made a bad certificate: {error}"));
        }
        let height = header.height;
        let hash = committed.block.hash();
        if self.honest(node) {
            match self.decided.get(&height) {
                Some(other) if *other != hash => {
                    self.fail(&format!("agreement violated at height {height}"));
                }
                Some(_) => {}
                None => {
                    self.decided.insert(height, hash);
                }
            }
            self.outcome.max_round = self.outcome.max_round.max(committed.certificate.round);
        }
        let n = &mut self.nodes[node];
        n.tip = Tip {
            height,
            hash,
            timestamp_ms: header.timestamp_ms,
        };
        n.chain.push(committed);
    }

    /// The node fell behind: import the most advanced honest node's blocks it lacks (at most
    /// once a virtual second) and start the height after them.
    fn sync(&mut self, node: usize) -> Option<Input> {
        if self.nodes[node]
            .last_sync_ms
            .is_some_and(|last| self.now < last + 1_000)
        {
            return None;
        }
        self.nodes[node].last_sync_ms = Some(self.now);
        let source = (0..self.nodes.len())
            .filter(|&i| i != node && self.honest(i))
            .max_by_key(|&i| self.nodes[i].tip.height)?;
        let from = self.nodes[node].tip.height + 1;
        let to = self.nodes[source].tip.height;
        if to < from {
            return None;
        }
        let blocks: Vec<CommittedBlock> =
            self.nodes[source].chain[(from - 1) as usize..to as usize].to_vec();
        for block in blocks {
            self.commit(node, block);
        }
        let tip = self.nodes[node].tip;
        Some(Input::StartHeight {
            height: tip.height + 1,
            parent: tip.hash,
        })
    }

    /// Every honest node fed two conflicting votes of the Byzantine validator at its current
    /// height reported them.
    fn check_evidence(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.byzantine {
                continue;
            }
            for (key, values) in &node.byzantine_votes {
                if values.len() > 1 && !node.reported.contains(key) {
                    self.fail(&format!(
                        "node {i} saw conflicting votes at {key:?} but reported no evidence"
                    ));
                }
            }
        }
    }
}

fn describe(message: &ConsensusMessage) -> String {
    let short =
        |hash: Option<Hash>| hash.map_or("nil".to_string(), |h| h.to_string()[..6].to_string());
    match message {
        ConsensusMessage::Vote(v) => format!(
            "{:?} h{} r{} {} by {}",
            v.vote.kind,
            v.vote.height,
            v.vote.round,
            short(v.vote.block_hash),
            &v.validator.to_string()[..6]
        ),
        ConsensusMessage::Proposal(p) => format!(
            "Proposal h{} r{} pol {:?} {}",
            p.data.height,
            p.data.round,
            p.data.pol_round,
            short(Some(p.data.block_hash))
        ),
    }
}

fn run_seed(seed: u64, scenario: &Scenario) -> Outcome {
    Sim::new(seed, scenario).run(scenario.heights)
}

fn equal_powers(seed: u64) -> Scenario {
    Scenario {
        powers: vec![1, 1, 1, 1],
        byzantine: Some((seed % 4) as usize),
        observer: false,
        heights: 3,
    }
}

fn unequal_powers(seed: u64) -> Scenario {
    // Total 11: the Byzantine validator (power 3 or 2) holds less than a third.
    let byzantine = [1, 2, 3][(seed % 3) as usize];
    Scenario {
        powers: vec![4, 3, 2, 2],
        byzantine: Some(byzantine),
        observer: true,
        heights: 3,
    }
}

fn run_seeds(seeds: std::ops::Range<u64>, scenario: fn(u64) -> Scenario) -> Vec<Outcome> {
    seeds.map(|seed| run_seed(seed, &scenario(seed))).collect()
}

fn summarize(outcomes: &[Outcome]) {
    let with_evidence = outcomes.iter().filter(|o| o.evidence_reported).count();
    let mut rounds = BTreeMap::new();
    for outcome in outcomes {
        *rounds.entry(outcome.max_round).or_insert(0u32) += 1;
    }
    let slowest = outcomes.iter().map(|o| o.finished_ms).max().unwrap_or(0);
    println!(
        "{} runs, evidence in {with_evidence}, highest deciding round per run {rounds:?}, \
         slowest run finished at {slowest} ms",
        outcomes.len()
    );
    // The equivocator signs conflicting votes at every step it takes part in; with relaying
    // nodes nearly every run sees both halves somewhere.
    assert!(
        with_evidence * 2 > outcomes.len(),
        "evidence in only {with_evidence} of {} runs",
        outcomes.len()
    );
}

#[test]
fn equal_powers_with_an_equivocator_a() {
    summarize(&run_seeds(0..250, equal_powers));
}

#[test]
fn equal_powers_with_an_equivocator_b() {
    summarize(&run_seeds(250..500, equal_powers));
}

#[test]
fn unequal_powers_with_an_equivocator_and_an_observer_a() {
    summarize(&run_seeds(0..250, unequal_powers));
}

#[test]
fn unequal_powers_with_an_equivocator_and_an_observer_b() {
    summarize(&run_seeds(250..500, unequal_powers));
}

#[test]
fn all_honest_over_a_clean_network_decide_in_round_zero() {
    for seed in 0..20 {
        let mut sim = Sim::new(
            seed,
            &Scenario {
                powers: vec![1, 1, 1, 1],
                byzantine: None,
                observer: false,
                heights: 5,
            },
        );
        sim.bad_until = 0;
        sim.queue
            .retain(|Reverse(scheduled)| !matches!(scheduled.event, Event::Restart { .. }));
        let outcome = sim.run(5);
        assert_eq!(outcome.max_round, 0, "seed {seed}");
    }
}

// ---- restart safety, driven by hand ----

fn four_validators() -> (Vec<Keypair>, Params) {
    let keys: Vec<Keypair> = (0..4)
        .map(|i| Keypair::deterministic(&format!("restart-{i}")))
        .collect();
    let params = Params {
        chain_id: CHAIN.to_string(),
        validators: ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 1,
                })
                .collect(),
        ),
        timeouts: TIMEOUTS,
    };
    (keys, params)
}

fn block(height: u64, parent: Hash, proposer: Address, tag: &str) -> Block {
    let body = vec![Blob {
        namespace: Namespace::SETTLEMENT,
        data: tag.as_bytes().to_vec(),
    }];
    let c = commitment(&body);
    Block {
        header: lamina_primitives::BlockHeader {
            chain_id: CHAIN.into(),
            height,
            parent_hash: parent,
            timestamp_ms: GENESIS_TIME_MS + 1,
            proposer,
            data_root: c.data_root,
            body_size: c.body_size,
        },
        body,
    }
}

fn votes_of(outputs: &[Output]) -> Vec<SignedVote> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(message) => match &**message {
                ConsensusMessage::Vote(v) => Some(v.clone()),
                ConsensusMessage::Proposal(_) => None,
            },
            _ => None,
        })
        .collect()
}

fn last_persist(outputs: &[Output]) -> Option<DurableState> {
    outputs.iter().rev().find_map(|o| match o {
        Output::Persist(state) => Some((**state).clone()),
        _ => None,
    })
}

#[test]
fn restarted_validator_never_signs_a_conflicting_vote() {
    let (keys, params) = four_validators();
    let parent = Hash::digest(b"parent");
    let schedule = super::proposer::ProposerSchedule::new(&params.validators);
    let proposer_of = |round: u32| {
        let address = schedule.proposer(1, round).unwrap();
        keys.iter().position(|k| k.address() == address).unwrap()
    };
    // Our validator proposes in neither round 0 nor round 1.
    let me = (0..4)
        .find(|&i| i != proposer_of(0) && i != proposer_of(1))
        .unwrap();
    let key = keys[me].clone();
    let mut all_votes: Vec<SignedVote> = Vec::new();
    let mut persisted: Option<DurableState> = None;
    let run = |core: &mut Core, input: Input, persisted: &mut Option<DurableState>| {
        let outputs = core.handle(input);
        // Persist comes before the broadcast it covers.
        let mut durable = persisted.clone();
        for output in &outputs {
            match output {
                Output::Persist(state) => durable = Some((**state).clone()),
                Output::Broadcast(message) => {
                    if let ConsensusMessage::Vote(v) = &**message {
                        let state = durable
                            .as_ref()
                            .expect("a vote is sent only once persisted");
                        assert!(
                            state.votes.contains(v),
                            "sent vote missing from persisted state"
                        );
                    }
                }
                _ => {}
            }
        }
        if let Some(state) = last_persist(&outputs) {
            *persisted = Some(state);
        }
        outputs
    };

    let proposal = |round: u32, tag: &str| {
        let p = proposer_of(round);
        let b = block(1, parent, keys[p].address(), tag);
        SignedProposal::sign(CHAIN, &keys[p], round, None, b)
    };
    let x = proposal(0, "x");
    let y = proposal(0, "y");

    // Prevote for X in round 0.
    let mut core = Core::new(params.clone(), Some(key.clone()), None);
    run(
        &mut core,
        Input::StartHeight { height: 1, parent },
        &mut persisted,
    );
    let out = run(
        &mut core,
        Input::Proposal {
            proposal: x.clone(),
            valid: Some(true),
        },
        &mut persisted,
    );
    let prevote = votes_of(&out);
    assert_eq!(prevote.len(), 1);
    assert_eq!(prevote[0].vote.block_hash, Some(x.block.hash()));
    all_votes.extend(prevote.clone());

    // Restart: the same prevote is re-sent; a conflicting proposal and the propose timeout
    // get no new prevote.
    let mut core = Core::new(params.clone(), Some(key.clone()), persisted.clone());
    let out = run(
        &mut core,
        Input::StartHeight { height: 1, parent },
        &mut persisted,
    );
    assert_eq!(votes_of(&out), prevote);
    let out = run(
        &mut core,
        Input::Proposal {
            proposal: y.clone(),
            valid: Some(true),
        },
        &mut persisted,
    );
    assert!(votes_of(&out).is_empty());
    let out = run(
        &mut core,
        Input::Timeout {
            height: 1,
            round: 0,
            step: Step::Propose,
        },
        &mut persisted,
    );
    assert!(votes_of(&out).iter().all(|v| *v == prevote[0]));
    all_votes.extend(votes_of(&out));
    // The proposer re-sends X; it is kept beside Y (an equivocating proposer's two blocks).
    let out = run(
        &mut core,
        Input::Proposal {
            proposal: x.clone(),
            valid: Some(true),
        },
        &mut persisted,
    );
    assert!(votes_of(&out).is_empty());

    // Two more prevotes for X: a polka; we lock on X and precommit it.
    let others: Vec<usize> = (0..4).filter(|&i| i != me).collect();
    let prevote_x = |i: usize, round: u32, value: Option<Hash>| {
        SignedVote::sign(
            CHAIN,
            &keys[i],
            VoteData {
                height: 1,
                round,
                kind: VoteKind::Prevote,
                block_hash: value,
            },
        )
    };
    let mut precommits = Vec::new();
    for &i in &others[..2] {
        let out = run(
            &mut core,
            Input::Vote(prevote_x(i, 0, Some(x.block.hash()))),
            &mut persisted,
        );
        precommits.extend(votes_of(&out));
    }
    assert_eq!(precommits.len(), 1);
    assert_eq!(precommits[0].vote.kind, VoteKind::Precommit);
    assert_eq!(precommits[0].vote.block_hash, Some(x.block.hash()));
    all_votes.extend(precommits.clone());
    assert_eq!(
        persisted
            .as_ref()
            .and_then(|s| s.locked)
            .map(|l| l.block_hash),
        Some(x.block.hash())
    );

    // Restart again, then round 1 brings a fresh proposal of another block: the lock
    // survives the restart, so we prevote nil.
    let mut core = Core::new(params.clone(), Some(key.clone()), persisted.clone());
    let out = run(
        &mut core,
        Input::StartHeight { height: 1, parent },
        &mut persisted,
    );
    let resent = votes_of(&out);
    assert!(resent.contains(&prevote[0]) && resent.contains(&precommits[0]));
    // More than a third of the power in round 1 moves us there.
    for &i in &others[..2] {
        let out = run(
            &mut core,
            Input::Vote(prevote_x(i, 1, None)),
            &mut persisted,
        );
        all_votes.extend(votes_of(&out));
    }
    assert_eq!(core.round(), 1);
    let z = proposal(1, "z");
    let out = run(
        &mut core,
        Input::Proposal {
            proposal: z,
            valid: Some(true),
        },
        &mut persisted,
    );
    let round_one = votes_of(&out);
    let prevote_one: Vec<&SignedVote> = round_one
        .iter()
        .filter(|v| v.vote.round == 1 && v.vote.kind == VoteKind::Prevote)
        .collect();
    assert_eq!(prevote_one.len(), 1);
    assert_eq!(
        prevote_one[0].vote.block_hash, None,
        "a locked validator prevotes nil"
    );
    all_votes.extend(round_one);

    // Across all three lives: one vote per (round, kind).
    let mut seen: HashMap<(u32, bool), VoteData> = HashMap::new();
    for vote in all_votes {
        let key = (vote.vote.round, vote.vote.kind == VoteKind::Precommit);
        if let Some(previous) = seen.insert(key, vote.vote.clone()) {
            assert_eq!(previous, vote.vote, "conflicting votes at {key:?}");
        }
    }
}
