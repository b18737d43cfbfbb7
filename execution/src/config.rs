//! The `[execution]` section of the node's config file: which executor runs blocks and the
//! mempool's limits.

use serde::{Deserialize, Serialize};

/// Which executor runs blocks. Every kind computes the same state root for the same block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// One transaction after another, in block order.
    #[default]
    Sequential,
}

impl ExecutorKind {
    /// The name the layer reports in its status (`sequential`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Sequential => "sequential",
        }
    }
}

/// Execution layer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Which executor runs blocks.
    pub kind: ExecutorKind,
    /// Most transactions the mempool holds.
    pub max_mempool_transactions: usize,
    /// Most encoded bytes the mempool holds.
    pub max_mempool_bytes: usize,
    /// How many nonces past an account's next nonce the mempool accepts.
    pub nonce_window: u64,
    /// Largest encoded transaction the mempool accepts.
    pub max_transaction_bytes: usize,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            kind: ExecutorKind::Sequential,
            max_mempool_transactions: 10_000,
            max_mempool_bytes: 16 * 1024 * 1024,
            nonce_window: 64,
            max_transaction_bytes: 4096,
        }
    }
}

impl ExecutionConfig {
    /// Checks that every limit is usable; the message names the field and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(format!("{name} must be at least 1 (got 0)"))
            } else {
                Ok(())
            }
        };
        positive(
            "max_mempool_transactions",
            self.max_mempool_transactions as u64,
        )?;
        positive("max_mempool_bytes", self.max_mempool_bytes as u64)?;
        positive("nonce_window", self.nonce_window)?;
        positive("max_transaction_bytes", self.max_transaction_bytes as u64)?;
        if self.max_transaction_bytes > self.max_mempool_bytes {
            return Err(format!(
                "max_transaction_bytes ({}) must not exceed max_mempool_bytes ({}): such a transaction could never be admitted",
                self.max_transaction_bytes, self.max_mempool_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ExecutionConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let config = ExecutionConfig {
            nonce_window: 0,
            ..ExecutionConfig::default()
        };
        let message = config.validate().unwrap_err();
        assert!(message.contains("nonce_window"), "{message}");
        let config = ExecutionConfig {
            max_mempool_transactions: 0,
            ..ExecutionConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("max_mempool_transactions"));
        let config = ExecutionConfig {
            max_transaction_bytes: 100,
            max_mempool_bytes: 10,
            ..ExecutionConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("max_transaction_bytes"));
    }

    #[test]
    fn parses_toml_with_lowercase_kind_and_refuses_unknown_fields() {
        let config: ExecutionConfig =
            toml::from_str("kind = \"sequential\"\nnonce_window = 8\n").unwrap();
        assert_eq!(config.kind, ExecutorKind::Sequential);
        assert_eq!(config.nonce_window, 8);
        assert_eq!(config.max_transaction_bytes, 4096);
        assert!(toml::from_str::<ExecutionConfig>("kind = \"Sequential\"").is_err());
        assert!(toml::from_str::<ExecutionConfig>("nonce_windw = 8").is_err());
    }
}
