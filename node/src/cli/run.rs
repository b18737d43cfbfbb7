//! `lamina run --config FILE`, and the live status line shared with `lamina dev`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use super::StatusLine;
use crate::config::NodeConfig;
use crate::node::{NodeContext, RunningNode};

/// `lamina run`
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path)?;
    let node = RunningNode::start(config).await?;
    out!("node running; HTTP API on http://{}", node.http_addr);
    serve_until_stopped(node).await
}

/// Shows the status line until Ctrl-C or SIGTERM, then stops the node cleanly; exits with an
/// error if one of the node's layers stops on its own.
pub async fn serve_until_stopped(mut node: RunningNode) -> anyhow::Result<()> {
    let status = tokio::spawn(status_line(node.context.clone()));
    let failure = tokio::select! {
        _ = super::stop_signal() => None,
        err = node.failed() => Some(err),
    };
    status.abort();
    if let Some(err) = failure {
        let _ = node.stop().await;
        return Err(err.context("the node cannot continue"));
    }
    if std::io::stdout().is_terminal() {
        out!();
    }
    out!("stopping...");
    node.stop().await?;
    out!("stopped; every committed block is on disk");
    Ok(())
}

/// Height, settled height and transaction rate: rewritten in place on a terminal, one line
/// every 10 s otherwise (so logs and pipes stay readable).
async fn status_line(ctx: NodeContext) {
    let status = StatusLine::stdout();
    let mut last = (Instant::now(), ctx.metrics.transactions_executed.get());
    let mut ticker = tokio::time::interval(status.period());
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (Ok(consensus), Ok(settlement), Ok(execution)) = (
            ctx.consensus.status().await,
            ctx.settlement.status().await,
            ctx.execution.status().await,
        ) else {
            return;
        };
        let executed = ctx.metrics.transactions_executed.get();
        let rate = (executed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), executed);
        status.show(&format!(
            "height {} | executed {} | settled {} | mempool {} | {:.1} tx/s",
            consensus.committed_height,
            execution.executed_height,
            settlement.settled_height,
            execution.mempool_transactions,
            rate
        ));
    }
}
