//! `testnet.json`: what a running dev chain or testnet writes for scripts and tools (nodes
//! with their HTTP URLs and peer-to-peer addresses, the chain id, prefunded accounts with
//! their secret keys).

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
    /// Its peer-to-peer address with its peer id (`/ip4/.../tcp/.../p2p/<peer id>`); absent
    /// for a node without peers (`lamina dev`) and in files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p: Option<String>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn files_without_p2p_addresses_still_read() {
        let old = r#"{"chain_id":"c","nodes":[{"name":"node0","http":"http://127.0.0.1:1","validator":null}],"accounts":[]}"#;
        let file: TestnetFile = serde_json::from_str(old).unwrap();
        assert_eq!(file.nodes[0].p2p, None);
        // And a node without one is written without the field, as before.
        let text = serde_json::to_string(&file).unwrap();
        assert!(!text.contains("p2p"), "{text}");
        let mut with = file.clone();
        with.nodes[0].p2p = Some("/ip4/127.0.0.1/tcp/2/p2p/x".into());
        let back: TestnetFile =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
