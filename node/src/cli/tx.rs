//! `lamina tx transfer`: sign a transfer, submit it, wait for inclusion, print the receipt.

use std::time::Duration;

use clap::Args;
use lamina_primitives::{Address, Keypair, Transaction};

use super::{NodeClient, UsageError};

/// `lamina tx transfer`
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Base URL of a node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// The sender's secret key (64 hex characters); prefer the LAMINA_KEY environment
    /// variable, which stays out of the process list and shell history.
    #[arg(long, env = "LAMINA_KEY", hide_env_values = true)]
    pub key: String,
    /// Recipient address (64 hex characters).
    #[arg(long)]
    pub to: String,
    /// Amount to send (the fee is charged on top).
    #[arg(long)]
    pub amount: u64,
    /// Nonce to use; default: the account's next nonce as the node sees it.
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Seconds to wait for inclusion.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// `lamina tx transfer`
pub async fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    let key = Keypair::from_secret_hex(&args.key)
        .map_err(|e| UsageError(format!("--key must be a 64-hex-character secret key: {e}")))?;
    let to: Address = args
        .to
        .parse()
        .map_err(|e| UsageError(format!("--to must be a 64-hex-character address: {e}")))?;
    let client = NodeClient::new(&args.node)?;
    let chain_id = client.chain_id().await?;
    let nonce = match args.nonce {
        Some(nonce) => nonce,
        None => client.nonce(&key.address()).await?,
    };
    let transaction = Transaction::transfer(&chain_id, &key, nonce, to, args.amount);
    let hash = client.submit(&transaction).await?;
    eprintln!("submitted {hash}; waiting for inclusion...");
    let answer = client
        .wait_included(&hash, Duration::from_secs(args.timeout))
        .await?;
    out!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
