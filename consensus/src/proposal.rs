//! Building a block: whether to make one at all, what goes in its body, its header and its
//! timestamp, and the single-validator certificate that commits it.
//!
//! Pure functions, shared by every engine that proposes, so the rules are unit-tested apart
//! from any clock or channel.

use lamina_primitives::interfaces::da::DataCommitment;
use lamina_primitives::{
    codec, Address, Blob, BlockHeader, Certificate, CommitSignature, Keypair, Namespace,
    Transaction,
};

use crate::store::Tip;

/// Encoded size of the body's blob count.
const BODY_PREFIX: usize = codec::VEC_PREFIX_BYTES;
/// Encoded size of a blob's namespace and data length.
const BLOB_PREFIX: usize = Blob::ENCODED_PREFIX_BYTES;
/// Encoded size of the transaction count inside the execution blob.
const TX_VEC_PREFIX: usize = codec::VEC_PREFIX_BYTES;

/// Bytes of transactions a body of at most `max_block_bytes` can carry.
pub(crate) fn transaction_budget(max_block_bytes: usize) -> usize {
    max_block_bytes.saturating_sub(BODY_PREFIX + BLOB_PREFIX + TX_VEC_PREFIX)
}

/// The `execution` blob carrying `transactions`, or `None` when there are none.
pub(crate) fn execution_blob(transactions: &[Transaction]) -> Option<Blob> {
    (!transactions.is_empty()).then(|| Blob {
        namespace: Namespace::EXECUTION,
        data: codec::encode(transactions),
    })
}

/// Bytes left for more blobs (encoded, prefixes included) in a body of at most
/// `max_block_bytes` that already holds `taken`.
pub(crate) fn budget_after<'a>(
    max_block_bytes: usize,
    taken: impl IntoIterator<Item = &'a Blob>,
) -> usize {
    let used = taken
        .into_iter()
        .fold(BODY_PREFIX, |used, blob| used + blob.encoded_len());
    max_block_bytes.saturating_sub(used)
}

/// What to do on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing worth a block.
    Skip,
    /// Propose this body.
    Propose(Vec<Blob>),
}

/// Decides whether to make a block and assembles its body: the execution blob, the
/// settlement blobs and the outside blobs (from the DA layer's pool), in namespace order.
/// With none of them a block is made only when `create_empty_blocks` is set.
pub(crate) fn decide(
    execution: Option<Blob>,
    settlement: Vec<Blob>,
    outside: Vec<Blob>,
    create_empty_blocks: bool,
) -> Decision {
    if execution.is_none() && settlement.is_empty() && outside.is_empty() && !create_empty_blocks {
        return Decision::Skip;
    }
    let mut body: Vec<Blob> = execution
        .into_iter()
        .chain(settlement)
        .chain(outside)
        .collect();
    // Stable, so each namespace's blobs keep the order their layer gave them.
    body.sort_by_key(|blob| blob.namespace);
    Decision::Propose(body)
}

/// The timestamp of the block after `parent_timestamp_ms`: now, but strictly after the
/// parent so timestamps increase along the chain even if the clock steps back.
pub(crate) fn next_timestamp(now_ms: u64, parent_timestamp_ms: u64) -> u64 {
    now_ms.max(parent_timestamp_ms.saturating_add(1))
}

/// The header of the block after `tip`.
pub(crate) fn header(
    chain_id: &str,
    tip: &Tip,
    now_ms: u64,
    proposer: Address,
    commitment: &DataCommitment,
) -> BlockHeader {
    BlockHeader {
        chain_id: chain_id.to_string(),
        height: tip.height.saturating_add(1),
        parent_hash: tip.hash,
        timestamp_ms: next_timestamp(now_ms, tip.timestamp_ms),
        proposer,
        data_root: commitment.data_root,
        body_size: commitment.body_size,
    }
}

/// A certificate for `header` carrying `key`'s precommit alone (round 0): a quorum when
/// `key` is the only validator.
pub(crate) fn certify_alone(chain_id: &str, key: &Keypair, header: &BlockHeader) -> Certificate {
    let mut certificate = Certificate {
        height: header.height,
        round: 0,
        block_hash: header.hash(),
        signatures: Vec::new(),
    };
    let signature = certificate.vote().sign(chain_id, key);
    certificate.signatures.push(CommitSignature {
        validator: key.address(),
        signature,
    });
    certificate
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::{Block, Hash, Validator, ValidatorSet};

    fn tx(nonce: u64) -> Transaction {
        Transaction::transfer(
            "c",
            &Keypair::deterministic("alice"),
            nonce,
            Address([1; 32]),
            5,
        )
    }

    fn settlement_blob(byte: u8) -> Blob {
        Blob {
            namespace: Namespace::SETTLEMENT,
            data: vec![byte; 3],
        }
    }

    fn outside_blob(byte: u8) -> Blob {
        Blob {
            namespace: Namespace(*b"aaa-roll"),
            data: vec![byte; 5],
        }
    }

    #[test]
    fn skips_without_content_unless_asked_for_empty_blocks() {
        assert_eq!(decide(None, vec![], vec![], false), Decision::Skip);
        assert_eq!(
            decide(None, vec![], vec![], true),
            Decision::Propose(vec![])
        );
        assert_eq!(
            decide(None, vec![settlement_blob(1)], vec![], false),
            Decision::Propose(vec![settlement_blob(1)])
        );
        // Outside data alone is worth a block.
        assert_eq!(
            decide(None, vec![], vec![outside_blob(1)], false),
            Decision::Propose(vec![outside_blob(1)])
        );
    }

    #[test]
    fn body_keeps_namespace_order() {
        let execution = execution_blob(&[tx(0), tx(1)]).unwrap();
        let Decision::Propose(body) = decide(
            Some(execution.clone()),
            vec![settlement_blob(2), settlement_blob(1)],
            vec![outside_blob(3), outside_blob(4)],
            false,
        ) else {
            panic!("expected a block");
        };
        // `aaa-roll` sorts before `lam-exec` and `lam-sett`; each layer's order is kept.
        assert_eq!(
            body,
            vec![
                outside_blob(3),
                outside_blob(4),
                execution,
                settlement_blob(2),
                settlement_blob(1)
            ]
        );
        let block = Block {
            header: header("c", &tip(), 0, Address([0; 32]), &commitment()),
            body,
        };
        assert_eq!(block.transactions(), vec![tx(0), tx(1)]);
        assert!(execution_blob(&[]).is_none());
    }

    #[test]
    fn budgets_add_up_to_the_block_limit() {
        let txs = vec![tx(0), tx(1), tx(2)];
        let tx_bytes: usize = txs.iter().map(|t| t.encode().len()).sum();
        let max = 10_000;
        assert!(tx_bytes <= transaction_budget(max));
        let execution = execution_blob(&txs).unwrap();
        let left = budget_after(max, Some(&execution));
        let settlement = Blob {
            namespace: Namespace::SETTLEMENT,
            data: vec![0; left / 2],
        };
        let left = budget_after(max, [&execution, &settlement]);
        let outside = Blob {
            namespace: Namespace(*b"aaa-roll"),
            data: vec![0; left - BLOB_PREFIX],
        };
        let Decision::Propose(body) =
            decide(Some(execution), vec![settlement], vec![outside], false)
        else {
            panic!("expected a block");
        };
        assert_eq!(Block::encode_body(&body).len(), max);
        // A full transaction budget alone fills the block exactly too.
        let exact = BODY_PREFIX + BLOB_PREFIX + TX_VEC_PREFIX + transaction_budget(max);
        assert_eq!(exact, max);
        assert_eq!(budget_after(max, None), max - BODY_PREFIX);
        assert_eq!(transaction_budget(3), 0);
    }

    #[test]
    fn timestamps_strictly_increase() {
        assert_eq!(next_timestamp(1_000, 500), 1_000);
        assert_eq!(next_timestamp(1_000, 1_000), 1_001);
        assert_eq!(next_timestamp(0, 5_000), 5_001);
    }

    fn tip() -> Tip {
        Tip {
            height: 4,
            hash: Hash::digest(b"parent"),
            timestamp_ms: 9_000,
        }
    }

    fn commitment() -> DataCommitment {
        DataCommitment {
            data_root: Hash::digest(b"data"),
            body_size: 77,
            share_count: 1,
        }
    }

    #[test]
    fn header_chains_on_the_tip_and_certificate_verifies() {
        let key = Keypair::deterministic("solo");
        let header = header("chain-x", &tip(), 8_000, key.address(), &commitment());
        assert_eq!(header.height, 5);
        assert_eq!(header.parent_hash, tip().hash);
        assert_eq!(header.timestamp_ms, 9_001);
        assert_eq!(header.data_root, commitment().data_root);
        assert_eq!(header.body_size, 77);
        let certificate = certify_alone("chain-x", &key, &header);
        let set = ValidatorSet::new(vec![Validator {
            address: key.address(),
            power: 1,
        }]);
        assert!(certificate.verify("chain-x", &header, &set).is_ok());
        assert!(certificate.verify("chain-y", &header, &set).is_err());
    }
}
