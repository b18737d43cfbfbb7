//! The `bft` engine's driver: an async task that owns the [`Core`], the committed chain and
//! the engine's durable state, and connects them to the node.
//!
//! - **Requests.** Status, blocks and evidence are answered from the actor's own state; the
//!   loop never waits on another layer (block building, proposal checks and the DA check of
//!   imported blocks run in tasks that report back), so it stays responsive. It waits only
//!   for its own sled flushes.
//! - **Peers.** [`ConsensusRequest::Deliver`] is judged synchronously (signature, signer in
//!   the validator set, the right proposer for the round, block size, and whether it is new)
//!   and answered before it is processed; a proposal's block is then checked against the
//!   committed tip and the DA commitment of its body off the loop, and only then shown to the
//!   core. Outbound messages go to [`ConsensusDeps::outbound`] with `try_send`: a full
//!   channel drops them (the core re-sends on its timers).
//! - **Outputs** of the core are carried out in order. A persist is written and flushed
//!   before anything after it is sent; if that fails, signed messages are held back until a
//!   later write succeeds, so nothing is ever sent that a restart could contradict.
//! - **Commit.** The block is stored and flushed, `Committed` published, and the next height
//!   starts after `block_time_ms` (the commit pause). [`ConsensusRequest::ImportBlock`]
//!   commits fetched blocks the same way and starts the next height at once.
//! - **Pruning.** [`ConsensusRequest::PruneBodies`] runs in a task of its own and replies
//!   itself; nothing the engine does needs an old body (only headers: the tip's, and a
//!   committed height's when an import there is checked for a conflict).
//!
//! Storage (sled trees of the node's database): `consensus/blocks`, `consensus/headers` and
//! `consensus/meta` (the committed chain, shared with `solo`; see [`ChainStore`]),
//! `consensus/bft` (the core's [`DurableState`] under `state`) and `consensus/evidence`
//! (equivocations, borsh, keyed by a big-endian sequence number, oldest first).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lamina_primitives::crypto::hash_of;
use lamina_primitives::interfaces::consensus::{
    ConsensusDeps, ConsensusEvent, ConsensusMessage, ConsensusOutbound, ConsensusRequest,
    ConsensusStatus, ImportError, Verdict,
};
use lamina_primitives::interfaces::{Events, RequestError};
use lamina_primitives::{
    codec, Address, Block, CommittedBlock, Equivocation, Genesis, Hash, Keypair, SignedProposal,
    Transaction, ValidatorSet, VoteKind,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::core::{Core, Input, Output, Params, Timeouts};
use super::state::{DurableState, Step};
use super::{check_next_header, check_proposed_header};
use crate::proposal::{self, Decision};
use crate::serve;
use crate::store::{ChainStore, Tip};
use crate::{ConsensusConfig, SetupError};

/// Tree of the core's durable state.
pub(crate) const BFT_TREE: &str = "consensus/bft";
/// Tree of the evidence of equivocation.
pub(crate) const EVIDENCE_TREE: &str = "consensus/evidence";
const STATE_KEY: &[u8] = b"state";
/// Most equivocations kept: the oldest are kept, later ones only logged (a validator that
/// equivocates at every step cannot fill the disk).
const MAX_EVIDENCE: usize = 10_000;
/// Sync requests go out at most this often.
const BEHIND_INTERVAL: Duration = Duration::from_secs(1);
/// Wait before retrying to store a decided block that could not be stored.
const COMMIT_RETRY: Duration = Duration::from_secs(1);
/// Longest wait a timer is set for.
const MAX_TIMER: Duration = Duration::from_secs(24 * 60 * 60);
/// Capacity of the channel on which the actor's own tasks report back.
const INTERNAL_CAPACITY: usize = 256;

/// The engine as opened, before it runs.
#[derive(Debug)]
pub(crate) struct Bft {
    config: ConsensusConfig,
    chain_id: String,
    validators: ValidatorSet,
    address: Option<Address>,
    store: ChainStore,
    state_tree: sled::Tree,
    evidence: EvidenceStore,
    tip: Tip,
    core: Core,
}

impl Bft {
    /// Checks the key against the validator set, opens the committed chain and reloads the
    /// core's durable state and the evidence.
    pub(crate) fn open(
        config: ConsensusConfig,
        genesis: &Genesis,
        key: Option<Keypair>,
        db: &sled::Db,
    ) -> Result<Self, SetupError> {
        if genesis.validators.is_empty() {
            return Err(SetupError::NoValidators);
        }
        let validators = genesis.validator_set();
        if let Some(key) = &key {
            if validators.power_of(&key.address()).is_none() {
                return Err(SetupError::NotAValidator { key: key.address() });
            }
        }
        let (store, tip) = ChainStore::open(db, genesis)?;
        let state_tree = db.open_tree(BFT_TREE)?;
        let restored = match state_tree.get(STATE_KEY)? {
            Some(bytes) => Some(DurableState::decode(&bytes).map_err(|error| {
                SetupError::Corrupt(format!("{BFT_TREE}/state does not decode: {error}"))
            })?),
            None => None,
        };
        let evidence = EvidenceStore::open(db)?;
        let address = key.as_ref().map(Keypair::address);
        tracing::info!(
            height = tip.height,
            hash = %tip.hash,
            validator = ?address,
            restored_height = restored.as_ref().map(|state| state.height),
            "bft engine resumes from the stored tip"
        );
        let core = Core::new(
            Params {
                chain_id: genesis.chain_id.clone(),
                validators: validators.clone(),
                timeouts: Timeouts {
                    propose_ms: config.timeout_propose_ms,
                    vote_ms: config.timeout_vote_ms,
                    increase_ms: config.timeout_increase_ms,
                },
            },
            key,
            restored,
        );
        Ok(Bft {
            config,
            chain_id: genesis.chain_id.clone(),
            validators,
            address,
            store,
            state_tree,
            evidence,
            tip,
            core,
        })
    }
}

/// Equivocations, durable, oldest first, one per `(validator, height, round, kind)`.
#[derive(Debug)]
struct EvidenceStore {
    tree: sled::Tree,
    seen: HashSet<(Address, u64, u32, bool)>,
    next: u64,
}

fn evidence_key(evidence: &Equivocation) -> (Address, u64, u32, bool) {
    let vote = &evidence.first;
    (
        vote.validator,
        vote.vote.height,
        vote.vote.round,
        vote.vote.kind == VoteKind::Precommit,
    )
}

impl EvidenceStore {
    fn open(db: &sled::Db) -> Result<Self, SetupError> {
        let tree = db.open_tree(EVIDENCE_TREE)?;
        let mut seen = HashSet::new();
        let mut next = 0;
        for entry in tree.iter() {
            let (key, value) = entry?;
            let evidence: Equivocation = codec::decode_trusted(&value).map_err(|error| {
                SetupError::Corrupt(format!("{EVIDENCE_TREE} entry does not decode: {error}"))
            })?;
            seen.insert(evidence_key(&evidence));
            let key: [u8; 8] = key
                .as_ref()
                .try_into()
                .map_err(|_| SetupError::Corrupt(format!("{EVIDENCE_TREE} key is not a u64")))?;
            next = u64::from_be_bytes(key).saturating_add(1);
        }
        Ok(EvidenceStore { tree, seen, next })
    }

    /// Adds `evidence` unless it is known or the store is full; true when written (not yet
    /// flushed).
    fn add(&mut self, evidence: &Equivocation) -> Result<bool, sled::Error> {
        let key = evidence_key(evidence);
        if self.seen.contains(&key) {
            return Ok(false);
        }
        if self.seen.len() >= MAX_EVIDENCE {
            tracing::warn!("evidence store is full; not keeping this equivocation");
            return Ok(false);
        }
        self.tree
            .insert(self.next.to_be_bytes(), codec::encode(evidence))?;
        self.seen.insert(key);
        self.next = self.next.saturating_add(1);
        Ok(true)
    }

    fn all(&self) -> Vec<Equivocation> {
        self.tree
            .iter()
            .filter_map(|entry| match entry {
                Ok((_, value)) => codec::decode_trusted(&value).ok(),
                Err(error) => {
                    tracing::error!(%error, "cannot read evidence");
                    None
                }
            })
            .collect()
    }
}

/// What the actor's tasks report back.
#[derive(Debug)]
enum Internal {
    /// A proposal's block was checked.
    Checked {
        proposal: Box<SignedProposal>,
        valid: bool,
        key: Hash,
    },
    /// A block for our proposal was built (or not).
    Built {
        height: u64,
        round: u32,
        transactions: Vec<Transaction>,
        block: Result<Box<Block>, String>,
    },
    /// The body of a block to import was checked against its header.
    ImportChecked {
        block: Arc<CommittedBlock>,
        result: Result<(), ImportError>,
        reply: oneshot::Sender<Result<u64, ImportError>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// A core timeout.
    Core { height: u64, round: u32, step: Step },
    /// The commit pause is over: start `height`.
    StartHeight { height: u64 },
    /// Retry storing the decided block.
    RetryCommit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timer {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The running engine.
#[derive(Debug)]
struct Driver {
    bft: Bft,
    deps: ConsensusDeps,
    db: sled::Db,
    events: Events<ConsensusEvent>,
    internal: mpsc::Sender<Internal>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    /// Proposals whose block is being checked (hash of their signed data).
    checking: HashSet<Hash>,
    /// The height and round a block is being built for.
    building: Option<(u64, u32)>,
    /// Transactions reaped for a height: the mempool keeps them reserved for it, so a
    /// second proposal at that height reuses them rather than reaping again.
    carried: Option<(u64, Vec<Transaction>)>,
    last_behind: Option<Instant>,
    /// The latest core state whose write failed: signed messages are held back until it
    /// is durable.
    unpersisted: Option<Box<DurableState>>,
    /// A decided block that could not be stored yet.
    pending_commit: Option<CommittedBlock>,
}

/// Runs the engine until every handle is dropped.
pub(crate) async fn run(
    bft: Bft,
    deps: ConsensusDeps,
    db: sled::Db,
    mut requests: mpsc::Receiver<ConsensusRequest>,
    events: Events<ConsensusEvent>,
) {
    let (internal, mut reports) = mpsc::channel(INTERNAL_CAPACITY);
    let mut driver = Driver {
        bft,
        deps,
        db,
        events,
        internal,
        timers: BinaryHeap::new(),
        timer_seq: 0,
        checking: HashSet::new(),
        building: None,
        carried: None,
        last_behind: None,
        unpersisted: None,
        pending_commit: None,
    };
    driver.start_next_height().await;
    loop {
        let deadline = driver.timers.peek().map(|Reverse(timer)| timer.at);
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => driver.on_request(request).await,
                None => break,
            },
            Some(report) = reports.recv() => driver.on_internal(report).await,
            () = sleep_until(deadline) => driver.on_timers().await,
        }
    }
    tracing::debug!("bft engine stopped: every handle was dropped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    // A clock before 1970 yields 0; the timestamp rule still moves past the parent.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Driver {
    // ---- requests ----

    async fn on_request(&mut self, request: ConsensusRequest) {
        // A send error only means the caller stopped waiting.
        match request {
            ConsensusRequest::GetStatus { reply } => {
                let _ = reply.send(self.status());
            }
            ConsensusRequest::GetBlock { height, reply } => {
                let _ = reply.send(serve::block(&self.bft.store, height, self.bft.tip.height));
            }
            ConsensusRequest::GetHeader { height, reply } => {
                let _ = reply.send(serve::header(&self.bft.store, height, self.bft.tip.height));
            }
            ConsensusRequest::PruneBodies { through, reply } => {
                // Runs off the loop and replies itself; the tip only moves up meanwhile, so
                // the bound taken now still spares the tip's body.
                serve::prune_bodies(
                    &self.bft.store,
                    &self.db,
                    through,
                    self.bft.tip.height,
                    reply,
                );
            }
            ConsensusRequest::Deliver { message, reply } => {
                let verdict = self.judge(&message);
                let _ = reply.send(verdict);
                if verdict == Verdict::Accept {
                    self.accept(message).await;
                }
            }
            ConsensusRequest::ImportBlock { block, reply } => self.import(block, reply),
            ConsensusRequest::GetEvidence { reply } => {
                let _ = reply.send(self.bft.evidence.all());
            }
        }
    }

    fn status(&self) -> ConsensusStatus {
        ConsensusStatus {
            engine: "bft".to_string(),
            committed_height: self.bft.tip.height,
            last_block_hash: self.bft.tip.hash,
            validator: self.bft.address,
            round: self.bft.core.round(),
            validators: self.bft.validators.len(),
            pruned_through: self.bft.store.pruned_through(),
        }
    }

    /// The verdict on a peer's message: `Reject` when it is invalid, `Ignore` when it tells
    /// nothing new, `Accept` otherwise. Cheap checks come first; the duplicate check comes
    /// before the signature check because a duplicate is byte-for-byte a message whose
    /// signature was already checked.
    fn judge(&self, message: &ConsensusMessage) -> Verdict {
        let chain_id = &self.bft.chain_id;
        match message {
            ConsensusMessage::Vote(vote) => {
                if vote.vote.height == 0 || self.bft.validators.power_of(&vote.validator).is_none()
                {
                    return Verdict::Reject;
                }
                if !self.bft.core.is_new(message) {
                    return Verdict::Ignore;
                }
                if vote.verify(chain_id).is_err() {
                    return Verdict::Reject;
                }
                Verdict::Accept
            }
            ConsensusMessage::Proposal(proposal) => {
                let (data, block) = (&proposal.data, &proposal.block);
                let Some(proposer) = self.bft.core.proposer(data.height, data.round) else {
                    return Verdict::Reject;
                };
                let header = &block.header;
                let well_formed = data.height != 0
                    && data.height == header.height
                    && header.chain_id == *chain_id
                    && self.bft.validators.power_of(&header.proposer).is_some()
                    && match data.pol_round {
                        // A fresh block is the round proposer's own.
                        None => header.proposer == proposer,
                        // A re-proposed block keeps the header of whoever built it.
                        Some(pol_round) => pol_round < data.round,
                    };
                if !well_formed {
                    return Verdict::Reject;
                }
                if self.checking.contains(&hash_of(data)) || !self.bft.core.is_new(message) {
                    return Verdict::Ignore;
                }
                if data.block_hash != block.hash()
                    || data
                        .verify(chain_id, &proposer, &proposal.signature)
                        .is_err()
                    || Block::encode_body(&block.body).len() > self.bft.config.max_block_bytes
                {
                    return Verdict::Reject;
                }
                Verdict::Accept
            }
        }
    }

    async fn accept(&mut self, message: ConsensusMessage) {
        let input = match message {
            ConsensusMessage::Vote(vote) => Input::Vote(vote),
            ConsensusMessage::Proposal(proposal) => Input::Proposal {
                proposal: *proposal,
                valid: None,
            },
        };
        self.feed(input).await;
    }

    fn import(
        &mut self,
        block: Arc<CommittedBlock>,
        reply: oneshot::Sender<Result<u64, ImportError>>,
    ) {
        let header = &block.block.header;
        let height = header.height;
        if height <= self.bft.tip.height {
            let _ = reply.send(self.import_committed_height(&block));
            return;
        }
        let expected = self.bft.tip.height.saturating_add(1);
        if height != expected {
            let _ = reply.send(Err(ImportError::NotNext {
                expected,
                got: height,
            }));
            return;
        }
        if let Err(error) = check_next_header(header, &self.bft.chain_id, &self.bft.tip) {
            let _ = reply.send(Err(ImportError::Invalid(error)));
            return;
        }
        if let Err(error) =
            block
                .certificate
                .verify(&self.bft.chain_id, header, &self.bft.validators)
        {
            let _ = reply.send(Err(ImportError::Invalid(format!(
                "bad certificate: {error}"
            ))));
            return;
        }
        // The body is checked by the DA layer, off the loop; `on_internal` finishes.
        let da = self.deps.da.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let body = Arc::new(block.block.body.clone());
            let header = &block.block.header;
            let result = match da.commit(body).await {
                Ok(commitment)
                    if commitment.data_root == header.data_root
                        && commitment.body_size == header.body_size =>
                {
                    Ok(())
                }
                Ok(_) => Err(ImportError::Invalid(
                    "the body does not match the header's data root".to_string(),
                )),
                Err(RequestError::Layer(error)) => Err(ImportError::Invalid(format!(
                    "the DA layer refused the body: {error}"
                ))),
                Err(RequestError::Channel(error)) => Err(ImportError::Storage(format!(
                    "cannot reach the DA layer: {error}"
                ))),
            };
            let _ = internal
                .send(Internal::ImportChecked {
                    block,
                    result,
                    reply,
                })
                .await;
        });
    }

    /// An import at a height already committed: the same block is fine, another one with a
    /// valid certificate means the validators forked the chain.
    fn import_committed_height(&self, block: &CommittedBlock) -> Result<u64, ImportError> {
        let height = block.block.height();
        if height == 0 {
            return Err(ImportError::Invalid("there is no block at height 0".into()));
        }
        // The header is enough (its hash is the block's hash), and unlike the block it is
        // kept when the body is pruned.
        let stored = self
            .bft
            .store
            .header(height)
            .map_err(|error| ImportError::Storage(error.to_string()))?
            .ok_or_else(|| ImportError::Storage(format!("committed block {height} is missing")))?;
        if stored.hash() == block.block.hash() {
            return Ok(self.bft.tip.height);
        }
        block
            .certificate
            .verify(
                &self.bft.chain_id,
                &block.block.header,
                &self.bft.validators,
            )
            .map_err(|error| ImportError::Invalid(format!("bad certificate: {error}")))?;
        tracing::error!(
            height,
            committed = %stored.hash(),
            offered = %block.block.hash(),
            "a different block with a valid certificate exists at a committed height: \
             more than a third of the voting power signed two blocks"
        );
        Err(ImportError::Conflict { height })
    }

    // ---- reports from tasks ----

    async fn on_internal(&mut self, report: Internal) {
        match report {
            Internal::Checked {
                proposal,
                valid,
                key,
            } => {
                self.checking.remove(&key);
                self.feed(Input::Proposal {
                    proposal: *proposal,
                    valid: Some(valid),
                })
                .await;
            }
            Internal::Built {
                height,
                round,
                transactions,
                block,
            } => {
                if self.building == Some((height, round)) {
                    self.building = None;
                }
                if height > self.bft.tip.height {
                    self.carried = Some((height, transactions));
                }
                match block {
                    Ok(block) => {
                        self.feed(Input::BlockBuilt {
                            height,
                            round,
                            block: *block,
                        })
                        .await;
                    }
                    Err(error) => {
                        tracing::warn!(height, round, %error, "cannot build a proposal");
                    }
                }
            }
            Internal::ImportChecked {
                block,
                result,
                reply,
            } => {
                let answer = match result {
                    Ok(()) => self.finish_import(&block).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(answer);
            }
        }
    }

    async fn finish_import(&mut self, block: &CommittedBlock) -> Result<u64, ImportError> {
        // The tip may have moved while the DA layer worked.
        let height = block.block.height();
        if height <= self.bft.tip.height {
            return self.import_committed_height(block);
        }
        check_next_header(&block.block.header, &self.bft.chain_id, &self.bft.tip)
            .map_err(ImportError::Invalid)?;
        self.store_block(block)
            .await
            .map_err(ImportError::Storage)?;
        tracing::info!(height, hash = %block.block.hash(), "imported block");
        self.pending_commit = None;
        self.start_next_height().await;
        Ok(self.bft.tip.height)
    }

    // ---- timers ----

    fn schedule(&mut self, after: Duration, kind: TimerKind) {
        self.timer_seq = self.timer_seq.wrapping_add(1);
        // Timeouts grow with the round; past a day they are as good as never.
        let now = Instant::now();
        let at = now.checked_add(after.min(MAX_TIMER)).unwrap_or(now);
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            kind,
        }));
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse(timer)) = self.timers.peek().copied() {
            if timer.at > now {
                break;
            }
            self.timers.pop();
            match timer.kind {
                TimerKind::Core {
                    height,
                    round,
                    step,
                } => {
                    self.feed(Input::Timeout {
                        height,
                        round,
                        step,
                    })
                    .await;
                }
                TimerKind::StartHeight { height } => {
                    if height == self.bft.tip.height.saturating_add(1) {
                        self.start_next_height().await;
                    }
                }
                TimerKind::RetryCommit => {
                    if let Some(block) = self.pending_commit.take() {
                        self.commit(block).await;
                    }
                }
            }
        }
    }

    // ---- the core ----

    async fn start_next_height(&mut self) {
        let tip = self.bft.tip;
        self.feed(Input::StartHeight {
            height: tip.height.saturating_add(1),
            parent: tip.hash,
        })
        .await;
    }

    /// Feeds the core and carries out what it asks, in order.
    async fn feed(&mut self, input: Input) {
        let outputs = self.bft.core.handle(input);
        for output in outputs {
            match output {
                Output::Persist(state) => self.persist(state).await,
                Output::Broadcast(message) => self.broadcast(*message).await,
                Output::ScheduleTimeout {
                    height,
                    round,
                    step,
                    after,
                } => self.schedule(
                    after,
                    TimerKind::Core {
                        height,
                        round,
                        step,
                    },
                ),
                Output::BuildBlock {
                    height,
                    round,
                    parent,
                } => self.build(height, round, parent),
                Output::CheckProposal(proposal) => self.check(proposal),
                Output::Commit { block, certificate } => {
                    self.commit(CommittedBlock {
                        block: *block,
                        certificate,
                    })
                    .await;
                }
                Output::Behind { from_height } => self.behind(from_height),
                Output::Evidence(evidence) => self.record_evidence(&evidence).await,
            }
        }
    }

    async fn persist(&mut self, state: Box<DurableState>) {
        let written = match self.bft.state_tree.insert(STATE_KEY, state.encode()) {
            Ok(_) => self.db.flush_async().await.map(|_| ()),
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => self.unpersisted = None,
            Err(error) => {
                tracing::error!(%error, "cannot persist the consensus state; holding back signed messages");
                self.unpersisted = Some(state);
            }
        }
    }

    async fn broadcast(&mut self, message: ConsensusMessage) {
        if let Some(state) = self.unpersisted.take() {
            // Whatever was signed after that state must not leave before it is durable.
            self.persist(state).await;
            if self.unpersisted.is_some() {
                tracing::warn!("not sending a signed message: its state is not durable");
                return;
            }
        }
        match self
            .deps
            .outbound
            .try_send(ConsensusOutbound::Broadcast(message))
        {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("outbound channel full; dropping a consensus message");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("outbound channel closed; dropping a consensus message");
            }
        }
    }

    fn behind(&mut self, from_height: u64) {
        let now = Instant::now();
        if self
            .last_behind
            .is_some_and(|last| now.duration_since(last) < BEHIND_INTERVAL)
        {
            return;
        }
        self.last_behind = Some(now);
        tracing::info!(
            from_height,
            "behind the other validators; asking for blocks"
        );
        if let Err(error) = self
            .deps
            .outbound
            .try_send(ConsensusOutbound::Behind { from_height })
        {
            tracing::debug!(%error, "cannot ask for blocks");
        }
    }

    async fn record_evidence(&mut self, evidence: &Equivocation) {
        let vote = &evidence.first.vote;
        tracing::warn!(
            validator = %evidence.first.validator,
            height = vote.height,
            round = vote.round,
            kind = ?vote.kind,
            "validator equivocated"
        );
        match self.bft.evidence.add(evidence) {
            Ok(true) => {
                if let Err(error) = self.db.flush_async().await {
                    tracing::error!(%error, "cannot flush evidence");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot store evidence"),
        }
    }

    /// Checks a proposal's block off the loop: it must be the next block on the tip, dated
    /// sensibly, and its body must match `data_root` and `body_size`.
    fn check(&mut self, proposal: Box<SignedProposal>) {
        let key = hash_of(&proposal.data);
        if !self.checking.insert(key) {
            return;
        }
        let tip = self.bft.tip;
        let chain_id = self.bft.chain_id.clone();
        let da = self.deps.da.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let header = &proposal.block.header;
            let valid = match check_proposed_header(header, &chain_id, &tip, now_ms()) {
                Err(error) => {
                    tracing::debug!(height = header.height, %error, "invalid proposal");
                    false
                }
                Ok(()) => match da.commit(Arc::new(proposal.block.body.clone())).await {
                    Ok(commitment) => {
                        commitment.data_root == header.data_root
                            && commitment.body_size == header.body_size
                    }
                    Err(error) => {
                        tracing::warn!(height = header.height, %error, "cannot check a proposal's body");
                        false
                    }
                },
            };
            let _ = internal
                .send(Internal::Checked {
                    proposal,
                    valid,
                    key,
                })
                .await;
        });
    }

    /// Builds our proposal off the loop, from the mempool, settlement and the DA layer.
    fn build(&mut self, height: u64, round: u32, parent: Hash) {
        let tip = self.bft.tip;
        let Some(proposer) = self.bft.address else {
            return;
        };
        if parent != tip.hash || height != tip.height.saturating_add(1) {
            return;
        }
        if self.building == Some((height, round)) {
            return;
        }
        self.building = Some((height, round));
        let carried = match &self.carried {
            Some((carried_height, transactions))
                if *carried_height == height && !transactions.is_empty() =>
            {
                Some(transactions.clone())
            }
            _ => None,
        };
        let deps = self.deps.clone();
        let chain_id = self.bft.chain_id.clone();
        let (max_transactions, max_bytes) = (
            self.bft.config.max_block_transactions,
            self.bft.config.max_block_bytes,
        );
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let (transactions, block) = build_block(
                &deps,
                &chain_id,
                tip,
                proposer,
                (max_transactions, max_bytes),
                carried,
            )
            .await;
            let _ = internal
                .send(Internal::Built {
                    height,
                    round,
                    transactions,
                    block: block.map(Box::new),
                })
                .await;
        });
    }

    /// Stores a decided block, publishes it, and starts the next height after the commit
    /// pause. A block that cannot be stored is retried.
    async fn commit(&mut self, block: CommittedBlock) {
        let height = block.block.height();
        if height <= self.bft.tip.height {
            // Imported meanwhile.
            return;
        }
        match self.store_block(&block).await {
            Ok(()) => {
                tracing::info!(
                    height,
                    round = block.certificate.round,
                    hash = %block.block.hash(),
                    "committed block"
                );
                let pause = Duration::from_millis(self.bft.config.block_time_ms);
                self.schedule(
                    pause,
                    TimerKind::StartHeight {
                        height: height.saturating_add(1),
                    },
                );
            }
            Err(error) => {
                tracing::error!(height, %error, "cannot store the decided block; retrying");
                self.pending_commit = Some(block);
                self.schedule(COMMIT_RETRY, TimerKind::RetryCommit);
            }
        }
    }

    /// Writes, flushes and announces a block that extends the tip.
    async fn store_block(&mut self, block: &CommittedBlock) -> Result<(), String> {
        let header = &block.block.header;
        check_next_header(header, &self.bft.chain_id, &self.bft.tip)?;
        block
            .certificate
            .verify(&self.bft.chain_id, header, &self.bft.validators)
            .map_err(|error| format!("certificate does not verify: {error}"))?;
        let tip = self.bft.store.put(block).map_err(|e| e.to_string())?;
        self.db
            .flush_async()
            .await
            .map_err(|e| format!("flush failed: {e}"))?;
        self.bft.tip = tip;
        if self
            .carried
            .as_ref()
            .is_some_and(|(height, _)| *height <= tip.height)
        {
            self.carried = None;
        }
        self.events.publish(ConsensusEvent::Committed {
            height: tip.height,
            block_hash: tip.hash,
        });
        Ok(())
    }
}

/// Builds the block after `tip`: transactions (carried ones first, else reaped), settlement
/// messages, the DA commitment, the header. Returns the transactions used whatever happens,
/// since the mempool holds them reserved for this height.
async fn build_block(
    deps: &ConsensusDeps,
    chain_id: &str,
    tip: Tip,
    proposer: Address,
    (max_transactions, max_bytes): (usize, usize),
    carried: Option<Vec<Transaction>>,
) -> (Vec<Transaction>, Result<Block, String>) {
    let height = tip.height.saturating_add(1);
    let transactions = match carried {
        Some(transactions) => transactions,
        None => match deps
            .execution
            .reap_transactions(
                height,
                max_transactions,
                proposal::transaction_budget(max_bytes),
            )
            .await
        {
            Ok(transactions) => transactions,
            Err(error) => {
                return (
                    Vec::new(),
                    Err(format!("cannot reap transactions: {error}")),
                )
            }
        },
    };
    let execution = proposal::execution_blob(&transactions);
    let budget = proposal::budget_after(max_bytes, execution.as_ref());
    let settlement = match deps.settlement.pending_blobs(height, budget).await {
        Ok(blobs) => blobs,
        Err(error) => {
            return (
                transactions,
                Err(format!("cannot get settlement messages: {error}")),
            )
        }
    };
    // Every height gets a block, empty or not.
    let outside = crate::outside_blobs(
        deps,
        height,
        proposal::budget_after(max_bytes, execution.iter().chain(&settlement)),
    )
    .await;
    let body = match proposal::decide(execution, settlement, outside, true) {
        Decision::Propose(body) => Arc::new(body),
        Decision::Skip => Arc::new(Vec::new()),
    };
    let commitment = match deps.da.commit(Arc::clone(&body)).await {
        Ok(commitment) => commitment,
        Err(error) => {
            return (
                transactions,
                Err(format!("cannot commit the body with the DA layer: {error}")),
            )
        }
    };
    let header = proposal::header(chain_id, &tip, now_ms(), proposer, &commitment);
    let block = Block {
        header,
        body: Arc::unwrap_or_clone(body),
    };
    (transactions, Ok(block))
}
