//! Lamina's settlement layer: turns executed state roots into settled ones.
//!
//! Mode `attested`: after executing a block that carried transactions, each validator signs
//! an [`Attestation`](lamina_primitives::interfaces::settlement::Attestation) of the
//! resulting state root; the attestation travels in a later block's `settlement` namespace;
//! a height is settled once attestations of one root hold more than two thirds of the voting
//! power. Every node applies the same blocks in order, so every node's ledger agrees. Reach it
//! through the [`SettlementHandle`] that [`spawn`] returns.

mod actor;
mod ledger;
pub mod optimistic;
mod optimistic_mode;

use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};
use lamina_primitives::{codec, Address, Genesis, Hash, Keypair, Validator};
use optimistic::OptimisticParams;
use serde::{Deserialize, Serialize};

pub use ledger::MAX_BLOB_BYTES;

/// Which settlement mode to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettlementKind {
    /// A height settles when validators with a quorum of power attest one state root.
    #[default]
    Attested,
    /// Bonded claims of output roots finalize after a challenge window unless a challenge
    /// shows them wrong; the ledger also holds the bridge.
    Optimistic,
    /// A height settles once executed and `depth` blocks deep. Implemented outside this
    /// crate, by the example crate `lamina-example-depth-settlement` (see docs/layers.md),
    /// which the node spawns for this value.
    Depth,
}

/// Configuration of the settlement layer (the `[settlement]` part of a node's config). The
/// `optimistic` settings decide which messages are valid, so every node of a chain must use
/// the same ones (peers compare [`SettlementConfig::fingerprint`] at handshake).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementConfig {
    /// The mode.
    pub kind: SettlementKind,
    /// `optimistic`: blocks a claim stays open to challenges after the block including it.
    pub challenge_window: u64,
    /// `optimistic`: heights per claimed batch.
    pub batch_size: u64,
    /// `optimistic`: the bond a claim or a challenge locks.
    pub bond: u64,
    /// `optimistic`: percent of a slashed bond paid to the winner of the dispute.
    pub challenger_reward_percent: u8,
    /// `optimistic`: accounts allowed to claim, taking turns by batch; empty means every
    /// genesis validator, in genesis order.
    pub proposers: Vec<Address>,
    /// `optimistic`: blocks the designated proposer has to claim a batch before any proposer
    /// may.
    pub claim_timeout: u64,
    /// `optimistic`: settlement-ledger balance each genesis validator starts with (to bond
    /// claims and challenges); genesis accounts start with their genesis balance.
    pub validator_funds: u64,
    /// `depth`: blocks committed on top of an executed height before it is settled.
    pub depth: u64,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            kind: SettlementKind::Attested,
            challenge_window: 10,
            batch_size: 4,
            bond: 1_000,
            challenger_reward_percent: 50,
            proposers: Vec::new(),
            claim_timeout: 10,
            validator_funds: 1_000_000,
            depth: 2,
        }
    }
}

impl SettlementConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            SettlementKind::Attested | SettlementKind::Depth => Ok(()),
            SettlementKind::Optimistic => {
                if self.bond == 0 {
                    return Err(
                        "bond must be at least 1: free claims and challenges could be posted \
                         without limit"
                            .to_string(),
                    );
                }
                let mut params = self.params(&[]);
                // An empty list means "every validator", which `spawn` fills in.
                if params.proposers.is_empty() {
                    params.proposers.push(Address::default());
                }
                params.validate().map_err(|e| e.to_string())
            }
        }
    }

    /// The optimistic ledger's parameters for a chain whose validators are `validators`.
    pub fn params(&self, validators: &[Validator]) -> OptimisticParams {
        let proposers = if self.proposers.is_empty() {
            validators.iter().map(|v| v.address).collect()
        } else {
            self.proposers.clone()
        };
        OptimisticParams {
            challenge_window: self.challenge_window,
            batch_size: self.batch_size,
            bond: self.bond,
            proposers,
            claim_timeout: self.claim_timeout,
            challenger_reward_percent: self.challenger_reward_percent,
        }
    }

    /// The settlement ledger's starting balances in `optimistic` mode: every genesis
    /// account's genesis balance, and `validator_funds` for each validator.
    pub fn initial_balances(&self, genesis: &Genesis) -> Vec<(Address, u64)> {
        genesis
            .accounts
            .iter()
            .map(|account| (account.address, account.balance))
            .chain(
                genesis
                    .validators
                    .iter()
                    .map(|v| (v.address, self.validator_funds)),
            )
            .collect()
    }

    /// Checks the settings against the chain they are for: in `optimistic` mode the
    /// parameters with the resolved proposers, that the starting balances fit in 64 bits, and
    /// that some proposer can afford the bond (else nothing would ever settle).
    pub fn check_for(&self, genesis: &Genesis) -> Result<(), String> {
        if self.kind != SettlementKind::Optimistic {
            return Ok(());
        }
        let params = self.params(&genesis.validators);
        let ledger =
            optimistic::OptimisticLedger::new(params.clone(), self.initial_balances(genesis))
                .map_err(|e| e.to_string())?;
        if params
            .proposers
            .iter()
            .all(|p| ledger.balance(p) < params.bond)
        {
            return Err(format!(
                "no proposer can afford a bond of {}: raise validator_funds (now {}) or lower \
                 bond",
                params.bond, self.validator_funds
            ));
        }
        Ok(())
    }

    /// What peers must agree on: the mode, and in `optimistic` mode every setting that
    /// decides which messages are valid, with the proposers resolved against the chain's
    /// `validators` (an empty list and the same list written out agree).
    pub fn fingerprint(&self, validators: &[Validator]) -> String {
        match self.kind {
            SettlementKind::Attested => "attested".to_string(),
            SettlementKind::Depth => format!("depth({})", self.depth),
            SettlementKind::Optimistic => {
                let resolved = self.params(validators).proposers;
                let proposers = Hash::digest(&codec::encode(&resolved));
                format!(
                    "optimistic(window={},batch={},bond={},timeout={},reward={},funds={},proposers={})",
                    self.challenge_window,
                    self.batch_size,
                    self.bond,
                    self.claim_timeout,
                    self.challenger_reward_percent,
                    self.validator_funds,
                    proposers,
                )
            }
        }
    }
}

/// Why the settlement layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is invalid.
    #[error("invalid settlement config: {0}")]
    InvalidConfig(String),
    /// The database could not be opened or read.
    #[error("settlement storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The database holds data this layer cannot read.
    #[error("settlement storage is corrupt: {0}")]
    Corrupt(String),
    /// `spawn` was called outside a tokio runtime.
    #[error("the settlement layer must be spawned from within a tokio runtime")]
    NoRuntime,
}

/// Starts the settlement layer on the current tokio runtime, keeping its ledger in `db`
/// (trees `settlement/*`). With a `validator_key` that belongs to a genesis validator, the
/// node attests the blocks it executes. The actor stops once every clone of the returned
/// handle is dropped.
pub fn spawn(
    config: SettlementConfig,
    genesis: &Genesis,
    validator_key: Option<Keypair>,
    db: &sled::Db,
) -> Result<SettlementHandle, SetupError> {
    config.validate().map_err(SetupError::InvalidConfig)?;
    config
        .check_for(genesis)
        .map_err(SetupError::InvalidConfig)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    let mode = match config.kind {
        SettlementKind::Attested => {
            actor::Mode::Attested(ledger::Ledger::open(db, genesis, validator_key)?)
        }
        SettlementKind::Optimistic => {
            actor::Mode::Optimistic(optimistic_mode::OptimisticMode::open(
                db,
                genesis,
                config.params(&genesis.validators),
                config.initial_balances(genesis),
                validator_key,
            )?)
        }
        SettlementKind::Depth => {
            return Err(SetupError::InvalidConfig(
                "kind = \"depth\" is implemented by lamina-example-depth-settlement; spawn it \
                 from there (the node does)"
                    .to_string(),
            ))
        }
    };
    let (mailbox, requests) = Mailbox::new("settlement", DEFAULT_MAILBOX_CAPACITY);
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    runtime.spawn(actor::run(mode, db.clone(), requests, events.clone()));
    Ok(SettlementHandle::new(mailbox, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::interfaces::execution::ExecutedBlock;
    use lamina_primitives::interfaces::settlement::{SettlementError, SettlementEvent};
    use lamina_primitives::interfaces::RequestError;
    use lamina_primitives::{Hash, Validator};
    use std::time::Duration;

    fn genesis(key: &Keypair) -> Genesis {
        Genesis {
            chain_id: "settle-actor".into(),
            genesis_time_ms: 0,
            fee_per_transaction: 1,
            validators: vec![Validator {
                address: key.address(),
                power: 5,
            }],
            accounts: vec![],
        }
    }

    fn executed(height: u64, state_root: Hash) -> ExecutedBlock {
        ExecutedBlock {
            height,
            block_hash: Hash::ZERO,
            state_root,
            transactions: 1,
            failed: 0,
            fees: 1,
            data_root: Hash::ZERO,
            withdrawals_root: Hash::ZERO,
            withdrawal_count: 0,
            deposits_credited: 0,
        }
    }

    /// Drops `handle` and waits until the actor has stopped (its event sender is gone).
    async fn stop(handle: SettlementHandle) {
        let mut events = handle.subscribe();
        drop(handle);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(
                events.recv().await,
                Err(tokio::sync::broadcast::error::RecvError::Closed)
            ) {}
        })
        .await
        .unwrap();
    }

    #[test]
    fn config_parses_and_rejects_unknown_kinds() {
        let config: SettlementConfig = toml::from_str(r#"kind = "attested""#).unwrap();
        assert_eq!(config, SettlementConfig::default());
        assert!(config.validate().is_ok());
        let error = toml::from_str::<SettlementConfig>(r#"kind = "optimistc""#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "unknown variant `optimistc`, expected one of `attested`, `optimistic`, `depth`"
            ),
            "{error}"
        );
        assert!(toml::from_str::<SettlementConfig>("mode = 1").is_err());
    }

    #[test]
    fn optimistic_config_validates_and_fingerprints_what_peers_share() {
        let config: SettlementConfig =
            toml::from_str("kind = \"optimistic\"\nchallenge_window = 5\nbatch_size = 2\n")
                .unwrap();
        assert_eq!(config.kind, SettlementKind::Optimistic);
        assert!(config.validate().is_ok());
        let zero = SettlementConfig {
            challenge_window: 0,
            ..config.clone()
        };
        assert!(zero.validate().unwrap_err().contains("challenge_window"));
        let other_bond = SettlementConfig {
            bond: 1,
            ..config.clone()
        };
        let key = Keypair::deterministic("solo");
        let genesis = genesis(&key);
        let validators = &genesis.validators;
        assert_ne!(
            config.fingerprint(validators),
            other_bond.fingerprint(validators)
        );
        assert_eq!(
            SettlementConfig::default().fingerprint(validators),
            "attested"
        );
        let params = config.params(validators);
        assert_eq!(params.proposers, vec![key.address()]);
        // The proposers written out are the same chain as the default list.
        let explicit = SettlementConfig {
            proposers: vec![key.address()],
            ..config.clone()
        };
        assert_eq!(
            explicit.fingerprint(validators),
            config.fingerprint(validators)
        );
        assert!(config.check_for(&genesis).is_ok());
        let free = SettlementConfig {
            bond: 0,
            ..config.clone()
        };
        assert!(free
            .validate()
            .unwrap_err()
            .contains("bond must be at least 1"));
        let unaffordable = SettlementConfig {
            bond: config.validator_funds + 1,
            ..config.clone()
        };
        assert!(unaffordable
            .check_for(&genesis)
            .unwrap_err()
            .contains("no proposer can afford"));
    }

    #[tokio::test]
    async fn settles_through_the_handle_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let key = Keypair::deterministic("solo");
        let genesis = genesis(&key);
        let root = Hash::digest(b"state-1");

        let settlement = spawn(
            SettlementConfig::default(),
            &genesis,
            Some(key.clone()),
            &db,
        )
        .unwrap();
        assert_eq!(settlement.status().await.unwrap().mode, "attested");
        settlement.apply_block(1, vec![]).await.unwrap();
        settlement.executed(executed(1, root)).await.unwrap();
        assert_eq!(
            settlement.apply_block(3, vec![]).await,
            Err(RequestError::Layer(SettlementError::OutOfOrder {
                expected: 2,
                got: 3
            }))
        );
        stop(settlement).await;

        let settlement = spawn(
            SettlementConfig::default(),
            &genesis,
            Some(key.clone()),
            &db,
        )
        .unwrap();
        let status = settlement.status().await.unwrap();
        assert_eq!((status.applied_height, status.executed_height), (1, 1));
        let blobs = settlement.pending_blobs(2, 1 << 16).await.unwrap();
        assert_eq!(blobs.len(), 1);
        assert_eq!(settlement.height(1).await.unwrap(), None);
        let status = settlement.apply_block(2, blobs).await.unwrap();
        assert_eq!(status.settled_height, 1);
        assert_eq!(status.settled_state_root, Some(root));
        assert!(settlement
            .pending_blobs(3, 1 << 16)
            .await
            .unwrap()
            .is_empty());
        let info = settlement.height(1).await.unwrap().unwrap();
        assert_eq!(info.settled_root, Some(root));
        assert_eq!(info.attested_power, vec![(root, 5)]);
        let mut events = settlement.subscribe();
        settlement.executed(executed(2, root)).await.unwrap();
        settlement.apply_block(3, vec![]).await.unwrap();
        let blobs = settlement.pending_blobs(4, 1 << 16).await.unwrap();
        settlement.apply_block(4, blobs).await.unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            SettlementEvent::Settled {
                height: 2,
                state_root: root
            }
        );
    }
}
