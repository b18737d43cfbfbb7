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
//! that voted for a committed block holds all of it. The proposer keeps its own rows (a
//! lone validator excepted): with `n = 3f + 1` validators, the `2f` honest ones besides it
//! hold `4fk / (3f + 1)` rows between them, at least the `k` any rebuild needs.
//!
//! Every node receives both ways, whatever it sends, so the setting may differ between the
//! nodes of one network. [`Assemblies`] is the synchronous bookkeeping (which rows of which
//! proposal arrived, when one is complete); [`Disseminator`] wires it to the network, the
//! DA layer (which extends, checks and rebuilds squares) and the consensus engine.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::interfaces::consensus::{ConsensusEvent, ConsensusHandle, ConsensusMessage};
use lamina_primitives::interfaces::da::{DaError, DaHandle, HeldShares, ShareHolder, SquareRoots};
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::{
    codec, Address, Block, BlockHeader, Hash, ProposalData, Signature, SignedProposal, ValidatorSet,
};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::network::{NetworkHandle, Topic, Verdict};

/// Proposals whose rows are gathered at once; beyond it the lowest (height, round) is
/// dropped. Each holds up to twice its body, so this bounds what peers can make a node keep.
const MAX_ASSEMBLIES: usize = 8;

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
    /// Checks what needs neither the DA layer nor the consensus engine: the signature is a
    /// validator's over this header, the roots and rows are for this header's height and
    /// `data_root`, and the rows are exactly the holder's. `Err` says what is wrong.
    fn check(&self, chain_id: &str, validators: &ValidatorSet) -> Result<(), String> {
        let height = self.header.height;
        if self.proposal.height != height || self.proposal.block_hash != self.header.hash() {
            return Err("the signed proposal is not for this header".into());
        }
        if self.roots.height != height || self.roots.data_root != self.header.data_root {
            return Err("the roots are not this header's".into());
        }
        if self.rows.height != height || self.rows.data_root != self.header.data_root {
            return Err("the rows are not this header's".into());
        }
        if validators.power_of(&self.proposer).is_none() {
            return Err(format!("{} is not a validator", self.proposer));
        }
        self.proposal
            .verify(chain_id, &self.proposer, &self.signature)
            .map_err(|_| "bad proposal signature".to_string())?;
        let count = u32::try_from(validators.len()).unwrap_or(u32::MAX);
        let holder = ShareHolder {
            index: self.holder,
            count,
        };
        if self.holder >= count {
            return Err(format!("holder {} of {count} does not exist", self.holder));
        }
        let width = self.roots.row_roots.len() as u64;
        let expected = holder.rows(height, width);
        if !self.rows.rows.iter().map(|row| row.index).eq(expected) {
            return Err(format!("the rows are not holder {}'s", self.holder));
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

/// A proposal: its height, round and block hash.
type Key = (u64, u32, Hash);

/// A proposal's parts, encoded, each with the topic it goes out on.
type EncodedParts = Arc<Vec<(Topic, Vec<u8>)>>;

/// What becomes of a part offered to [`Assemblies::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// For a height already committed here, or for a proposal crowded out by newer ones:
    /// dropped.
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
}

/// Where a proposal's gathering stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Gathering,
    Rebuilding,
    /// Rebuilt and handed over, or our own proposal: later rows are only relayed.
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

/// The proposals whose rows are being gathered: synchronous and deterministic, fed parts
/// that already passed their checks.
#[derive(Debug)]
pub(crate) struct Assemblies {
    /// This node's holder index (a validator): it waits for its own rows.
    own: Option<u32>,
    /// Lowest height still wanted: the one after the highest committed here.
    floor: u64,
    entries: BTreeMap<Key, Assembly>,
}

impl Assemblies {
    /// Nothing gathered yet, for holder `own` (`None`: not a validator).
    pub(crate) fn new(own: Option<u32>) -> Self {
        Assemblies {
            own,
            floor: 0,
            entries: BTreeMap::new(),
        }
    }

    /// Whether a part for `key` from `holder` is still of use: asked before its rows are
    /// checked, which costs an extension of each. Once a proposal is being rebuilt (or is
    /// ours) no more of its rows are needed.
    pub(crate) fn wants(&self, key: Key, holder: u32) -> bool {
        key.0 >= self.floor
            && self.entries.get(&key).is_none_or(|assembly| {
                assembly.stage == Stage::Gathering && !assembly.parts.contains_key(&holder)
            })
    }

    /// Keeps a checked part and says whether its proposal can now be rebuilt.
    pub(crate) fn admit(&mut self, mut part: ProposalPart) -> Admission {
        let key = part.key();
        if key.0 < self.floor || !self.make_room(key) {
            return Admission::Stale;
        }
        let holder = part.holder;
        let rows = HeldShares {
            rows: std::mem::take(&mut part.rows.rows),
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

    /// Whether `key` has, or can get, a place: when every place is taken, the lowest
    /// (height, round) below it gives up its own.
    fn make_room(&mut self, key: Key) -> bool {
        if self.entries.contains_key(&key) || self.entries.len() < MAX_ASSEMBLIES {
            return true;
        }
        match self.entries.first_key_value() {
            Some((lowest, _)) if *lowest < key => {
                let lowest = *lowest;
                self.entries.remove(&lowest);
                true
            }
            _ => false,
        }
    }

    /// `Ready` (and the assembly marked rebuilding) when `key` has enough rows, else `Kept`.
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
        assembly.stage = Stage::Rebuilding;
        let first = &assembly.first;
        Admission::Ready(Box::new(Rebuild {
            key,
            roots: first.roots.clone(),
            rows: assembly.parts.values().cloned().collect(),
            proposal: SignedProposal {
                data: first.proposal.clone(),
                block: Block {
                    header: first.header.clone(),
                    body: Vec::new(),
                },
                signature: first.signature,
            },
        }))
    }

    /// Records how a rebuild ended: on failure (rows that checked alone but not together,
    /// which an honest proposer never sends) the proposal waits for more rows.
    pub(crate) fn rebuilt(&mut self, key: Key, ok: bool) {
        if let Some(assembly) = self.entries.get_mut(&key) {
            assembly.stage = if ok { Stage::Done } else { Stage::Gathering };
        }
    }

    /// Marks `part`'s proposal as ours: we have its body, and only relay its rows.
    pub(crate) fn own_proposal(&mut self, part: ProposalPart) {
        let key = part.key();
        if let Admission::Ready(_) | Admission::Kept = self.admit(part) {
            self.rebuilt(key, true);
        }
    }

    /// Forgets every proposal below `height` (the next height to commit).
    pub(crate) fn set_floor(&mut self, height: u64) {
        self.floor = self.floor.max(height);
        self.entries = self.entries.split_off(&(self.floor, 0, Hash::default()));
    }
}

/// Sends this node's proposals as rows and gathers other nodes' rows into proposals.
#[derive(Debug)]
pub struct Disseminator {
    /// Whether this node sends its own proposals as rows.
    pub(crate) sends_rows: bool,
    pub(crate) network: NetworkHandle,
    pub(crate) da: DaHandle,
    pub(crate) consensus: ConsensusHandle,
    pub(crate) chain_id: String,
    pub(crate) validators: ValidatorSet,
    /// This node's holder index, if it is a validator.
    pub(crate) own: Option<u32>,
    /// Largest part accepted.
    pub(crate) max_part_bytes: usize,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) assemblies: Mutex<Assemblies>,
    /// Our recent proposals' encoded parts, for re-sends (a block proposed again in a later
    /// round is a new proposal: its parts carry the round).
    pub(crate) sent: Mutex<VecDeque<(ProposalData, EncodedParts)>>,
}

impl Disseminator {
    /// Sends `proposal` as rows. `false` when it must go whole instead: this node sends
    /// whole blocks, or its DA layer cannot cut this one (then the caller gossips it whole,
    /// which every node understands).
    pub(crate) async fn send(&self, proposal: &SignedProposal) -> bool {
        if !self.sends_rows {
            return false;
        }
        let parts = match self.parts_of(proposal).await {
            Ok(parts) => parts,
            Err(error) => {
                tracing::warn!(height = proposal.data.height, %error, "cannot send the proposal as rows; sending it whole");
                return false;
            }
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
        true
    }

    /// The encoded parts of our `proposal`: from the last send, or cut now.
    async fn parts_of(&self, proposal: &SignedProposal) -> Result<EncodedParts, String> {
        let known = lock(&self.sent)
            .iter()
            .find(|(sent, _)| *sent == proposal.data)
            .map(|(_, parts)| Arc::clone(parts));
        if let Some(parts) = known {
            return Ok(parts);
        }
        let holders = u32::try_from(self.validators.len()).map_err(|e| e.to_string())?;
        let proposer = self
            .own
            .and_then(|own| self.validators.validators().get(own as usize))
            .map(|validator| validator.address)
            .ok_or("this node is not a validator")?;
        let height = proposal.data.height;
        let dispersal = self
            .da
            .disperse(height, Arc::new(proposal.block.body.clone()), holders)
            .await
            .map_err(|e| e.to_string())?;
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
            let data = codec::encode(&part);
            if data.len() > self.max_part_bytes {
                return Err(format!(
                    "holder {holder}'s rows take {} bytes; the limit is {}",
                    data.len(),
                    self.max_part_bytes
                ));
            }
            if Some(holder) != self.own {
                parts.push((Topic::HolderRows(holder), data));
                continue;
            }
            lock(&self.assemblies).own_proposal(part);
            // The other validators' rows are `2 (n - 1) / n` of the square: at least the `k`
            // rows a rebuild needs, even with a third of them missing once `n >= 4`. Only a
            // lone validator's rows must go out, for the nodes that follow it.
            if holders == 1 {
                parts.push((Topic::Rows, data));
            }
        }
        let parts = Arc::new(parts);
        let mut sent = lock(&self.sent);
        if sent.len() >= MAX_OWN_PROPOSALS {
            sent.pop_front();
        }
        sent.push_back((proposal.data.clone(), Arc::clone(&parts)));
        Ok(parts)
    }

    /// Judges a part gossiped on `topic`: keeps it, forwards it if it is our own rows, and
    /// rebuilds the proposal once enough rows are here.
    pub(crate) async fn judge(self: &Arc<Self>, topic: Topic, data: &[u8]) -> Verdict {
        let Ok(part) = codec::decode::<ProposalPart>(data, self.max_part_bytes) else {
            return Verdict::Reject;
        };
        if let Err(reason) = part.check(&self.chain_id, &self.validators) {
            tracing::debug!(%topic, %reason, "refused a proposal part");
            return Verdict::Reject;
        }
        if !lock(&self.assemblies).wants(part.key(), part.holder) {
            return Verdict::Ignore;
        }
        match self
            .da
            .check_rows(part.roots.clone(), part.rows.clone())
            .await
        {
            Ok(()) => {}
            Err(RequestError::Layer(DaError::InvalidShares(reason))) => {
                tracing::debug!(%topic, %reason, "refused a proposal part");
                return Verdict::Reject;
            }
            Err(error) => {
                tracing::debug!(%topic, %error, "cannot check a proposal part");
                return Verdict::Ignore;
            }
        }
        let ours = Some(part.holder) == self.own;
        tracing::debug!(%topic, height = part.proposal.height, round = part.proposal.round, holder = part.holder, "checked a proposal part");
        let admission = lock(&self.assemblies).admit(part);
        if ours && topic != Topic::Rows {
            // Our rows, from the proposer: everyone else needs them too.
            if let Err(error) = self.network.publish(Topic::Rows, data.to_vec()).await {
                tracing::warn!(%error, "cannot forward our rows of a proposal");
            }
        }
        if let Admission::Ready(rebuild) = admission {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.rebuild(*rebuild).await });
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
        } = rebuild;
        let body = match self.da.reassemble(roots, rows).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(height = key.0, round = key.1, %error, "cannot rebuild a proposal from its rows");
                lock(&self.assemblies).rebuilt(key, false);
                return;
            }
        };
        proposal.block.body = Arc::unwrap_or_clone(body);
        lock(&self.assemblies).rebuilt(key, true);
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

    fn validators(keys: &[Keypair]) -> ValidatorSet {
        ValidatorSet::new(
            keys.iter()
                .map(|key| Validator {
                    address: key.address(),
                    power: 1,
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
        let rows = ShareHolder {
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
                rows,
            },
        }
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
        assert_eq!(assemblies.admit(part(key, 5, 0, 0)), Admission::Kept);
        // Four rows now, k of them, but not this validator's own.
        assert_eq!(assemblies.admit(part(key, 5, 0, 1)), Admission::Kept);
        let rebuild = ready(assemblies.admit(part(key, 5, 0, 2)));
        assert_eq!(rebuild.rows.len(), 3);
        assert!(rebuild.proposal.block.body.is_empty());
        assert_eq!(rebuild.proposal.data, part(key, 5, 0, 0).proposal);
        // Rebuilding: no more rows are wanted, and one checked meanwhile starts nothing.
        assert!(!assemblies.wants(part(key, 5, 0, 3).key(), 3));
        assert_eq!(assemblies.admit(part(key, 5, 0, 3)), Admission::Kept);
        assert_eq!(assemblies.admit(part(key, 5, 0, 0)), Admission::Duplicate);
        // A different round is a different proposal.
        assert!(assemblies.wants(part(key, 5, 1, 0).key(), 0));
    }

    #[test]
    fn a_node_that_is_not_a_validator_needs_any_k_rows() {
        let key = &keys()[1];
        let mut assemblies = Assemblies::new(None);
        assert_eq!(assemblies.admit(part(key, 5, 0, 3)), Admission::Kept);
        let rebuild = ready(assemblies.admit(part(key, 5, 0, 1)));
        let mut rows: Vec<u64> = rebuild
            .rows
            .iter()
            .flat_map(|part| part.rows.iter().map(|row| row.index))
            .collect();
        rows.sort_unstable();
        assert_eq!(rows.len(), 4);
        assert_eq!(rebuild.roots, part(key, 5, 0, 0).roots);
    }

    #[test]
    fn a_failed_rebuild_waits_for_more_rows_and_a_done_one_never_repeats() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(None);
        assemblies.admit(part(key, 5, 0, 0));
        let rebuild = ready(assemblies.admit(part(key, 5, 0, 1)));
        assemblies.rebuilt(rebuild.key, false);
        assert!(assemblies.wants(part(key, 5, 0, 2).key(), 2));
        let again = ready(assemblies.admit(part(key, 5, 0, 2)));
        assert_eq!(again.rows.len(), 3);
        assemblies.rebuilt(again.key, true);
        assert_eq!(assemblies.admit(part(key, 5, 0, 3)), Admission::Kept);
    }

    #[test]
    fn our_own_proposal_is_never_rebuilt() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(Some(0));
        assemblies.own_proposal(part(key, 5, 0, 0));
        for holder in 1..HOLDERS {
            assert!(!assemblies.wants(part(key, 5, 0, holder).key(), holder));
            assert_eq!(assemblies.admit(part(key, 5, 0, holder)), Admission::Kept);
        }
    }

    #[test]
    fn committed_heights_are_dropped_and_the_number_kept_is_bounded() {
        let key = &keys()[0];
        let mut assemblies = Assemblies::new(Some(3));
        assemblies.admit(part(key, 5, 0, 0));
        assemblies.set_floor(6);
        assert_eq!(assemblies.admit(part(key, 5, 0, 1)), Admission::Stale);
        assert!(!assemblies.wants(part(key, 5, 0, 1).key(), 1));
        assert!(assemblies.entries.is_empty());

        for round in 0..MAX_ASSEMBLIES as u32 {
            assert_eq!(assemblies.admit(part(key, 7, round, 0)), Admission::Kept);
        }
        // Full: an older proposal finds no place, a newer one pushes out the oldest.
        assert_eq!(assemblies.admit(part(key, 6, 0, 0)), Admission::Stale);
        assert_eq!(assemblies.admit(part(key, 8, 0, 0)), Admission::Kept);
        assert_eq!(assemblies.entries.len(), MAX_ASSEMBLIES);
        assert!(assemblies.wants(part(key, 7, 0, 0).key(), 0));
        assert!(!assemblies.wants(part(key, 7, 1, 0).key(), 0));
    }

    #[test]
    fn a_part_must_be_signed_by_a_validator_and_carry_its_holders_rows() {
        let keys = keys();
        let set = validators(&keys);
        let good = part(&keys[1], 9, 2, 3);
        assert_eq!(good.check(CHAIN, &set), Ok(()));
        assert!(good.check("other-chain", &set).is_err());

        let outsider = Keypair::from_seed([99; 32]);
        assert!(part(&outsider, 9, 2, 3).check(CHAIN, &set).is_err());
        let mut forged = good.clone();
        forged.proposer = keys[0].address();
        assert!(forged.check(CHAIN, &set).is_err());
        let mut other_header = good.clone();
        other_header.header.timestamp_ms += 1;
        assert!(other_header.check(CHAIN, &set).is_err());
        let mut other_roots = good.clone();
        other_roots.roots.data_root = Hash::default();
        assert!(other_roots.check(CHAIN, &set).is_err());
        let mut wrong_rows = good.clone();
        wrong_rows.rows.rows.pop();
        assert!(wrong_rows.check(CHAIN, &set).is_err());
        let mut someone_elses = good.clone();
        someone_elses.holder = 2;
        assert!(someone_elses.check(CHAIN, &set).is_err());
        let mut no_such_holder = good;
        no_such_holder.holder = HOLDERS;
        assert!(no_such_holder.check(CHAIN, &set).is_err());
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
