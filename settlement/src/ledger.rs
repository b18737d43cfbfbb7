//! The `attested` settlement ledger: which validators attested which state root at each
//! height, which heights are settled, and this node's own attestations still waiting to be
//! included in a block.
//!
//! Plain synchronous code over sled trees: the actor calls in here and only adds the awaited
//! flush, so every rule is unit-testable without a runtime. Every node applies the same
//! blocks in the same order through [`Ledger::apply_block`], so every node's ledger agrees.

use std::collections::{BTreeMap, BTreeSet};

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::codec;
use lamina_primitives::interfaces::execution::ExecutedBlock;
use lamina_primitives::interfaces::settlement::{
    Attestation, HeightSettlement, SettlementError, SettlementMessage, SettlementStatus,
};
use lamina_primitives::{Address, Blob, Genesis, Hash, Keypair, Namespace, ValidatorSet};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::SetupError;

/// Tree of each height's attestations, keyed by big-endian height.
pub(crate) const HEIGHTS_TREE: &str = "settlement/heights";
/// Tree of this node's attestations not yet seen in an applied block, keyed by big-endian
/// attested height.
pub(crate) const PENDING_TREE: &str = "settlement/pending";
/// Tree of the ledger's scalar state.
pub(crate) const META_TREE: &str = "settlement/meta";
const META_KEY: &[u8] = b"state";

/// Largest settlement blob decoded (and produced). Anything larger is skipped on every node
/// alike, so one oversized blob cannot make nodes allocate or verify without bound.
pub const MAX_BLOB_BYTES: usize = 1 << 20;

const BLOB_OVERHEAD: usize = Blob::ENCODED_PREFIX_BYTES;
const VEC_PREFIX: usize = codec::VEC_PREFIX_BYTES;

/// The ledger's scalar state, persisted as one value so it changes atomically.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct Meta {
    applied_height: u64,
    executed_height: u64,
    settled_height: u64,
    settled_root: Option<Hash>,
}

/// What the ledger knows of one height.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct HeightRecord {
    /// Each validator's first valid attestation for the height, in the order applied.
    attestations: Vec<(Address, Hash)>,
    /// The root that reached a quorum, once one did.
    settled_root: Option<Hash>,
}

impl HeightRecord {
    fn has_attested(&self, validator: &Address) -> bool {
        self.attestations.iter().any(|(v, _)| v == validator)
    }

    fn power_per_root(&self, validators: &ValidatorSet) -> BTreeMap<Hash, u64> {
        let mut power = BTreeMap::new();
        for (validator, root) in &self.attestations {
            let entry: &mut u64 = power.entry(*root).or_default();
            *entry = entry.saturating_add(validators.power_of(validator).unwrap_or(0));
        }
        power
    }
}

/// The result of applying one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The status afterwards.
    pub(crate) status: SettlementStatus,
    /// Heights that became settled, with their roots, in height order.
    pub(crate) newly_settled: Vec<(u64, Hash)>,
}

/// The attested-settlement ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
    chain_id: String,
    validators: ValidatorSet,
    /// Our key, only when it belongs to a validator (others have nothing to attest).
    key: Option<Keypair>,
    heights: sled::Tree,
    pending_tree: sled::Tree,
    meta_tree: sled::Tree,
    meta: Meta,
    pending: BTreeMap<u64, Attestation>,
    /// Proposal height each pending attestation was last handed out for. Not persisted: at
    /// worst a restart offers an attestation twice, and duplicates are ignored.
    offered: BTreeMap<u64, u64>,
}

fn storage(error: impl std::fmt::Display) -> SettlementError {
    SettlementError::Storage(error.to_string())
}

fn transaction_error(error: TransactionError<String>) -> SettlementError {
    match error {
        TransactionError::Storage(error) => storage(error),
        TransactionError::Abort(message) => storage(message),
    }
}

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

impl Ledger {
    /// Opens (or creates) the ledger in `db` for the chain of `genesis`. `key` is kept only
    /// if it is one of the genesis validators.
    pub(crate) fn open(
        db: &sled::Db,
        genesis: &Genesis,
        key: Option<Keypair>,
    ) -> Result<Self, SetupError> {
        let validators = genesis.validator_set();
        let key = key.filter(|key| {
            let member = validators.power_of(&key.address()).is_some();
            if !member {
                tracing::info!(
                    address = %key.address(),
                    "this node's key is not a genesis validator; it will not attest"
                );
            }
            member
        });
        let heights = db.open_tree(HEIGHTS_TREE)?;
        let pending_tree = db.open_tree(PENDING_TREE)?;
        let meta_tree = db.open_tree(META_TREE)?;
        let meta = match meta_tree.get(META_KEY)? {
            Some(bytes) => codec::decode_trusted::<Meta>(&bytes)
                .map_err(|e| SetupError::Corrupt(format!("{META_TREE}: {e}")))?,
            None => Meta::default(),
        };
        let mut pending = BTreeMap::new();
        for entry in pending_tree.iter() {
            let (_, value) = entry?;
            let attestation = codec::decode_trusted::<Attestation>(&value)
                .map_err(|e| SetupError::Corrupt(format!("{PENDING_TREE}: {e}")))?;
            pending.insert(attestation.height, attestation);
        }
        Ok(Ledger {
            chain_id: genesis.chain_id.clone(),
            validators,
            key,
            heights,
            pending_tree,
            meta_tree,
            meta,
            pending,
            offered: BTreeMap::new(),
        })
    }

    /// The last block applied.
    pub(crate) fn applied_height(&self) -> u64 {
        self.meta.applied_height
    }

    /// The current status.
    pub(crate) fn status(&self) -> SettlementStatus {
        SettlementStatus {
            mode: "attested".to_string(),
            settled_height: self.meta.settled_height,
            settled_state_root: self.meta.settled_root,
            applied_height: self.meta.applied_height,
            executed_height: self.meta.executed_height,
            optimistic: None,
        }
    }

    fn record(&self, height: u64) -> Result<Option<HeightRecord>, SettlementError> {
        let Some(bytes) = self.heights.get(height_key(height)).map_err(storage)? else {
            return Ok(None);
        };
        codec::decode_trusted::<HeightRecord>(&bytes)
            .map(Some)
            .map_err(|e| storage(format!("{HEIGHTS_TREE} entry of height {height}: {e}")))
    }

    /// What the ledger knows of `height` (`None`: no valid attestation seen for it).
    pub(crate) fn height(&self, height: u64) -> Result<Option<HeightSettlement>, SettlementError> {
        Ok(self.record(height)?.map(|record| HeightSettlement {
            height,
            settled_root: record.settled_root,
            attested_power: record
                .power_per_root(&self.validators)
                .into_iter()
                .collect(),
            total_power: self.validators.total_power(),
        }))
    }

    /// The checks on an attestation carried by block `block_height` that need no signature
    /// verification: an earlier, non-genesis height, attested by a genesis validator.
    fn is_plausible(&self, attestation: &Attestation, block_height: u64) -> bool {
        attestation.height >= 1
            && attestation.height < block_height
            && self.validators.power_of(&attestation.validator).is_some()
    }

    /// Applies the settlement blobs of committed block `height`. Writes but does not flush;
    /// the caller flushes before reporting the result. A height already applied changes
    /// nothing and reports the current status.
    pub(crate) fn apply_block(
        &mut self,
        height: u64,
        blobs: &[Blob],
    ) -> Result<Applied, SettlementError> {
        if height <= self.meta.applied_height {
            return Ok(Applied {
                status: self.status(),
                newly_settled: Vec::new(),
            });
        }
        let expected = self.meta.applied_height.saturating_add(1);
        if height != expected {
            return Err(SettlementError::OutOfOrder {
                expected,
                got: height,
            });
        }

        let mut touched: BTreeMap<u64, HeightRecord> = BTreeMap::new();
        let mut newly_settled = Vec::new();
        let mut included_pending = BTreeSet::new();
        let mut meta = self.meta;
        meta.applied_height = height;

        for blob in blobs
            .iter()
            .filter(|b| b.namespace == Namespace::SETTLEMENT)
        {
            let messages = match codec::decode::<Vec<SettlementMessage>>(&blob.data, MAX_BLOB_BYTES)
            {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::debug!(height, %error, "skipping undecodable settlement blob");
                    continue;
                }
            };
            for message in messages {
                // Claims, challenges, deposits and withdrawals belong to the `optimistic`
                // mode and the bridge; this mode ignores them on every node alike.
                let SettlementMessage::Attestation(attestation) = message else {
                    tracing::debug!(height, "skipping a message of another settlement mode");
                    continue;
                };
                if !self.is_plausible(&attestation, height) {
                    tracing::debug!(height, ?attestation, "skipping invalid attestation");
                    continue;
                }
                // Byte-equal to our own signed attestation, so it needs no verification.
                if self.pending.get(&attestation.height) == Some(&attestation) {
                    included_pending.insert(attestation.height);
                }
                let record = match touched.entry(attestation.height) {
                    std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(self.record(attestation.height)?.unwrap_or_default())
                    }
                };
                // Only a validator's first attestation of a height counts: a second one,
                // conflicting or not, must not add power. Checked before the signature so
                // repeated copies cost no verification.
                if record.has_attested(&attestation.validator) {
                    continue;
                }
                if attestation.verify(&self.chain_id).is_err() {
                    tracing::debug!(height, ?attestation, "skipping badly signed attestation");
                    continue;
                }
                record
                    .attestations
                    .push((attestation.validator, attestation.state_root));
                if record.settled_root.is_some() {
                    continue;
                }
                let power = record
                    .power_per_root(&self.validators)
                    .get(&attestation.state_root)
                    .copied()
                    .unwrap_or(0);
                if self.validators.is_quorum(power) {
                    record.settled_root = Some(attestation.state_root);
                    newly_settled.push((attestation.height, attestation.state_root));
                    if attestation.height > meta.settled_height {
                        meta.settled_height = attestation.height;
                        meta.settled_root = Some(attestation.state_root);
                    }
                }
            }
        }

        let encoded_meta = codec::encode(&meta);
        // A record loaded only to reject everything in it stays unwritten, so a height with
        // no valid attestation keeps reading as unknown.
        let encoded_records: Vec<([u8; 8], Vec<u8>)> = touched
            .iter()
            .filter(|(_, record)| !record.attestations.is_empty())
            .map(|(h, record)| (height_key(*h), codec::encode(record)))
            .collect();
        (&self.heights, &self.pending_tree, &self.meta_tree)
            .transaction(|(heights, pending, meta_tree)| {
                for (key, value) in &encoded_records {
                    heights.insert(key, value.as_slice())?;
                }
                for h in &included_pending {
                    pending.remove(&height_key(*h))?;
                }
                meta_tree.insert(META_KEY, encoded_meta.as_slice())?;
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(transaction_error)?;

        self.meta = meta;
        for h in &included_pending {
            self.pending.remove(h);
            self.offered.remove(h);
        }
        newly_settled.sort_unstable();
        Ok(Applied {
            status: self.status(),
            newly_settled,
        })
    }

    /// Records that this node executed `executed`; a validator attests a block that carried
    /// transactions. Writes but does not flush. Returns whether anything changed (a height
    /// reported again changes nothing).
    pub(crate) fn executed(&mut self, executed: &ExecutedBlock) -> Result<bool, SettlementError> {
        if executed.height <= self.meta.executed_height {
            return Ok(false);
        }
        // A block with no transactions leaves the state root as it was; attesting it would
        // make every attestation-only block ask for yet another attestation, forever.
        let attestation = match &self.key {
            Some(key) if executed.transactions > 0 => Some(Attestation::sign(
                &self.chain_id,
                key,
                executed.height,
                executed.state_root,
            )),
            _ => None,
        };
        let mut meta = self.meta;
        meta.executed_height = executed.height;
        let encoded_meta = codec::encode(&meta);
        let encoded_attestation = attestation.as_ref().map(codec::encode);
        (&self.pending_tree, &self.meta_tree)
            .transaction(|(pending, meta_tree)| {
                if let Some(value) = &encoded_attestation {
                    pending.insert(&height_key(executed.height), value.as_slice())?;
                }
                meta_tree.insert(META_KEY, encoded_meta.as_slice())?;
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(transaction_error)?;
        self.meta = meta;
        if let Some(attestation) = attestation {
            self.pending.insert(attestation.height, attestation);
        }
        Ok(true)
    }

    /// This node's pending attestations for the block proposed at `height`, as at most one
    /// blob of at most `max_bytes` encoded bytes.
    pub(crate) fn pending_blobs(&mut self, height: u64, max_bytes: usize) -> Vec<Blob> {
        let data_cap = max_bytes.saturating_sub(BLOB_OVERHEAD).min(MAX_BLOB_BYTES);
        let mut size = VEC_PREFIX;
        let mut messages = Vec::new();
        let applied = self.meta.applied_height;
        for attestation in self.pending.values() {
            // Only earlier heights are valid in this block.
            if attestation.height >= height {
                break;
            }
            // Already in a proposal that may be committed but not yet applied: offering it
            // again would only put a duplicate on chain.
            if let Some(&proposal) = self.offered.get(&attestation.height) {
                if proposal > applied && proposal < height {
                    continue;
                }
            }
            let message = SettlementMessage::Attestation(*attestation);
            let message_size = codec::encode(&message).len();
            if size.saturating_add(message_size) > data_cap {
                break;
            }
            size += message_size;
            messages.push(message);
        }
        if messages.is_empty() {
            return Vec::new();
        }
        for message in &messages {
            if let SettlementMessage::Attestation(attestation) = message {
                self.offered.insert(attestation.height, height);
            }
        }
        vec![Blob {
            namespace: Namespace::SETTLEMENT,
            data: codec::encode(&messages),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::Validator;

    const CHAIN: &str = "settle-test";

    fn keys(n: usize) -> Vec<Keypair> {
        (0..n)
            .map(|i| Keypair::deterministic(&format!("validator-{i}")))
            .collect()
    }

    fn genesis(keys: &[Keypair]) -> Genesis {
        Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: keys
                .iter()
                .map(|k| Validator {
                    address: k.address(),
                    power: 1,
                })
                .collect(),
            accounts: vec![],
        }
    }

    fn blob(attestations: &[Attestation]) -> Blob {
        let messages: Vec<SettlementMessage> = attestations
            .iter()
            .map(|a| SettlementMessage::Attestation(*a))
            .collect();
        Blob {
            namespace: Namespace::SETTLEMENT,
            data: codec::encode(&messages),
        }
    }

    fn root(label: &str) -> Hash {
        Hash::digest(label.as_bytes())
    }

    fn executed(height: u64, state_root: Hash, transactions: u32) -> ExecutedBlock {
        ExecutedBlock {
            height,
            block_hash: Hash::digest(&height.to_be_bytes()),
            state_root,
            transactions,
            failed: 0,
            fees: 0,
            data_root: Hash::ZERO,
            withdrawals_root: Hash::ZERO,
            withdrawal_count: 0,
            deposits_credited: 0,
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: sled::Db,
        genesis: Genesis,
    }

    fn fixture(keys: &[Keypair]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        Fixture {
            _dir: dir,
            db,
            genesis: genesis(keys),
        }
    }

    #[test]
    fn one_validator_settles_alone() {
        let keys = keys(1);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, Some(keys[0].clone())).unwrap();
        assert!(ledger.executed(&executed(1, root("s1"), 2)).unwrap());
        assert!(!ledger.executed(&executed(1, root("s1"), 2)).unwrap());
        assert_eq!(ledger.status().executed_height, 1);
        ledger.apply_block(1, &[]).unwrap();
        let blobs = ledger.pending_blobs(2, 10_000);
        assert_eq!(blobs.len(), 1);
        let applied = ledger.apply_block(2, &blobs).unwrap();
        assert_eq!(applied.newly_settled, vec![(1, root("s1"))]);
        assert_eq!(applied.status.settled_height, 1);
        assert_eq!(applied.status.settled_state_root, Some(root("s1")));
        assert_eq!(applied.status.applied_height, 2);
        assert!(ledger.pending_blobs(3, 10_000).is_empty());
        let info = ledger.height(1).unwrap().unwrap();
        assert_eq!(info.settled_root, Some(root("s1")));
        assert_eq!(info.attested_power, vec![(root("s1"), 1)]);
        assert_eq!(info.total_power, 1);
        assert_eq!(ledger.height(2).unwrap(), None);
    }

    #[test]
    fn four_validators_need_three() {
        let keys = keys(4);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, None).unwrap();
        let good = root("good");
        let atts: Vec<Attestation> = keys
            .iter()
            .map(|k| Attestation::sign(CHAIN, k, 1, good))
            .collect();
        ledger.apply_block(1, &[]).unwrap();
        let applied = ledger.apply_block(2, &[blob(&atts[..2])]).unwrap();
        assert!(applied.newly_settled.is_empty());
        assert_eq!(applied.status.settled_height, 0);
        let applied = ledger.apply_block(3, &[blob(&atts[2..3])]).unwrap();
        assert_eq!(applied.newly_settled, vec![(1, good)]);
        let applied = ledger.apply_block(4, &[blob(&atts[3..])]).unwrap();
        assert!(applied.newly_settled.is_empty());
        let info = ledger.height(1).unwrap().unwrap();
        assert_eq!(info.attested_power, vec![(good, 4)]);
        assert_eq!(info.total_power, 4);
    }

    #[test]
    fn duplicates_and_conflicts_count_once() {
        let keys = keys(4);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, None).unwrap();
        let (good, bad) = (root("good"), root("bad"));
        let first = Attestation::sign(CHAIN, &keys[0], 1, good);
        let conflicting = Attestation::sign(CHAIN, &keys[0], 1, bad);
        let second = Attestation::sign(CHAIN, &keys[1], 1, good);
        ledger.apply_block(1, &[]).unwrap();
        let applied = ledger
            .apply_block(2, &[blob(&[first, first, conflicting, second, second])])
            .unwrap();
        assert!(applied.newly_settled.is_empty());
        let info = ledger.height(1).unwrap().unwrap();
        assert_eq!(info.attested_power, vec![(good, 2)]);
        // The same validator's conflicting attestation in a later block is ignored too.
        ledger.apply_block(3, &[blob(&[conflicting])]).unwrap();
        assert_eq!(
            ledger.height(1).unwrap().unwrap().attested_power,
            vec![(good, 2)]
        );
        let third = Attestation::sign(CHAIN, &keys[2], 1, good);
        let applied = ledger.apply_block(4, &[blob(&[third])]).unwrap();
        assert_eq!(applied.newly_settled, vec![(1, good)]);
    }

    #[test]
    fn invalid_attestations_and_blobs_are_skipped() {
        let keys = keys(1);
        let outsider = Keypair::deterministic("outsider");
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, None).unwrap();
        let good = root("good");
        let mut forged = Attestation::sign(CHAIN, &keys[0], 1, good);
        forged.state_root = root("other");
        let wrong_chain = Attestation::sign("other-chain", &keys[0], 1, good);
        let not_validator = Attestation::sign(CHAIN, &outsider, 1, good);
        let future = Attestation::sign(CHAIN, &keys[0], 2, good);
        let genesis_height = Attestation::sign(CHAIN, &keys[0], 0, good);
        let garbage = Blob {
            namespace: Namespace::SETTLEMENT,
            data: vec![0xff; 40],
        };
        let other_namespace = Blob {
            namespace: Namespace::EXECUTION,
            ..blob(&[Attestation::sign(CHAIN, &keys[0], 1, good)])
        };
        let oversized = Blob {
            namespace: Namespace::SETTLEMENT,
            data: {
                let mut data = blob(&[Attestation::sign(CHAIN, &keys[0], 1, good)]).data;
                data.resize(MAX_BLOB_BYTES + 1, 0);
                data
            },
        };
        ledger.apply_block(1, &[]).unwrap();
        let applied = ledger
            .apply_block(
                2,
                &[
                    garbage,
                    other_namespace,
                    oversized,
                    blob(&[forged, wrong_chain, not_validator, future, genesis_height]),
                ],
            )
            .unwrap();
        assert!(applied.newly_settled.is_empty());
        assert_eq!(applied.status.applied_height, 2);
        assert_eq!(ledger.height(1).unwrap(), None);
        // A valid one after the skipped ones still counts.
        let valid = Attestation::sign(CHAIN, &keys[0], 1, good);
        let applied = ledger.apply_block(3, &[blob(&[forged, valid])]).unwrap();
        assert_eq!(applied.newly_settled, vec![(1, good)]);
    }

    #[test]
    fn messages_of_other_modes_are_ignored() {
        use lamina_primitives::bridge::{
            Challenge, ChallengeData, Claim, ClaimData, Deposit, DepositData, FinalizeWithdrawal,
            OutputPreimage, Withdrawal, OUTPUT_VERSION,
        };
        use lamina_primitives::merkle::MerkleProof;

        let keys = keys(1);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, None).unwrap();
        let good = root("good");
        let claim = Claim::sign(
            CHAIN,
            &keys[0],
            ClaimData {
                batch: 0,
                attempt: 0,
                first_height: 1,
                last_height: 1,
                output_root: good,
                bond: 0,
            },
        );
        let challenge = Challenge::sign(
            CHAIN,
            &keys[0],
            ChallengeData {
                batch: 0,
                attempt: 0,
                output_root: good,
            },
        );
        let deposit = Deposit::sign(
            CHAIN,
            &keys[0],
            DepositData {
                to: keys[0].address(),
                amount: 1,
                nonce: 0,
            },
        );
        let finalize = FinalizeWithdrawal {
            batch: 0,
            withdrawal: Withdrawal {
                id: 0,
                from: keys[0].address(),
                to: keys[0].address(),
                amount: 1,
            },
            preimage: OutputPreimage {
                version: OUTPUT_VERSION,
                state_root: good,
                withdrawals_root: good,
                last_block_hash: good,
                data_root: good,
            },
            proof: MerkleProof {
                index: 0,
                total: 1,
                siblings: vec![],
            },
        };
        let messages = vec![
            SettlementMessage::Claim(claim),
            SettlementMessage::Challenge(challenge),
            SettlementMessage::Deposit(deposit),
            SettlementMessage::FinalizeWithdrawal(finalize),
            SettlementMessage::Attestation(Attestation::sign(CHAIN, &keys[0], 1, good)),
        ];
        let body = Blob {
            namespace: Namespace::SETTLEMENT,
            data: codec::encode(&messages),
        };
        ledger.apply_block(1, &[]).unwrap();
        let applied = ledger.apply_block(2, &[body]).unwrap();
        // The attestation after the ignored messages still counts.
        assert_eq!(applied.newly_settled, vec![(1, good)]);
        assert_eq!(applied.status.applied_height, 2);
    }

    #[test]
    fn blocks_apply_in_order() {
        let keys = keys(1);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, None).unwrap();
        assert_eq!(
            ledger.apply_block(2, &[]),
            Err(SettlementError::OutOfOrder {
                expected: 1,
                got: 2
            })
        );
        ledger.apply_block(1, &[]).unwrap();
        ledger.apply_block(2, &[]).unwrap();
        let again = ledger.apply_block(1, &[]).unwrap();
        assert_eq!(again.status.applied_height, 2);
        assert_eq!(
            ledger.apply_block(4, &[]),
            Err(SettlementError::OutOfOrder {
                expected: 3,
                got: 4
            })
        );
    }

    #[test]
    fn only_validators_attest_and_only_blocks_with_transactions() {
        let keys = keys(2);
        let f = fixture(&keys);
        let outsider = Keypair::deterministic("outsider");
        let mut ledger = Ledger::open(&f.db, &f.genesis, Some(outsider)).unwrap();
        ledger.executed(&executed(1, root("a"), 3)).unwrap();
        assert!(ledger.pending_blobs(5, 10_000).is_empty());
        drop(ledger);
        let mut ledger = Ledger::open(&f.db, &f.genesis, Some(keys[1].clone())).unwrap();
        assert_eq!(ledger.status().executed_height, 1);
        ledger.executed(&executed(2, root("b"), 0)).unwrap();
        assert!(ledger.pending_blobs(5, 10_000).is_empty());
        ledger.executed(&executed(3, root("c"), 1)).unwrap();
        assert_eq!(ledger.status().executed_height, 3);
        // Not valid in a block at or below the attested height.
        assert!(ledger.pending_blobs(3, 10_000).is_empty());
        assert_eq!(ledger.pending_blobs(4, 10_000).len(), 1);
    }

    #[test]
    fn pending_blobs_respect_the_byte_cap_and_are_not_reoffered_too_early() {
        let keys = keys(1);
        let f = fixture(&keys);
        let mut ledger = Ledger::open(&f.db, &f.genesis, Some(keys[0].clone())).unwrap();
        for h in 1..=3 {
            ledger
                .executed(&executed(h, root(&h.to_string()), 1))
                .unwrap();
        }
        let one = SettlementMessage::Attestation(Attestation::sign(CHAIN, &keys[0], 1, root("1")));
        let per_message = codec::encode(&one).len();
        let room_for_two = BLOB_OVERHEAD + VEC_PREFIX + 2 * per_message;
        let first = ledger.pending_blobs(4, room_for_two - 1);
        let decoded: Vec<SettlementMessage> = codec::decode_trusted(&first[0].data).unwrap();
        assert_eq!(decoded, vec![one]);
        let blobs = ledger.pending_blobs(4, room_for_two);
        let encoded: usize = blobs.iter().map(|b| codec::encode(b).len()).sum();
        assert_eq!(encoded, room_for_two);
        assert!(ledger
            .pending_blobs(4, BLOB_OVERHEAD + VEC_PREFIX)
            .is_empty());
        // Heights 1 and 2 went into the proposal at 4, which may be committed but is not
        // applied yet: the proposal at 5 only gets height 3.
        let next = ledger.pending_blobs(5, 10_000);
        let decoded: Vec<SettlementMessage> = codec::decode_trusted(&next[0].data).unwrap();
        assert_eq!(
            decoded,
            vec![SettlementMessage::Attestation(Attestation::sign(
                CHAIN,
                &keys[0],
                3,
                root("3")
            ))]
        );
        // Once 4 and 5 are applied without them (another proposal won), all are offered again.
        for h in 1..=5 {
            ledger.apply_block(h, &[]).unwrap();
        }
        let again: Vec<SettlementMessage> =
            codec::decode_trusted(&ledger.pending_blobs(6, 10_000)[0].data).unwrap();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn restart_keeps_ledger_and_pending() {
        let keys = keys(4);
        let f = fixture(&keys);
        let good = root("good");
        {
            let mut ledger = Ledger::open(&f.db, &f.genesis, Some(keys[0].clone())).unwrap();
            ledger.executed(&executed(1, good, 1)).unwrap();
            ledger.executed(&executed(2, root("two"), 1)).unwrap();
            ledger.apply_block(1, &[]).unwrap();
            ledger.apply_block(2, &[]).unwrap();
            let mine = ledger.pending_blobs(3, 10_000);
            let others: Vec<Attestation> = keys[1..3]
                .iter()
                .map(|k| Attestation::sign(CHAIN, k, 1, good))
                .collect();
            let mut body = mine.clone();
            body.push(blob(&others));
            let applied = ledger.apply_block(3, &body).unwrap();
            assert_eq!(applied.newly_settled, vec![(1, good)]);
            ledger.executed(&executed(3, root("three"), 1)).unwrap();
            f.db.flush().unwrap();
        }
        let mut ledger = Ledger::open(&f.db, &f.genesis, Some(keys[0].clone())).unwrap();
        let status = ledger.status();
        assert_eq!(status.applied_height, 3);
        assert_eq!(status.executed_height, 3);
        assert_eq!(status.settled_height, 1);
        assert_eq!(status.settled_state_root, Some(good));
        let info = ledger.height(1).unwrap().unwrap();
        assert_eq!(info.attested_power, vec![(good, 3)]);
        // Height 1 and 2 were included at block 3; only 3 is still pending.
        let pending: Vec<SettlementMessage> =
            codec::decode_trusted(&ledger.pending_blobs(4, 10_000)[0].data).unwrap();
        assert_eq!(
            pending,
            vec![SettlementMessage::Attestation(Attestation::sign(
                CHAIN,
                &keys[0],
                3,
                root("three")
            ))]
        );
        assert_eq!(
            ledger.height(2).unwrap().unwrap().attested_power,
            vec![(root("two"), 1)]
        );
    }
}
