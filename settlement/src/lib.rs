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

use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};
use lamina_primitives::{Genesis, Keypair};
use serde::{Deserialize, Serialize};

pub use ledger::MAX_BLOB_BYTES;

/// Which settlement mode to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettlementKind {
    /// A height settles when validators with a quorum of power attest one state root.
    #[default]
    Attested,
}

/// Configuration of the settlement layer (the `[settlement]` part of a node's config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettlementConfig {
    /// The mode.
    pub kind: SettlementKind,
}

impl SettlementConfig {
    /// Checks the values serde cannot (the `attested` mode has no other settings yet).
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            SettlementKind::Attested => Ok(()),
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
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    let ledger = match config.kind {
        SettlementKind::Attested => ledger::Ledger::open(db, genesis, validator_key)?,
    };
    let (mailbox, requests) = Mailbox::new("settlement", DEFAULT_MAILBOX_CAPACITY);
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    runtime.spawn(actor::run(ledger, db.clone(), requests, events.clone()));
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
            error.contains("unknown variant `optimistc`, expected `attested`"),
            "{error}"
        );
        assert!(toml::from_str::<SettlementConfig>("mode = 1").is_err());
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
