//! The `[execution]` section of the node's config file: which executor runs blocks (and on
//! how many threads), the mempool's limits, how much state and transaction history is kept, and a testing
//! fault.

use std::num::{NonZeroU64, NonZeroUsize};

use serde::{Deserialize, Serialize};

use crate::state::Retention;

/// Which executor runs blocks. Every kind computes the same state root for the same block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// One transaction after another, in block order.
    #[default]
    Sequential,
    /// Block-STM: optimistic execution on several threads over a multi-version store.
    Parallel,
}

impl ExecutorKind {
    /// The name the layer reports in its status (`sequential`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Sequential => "sequential",
            ExecutorKind::Parallel => "parallel",
        }
    }
}

/// Execution layer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Which executor runs blocks.
    pub kind: ExecutorKind,
    /// Threads of the `parallel` executor (1 to 256); unset: the cores available to the
    /// process. The `sequential` executor ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Most transactions the mempool holds.
    pub max_mempool_transactions: usize,
    /// Most encoded bytes the mempool holds.
    pub max_mempool_bytes: usize,
    /// How many nonces past an account's next nonce the mempool accepts.
    pub nonce_window: u64,
    /// Largest encoded transaction the mempool accepts.
    pub max_transaction_bytes: usize,
    /// How many of the newest executed heights keep their whole state (accounts and proofs
    /// readable at that height); older heights' replaced tree nodes and values are deleted as
    /// blocks execute. 0 keeps every height.
    pub state_history: u64,
    /// How many of the newest included transactions can be looked up by hash, with their
    /// receipts: the newest heights holding at least that many are kept whole, and older
    /// heights' transactions, receipts and index entries are deleted as blocks execute.
    /// 0 keeps every transaction. Blocks themselves are the consensus layer's and are kept.
    pub transaction_history: u64,
    /// Testing fault, off by default: makes this node's execution layer report a wrong state
    /// root in every [`ExecutedBlock`] it returns, publishes and stores (and in its status),
    /// while the state tree itself stays correct (account proofs still verify against the
    /// true root). A testnet turns it on for one node to watch optimistic settlement
    /// challenge and reject that node's wrong claims. Never for a real network.
    ///
    /// [`ExecutedBlock`]: lamina_primitives::interfaces::execution::ExecutedBlock
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub report_wrong_roots: bool,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            kind: ExecutorKind::Sequential,
            threads: None,
            max_mempool_transactions: 10_000,
            max_mempool_bytes: 16 * 1024 * 1024,
            nonce_window: 64,
            max_transaction_bytes: 4096,
            state_history: DEFAULT_STATE_HISTORY,
            transaction_history: DEFAULT_TRANSACTION_HISTORY,
            report_wrong_roots: false,
        }
    }
}

/// The default [`ExecutionConfig::state_history`]: a few minutes of blocks at a fast block
/// rate, far more than a settlement challenge window, and few enough that the state's
/// database stops growing.
pub const DEFAULT_STATE_HISTORY: u64 = 1_000;

/// The default [`ExecutionConfig::transaction_history`]: days of ordinary use of a local
/// testnet (three minutes at 5,000 tx/s), and few enough that a node's memory stops growing
/// under sustained load: the database keeps a few dozen bytes in memory for every record it
/// stores, and each transaction has one in the index.
pub const DEFAULT_TRANSACTION_HISTORY: u64 = 1_000_000;

/// Most threads `threads` may ask for.
pub const MAX_THREADS: usize = 256;

impl ExecutionConfig {
    /// What the state store keeps: the newest `state_history` versions of the state and the
    /// newest `transaction_history` transactions (0: all).
    pub fn retention(&self) -> Retention {
        Retention {
            state: NonZeroU64::new(self.state_history),
            transactions: NonZeroU64::new(self.transaction_history),
        }
    }

    /// The threads the `parallel` executor uses: `threads`, or the cores available to the
    /// process when unset (1 when that cannot be determined).
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
    }

    /// Checks that every limit is usable; the message names the field and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(threads) = self.threads {
            if !(1..=MAX_THREADS).contains(&threads) {
                return Err(format!(
                    "threads must be 1 to {MAX_THREADS} (got {threads}); leave it unset to use every available core"
                ));
            }
        }
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

    #[test]
    fn parallel_kind_and_threads_parse_and_validate() {
        let config: ExecutionConfig = toml::from_str("kind = \"parallel\"\nthreads = 4\n").unwrap();
        assert_eq!(config.kind, ExecutorKind::Parallel);
        assert_eq!(config.kind.name(), "parallel");
        assert_eq!((config.threads, config.threads()), (Some(4), 4));
        assert!(config.validate().is_ok());
        for bad in [0, MAX_THREADS + 1] {
            let config = ExecutionConfig {
                threads: Some(bad),
                ..config.clone()
            };
            let message = config.validate().unwrap_err();
            assert!(message.contains("threads"), "{message}");
        }
        let config = ExecutionConfig {
            threads: Some(MAX_THREADS),
            ..config
        };
        assert!(config.validate().is_ok());
        // Unset: every available core, at least one.
        let config: ExecutionConfig = toml::from_str("kind = \"parallel\"").unwrap();
        assert_eq!(config.threads, None);
        assert!(config.threads() >= 1);
        assert!(toml::from_str::<ExecutionConfig>("threads = -1").is_err());
    }

    #[test]
    fn serializes_and_parses_back() {
        for config in [
            ExecutionConfig::default(),
            ExecutionConfig {
                kind: ExecutorKind::Parallel,
                threads: Some(3),
                ..ExecutionConfig::default()
            },
        ] {
            let text = toml::to_string(&config).unwrap();
            assert_eq!(toml::from_str::<ExecutionConfig>(&text).unwrap(), config);
        }
        let text = toml::to_string(&ExecutionConfig {
            kind: ExecutorKind::Parallel,
            threads: Some(3),
            ..ExecutionConfig::default()
        })
        .unwrap();
        assert!(text.contains("kind = \"parallel\""), "{text}");
        assert!(text.contains("threads = 3"), "{text}");
        // Unset threads are left out rather than written as an unrepresentable null.
        let text = toml::to_string(&ExecutionConfig::default()).unwrap();
        assert!(!text.contains("threads"), "{text}");
        // The testing fault is only written when on.
        assert!(!text.contains("report_wrong_roots"), "{text}");
    }

    #[test]
    fn histories_are_limited_by_default_and_zero_keeps_everything() {
        let retention = ExecutionConfig::default().retention();
        assert_eq!(
            retention.state.map(NonZeroU64::get),
            Some(DEFAULT_STATE_HISTORY)
        );
        assert_eq!(
            retention.transactions.map(NonZeroU64::get),
            Some(DEFAULT_TRANSACTION_HISTORY)
        );
        let config: ExecutionConfig =
            toml::from_str("state_history = 0\ntransaction_history = 0").unwrap();
        assert_eq!(config.retention(), Retention::default());
        assert!(toml::from_str::<ExecutionConfig>("transaction_history = -1").is_err());
        assert!(config.validate().is_ok());
        assert!(toml::from_str::<ExecutionConfig>("state_history = -1").is_err());
    }

    #[test]
    fn report_wrong_roots_defaults_off_and_parses() {
        assert!(!ExecutionConfig::default().report_wrong_roots);
        let config: ExecutionConfig = toml::from_str("report_wrong_roots = true").unwrap();
        assert!(config.report_wrong_roots);
        assert!(config.validate().is_ok());
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("report_wrong_roots = true"), "{text}");
        assert_eq!(toml::from_str::<ExecutionConfig>(&text).unwrap(), config);
    }
}
