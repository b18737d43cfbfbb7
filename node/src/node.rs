//! Starting a node: open the database, spawn each layer's configured implementation, wire
//! them with the block pipeline, and serve the HTTP API until asked to stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lamina_primitives::interfaces::consensus::{ConsensusDeps, ConsensusHandle, OUTBOUND_CAPACITY};
use lamina_primitives::interfaces::da::DaHandle;
use lamina_primitives::interfaces::execution::ExecutionHandle;
use lamina_primitives::interfaces::settlement::SettlementHandle;
use lamina_primitives::{Genesis, Keypair};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, NodeConfig};
use crate::http;
use crate::metrics::Metrics;
use crate::pipeline::{self, Layers};

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
        let db = sled::Config::new().path(&db_path).open().with_context(|| {
            format!(
                "cannot open the database at {} (is another node using this directory?)",
                db_path.display()
            )
        })?;

        let da = lamina_da::spawn(config.data_availability.clone(), &db)
            .context("starting the data-availability layer")?;
        let settlement = lamina_settlement::spawn(
            config.settlement.clone(),
            &genesis,
            validator_key.clone(),
            &db,
        )
        .context("starting the settlement layer")?;
        let execution = lamina_execution::spawn(config.execution.clone(), &genesis, &db)
            .context("starting the execution layer")?;
        let (consensus_outbound, _consensus_outbound_rx) = mpsc::channel(OUTBOUND_CAPACITY);
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
        let context = NodeContext {
            genesis: Arc::new(genesis),
            config: Arc::new(config),
            consensus: consensus.clone(),
            execution: execution.clone(),
            da: da.clone(),
            settlement: settlement.clone(),
            metrics: metrics.clone(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let layers = Layers {
            consensus,
            execution,
            da,
            settlement,
        };
        let pipeline = tokio::spawn(pipeline::run(layers, metrics, shutdown_rx.clone()));

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
