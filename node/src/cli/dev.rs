//! `lamina dev`: a single-node chain in one command, resumable from its directory.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::Context;

use super::init::{init_node_dir, single_node_testnet_file, InitOptions, NodeDir};
use super::run::serve_until_stopped;
use super::DevArgs;
use crate::config::NodeConfig;
use crate::node::{load_genesis, RunningNode};

/// Where a new dev chain listens unless `--http` says otherwise.
const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8545));
/// Block time of a new dev chain unless `--block-time` says otherwise.
const DEFAULT_BLOCK_TIME_MS: u64 = 1000;

/// `lamina dev`
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // Without --dir the chain lives in a temporary directory removed on exit.
    let (dir, _temp) = match args.dir {
        Some(dir) => (dir, None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("lamina-dev-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let node_dir = NodeDir { dir: dir.clone() };
    let resumed = node_dir.config().exists();
    if !resumed {
        let options = InitOptions {
            chain_id: "lamina-dev".into(),
            accounts: 10,
            http: args.http.unwrap_or(DEFAULT_HTTP),
            block_time_ms: args.block_time.unwrap_or(DEFAULT_BLOCK_TIME_MS),
        };
        init_node_dir(&dir, &options)?;
    }
    let mut config = NodeConfig::load(&node_dir.config())?;
    // Flags given on a resumed chain win over its stored config, for this run only.
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    if let Some(block_time) = args.block_time {
        config.consensus.block_time_ms = block_time;
    }
    let genesis = load_genesis(&config.node.genesis)?;
    let node = RunningNode::start(config).await?;
    let validator = node.context.consensus.status().await?.validator;
    let testnet = single_node_testnet_file(&genesis, node.http_addr, validator);
    testnet.write(&node_dir.testnet_file())?;

    let height = node.context.consensus.status().await?.committed_height;
    out!(
        "Lamina dev chain {}",
        if resumed { "(resumed)" } else { "(new)" }
    );
    out!("  chain id      {}", genesis.chain_id);
    out!("  HTTP API      http://{}", node.http_addr);
    out!("  directory     {}", dir.display());
    out!("  testnet file  {}", node_dir.testnet_file().display());
    out!("  height        {height}");
    out!();
    out!(
        "Prefunded accounts (genesis balance {} each):",
        testnet.accounts.first().map_or(0, |a| a.balance)
    );
    for (i, account) in testnet.accounts.iter().enumerate() {
        out!("  ({i}) {}", account.address);
        out!("      secret key {}", account.secret_key);
    }
    out!();
    out!(
        "Ctrl-C to stop; `lamina dev --dir {}` resumes this chain.",
        dir.display()
    );
    serve_until_stopped(node).await
}
