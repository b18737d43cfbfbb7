//! Proofs that a proposed block's square is badly encoded, as this node finds them while
//! rebuilding a proposal from its validators' rows, and as peers gossip them
//! ([`Topic::BadEncoding`](crate::network::Topic::BadEncoding)).
//!
//! A [`BadEncodingNotice`] ties a [`BadEncodingProof`] to the signed proposal whose header
//! committed to the bad square, so it is evidence against that proposer which any node checks
//! with nothing else: the signature is the round's proposer's over that header, and the proof
//! holds against the header's `data_root`. A node that holds such a notice refuses the
//! proposal (it stops gathering its rows, and its engine never sees it), serves the notice on
//! `GET /v1/da/bad-encoding`, and relays it. [`BadEncodingLog`] keeps the most recent ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::da::BadEncodingProof;
use lamina_primitives::{Address, BlockHeader, Hash, ProposalData, Signature};

/// Largest notice accepted from a peer: a proof keeps `k + 1` shares of one line at most
/// (513 for the largest square), each 512 bytes with a proof of two Merkle paths (about
/// 1.3 KiB in all), so 2 MiB leaves room for the header and the signature.
pub const MAX_NOTICE_BYTES: usize = 2 << 20;

/// Notices kept for `GET /v1/da/bad-encoding`; beyond it the oldest is forgotten.
const MAX_KEPT: usize = 64;

/// A proposal whose square is badly encoded, with the proof (borsh, on
/// [`Topic::BadEncoding`](crate::network::Topic::BadEncoding); see docs/wire-format.md).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BadEncodingNotice {
    /// The validator that signed the proposal.
    pub proposer: Address,
    /// What it signed.
    pub proposal: ProposalData,
    /// Its signature over `proposal`.
    pub signature: Signature,
    /// The proposed block's header, whose `data_root` commits to the bad square.
    pub header: BlockHeader,
    /// A line of that square that is not a codeword, with its shares proven against
    /// `header.data_root`.
    pub proof: BadEncodingProof,
}

impl BadEncodingNotice {
    /// The proposal it is about: height, round, block hash.
    pub fn key(&self) -> (u64, u32, Hash) {
        (
            self.proposal.height,
            self.proposal.round,
            self.proposal.block_hash,
        )
    }
}

/// A checked notice, and whether this node found the bad line itself.
#[derive(Debug, Clone)]
pub struct KeptNotice {
    /// The notice.
    pub notice: Arc<BadEncodingNotice>,
    /// `true`: this node rebuilt the proposal and found it; `false`: a peer's, checked here.
    pub found_here: bool,
}

/// The most recent checked notices, one per proposal, oldest first.
#[derive(Debug, Default)]
pub struct BadEncodingLog {
    kept: Mutex<VecDeque<KeptNotice>>,
}

impl BadEncodingLog {
    /// Whether a notice about proposal `key` is kept already.
    pub fn contains(&self, key: (u64, u32, Hash)) -> bool {
        self.lock().iter().any(|kept| kept.notice.key() == key)
    }

    /// Keeps a checked notice; `false` when one about the same proposal is kept already.
    pub fn record(&self, notice: Arc<BadEncodingNotice>, found_here: bool) -> bool {
        let mut kept = self.lock();
        if kept.iter().any(|k| k.notice.key() == notice.key()) {
            return false;
        }
        if kept.len() >= MAX_KEPT {
            kept.pop_front();
        }
        kept.push_back(KeptNotice { notice, found_here });
        true
    }

    /// Every kept notice, oldest first.
    pub fn list(&self) -> Vec<KeptNotice> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<KeptNotice>> {
        // A panic while holding the lock leaves the queue whole.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_primitives::da::{Axis, CodecKind};
    use lamina_primitives::merkle::MerkleProof;

    fn notice(height: u64, round: u32) -> Arc<BadEncodingNotice> {
        let header = BlockHeader {
            chain_id: "test".into(),
            height,
            parent_hash: Hash::default(),
            timestamp_ms: 0,
            proposer: Address([1; 32]),
            data_root: Hash::default(),
            body_size: 0,
        };
        Arc::new(BadEncodingNotice {
            proposer: Address([1; 32]),
            proposal: ProposalData {
                height,
                round,
                pol_round: None,
                block_hash: header.hash(),
            },
            signature: Signature([0; 64]),
            header,
            proof: BadEncodingProof {
                axis: Axis::Col,
                index: 0,
                width: 2,
                codec: CodecKind::default(),
                line_root_proof: MerkleProof {
                    index: 2,
                    total: 4,
                    siblings: Vec::new(),
                },
                line_root: Hash::default(),
                shares: Vec::new(),
            },
        })
    }

    #[test]
    fn keeps_one_notice_per_proposal_and_the_most_recent_ones() {
        let log = BadEncodingLog::default();
        assert!(log.record(notice(5, 0), true));
        assert!(!log.record(notice(5, 0), false), "same proposal twice");
        assert!(
            log.record(notice(5, 1), false),
            "another round is another proposal"
        );
        assert!(log.contains(notice(5, 1).key()));
        let kept = log.list();
        assert_eq!(kept.len(), 2);
        assert!(kept[0].found_here && !kept[1].found_here);
        for height in 6..6 + MAX_KEPT as u64 {
            log.record(notice(height, 0), false);
        }
        let kept = log.list();
        assert_eq!(kept.len(), MAX_KEPT);
        assert_eq!(kept[0].notice.key().0, 6, "the oldest went first");
        assert!(!log.contains(notice(5, 0).key()));
    }
}
