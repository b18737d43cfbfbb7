//! [`DepthLedger`]: which heights are settled, as a pure function of the blocks applied and
//! the heights executed.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use lamina_primitives::interfaces::settlement::SettlementError;
use lamina_primitives::Hash;

/// The whole state of depth settlement. Every node applies the same blocks in order, so
/// every node that has executed a height agrees on whether it is settled.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DepthLedger {
    depth: u64,
    applied_height: u64,
    executed_height: u64,
    /// State roots of executed heights that are not settled yet, plus the last settled one.
    roots: BTreeMap<u64, Hash>,
    settled_height: u64,
}

impl DepthLedger {
    /// A ledger at height 0 that settles a height `depth` blocks after it.
    pub fn new(depth: u64) -> Self {
        DepthLedger {
            depth,
            applied_height: 0,
            executed_height: 0,
            roots: BTreeMap::new(),
            settled_height: 0,
        }
    }

    /// The configured depth.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Last block applied.
    pub fn applied_height(&self) -> u64 {
        self.applied_height
    }

    /// Last height executed by this node.
    pub fn executed_height(&self) -> u64 {
        self.executed_height
    }

    /// Highest settled height (0: none).
    pub fn settled_height(&self) -> u64 {
        self.settled_height
    }

    /// The settled state root of `height`, if it is the latest settled height (older roots are
    /// forgotten: the execution layer keeps every height's root).
    pub fn settled_root(&self, height: u64) -> Option<Hash> {
        (height == self.settled_height)
            .then(|| self.roots.get(&height).copied())
            .flatten()
    }

    /// Block `height` is committed. Blocks come in order; one already applied changes nothing.
    /// Returns the heights that became settled, with their roots.
    pub fn apply_block(&mut self, height: u64) -> Result<Vec<(u64, Hash)>, SettlementError> {
        if height <= self.applied_height {
            return Ok(Vec::new());
        }
        let expected = self.applied_height + 1;
        if height != expected {
            return Err(SettlementError::OutOfOrder {
                expected,
                got: height,
            });
        }
        self.applied_height = height;
        Ok(self.settle())
    }

    /// This node executed `height` with `state_root`; a height reported twice changes
    /// nothing. Returns the heights that became settled.
    pub fn executed(&mut self, height: u64, state_root: Hash) -> Vec<(u64, Hash)> {
        if height <= self.executed_height {
            return Vec::new();
        }
        self.executed_height = height;
        self.roots.insert(height, state_root);
        self.settle()
    }

    /// Settles every executed height at least `depth` blocks below the applied one.
    fn settle(&mut self) -> Vec<(u64, Hash)> {
        let target = self
            .applied_height
            .saturating_sub(self.depth)
            .min(self.executed_height);
        if target <= self.settled_height {
            return Vec::new();
        }
        let newly: Vec<(u64, Hash)> = self
            .roots
            .range(self.settled_height + 1..=target)
            .map(|(h, root)| (*h, *root))
            .collect();
        self.settled_height = target;
        // Keep only the latest settled root and the unsettled ones.
        self.roots = self.roots.split_off(&target);
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(height: u64) -> Hash {
        Hash::digest(&height.to_le_bytes())
    }

    #[test]
    fn a_height_settles_depth_blocks_later_once_executed() {
        let mut ledger = DepthLedger::new(2);
        assert!(ledger.apply_block(1).unwrap().is_empty());
        assert!(ledger.executed(1, root(1)).is_empty());
        assert!(ledger.apply_block(2).unwrap().is_empty());
        assert_eq!(ledger.apply_block(3).unwrap(), vec![(1, root(1))]);
        assert_eq!(ledger.settled_root(1), Some(root(1)));
        // Blocks far ahead of execution: settlement waits for execution.
        for h in 4..=6 {
            assert!(ledger.apply_block(h).unwrap().is_empty());
        }
        assert_eq!(
            ledger.executed(2, root(2)),
            vec![(2, root(2))],
            "height 2 is 4 blocks deep already"
        );
        ledger.executed(3, root(3));
        assert_eq!(ledger.executed(4, root(4)), vec![(4, root(4))]);
        assert_eq!(ledger.settled_height(), 4);
        assert_eq!(ledger.settled_root(3), None, "only the latest root is kept");
    }

    #[test]
    fn blocks_apply_in_order_and_repeats_change_nothing() {
        let mut ledger = DepthLedger::new(0);
        ledger.apply_block(1).unwrap();
        let before = ledger.clone();
        assert!(ledger.apply_block(1).unwrap().is_empty());
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.apply_block(3),
            Err(SettlementError::OutOfOrder {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(ledger.executed(1, root(1)), vec![(1, root(1))]);
        assert!(ledger.executed(1, root(9)).is_empty());
    }
}
