//! An example of a layer implemented outside Lamina's own crates: `depth` settlement, where a
//! height is settled once this node has executed it and `depth` more blocks are committed on
//! top of it. It suits a chain that trusts its validators' execution and wants finality by
//! confirmation depth alone (with `bft`, whose commits are final, `depth = 0` settles each
//! height as soon as it is executed). No settlement messages, no bridge.
//!
//! It shows the shape every layer has (docs/layers.md): a pure, synchronous core
//! ([`DepthLedger`]) that decides everything, a thin actor that owns it, persists it and
//! answers every [`SettlementRequest`] variant as its contract says, and a [`spawn`] that
//! returns the same [`SettlementHandle`] as every other settlement layer, so the node plugs it
//! in with one match arm.

mod actor;
mod ledger;

use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};

pub use ledger::DepthLedger;

/// Why the layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database could not be opened or read.
    #[error("depth settlement storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// The database holds something this layer cannot read.
    #[error("depth settlement storage is corrupt: {0}")]
    Corrupt(String),
    /// The stored ledger was created with another depth.
    #[error("this database's depth settlement uses depth {stored}, the config gives {configured}")]
    DepthChanged {
        /// The depth in the database.
        stored: u64,
        /// The depth in the config.
        configured: u64,
    },
    /// `spawn` was called outside a tokio runtime.
    #[error("the settlement layer must be spawned from within a tokio runtime")]
    NoRuntime,
}

/// Starts the layer on the current tokio runtime, keeping its state in `db` (tree
/// `settlement-depth`). The actor stops once every clone of the handle is dropped.
pub fn spawn(depth: u64, db: &sled::Db) -> Result<SettlementHandle, SetupError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
    let store = actor::Store::open(db, depth)?;
    let (mailbox, requests) = Mailbox::new("settlement", DEFAULT_MAILBOX_CAPACITY);
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    runtime.spawn(actor::run(store, requests, events.clone()));
    Ok(SettlementHandle::new(mailbox, events))
}
