//! Proposals sent as rows (`[network] dissemination = "rows"`), as Celestia spreads a block:
//! the proposer extends its block's body into the `2k × 2k` square and sends each validator
//! only its assigned rows ([`ShareHolder`]: `2k / n` of them, on that validator's own topic)
//! with the signed proposal and the square's roots; each validator checks its rows against
//! the roots and forwards them to everyone; a node rebuilds the body from any `k` rows it
//! gathered and hands the whole proposal to its consensus engine, which checks it exactly as
//! one that arrived whole.
//!
//! A validator hands a proposal over (and so can vote for it) only once its *own* rows have
//! arrived and verify, and only with the whole body rebuilt: a proposer that withholds rows
//! from more than a third of the voting power gets no quorum, and every honest validator
//! that voted for a committed block holds all of it. The proposer keeps its own rows, and
//! sends a block whole when the others' would not make `k` with the most rows that faulty
//! holders may withhold taken away (small squares, a lone validator); with `n = 3f + 1`
//! equal validators and a large square, the `2f` honest ones besides the proposer hold
//! `4fk / (3f + 1)` rows between them, at least the `k` any rebuild needs. Parts are never
//! relayed by gossip: the proposer sends each to its holder, each holder sends its own to
//! every peer, a two-level broadcast as RaptorCast does.
//!
//! Every node receives both ways, whatever it sends, so the setting may differ between the
//! nodes of one network. [`Assemblies`] is the synchronous bookkeeping (which rows of which
//! proposal arrived, when one is complete); [`Disseminator`] wires it to the network, the
//! DA layer (which extends, checks and rebuilds squares) and the consensus engine.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_consensus::ProposerSchedule;
use lamina_da::square::{BadEncodingCheck, CodecKind};
use lamina_primitives::interfaces::consensus::{ConsensusEvent, ConsensusHandle, ConsensusMessage};
use lamina_primitives::interfaces::da::{DaError, DaHandle, HeldShares, ShareHolder, SquareRoots};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::{
    codec, Address, Block, BlockHeader, Hash, ProposalData, Signature, SignedProposal, ValidatorSet,
};
use tokio::sync::broadcast;

use crate::bad_encoding::{BadEncodingLog, BadEncodingNotice, MAX_NOTICE_BYTES};
use crate::metrics::Metrics;
use crate::network::{NetworkHandle, Topic, Verdict};

/// Proposals whose rows are gathered at once; beyond it the lowest (height, round) is
/// dropped. Each holds up to twice its body, so this bounds what peers can make a node keep.
const MAX_ASSEMBLIES: usize = 8;

/// Heights gathered beyond the next one to commit.
const HEIGHTS_AHEAD: u64 = 1;

/// Proposals remembered as badly encoded at once (one per round at most for each gathered
/// height is what honest rounds make).
const MAX_REFUSED: usize = 64;

/// Own proposals whose parts are kept, so a re-sent proposal is not extended again.
const MAX_OWN_PROPOSALS: usize = 4;

/// One holder's rows of a proposed block, with what any node needs to check them: who
/// proposed it and its signature over the proposal, the block's header, and the square's
/// roots (borsh, on [`Topic::HolderRows`] from the proposer and on [`Topic::Rows`] when its
/// holder forwards it; see docs/wire-format.md).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProposalPart {
    /// The validator that signed the proposal (the consensus engine checks that it is the
    /// round's proposer once the body is rebuilt).
    pub proposer: Address,
    /// What the proposer signed.
    pub proposal: ProposalData,
    /// The proposer's signature over `proposal`.
    pub signature: Signature,
    /// The proposed block's header.
    pub header: BlockHeader,
    /// The extended square's row and column roots (they hash to `header.data_root`).
    pub roots: SquareRoots,
    /// Whose rows these are: holder `holder` of as many as there are validators.
    pub holder: u32,
    /// The rows, each its first `k` shares.
    pub rows: HeldShares,
}

impl ProposalPart {
    /// Checks what needs no extension: the signature is the round's proposer's over this
    /// header, the roots and rows are for this header's height and `data_root`, the square
    /// is `2k` wide for a power of two `k`, the rows are exactly the holder's, and a part on
    /// a holder's own topic is that holder's. `Err` says what is wrong.
    fn check(
        &self,
        chain_id: &str,
        validators: &ValidatorSet,
        schedule: &ProposerSchedule,
        topic: Topic,
    ) -> Result<(), String> {
        let height = self.header.height;
        check_signed_proposal(
            chain_id,
            schedule,
            &self.proposer,
            &self.proposal,
            &self.signature,
            &self.header,
        )?;
        if self.roots.height != height || self.roots.data_root != self.header.data_root {
            return Err("the roots are not this header's".into());
        }
        if self.rows.height != height || self.rows.data_root != self.header.data_root {
            return Err("the rows are not this header's".into());
        }
        let count = u32::try_from(validators.len()).unwrap_or(u32::MAX);
        if self.holder >= count {
            return Err(format!("holder {} of {count} does not exist", self.holder));
        }
        if matches!(topic, Topic::HolderRows(holder) if holder != self.holder) {
            return Err(format!("holder {}'s rows on {topic}", self.holder));
        }
        let width = self.roots.row_roots.len();
        if width < 2 || !width.is_power_of_two() || self.roots.col_roots.len() != width {
            return Err(format!("a square {width} rows wide cannot be extended"));
        }
        let holder = ShareHolder {
            index: self.holder,
            count,
        };
        let expected = holder.rows(height, width as u64);
        if !self
            .rows
            .rows
            .iter()
            .map(|row| row.index)
            .eq(expected.iter().copied())
        {
            return Err(format!("the rows are not holder {}'s", self.holder));
        }
        if !self.rows.columns.iter().map(|col| col.index).eq(expected) {
            return Err(format!("the columns are not holder {}'s", self.holder));
        }
        Ok(())
    }

    fn key(&self) -> Key {
        (
            self.proposal.height,
            self.proposal.round,
            self.proposal.block_hash,
        )
    }
}

/// Checks that `signature` is `proposer`'s over `proposal`, that `proposer` is the
/// proposer of its round, and that `proposal` is for `header`. `Err` says what is wrong.
pub(crate) fn check_signed_proposal(
    chain_id: &str,
    schedule: &ProposerSchedule,
    proposer: &Address,
    proposal: &ProposalData,
    signature: &Signature,
    header: &BlockHeader,
) -> Result<(), String> {
    let height = header.height;
    if proposal.height != height || proposal.block_hash != header.hash() {
        return Err("the signed proposal is not for this header".into());
    }
    if schedule.proposer(height, proposal.round) != Some(*proposer) {
        return Err(format!(
            "{proposer} is not the proposer of height {height}, round {}",
            proposal.round
        ));
    }
    proposal
        .verify(chain_id, proposer, signature)
        .map_err(|_| "bad proposal signature".to_string())
}

/// A proposal: its height, round and block hash.
type Key = (u64, u32, Hash);

/// A proposal's parts, encoded, each with the topic it goes out on.
type EncodedParts = Arc<Vec<(Topic, Vec<u8>)>>;

/// What becomes of a part offered to [`Assemblies::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// For a height not gathered here (committed already, or too far ahead), or for a
    /// proposal crowded out by others: dropped.
    Stale,
    /// This holder's rows of this proposal are here already.
    Duplicate,
    /// Kept; nothing to do yet.
    Kept,
    /// Kept, and with it the proposal has enough rows (and this validator's own): rebuild it.
    Ready(Box<Rebuild>),
}

/// A proposal with enough rows to rebuild its body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rebuild {
    key: Key,
    /// The roots the rows were checked against.
    pub(crate) roots: SquareRoots,
    /// Every holder's rows gathered.
    pub(crate) rows: Vec<HeldShares>,
    /// The proposal, its body still empty.
    pub(crate) proposal: SignedProposal,
    /// Who signed it.
    pub(crate) proposer: Address,
}

/// Where a proposal's gathering stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Gathering,
    /// Handed to a rebuild (which is not retried: rows that each match their root and yet
    /// do not rebuild the body mean a badly encoded square, which more rows cannot fix), or
    /// our own proposal: no more rows are wanted.
    Done,
}

#[derive(Debug)]
struct Assembly {
    /// The first part that arrived, without its rows.
    first: ProposalPart,
    /// Rows by holder.
    parts: BTreeMap<u32, HeldShares>,
    stage: Stage,
}

/// The proposals whose rows are being gathered: synchronous and deterministic. A part is
/// first claimed (it is of use and not being checked already), then checked by the caller,
/// then admitted (or released if it failed).
#[derive(Debug)]
pub(crate) struct Assemblies {
    /// This node's holder index (a validator): it waits for its own rows.
    own: Option<u32>,
    /// Lowest height gathered: the one after the highest committed here.
    floor: u64,
    entries: BTreeMap<Key, Assembly>,
    /// Parts being checked now, so that copies of one are not checked at the same time.
    checking: HashSet<(Key, u32)>,
    /// Proposals shown to be badly encoded: none of their rows are wanted.
    refused: BTreeSet<Key>,
}

impl Assemblies {
    /// Nothing gathered yet, for holder `own` (`None`: not a validator).
    pub(crate) fn new(own: Option<u32>) -> Self {
        Assemblies {
            own,
            floor: 0,
            entries: BTreeMap::new(),
            checking: HashSet::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Whether proposals for `height` are gathered: the next height to commit and the one
    /// after (whose proposal the engine keeps until it gets there), not further ones.
    pub(crate) fn is_current(&self, height: u64) -> bool {
        (self.floor..=self.floor.saturating_add(HEIGHTS_AHEAD)).contains(&height)
    }

    /// Claims `holder`'s part of proposal `key` for checking, which costs an extension of
    /// each row: `true` when it is of use (its height is gathered, the proposal still wants
    /// rows and has none of this holder's) and no copy of it is being checked already. The
    /// caller then [`admit`](Self::admit)s it or [`release`](Self::release)s the claim.
    pub(crate) fn claim(&mut self, key: Key, holder: u32) -> bool {
        let useful = self.is_current(key.0)
            && !self.refused.contains(&key)
            && self.entries.get(&key).is_none_or(|assembly| {
                assembly.stage == Stage::Gathering && !assembly.parts.contains_key(&holder)
            });
        useful && self.checking.insert((key, holder))
    }

    /// Gives up a claim whose part failed its check.
    pub(crate) fn release(&mut self, key: Key, holder: u32) {
        self.checking.remove(&(key, holder));
    }

    /// Keeps a checked part and says whether its proposal can now be rebuilt.
    pub(crate) fn admit(&mut self, mut part: ProposalPart) -> Admission {
        let key = part.key();
        let holder = part.holder;
        self.checking.remove(&(key, holder));
        if !self.is_current(key.0) || !self.make_room(key) {
            return Admission::Stale;
        }
        // Only the rows are kept: any `k` of them rebuild the body, and the columns have
        // done their part (their holder's check).
        let rows = HeldShares {
            rows: std::mem::take(&mut part.rows.rows),
            columns: Vec::new(),
            ..part.rows.clone()
        };
        // The first part of a proposal is kept, without its rows, for its header and roots.
        let assembly = self.entries.entry(key).or_insert_with(|| Assembly {
            first: part,
            parts: BTreeMap::new(),
            stage: Stage::Gathering,
        });
        if assembly.parts.contains_key(&holder) {
            return Admission::Duplicate;
        }
        assembly.parts.insert(holder, rows);
        self.ready(key)
    }

    /// Whether `key` has, or can get, a place: when every place is taken, the highest
    /// (height, round) above it gives up its own, so proposals for far rounds (which only
    /// their proposer can sign, but it can sign many) cannot crowd out the current one.
    fn make_room(&mut self, key: Key) -> bool {
        if self.entries.contains_key(&key) || self.entries.len() < MAX_ASSEMBLIES {
            return true;
        }
        match self.entries.last_key_value() {
            Some((highest, _)) if *highest > key => {
                let highest = *highest;
                self.entries.remove(&highest);
                true
            }
            _ => false,
        }
    }

    /// `Ready` (and the assembly done) when `key` has enough rows, else `Kept`.
    fn ready(&mut self, key: Key) -> Admission {
        let Some(assembly) = self.entries.get_mut(&key) else {
            return Admission::Stale;
        };
        let k = assembly.first.roots.row_roots.len() / 2;
        let rows: usize = assembly.parts.values().map(|part| part.rows.len()).sum();
        let own_here = self.own.is_none_or(|own| assembly.parts.contains_key(&own));
        if assembly.stage != Stage::Gathering || rows < k || !own_here {
            return Admission::Kept;
        }
        assembly.stage = Stage::Done;
        let first = &assembly.first;
        Admission::Ready(Box::new(Rebuild {
            key,
            roots: first.roots.clone(),
            rows: std::mem::take(&mut assembly.parts).into_values().collect(),
            proposal: SignedProposal {
                data: first.proposal.clone(),
                block: Block {
                    header: first.header.clone(),
                    body: Vec::new(),
                },
                signature: first.signature,
            },
            proposer: first.proposer,
        }))
    }

    /// Marks `part`'s proposal as ours: we have its body and want none of its rows.
    pub(crate) fn own_proposal(&mut self, mut part: ProposalPart) {
        let key = part.key();
        if self.is_current(key.0) && self.make_room(key) {
            part.rows.rows = Vec::new();
            self.entries.insert(
                key,
                Assembly {
                    first: part,
                    parts: BTreeMap::new(),
                    stage: Stage::Done,
                },
            );
        }
    }

    /// Stops gathering proposal `key`, shown to be badly encoded, and wants none of its rows
    /// again (until its height is committed).
    pub(crate) fn refuse(&mut self, key: Key) {
        if !self.is_current(key.0) {
            return;
        }
        self.entries.remove(&key);
        // Bounded: only proposals of the gathered heights are kept, and a proposal's key is
        // signed by its round's proposer.
        if self.refused.len() < MAX_REFUSED {
            self.refused.insert(key);
        }
    }

    /// Forgets every proposal below `height` (the next height to commit).
    pub(crate) fn set_floor(&mut self, height: u64) {
        self.floor = self.floor.max(height);
        let floor = (self.floor, 0, Hash::default());
        self.entries = self.entries.split_off(&floor);
        self.refused = self.refused.split_off(&floor);
    }
}

/// How many validators may fail at once: the most, smallest first, whose voting power is
/// below a third of the total (what `bft` tolerates).
fn max_faulty(validators: &ValidatorSet) -> usize {
    let total = u128::from(validators.total_power());
    let mut powers: Vec<u64> = validators.validators().iter().map(|v| v.power).collect();
    powers.sort_unstable();
    let mut sum = 0u128;
    powers
        .into_iter()
        .take_while(|power| {
            sum += u128::from(*power);
            sum * 3 < total
        })
        .count()
}

/// Whether the rows a proposer (holder `own`) sends out make the `k` a rebuild needs even
/// when the `faulty` holders with the most of them withhold theirs. Not so for small
/// squares (two rows in all when `k = 1`) or a lone validator: those blocks go whole.
fn rows_survive(parts: &[HeldShares], own: u32, faulty: usize, k: usize) -> bool {
    let mut counts: Vec<usize> = (0..)
        .zip(parts)
        .filter(|(holder, _)| *holder != own)
        .map(|(_, part)| part.rows.len())
        .collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts.iter().skip(faulty).sum::<usize>() >= k
}

/// Sends this node's proposals as rows and gathers other nodes' rows into proposals.
#[derive(Debug)]
pub struct Disseminator {
    /// Whether this node sends its own proposals as rows.
    sends_rows: bool,
    network: NetworkHandle,
    da: DaHandle,
    consensus: ConsensusHandle,
    chain_id: String,
    validators: ValidatorSet,
    /// Who may sign the proposal of each round.
    schedule: ProposerSchedule,
    /// This node's holder index, if it is a validator.
    own: Option<u32>,
    /// Largest part accepted.
    max_part_bytes: usize,
    /// The chain's erasure code, which bad-encoding proofs are checked with.
    codec: CodecKind,
    /// Bad-encoding notices found here or checked from peers.
    bad_encoding: Arc<BadEncodingLog>,
    metrics: Arc<Metrics>,
    assemblies: Mutex<Assemblies>,
    /// How our recent proposals went out, for re-sends: their encoded parts, or `None` for
    /// whole (a block proposed again in a later round is a new proposal: its parts carry
    /// the round).
    sent: Mutex<VecDeque<(ProposalData, Option<EncodedParts>)>>,
}

impl Disseminator {
    /// The disseminator of a node that is holder `own` among `validators`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        sends_rows: bool,
        network: NetworkHandle,
        da: DaHandle,
        consensus: ConsensusHandle,
        chain_id: String,
        validators: ValidatorSet,
        own: Option<u32>,
        max_part_bytes: usize,
        codec: CodecKind,
        bad_encoding: Arc<BadEncodingLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Disseminator {
            sends_rows,
            network,
            da,
            consensus,
            chain_id,
            schedule: ProposerSchedule::new(&validators),
            validators,
            own,
            max_part_bytes,
            codec,
            bad_encoding,
            metrics,
            assemblies: Mutex::new(Assemblies::new(own)),
            sent: Mutex::default(),
        }
    }

    /// Sends our `proposal`: as rows, or whole on the consensus topic when this node sends
    /// whole blocks, the block is too small for its rows to survive faulty holders, or the
    /// DA layer cannot cut it (every node takes both).
    pub(crate) async fn send(&self, proposal: Box<SignedProposal>) {
        let parts = if self.sends_rows {
            self.parts_of(&proposal).await
        } else {
            None
        };
        let Some(parts) = parts else {
            let data = codec::encode(&ConsensusMessage::Proposal(proposal));
            let bytes = data.len() as u64;
            match self.network.publish(Topic::Consensus, data).await {
                Ok(()) => {
                    self.metrics.proposal_whole_bytes_sent.inc_by(bytes);
                }
                Err(error) => tracing::warn!(%error, "cannot publish a proposal"),
            }
            return;
        };
        tracing::debug!(
            height = proposal.data.height,
            round = proposal.data.round,
            parts = parts.len(),
            "sending a proposal as rows"
        );
        for (topic, data) in parts.iter() {
            let bytes = data.len() as u64;
            match self.network.publish(*topic, data.clone()).await {
                Ok(()) => {
                    self.metrics.proposal_parts_sent.inc();
                    self.metrics.proposal_part_bytes_sent.inc_by(bytes);
                }
                Err(error) => {
                    tracing::warn!(%topic, %error, "cannot publish a proposal's rows");
                }
            }
        }
    }

    /// The encoded parts of our `proposal` (`None`: it goes whole), as decided at its first
    /// send or cut now.
    async fn parts_of(&self, proposal: &SignedProposal) -> Option<EncodedParts> {
        let known = lock(&self.sent)
            .iter()
            .find(|(sent, _)| *sent == proposal.data)
            .map(|(_, parts)| parts.clone());
        if let Some(parts) = known {
            return parts;
        }
        let parts = self.cut(proposal).await.unwrap_or_else(|error| {
            tracing::warn!(height = proposal.data.height, %error, "cannot send the proposal as rows; sending it whole");
            None
        });
        let mut sent = lock(&self.sent);
        if sent.len() >= MAX_OWN_PROPOSALS {
            sent.pop_front();
        }
        sent.push_back((proposal.data.clone(), parts.clone()));
        parts
    }

    /// Cuts our `proposal` into every other validator's part, each for its own topic; `None`
    /// when those rows would not survive faulty holders.
    async fn cut(&self, proposal: &SignedProposal) -> Result<Option<EncodedParts>, String> {
        let (own, proposer) = self
            .own
            .and_then(|own| {
                let validator = self.validators.validators().get(own as usize)?;
                Some((own, validator.address))
            })
            .ok_or("this node is not a validator")?;
        let holders = u32::try_from(self.validators.len()).map_err(|e| e.to_string())?;
        let height = proposal.data.height;
        let dispersal = self
            .da
            .disperse(height, Arc::new(proposal.block.body.clone()), holders)
            .await
            .map_err(|e| e.to_string())?;
        let k = dispersal.roots.row_roots.len() / 2;
        if !rows_survive(&dispersal.parts, own, max_faulty(&self.validators), k) {
            tracing::debug!(height, k, "a square this small goes whole");
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(dispersal.parts.len());
        for (holder, rows) in (0..holders).zip(dispersal.parts) {
            let part = ProposalPart {
                proposer,
                proposal: proposal.data.clone(),
                signature: proposal.signature,
                header: proposal.block.header.clone(),
                roots: dispersal.roots.clone(),
                holder,
                rows,
            };
            if holder == own {
                // Kept: `rows_survive` counted without them.
                lock(&self.assemblies).own_proposal(part);
                continue;
            }
            let data = codec::encode(&part);
            if data.len() > self.max_part_bytes {
                return Err(format!(
                    "holder {holder}'s rows take {} bytes; the limit is {}",
                    data.len(),
                    self.max_part_bytes
                ));
            }
            parts.push((Topic::HolderRows(holder), data));
        }
        Ok(Some(Arc::new(parts)))
    }

    /// Judges a part gossiped on `topic`: checks it, forwards it if it is our own rows from
    /// the proposer, keeps it, and rebuilds the proposal once enough rows are here.
    pub(crate) async fn judge(self: &Arc<Self>, topic: Topic, data: &[u8]) -> Verdict {
        let Ok(mut part) = codec::decode::<ProposalPart>(data, self.max_part_bytes) else {
            return Verdict::Reject;
        };
        if let Err(reason) = part.check(&self.chain_id, &self.validators, &self.schedule, topic) {
            tracing::debug!(%topic, %reason, "refused a proposal part");
            return Verdict::Reject;
        }
        let (key, holder) = (part.key(), part.holder);
        let (claimed, forward) = {
            let mut assemblies = lock(&self.assemblies);
            // Our rows from the proposer are forwarded each time they come: a re-send means
            // the proposal is still undecided, and a peer may have missed them.
            let forward = topic == Topic::HolderRows(holder)
                && Some(holder) == self.own
                && assemblies.is_current(key.0);
            (assemblies.claim(key, holder), forward)
        };
        if !claimed && !forward {
            return Verdict::Ignore;
        }
        // The rows go to the check and come back, rather than being copied for it.
        let unchecked = HeldShares {
            rows: std::mem::take(&mut part.rows.rows),
            columns: std::mem::take(&mut part.rows.columns),
            ..part.rows.clone()
        };
        match self.da.check_rows(part.roots.clone(), unchecked).await {
            Ok(rows) => part.rows = rows,
            Err(error) => {
                if claimed {
                    lock(&self.assemblies).release(key, holder);
                }
                tracing::debug!(%topic, %error, "refused a proposal part");
                return match error {
                    RequestError::Layer(DaError::InvalidShares(_)) => Verdict::Reject,
                    _ => Verdict::Ignore,
                };
            }
        }
        tracing::debug!(%topic, height = key.0, round = key.1, holder, "checked a proposal part");
        if forward {
            if let Err(error) = self.network.publish(Topic::Rows, data.to_vec()).await {
                tracing::warn!(%error, "cannot forward our rows of a proposal");
            }
        }
        if claimed {
            if let Admission::Ready(rebuild) = lock(&self.assemblies).admit(part) {
                let this = Arc::clone(self);
                tokio::spawn(async move { this.rebuild(*rebuild).await });
            }
        }
        // Never relayed: a part on `rows` came straight from its holder, which sends it to
        // every peer itself, and one on `rows-<i>` has no other subscriber. Gossip relays
        // would only add copies of megabytes (a two-level broadcast, as RaptorCast does).
        Verdict::Ignore
    }

    /// Rebuilds a proposal's body from its rows and hands the proposal to the engine.
    async fn rebuild(&self, rebuild: Rebuild) {
        let Rebuild {
            key,
            roots,
            rows,
            mut proposal,
            proposer,
        } = rebuild;
        let body = match self.da.reassemble(roots, rows).await {
            Ok(body) => body,
            Err(RequestError::Layer(DaError::BadEncoding { proof, .. })) => {
                let notice = BadEncodingNotice {
                    proposer,
                    proposal: proposal.data,
                    signature: proposal.signature,
                    header: proposal.block.header,
                    proof: *proof,
                };
                self.found_bad_encoding(Arc::new(notice), true).await;
                return;
            }
            Err(error) => {
                tracing::warn!(height = key.0, round = key.1, %error, "cannot rebuild a proposal from its rows");
                return;
            }
        };
        proposal.block.body = Arc::unwrap_or_clone(body);
        self.metrics.proposals_rebuilt.inc();
        let verdict = self
            .consensus
            .deliver(ConsensusMessage::Proposal(Box::new(proposal)))
            .await;
        tracing::debug!(
            height = key.0,
            round = key.1,
            ?verdict,
            "rebuilt a proposal from rows"
        );
    }

    /// Judges a bad-encoding notice gossiped by a peer: kept, acted on and relayed when the
    /// proposal is signed by its round's proposer and the proof holds against its header.
    pub(crate) async fn judge_bad_encoding(&self, data: &[u8]) -> Verdict {
        let Ok(notice) = codec::decode::<BadEncodingNotice>(data, MAX_NOTICE_BYTES) else {
            return Verdict::Reject;
        };
        if self.bad_encoding.contains(notice.key()) {
            return Verdict::Ignore;
        }
        if let Err(reason) = check_signed_proposal(
            &self.chain_id,
            &self.schedule,
            &notice.proposer,
            &notice.proposal,
            &notice.signature,
            &notice.header,
        ) {
            tracing::debug!(%reason, "refused a bad-encoding notice");
            return Verdict::Reject;
        }
        // Decodes one line: up to a millisecond for the largest squares, off the runtime.
        let notice = Arc::new(notice);
        let (checked, codec) = (Arc::clone(&notice), self.codec);
        let verdict = tokio::task::spawn_blocking(move || {
            checked.proof.verify(&checked.header.data_root, codec)
        })
        .await;
        match verdict {
            Ok(Ok(())) => {
                self.found_bad_encoding(notice, false).await;
                Verdict::Accept
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "refused a bad-encoding notice whose proof does not hold");
                Verdict::Reject
            }
            Err(_) => Verdict::Ignore,
        }
    }

    /// Acts on a checked notice: keeps it, stops gathering the proposal's rows, and, when
    /// this node found it, sends it to every peer (a peer's travels on by gossip).
    async fn found_bad_encoding(&self, notice: Arc<BadEncodingNotice>, found_here: bool) {
        let (height, round, block_hash) = notice.key();
        lock(&self.assemblies).refuse(notice.key());
        if !self.bad_encoding.record(Arc::clone(&notice), found_here) {
            return;
        }
        self.metrics.bad_encoding_notices.inc();
        tracing::warn!(
            height,
            round,
            %block_hash,
            proposer = %notice.proposer,
            axis = ?notice.proof.axis,
            index = notice.proof.index,
            found_here,
            "refused a badly encoded proposal: the proof is on GET /v1/da/bad-encoding"
        );
        if found_here {
            let data = codec::encode(notice.as_ref());
            if let Err(error) = self.network.publish(Topic::BadEncoding, data).await {
                tracing::warn!(%error, "cannot publish a bad-encoding proof");
            }
        }
    }

    /// Keeps [`Assemblies`] to the heights not yet committed, until the engine stops.
    pub(crate) async fn follow_commits(
        self: Arc<Self>,
        mut events: broadcast::Receiver<ConsensusEvent>,
    ) {
        if let Ok(status) = self.consensus.status().await {
            lock(&self.assemblies).set_floor(status.committed_height.saturating_add(1));
        }
        loop {
            match events.recv().await {
                Ok(ConsensusEvent::Committed { height, .. }) => {
                    lock(&self.assemblies).set_floor(height.saturating_add(1));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// The lock's value even if a holder panicked: the bookkeeping stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lamina_primitives::interfaces::da::HeldRow;
    use lamina_primitives::{Keypair, Validator};

    use super::*;

    const CHAIN: &str = "lamina-test";
    /// Four validators and `k = 4`: an `8 × 8` square, two rows per holder.
    const HOLDERS: u32 = 4;
    const WIDTH: u64 = 8;

    fn keys() -> Vec<Keypair> {
        (0..HOLDERS)
            .map(|i| Keypair::from_seed([i as u8 + 1; 32]))
            .collect()
    }

    fn validators(powers: &[u64]) -> ValidatorSet {
        ValidatorSet::new(
            (0..)
                .zip(powers)
                .map(|(i, power)| Validator {
                    address: Keypair::from_seed([i + 1; 32]).address(),
                    power: *power,
                })
                .collect(),
        )
    }

    /// Holder `holder`'s part of a proposal at `(height, round)` signed by `key`.
    fn part(key: &Keypair, height: u64, round: u32, holder: u32) -> ProposalPart {
        let data_root = Hash::digest(&height.to_be_bytes());
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height,
            parent_hash: Hash::default(),
            timestamp_ms: 1,
            proposer: key.address(),
            data_root,
            body_size: 0,
        };
        let proposal = ProposalData {
            height,
            round,
            pol_round: None,
            block_hash: header.hash(),
        };
        let rows: Vec<HeldRow> = ShareHolder {
            index: holder,
            count: HOLDERS,
        }
        .rows(height, WIDTH)
        .into_iter()
        .map(|index| HeldRow {
            index,
            shares: vec![index as u8; 8],
        })
        .collect();
        ProposalPart {
            proposer: key.address(),
            signature: proposal.sign(CHAIN, key),
            proposal,
            header,
            roots: SquareRoots {
                height,
                data_root,
                row_roots: vec![Hash::default(); WIDTH as usize],
                col_roots: vec![Hash::default(); WIDTH as usize],
            },
            holder,
            rows: HeldShares {
                height,
                data_root,
                original_width: WIDTH / 2,
                columns: rows.clone(),
                rows,
            },
        }
    }

    /// Claims, then admits, as a node does once the part's rows are checked.
    fn offer(assemblies: &mut Assemblies, part: ProposalPart) -> Admission {
        assert!(assemblies.claim(part.key(), part.holder), "not wanted");
        assemblies.admit(part)
    }

    fn ready(admission: Admission) -> Rebuild {
        match admission {
            Admission::Ready(rebuild) => *rebuild,
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn a_validator_hands_over_a_proposal_only_with_k_rows_including_its_own() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(Some(2));
        assemblies.set_floor(5);
        assert_eq!(offer(&mut assemblies, part(key, 5, 0, 0)), Admission::Kept);
        // Four rows now, k of them, but not this validator's own.
        assert_eq!(offer(&mut assemblies, part(key, 5, 0, 1)), Admission::Kept);
        let rebuild = ready(offer(&mut assemblies, part(key, 5, 0, 2)));
        assert_eq!(rebuild.rows.len(), 3);
        assert!(rebuild.proposal.block.body.is_empty());
        assert_eq!(rebuild.proposal.data, part(key, 5, 0, 0).proposal);
        // Handed to a rebuild: no more rows are wanted, and one checked meanwhile starts
        // nothing.
        assert!(!assemblies.claim(part(key, 5, 0, 3).key(), 3));
        assert_eq!(assemblies.admit(part(key, 5, 0, 3)), Admission::Kept);
        // A different round is a different proposal.
        assert!(assemblies.claim(part(key, 5, 1, 0).key(), 0));
    }

    #[test]
    fn a_node_that_is_not_a_validator_needs_any_k_rows() {
        let key = &keys()[1];
        let mut assemblies = Assemblies::new(None);
        assemblies.set_floor(5);
        assert_eq!(offer(&mut assemblies, part(key, 5, 0, 3)), Admission::Kept);
        let rebuild = ready(offer(&mut assemblies, part(key, 5, 0, 1)));
        let rows: usize = rebuild.rows.iter().map(|part| part.rows.len()).sum();
        assert_eq!(rows, 4);
        assert_eq!(rebuild.roots, part(key, 5, 0, 0).roots);
    }

    #[test]
    fn a_part_is_checked_once_at_a_time_and_a_failed_check_frees_it() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(None);
        assemblies.set_floor(5);
        let first = part(key, 5, 0, 1);
        assert!(assemblies.claim(first.key(), 1));
        assert!(!assemblies.claim(first.key(), 1), "a copy is being checked");
        assemblies.release(first.key(), 1);
        assert!(assemblies.claim(first.key(), 1));
        assert_eq!(assemblies.admit(first.clone()), Admission::Kept);
        assert!(!assemblies.claim(first.key(), 1), "its rows are here");
        assert_eq!(assemblies.admit(first), Admission::Duplicate);
    }

    #[test]
    fn our_own_proposal_is_never_rebuilt() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(Some(0));
        assemblies.set_floor(5);
        assemblies.own_proposal(part(key, 5, 0, 0));
        for holder in 1..HOLDERS {
            assert!(!assemblies.claim(part(key, 5, 0, holder).key(), holder));
            assert_eq!(assemblies.admit(part(key, 5, 0, holder)), Admission::Kept);
        }
    }

    #[test]
    fn only_the_next_two_heights_are_gathered_and_far_rounds_give_way() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(Some(3));
        assemblies.set_floor(5);
        assert_eq!(offer(&mut assemblies, part(key, 5, 0, 0)), Admission::Kept);
        assemblies.set_floor(6);
        assert!(assemblies.entries.is_empty());
        for (height, wanted) in [(5, false), (6, true), (7, true), (8, false)] {
            assert_eq!(assemblies.is_current(height), wanted, "height {height}");
            assert_eq!(assemblies.claim(part(key, height, 0, 1).key(), 1), wanted);
        }
        assert_eq!(assemblies.admit(part(key, 8, 0, 0)), Admission::Stale);

        for round in 10..10 + MAX_ASSEMBLIES as u32 {
            assert_eq!(
                offer(&mut assemblies, part(key, 7, round, 0)),
                Admission::Kept
            );
        }
        // Full: a later round finds no place, an earlier one takes the latest's.
        assert_eq!(assemblies.admit(part(key, 7, 99, 0)), Admission::Stale);
        assert_eq!(offer(&mut assemblies, part(key, 6, 0, 0)), Admission::Kept);
        assert_eq!(assemblies.entries.len(), MAX_ASSEMBLIES);
        let latest = 10 + MAX_ASSEMBLIES as u32 - 1;
        assert!(assemblies.claim(part(key, 7, latest, 0).key(), 0));
        assert!(!assemblies.claim(part(key, 7, 10, 0).key(), 0));
    }

    #[test]
    fn faults_tolerated_follow_voting_power() {
        assert_eq!(max_faulty(&validators(&[1])), 0);
        assert_eq!(max_faulty(&validators(&[1, 1, 1])), 0);
        assert_eq!(max_faulty(&validators(&[1, 1, 1, 1])), 1);
        assert_eq!(max_faulty(&validators(&[1; 7])), 2);
        // The three small validators together hold 3/13 of the power.
        assert_eq!(max_faulty(&validators(&[10, 1, 1, 1])), 3);
    }

    /// Every holder's part of a `2k`-wide square, rows counted only.
    fn parts(height: u64, holders: u32, k: u64) -> Vec<HeldShares> {
        (0..holders)
            .map(|index| HeldShares {
                height,
                data_root: Hash::default(),
                original_width: k,
                columns: Vec::new(),
                rows: ShareHolder {
                    index,
                    count: holders,
                }
                .rows(height, 2 * k)
                .into_iter()
                .map(|index| HeldRow {
                    index,
                    shares: Vec::new(),
                })
                .collect(),
            })
            .collect()
    }

    #[test]
    fn only_squares_whose_rows_survive_faulty_holders_go_as_rows() {
        for height in 0..8 {
            // Four validators share 128 rows, 32 each: any two of the three others make 64.
            assert!(rows_survive(&parts(height, 4, 64), 0, 1, 64));
            // Seven share 256: the proposer's 36 or 37 kept, two others' missing, enough.
            assert!(rows_survive(&parts(height, 7, 128), 3, 2, 128));
            // An empty block's two rows: when the proposer keeps one, a single faulty
            // holder of the other leaves nobody a row.
            let proposer_keeps_one = !ShareHolder { index: 0, count: 4 }
                .rows(height, 2)
                .is_empty();
            assert_eq!(
                rows_survive(&parts(height, 4, 1), 0, 1, 1),
                !proposer_keeps_one
            );
            // A lone validator has nobody to send rows to.
            assert!(!rows_survive(&parts(height, 1, 64), 0, 0, 64));
        }
        // Without faults, three validators' rows do.
        assert!(rows_survive(&parts(5, 3, 4), 1, 0, 4));
    }

    #[test]
    fn a_part_must_be_signed_by_the_rounds_proposer_and_carry_its_holders_rows() {
        let keys = keys();
        let set = validators(&[1; HOLDERS as usize]);
        let schedule = ProposerSchedule::new(&set);
        let proposer = schedule.proposer(9, 2).unwrap();
        let key = keys.iter().find(|key| key.address() == proposer).unwrap();
        let other = keys.iter().find(|key| key.address() != proposer).unwrap();
        let good = part(key, 9, 2, 3);
        let check = |part: &ProposalPart, topic| part.check(CHAIN, &set, &schedule, topic);
        assert_eq!(check(&good, Topic::Rows), Ok(()));
        assert_eq!(check(&good, Topic::HolderRows(3)), Ok(()));
        assert!(check(&good, Topic::HolderRows(2)).is_err());
        assert!(good
            .check("other-chain", &set, &schedule, Topic::Rows)
            .is_err());

        // A validator, but not this round's proposer; or a forged signer.
        assert!(check(&part(other, 9, 2, 3), Topic::Rows).is_err());
        let mut forged = good.clone();
        forged.proposer = other.address();
        assert!(check(&forged, Topic::Rows).is_err());
        let mut other_header = good.clone();
        other_header.header.timestamp_ms += 1;
        assert!(check(&other_header, Topic::Rows).is_err());
        let mut other_roots = good.clone();
        other_roots.roots.data_root = Hash::default();
        assert!(check(&other_roots, Topic::Rows).is_err());
        let mut uneven = good.clone();
        uneven.roots.row_roots.push(Hash::default());
        assert!(check(&uneven, Topic::Rows).is_err());
        let mut wrong_rows = good.clone();
        wrong_rows.rows.rows.pop();
        assert!(check(&wrong_rows, Topic::Rows).is_err());
        let mut someone_elses = good.clone();
        someone_elses.holder = 2;
        assert!(check(&someone_elses, Topic::Rows).is_err());
        let mut no_such_holder = good;
        no_such_holder.holder = HOLDERS;
        assert!(check(&no_such_holder, Topic::Rows).is_err());
    }

    #[test]
    fn a_part_round_trips_through_borsh() {
        let part = part(&keys()[2], 3, 1, 1);
        let bytes = codec::encode(&part);
        assert_eq!(
            codec::decode::<ProposalPart>(&bytes, bytes.len()).unwrap(),
            part
        );
    }
}
