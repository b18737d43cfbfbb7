//! `lamina testnet`: a multi-validator network in one command. The first start writes one
//! directory per node (config, genesis, validator key, network key) under the testnet's
//! directory, then every start runs each node as a child `lamina run` process, waits until
//! all of them serve their HTTP API, prints how to reach them and keeps a live status line
//! until Ctrl-C or SIGTERM, which stops every node cleanly. Running it again with the same
//! `--dir` resumes the chain.
//!
//! `lamina testnet init` only writes the files, for one machine or (with `--hosts`) one
//! node per machine, and prints how to start each node.

use std::io::{IsTerminal, Read, Seek};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use lamina_consensus::EngineKind;
use lamina_da::DaKind;
use lamina_execution::ExecutorKind;
use lamina_primitives::{Address, Genesis, Keypair, Validator};
use lamina_settlement::SettlementKind;
use libp2p::PeerId;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::init::{dev_accounts_of, dev_genesis, write_secret};
use super::{StatusLine, UsageError};
use crate::config::{Dissemination, NodeConfig};
use crate::testnet_file::{TestnetFile, TestnetNode};

/// Chain id of every testnet.
pub const TESTNET_CHAIN_ID: &str = "lamina-testnet";
/// Validators of a new testnet unless `--validators` says otherwise.
pub const DEFAULT_VALIDATORS: u32 = 4;
/// First port of a new testnet unless `--base-port` says otherwise.
pub const DEFAULT_BASE_PORT: u16 = 26600;
/// Block time of a new testnet unless `--block-time` says otherwise.
pub const DEFAULT_BLOCK_TIME_MS: u64 = 200;
/// Most validators of one testnet (ports `base..base+64` and `base+100..base+164`).
pub const MAX_VALIDATORS: u32 = 64;
/// Node `i` listens for peers on `base + P2P_PORT_OFFSET + i`; more than [`MAX_VALIDATORS`],
/// so the HTTP and peer-to-peer port ranges never overlap.
pub const P2P_PORT_OFFSET: u16 = 100;
/// Deterministic development accounts prefunded in a new testnet's genesis unless
/// `--accounts` says otherwise (the same first ten as `lamina dev`).
pub const DEFAULT_ACCOUNTS: u32 = 10;
/// Accounts listed with their keys at start; the rest are in testnet.json.
const ACCOUNTS_SHOWN: usize = 10;
/// How long the nodes get to answer `/v1/status` after they are started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// `lamina testnet`: start (or resume) a local testnet, or `init` to only write its files.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TestnetArgs {
    #[command(subcommand)]
    command: Option<TestnetCommand>,
    #[command(flatten)]
    start: TestnetStartArgs,
}

#[derive(Debug, Subcommand)]
enum TestnetCommand {
    /// Write a testnet's files (one directory per node) without starting it; with --hosts,
    /// for one node per machine.
    Init(TestnetInitArgs),
}

/// `lamina testnet [flags]`
#[derive(Debug, Args)]
pub struct TestnetStartArgs {
    /// Number of validators, one node each [default: 4, or what --dir holds].
    #[arg(long)]
    pub validators: Option<u32>,
    /// Directory of the testnet; resumed if it holds one. Without it, a fresh temporary
    /// directory removed on exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Node i serves HTTP on port BASE+i and talks to peers on BASE+100+i
    /// [default: 26600, or what --dir holds].
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Milliseconds between blocks [default: 200, or what --dir holds].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub block_time: Option<u64>,
    /// Prefunded development accounts of a new testnet (load generators want many)
    /// [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub accounts: Option<u32>,
    #[command(flatten)]
    pub layers: TestnetLayerArgs,
}

/// Layer choices of a new testnet (a resumed one keeps what its configs say).
#[derive(Debug, Clone, Default, Args)]
pub struct TestnetLayerArgs {
    /// Executor of every node of a new testnet: `sequential` or `parallel` (Block-STM)
    /// [default: sequential].
    #[arg(long, value_enum)]
    pub execution: Option<ExecutionChoice>,
    /// DA scheme of a new testnet: `replicated` or `reed-solomon` [default: replicated].
    #[arg(long, value_enum)]
    pub data_availability: Option<DaChoice>,
    /// Settlement mode of a new testnet: `attested` or `optimistic` (which also turns on
    /// empty blocks, since challenge windows count blocks) [default: attested].
    #[arg(long, value_enum)]
    pub settlement: Option<SettlementChoice>,
    /// Make node NODE's execution layer report wrong state roots, to watch optimistic
    /// settlement challenge, reject and slash its claims (with --settlement optimistic).
    #[arg(long, value_name = "NODE")]
    pub faulty_executor: Option<u32>,
    /// With --data-availability reed-solomon: each node keeps heights more than BLOCKS
    /// below its executed tip only as its own rows of their extended squares, and rebuilds
    /// old bodies from its peers' rows when asked for them [default: 0, keep everything].
    #[arg(long, value_name = "BLOCKS")]
    pub retention_window: Option<u64>,
    /// How every node of a new testnet sends the blocks it proposes: `whole`, or `shares`
    /// (each validator gets only its rows and columns of the extended square and forwards
    /// them; needs --data-availability reed-solomon) [default: shares with
    /// --data-availability reed-solomon, else whole].
    #[arg(long, value_enum)]
    pub dissemination: Option<Dissemination>,
}

/// `--execution` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionChoice {
    /// One transaction after another.
    Sequential,
    /// Block-STM on every core.
    Parallel,
}

/// `--data-availability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DaChoice {
    /// The body as plain shares.
    Replicated,
    /// 2D Reed-Solomon extension, sampled by light clients.
    ReedSolomon,
}

/// `--settlement` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SettlementChoice {
    /// Validators attest state roots.
    Attested,
    /// Bonded claims with a challenge window.
    Optimistic,
}

/// `lamina testnet init`
#[derive(Debug, Args)]
pub struct TestnetInitArgs {
    /// Number of validators, one node each (1 to 64).
    #[arg(long)]
    pub validators: u32,
    /// Directory to write into (created if missing; must not hold a testnet already).
    #[arg(long)]
    pub dir: PathBuf,
    /// Comma-separated hosts of the nodes (IPv4 addresses or DNS names): exactly one per
    /// validator, or one for all. Nodes then listen on all interfaces. Without it, every
    /// node runs on 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Node i serves HTTP on port BASE+i and talks to peers on BASE+100+i.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// Milliseconds between blocks.
    #[arg(long, default_value_t = DEFAULT_BLOCK_TIME_MS,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub block_time: u64,
    /// Prefunded development accounts.
    #[arg(long, default_value_t = DEFAULT_ACCOUNTS,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub accounts: u32,
    #[command(flatten)]
    pub layers: TestnetLayerArgs,
}

/// Where a node of a multi-machine testnet runs, as its peers dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 address (`/ip4/...`).
    Ip4(Ipv4Addr),
    /// A DNS name resolved to IPv4 (`/dns4/...`).
    Dns4(String),
}

impl Host {
    /// Parses an IPv4 literal or a DNS name.
    pub fn parse(text: &str) -> Result<Host, UsageError> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<Ipv4Addr>() {
            return Ok(Host::Ip4(ip));
        }
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(UsageError(format!(
                "--hosts: {text} is an IPv6 address; nodes listen on IPv4, so give an IPv4 \
                 address or a DNS name"
            )));
        }
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if text.is_empty() || text.len() > 253 || !text.split('.').all(valid_label) {
            return Err(UsageError(format!(
                "--hosts: {text:?} is neither an IPv4 address nor a DNS name"
            )));
        }
        Ok(Host::Dns4(text.to_ascii_lowercase()))
    }

    /// The multiaddr prefix peers dial (`/ip4/10.0.0.1`, `/dns4/node1.example`).
    fn multiaddr(&self) -> String {
        match self {
            Host::Ip4(ip) => format!("/ip4/{ip}"),
            Host::Dns4(name) => format!("/dns4/{name}"),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip4(ip) => write!(f, "{ip}"),
            Host::Dns4(name) => f.write_str(name),
        }
    }
}

/// The shape of a testnet: how many nodes, where they listen, how fast blocks come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Validators (= nodes).
    pub validators: u32,
    /// Node `i` serves HTTP on `base_port + i` and peers on `base_port + 100 + i`.
    pub base_port: u16,
    /// Milliseconds between blocks.
    pub block_time_ms: u64,
    /// Each node's host (one entry per node) for a multi-machine testnet; `None`: all on
    /// 127.0.0.1.
    pub hosts: Option<Vec<Host>>,
    /// Prefunded development accounts in genesis.
    pub accounts: u32,
    /// Executor.
    pub execution: ExecutorKind,
    /// DA scheme.
    pub data_availability: DaKind,
    /// Settlement mode.
    pub settlement: SettlementKind,
    /// The node whose execution layer reports wrong roots, if any.
    pub faulty_executor: Option<u32>,
    /// `[data_availability] retention_window` of every node.
    pub retention_window: u64,
    /// `[network] dissemination` of every node (unset: the node's default).
    pub dissemination: Option<Dissemination>,
}

impl Layout {
    /// Checks the counts and the port range; `hosts` empty means every node on 127.0.0.1,
    /// one host is reused for every node.
    pub fn new(
        validators: u32,
        base_port: u16,
        block_time_ms: u64,
        hosts: &[String],
    ) -> Result<Layout, UsageError> {
        if !(1..=MAX_VALIDATORS).contains(&validators) {
            return Err(UsageError(format!(
                "--validators must be between 1 and {MAX_VALIDATORS}, got {validators}"
            )));
        }
        if base_port == 0 {
            return Err(UsageError(
                "--base-port must be at least 1 (node i uses the fixed ports BASE+i and \
                 BASE+100+i, so the OS cannot choose them)"
                    .into(),
            ));
        }
        let last = u32::from(base_port) + u32::from(P2P_PORT_OFFSET) + validators - 1;
        if last > u32::from(u16::MAX) {
            return Err(UsageError(format!(
                "--base-port {base_port} with {validators} validators needs ports up to {last} \
                 (BASE+100+validators-1); the highest port is 65535, so use a base port of at \
                 most {}",
                u32::from(u16::MAX) - u32::from(P2P_PORT_OFFSET) - (validators - 1)
            )));
        }
        let hosts = match hosts.len() {
            0 => None,
            1 => Some(vec![Host::parse(&hosts[0])?; validators as usize]),
            n if n == validators as usize => Some(
                hosts
                    .iter()
                    .map(|h| Host::parse(h))
                    .collect::<Result<_, _>>()?,
            ),
            n => {
                return Err(UsageError(format!(
                    "--hosts lists {n} hosts for {validators} validators; give exactly one host \
                     per validator, or one host for all of them"
                )))
            }
        };
        Ok(Layout {
            validators,
            base_port,
            block_time_ms,
            hosts,
            accounts: DEFAULT_ACCOUNTS,
            execution: ExecutorKind::Sequential,
            data_availability: DaKind::Replicated,
            settlement: SettlementKind::Attested,
            faulty_executor: None,
            retention_window: 0,
            dissemination: None,
        })
    }

    /// Applies the layer flags of a new testnet.
    pub fn with_layers(mut self, layers: &TestnetLayerArgs) -> Result<Layout, UsageError> {
        if let Some(node) = layers.faulty_executor {
            if node >= self.validators {
                return Err(UsageError(format!(
                    "--faulty-executor {node} names no node: nodes are numbered 0 to {}",
                    self.validators - 1
                )));
            }
        }
        self.faulty_executor = layers.faulty_executor;
        if layers.settlement == Some(SettlementChoice::Optimistic) {
            self.settlement = SettlementKind::Optimistic;
        }
        if layers.execution == Some(ExecutionChoice::Parallel) {
            self.execution = ExecutorKind::Parallel;
        }
        if layers.data_availability == Some(DaChoice::ReedSolomon) {
            self.data_availability = DaKind::ReedSolomon;
        }
        if let Some(window) = layers.retention_window.filter(|window| *window > 0) {
            if self.data_availability != DaKind::ReedSolomon {
                return Err(UsageError(
                    "--retention-window needs --data-availability reed-solomon: only erasure-coded \
                     heights can be pruned to each node's rows and rebuilt from peers"
                        .into(),
                ));
            }
            self.retention_window = window;
        }
        if let Some(dissemination) = layers.dissemination {
            if dissemination == Dissemination::Shares
                && self.data_availability != DaKind::ReedSolomon
            {
                return Err(UsageError(
                    "--dissemination shares needs --data-availability reed-solomon: only an \
                     erasure-coded block has rows and columns to send"
                        .into(),
                ));
            }
            self.dissemination = Some(dissemination);
        }
        Ok(self)
    }

    /// Node `index`'s HTTP port.
    pub fn http_port(&self, index: u32) -> u16 {
        // Cannot overflow: `new` checked the highest port.
        self.base_port + index as u16
    }

    /// Node `index`'s peer-to-peer port.
    pub fn p2p_port(&self, index: u32) -> u16 {
        self.base_port + P2P_PORT_OFFSET + index as u16
    }

    /// The address nodes bind: loopback on one machine, every interface across machines.
    fn bind_ip(&self) -> Ipv4Addr {
        if self.hosts.is_some() {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        }
    }

    fn host(&self, index: u32) -> Host {
        match &self.hosts {
            Some(hosts) => hosts
                .get(index as usize)
                .cloned()
                .unwrap_or(Host::Ip4(Ipv4Addr::LOCALHOST)),
            None => Host::Ip4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The address other nodes dial to reach node `index`.
    pub fn peer_addr(&self, index: u32, peer: &PeerId) -> String {
        format!(
            "{}/tcp/{}/p2p/{peer}",
            self.host(index).multiaddr(),
            self.p2p_port(index)
        )
    }

    /// Base URL of node `index`'s HTTP API, as clients reach it.
    pub fn http_url(&self, index: u32) -> String {
        format!("http://{}:{}", self.host(index), self.http_port(index))
    }

    /// Node `index`'s config file: validator key, HTTP and peer-to-peer addresses, every
    /// other node as a peer, the `bft` engine at the testnet's block time, everything else
    /// default. `peers[j]` is node `j`'s peer id.
    pub fn node_config(&self, index: u32, peers: &[PeerId]) -> anyhow::Result<String> {
        if peers.len() != self.validators as usize {
            bail!(
                "{} peer ids for {} validators",
                peers.len(),
                self.validators
            );
        }
        let mut config = NodeConfig::default();
        config.node.validator_key = Some(PathBuf::from("validator.key"));
        config.http.listen = SocketAddr::new(IpAddr::V4(self.bind_ip()), self.http_port(index));
        config.consensus.block_time_ms = self.block_time_ms;
        config.network.listen = Some(format!(
            "/ip4/{}/tcp/{}",
            self.bind_ip(),
            self.p2p_port(index)
        ));
        config.network.peers = peers
            .iter()
            .zip(0..)
            .filter(|(_, j)| *j != index)
            .map(|(peer, j)| self.peer_addr(j, peer))
            .collect();
        config.consensus.kind = EngineKind::Bft;
        config.execution.kind = self.execution;
        config.data_availability.kind = self.data_availability;
        config.data_availability.retention_window = self.retention_window;
        config.network.dissemination = self.dissemination;
        config.settlement.kind = self.settlement;
        if self.settlement == SettlementKind::Optimistic {
            config.consensus.create_empty_blocks = true;
        }
        config.execution.report_wrong_roots = self.faulty_executor == Some(index);
        Ok(config.to_toml())
    }
}

/// The files of node `index` of a testnet in `dir`.
fn node_dir(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("node{index}"))
}

/// The file whose presence means `dir` holds a testnet (written last by [`write_testnet`]).
fn marker(dir: &Path) -> PathBuf {
    node_dir(dir, 0).join("config.toml")
}

/// Writes a new testnet into `dir`: one genesis (chain id `lamina-testnet`, every validator
/// with power 1, the development accounts of `lamina dev`) and per node `node{i}/` with
/// config.toml, genesis.json, validator.key and node.key. Refuses a `dir` that already
/// holds a testnet.
pub fn write_testnet(dir: &Path, layout: &Layout) -> anyhow::Result<()> {
    if marker(dir).exists() {
        return Err(UsageError(format!(
            "{} already holds a testnet ({} exists); choose another --dir or remove it",
            dir.display(),
            marker(dir).display()
        ))
        .into());
    }
    let mut validators = Vec::new();
    let mut peers = Vec::new();
    for i in 0..layout.validators {
        let node = node_dir(dir, i);
        std::fs::create_dir_all(&node)
            .with_context(|| format!("cannot create {}", node.display()))?;
        let validator = Keypair::generate().context("no operating-system randomness for a key")?;
        write_secret(&node.join("validator.key"), &validator.secret_hex())?;
        validators.push(Validator {
            address: validator.address(),
            power: 1,
        });
        let network_key = crate::p2p_key::generate(&node.join("node.key"))?;
        peers.push(crate::p2p_key::peer_id(&network_key));
    }
    let genesis = dev_genesis(TESTNET_CHAIN_ID, validators, layout.accounts);
    let genesis_json = serde_json::to_string_pretty(&genesis)?;
    // Configs last, node0's very last: its presence is what marks a complete testnet.
    for i in (0..layout.validators).rev() {
        let node = node_dir(dir, i);
        let genesis_path = node.join("genesis.json");
        std::fs::write(&genesis_path, &genesis_json)
            .with_context(|| format!("cannot write {}", genesis_path.display()))?;
        let config_path = node.join("config.toml");
        std::fs::write(&config_path, layout.node_config(i, &peers)?)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
    }
    Ok(())
}

/// One node of a testnet on disk.
#[derive(Debug, Clone)]
struct StoredNode {
    name: String,
    dir: PathBuf,
    config: PathBuf,
    http_port: u16,
    http_url: String,
    p2p: Option<String>,
    validator: Option<Address>,
}

/// A testnet on disk.
#[derive(Debug, Clone)]
struct StoredTestnet {
    base_port: u16,
    block_time_ms: u64,
    nodes: Vec<StoredNode>,
    chain_id: String,
    genesis: Genesis,
}

/// Replaces an unspecified IPv4 address (a node listening on every interface) with
/// loopback, which is where this machine reaches it.
fn reachable(ip: IpAddr) -> IpAddr {
    if ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        ip
    }
}

fn read_node(dir: &Path, index: u32) -> anyhow::Result<(StoredNode, u64)> {
    let node = node_dir(dir, index);
    let config_path = node.join("config.toml");
    // The full schema: a testnet whose configs this build cannot run is refused here, with
    // the config error, rather than by every node at once.
    let config = NodeConfig::load(&config_path)?;
    let block_time_ms = config.consensus.block_time_ms;
    let http = config.http.listen;
    let http_url = format!(
        "http://{}",
        SocketAddr::new(reachable(http.ip()), http.port())
    );
    // Paths in a loaded config are resolved against its directory already.
    let validator = match &config.node.validator_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let key = Keypair::from_secret_hex(&text)
                .map_err(|e| anyhow!("{} is not a validator key: {e}", path.display()))?;
            Some(key.address())
        }
        None => None,
    };
    let p2p = match &config.network.listen {
        Some(listen) => {
            let key = crate::p2p_key::load(&config.network.key_file).context(
                "a testnet node's network key must exist: the other nodes' peers name its id",
            )?;
            let shown = listen.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/");
            Some(format!("{shown}/p2p/{}", crate::p2p_key::peer_id(&key)))
        }
        None => None,
    };
    Ok((
        StoredNode {
            name: format!("node{index}"),
            dir: node,
            config: config_path,
            http_port: http.port(),
            http_url,
            p2p,
            validator,
        },
        block_time_ms,
    ))
}

/// Reads the testnet in `dir`: nodes `node0`, `node1`, ... as long as their config exists.
fn read_testnet(dir: &Path) -> anyhow::Result<StoredTestnet> {
    let mut nodes = Vec::new();
    let mut block_time_ms = DEFAULT_BLOCK_TIME_MS;
    let mut base_port = DEFAULT_BASE_PORT;
    for index in 0..=MAX_VALIDATORS {
        if !node_dir(dir, index).join("config.toml").exists() {
            break;
        }
        let (node, block_time) = read_node(dir, index)?;
        if index == 0 {
            block_time_ms = block_time;
            base_port = node.http_port;
        }
        nodes.push(node);
    }
    let first = nodes
        .first()
        .ok_or_else(|| anyhow!("{} holds no testnet", dir.display()))?;
    let genesis = crate::node::load_genesis(&first.dir.join("genesis.json"))?;
    Ok(StoredTestnet {
        base_port,
        block_time_ms,
        chain_id: genesis.chain_id.clone(),
        genesis,
        nodes,
    })
}

/// On a resumed testnet, flags must agree with what the directory holds: the configs are
/// not rewritten, so a different value could not take effect.
fn check_resume_flags(
    dir: &Path,
    held: (u32, u16, u64),
    args: &TestnetStartArgs,
) -> Result<(), UsageError> {
    let (validators, base_port, block_time_ms) = held;
    let holds = format!(
        "{} holds a testnet of {validators} validators with base port {base_port} and block \
         time {block_time_ms} ms",
        dir.display()
    );
    let mismatch = |flag: &str, given: String, held: String| {
        UsageError(format!(
            "{holds}, but {flag} {given} was given; leave {flag} out (or pass {flag} {held}) \
             to resume it, or choose another --dir for a new testnet"
        ))
    };
    if let Some(given) = args.validators.filter(|v| *v != validators) {
        return Err(mismatch(
            "--validators",
            given.to_string(),
            validators.to_string(),
        ));
    }
    if let Some(given) = args.base_port.filter(|p| *p != base_port) {
        return Err(mismatch(
            "--base-port",
            given.to_string(),
            base_port.to_string(),
        ));
    }
    if let Some(given) = args.block_time.filter(|b| *b != block_time_ms) {
        return Err(mismatch(
            "--block-time",
            given.to_string(),
            block_time_ms.to_string(),
        ));
    }
    Ok(())
}

/// `lamina testnet ...`
pub async fn run(args: TestnetArgs, log_filter: Option<&str>) -> anyhow::Result<()> {
    match args.command {
        Some(TestnetCommand::Init(init)) => run_init(init),
        None => start(args.start, log_filter).await,
    }
}

/// `lamina testnet init`
fn run_init(args: TestnetInitArgs) -> anyhow::Result<()> {
    let mut layout = Layout::new(
        args.validators,
        args.base_port,
        args.block_time,
        &args.hosts,
    )?;
    layout.accounts = args.accounts;
    let layout = layout.with_layers(&args.layers)?;
    write_testnet(&args.dir, &layout)?;
    let testnet = read_testnet(&args.dir)?;
    // The nodes' URLs as other machines reach them, so `lamina load` works from anywhere.
    let mut file = testnet_file(&testnet);
    for (i, node) in (0..).zip(file.nodes.iter_mut()) {
        node.http = layout.http_url(i);
    }
    let file_path = args.dir.join("testnet.json");
    file.write(&file_path)?;
    out!(
        "wrote a testnet of {} validators in {} (chain id {})",
        layout.validators,
        args.dir.display(),
        testnet.chain_id
    );
    out!("wrote {} (for lamina load)", file_path.display());
    for (i, node) in (0..).zip(&testnet.nodes) {
        let p2p = peer_of(node).map_or("-".to_string(), |peer| layout.peer_addr(i, &peer));
        out!(
            "  {}  {}  HTTP {}  p2p {p2p}",
            node.name,
            node.dir.display(),
            layout.http_url(i),
        );
    }
    out!();
    if layout.hosts.is_some() {
        out!("Copy each node's directory to its host, then start it there:");
        for (i, node) in (0..).zip(&testnet.nodes) {
            out!(
                "  on {}: lamina run --config {}",
                layout.host(i),
                node.config.display()
            );
        }
        out!(
            "Open TCP ports {}-{} (HTTP) and {}-{} (peers) between the hosts.",
            layout.http_port(0),
            layout.http_port(layout.validators - 1),
            layout.p2p_port(0),
            layout.p2p_port(layout.validators - 1)
        );
    } else {
        out!("Start each node:");
        for node in &testnet.nodes {
            out!("  lamina run --config {}", node.config.display());
        }
        out!(
            "or all of them at once: lamina testnet --dir {}",
            args.dir.display()
        );
    }
    out!(
        "note: the {} prefunded accounts use publicly known development keys",
        layout.accounts
    );
    Ok(())
}

/// The peer id in a node's displayed p2p address.
fn peer_of(node: &StoredNode) -> Option<PeerId> {
    node.p2p
        .as_deref()
        .and_then(|addr| addr.rsplit("/p2p/").next())
        .and_then(|id| id.parse().ok())
}

/// A running node process.
#[derive(Debug)]
struct NodeProcess {
    node: StoredNode,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Whether the process has exited; reaps it and returns its status the first time.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Async runtime threads for each of `nodes` processes sharing this machine: an equal share
/// of the cores, at least one. With a runtime thread per core in every node, the nodes'
/// threads outnumber the cores and much of the CPU goes to waking and switching them (one
/// thread per node instead of two: about 10% more throughput for four nodes on two cores).
fn worker_threads_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / nodes.max(1)).max(1)
}

/// Starts `lamina run --config ... --worker-threads ...` for a node, its output appended to
/// its `node.log`.
fn spawn_node(
    exe: &Path,
    node: &StoredNode,
    worker_threads: usize,
    log_filter: Option<&str>,
) -> anyhow::Result<NodeProcess> {
    let log_path = node.dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg("--config")
        .arg(&node.config)
        .arg("--worker-threads")
        .arg(worker_threads.to_string());
    if let Some(filter) = log_filter {
        command.arg("--log").arg(filter);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // A process group of its own: Ctrl-C in a terminal reaches only this process, which then
    // stops every node in order (instead of each node racing to stop on its own).
    #[cfg(unix)]
    command.process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {} for {}", exe.display(), node.name))?;
    Ok(NodeProcess {
        node: node.clone(),
        log: log_path,
        child: Some(child),
    })
}

/// The last `lines` lines of a log file (reading at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn exit_report(process: &NodeProcess, status: ExitStatus) -> String {
    format!(
        "{} exited unexpectedly ({status}); the other nodes keep running; its log is {}",
        process.node.name,
        process.log.display()
    )
}

/// Sends SIGTERM to every running node, waits up to [`STOP_TIMEOUT`] for them together,
/// then kills the ones still running.
async fn stop_all(processes: &mut [NodeProcess]) {
    for process in processes.iter_mut() {
        if let Some(child) = process.child.as_mut() {
            terminate(child);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for process in processes.iter_mut() {
        let Some(mut child) = process.child.take() else {
            continue;
        };
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            out!(
                "{} did not stop within {} s; killing it",
                process.node.name,
                STOP_TIMEOUT.as_secs()
            );
            let _ = child.kill().await;
        }
    }
}

/// Asks a child to stop the way Ctrl-C would, so it flushes and exits cleanly.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.start_kill();
    }
}

/// The `/v1/status` answer of a node, or `None` if it does not answer.
async fn fetch_status(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(format!("{url}/v1/status")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Every node's status, fetched concurrently (in node order).
async fn fetch_statuses(client: &reqwest::Client, urls: &[String]) -> Vec<Option<Value>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move { (i, fetch_status(&client, &url).await) });
    }
    let mut statuses = vec![None; urls.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, status)) = joined {
            statuses[i] = status;
        }
    }
    statuses
}

/// How a start ended before the network was up.
enum Startup {
    Ready,
    Stopped,
}

/// Waits until every node answers `/v1/status`; fails if one exits or the deadline passes.
async fn wait_until_serving(
    client: &reqwest::Client,
    processes: &mut [NodeProcess],
    stop: &mut tokio::task::JoinHandle<()>,
) -> anyhow::Result<Startup> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut ready = vec![false; processes.len()];
    loop {
        for process in processes.iter_mut() {
            if let Some(status) = process.exited() {
                bail!(
                    "{} exited while starting ({status}); last lines of {}:\n{}",
                    process.node.name,
                    process.log.display(),
                    log_tail(&process.log, LOG_TAIL_LINES)
                );
            }
        }
        for (process, ready) in processes.iter().zip(ready.iter_mut()) {
            if !*ready {
                *ready = fetch_status(client, &process.node.http_url).await.is_some();
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(Startup::Ready);
        }
        if Instant::now() >= deadline {
            let waiting: Vec<String> = processes
                .iter()
                .zip(&ready)
                .filter(|(_, ready)| !**ready)
                .map(|(p, _)| format!("{} ({})", p.node.name, p.log.display()))
                .collect();
            bail!(
                "no answer on /v1/status within {} s from {}; see the logs",
                START_TIMEOUT.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::select! {
            _ = &mut *stop => return Ok(Startup::Stopped),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// `lamina testnet` (start or resume).
async fn start(args: TestnetStartArgs, log_filter: Option<&str>) -> anyhow::Result<()> {
    // Listen for Ctrl-C and SIGTERM before any node exists, so no signal can end this
    // process while its nodes keep running.
    let mut stop = tokio::spawn(super::stop_signal());
    tokio::task::yield_now().await;

    // Without --dir the testnet lives in a temporary directory removed on exit (after the
    // nodes have stopped: `temp` is dropped last).
    let (dir, temp) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("lamina-testnet-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let resumed = marker(&dir).exists();
    if resumed {
        let held = read_testnet(&dir)?;
        check_resume_flags(
            &dir,
            (held.nodes.len() as u32, held.base_port, held.block_time_ms),
            &args,
        )?;
        let funded = held.genesis.accounts.len();
        if let Some(given) = args.accounts.filter(|a| *a as usize != funded) {
            return Err(UsageError(format!(
                "{} holds a testnet whose genesis funds {funded} accounts, but --accounts \
                 {given} was given; genesis cannot change, so leave --accounts out to resume it",
                dir.display()
            ))
            .into());
        }
        let layers = &args.layers;
        if layers.execution.is_some()
            || layers.data_availability.is_some()
            || layers.settlement.is_some()
            || layers.faulty_executor.is_some()
            || layers.retention_window.is_some()
            || layers.dissemination.is_some()
        {
            return Err(UsageError(format!(
                "{} holds a testnet already; --execution, --data-availability, --settlement, \
                 --faulty-executor, --retention-window and --dissemination only shape a new one \
                 (edit the node configs in it to change them)",
                dir.display()
            ))
            .into());
        }
    } else {
        let mut layout = Layout::new(
            args.validators.unwrap_or(DEFAULT_VALIDATORS),
            args.base_port.unwrap_or(DEFAULT_BASE_PORT),
            args.block_time.unwrap_or(DEFAULT_BLOCK_TIME_MS),
            &[],
        )?;
        layout.accounts = args.accounts.unwrap_or(DEFAULT_ACCOUNTS);
        let layout = layout.with_layers(&args.layers)?;
        write_testnet(&dir, &layout)?;
    }
    let testnet = read_testnet(&dir)?;

    let exe = std::env::current_exe().context("cannot find the lamina executable")?;
    let worker_threads = worker_threads_per_node(testnet.nodes.len());
    let mut processes = Vec::new();
    for node in &testnet.nodes {
        match spawn_node(&exe, node, worker_threads, log_filter) {
            Ok(process) => processes.push(process),
            Err(err) => {
                stop_all(&mut processes).await;
                return Err(err);
            }
        }
    }
    out!(
        "starting {} nodes in {} ...",
        processes.len(),
        dir.display()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(900))
        .build()?;
    match wait_until_serving(&client, &mut processes, &mut stop).await {
        Ok(Startup::Ready) => {}
        Ok(Startup::Stopped) => {
            out!("stopping...");
            stop_all(&mut processes).await;
            out!("stopped");
            return Ok(());
        }
        Err(err) => {
            stop_all(&mut processes).await;
            return Err(err);
        }
    }

    let file = testnet_file(&testnet);
    print_summary(&dir, &testnet, &file, resumed, temp.is_some());
    let file_path = dir.join("testnet.json");
    if let Err(err) = file.write(&file_path) {
        stop_all(&mut processes).await;
        return Err(err);
    }

    let outcome = supervise(&client, &mut processes, &mut stop).await;
    if std::io::stdout().is_terminal() {
        out!();
    }
    let running = processes.iter().filter(|p| p.running()).count();
    out!("stopping {running} nodes...");
    stop_all(&mut processes).await;
    match outcome {
        Ok(()) => {
            out!("stopped; every committed block is on disk");
            if temp.is_some() {
                out!("removing the temporary directory {}", dir.display());
            }
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// The testnet.json of a started testnet.
fn testnet_file(testnet: &StoredTestnet) -> TestnetFile {
    TestnetFile {
        chain_id: testnet.chain_id.clone(),
        nodes: testnet
            .nodes
            .iter()
            .map(|node| TestnetNode {
                name: node.name.clone(),
                http: node.http_url.clone(),
                validator: node.validator,
                p2p: node.p2p.clone(),
            })
            .collect(),
        accounts: dev_accounts_of(&testnet.genesis),
    }
}

fn print_summary(
    dir: &Path,
    testnet: &StoredTestnet,
    file: &TestnetFile,
    resumed: bool,
    temporary: bool,
) {
    out!(
        "Lamina testnet {}",
        if resumed { "(resumed)" } else { "(new)" }
    );
    out!("  chain id      {}", testnet.chain_id);
    if temporary {
        out!(
            "  directory     {} (temporary: removed on exit; pass --dir to keep a testnet)",
            dir.display()
        );
    } else {
        out!("  directory     {}", dir.display());
    }
    out!("  testnet file  {}", dir.join("testnet.json").display());
    out!("  block time    {} ms", testnet.block_time_ms);
    out!();
    let http_width = file
        .nodes
        .iter()
        .map(|n| n.http.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let p2p_width = file
        .nodes
        .iter()
        .map(|n| n.p2p.as_deref().map_or(1, str::len))
        .max()
        .unwrap_or(0)
        .max(3);
    out!(
        "  {:<7} {:<http_width$}  {:<p2p_width$}  VALIDATOR",
        "NODE",
        "HTTP",
        "P2P"
    );
    for node in &file.nodes {
        out!(
            "  {:<7} {:<http_width$}  {:<p2p_width$}  {}",
            node.name,
            node.http,
            node.p2p.as_deref().unwrap_or("-"),
            node.validator.map_or("-".to_string(), |v| v.to_string())
        );
    }
    out!();
    out!(
        "Prefunded accounts (genesis balance {} each):",
        file.accounts.first().map_or(0, |a| a.balance)
    );
    for (i, account) in file.accounts.iter().take(ACCOUNTS_SHOWN).enumerate() {
        out!("  ({i}) {}", account.address);
        out!("      secret key {}", account.secret_key);
    }
    if file.accounts.len() > ACCOUNTS_SHOWN {
        out!(
            "  ... and {} more, with their keys, in testnet.json",
            file.accounts.len() - ACCOUNTS_SHOWN
        );
    }
    out!();
    out!("Logs: {}", dir.join("node*/node.log").display());
    if temporary {
        out!("Ctrl-C to stop; the chain is deleted on exit.");
    } else {
        out!(
            "Ctrl-C to stop; `lamina testnet --dir {}` resumes this chain.",
            dir.display()
        );
    }
}

/// Transactions committed per second, counted from the blocks of one live node.
#[derive(Debug, Default)]
struct TxRate {
    /// The node followed, its height and when it was read.
    last: Option<(usize, u64, Instant)>,
}

/// Most blocks fetched per status refresh; a larger jump is counted over its last blocks.
const MAX_BLOCKS_PER_REFRESH: u64 = 200;

impl TxRate {
    /// Updates from the latest statuses; `None` until a rate can be computed.
    async fn update(
        &mut self,
        client: &reqwest::Client,
        urls: &[String],
        statuses: &[Option<Value>],
    ) -> Option<f64> {
        let height_of = |i: usize| {
            statuses
                .get(i)?
                .as_ref()?
                .get("height")
                .and_then(Value::as_u64)
        };
        let followed = self
            .last
            .filter(|(i, _, _)| height_of(*i).is_some())
            .map(|(i, _, _)| i)
            .or_else(|| (0..statuses.len()).find(|i| height_of(*i).is_some()))?;
        let height = height_of(followed)?;
        let now = Instant::now();
        let previous = self.last.filter(|(i, _, _)| *i == followed);
        self.last = Some((followed, height, now));
        let (_, from, at) = previous?;
        let first = (from + 1).max(height.saturating_sub(MAX_BLOCKS_PER_REFRESH) + 1);
        let mut transactions = 0u64;
        for h in first..=height {
            let url = format!("{}/v1/blocks/{h}", urls[followed]);
            let block: Value = client.get(url).send().await.ok()?.json().await.ok()?;
            transactions += block
                .get("transactions")
                .and_then(Value::as_array)
                .map_or(0, |t| t.len() as u64);
        }
        Some(transactions as f64 / now.duration_since(at).as_secs_f64().max(1e-3))
    }
}

/// The status line: each node's height (or `down`), the settled height, peers if the nodes
/// report them, and the transaction rate.
fn status_line(statuses: &[Option<Value>], rate: Option<f64>) -> String {
    let heights: Vec<String> = statuses
        .iter()
        .map(|s| {
            s.as_ref()
                .and_then(|s| s.get("height"))
                .and_then(Value::as_u64)
                .map_or("down".to_string(), |h| h.to_string())
        })
        .collect();
    let settled = statuses
        .iter()
        .flatten()
        .filter_map(|s| s.get("settled_height").and_then(Value::as_u64))
        .max();
    let peers: Vec<Option<u64>> = statuses
        .iter()
        .map(|s| {
            let peers = s.as_ref()?.get("network")?.get("peers")?;
            peers
                .as_u64()
                .or_else(|| peers.as_array().map(|a| a.len() as u64))
        })
        .collect();
    let mut line = format!("heights {}", heights.join(" "));
    line.push_str(&format!(
        " | settled {}",
        settled.map_or("-".to_string(), |s| s.to_string())
    ));
    if peers.iter().any(Option::is_some) {
        let peers: Vec<String> = peers
            .iter()
            .map(|p| p.map_or("-".to_string(), |p| p.to_string()))
            .collect();
        line.push_str(&format!(" | peers {}", peers.join(" ")));
    }
    match rate {
        Some(rate) => line.push_str(&format!(" | {rate:.1} tx/s")),
        None => line.push_str(" | - tx/s"),
    }
    line
}

/// Reports exits and the status line until a stop signal; fails only when every node has
/// exited (nothing is left to supervise).
async fn supervise(
    client: &reqwest::Client,
    processes: &mut [NodeProcess],
    stop: &mut tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    let status = StatusLine::stdout();
    let print_every = status.period();
    let urls: Vec<String> = processes.iter().map(|p| p.node.http_url.clone()).collect();
    let mut rate = TxRate::default();
    let _ = rate
        .update(client, &urls, &fetch_statuses(client, &urls).await)
        .await;
    let mut last_print = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(()),
            _ = ticker.tick() => {}
        }
        for process in processes.iter_mut() {
            if let Some(exit) = process.exited() {
                status.announce(&exit_report(process, exit));
            }
        }
        if !processes.iter().any(NodeProcess::running) {
            bail!("every node has exited; see their logs in the node directories");
        }
        if last_print.elapsed() + Duration::from_millis(100) < print_every {
            continue;
        }
        last_print = Instant::now();
        let statuses = fetch_statuses(client, &urls).await;
        let tx_rate = rate.update(client, &urls, &statuses).await;
        status.show(&status_line(&statuses, tx_rate));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn parse(text: &str) -> NodeConfig {
        NodeConfig::parse(text, Path::new("config.toml")).unwrap()
    }

    #[test]
    fn layer_flags_shape_every_config_and_the_faulty_node_only() {
        let flags = TestnetLayerArgs {
            execution: Some(ExecutionChoice::Parallel),
            data_availability: Some(DaChoice::ReedSolomon),
            settlement: Some(SettlementChoice::Optimistic),
            faulty_executor: Some(2),
            retention_window: Some(16),
            dissemination: Some(Dissemination::Shares),
        };
        let layout = Layout::new(4, 26600, 200, &[])
            .unwrap()
            .with_layers(&flags)
            .unwrap();
        let ids = peers(4);
        for i in 0..4u32 {
            let config = parse(&layout.node_config(i, &ids).unwrap());
            assert_eq!(config.settlement.kind, SettlementKind::Optimistic);
            assert_eq!(config.execution.kind, ExecutorKind::Parallel);
            assert_eq!(config.data_availability.kind, DaKind::ReedSolomon);
            assert!(config.consensus.create_empty_blocks);
            assert_eq!(config.execution.report_wrong_roots, i == 2);
            assert_eq!(config.data_availability.retention_window, 16);
            assert_eq!(config.network.dissemination, Some(Dissemination::Shares));
        }
        let beyond = TestnetLayerArgs {
            faulty_executor: Some(4),
            ..flags.clone()
        };
        let error = Layout::new(4, 26600, 200, &[])
            .unwrap()
            .with_layers(&beyond)
            .unwrap_err();
        assert!(error.0.contains("nodes are numbered 0 to 3"), "{}", error.0);
        let replicated = TestnetLayerArgs {
            data_availability: None,
            faulty_executor: None,
            ..flags
        };
        let error = Layout::new(4, 26600, 200, &[])
            .unwrap()
            .with_layers(&replicated)
            .unwrap_err();
        assert!(
            error.0.contains("needs --data-availability reed-solomon"),
            "{}",
            error.0
        );
    }

    #[test]
    fn local_configs_listen_on_their_ports_and_name_every_other_node() {
        let layout = Layout::new(4, 26600, 200, &[]).unwrap();
        let ids = peers(4);
        for i in 0..4u32 {
            let text = layout.node_config(i, &ids).unwrap();
            let table: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(table["consensus"]["kind"].as_str(), Some("bft"), "{text}");
            assert_eq!(table["consensus"]["block_time_ms"].as_integer(), Some(200));
            let config = parse(&text);
            assert_eq!(
                config.http.listen,
                SocketAddr::from(([127, 0, 0, 1], 26600 + i as u16))
            );
            assert_eq!(
                config.network.listen.as_deref(),
                Some(format!("/ip4/127.0.0.1/tcp/{}", 26700 + i).as_str())
            );
            assert_eq!(
                config.node.validator_key,
                Some(PathBuf::from("validator.key"))
            );
            assert_eq!(config.network.key_file, PathBuf::from("node.key"));
            let expected: Vec<String> = (0..4u32)
                .filter(|j| *j != i)
                .map(|j| format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", 26700 + j, ids[j as usize]))
                .collect();
            assert_eq!(config.network.peers, expected);
            assert_eq!(config.network.peer_addrs().unwrap().len(), 3);
            // Everything else is the default.
            let default = NodeConfig::default();
            assert_eq!(config.execution, default.execution);
            assert_eq!(config.settlement, default.settlement);
            assert_eq!(config.data_availability, default.data_availability);
            assert_eq!(
                config.consensus.max_block_bytes,
                default.consensus.max_block_bytes
            );
        }
        assert!(layout.node_config(0, &ids[..3]).is_err());
    }

    #[test]
    fn hosts_make_nodes_listen_everywhere_and_dial_each_other_by_host() {
        let hosts = vec![
            "10.0.0.1".to_string(),
            "node-b.example.org".to_string(),
            "10.0.0.3".to_string(),
        ];
        let layout = Layout::new(3, 30000, 500, &hosts).unwrap();
        let ids = peers(3);
        let config = parse(&layout.node_config(1, &ids).unwrap());
        assert_eq!(config.http.listen, SocketAddr::from(([0, 0, 0, 0], 30001)));
        assert_eq!(
            config.network.listen.as_deref(),
            Some("/ip4/0.0.0.0/tcp/30101")
        );
        assert_eq!(
            config.network.peers,
            vec![
                format!("/ip4/10.0.0.1/tcp/30100/p2p/{}", ids[0]),
                format!("/ip4/10.0.0.3/tcp/30102/p2p/{}", ids[2]),
            ]
        );
        assert_eq!(layout.http_url(1), "http://node-b.example.org:30001");
        let config = parse(&layout.node_config(0, &ids).unwrap());
        assert_eq!(
            config.network.peers[0],
            format!("/dns4/node-b.example.org/tcp/30101/p2p/{}", ids[1])
        );
        assert_eq!(config.network.peer_addrs().unwrap().len(), 2);

        // One host for every node: same address, distinct ports.
        let layout = Layout::new(3, 30000, 500, &["192.168.1.5".to_string()]).unwrap();
        let config = parse(&layout.node_config(2, &ids).unwrap());
        assert_eq!(
            config.network.peers,
            vec![
                format!("/ip4/192.168.1.5/tcp/30100/p2p/{}", ids[0]),
                format!("/ip4/192.168.1.5/tcp/30101/p2p/{}", ids[1]),
            ]
        );
    }

    #[test]
    fn bad_layouts_are_usage_errors() {
        let err = |v, p, hosts: &[&str]| {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            Layout::new(v, p, 200, &hosts).unwrap_err().0
        };
        assert!(err(0, 26600, &[]).contains("between 1 and 64"));
        assert!(err(65, 26600, &[]).contains("between 1 and 64"));
        assert!(err(4, 0, &[]).contains("--base-port"));
        let message = err(4, 65433, &[]);
        assert!(
            message.contains("65536") && message.contains("65432"),
            "{message}"
        );
        assert!(Layout::new(4, 65432, 200, &[]).is_ok());
        assert!(Layout::new(64, 65372, 200, &[]).is_ok());
        assert!(err(3, 26600, &["a", "b"]).contains("2 hosts for 3 validators"));
        assert!(err(2, 26600, &["bad host", "b"]).contains("neither"));
        assert!(err(1, 26600, &["::1"]).contains("IPv6"));
        assert!(err(1, 26600, &["-x.example"]).contains("neither"));
        assert_eq!(
            Host::parse("Node1.Example").unwrap(),
            Host::Dns4("node1.example".into())
        );
    }

    #[test]
    fn written_testnet_is_read_back_and_refuses_a_second_write() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(3, 41000, 150, &[]).unwrap();
        write_testnet(dir.path(), &layout).unwrap();
        let testnet = read_testnet(dir.path()).unwrap();
        assert_eq!(testnet.nodes.len(), 3);
        assert_eq!(testnet.base_port, 41000);
        assert_eq!(testnet.block_time_ms, 150);
        assert_eq!(testnet.chain_id, TESTNET_CHAIN_ID);
        assert_eq!(testnet.genesis.validators.len(), 3);
        assert!(testnet.genesis.validators.iter().all(|v| v.power == 1));
        assert_eq!(testnet.genesis.fee_per_transaction, 1);
        // The same prefunded accounts as `lamina dev`.
        let dev = super::super::init::dev_accounts(10);
        assert_eq!(testnet.genesis.accounts.len(), 10);
        for (g, d) in testnet.genesis.accounts.iter().zip(&dev) {
            assert_eq!((g.address, g.balance), (d.address, d.balance));
        }
        for (i, node) in testnet.nodes.iter().enumerate() {
            assert_eq!(node.http_url, format!("http://127.0.0.1:{}", 41000 + i));
            assert_eq!(
                node.validator,
                Some(testnet.genesis.validators[i].address),
                "node{i}'s key is validator {i} of the genesis"
            );
            let peer = peer_of(node).unwrap();
            assert!(node
                .p2p
                .as_deref()
                .unwrap()
                .starts_with(&format!("/ip4/127.0.0.1/tcp/{}/p2p/", 41100 + i)));
            // Every other node lists this node under its peer id.
            for other in 0..3u32 {
                let text = std::fs::read_to_string(node_dir(dir.path(), other).join("config.toml"))
                    .unwrap();
                let config = parse(&text);
                let listed = config
                    .network
                    .peers
                    .iter()
                    .any(|p| p.ends_with(&peer.to_string()));
                assert_eq!(listed, other as usize != i, "node{other} peers of node{i}");
            }
            for file in ["config.toml", "genesis.json", "validator.key", "node.key"] {
                assert!(node.dir.join(file).exists(), "{file}");
            }
        }
        let file = testnet_file(&testnet);
        assert_eq!(file.nodes.len(), 3);
        assert_eq!(file.accounts, dev);
        assert!(file.nodes.iter().all(|n| n.p2p.is_some()));

        let err = write_testnet(dir.path(), &layout).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err.to_string().contains("already holds a testnet"), "{err}");
    }

    #[test]
    fn resume_flags_must_match_what_the_directory_holds() {
        let args = |validators, base_port, block_time| TestnetStartArgs {
            validators,
            dir: None,
            base_port,
            block_time,
            accounts: None,
            layers: TestnetLayerArgs::default(),
        };
        let dir = Path::new("/tmp/t");
        let held = (4, 26600, 200);
        assert!(check_resume_flags(dir, held, &args(None, None, None)).is_ok());
        assert!(check_resume_flags(dir, held, &args(Some(4), Some(26600), Some(200))).is_ok());
        let message = check_resume_flags(dir, held, &args(Some(5), None, None))
            .unwrap_err()
            .0;
        assert!(
            message.contains("holds a testnet of 4 validators")
                && message.contains("--validators 5"),
            "{message}"
        );
        let message = check_resume_flags(dir, held, &args(None, Some(1000), None))
            .unwrap_err()
            .0;
        assert!(message.contains("base port 26600") && message.contains("--base-port 1000"));
        let message = check_resume_flags(dir, held, &args(None, None, Some(1)))
            .unwrap_err()
            .0;
        assert!(message.contains("--block-time 1"), "{message}");
    }

    #[test]
    fn status_line_shows_heights_down_nodes_peers_and_rate() {
        let up =
            |h: u64, settled: u64| serde_json::json!({ "height": h, "settled_height": settled });
        let line = status_line(&[Some(up(12, 10)), None, Some(up(11, 9))], Some(42.26));
        assert_eq!(line, "heights 12 down 11 | settled 10 | 42.3 tx/s");
        let with_peers = serde_json::json!({
            "height": 3, "settled_height": 1, "network": { "peers": 2 }
        });
        let line = status_line(&[Some(with_peers), Some(up(3, 1))], None);
        assert_eq!(line, "heights 3 3 | settled 1 | peers 2 - | - tx/s");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 98\nline 99");
        assert!(log_tail(&dir.path().join("none"), 2).contains("cannot read"));
    }
}
