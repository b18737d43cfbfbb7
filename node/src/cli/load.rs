//! `lamina load`: sends signed transfers to every node of a testnet at a steady rate, follows
//! the chain to see when each one commits, and reports throughput, rejections and commit
//! latency.
//!
//! Pacing: transaction `i` is due `i / rate` seconds after the start; the sender signs
//! whatever is due and sends it, then sleeps until the next one is due (at least
//! [`SEND_INTERVAL`]), so a slow moment is caught up instead of lowering the rate. What is due
//! at one moment goes to each node as one `POST /v1/transactions/batch` of up to
//! [`MAX_BATCH`] transactions, as a wallet or exchange sending many would. At most
//! [`MAX_IN_FLIGHT`] requests are outstanding; beyond that the sender waits, and the summary
//! shows the rate the nodes actually took.
//!
//! Commit detection: one task polls one node's latest block and reads every new block,
//! matching transaction hashes to their submit times. Latency is submit → the moment the
//! block was seen committed, so it includes up to one poll interval.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lamina_primitives::{Address, Keypair, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::UsageError;
use crate::testnet_file::TestnetFile;

/// Most submission requests outstanding at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Shortest pause between two rounds of sending: what comes due meanwhile travels together.
const SEND_INTERVAL: Duration = Duration::from_millis(10);
/// Most transactions in one request (about 43 KiB of JSON: under the nodes' default 64 KiB
/// body limit).
const MAX_BATCH: usize = 128;
/// How long accepted transactions get to commit after the last one is sent.
const COMMIT_WAIT: Duration = Duration::from_secs(30);
/// How often the chain follower asks for the latest block.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);
/// Timeout of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest accepted `--rate`.
const MAX_RATE: u64 = 1_000_000;
/// Highest accepted `--duration`, in seconds (a day).
const MAX_DURATION_S: u64 = 86_400;

/// Whether a refusal means the sender should refetch the account's nonce before its next
/// transfer. `nonce_too_low` / `nonce_too_high`: the counter is out of step with the node.
/// Any other refusal of a new transaction (mempool full, no answer, ...) leaves a gap at its
/// nonce that every later one would wait behind, so it is refilled from the node's nonce too.
/// Not `nonce_already_pending` or `already_pending`: that nonce is taken by a pending
/// transaction, and the counter has already moved past it.
fn needs_resync(code: &str) -> bool {
    !matches!(code, "nonce_already_pending" | "already_pending")
}

/// `lamina load`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The testnet.json of a running testnet or dev chain.
    #[arg(long)]
    pub testnet: PathBuf,
    /// Transactions per second to send.
    #[arg(long)]
    pub rate: u64,
    /// Seconds to send for.
    #[arg(long)]
    pub duration: u64,
    /// Send from the first ACCOUNTS accounts of the file [default: all of them].
    #[arg(long)]
    pub accounts: Option<usize>,
    /// Print the summary as one JSON object, without a progress bar.
    #[arg(long)]
    pub json: bool,
}

/// How many transactions are due `elapsed` after the start: transaction `i` is due at
/// `i / rate` seconds, and there are `total` in all.
pub fn due_count(rate: u64, elapsed: Duration, total: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    let due = u128::from(rate) * elapsed.as_nanos() / 1_000_000_000 + 1;
    u64::try_from(due).unwrap_or(u64::MAX).min(total)
}

/// When transaction `index` (from 0) is due, after the start.
pub fn due_at(rate: u64, index: u64) -> Duration {
    if rate == 0 {
        return Duration::MAX;
    }
    // Rounded up, so that `due_count` at this instant includes transaction `index`.
    let nanos = (u128::from(index) * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The `p`th percentile (0 < p ≤ 100) of ascending `sorted` values, by nearest rank:
/// the smallest value with at least `p`% of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Commit latency percentiles, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// What a load run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Target transactions per second.
    pub rate: u64,
    /// Seconds of sending asked for.
    pub duration_s: u64,
    /// Accounts sent from.
    pub accounts: usize,
    /// Nodes sent to.
    pub nodes: usize,
    /// Transactions submitted (each counted once, however often it was sent).
    pub sent: u64,
    /// Submissions of a transaction sent before and still awaited, made after a resync moved
    /// its sender's nonce back to it (a node may have dropped it, e.g. evicted from a full
    /// mempool). Not counted in `sent`, `accepted` or `rejected` unless the node had lost it
    /// and accepted it again (then `accepted`, once).
    #[serde(default)]
    pub resent: u64,
    /// Transactions the nodes accepted into their mempools.
    pub accepted: u64,
    /// Transactions seen in committed blocks.
    pub committed: u64,
    /// Refused submissions by `error_code` (`request_failed`: no answer from the node).
    pub rejected: BTreeMap<String, u64>,
    /// Accepted transactions not seen committed by the end.
    pub not_committed: u64,
    /// Committed transactions per second, from the first submission to the last commit.
    pub achieved_tps: f64,
    /// Submit → seen committed.
    pub latency_ms: Latency,
    /// Blocks committed during the run.
    pub blocks: u64,
    /// Mean time between those blocks (from their header timestamps), in milliseconds.
    pub block_interval_ms: Option<f64>,
    /// Whether the run was stopped early (Ctrl-C).
    pub interrupted: bool,
}

/// What the run observed, before it is reduced to a [`LoadSummary`].
#[derive(Debug, Default)]
struct Tracker {
    /// Submitted transactions not yet seen committed, by hash.
    pending: HashMap<String, Pending>,
    sent: u64,
    resent: u64,
    accepted: u64,
    committed: u64,
    rejected: BTreeMap<String, u64>,
    /// Submit → seen committed, in milliseconds.
    latencies_ms: Vec<f64>,
    first_submit: Option<Instant>,
    last_commit: Option<Instant>,
    /// Header timestamps of the blocks committed during the run, in height order.
    block_times_ms: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    sent_at: Instant,
    accepted: bool,
}

impl Tracker {
    fn accepted_pending(&self) -> u64 {
        self.pending.values().filter(|p| p.accepted).count() as u64
    }
}

/// The figures of a run from what it observed.
fn summarize(args: &Params, tracker: &Tracker, interrupted: bool) -> LoadSummary {
    let mut latencies = tracker.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let round = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
    let achieved_tps = match (tracker.first_submit, tracker.last_commit) {
        (Some(first), Some(last)) if last > first => {
            tracker.committed as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    };
    let blocks = tracker.block_times_ms.len() as u64;
    let block_interval_ms = match (
        tracker.block_times_ms.first(),
        tracker.block_times_ms.last(),
    ) {
        (Some(first), Some(last)) if blocks >= 2 => round(Some(
            last.saturating_sub(*first) as f64 / (blocks - 1) as f64,
        )),
        _ => None,
    };
    LoadSummary {
        rate: args.rate,
        duration_s: args.duration_s,
        accounts: args.accounts,
        nodes: args.nodes,
        sent: tracker.sent,
        resent: tracker.resent,
        accepted: tracker.accepted,
        committed: tracker.committed,
        rejected: tracker.rejected.clone(),
        not_committed: tracker.accepted_pending(),
        achieved_tps: (achieved_tps * 10.0).round() / 10.0,
        latency_ms: Latency {
            p50: round(percentile(&latencies, 50.0)),
            p90: round(percentile(&latencies, 90.0)),
            p99: round(percentile(&latencies, 99.0)),
        },
        blocks,
        block_interval_ms,
        interrupted,
    }
}

/// The summary as text.
pub fn render(summary: &LoadSummary) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let rejected = if summary.rejected.is_empty() {
        "0".to_string()
    } else {
        let total: u64 = summary.rejected.values().sum();
        let codes: Vec<String> = summary
            .rejected
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        format!("{total} ({})", codes.join(", "))
    };
    let mut lines = vec![
        format!(
            "load: {} tx/s for {} s from {} accounts to {} nodes{}",
            summary.rate,
            summary.duration_s,
            summary.accounts,
            summary.nodes,
            if summary.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        ),
        format!("  sent           {}", summary.sent),
        format!("  resent         {}", summary.resent),
        format!("  accepted       {}", summary.accepted),
        format!("  committed      {}", summary.committed),
        format!("  rejected       {rejected}"),
        format!("  not committed  {}", summary.not_committed),
        format!("  achieved       {:.1} tx/s", summary.achieved_tps),
        format!(
            "  latency        p50 {}  p90 {}  p99 {}",
            ms(summary.latency_ms.p50),
            ms(summary.latency_ms.p90),
            ms(summary.latency_ms.p99)
        ),
    ];
    lines.push(format!(
        "  blocks         {} (mean interval {})",
        summary.blocks,
        ms(summary.block_interval_ms)
    ));
    lines.join("\n")
}

/// The checked arguments.
#[derive(Debug, Clone)]
struct Params {
    rate: u64,
    duration_s: u64,
    accounts: usize,
    nodes: usize,
}

/// Reads the testnet file and checks the arguments against it.
fn check_args(args: &LoadArgs) -> Result<(TestnetFile, Params), UsageError> {
    if args.rate == 0 || args.rate > MAX_RATE {
        return Err(UsageError(format!(
            "--rate must be between 1 and {MAX_RATE} transactions per second, got {}",
            args.rate
        )));
    }
    if args.duration == 0 || args.duration > MAX_DURATION_S {
        return Err(UsageError(format!(
            "--duration must be between 1 and {MAX_DURATION_S} seconds, got {}",
            args.duration
        )));
    }
    let file = TestnetFile::read(&args.testnet).map_err(|e| {
        UsageError(format!(
            "--testnet: {e:#} (it is written by `lamina testnet` and `lamina dev` in their \
             directory)"
        ))
    })?;
    if file.nodes.is_empty() {
        return Err(UsageError(format!(
            "--testnet: {} lists no nodes",
            args.testnet.display()
        )));
    }
    if file.accounts.is_empty() {
        return Err(UsageError(format!(
            "--testnet: {} lists no accounts to send from",
            args.testnet.display()
        )));
    }
    let accounts = args.accounts.unwrap_or(file.accounts.len());
    if accounts == 0 || accounts > file.accounts.len() {
        return Err(UsageError(format!(
            "--accounts must be between 1 and {} (the accounts in {}), got {accounts}",
            file.accounts.len(),
            args.testnet.display()
        )));
    }
    for i in 0..file.accounts.len() {
        file.account_key(i).map_err(|e| {
            UsageError(format!(
                "--testnet: account {i} of {}: {e}",
                args.testnet.display()
            ))
        })?;
    }
    let params = Params {
        rate: args.rate,
        duration_s: args.duration,
        accounts,
        nodes: file.nodes.len(),
    };
    Ok((file, params))
}

/// Locks the tracker; a panic elsewhere while holding it leaves counters that are still
/// worth reporting, so a poisoned lock is used as is.
fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parts of a `/v1/blocks/...` answer the follower reads.
#[derive(Debug, Deserialize)]
struct BlockView {
    header: HeaderView,
    transactions: Vec<TransactionView>,
}

#[derive(Debug, Deserialize)]
struct HeaderView {
    height: u64,
    timestamp_ms: u64,
}

#[derive(Debug, Deserialize)]
struct TransactionView {
    hash: String,
}

/// GET a JSON answer; `Ok(None)` for a 404 (no block yet).
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<Option<T>> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(anyhow!("{url} answered {}", response.status()));
    }
    Ok(Some(response.json().await.with_context(|| {
        format!("unexpected answer from {url}")
    })?))
}

/// The height of the latest committed block (0 before the first).
async fn latest_height(client: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let block: Option<BlockView> = get_json(client, &format!("{url}/v1/blocks/latest")).await?;
    Ok(block.map_or(0, |b| b.header.height))
}

/// Follows the chain from above `from`, recording every block and the commits of tracked
/// transactions; switches to the next node when one stops answering. Runs until aborted.
async fn follow(
    client: reqwest::Client,
    urls: Vec<String>,
    from: u64,
    tracker: Arc<Mutex<Tracker>>,
) {
    let mut node = 0;
    let mut last = from;
    loop {
        let url = &urls[node % urls.len()];
        if follow_once(&client, url, &mut last, &tracker)
            .await
            .is_err()
        {
            node += 1;
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// Reads the blocks above `last` from one node, advancing `last` past each one recorded (so
/// a failure part-way neither loses nor double-counts a block).
async fn follow_once(
    client: &reqwest::Client,
    url: &str,
    last: &mut u64,
    tracker: &Mutex<Tracker>,
) -> anyhow::Result<()> {
    let Some(latest) = get_json::<BlockView>(client, &format!("{url}/v1/blocks/latest")).await?
    else {
        return Ok(());
    };
    let height = latest.header.height;
    for h in *last + 1..height {
        let block: BlockView = get_json(client, &format!("{url}/v1/blocks/{h}"))
            .await?
            .ok_or_else(|| anyhow!("block {h} missing"))?;
        record_block(tracker, &block, Instant::now());
        *last = h;
    }
    if height > *last {
        record_block(tracker, &latest, Instant::now());
        *last = height;
    }
    Ok(())
}

fn record_block(tracker: &Mutex<Tracker>, block: &BlockView, seen: Instant) {
    let mut tracker = lock(tracker);
    tracker.block_times_ms.push(block.header.timestamp_ms);
    for transaction in &block.transactions {
        if let Some(pending) = tracker
            .pending
            .remove(&transaction.hash.to_ascii_lowercase())
        {
            tracker.committed += 1;
            tracker
                .latencies_ms
                .push(seen.duration_since(pending.sent_at).as_secs_f64() * 1000.0);
            tracker.last_commit = Some(seen);
        }
    }
}

/// The answer to one submission.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Rejected(String),
}

/// Submits `transactions` (hex) in one batch request: an outcome for each, or, when the
/// request as a whole failed, the one reason for all of them.
async fn submit(
    client: &reqwest::Client,
    url: &str,
    transactions: &[&str],
) -> Result<Vec<Outcome>, String> {
    let count = transactions.len();
    let body = serde_json::json!({ "transactions": transactions });
    let response = match client.post(url).json(&body).send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Err("timeout".into()),
        Err(_) => return Err("request_failed".into()),
    };
    let status = response.status();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(error_code(&answer).unwrap_or_else(|| format!("http_{}", status.as_u16())));
    }
    match answer.get("results").and_then(Value::as_array) {
        Some(results) if results.len() == count => Ok(results
            .iter()
            .map(|result| match result.get("hash") {
                Some(_) => Outcome::Accepted,
                None => Outcome::Rejected(error_code(result).unwrap_or_else(|| "unknown".into())),
            })
            .collect()),
        _ => Err("bad_answer".into()),
    }
}

fn error_code(body: &Value) -> Option<String> {
    body.get("error_code")?.as_str().map(str::to_string)
}

/// A transaction sent and not answered yet.
#[derive(Debug)]
struct Submission {
    hash: String,
    hex: String,
    /// Its sender's resync flag.
    resync: Arc<AtomicBool>,
    /// Whether the transaction was sent before and is still awaited.
    resend: bool,
}

/// Records the node's answer about one submitted transaction.
fn record_outcome(tracker: &mut Tracker, submission: &Submission, outcome: Outcome) {
    if submission.resend {
        record_resend_outcome(tracker, submission, outcome);
        return;
    }
    match outcome {
        Outcome::Accepted => {
            tracker.accepted += 1;
            if let Some(pending) = tracker.pending.get_mut(&submission.hash) {
                pending.accepted = true;
            }
        }
        Outcome::Rejected(code) => {
            if tracker.pending.remove(&submission.hash).is_none() {
                // Committed before the answer came back (e.g. the answer timed out): it was
                // accepted after all.
                tracker.accepted += 1;
            } else {
                if needs_resync(&code) {
                    submission.resync.store(true, Ordering::Relaxed);
                }
                *tracker.rejected.entry(code).or_default() += 1;
            }
        }
    }
}

/// Records the answer to a re-sent transaction. The first answer was counted already, and
/// the transaction stays awaited whatever this one says: a node that refuses it now (even
/// as already pending) may have it, or another node may.
fn record_resend_outcome(tracker: &mut Tracker, submission: &Submission, outcome: Outcome) {
    match outcome {
        Outcome::Accepted => {
            // The node had lost it (or never had it: the first answer was lost).
            if let Some(pending) = tracker.pending.get_mut(&submission.hash) {
                if !pending.accepted {
                    pending.accepted = true;
                    tracker.accepted += 1;
                }
            }
        }
        Outcome::Rejected(code) => {
            if needs_resync(&code) {
                submission.resync.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// An account the load sends from.
#[derive(Debug)]
struct Sender {
    key: Keypair,
    to: Address,
    next_nonce: u64,
    /// Set when a submission from this account was refused in a way that leaves the
    /// account's nonces out of step with the node's; the next send refetches the nonce.
    resync: Arc<AtomicBool>,
}

/// The account's next nonce as a node sees it (asking each node in turn until one answers).
async fn fetch_nonce(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    address: &Address,
) -> anyhow::Result<u64> {
    let mut last_error = anyhow!("no nodes");
    for i in 0..urls.len() {
        let url = format!("{}/v1/accounts/{address}", urls[(first + i) % urls.len()]);
        match get_json::<Value>(client, &url).await {
            Ok(Some(account)) => {
                return account
                    .get("nonce")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| anyhow!("{url}: the answer has no nonce"))
            }
            Ok(None) => last_error = anyhow!("{url}: not found"),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    urls: Vec<String>,
    chain_id: String,
    tracker: Arc<Mutex<Tracker>>,
    in_flight: Arc<Semaphore>,
    bar: ProgressBar,
}

/// Sends `total` transactions at `rate`, round-robin over accounts and nodes.
async fn send_all(shared: &Shared, senders: &mut [Sender], rate: u64, total: u64) {
    let start = tokio::time::Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let round = tokio::time::Instant::now();
        let due = due_count(rate, start.elapsed(), total);
        let mut batches: Vec<Vec<Submission>> = shared.urls.iter().map(|_| Vec::new()).collect();
        while sent < due {
            let node = (sent % shared.urls.len() as u64) as usize;
            let sender = &mut senders[(sent % senders.len() as u64) as usize];
            batches[node].push(next_submission(shared, sender, node).await);
            if batches[node].len() == MAX_BATCH {
                let batch = std::mem::take(&mut batches[node]);
                if !dispatch(shared, node, batch).await {
                    return;
                }
            }
            sent += 1;
        }
        for (node, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() && !dispatch(shared, node, batch).await {
                return;
            }
        }
        shared.bar.set_position(sent);
        if sent < total {
            let next = (start + due_at(rate, sent)).max(round + SEND_INTERVAL);
            tokio::time::sleep_until(next).await;
        }
    }
}

/// Signs `sender`'s next transfer and tracks it as sent.
async fn next_submission(shared: &Shared, sender: &mut Sender, node: usize) -> Submission {
    if sender.resync.swap(false, Ordering::Relaxed) {
        if let Ok(nonce) =
            fetch_nonce(&shared.client, &shared.urls, node, &sender.key.address()).await
        {
            sender.next_nonce = nonce;
        }
    }
    let transaction = Transaction::transfer(
        &shared.chain_id,
        &sender.key,
        sender.next_nonce,
        sender.to,
        1,
    );
    sender.next_nonce += 1;
    let hash = transaction.hash().to_string();
    let mut tracker = lock(&shared.tracker);
    // After a resync the counter may be back at a nonce whose transfer (the very same
    // transaction: same nonce, recipient and amount) is still awaited. It is sent again,
    // since the node may have dropped it (a full mempool evicts transactions that wait
    // behind a nonce gap, without telling anyone): skipping it would leave a gap that every
    // later transfer of the account waits behind for good. A node that still has it answers
    // `already_pending` before checking the signature, which costs it little.
    let resend = tracker.pending.contains_key(&hash);
    if resend {
        tracker.resent += 1;
    } else {
        // Tracked before it is sent: its block may be seen before the node answers.
        let now = Instant::now();
        tracker.sent += 1;
        tracker.first_submit.get_or_insert(now);
        tracker.pending.insert(
            hash.clone(),
            Pending {
                sent_at: now,
                accepted: false,
            },
        );
    }
    Submission {
        hash,
        hex: hex::encode(transaction.encode()),
        resync: sender.resync.clone(),
        resend,
    }
}

/// Sends `batch` to node `node` in the background, once fewer than [`MAX_IN_FLIGHT`]
/// requests are outstanding. `false` when the run is over (the limit was closed).
async fn dispatch(shared: &Shared, node: usize, batch: Vec<Submission>) -> bool {
    let Ok(permit) = shared.in_flight.clone().acquire_owned().await else {
        return false;
    };
    let url = format!("{}/v1/transactions/batch", shared.urls[node]);
    let client = shared.client.clone();
    let tracker = shared.tracker.clone();
    let bar = shared.bar.clone();
    tokio::spawn(async move {
        let hexes: Vec<&str> = batch.iter().map(|s| s.hex.as_str()).collect();
        let outcomes = match submit(&client, &url, &hexes).await {
            Ok(outcomes) => outcomes,
            Err(code) => batch
                .iter()
                .map(|_| Outcome::Rejected(code.clone()))
                .collect(),
        };
        let mut tracker = lock(&tracker);
        for (submission, outcome) in batch.iter().zip(outcomes) {
            record_outcome(&mut tracker, submission, outcome);
        }
        let rejected: u64 = tracker.rejected.values().sum();
        bar.set_message(format!(
            "accepted {} committed {} rejected {rejected}",
            tracker.accepted, tracker.committed
        ));
        drop(permit);
    });
    true
}

/// `lamina load`
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let (file, params) = check_args(&args)?;
    let total = params.rate * params.duration_s;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    let urls: Vec<String> = file
        .nodes
        .iter()
        .map(|n| n.http.trim_end_matches('/').to_string())
        .collect();

    let mut senders = Vec::with_capacity(params.accounts);
    for i in 0..params.accounts {
        let key = file.account_key(i)?;
        let to = file.accounts[(i + 1) % file.accounts.len()].address;
        let next_nonce = fetch_nonce(&client, &urls, 0, &key.address())
            .await
            .with_context(|| format!("cannot read the nonce of account {i}"))?;
        senders.push(Sender {
            key,
            to,
            next_nonce,
            resync: Arc::new(AtomicBool::new(false)),
        });
    }
    let from = latest_height(&client, &urls[0]).await?;
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let follower = tokio::spawn(follow(client.clone(), urls.clone(), from, tracker.clone()));

    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} sent  {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    };
    let shared = Shared {
        client,
        urls,
        chain_id: file.chain_id.clone(),
        tracker: tracker.clone(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        bar: bar.clone(),
    };

    let stop = super::stop_signal();
    tokio::pin!(stop);
    let mut interrupted = false;
    tokio::select! {
        _ = send_all(&shared, &mut senders, params.rate, total) => {}
        _ = &mut stop => interrupted = true,
    }
    if !interrupted {
        // Every answer in, then the accepted transactions get their time to commit.
        let _ = shared.in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        let deadline = Instant::now() + COMMIT_WAIT;
        loop {
            let waiting = lock(&tracker).accepted_pending();
            if waiting == 0 || Instant::now() >= deadline {
                break;
            }
            bar.set_message(format!("waiting for {waiting} transactions to commit"));
            tokio::select! {
                _ = &mut stop => { interrupted = true; break; }
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
        }
    }
    follower.abort();
    bar.finish_and_clear();
    let summary = summarize(&params, &lock(&tracker), interrupted);
    if args.json {
        out!("{}", serde_json::to_string(&summary)?);
    } else {
        out!("{}", render(&summary));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn pacing_spreads_transactions_evenly() {
        // 50 tx/s: one every 20 ms, the first at once.
        assert_eq!(due_count(50, Duration::ZERO, 150), 1);
        assert_eq!(due_count(50, Duration::from_millis(19), 150), 1);
        assert_eq!(due_count(50, Duration::from_millis(20), 150), 2);
        assert_eq!(due_count(50, Duration::from_secs(1), 150), 51);
        // Never more than the total, however late.
        assert_eq!(due_count(50, Duration::from_secs(100), 150), 150);
        assert_eq!(due_at(50, 0), Duration::ZERO);
        assert_eq!(due_at(50, 1), Duration::from_millis(20));
        assert_eq!(due_at(50, 149), Duration::from_millis(2980));
        // The two agree: transaction i is due exactly at due_at(i).
        for rate in [1, 3, 7, 50, 1000, 999_999] {
            for i in [0u64, 1, 2, 10, 999] {
                assert_eq!(
                    due_count(rate, due_at(rate, i), u64::MAX),
                    i + 1,
                    "rate {rate} i {i}"
                );
            }
        }
        // Huge values saturate instead of overflowing.
        assert_eq!(due_count(MAX_RATE, Duration::MAX, 10), 10);
        assert_eq!(due_count(0, Duration::from_secs(1), 10), 0);
    }

    #[test]
    fn only_refusals_that_leave_a_gap_resync_the_nonce() {
        assert!(needs_resync("nonce_too_low"));
        assert!(needs_resync("nonce_too_high"));
        assert!(needs_resync("mempool_full"));
        assert!(needs_resync("request_failed"));
        assert!(!needs_resync("nonce_already_pending"));
        assert!(!needs_resync("already_pending"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 90.0), Some(90.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        let few = [10.0, 20.0, 30.0];
        assert_eq!(percentile(&few, 50.0), Some(20.0));
        assert_eq!(percentile(&few, 90.0), Some(30.0));
        assert_eq!(percentile(&few, 1.0), Some(10.0));
    }

    fn params() -> Params {
        Params {
            rate: 100,
            duration_s: 2,
            accounts: 10,
            nodes: 4,
        }
    }

    #[test]
    fn summary_counts_rates_latency_and_block_interval() {
        let start = Instant::now();
        let mut tracker = Tracker {
            sent: 5,
            accepted: 4,
            committed: 3,
            latencies_ms: vec![300.0, 100.0, 200.0],
            first_submit: Some(start),
            last_commit: Some(start + Duration::from_millis(1500)),
            block_times_ms: vec![1_000, 1_200, 1_400, 1_600],
            ..Tracker::default()
        };
        tracker.rejected.insert("nonce_too_low".into(), 1);
        tracker.pending.insert(
            "a".into(),
            Pending {
                sent_at: start,
                accepted: true,
            },
        );
        tracker.pending.insert(
            "b".into(),
            Pending {
                sent_at: start,
                accepted: false,
            },
        );
        let summary = summarize(&params(), &tracker, false);
        assert_eq!(summary.sent, 5);
        assert_eq!(summary.accepted, 4);
        assert_eq!(summary.committed, 3);
        assert_eq!(summary.not_committed, 1);
        assert_eq!(summary.achieved_tps, 2.0);
        assert_eq!(summary.latency_ms.p50, Some(200.0));
        assert_eq!(summary.latency_ms.p99, Some(300.0));
        assert_eq!(summary.blocks, 4);
        assert_eq!(summary.block_interval_ms, Some(200.0));
        let text = render(&summary);
        assert!(text.contains("committed      3"), "{text}");
        assert!(
            text.contains("rejected       1 (nonce_too_low 1)"),
            "{text}"
        );
        assert!(text.contains("p50 200.0 ms"), "{text}");
        assert!(text.contains("mean interval 200.0 ms"), "{text}");
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["committed"], 3);
        assert_eq!(json["rejected"]["nonce_too_low"], 1);
        assert_eq!(json["latency_ms"]["p90"], 300.0);
        let back: LoadSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn an_empty_run_has_no_rates_or_percentiles() {
        let summary = summarize(&params(), &Tracker::default(), true);
        assert_eq!(summary.achieved_tps, 0.0);
        assert_eq!(summary.latency_ms.p50, None);
        assert_eq!(summary.block_interval_ms, None);
        assert!(render(&summary).contains("(interrupted)"));
        assert!(render(&summary).contains("p50 -"));
    }

    #[test]
    fn blocks_resolve_pending_transactions() {
        let tracker = Mutex::new(Tracker::default());
        let start = Instant::now();
        lock(&tracker).pending.insert(
            "ab".into(),
            Pending {
                sent_at: start,
                accepted: true,
            },
        );
        let block = BlockView {
            header: HeaderView {
                height: 3,
                timestamp_ms: 42,
            },
            transactions: vec![
                TransactionView { hash: "AB".into() },
                TransactionView { hash: "cd".into() },
            ],
        };
        record_block(&tracker, &block, start + Duration::from_millis(250));
        let tracker = lock(&tracker);
        assert_eq!(tracker.committed, 1);
        assert!(tracker.pending.is_empty());
        assert_eq!(tracker.latencies_ms, vec![250.0]);
        assert_eq!(tracker.block_times_ms, vec![42]);
    }

    #[test]
    fn a_resend_keeps_the_transaction_awaited_and_counts_it_once() {
        let mut tracker = Tracker {
            sent: 1,
            accepted: 1,
            ..Tracker::default()
        };
        let start = Instant::now();
        tracker.pending.insert(
            "ab".into(),
            Pending {
                sent_at: start,
                accepted: true,
            },
        );
        let resync = Arc::new(AtomicBool::new(false));
        let resend = Submission {
            hash: "ab".into(),
            hex: String::new(),
            resync: resync.clone(),
            resend: true,
        };
        // Still pending at the node, or accepted again after it was dropped: nothing new.
        record_outcome(
            &mut tracker,
            &resend,
            Outcome::Rejected("already_pending".into()),
        );
        record_outcome(&mut tracker, &resend, Outcome::Accepted);
        assert_eq!((tracker.accepted, tracker.pending.len()), (1, 1));
        assert!(tracker.rejected.is_empty());
        assert!(!resync.load(Ordering::Relaxed));
        // Refused for a reason that leaves a gap: resync again, still awaited (another node
        // may have it).
        record_outcome(
            &mut tracker,
            &resend,
            Outcome::Rejected("mempool_full".into()),
        );
        assert!(resync.load(Ordering::Relaxed));
        assert_eq!(tracker.pending.len(), 1);
        assert!(tracker.rejected.is_empty());
        // A first answer that was refused, then a resend accepted: counted accepted once.
        tracker.pending.get_mut("ab").unwrap().accepted = false;
        record_outcome(&mut tracker, &resend, Outcome::Accepted);
        record_outcome(&mut tracker, &resend, Outcome::Accepted);
        assert_eq!(tracker.accepted, 2);
    }

    fn load_args(testnet: PathBuf, rate: u64, duration: u64, accounts: Option<usize>) -> LoadArgs {
        LoadArgs {
            testnet,
            rate,
            duration,
            accounts,
            json: true,
        }
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("testnet.json");
        let file = TestnetFile {
            chain_id: "lamina-testnet".into(),
            nodes: vec![crate::testnet_file::TestnetNode {
                name: "node0".into(),
                http: "http://127.0.0.1:1".into(),
                validator: None,
                p2p: None,
            }],
            accounts: super::super::init::dev_accounts(3),
        };
        file.write(&path).unwrap();
        let err = |args: LoadArgs| check_args(&args).unwrap_err().0;
        assert!(err(load_args(dir.path().join("none.json"), 1, 1, None)).contains("none.json"));
        std::fs::write(dir.path().join("bad.json"), "{").unwrap();
        assert!(err(load_args(dir.path().join("bad.json"), 1, 1, None)).contains("bad.json"));
        assert!(err(load_args(path.clone(), 0, 1, None)).contains("--rate"));
        assert!(err(load_args(path.clone(), 1, 0, None)).contains("--duration"));
        let message = err(load_args(path.clone(), 1, 1, Some(4)));
        assert!(
            message.contains("--accounts must be between 1 and 3"),
            "{message}"
        );
        assert!(err(load_args(path.clone(), 1, 1, Some(0))).contains("--accounts"));
        let (_, params) = check_args(&load_args(path.clone(), 5, 2, None)).unwrap();
        assert_eq!((params.accounts, params.nodes), (3, 1));
        let (_, params) = check_args(&load_args(path, 5, 2, Some(2))).unwrap();
        assert_eq!(params.accounts, 2);
    }
}
