//! `lamina bridge`: move value between the settlement ledger and execution accounts of a
//! chain running `optimistic` settlement: deposit, withdraw, and finalize a withdrawal once
//! its batch is final.

use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use lamina_primitives::bridge::{Deposit, DepositData};
use lamina_primitives::interfaces::settlement::SettlementMessage;
use lamina_primitives::{Address, Keypair, Transaction};
use serde_json::Value;

use super::{NodeClient, UsageError};

/// `lamina bridge ...`
#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Move value from your settlement-ledger account to an execution account; it is
    /// credited when the next block this node proposes is executed.
    Deposit(MoveArgs),
    /// Burn value from your execution account for your (or another) settlement-ledger
    /// account; prints the withdrawal id to finalize once its batch is final.
    Withdraw(MoveArgs),
    /// Credit a withdrawal on the settlement ledger: fetches its proof against the output
    /// root of the finalized batch that covers it and submits the finalization.
    Finalize(FinalizeArgs),
}

/// `lamina bridge deposit|withdraw`
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Base URL of a node's HTTP API (messages are gossiped to every validator).
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// Your secret key (64 hex characters); prefer the LAMINA_KEY environment variable.
    #[arg(long, env = "LAMINA_KEY", hide_env_values = true)]
    pub key: String,
    /// Amount to move.
    #[arg(long)]
    pub amount: u64,
    /// Account credited on the other side [default: your own address].
    #[arg(long)]
    pub to: Option<String>,
    /// Seconds to wait for the move to take effect.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
}

/// `lamina bridge finalize`
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Base URL of a node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// The withdrawal id (printed by `lamina bridge withdraw`, and in its receipt).
    #[arg(long)]
    pub id: u64,
}

fn key_and_recipient(args: &MoveArgs) -> Result<(Keypair, Address), UsageError> {
    let key = Keypair::from_secret_hex(&args.key)
        .map_err(|e| UsageError(format!("--key must be a 64-hex-character secret key: {e}")))?;
    let to = match &args.to {
        Some(to) => to
            .parse()
            .map_err(|e| UsageError(format!("--to must be a 64-hex-character address: {e}")))?,
        None => key.address(),
    };
    if args.amount == 0 {
        return Err(UsageError("--amount must be at least 1".into()));
    }
    Ok((key, to))
}

/// Runs a `lamina bridge` command.
pub async fn run(command: BridgeCommand) -> anyhow::Result<()> {
    match command {
        BridgeCommand::Deposit(args) => deposit(args).await,
        BridgeCommand::Withdraw(args) => withdraw(args).await,
        BridgeCommand::Finalize(args) => finalize(args).await,
    }
}

async fn deposit(args: MoveArgs) -> anyhow::Result<()> {
    let (key, to) = key_and_recipient(&args)?;
    let client = NodeClient::new(&args.node)?;
    let chain_id = client.chain_id().await?;
    let account: Value = client
        .get(&format!("/v1/settlement/accounts/{}", key.address()))
        .await?;
    let nonce = account["deposit_nonce"]
        .as_u64()
        .ok_or_else(|| anyhow!("the node's answer has no deposit nonce: {account}"))?;
    let message = SettlementMessage::Deposit(Deposit::sign(
        &chain_id,
        &key,
        DepositData {
            to,
            amount: args.amount,
            nonce,
        },
    ));
    let _: Value = client.post("/v1/settlement/messages", &message).await?;
    eprintln!("deposit {nonce} queued; waiting for a block to carry it...");
    wait(args.timeout, "the deposit to be applied", || async {
        let account: Value = client
            .get(&format!("/v1/settlement/accounts/{}", key.address()))
            .await?;
        Ok((account["deposit_nonce"].as_u64() > Some(nonce)).then_some(()))
    })
    .await?;
    out!(
        "deposited {} from the settlement ledger to execution account {to}",
        args.amount
    );
    Ok(())
}

async fn withdraw(args: MoveArgs) -> anyhow::Result<()> {
    let (key, to) = key_and_recipient(&args)?;
    let client = NodeClient::new(&args.node)?;
    let chain_id = client.chain_id().await?;
    let nonce = client.nonce(&key.address()).await?;
    let transaction = Transaction::withdraw(&chain_id, &key, nonce, to, args.amount);
    let hash = client.submit(&transaction).await?;
    eprintln!("submitted {hash}; waiting for inclusion...");
    let answer = client
        .wait_included(&hash, Duration::from_secs(args.timeout))
        .await?;
    let receipt = &answer["receipt"];
    let Some(id) = receipt["withdrawal_id"].as_u64() else {
        return Err(anyhow!("the withdrawal failed: {}", receipt["outcome"]));
    };
    out!(
        "withdrawal {id}: {} burned; once its batch is final, run\n  lamina bridge finalize --node {} --id {id}",
        args.amount,
        args.node
    );
    Ok(())
}

async fn finalize(args: FinalizeArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(&args.node)?;
    let proof: Value = client
        .get(&format!("/v1/bridge/withdrawals/{}/proof", args.id))
        .await?;
    let message: SettlementMessage = serde_json::from_value(proof["finalize"].clone())
        .context("the node's proof has no finalize message")?;
    let _: Value = client.post("/v1/settlement/messages", &message).await?;
    out!(
        "withdrawal {} proven against batch {} (output root {}); queued for the next block",
        args.id,
        proof["batch"],
        proof["output_root"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Polls `check` every 200 ms until it answers, or fails after `timeout_s` seconds.
async fn wait<F, Fut>(timeout_s: u64, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<()>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    loop {
        if check().await?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!("timed out after {timeout_s} s waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
