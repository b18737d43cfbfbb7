//! Lamina's execution layer: the authenticated account state (a Jellyfish Merkle Tree in
//! sled), the mempool, the executors that run committed blocks (`sequential`, and
//! `parallel`: Block-STM, in [`parallel`]), and the execution side of the bridge (deposits
//! credited, withdrawals numbered and proven).
//!
//! [`spawn`] starts the layer as an actor on its own thread and returns the
//! [`ExecutionHandle`] every other part of the node talks to.

mod actor;
mod bridge;
pub mod config;
pub mod executor;
pub mod mempool;
pub mod parallel;
pub mod state;
pub mod workload;

use std::thread;

use lamina_primitives::interfaces::execution::ExecutionHandle;
use lamina_primitives::interfaces::{
    Events, Mailbox, DEFAULT_EVENT_CAPACITY, DEFAULT_MAILBOX_CAPACITY,
};
use lamina_primitives::{Genesis, Hash};

pub use config::{ExecutionConfig, ExecutorKind};

use crate::actor::Actor;
use crate::state::StoreError;

/// Why the execution layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `[execution]` config is not usable.
    #[error("invalid execution config: {0}")]
    InvalidConfig(String),
    /// The genesis file is not usable.
    #[error("invalid genesis: {0}")]
    InvalidGenesis(String),
    /// The database holds the state of another chain.
    #[error("the database was initialised from genesis {stored}, but the genesis given has hash {expected}; use the matching genesis or a fresh data directory")]
    GenesisMismatch {
        /// Genesis hash recorded in the database.
        stored: Hash,
        /// Hash of the genesis given.
        expected: Hash,
    },
    /// The database failed or holds unreadable records.
    #[error("execution storage: {0}")]
    Storage(#[from] StoreError),
    /// The actor's thread could not be started.
    #[error("starting the execution thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Spawns the execution actor on a dedicated std thread (it receives from the tokio mpsc with
/// blocking_recv, so CPU-heavy execution never blocks the async runtime). Opens/creates its
/// sled trees in `db`, writes genesis state at version 0 if the state is empty (and checks the
/// stored genesis hash matches `genesis.hash()` otherwise -> error), and returns the handle.
pub fn spawn(
    config: ExecutionConfig,
    genesis: &Genesis,
    db: &sled::Db,
) -> Result<ExecutionHandle, SetupError> {
    spawn_thread(config, genesis, db).map(|(handle, _thread)| handle)
}

/// [`spawn`], also returning the thread so tests can wait for the actor to stop.
fn spawn_thread(
    config: ExecutionConfig,
    genesis: &Genesis,
    db: &sled::Db,
) -> Result<(ExecutionHandle, thread::JoinHandle<()>), SetupError> {
    let events = Events::new(DEFAULT_EVENT_CAPACITY);
    let actor = Actor::open(&config, genesis, db, events.clone())?;
    let (mailbox, requests) = Mailbox::new("execution", DEFAULT_MAILBOX_CAPACITY);
    let thread = thread::Builder::new()
        .name("lamina-execution".into())
        .spawn(move || actor.run(requests))
        .map_err(SetupError::Thread)?;
    Ok((ExecutionHandle::new(mailbox, events), thread))
}

#[cfg(test)]
mod tests;
