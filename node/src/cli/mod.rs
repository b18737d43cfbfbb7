//! The `lamina` command line: `dev`, `testnet`, `init`, `run`, `keys`, `tx`, `query`, `load`,
//! `da` and `bench`.

/// `println!` that ignores a closed stdout (`lamina ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bridge;
mod client;
mod config_check;
mod da;
mod dev;
mod init;
mod load;
mod query;
mod run;
mod testnet;
mod tx;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use client::NodeClient;
pub(crate) use init::write_secret;
pub use init::{init_node_dir, InitOptions, NodeDir};

/// An argument a user must fix; the process exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Lamina: a modular blockchain node.
#[derive(Debug, Parser)]
#[command(name = "lamina", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `info`, `lamina_node=debug`); default `$RUST_LOG` or `info`.
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The async runtime's worker threads the command asks for (`run --worker-threads`);
    /// `None`: the runtime's default, one per core.
    pub fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Run { worker_threads, .. } => worker_threads.map(usize::from),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a single-node development chain with 10 prefunded accounts.
    Dev(DevArgs),
    /// Start (or resume) a local multi-validator testnet; `testnet init` only writes its files.
    ///
    /// Every node runs the `bft` engine and talks to the others over libp2p. `testnet init`
    /// writes the files for one machine or, with --hosts, for one node per machine.
    Testnet(testnet::TestnetArgs),
    /// Write a node directory: config.toml, genesis.json, validator.key.
    Init(InitArgs),
    /// Run a node from a config file.
    Run {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Threads of the node's async runtime (networking, HTTP, consensus); default: one
        /// per core. Nodes sharing a machine run better with their share of the cores.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        worker_threads: Option<u16>,
    },
    /// Key management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Build, sign and submit transactions.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Read chain state from a node.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Send signed transfers to a testnet at a steady rate; report throughput and latency.
    Load(load::LoadArgs),
    /// Data availability: light-client sampling.
    #[command(subcommand)]
    Da(DaCommand),
    /// Node configs.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The bridge of optimistic settlement: deposit, withdraw, finalize a withdrawal.
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file and the files it names (genesis, validator key), and print
    /// the resolved settings of every layer; exit code 2 with what to fix otherwise.
    Check(config_check::CheckArgs),
}

#[derive(Debug, Subcommand)]
enum DaCommand {
    /// Sample random cells of a block's extended square from a node, verify each against
    /// the header's data_root, and print the confidence that the block is available.
    Sample(da::SampleArgs),
    /// Gather verified shares of a block from several nodes until its extended square is
    /// recoverable, decode it, check every row and column root, and print the body.
    Rebuild(da::RebuildArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Block-STM workloads W1–W4: a sequential loop against the parallel executor.
    Execution {
        /// Threads of the parallel executor [default: the available cores].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
        threads: Option<u64>,
        /// Timed runs per measurement; the median is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
        runs: u64,
        /// Only blocks of 1,000 transactions.
        #[arg(long)]
        quick: bool,
        /// One JSON object per row instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// 2D Reed-Solomon: extend and commit, verify a sample, rebuild, for both codecs.
    Da {
        /// Sizes of original data in MiB, comma-separated (1 MiB pads to a 64-wide square).
        #[arg(long, value_delimiter = ',', default_values_t = [1u64, 8, 32, 128],
              value_parser = clap::value_parser!(u64).range(1..=128))]
        sizes: Vec<u64>,
        /// Threads for extension and rebuilding [default: the available cores].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
        threads: Option<u64>,
        /// Timed runs per measurement; the median is reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// One JSON object per row instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// `lamina dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory of the chain; reused if it exists (resume), a fresh temporary one if absent.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8545, or the chain's stored setting].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Milliseconds between blocks [default: 1000, or the chain's stored setting].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub block_time: Option<u64>,
}

/// `lamina init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write into (created if missing; must not hold a config already).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Chain id (a-z, 0-9, '-').
    #[arg(long, default_value = "lamina-local")]
    pub chain_id: String,
    /// Number of deterministic prefunded accounts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub accounts: u32,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8545")]
    pub http: SocketAddr,
    /// Milliseconds between blocks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub block_time: u64,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new ed25519 key; prints the address and the secret key.
    Generate {
        /// Also write the secret key to this file (readable only by you).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Transfer funds; waits for inclusion and prints the receipt.
    Transfer(tx::TransferArgs),
}

#[derive(Debug, Subcommand)]
enum QueryCommand {
    /// An account's balance and nonce, with its Merkle proof verified locally.
    Account(query::AccountArgs),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Testnet(args) => testnet::run(args, cli.log.as_deref()).await,
        Command::Init(args) => init::run(args),
        Command::Run { config, .. } => run::run(&config).await,
        Command::Keys(KeysCommand::Generate { out, json }) => init::generate_key(out, json),
        Command::Tx(TxCommand::Transfer(args)) => tx::transfer(args).await,
        Command::Query(QueryCommand::Account(args)) => query::account(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Da(DaCommand::Sample(args)) => da::sample_command(args).await,
        Command::Da(DaCommand::Rebuild(args)) => da::rebuild_command(args).await,
        Command::Bridge(command) => bridge::run(command).await,
        Command::Config(ConfigCommand::Check(args)) => config_check::check(args),
        Command::Bench(BenchCommand::Da {
            sizes,
            threads,
            runs,
            json,
        }) => bench_da(sizes, threads, runs, json).await,
        Command::Bench(BenchCommand::Execution {
            threads,
            runs,
            quick,
            json,
        }) => bench_execution(threads, runs, quick, json).await,
    }
}

async fn bench_execution(
    threads: Option<u64>,
    runs: u64,
    quick: bool,
    json: bool,
) -> anyhow::Result<()> {
    let threads = match threads {
        Some(threads) => threads as usize,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let options = crate::bench::BenchOptions {
        threads,
        runs: runs as usize,
        quick,
    };
    // CPU-bound for a long time: keep it off the async runtime's workers.
    let rows = tokio::task::spawn_blocking(move || crate::bench::run(&options)).await??;
    if json {
        for row in &rows {
            out!("{}", serde_json::to_string(row)?);
        }
    } else {
        out!("{}", crate::bench::render(&rows).trim_end());
    }
    Ok(())
}

async fn bench_da(
    sizes: Vec<u64>,
    threads: Option<u64>,
    runs: u64,
    json: bool,
) -> anyhow::Result<()> {
    let options = lamina_da::bench::DaBenchOptions {
        sizes_mib: sizes,
        threads: match threads {
            Some(threads) => threads as usize,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        },
        runs: runs as usize,
    };
    // CPU-bound for a long time: keep it off the async runtime's workers.
    let rows = tokio::task::spawn_blocking(move || lamina_da::bench::run(&options)).await??;
    if json {
        for row in &rows {
            out!("{}", serde_json::to_string(row)?);
        }
    } else {
        out!("{}", lamina_da::bench::render(&rows).trim_end());
    }
    Ok(())
}

/// Where a long-running command shows its live status: on a terminal, one line rewritten in
/// place every second; in logs and pipes, a plain line every 10 s so they stay readable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusLine {
    terminal: bool,
}

impl StatusLine {
    /// For this process's stdout.
    pub(crate) fn stdout() -> Self {
        use std::io::IsTerminal;
        StatusLine {
            terminal: std::io::stdout().is_terminal(),
        }
    }

    /// How often to refresh the line.
    pub(crate) fn period(self) -> std::time::Duration {
        std::time::Duration::from_secs(if self.terminal { 1 } else { 10 })
    }

    /// Shows `line` as the current status.
    pub(crate) fn show(self, line: &str) {
        self.write(line, false);
    }

    /// Prints `message` as a line of its own, above the status line.
    pub(crate) fn announce(self, message: &str) {
        self.write(message, true);
    }

    fn write(self, text: &str, keep: bool) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        // Errors mean stdout is gone (`| head`); the command goes on regardless.
        let _ = match (self.terminal, keep) {
            (true, false) => write!(out, "\r\x1b[2K{text}"),
            (true, true) => writeln!(out, "\r\x1b[2K{text}"),
            (false, _) => writeln!(out, "{text}"),
        };
        let _ = out.flush();
    }
}

/// Logs go to stderr so stdout stays for the command's own output.
pub fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
