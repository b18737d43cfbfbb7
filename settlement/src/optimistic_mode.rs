//! The `optimistic` mode on a node: the pure [`OptimisticLedger`] persisted in sled, this
//! node's own output roots (the oracle that decides disputes), and the messages it posts:
//! claims when it is a proposer, challenges of claims its own execution disagrees with, and
//! messages submitted from outside.
//!
//! Claims and challenges are not stored: they are derived afresh from the ledger and the
//! stored output roots each time a block is proposed, and ed25519 signatures are
//! deterministic, so a restart offers byte-identical messages.

use std::cell::Cell;
use std::collections::BTreeMap;

use lamina_primitives::bridge::{
    Batch, Challenge, ChallengeData, Claim, ClaimData, DepositCredit, OutputPreimage,
};
use lamina_primitives::codec;
use lamina_primitives::interfaces::execution::ExecutedBlock;
use lamina_primitives::interfaces::settlement::{
    HeightSettlement, LedgerAccount, OptimisticSummary, SettlementError, SettlementMessage,
    SettlementStatus,
};
use lamina_primitives::{Address, Blob, Genesis, Hash, Keypair, Namespace};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use crate::ledger::{Applied, MAX_BLOB_BYTES};
use crate::optimistic::{LedgerEvent, OptimisticLedger, OptimisticParams};
use crate::SetupError;

/// Tree of the ledger (one borsh value) and this node's executed height.
pub(crate) const STATE_TREE: &str = "settlement/optimistic";
/// Tree of this node's output-root preimage of every executed height, keyed by big-endian
/// height: the oracle.
pub(crate) const OUTPUTS_TREE: &str = "settlement/outputs";
const LEDGER_KEY: &[u8] = b"ledger";
const EXECUTED_KEY: &[u8] = b"executed";

/// Messages submitted from outside that may wait for inclusion at once.
pub const MAX_SUBMITTED: usize = 1024;

fn storage(error: impl std::fmt::Display) -> SettlementError {
    SettlementError::Storage(error.to_string())
}

/// The optimistic ledger of one node and what it posts.
#[derive(Debug)]
pub(crate) struct OptimisticMode {
    chain_id: String,
    /// This node's validator key: it claims when it is a proposer and challenges wrong
    /// claims (bonded from its settlement-ledger balance).
    key: Option<Keypair>,
    ledger: OptimisticLedger,
    executed_height: u64,
    state_tree: sled::Tree,
    outputs: sled::Tree,
    /// Messages submitted from outside, until a block includes them or they turn invalid.
    /// Not persisted, like a mempool: a restart forgets them and the sender resubmits.
    submitted: Vec<SettlementMessage>,
    /// Proposal height each message was last offered for, by message hash.
    offered: BTreeMap<Hash, u64>,
}

impl OptimisticMode {
    /// Opens (or creates) the ledger of `genesis`'s chain in `db` with `params`, starting a
    /// new one with `balances`.
    pub(crate) fn open(
        db: &sled::Db,
        genesis: &Genesis,
        params: OptimisticParams,
        balances: Vec<(Address, u64)>,
        key: Option<Keypair>,
    ) -> Result<Self, SetupError> {
        let state_tree = db.open_tree(STATE_TREE)?;
        let outputs = db.open_tree(OUTPUTS_TREE)?;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            SetupError::Corrupt(format!("{STATE_TREE} {what}: {e}"))
        };
        let ledger = match state_tree.get(LEDGER_KEY)? {
            Some(bytes) => {
                let ledger = codec::decode_trusted::<OptimisticLedger>(&bytes)
                    .map_err(|e| corrupt("ledger", &e))?;
                if ledger.params() != &params {
                    return Err(SetupError::InvalidConfig(format!(
                        "this database's optimistic ledger was created with {:?}, but the \
                         config gives {params:?}; use the settings the chain started with",
                        ledger.params()
                    )));
                }
                ledger
            }
            None => OptimisticLedger::new(params, balances)
                .map_err(|e| SetupError::InvalidConfig(e.to_string()))?,
        };
        let executed_height = match state_tree.get(EXECUTED_KEY)? {
            Some(bytes) => {
                codec::decode_trusted::<u64>(&bytes).map_err(|e| corrupt("executed height", &e))?
            }
            None => 0,
        };
        Ok(OptimisticMode {
            chain_id: genesis.chain_id.clone(),
            key,
            ledger,
            executed_height,
            state_tree,
            outputs,
            submitted: Vec::new(),
            offered: BTreeMap::new(),
        })
    }

    /// This node's output-root preimage after `height`, if it executed it.
    fn preimage(&self, height: u64) -> Result<Option<OutputPreimage>, SettlementError> {
        self.outputs
            .get(height.to_be_bytes())
            .map_err(storage)?
            .map(|bytes| {
                codec::decode_trusted::<OutputPreimage>(&bytes)
                    .map_err(|e| storage(format!("{OUTPUTS_TREE} entry of height {height}: {e}")))
            })
            .transpose()
    }

    /// This node's output root after `last`, `None` if it has not executed `last`; a read
    /// error is noted in `failure` and answers `None`. A caller that decides anything
    /// replicated from the answer must discard the decision if `failure` is set: a verdict
    /// reached later than other nodes' would make this ledger part from theirs.
    fn output_root(&self, last: u64, failure: &Cell<Option<SettlementError>>) -> Option<Hash> {
        match self.preimage(last) {
            Ok(preimage) => preimage.map(|p| p.output_root()),
            Err(error) => {
                tracing::error!(height = last, %error, "cannot read this node's output root");
                failure.set(Some(error));
                None
            }
        }
    }

    /// The state root a finalized batch settles: this node's own, when its output root is
    /// the one finalized.
    fn settled_state_root(&self, batch: &Batch) -> Option<Hash> {
        let preimage = self.preimage(batch.last_height).ok().flatten()?;
        (preimage.output_root() == batch.output_root).then_some(preimage.state_root)
    }

    pub(crate) fn status(&self) -> SettlementStatus {
        let settled = self.ledger.settled_batch();
        let params = self.ledger.params();
        SettlementStatus {
            mode: "optimistic".to_string(),
            settled_height: self.ledger.settled_height(),
            settled_state_root: settled.and_then(|batch| self.settled_state_root(batch)),
            applied_height: self.ledger.applied_height(),
            executed_height: self.executed_height,
            optimistic: Some(OptimisticSummary {
                challenge_window: params.challenge_window,
                batch_size: params.batch_size,
                bond: params.bond,
                proposers: params.proposers.clone(),
                jailed_proposers: self.ledger.jailed().iter().copied().collect(),
                finalized_batches: self.ledger.finalized_batches(),
                next_batch: self.ledger.next_batch(),
                locked: self.ledger.locked(),
                burned: self.ledger.burned(),
                total_deposited: self.ledger.total_deposited(),
                total_withdrawn: self.ledger.total_withdrawn(),
                genesis_supply: self.ledger.genesis_supply(),
                total_balances: self
                    .ledger
                    .balances()
                    .values()
                    .fold(0u64, |sum, b| sum.saturating_add(*b)),
            }),
        }
    }

    /// `height` is settled once a finalized batch covers it. Its root is this node's own,
    /// shown only when this node's output root for the batch is the finalized one.
    pub(crate) fn height(&self, height: u64) -> Result<Option<HeightSettlement>, SettlementError> {
        if height == 0 || height > self.ledger.settled_height() {
            return Ok(None);
        }
        let batch = self.ledger.batch(self.ledger.params().batch_of(height));
        let agrees = match batch {
            Some(batch) => self.settled_state_root(batch).is_some(),
            None => false,
        };
        let settled_root = if agrees {
            self.preimage(height)?.map(|p| p.state_root)
        } else {
            None
        };
        Ok(Some(HeightSettlement {
            height,
            settled_root,
            attested_power: Vec::new(),
            total_power: 0,
        }))
    }

    /// Applies block `height`'s settlement blobs. Writes but does not flush. A height
    /// already applied changes nothing.
    pub(crate) fn apply_block(
        &mut self,
        height: u64,
        blobs: &[Blob],
    ) -> Result<Applied, SettlementError> {
        if height <= self.ledger.applied_height() {
            return Ok(Applied {
                status: self.status(),
                newly_settled: Vec::new(),
            });
        }
        let messages: Vec<SettlementMessage> = blobs
            .iter()
            .filter(|blob| blob.namespace == Namespace::SETTLEMENT)
            .filter_map(|blob| {
                codec::decode::<Vec<SettlementMessage>>(&blob.data, MAX_BLOB_BYTES)
                    .inspect_err(|error| {
                        tracing::debug!(height, %error, "skipping undecodable settlement blob");
                    })
                    .ok()
            })
            .flatten()
            .collect();
        let mut ledger = self.ledger.clone();
        let failure = Cell::new(None);
        let oracle = |_first: u64, last: u64| self.output_root(last, &failure);
        let events = ledger.apply_block(height, &messages, &self.chain_id, &oracle)?;
        if let Some(error) = failure.take() {
            // Nothing is kept: the block is applied again, with the same answer as every
            // other node, once the store reads.
            return Err(error);
        }
        self.state_tree
            .insert(LEDGER_KEY, codec::encode(&ledger))
            .map_err(storage)?;
        self.ledger = ledger;

        let mut newly_settled = Vec::new();
        for event in &events {
            log_event(height, event);
            if let LedgerEvent::BatchFinalized { batch, .. } = event {
                let root = self
                    .ledger
                    .batch(*batch)
                    .and_then(|b| Some((b.last_height, self.settled_state_root(b)?)));
                match root {
                    Some(settled) => newly_settled.push(settled),
                    None => tracing::warn!(
                        batch,
                        "a batch finalized with an output root this node's execution does not \
                         give"
                    ),
                }
            }
        }
        self.submitted.retain(|message| !messages.contains(message));
        // An offer at or below an applied height was either included or never committed.
        self.offered.retain(|_, proposal| *proposal > height);
        Ok(Applied {
            status: self.status(),
            newly_settled,
        })
    }

    /// Records this node's output root for an executed height and forgets deposits that
    /// execution credited long ago. Writes but does not flush.
    pub(crate) fn executed(&mut self, executed: &ExecutedBlock) -> Result<bool, SettlementError> {
        if executed.height <= self.executed_height {
            return Ok(false);
        }
        let preimage = codec::encode(&executed.output_preimage());
        let height = codec::encode(&executed.height);
        (&self.outputs, &self.state_tree)
            .transaction(|(outputs, state)| {
                outputs.insert(&executed.height.to_be_bytes(), preimage.as_slice())?;
                state.insert(EXECUTED_KEY, height.as_slice())?;
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(storage)?;
        self.executed_height = executed.height;
        // Credited by that execution, durably. In memory only; the next applied block
        // persists the pruned ledger.
        self.ledger.prune_deposits_queued_through(executed.height);
        Ok(true)
    }

    /// The deposits block `height` queued; none for a height already executed (execution
    /// answers it from its stored result, whatever deposits come with it).
    pub(crate) fn deposits(&self, height: u64) -> Result<Vec<DepositCredit>, SettlementError> {
        let applied = self.ledger.applied_height();
        if height > applied {
            return Err(SettlementError::OutOfOrder {
                expected: applied.saturating_add(1),
                got: height,
            });
        }
        if height <= self.executed_height {
            return Ok(Vec::new());
        }
        Ok(self
            .ledger
            .deposits_queued_at(height)
            .map(|d| DepositCredit {
                id: d.id,
                to: d.to,
                amount: d.amount,
            })
            .collect())
    }

    /// Queues a message from outside, if the ledger would accept it now.
    pub(crate) fn submit(&mut self, message: SettlementMessage) -> Result<(), SettlementError> {
        if matches!(message, SettlementMessage::Attestation(_)) {
            return Err(SettlementError::Unsupported {
                mode: "optimistic".to_string(),
                what: "attestations".to_string(),
            });
        }
        self.ledger
            .check(&message, &self.chain_id)
            .map_err(|reason| SettlementError::InvalidMessage(reason.to_string()))?;
        if self.submitted.contains(&message) {
            return Ok(());
        }
        if self.submitted.len() >= MAX_SUBMITTED {
            return Err(SettlementError::PoolFull(self.submitted.len()));
        }
        self.submitted.push(message);
        Ok(())
    }

    pub(crate) fn batches(&self, from: u64, limit: usize) -> Vec<Batch> {
        self.ledger
            .batches()
            .range(from..)
            .take(limit)
            .map(|(_, batch)| batch.clone())
            .collect()
    }

    pub(crate) fn ledger_account(&self, address: Address) -> LedgerAccount {
        LedgerAccount {
            address,
            balance: self.ledger.balance(&address),
            deposit_nonce: self.ledger.deposit_nonce(&address),
        }
    }

    /// This node's claim of the next batch, if it is a proposer and has executed the batch.
    fn claim(&self, proposal_height: u64) -> Option<SettlementMessage> {
        let key = self.key.as_ref()?;
        let params = self.ledger.params();
        if !params.proposers.contains(&key.address()) {
            return None;
        }
        let target = self.ledger.next_claim();
        if target.last_height >= proposal_height || target.last_height > self.executed_height {
            return None;
        }
        let output_root = self.output_root(target.last_height, &Cell::new(None))?;
        let data = ClaimData {
            batch: target.batch,
            attempt: target.attempt,
            first_height: target.first_height,
            last_height: target.last_height,
            output_root,
            bond: params.bond,
        };
        Some(SettlementMessage::Claim(Claim::sign(
            &self.chain_id,
            key,
            data,
        )))
    }

    /// Challenges of every open claim this node's own execution contradicts.
    fn challenges(&self) -> Vec<SettlementMessage> {
        let Some(key) = self.key.as_ref() else {
            return Vec::new();
        };
        // A read error only means no challenge is offered this time.
        let failure = Cell::new(None);
        let oracle = |_first: u64, last: u64| self.output_root(last, &failure);
        self.ledger
            .disputable(&oracle)
            .into_iter()
            .map(|batch| {
                let data = ChallengeData {
                    batch: batch.index,
                    attempt: batch.attempt,
                    output_root: batch.output_root,
                };
                SettlementMessage::Challenge(Challenge::sign(&self.chain_id, key, data))
            })
            .collect()
    }

    /// What this node puts in the block it proposes at `height`: its claim, its challenges
    /// and the submitted messages, those the ledger would accept as it stands, as at most
    /// one blob of at most `max_bytes` encoded bytes.
    pub(crate) fn pending_blobs(&mut self, height: u64, max_bytes: usize) -> Vec<Blob> {
        let data_cap = max_bytes
            .saturating_sub(Blob::ENCODED_PREFIX_BYTES)
            .min(MAX_BLOB_BYTES);
        let applied = self.ledger.applied_height();
        // Drop submitted messages the ledger would now skip (e.g. finalized already); the
        // survivors need no second check below.
        let ledger = &self.ledger;
        let chain_id = &self.chain_id;
        self.submitted
            .retain(|message| match ledger.check(message, chain_id) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::debug!(?message, %reason, "dropping a submitted settlement message");
                    false
                }
            });
        // Our own claim and challenges are built from the ledger as it stands, but checked
        // all the same: a claim may not be ours to make yet.
        let own = self.claim(height).into_iter().chain(self.challenges());
        let own = own.filter(|message| match self.ledger.check(message, &self.chain_id) {
            Ok(()) => true,
            Err(reason) => {
                tracing::debug!(?message, %reason, "not offering a settlement message");
                false
            }
        });
        let candidates: Vec<SettlementMessage> =
            own.chain(self.submitted.iter().cloned()).collect();
        let mut size = codec::VEC_PREFIX_BYTES;
        let mut messages = Vec::new();
        let mut hashes = Vec::new();
        for message in candidates {
            let encoded = codec::encode(&message);
            let hash = Hash::digest(&encoded);
            // Already in a proposal that may be committed but not yet applied: offering it
            // again would only put a duplicate on chain.
            if let Some(&proposal) = self.offered.get(&hash) {
                if proposal > applied && proposal < height {
                    continue;
                }
            }
            if size.saturating_add(encoded.len()) > data_cap {
                break;
            }
            size += encoded.len();
            messages.push(message);
            hashes.push(hash);
        }
        if messages.is_empty() {
            return Vec::new();
        }
        for hash in hashes {
            self.offered.insert(hash, height);
        }
        vec![Blob {
            namespace: Namespace::SETTLEMENT,
            data: codec::encode(&messages),
        }]
    }
}

fn log_event(height: u64, event: &LedgerEvent) {
    match event {
        LedgerEvent::Skipped { .. } => {
            tracing::debug!(height, ?event, "settlement message skipped")
        }
        LedgerEvent::ChallengeUpheld { .. }
        | LedgerEvent::BatchRejected { .. }
        | LedgerEvent::Slashed { .. } => tracing::warn!(height, ?event, "settlement dispute"),
        _ => tracing::info!(height, ?event, "settlement"),
    }
}

#[cfg(test)]
mod tests {
    use lamina_primitives::bridge::{withdrawals_root, BatchStatus, Deposit, DepositData};
    use lamina_primitives::{GenesisAccount, Validator};

    use super::*;
    use crate::SettlementConfig;

    const CHAIN: &str = "optimistic-mode";

    struct Node {
        mode: OptimisticMode,
        db: sled::Db,
        _dir: Option<tempfile::TempDir>,
        faulty: bool,
    }

    fn keys() -> Vec<Keypair> {
        ["faulty", "honest-1", "honest-2"]
            .iter()
            .map(|label| Keypair::deterministic(label))
            .collect()
    }

    fn user() -> Keypair {
        Keypair::deterministic("depositor")
    }

    fn genesis() -> Genesis {
        Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: keys()
                .iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 1,
                })
                .collect(),
            accounts: vec![GenesisAccount {
                address: user().address(),
                balance: 500,
            }],
        }
    }

    fn config() -> SettlementConfig {
        SettlementConfig {
            kind: crate::SettlementKind::Optimistic,
            challenge_window: 3,
            batch_size: 2,
            bond: 100,
            ..SettlementConfig::default()
        }
    }

    /// A node on a fresh database.
    fn fresh(key: Keypair, faulty: bool) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut node = open(dir.path(), key, faulty);
        node._dir = Some(dir);
        node
    }

    fn open(path: &std::path::Path, key: Keypair, faulty: bool) -> Node {
        let db = sled::open(path).unwrap();
        let config = config();
        let genesis = genesis();
        let mode = OptimisticMode::open(
            &db,
            &genesis,
            config.params(&genesis.validators),
            config.initial_balances(&genesis),
            Some(key),
        )
        .unwrap();
        Node {
            mode,
            db,
            _dir: None,
            faulty,
        }
    }

    /// What executing `height` reports; a faulty node reports another state root.
    fn executed(height: u64, faulty: bool) -> ExecutedBlock {
        let mut root = Hash::digest(&height.to_le_bytes());
        if faulty {
            root = Hash::digest(&root.0);
        }
        ExecutedBlock {
            height,
            block_hash: Hash::digest(b"block"),
            state_root: root,
            transactions: 0,
            failed: 0,
            fees: 0,
            data_root: Hash::ZERO,
            withdrawals_root: withdrawals_root(&[]),
            withdrawal_count: 0,
            deposits_credited: 0,
        }
    }

    /// Runs blocks `from..=to`, proposed round-robin, through every node: apply, then
    /// execute (as the node's pipeline does).
    fn run(nodes: &mut [Node], from: u64, to: u64) {
        for height in from..=to {
            let proposer = usize::try_from(height).unwrap() % nodes.len();
            let blobs = nodes[proposer].mode.pending_blobs(height, 1 << 20);
            for node in nodes.iter_mut() {
                node.mode.apply_block(height, &blobs).unwrap();
                node.mode.executed(&executed(height, node.faulty)).unwrap();
            }
        }
    }

    #[test]
    fn a_faulty_claim_is_rejected_and_honest_nodes_agree() {
        let mut nodes: Vec<Node> = keys()
            .into_iter()
            .enumerate()
            .map(|(i, key)| fresh(key, i == 0))
            .collect();
        // Height 3 is proposed by node 0 (3 % 3), the faulty one: it claims batch 0 wrongly.
        run(&mut nodes, 1, 3);
        let batch = nodes[1].mode.batches(0, 10).remove(0);
        assert_eq!((batch.attempt, batch.proposer), (0, keys()[0].address()));
        assert_eq!(batch.status, BatchStatus::Pending);
        run(&mut nodes, 4, 30);

        let honest: Vec<_> = nodes[1..].iter().map(|n| n.mode.batches(0, 100)).collect();
        assert_eq!(honest[0], honest[1], "honest nodes hold the same batches");
        assert_eq!(nodes[1].mode.ledger, nodes[2].mode.ledger);
        let first = &honest[0][0];
        assert!(first.attempt >= 1, "batch 0 was claimed again: {first:?}");
        assert!(matches!(first.status, BatchStatus::Finalized { .. }));
        let status = nodes[1].mode.status();
        assert!(status.settled_height >= 10, "{status:?}");
        assert_eq!(
            status.settled_state_root,
            Some(executed(status.settled_height, false).state_root)
        );
        let summary = status.optimistic.unwrap();
        // The faulty proposer lost at least one bond and its turns; value is conserved.
        assert!(summary.burned > 0);
        assert_eq!(summary.jailed_proposers, vec![keys()[0].address()]);
        assert_eq!(
            summary.total_balances + summary.locked + summary.burned + summary.total_deposited
                - summary.total_withdrawn,
            summary.genesis_supply
        );
        assert!(
            nodes[1].mode.ledger_account(keys()[0].address()).balance < config().validator_funds
        );
        // The faulty node sees its own claims as right: its ledger parted ways.
        assert_ne!(nodes[0].mode.ledger, nodes[1].mode.ledger);
    }

    #[test]
    fn deposits_are_queued_for_the_block_that_carries_them_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut node = open(&path, keys()[1].clone(), false);
        let deposit = |nonce| {
            SettlementMessage::Deposit(Deposit::sign(
                CHAIN,
                &user(),
                DepositData {
                    to: user().address(),
                    amount: 200,
                    nonce,
                },
            ))
        };
        node.mode.submit(deposit(0)).unwrap();
        // Resubmitting is harmless; a wrong nonce or an overdraft is refused up front.
        node.mode.submit(deposit(0)).unwrap();
        assert!(matches!(
            node.mode.submit(deposit(1)),
            Err(SettlementError::InvalidMessage(_))
        ));
        let blobs = node.mode.pending_blobs(1, 1 << 20);
        assert_eq!(blobs.len(), 1);
        node.mode.apply_block(1, &blobs).unwrap();
        assert_eq!(
            node.mode.deposits(1).unwrap(),
            vec![DepositCredit {
                id: 0,
                to: user().address(),
                amount: 200
            }]
        );
        assert!(matches!(
            node.mode.deposits(2),
            Err(SettlementError::OutOfOrder { .. })
        ));
        assert_eq!(node.mode.ledger_account(user().address()).balance, 300);
        assert_eq!(node.mode.ledger_account(user().address()).deposit_nonce, 1);
        // Included: no longer offered.
        assert!(node.mode.pending_blobs(2, 1 << 20).is_empty());
        assert!(matches!(
            node.mode.submit(SettlementMessage::Deposit(Deposit::sign(
                CHAIN,
                &user(),
                DepositData {
                    to: user().address(),
                    amount: 301,
                    nonce: 1,
                },
            ))),
            Err(SettlementError::InvalidMessage(_))
        ));
        node.mode.executed(&executed(1, false)).unwrap();
        node.db.flush().unwrap();
        let before = node.mode.status();
        drop(node);

        let db = sled::open(&path).unwrap();
        let genesis = genesis();
        let reopened = OptimisticMode::open(
            &db,
            &genesis,
            config().params(&genesis.validators),
            config().initial_balances(&genesis),
            None,
        )
        .unwrap();
        assert_eq!(reopened.status(), before);
        // Height 1 is executed: its deposits were credited, so none are handed out again.
        assert!(reopened.deposits(1).unwrap().is_empty());
        // Other parameters than the chain started with are refused.
        let other = SettlementConfig {
            bond: 7,
            ..config()
        };
        let error = OptimisticMode::open(
            &db,
            &genesis,
            other.params(&genesis.validators),
            other.initial_balances(&genesis),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("created with"), "{error}");
    }
}
