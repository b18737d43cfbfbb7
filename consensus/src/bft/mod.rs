//! The `bft` engine: Tendermint consensus among the genesis validators, weighted by voting
//! power, committing one block per height with a certificate of precommits from more than
//! two thirds of the power.
//!
//! - [`core`]: the protocol as a pure, deterministic state machine (inputs in, outputs out),
//!   with its vote book ([`votes`]), proposer schedule ([`proposer`]) and durable state
//!   ([`state`]).
//! - [`actor`]: the async driver that owns the core, checks peers' messages and blocks,
//!   builds proposals from the other layers, keeps time, persists, and talks to peers
//!   through the node.
//!
//! Design record: `docs/adr/0001-bft-consensus.md`.

pub(crate) mod actor;
pub(crate) mod core;
pub(crate) mod proposer;
pub(crate) mod state;
pub(crate) mod votes;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use lamina_primitives::BlockHeader;

use crate::store::Tip;

/// How far ahead of the local clock a proposed block's timestamp may be. Generous enough for
/// the clock skew of machines without careful time sync, tight enough that a proposer
/// cannot push the chain's time far into the future.
pub(crate) const MAX_FUTURE_DRIFT_MS: u64 = 5_000;

/// Checks that `header` is the next block on `tip`: same chain, next height, the tip as its
/// parent, a later timestamp. What every committed block satisfies, certified or not.
pub(crate) fn check_next_header(
    header: &BlockHeader,
    chain_id: &str,
    tip: &Tip,
) -> Result<(), String> {
    if header.chain_id != chain_id {
        return Err(format!(
            "block is for chain {:?}, this chain is {chain_id:?}",
            header.chain_id
        ));
    }
    let expected = tip.height.saturating_add(1);
    if header.height != expected {
        return Err(format!(
            "block height is {}, the next height is {expected}",
            header.height
        ));
    }
    if header.parent_hash != tip.hash {
        return Err(format!(
            "block builds on {}, the committed tip is {}",
            header.parent_hash, tip.hash
        ));
    }
    if header.timestamp_ms <= tip.timestamp_ms {
        return Err(format!(
            "block timestamp {} is not after its parent's {}",
            header.timestamp_ms, tip.timestamp_ms
        ));
    }
    Ok(())
}

/// [`check_next_header`] for a proposed block, which must also not be dated more than
/// [`MAX_FUTURE_DRIFT_MS`] after `now_ms`.
pub(crate) fn check_proposed_header(
    header: &BlockHeader,
    chain_id: &str,
    tip: &Tip,
    now_ms: u64,
) -> Result<(), String> {
    check_next_header(header, chain_id, tip)?;
    let limit = now_ms.saturating_add(MAX_FUTURE_DRIFT_MS);
    if header.timestamp_ms > limit {
        return Err(format!(
            "block timestamp {} is more than {MAX_FUTURE_DRIFT_MS} ms ahead of this node's clock ({now_ms})",
            header.timestamp_ms
        ));
    }
    Ok(())
}
