//! Prometheus metrics of the node, served at `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The node's metrics; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Highest committed height.
    pub committed_height: Gauge<u64, AtomicU64>,
    /// Highest executed height.
    pub executed_height: Gauge<u64, AtomicU64>,
    /// Highest settled height.
    pub settled_height: Gauge<u64, AtomicU64>,
    /// Heights at or below it are kept only as this validator's rows (0: none).
    pub pruned_height: Gauge<u64, AtomicU64>,
    /// Transactions executed (successful or failed).
    pub transactions_executed: Counter,
    /// Transactions that failed at execution.
    pub transactions_failed: Counter,
    /// Transactions admitted to the mempool over HTTP.
    pub transactions_accepted: Counter,
    /// Transactions refused by the mempool over HTTP.
    pub transactions_rejected: Counter,
    /// Bytes of this node's proposals gossiped whole (each message once, however many peers
    /// it reaches).
    pub proposal_whole_bytes_sent: Counter,
    /// Parts (one holder's rows and columns) of this node's proposals sent.
    pub proposal_parts_sent: Counter,
    /// Bytes of those parts.
    pub proposal_part_bytes_sent: Counter,
    /// Other validators' proposals rebuilt here from their rows.
    pub proposals_rebuilt: Counter,
    /// Proposals shown badly encoded (found here, or a peer's proof checked here).
    pub bad_encoding_notices: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let committed_height = Gauge::default();
        let executed_height = Gauge::default();
        let settled_height = Gauge::default();
        let pruned_height = Gauge::default();
        let transactions_executed = Counter::default();
        let transactions_failed = Counter::default();
        let transactions_accepted = Counter::default();
        let transactions_rejected = Counter::default();
        let proposal_whole_bytes_sent = Counter::default();
        let proposal_parts_sent = Counter::default();
        let proposal_part_bytes_sent = Counter::default();
        let proposals_rebuilt = Counter::default();
        let bad_encoding_notices = Counter::default();
        let mut registry = Registry::with_prefix("lamina");
        registry.register(
            "committed_height",
            "Highest committed block height",
            committed_height.clone(),
        );
        registry.register(
            "executed_height",
            "Highest executed block height",
            executed_height.clone(),
        );
        registry.register(
            "settled_height",
            "Highest settled block height",
            settled_height.clone(),
        );
        registry.register(
            "pruned_height",
            "Heights at or below it are kept only as this validator's rows of their data",
            pruned_height.clone(),
        );
        registry.register(
            "transactions_executed",
            "Transactions executed",
            transactions_executed.clone(),
        );
        registry.register(
            "transactions_failed",
            "Transactions that failed at execution",
            transactions_failed.clone(),
        );
        registry.register(
            "transactions_accepted",
            "Transactions admitted to the mempool",
            transactions_accepted.clone(),
        );
        registry.register(
            "transactions_rejected",
            "Transactions refused by the mempool",
            transactions_rejected.clone(),
        );
        registry.register(
            "proposal_whole_bytes_sent",
            "Bytes of this node's proposals gossiped whole, each message counted once",
            proposal_whole_bytes_sent.clone(),
        );
        registry.register(
            "proposal_parts_sent",
            "Parts (one validator's rows and columns) of this node's proposals sent",
            proposal_parts_sent.clone(),
        );
        registry.register(
            "proposal_part_bytes_sent",
            "Bytes of the parts of this node's proposals sent",
            proposal_part_bytes_sent.clone(),
        );
        registry.register(
            "proposals_rebuilt",
            "Proposals rebuilt here from validators' rows",
            proposals_rebuilt.clone(),
        );
        registry.register(
            "bad_encoding_notices",
            "Proposals shown badly encoded, found here or proven by a peer",
            bad_encoding_notices.clone(),
        );
        Metrics {
            registry,
            committed_height,
            executed_height,
            settled_height,
            pruned_height,
            transactions_executed,
            transactions_failed,
            transactions_accepted,
            transactions_rejected,
            proposal_whole_bytes_sent,
            proposal_parts_sent,
            proposal_part_bytes_sent,
            proposals_rebuilt,
            bad_encoding_notices,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
