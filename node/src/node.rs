//! Starting a node: open the database, spawn each layer's configured implementation, wire
//! them with the block pipeline, and serve the HTTP API until asked to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lamina_primitives::interfaces::consensus::{ConsensusDeps, ConsensusHandle, OUTBOUND_CAPACITY};
use lamina_primitives::interfaces::da::{DaHandle, ShareHolder};
use lamina_primitives::interfaces::execution::ExecutionHandle;
use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::{Genesis, Keypair, Transaction};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::archive::{Pruner, MIN_VALIDATORS_TO_PRUNE};
use crate::bad_encoding::BadEncodingLog;
use crate::config::{kind_of, ConfigError, Dissemination, NodeConfig};
use crate::dissemination::Disseminator;
use crate::http;
use crate::metrics::Metrics;
use crate::network::{self, NetworkConfig, NetworkHandle, TopicLimits};
use crate::p2p_key;
use crate::pipeline::{self, Layers};
use crate::relay::{self, Relay};
use lamina_settlement::SettlementKind;

/// Largest genesis file accepted.
const MAX_GENESIS_BYTES: u64 = 64 << 20;

/// What the HTTP handlers and the CLI need to reach a running node's layers.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The genesis the node runs.
    pub genesis: Arc<Genesis>,
    /// The resolved config.
    pub config: Arc<NodeConfig>,
    /// Consensus engine.
    pub consensus: ConsensusHandle,
    /// Execution layer.
    pub execution: ExecutionHandle,
    /// DA layer.
    pub da: DaHandle,
    /// Settlement layer.
    pub settlement: SettlementHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The peer-to-peer network, when the node has one (`[network] listen` is set).
    pub network: Option<NetworkHandle>,
    /// Where the HTTP API puts accepted transactions for gossip (with a network only).
    pub tx_gossip: Option<mpsc::Sender<Transaction>>,
    /// Proposals shown badly encoded, found here or proven by peers.
    pub bad_encoding: Arc<BadEncodingLog>,
}

/// A running node.
#[derive(Debug)]
pub struct RunningNode {
    /// Handles to its layers.
    pub context: NodeContext,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    db: sled::Db,
    shutdown: watch::Sender<bool>,
    /// The block pipeline; it ends early only when a layer has stopped.
    pipeline: Option<JoinHandle<anyhow::Result<()>>>,
    http: JoinHandle<()>,
}

/// Reads and validates a genesis file.
pub fn load_genesis(path: &Path) -> Result<Genesis, ConfigError> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| ConfigError::File(format!("cannot read genesis file {shown}: {e}")))?
        .len();
    if size > MAX_GENESIS_BYTES {
        return Err(ConfigError::File(format!(
            "genesis file {shown} is {size} bytes; the limit is {MAX_GENESIS_BYTES}"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File(format!("cannot read genesis file {shown}: {e}")))?;
    let genesis: Genesis = serde_json::from_str(&text)
        .map_err(|e| ConfigError::File(format!("invalid genesis file {shown}: {e}")))?;
    genesis
        .validate()
        .map_err(|e| ConfigError::File(format!("invalid genesis file {shown}: {e}")))?;
    Ok(genesis)
}

/// Reads a hex secret key file.
pub fn load_key(path: &Path) -> Result<Keypair, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File(format!("cannot read key file {shown}: {e}")))?;
    Keypair::from_secret_hex(text.trim()).map_err(|e| {
        ConfigError::File(format!(
            "key file {shown} is not a hex ed25519 secret key: {e}"
        ))
    })
}

/// Largest settlement gossip message.
const MAX_SETTLEMENT_GOSSIP_BYTES: usize = 1 << 20;

/// Largest consensus message: a proposal carries a whole block, so the block limit plus
/// room for the header, signature and encoding.
fn max_consensus_message_bytes(config: &NodeConfig) -> usize {
    config.consensus.max_block_bytes.saturating_add(64 * 1024)
}

/// Number of row holders: the validators (saturating; no chain has 2^32 of them).
fn holders(genesis: &Genesis) -> u32 {
    u32::try_from(genesis.validators.len()).unwrap_or(u32::MAX)
}

/// Largest proposal part (one validator's `2 / n` of the extended rows and as many columns,
/// each line its first `k` shares, with the header and the square's roots): room for an
/// original square up to four times the block (its width is rounded up to a power of two)
/// plus 256 KiB for the roots, but never more than four times the consensus topic's limit
/// (the bound with the default limits and four validators), so no peer can make a node take
/// in much more at once than a few whole proposals. A proposer whose parts come out larger
/// sends the block whole.
fn max_proposal_part_bytes(config: &NodeConfig, genesis: &Genesis) -> usize {
    let holders = usize::try_from(holders(genesis).max(1)).unwrap_or(usize::MAX);
    let rows = config
        .consensus
        .max_block_bytes
        .saturating_mul(16)
        .div_ceil(holders)
        .saturating_add(256 * 1024);
    rows.min(max_consensus_message_bytes(config).saturating_mul(4))
}

/// The layer settings every node of one network must share, as peers compare them at
/// handshake: the consensus engine, the DA scheme (it defines `data_root`) and the
/// settlement mode (it reads the same ledger). Executors may differ: they agree bit for bit.
pub(crate) fn compatibility(config: &NodeConfig, genesis: &Genesis) -> String {
    format!(
        "consensus={};data_availability={};settlement={}",
        kind_of(&config.consensus),
        config.data_availability.commitment_scheme(),
        config.settlement.fingerprint(&genesis.validators),
    )
}

/// Which of the validators' shares of old heights this node keeps: a validator's index in
/// the genesis set; `None` for a node that is not a validator (it keeps everything).
fn share_holder(genesis: &Genesis, key: Option<&Keypair>) -> Option<ShareHolder> {
    let address = key?.address();
    let index = genesis
        .validators
        .iter()
        .position(|validator| validator.address == address)?;
    Some(ShareHolder {
        index: u32::try_from(index).ok()?,
        count: u32::try_from(genesis.validators.len()).ok()?,
    })
}

impl RunningNode {
    /// Starts every layer and the HTTP API; returns once the API is listening.
    pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
        let genesis = load_genesis(&config.node.genesis)?;
        let validator_key = config
            .node
            .validator_key
            .as_deref()
            .map(load_key)
            .transpose()?;
        let holder = share_holder(&genesis, validator_key.as_ref());
        std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.node.data_dir.display()
            )
        })?;
        // Bind before any layer starts, so a busy port fails start-up before anything commits.
        let listen = config.http.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {listen}; is the port in use?"))?;
        let db_path = config.node.data_dir.join("db");
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(config.node.db_cache_bytes)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the database at {} (is another node using this directory?)",
                    db_path.display()
                )
            })?;

        let da = lamina_da::spawn(config.data_availability.clone(), &db)
            .context("starting the data-availability layer")?;
        let settlement = match config.settlement.kind {
            SettlementKind::Depth => {
                lamina_example_depth_settlement::spawn(config.settlement.depth, &db)
                    .context("starting the settlement layer")?
            }
            _ => lamina_settlement::spawn(
                config.settlement.clone(),
                &genesis,
                validator_key.clone(),
                &db,
            )
            .context("starting the settlement layer")?,
        };
        let execution = lamina_execution::spawn(config.execution.clone(), &genesis, &db)
            .context("starting the execution layer")?;
        let (consensus_outbound, consensus_outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let deps = ConsensusDeps {
            execution: execution.clone(),
            da: da.clone(),
            settlement: settlement.clone(),
            outbound: consensus_outbound,
        };
        let consensus =
            lamina_consensus::spawn(config.consensus.clone(), &genesis, validator_key, &db, deps)
                .context("starting the consensus engine")?;

        let metrics = Arc::new(Metrics::new());
        let bad_encoding = Arc::new(BadEncodingLog::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (network, tx_gossip) = match config.network.listen_addr().map_err(ConfigError::File)? {
            None => (None, None),
            Some(listen) => {
                let max_part_bytes = max_proposal_part_bytes(&config, &genesis);
                // A bad key file is the operator's to fix, like the validator key (exit 2).
                let identity = p2p_key::load_or_create(&config.network.key_file)
                    .map_err(|e| ConfigError::File(format!("{e:#}")))?;
                let network_config = NetworkConfig {
                    listen,
                    peers: config.network.peer_addrs().map_err(ConfigError::File)?,
                    chain_id: genesis.chain_id.clone(),
                    genesis_hash: genesis.hash(),
                    compat: compatibility(&config, &genesis),
                    topic_limits: TopicLimits {
                        consensus: max_consensus_message_bytes(&config),
                        transactions: relay::transaction_batch_limit(
                            config.execution.max_transaction_bytes,
                        ),
                        settlement: MAX_SETTLEMENT_GOSSIP_BYTES,
                        blobs: relay::blob_gossip_limit(config.data_availability.max_blob_bytes),
                        rows: max_part_bytes,
                    },
                    holders: holders(&genesis),
                    holder: holder.map(|holder| holder.index),
                };
                let (handle, events) =
                    network::spawn(network_config, identity, consensus.clone(), da.clone())
                        .context("starting the peer-to-peer network")?;
                let dissemination = Arc::new(Disseminator::new(
                    config.dissemination() == Dissemination::Shares,
                    handle.clone(),
                    da.clone(),
                    consensus.clone(),
                    genesis.chain_id.clone(),
                    genesis.validator_set(),
                    holder.map(|holder| holder.index),
                    max_part_bytes,
                    config.data_availability.codec,
                    Arc::clone(&bad_encoding),
                    metrics.clone(),
                ));
                let (tx_gossip, transactions) = mpsc::channel(relay::TX_GOSSIP_CAPACITY);
                let relay = Relay {
                    network: handle.clone(),
                    events,
                    outbound: consensus_outbound_rx,
                    transactions,
                    consensus: consensus.clone(),
                    execution: execution.clone(),
                    max_transaction_bytes: config.execution.max_transaction_bytes,
                    max_consensus_message_bytes: max_consensus_message_bytes(&config),
                    da: da.clone(),
                    max_blob_bytes: config.data_availability.max_blob_bytes,
                    settlement: settlement.clone(),
                    max_settlement_message_bytes: MAX_SETTLEMENT_GOSSIP_BYTES,
                    dissemination,
                };
                tokio::spawn(relay.run(shutdown_rx.clone()));
                tracing::info!(address = %handle.listen_addr(), "peer-to-peer network listening");
                (Some(handle), Some(tx_gossip))
            }
        };

        let context = NodeContext {
            genesis: Arc::new(genesis),
            config: Arc::new(config),
            consensus: consensus.clone(),
            execution: execution.clone(),
            da: da.clone(),
            settlement: settlement.clone(),
            metrics: metrics.clone(),
            network,
            tx_gossip,
            bad_encoding,
        };
        let layers = Layers {
            consensus,
            execution,
            da,
            settlement,
        };
        let (executed_tx, executed_rx) = watch::channel(0);
        let window = context.config.data_availability.retention_window;
        match holder {
            Some(holder) if window > 0 && holder.count < MIN_VALIDATORS_TO_PRUNE => {
                tracing::warn!(
                    validators = holder.count,
                    "retention_window is ignored: with fewer than {MIN_VALIDATORS_TO_PRUNE} \
                     validators each would keep as much of every height as the body itself"
                );
            }
            Some(holder) if window > 0 => {
                let pruner = Pruner {
                    consensus: layers.consensus.clone(),
                    da: layers.da.clone(),
                    holder,
                    window,
                    metrics: metrics.clone(),
                };
                tokio::spawn(pruner.run(executed_rx));
            }
            None if window > 0 => tracing::warn!(
                "retention_window is ignored: only validators share out old heights, so this \
                 node keeps every height whole"
            ),
            _ => {}
        }
        let pipeline = tokio::spawn(pipeline::run(
            layers,
            metrics,
            executed_tx,
            shutdown_rx.clone(),
        ));

        let http_addr = listener.local_addr()?;
        let app = http::router(context.clone());
        let mut http_shutdown = shutdown_rx;
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!("HTTP server failed: {err}");
            }
        });
        tracing::info!(%http_addr, chain_id = %context.genesis.chain_id, "node started");
        Ok(RunningNode {
            context,
            http_addr,
            db,
            shutdown,
            pipeline: Some(pipeline),
            http,
        })
    }

    /// Resolves only if the node cannot go on (one of its layers stopped), with the reason.
    pub async fn failed(&mut self) -> anyhow::Error {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = pipeline.await;
        self.pipeline = None;
        match outcome {
            Ok(Err(err)) => err,
            Ok(Ok(())) => std::future::pending().await,
            Err(join) => anyhow::anyhow!("the block pipeline crashed: {join}"),
        }
    }

    /// Stops serving, lets in-flight work finish, and flushes the database. Everything a
    /// layer reported as committed was already flushed; this is belt and braces.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let grace = std::time::Duration::from_secs(5);
        if let Some(pipeline) = self.pipeline {
            let _ = tokio::time::timeout(grace, pipeline).await;
        }
        let _ = tokio::time::timeout(grace, self.http).await;
        self.db
            .flush_async()
            .await
            .context("flushing the database")?;
        tracing::info!("node stopped");
        Ok(())
    }
}
