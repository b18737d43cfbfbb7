//! The `solo` engine: the only validator proposes and commits a block every
//! `block_time_ms` when there is something to put in it, certifying each block with its own
//! precommit.
//!
//! Made for local development and tests: no network, no votes to wait for. Each block is
//! durable before it is announced, and a restart continues from the stored tip.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lamina_primitives::interfaces::consensus::{
    ConsensusDeps, ConsensusEvent, ConsensusRequest, ConsensusStatus, ImportError, Verdict,
};
use lamina_primitives::interfaces::{Events, RequestError};
use lamina_primitives::{
    Address, Block, CommittedBlock, Genesis, Keypair, Transaction, ValidatorSet,
};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::proposal::{self, Decision};
use crate::serve;
use crate::store::{ChainStore, Tip};
use crate::{ConsensusConfig, SetupError};

/// The solo engine's state.
#[derive(Debug)]
pub(crate) struct Solo {
    config: ConsensusConfig,
    chain_id: String,
    validators: ValidatorSet,
    key: Keypair,
    store: ChainStore,
    tip: Tip,
    /// The committed tip as readers see it; updated only once a block is durable.
    published: watch::Sender<Tip>,
    /// Transactions reaped for a height whose block could not be finished. The mempool keeps
    /// them reserved for that height, so the retry must reuse them rather than reap again.
    carried: Option<(u64, Vec<Transaction>)>,
}

impl Solo {
    /// Checks that this node is the chain's only validator and opens the stored chain.
    pub(crate) fn open(
        config: ConsensusConfig,
        genesis: &Genesis,
        key: Option<Keypair>,
        db: &sled::Db,
    ) -> Result<Self, SetupError> {
        let [validator] = genesis.validators.as_slice() else {
            return Err(SetupError::SoloNeedsOneValidator {
                count: genesis.validators.len(),
            });
        };
        let key = key.ok_or(SetupError::MissingValidatorKey {
            validator: validator.address,
        })?;
        if key.address() != validator.address {
            return Err(SetupError::NotTheValidator {
                key: key.address(),
                validator: validator.address,
            });
        }
        let (store, tip) = ChainStore::open(db, genesis)?;
        tracing::info!(height = tip.height, hash = %tip.hash, "solo engine resumes from the stored tip");
        Ok(Solo {
            config,
            chain_id: genesis.chain_id.clone(),
            validators: genesis.validator_set(),
            key,
            store,
            tip,
            published: watch::Sender::new(tip),
            carried: None,
        })
    }

    /// What answers requests: it reads the store and the published tip, so requests are
    /// answered even while a block is being built.
    fn reader(&self, db: &sled::Db) -> Reader {
        Reader {
            store: self.store.clone(),
            db: db.clone(),
            tip: self.published.subscribe(),
            validator: self.key.address(),
        }
    }
}

/// Answers [`ConsensusRequest`]s from the committed chain.
#[derive(Debug)]
struct Reader {
    store: ChainStore,
    /// Flushed after pruning, before the prune is answered.
    db: sled::Db,
    tip: watch::Receiver<Tip>,
    validator: Address,
}

impl Reader {
    fn status(&self) -> ConsensusStatus {
        let tip = *self.tip.borrow();
        ConsensusStatus {
            engine: "solo".to_string(),
            committed_height: tip.height,
            last_block_hash: tip.hash,
            validator: Some(self.validator),
            round: 0,
            validators: 1,
            pruned_through: self.store.pruned_through(),
        }
    }

    fn answer(&self, request: ConsensusRequest) {
        // A send error only means the caller stopped waiting.
        match request {
            ConsensusRequest::GetStatus { reply } => {
                let _ = reply.send(self.status());
            }
            ConsensusRequest::GetBlock { height, reply } => {
                let tip = self.tip.borrow().height;
                let _ = reply.send(serve::block(&self.store, height, tip));
            }
            ConsensusRequest::GetHeader { height, reply } => {
                let tip = self.tip.borrow().height;
                let _ = reply.send(serve::header(&self.store, height, tip));
            }
            ConsensusRequest::PruneBodies { through, reply } => {
                // The published tip is durable, so its block keeps its body; a block being
                // built is above it and untouched.
                let tip = self.tip.borrow().height;
                serve::prune_bodies(&self.store, &self.db, through, tip, reply);
            }
            // The only validator has no peers to hear from and never falls behind.
            ConsensusRequest::Deliver { reply, .. } => {
                let _ = reply.send(Verdict::Ignore);
            }
            ConsensusRequest::ImportBlock { block, reply } => {
                let _ = reply.send(Err(ImportError::Invalid(format!(
                    "the solo engine commits its own blocks; it does not import block {}",
                    block.block.height()
                ))));
            }
            ConsensusRequest::GetEvidence { reply } => {
                let _ = reply.send(Vec::new());
            }
        }
    }
}

impl Solo {
    /// One tick: builds, stores and announces the next block if there is anything to put in
    /// it. Failures are logged and retried on the next tick.
    async fn tick(&mut self, deps: &ConsensusDeps, db: &sled::Db, events: &Events<ConsensusEvent>) {
        let height = self.tip.height.saturating_add(1);
        let transactions = match self.carried.take() {
            Some((carried_height, transactions))
                if carried_height == height && !transactions.is_empty() =>
            {
                transactions
            }
            _ => match deps
                .execution
                .reap_transactions(
                    height,
                    self.config.max_block_transactions,
                    proposal::transaction_budget(self.config.max_block_bytes),
                )
                .await
            {
                Ok(transactions) => transactions,
                Err(error) => {
                    tracing::warn!(height, %error, "cannot reap transactions; retrying next tick");
                    return;
                }
            },
        };
        let execution = proposal::execution_blob(&transactions);
        let settlement_budget =
            proposal::budget_after(self.config.max_block_bytes, execution.as_ref());
        let settlement = match deps
            .settlement
            .pending_blobs(height, settlement_budget)
            .await
        {
            Ok(blobs) => blobs,
            Err(error) => {
                tracing::warn!(height, %error, "cannot get settlement messages; retrying next tick");
                self.carried = Some((height, transactions));
                return;
            }
        };
        let outside = crate::outside_blobs(
            deps,
            height,
            proposal::budget_after(
                self.config.max_block_bytes,
                execution.iter().chain(&settlement),
            ),
        )
        .await;
        let body = match proposal::decide(
            execution,
            settlement,
            outside,
            self.config.create_empty_blocks,
        ) {
            Decision::Skip => return,
            Decision::Propose(body) => Arc::new(body),
        };
        let commitment = match deps.da.commit(Arc::clone(&body)).await {
            Ok(commitment) => commitment,
            Err(RequestError::Channel(error)) => {
                tracing::warn!(height, %error, "cannot reach the DA layer; retrying next tick");
                self.carried = Some((height, transactions));
                return;
            }
            Err(RequestError::Layer(error)) => {
                // Retrying the same body would fail the same way. Its transactions stay
                // reserved for this height, so a later reap may hand them out again: with the
                // node's config check (blocks fit the DA limit) this is not expected to happen.
                tracing::error!(height, %error, "the DA layer refused the block body; dropping it");
                return;
            }
        };
        let header = proposal::header(
            &self.chain_id,
            &self.tip,
            now_ms(),
            self.key.address(),
            &commitment,
        );
        let certificate = proposal::certify_alone(&self.chain_id, &self.key, &header);
        if let Err(error) = certificate.verify(&self.chain_id, &header, &self.validators) {
            tracing::error!(height, %error, "own certificate does not verify; not committing");
            return;
        }
        let committed = CommittedBlock {
            block: Block {
                header,
                body: Arc::unwrap_or_clone(body),
            },
            certificate,
        };
        let tip = match self.store.put(&committed) {
            Ok(tip) => tip,
            Err(error) => {
                tracing::error!(height, %error, "cannot store block; retrying next tick");
                self.carried = Some((height, transactions));
                return;
            }
        };
        if let Err(error) = db.flush_async().await {
            // Not announced, so nothing relies on it yet; the retry overwrites it.
            tracing::error!(height, %error, "cannot flush block; retrying next tick");
            self.carried = Some((height, transactions));
            return;
        }
        self.tip = tip;
        self.published.send_replace(tip);
        tracing::info!(
            height,
            hash = %tip.hash,
            txs = transactions.len(),
            "committed block"
        );
        events.publish(ConsensusEvent::Committed {
            height,
            block_hash: tip.hash,
        });
    }
}

fn now_ms() -> u64 {
    // A clock before 1970 yields 0; the timestamp rule still moves past the parent.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs the engine until every handle is dropped.
pub(crate) async fn run(
    mut solo: Solo,
    deps: ConsensusDeps,
    db: sled::Db,
    mut requests: mpsc::Receiver<ConsensusRequest>,
    events: Events<ConsensusEvent>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(solo.config.block_time_ms));
    // After a slow block, wait a full block time rather than catching up with a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let reader = solo.reader(&db);
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => reader.answer(request),
                None => break,
            },
            _ = ticker.tick() => {
                // Keep answering requests while the block is built.
                let tick = solo.tick(&deps, &db, &events);
                tokio::pin!(tick);
                loop {
                    tokio::select! {
                        () = &mut tick => break,
                        request = requests.recv() => match request {
                            Some(request) => reader.answer(request),
                            None => {
                                tick.await;
                                tracing::debug!("solo engine stopped: every handle was dropped");
                                return;
                            }
                        },
                    }
                }
            }
        }
    }
    tracing::debug!("solo engine stopped: every handle was dropped");
}
