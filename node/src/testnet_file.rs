//! `testnet.json`: what a running dev chain or testnet writes for scripts and tools (nodes
//! with their HTTP URLs, the chain id, prefunded accounts with their secret keys).

use std::path::Path;

use anyhow::Context;
use lamina_primitives::{Address, Keypair};
use serde::{Deserialize, Serialize};

/// One node of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestnetNode {
    /// Name (`node0`, ...).
    pub name: String,
    /// Base URL of its HTTP API.
    pub http: String,
    /// Its validator address, if it validates.
    pub validator: Option<Address>,
}

/// A prefunded account; its secret key is public knowledge (development only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestnetAccount {
    /// Address.
    pub address: Address,
    /// Hex secret key.
    pub secret_key: String,
    /// Genesis balance.
    pub balance: u64,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestnetFile {
    /// Chain id.
    pub chain_id: String,
    /// The nodes.
    pub nodes: Vec<TestnetNode>,
    /// The prefunded accounts.
    pub accounts: Vec<TestnetAccount>,
}

impl TestnetFile {
    /// Writes the file atomically (write to a temporary file, then rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Reads a file written by [`TestnetFile::write`].
    pub fn read(path: &Path) -> anyhow::Result<TestnetFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("invalid testnet file {}", path.display()))
    }

    /// The key of account `index`.
    pub fn account_key(&self, index: usize) -> anyhow::Result<Keypair> {
        let account = self.accounts.get(index).context("no such account")?;
        Keypair::from_secret_hex(&account.secret_key).map_err(|e| anyhow::anyhow!("bad key: {e}"))
    }
}
