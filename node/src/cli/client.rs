//! A small typed client of the node's HTTP API, used by the CLI commands.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use lamina_primitives::{Address, Hash, Transaction};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A node's HTTP API.
#[derive(Debug, Clone)]
pub struct NodeClient {
    base: String,
    http: reqwest::Client,
}

impl NodeClient {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:8545`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(NodeClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the node sent a non-JSON answer")?;
        if !status.is_success() {
            let code = body
                .get("error_code")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let message = body.get("message").and_then(Value::as_str).unwrap_or("");
            bail!("{code} ({status}): {message}");
        }
        serde_json::from_value(body).context("unexpected answer from the node")
    }

    /// GET a path, decoding the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        Self::decode(response).await
    }

    /// POST a JSON body to a path, decoding the JSON answer.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        Self::decode(response).await
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> anyhow::Result<String> {
        let status: Value = self.get("/v1/status").await?;
        status
            .get("chain_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("status has no chain id"))
    }

    /// The account's next nonce.
    pub async fn nonce(&self, address: &Address) -> anyhow::Result<u64> {
        let account: Value = self.get(&format!("/v1/accounts/{address}")).await?;
        account
            .get("nonce")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("account has no nonce"))
    }

    /// Submits a signed transaction; returns its hash.
    pub async fn submit(&self, transaction: &Transaction) -> anyhow::Result<Hash> {
        let url = format!("{}/v1/transactions", self.base);
        let body = serde_json::json!({ "transaction": hex::encode(transaction.encode()) });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let answer: Value = Self::decode(response).await?;
        answer
            .get("hash")
            .and_then(Value::as_str)
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| anyhow!("answer has no hash"))
    }

    /// Polls until the transaction is included; returns the `/v1/transactions/{hash}` answer.
    pub async fn wait_included(&self, hash: &Hash, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer: Value = self.get(&format!("/v1/transactions/{hash}")).await?;
            if answer.get("status").and_then(Value::as_str) == Some("included") {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                bail!(
                    "transaction {hash} not included after {} s; it may still be pending",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
