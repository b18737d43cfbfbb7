//! `lamina da sample`: a light client of the data-availability layer. It samples random
//! cells of a block's extended square from a node, checks each against the header's
//! `data_root`, and reports how sure it can be that the whole block is available.
//!
//! Why sampling works: to make a `reed-solomon` block unrecoverable a producer must withhold
//! at least a quarter of the extended square (any `(k+1) × (k+1)` cells), so each uniformly
//! random sample hits a withheld cell with probability at least 1/4, and `S` samples that
//! all verify leave a chance of at most `0.75^S` that the data is not available.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use clap::Args;
use lamina_primitives::interfaces::da::DataProof;
use lamina_primitives::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::NodeClient;

/// `lamina da sample`
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Base URL of the node's HTTP API to sample from.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// Block height to sample.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub height: u64,
    /// Number of distinct random cells to sample.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub samples: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Deserialize)]
struct ShareAnswer {
    row: u64,
    col: u64,
    share: String,
    data_root: Hash,
    proof: DataProof,
}

/// What sampling found.
#[derive(Debug, Serialize)]
struct SampleReport {
    height: u64,
    data_root: Hash,
    /// Width of the extended square (`2k`).
    width: u64,
    samples: u64,
    verified: u64,
    /// `1 − 0.75^verified` when every sample verified (1 when they covered the whole
    /// square), else 0.
    confidence: f64,
    /// Why each failed sample failed, as `(row, col): reason`.
    failures: Vec<String>,
}

/// Distinct random cells of a `width × width` square (`count` at most `width²`).
fn random_cells(width: u64, count: u64) -> Vec<(u64, u64)> {
    let cells = width.saturating_mul(width);
    let count = count.min(cells);
    // std seeds each `RandomState` from the operating system's randomness.
    let mut state = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1
    };
    let mut chosen = BTreeSet::new();
    while (chosen.len() as u64) < count {
        // xorshift64*: plenty for choosing cells; the node cannot predict the seed.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let cell = state.wrapping_mul(0x2545_f491_4f6c_dd1d) % cells;
        chosen.insert(cell);
    }
    chosen
        .into_iter()
        .map(|cell| (cell / width, cell % width))
        .collect()
}

/// Fetches and verifies one cell; the reason it does not count, if it does not.
async fn sample(
    client: &NodeClient,
    height: u64,
    data_root: &Hash,
    (row, col): (u64, u64),
) -> Result<(), String> {
    let answer: ShareAnswer = client
        .get(&format!("/v1/da/shares/{height}/{row}/{col}"))
        .await
        .map_err(|error| format!("not served: {error:#}"))?;
    let share = hex::decode(&answer.share).map_err(|_| "share is not hex".to_string())?;
    if answer.row != row || answer.col != col || answer.data_root != *data_root {
        return Err("the node answered for another cell or root".into());
    }
    if !answer.proof.verify(data_root, row, col, &share) {
        return Err("proof does not verify against the header's data_root".into());
    }
    Ok(())
}

/// Runs `lamina da sample`.
pub async fn sample_command(args: SampleArgs) -> anyhow::Result<()> {
    let client = NodeClient::new(&args.node)?;
    let height = args.height;
    let block: Value = client
        .get(&format!("/v1/blocks/{height}"))
        .await
        .with_context(|| format!("cannot fetch the header of block {height}"))?;
    let data_root: Hash = serde_json::from_value(block["header"]["data_root"].clone())
        .context("the block's header has no data_root")?;
    // The first cell tells the square's width (its row proof spans one row).
    let first: ShareAnswer = client
        .get(&format!("/v1/da/shares/{height}/0/0"))
        .await
        .with_context(|| format!("cannot fetch share (0, 0) of block {height}"))?;
    let width = match &first.proof {
        DataProof::Square(proof) => proof.square_width(),
        DataProof::Flat(_) => bail!(
            "{} runs the replicated DA scheme, which commits to the body as a whole: there is \
             nothing to sample; sample a node with [data_availability] kind = \"reed-solomon\"",
            args.node
        ),
    };
    let mut report = SampleReport {
        height,
        data_root,
        width,
        samples: 0,
        verified: 0,
        confidence: 0.0,
        failures: Vec::new(),
    };
    for cell in random_cells(width, args.samples) {
        report.samples += 1;
        match sample(&client, height, &data_root, cell).await {
            Ok(()) => report.verified += 1,
            Err(reason) => report
                .failures
                .push(format!("({}, {}): {reason}", cell.0, cell.1)),
        }
    }
    if report.failures.is_empty() {
        report.confidence = if report.verified == width.saturating_mul(width) {
            // Every share checked: the data is there, whatever any bound says.
            1.0
        } else {
            1.0 - 0.75f64.powi(report.verified.min(4096) as i32)
        };
    }
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        out!(
            "block {height}: {}/{} samples of its {width} × {width} extended square verified \
             against data_root {data_root}",
            report.verified,
            report.samples
        );
        for failure in &report.failures {
            out!("  failed {failure}");
        }
        if report.verified == width.saturating_mul(width) {
            out!("every share verified: the data is available");
        } else if report.failures.is_empty() {
            out!(
                "confidence the data is available: {:.4}% (1 − 0.75^{})",
                report.confidence * 100.0,
                report.verified
            );
        }
    }
    if !report.failures.is_empty() {
        bail!(
            "{} of {} samples failed: the data of block {height} may be withheld",
            report.failures.len(),
            report.samples
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_distinct_and_in_range() {
        let cells = random_cells(8, 64);
        assert_eq!(cells.len(), 64);
        assert!(cells.iter().all(|(r, c)| *r < 8 && *c < 8));
        // More samples than cells: every cell once.
        assert_eq!(random_cells(2, 100).len(), 4);
        let few = random_cells(1024, 16);
        assert_eq!(few.iter().collect::<BTreeSet<_>>().len(), 16);
    }
}
