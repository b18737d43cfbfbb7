//! Settlement and bridge routes: optimistic batches, settlement-ledger accounts, submitted
//! settlement messages (deposits, withdrawal finalizations) and withdrawal proofs.

use axum::extract::State;
use axum::http::StatusCode;
use lamina_primitives::bridge::{
    Batch, BatchStatus, FinalizeWithdrawal, OutputPreimage, Withdrawal,
};
use lamina_primitives::codec;
use lamina_primitives::interfaces::settlement::{LedgerAccount, SettlementMessage};
use lamina_primitives::merkle::MerkleProof;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use super::handlers::parse_address;
use crate::network::Topic;
use crate::node::NodeContext;

/// Most batches one request returns.
const MAX_BATCHES_PER_PAGE: usize = 100;

/// Which batches to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BatchesQuery {
    /// First batch index (default 0).
    pub from: Option<u64>,
    /// How many (default and most: 100).
    pub limit: Option<usize>,
}

/// A page of batches.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchesResponse {
    /// The latest claim of each batch from `from`, in index order.
    pub batches: Vec<Batch>,
}

/// Claims of optimistic settlement: each batch's latest claim, its state (pending,
/// challenged, finalized, rejected) and deadline.
#[utoipa::path(get, path = "/v1/settlement/batches", tag = "settlement",
    params(BatchesQuery),
    responses((status = 200, body = BatchesResponse), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn batches(
    State(ctx): State<NodeContext>,
    Query(query): Query<BatchesQuery>,
) -> Result<Json<BatchesResponse>, ApiError> {
    let limit = query
        .limit
        .unwrap_or(MAX_BATCHES_PER_PAGE)
        .min(MAX_BATCHES_PER_PAGE);
    let batches = ctx
        .settlement
        .batches(query.from.unwrap_or(0), limit)
        .await?;
    Ok(Json(BatchesResponse { batches }))
}

async fn find_batch(ctx: &NodeContext, id: u64) -> Result<Batch, ApiError> {
    ctx.settlement
        .batches(id, 1)
        .await?
        .into_iter()
        .find(|batch| batch.index == id)
        .ok_or_else(|| {
            ApiError::not_found("batch_not_found", format!("batch {id} was never claimed"))
        })
}

/// One batch's latest claim.
#[utoipa::path(get, path = "/v1/settlement/batches/{id}", tag = "settlement",
    params(("id" = u64, Path, description = "Batch index")),
    responses((status = 200, body = Batch), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn batch(
    State(ctx): State<NodeContext>,
    Path(id): Path<u64>,
) -> Result<Json<Batch>, ApiError> {
    find_batch(&ctx, id).await.map(Json)
}

/// A settlement-ledger account: its balance (to deposit or bond) and next deposit nonce.
#[utoipa::path(get, path = "/v1/settlement/accounts/{address}", tag = "settlement",
    params(("address" = String, Path, description = "Address, 64 hex characters")),
    responses((status = 200, body = LedgerAccount), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn ledger_account(
    State(ctx): State<NodeContext>,
    Path(address): Path<String>,
) -> Result<Json<LedgerAccount>, ApiError> {
    let address = parse_address(&address)?;
    Ok(Json(ctx.settlement.ledger_account(address).await?))
}

/// A message queued for inclusion.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitMessageResponse {
    /// `queued`: it is gossiped to every node and goes into the next block any validator
    /// proposes; it takes effect when that block is applied.
    pub status: String,
}

/// Submit a settlement message: a signed `deposit`, a `finalize_withdrawal` (as
/// `/v1/bridge/withdrawals/{id}/proof` returns it), or a `claim` or `challenge`. It is
/// checked against the ledger as it stands and refused with the reason the ledger would
/// skip it for (e.g. a withdrawal finalized twice, before its batch is final, or with a
/// forged proof); accepted, it is gossiped, so whichever validator proposes next includes
/// it.
#[utoipa::path(post, path = "/v1/settlement/messages", tag = "settlement",
    request_body = SettlementMessage,
    responses((status = 202, body = SubmitMessageResponse), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn submit_message(
    State(ctx): State<NodeContext>,
    Json(message): Json<SettlementMessage>,
) -> Result<(StatusCode, Json<SubmitMessageResponse>), ApiError> {
    let gossip = ctx.network.as_ref().map(|_| codec::encode(&message));
    ctx.settlement.submit(message).await?;
    if let (Some(network), Some(encoded)) = (ctx.network.clone(), gossip) {
        // Every node queues it too, so whichever validator proposes next includes it; this
        // node still does when it proposes, so a failed publish loses nothing.
        tokio::spawn(async move {
            if let Err(error) = network.publish(Topic::Settlement, encoded).await {
                tracing::debug!(%error, "cannot gossip the settlement message");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitMessageResponse {
            status: "queued".into(),
        }),
    ))
}

/// A withdrawal with everything needed to finalize it on the settlement ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalProofResponse {
    /// The withdrawal.
    pub withdrawal: Withdrawal,
    /// The executed height whose block burned it.
    pub height: u64,
    /// The finalized batch proving it (the one covering `height`).
    pub batch: u64,
    /// That batch's output root.
    pub output_root: lamina_primitives::Hash,
    /// The output root's preimage, from this node's execution.
    pub preimage: OutputPreimage,
    /// Inclusion of the withdrawal's leaf under `preimage.withdrawals_root`.
    pub proof: MerkleProof,
    /// The message that credits it: POST it to `/v1/settlement/messages`.
    pub finalize: SettlementMessage,
}

/// The Merkle proof of a withdrawal against the output root of the finalized batch that
/// covers it, and the ready-made `finalize_withdrawal` message.
#[utoipa::path(get, path = "/v1/bridge/withdrawals/{id}/proof", tag = "settlement",
    params(("id" = u64, Path, description = "Withdrawal id (from the Withdraw transaction's receipt)")),
    responses((status = 200, body = WithdrawalProofResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 500, body = ErrorBody)))]
pub async fn withdrawal_proof(
    State(ctx): State<NodeContext>,
    Path(id): Path<u64>,
) -> Result<Json<WithdrawalProofResponse>, ApiError> {
    let found = ctx.execution.withdrawal(id).await?.ok_or_else(|| {
        ApiError::not_found(
            "withdrawal_not_found",
            format!("no withdrawal {id} has been executed"),
        )
    })?;
    let index = ctx
        .config
        .settlement
        .params(&ctx.genesis.validators)
        .batch_of(found.height);
    let not_final = |detail: String| {
        ApiError::new(
            StatusCode::CONFLICT,
            "withdrawal_not_final",
            format!(
                "withdrawal {id} was executed at height {}, in batch {index}, {detail}; \
                 it can be proven once that batch is finalized",
                found.height
            ),
        )
    };
    let batch = find_batch(&ctx, index).await.map_err(|error| {
        if error.status() == StatusCode::NOT_FOUND {
            not_final("which is not claimed yet".into())
        } else {
            error
        }
    })?;
    match batch.status {
        BatchStatus::Finalized { .. } => {}
        BatchStatus::Pending | BatchStatus::Challenged { .. } => {
            return Err(not_final(format!(
                "whose claim is open until height {}",
                batch.deadline
            )))
        }
        BatchStatus::Rejected { .. } => {
            return Err(not_final("whose last claim was rejected".into()))
        }
    }
    let executed = ctx
        .execution
        .executed_block(batch.last_height)
        .await?
        .ok_or_else(|| {
            ApiError::storage(format!("height {} is not executed", batch.last_height))
        })?;
    let preimage = executed.output_preimage();
    if preimage.output_root() != batch.output_root {
        return Err(ApiError::storage(format!(
            "this node's execution of height {} does not give the finalized output root of \
             batch {index}; ask another node",
            batch.last_height
        )));
    }
    let proof = ctx
        .execution
        .prove_withdrawal(id, batch.last_height)
        .await?
        .ok_or_else(|| {
            ApiError::storage(format!(
                "withdrawal {id} is missing from the withdrawals tree of height {}",
                batch.last_height
            ))
        })?;
    let finalize = SettlementMessage::FinalizeWithdrawal(FinalizeWithdrawal {
        batch: index,
        withdrawal: found.withdrawal,
        preimage,
        proof: proof.clone(),
    });
    Ok(Json(WithdrawalProofResponse {
        withdrawal: found.withdrawal,
        height: found.height,
        batch: index,
        output_root: batch.output_root,
        preimage,
        proof,
        finalize,
    }))
}
