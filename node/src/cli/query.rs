//! `lamina query account`: read an account and verify its Merkle proof locally.

use clap::Args;
use lamina_primitives::state_proof::StateProof;
use lamina_primitives::{codec, Account, Address, Hash};
use serde::Deserialize;

use super::{NodeClient, UsageError};

/// `lamina query account`
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Base URL of a node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// The account (64 hex characters).
    #[arg(long)]
    pub address: String,
    /// Executed height to read; default the latest.
    #[arg(long)]
    pub height: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ProofAnswer {
    height: u64,
    state_root: Hash,
    key_hash: Hash,
    account: Option<Account>,
    proof: StateProof,
}

#[derive(Debug, Deserialize)]
struct StatusAnswer {
    settled_height: u64,
    settled_state_root: Option<Hash>,
}

#[derive(Debug, Deserialize)]
struct SettlementAnswer {
    settled_root: Option<Hash>,
}

/// Fetches the account with its proof, recomputes the key hash and checks the proof against
/// the state root; if the height is settled, also checks that root is the settled one.
pub async fn account(args: AccountArgs) -> anyhow::Result<()> {
    let address: Address = args
        .address
        .parse()
        .map_err(|e| UsageError(format!("--address must be 64 hex characters: {e}")))?;
    let client = NodeClient::new(&args.node)?;
    let query = args
        .height
        .map(|h| format!("?height={h}"))
        .unwrap_or_default();
    let answer: ProofAnswer = client
        .get(&format!("/v1/accounts/{address}/proof{query}"))
        .await?;
    let key_hash = lamina_primitives::state_proof::StateKey::Account(address).key_hash();
    anyhow::ensure!(key_hash == answer.key_hash, "the node proved another key");
    let value = answer.account.map(|account| codec::encode(&account));
    answer
        .proof
        .verify(&answer.state_root, &key_hash, value.as_deref())
        .map_err(|e| anyhow::anyhow!("PROOF DOES NOT VERIFY: {e}"))?;
    let account = answer.account.unwrap_or_default();
    out!("address     {address}");
    out!("height      {}", answer.height);
    out!("balance     {}", account.balance);
    out!("nonce       {}", account.nonce);
    out!("state root  {}", answer.state_root);
    out!(
        "proof       verified ({} against the state root)",
        if answer.account.is_some() {
            "presence"
        } else {
            "absence"
        }
    );
    let settled = client
        .get::<SettlementAnswer>(&format!("/v1/settlement/heights/{}", answer.height))
        .await
        .ok()
        .and_then(|s| s.settled_root);
    match settled {
        Some(root) if root == answer.state_root => out!("settlement  root is settled"),
        Some(root) => anyhow::bail!("the settled root at this height is {root}, not the node's"),
        None => {
            // Heights whose block held no transactions are never attested: their root is the
            // root of the last height that changed state, which may be settled.
            let status: StatusAnswer = client.get("/v1/status").await?;
            if status.settled_state_root == Some(answer.state_root) {
                out!(
                    "settlement  root is settled (it is the root settled at height {})",
                    status.settled_height
                );
            } else {
                out!(
                    "settlement  not settled yet (latest settled height {})",
                    status.settled_height
                );
            }
        }
    }
    Ok(())
}
