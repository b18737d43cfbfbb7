//! `lamina da sample` and `lamina da rebuild`: light clients of the data-availability layer.
//! `sample` checks random cells of a block's extended square against the header's
//! `data_root` and reports how sure it can be that the whole block is available; `rebuild`
//! gathers verified shares from several nodes until the square is recoverable and decodes
//! the block's body from them.
//!
//! Why sampling works: to make a `reed-solomon` block unrecoverable a producer must withhold
//! at least a quarter of the extended square (any `(k+1) × (k+1)` cells), so each uniformly
//! random sample hits a withheld cell with probability at least 1/4, and `S` samples that
//! all verify leave a chance of at most `0.75^S` that the data is not available.

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use clap::Args;
use lamina_da::square::{
    layout, AxisRoots, BadEncodingCheck, ExtendedSquare, PartialSquare, RepairError,
};
use lamina_da::CodecKind;
use lamina_primitives::interfaces::da::{DataProof, SquareRoots};
use lamina_primitives::{Hash, Namespace};
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
    let mut state = random_seed();
    let mut chosen = BTreeSet::new();
    while (chosen.len() as u64) < count {
        chosen.insert(next_random(&mut state) % cells);
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

/// `lamina da rebuild`
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Base URLs of the nodes to gather shares from, comma-separated; each cell is asked of
    /// them in turn until one serves it with a valid proof.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Block height to rebuild.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub height: u64,
    /// Gather only parity shares (outside the original quadrant), so the original data has
    /// to be decoded from them.
    #[arg(long)]
    pub parity_only: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What rebuilding found.
#[derive(Debug, Serialize)]
struct RebuildReport {
    height: u64,
    data_root: Hash,
    width: u64,
    /// Shares gathered (each verified against `data_root`) before the square was recoverable.
    shares_gathered: u64,
    /// Of which outside the original quadrant.
    parity_shares: u64,
    /// Shares each node served, in `--nodes` order.
    served: Vec<(String, u64)>,
    /// The rebuilt body.
    blobs: Vec<RebuiltBlob>,
}

#[derive(Debug, Serialize)]
struct RebuiltBlob {
    namespace: Namespace,
    size: usize,
    commitment: Hash,
}

/// Every cell of a `width × width` square (or only those outside the `k × k` original
/// quadrant), in an order the nodes cannot predict.
fn shuffled_cells(width: u64, parity_only: bool) -> Vec<(u64, u64)> {
    let k = width / 2;
    let mut cells: Vec<(u64, u64)> = (0..width)
        .flat_map(|row| (0..width).map(move |col| (row, col)))
        .filter(|&(row, col)| !parity_only || row >= k || col >= k)
        .collect();
    let mut state = random_seed();
    // Fisher–Yates.
    for i in (1..cells.len()).rev() {
        let j = (next_random(&mut state) % (i as u64 + 1)) as usize;
        cells.swap(i, j);
    }
    cells
}

/// xorshift64*: plenty for choosing cells, and the node cannot predict the seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // std seeds each `RandomState` from the operating system's randomness.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1
}

/// Runs `lamina da rebuild`: gathers verified shares of block `height` from the nodes until
/// the extended square is recoverable, decodes it row by row and column by column, checks
/// every row and column against the committed roots, and prints the body it holds.
pub async fn rebuild_command(args: RebuildArgs) -> anyhow::Result<()> {
    let clients: Vec<NodeClient> = args
        .nodes
        .iter()
        .map(|url| NodeClient::new(url))
        .collect::<anyhow::Result<_>>()?;
    let height = args.height;
    let first = &clients[0];
    let block: Value = first
        .get(&format!("/v1/blocks/{height}"))
        .await
        .with_context(|| format!("cannot fetch the header of block {height}"))?;
    let data_root: Hash = serde_json::from_value(block["header"]["data_root"].clone())
        .context("the block's header has no data_root")?;
    let status: Value = first.get("/v1/status").await?;
    let codec: CodecKind =
        serde_json::from_value(status["layers"]["data_availability"]["settings"]["codec"].clone())
            .context("the node does not say which codec its chain uses")?;
    let roots: SquareRoots = first
        .get(&format!("/v1/da/roots/{height}"))
        .await
        .with_context(|| format!("cannot fetch the row and column roots of block {height}"))?;
    let roots = AxisRoots::new(roots.row_roots, roots.col_roots, &data_root)
        .context("the node's row and column roots do not hash to the header's data_root")?;
    let width = roots.width() as u64;
    let mut partial = PartialSquare::new(roots.original_width())?;
    let mut served = vec![0u64; clients.len()];
    let (mut gathered, mut parity) = (0u64, 0u64);
    let k = width / 2;
    let cells = shuffled_cells(width, args.parity_only);
    for (turn, &(row, col)) in cells.iter().enumerate() {
        if partial.is_recoverable() {
            break;
        }
        // Start with a different node for each cell, to spread the load.
        for offset in 0..clients.len() {
            let node = (turn + offset) % clients.len();
            let Ok(answer) = clients[node]
                .get::<ShareAnswer>(&format!("/v1/da/shares/{height}/{row}/{col}"))
                .await
            else {
                continue;
            };
            let Ok(share) = hex::decode(&answer.share) else {
                continue;
            };
            let DataProof::Square(proof) = answer.proof else {
                continue;
            };
            if (answer.row, answer.col) != (row, col)
                || !DataProof::Square(proof.clone()).verify(&data_root, row, col, &share)
            {
                continue;
            }
            partial.insert_proven(row as usize, col as usize, &share, proof)?;
            served[node] += 1;
            gathered += 1;
            if row >= k || col >= k {
                parity += 1;
            }
            break;
        }
    }
    if !partial.is_recoverable() {
        bail!(
            "block {height} cannot be rebuilt from these nodes: {} more of its {} shares are \
             needed than they serve with valid proofs (gathered {gathered})",
            partial.unrecoverable_count(),
            width * width
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let repaired = tokio::task::spawn_blocking(move || {
        ExtendedSquare::repair(codec, partial, &roots, threads)
    })
    .await
    .context("the rebuilding thread failed")?;
    let square = match repaired {
        Ok(square) => square,
        Err(RepairError::BadEncoding(proof)) => {
            // The shares are committed in data_root but no codeword holds them: the
            // producer encoded the block wrongly. The proof lets anyone check it.
            proof
                .verify(&data_root, codec)
                .context("the bad-encoding proof does not verify")?;
            let report = serde_json::json!({
                "height": height,
                "data_root": data_root,
                "bad_encoding": proof,
            });
            if args.json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                out!(
                    "block {height} is badly encoded: {:?} {} is not a codeword of {}; its \
                     proof (any node checks it with POST /v1/da/bad-encoding):",
                    proof.axis,
                    proof.index,
                    codec.name()
                );
                out!("{}", serde_json::to_string(&report)?);
            }
            bail!("block {height} is badly encoded; its data cannot be trusted");
        }
        Err(error) => bail!("rebuilding block {height} failed: {error}"),
    };
    let body = layout::parse(&square.original_data())
        .map_err(|error| anyhow::anyhow!("the rebuilt data is not a block body: {error}"))?;
    let report = RebuildReport {
        height,
        data_root,
        width,
        shares_gathered: gathered,
        parity_shares: parity,
        served: args.nodes.iter().cloned().zip(served).collect(),
        blobs: body
            .iter()
            .map(|blob| RebuiltBlob {
                namespace: blob.namespace,
                size: blob.data.len(),
                commitment: blob.commitment(),
            })
            .collect(),
    };
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    out!(
        "rebuilt block {height} from {gathered} of its {} shares ({parity} parity), every row \
         and column matching data_root {data_root}",
        width * width
    );
    for (node, count) in &report.served {
        out!("  {count:>6} shares from {node}");
    }
    out!("body: {} blobs", report.blobs.len());
    for blob in &report.blobs {
        out!(
            "  {} {} bytes (commitment {})",
            blob.namespace,
            blob.size,
            blob.commitment
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_cells_cover_the_square_or_its_parity_once() {
        let all = shuffled_cells(4, false);
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 16);
        let parity = shuffled_cells(4, true);
        assert_eq!(parity.len(), 12);
        assert!(parity.iter().all(|&(r, c)| r >= 2 || c >= 2));
    }

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
