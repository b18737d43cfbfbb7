//! The route handlers and their request/response types.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use lamina_primitives::codec;
use lamina_primitives::da::NamespaceProof;
use lamina_primitives::interfaces::da::{
    DaError, DataProof, SharePosition, ShareWithProof, SquareRoots,
};
use lamina_primitives::interfaces::settlement::OptimisticSummary;
use lamina_primitives::interfaces::RequestError;
use lamina_primitives::state_proof::StateProof;
use lamina_primitives::{
    Account, Address, Blob, BlockHeader, Certificate, CommittedBlock, Equivocation, Hash,
    Namespace, Receipt, Transaction,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::archive;
use crate::config::kind_of;
use crate::network::{NetworkHandle, Topic};
use crate::node::NodeContext;

/// Implementation and settings of one layer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayerInfo {
    /// The implementation (`solo`, `sequential`, `replicated`, `attested`, ...).
    pub kind: String,
    /// Its resolved settings, as in the config file.
    #[schema(value_type = Object)]
    pub settings: Value,
}

/// Each layer's implementation.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayersInfo {
    /// Consensus engine.
    pub consensus: LayerInfo,
    /// Executor.
    pub execution: LayerInfo,
    /// DA scheme.
    pub data_availability: LayerInfo,
    /// Settlement mode.
    pub settlement: LayerInfo,
}

/// The node's view of the chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// Chain id.
    pub chain_id: String,
    /// Node software version.
    pub version: String,
    /// Highest committed height.
    pub height: u64,
    /// Hash of that block.
    pub latest_block_hash: Hash,
    /// Highest executed height.
    pub executed_height: u64,
    /// State root at the executed height.
    pub state_root: Hash,
    /// Highest settled height.
    pub settled_height: u64,
    /// Its state root.
    pub settled_state_root: Option<Hash>,
    /// The settlement layer's progress.
    pub settlement: SettlementInfo,
    /// This node's validator address, if it validates.
    pub validator: Option<Address>,
    /// Transactions waiting in the mempool.
    pub mempool_transactions: usize,
    /// Active implementation of each layer.
    pub layers: LayersInfo,
    /// The consensus engine's progress.
    pub consensus: ConsensusInfo,
    /// The data-availability layer's progress.
    pub data_availability: DaInfo,
    /// The peer-to-peer network; `null` on a node without one.
    pub network: Option<NetworkInfo>,
}

/// The consensus engine's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsensusInfo {
    /// Engine name (`solo`, `bft`).
    pub engine: String,
    /// Round of the height being decided.
    pub round: u32,
    /// Number of validators.
    pub validators: usize,
}

/// The data-availability layer's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct DaInfo {
    /// Scheme name (`replicated`, `reed-solomon`).
    pub scheme: String,
    /// Highest height whose data this node stores.
    pub stored_height: u64,
    /// Outside blobs waiting for a block (`POST /v1/da/blobs`).
    pub pending_blobs: usize,
    /// Their total size in bytes.
    pub pending_blob_bytes: u64,
    /// Heights at or below this are kept only as this node's rows (0: none pruned).
    pub pruned_through: u64,
}

/// The settlement layer's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementInfo {
    /// Mode name (`attested`, `optimistic`).
    pub mode: String,
    /// Highest settled height.
    pub settled_height: u64,
    /// Last block applied to the settlement ledger.
    pub applied_height: u64,
    /// Claims and the bridge, in `optimistic` mode.
    pub optimistic: Option<OptimisticSummary>,
}

/// This node on the peer-to-peer network.
#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkInfo {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// The address it listens on, with its peer id.
    pub listen: String,
    /// Peers connected (that passed the handshake).
    pub peers: usize,
}

fn layer_info<T: Serialize>(settings: &T) -> LayerInfo {
    LayerInfo {
        kind: kind_of(settings),
        settings: serde_json::to_value(settings).unwrap_or(Value::Null),
    }
}

/// Chain and node status.
#[utoipa::path(get, path = "/v1/status", tag = "chain",
    responses((status = 200, body = StatusResponse), (status = 503, body = ErrorBody)))]
pub async fn status(State(ctx): State<NodeContext>) -> Result<Json<StatusResponse>, ApiError> {
    let consensus = ctx.consensus.status().await?;
    let execution = ctx.execution.status().await?;
    let settlement = ctx.settlement.status().await?;
    let da = ctx.da.status().await?;
    let network = match &ctx.network {
        Some(network) => Some(NetworkInfo {
            peer_id: network.local_peer_id().to_string(),
            listen: network.listen_addr().to_string(),
            peers: network.peers().await.map_or(0, |peers| peers.len()),
        }),
        None => None,
    };
    let config = &ctx.config;
    Ok(Json(StatusResponse {
        chain_id: ctx.genesis.chain_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        height: consensus.committed_height,
        latest_block_hash: consensus.last_block_hash,
        executed_height: execution.executed_height,
        state_root: execution.state_root,
        settled_height: settlement.settled_height,
        settled_state_root: settlement.settled_state_root,
        settlement: SettlementInfo {
            mode: settlement.mode,
            settled_height: settlement.settled_height,
            applied_height: settlement.applied_height,
            optimistic: settlement.optimistic,
        },
        validator: consensus.validator,
        mempool_transactions: execution.mempool_transactions,
        layers: LayersInfo {
            consensus: layer_info(&config.consensus),
            execution: layer_info(&config.execution),
            data_availability: layer_info(&config.data_availability),
            settlement: layer_info(&config.settlement),
        },
        consensus: ConsensusInfo {
            engine: consensus.engine,
            round: consensus.round,
            validators: consensus.validators,
        },
        data_availability: DaInfo {
            scheme: da.scheme,
            stored_height: da.stored_height,
            pending_blobs: da.pending_blobs,
            pending_blob_bytes: da.pending_blob_bytes,
            pruned_through: da.pruned_through,
        },
        network,
    }))
}

/// Equivocations this node has seen: two different signed votes from one validator for the
/// same height, round and kind, oldest first.
#[utoipa::path(get, path = "/v1/consensus/evidence", tag = "chain",
    responses((status = 200, body = Vec<Equivocation>), (status = 503, body = ErrorBody)))]
pub async fn evidence(State(ctx): State<NodeContext>) -> Result<Json<Vec<Equivocation>>, ApiError> {
    Ok(Json(ctx.consensus.evidence().await?))
}

/// A connected peer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeerResponse {
    /// Its libp2p peer id.
    pub peer_id: String,
    /// An address of it, if known.
    pub address: Option<String>,
    /// Its committed height at the last status exchange.
    pub height: Option<u64>,
}

/// The peers this node is connected to (empty without a network).
#[utoipa::path(get, path = "/v1/network/peers", tag = "chain",
    responses((status = 200, body = Vec<PeerResponse>), (status = 503, body = ErrorBody)))]
pub async fn peers(State(ctx): State<NodeContext>) -> Result<Json<Vec<PeerResponse>>, ApiError> {
    let Some(network) = &ctx.network else {
        return Ok(Json(Vec::new()));
    };
    let peers = network.peers().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "network_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(
        peers
            .into_iter()
            .map(|peer| PeerResponse {
                peer_id: peer.peer_id.to_string(),
                address: peer.address.map(|a| a.to_string()),
                height: peer.height,
            })
            .collect(),
    ))
}

/// A transaction with its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionSummary {
    /// `SHA-256(borsh(transaction))`.
    pub hash: Hash,
    /// The transaction.
    pub transaction: Transaction,
}

/// A blob of the body, by namespace and size.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlobSummary {
    /// Its namespace (hex).
    pub namespace: Namespace,
    /// Its size in bytes.
    pub size: usize,
}

/// A committed block.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockResponse {
    /// `SHA-256(borsh(header))`.
    pub hash: Hash,
    /// The header.
    pub header: BlockHeader,
    /// The commit certificate.
    pub certificate: Certificate,
    /// Transactions of the `execution` namespace.
    pub transactions: Vec<TransactionSummary>,
    /// Every blob of the body.
    pub blobs: Vec<BlobSummary>,
}

impl From<&CommittedBlock> for BlockResponse {
    fn from(committed: &CommittedBlock) -> Self {
        let block = &committed.block;
        BlockResponse {
            hash: block.hash(),
            header: block.header.clone(),
            certificate: committed.certificate.clone(),
            transactions: block
                .transactions()
                .into_iter()
                .map(|transaction| TransactionSummary {
                    hash: transaction.hash(),
                    transaction,
                })
                .collect(),
            blobs: block
                .body
                .iter()
                .map(|blob| BlobSummary {
                    namespace: blob.namespace,
                    size: blob.data.len(),
                })
                .collect(),
        }
    }
}

async fn block_response(ctx: &NodeContext, height: u64) -> Result<Json<BlockResponse>, ApiError> {
    let gatherer = ctx.network.as_ref().map(NetworkHandle::share_gatherer);
    match archive::committed_block(&ctx.consensus, &ctx.da, gatherer.as_ref(), height).await? {
        Some(block) => Ok(Json(BlockResponse::from(block.as_ref()))),
        None => {
            let latest = ctx.consensus.status().await?.committed_height;
            let message = if latest == 0 {
                "no block has been committed yet".to_string()
            } else {
                format!("no block at height {height}; the latest height is {latest}")
            };
            Err(ApiError::not_found("block_not_found", message))
        }
    }
}

/// The latest committed block.
#[utoipa::path(get, path = "/v1/blocks/latest", tag = "chain",
    responses((status = 200, body = BlockResponse), (status = 404, body = ErrorBody)))]
pub async fn latest_block(State(ctx): State<NodeContext>) -> Result<Json<BlockResponse>, ApiError> {
    let height = ctx.consensus.status().await?.committed_height;
    block_response(&ctx, height).await
}

/// The committed block at a height.
#[utoipa::path(get, path = "/v1/blocks/{height}", tag = "chain",
    params(("height" = u64, Path, description = "Block height, from 1")),
    responses((status = 200, body = BlockResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 503, description = "Pruned here and too few peers' rows to rebuild it", body = ErrorBody)))]
pub async fn block_at(
    State(ctx): State<NodeContext>,
    Path(height): Path<u64>,
) -> Result<Json<BlockResponse>, ApiError> {
    block_response(&ctx, height).await
}

/// A signed transaction to submit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTransactionRequest {
    /// The borsh encoding of the signed transaction, hex (see docs/wire-format.md).
    pub transaction: String,
}

/// An accepted transaction.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitTransactionResponse {
    /// Its hash; poll `/v1/transactions/{hash}` for inclusion.
    pub hash: Hash,
}

/// Submit a signed transaction to the mempool.
#[utoipa::path(post, path = "/v1/transactions", tag = "transactions",
    request_body = SubmitTransactionRequest,
    responses((status = 202, body = SubmitTransactionResponse),
              (status = 400, description = "Malformed JSON or transaction", body = ErrorBody),
              (status = 409, description = "Already pending", body = ErrorBody),
              (status = 413, description = "Too large", body = ErrorBody),
              (status = 422, description = "Rejected by the mempool (signature, chain id, nonce, balance)", body = ErrorBody),
              (status = 503, description = "Mempool full or node busy", body = ErrorBody)))]
pub async fn submit_transaction(
    State(ctx): State<NodeContext>,
    Json(request): Json<SubmitTransactionRequest>,
) -> Result<(StatusCode, Json<SubmitTransactionResponse>), ApiError> {
    let transaction = decode_transaction(&request.transaction, &ctx)?;
    let gossip = ctx.tx_gossip.as_ref().map(|_| transaction.clone());
    let result = ctx.execution.submit_transaction(transaction).await;
    if let Ok(hash) = &result {
        accepted(&ctx, *hash, gossip);
    } else {
        ctx.metrics.transactions_rejected.inc();
    }
    let hash = result?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitTransactionResponse { hash }),
    ))
}

/// Most transactions in one `POST /v1/transactions/batch`.
pub const MAX_SUBMIT_BATCH: usize = 1024;

/// Signed transactions to submit together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTransactionsRequest {
    /// Borsh encodings of signed transactions, hex (see docs/wire-format.md); 1 to 1,024.
    pub transactions: Vec<String>,
}

/// What became of each submitted transaction, in the order they were sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitTransactionsResponse {
    /// One per transaction.
    pub results: Vec<SubmitResult>,
}

/// One transaction's fate: `{"hash"}` when accepted, `{"error_code", "message"}` (the codes
/// of `POST /v1/transactions`) when refused.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubmitResult {
    /// Accepted into the mempool.
    Accepted(SubmitTransactionResponse),
    /// Refused, and why.
    Rejected(ErrorBody),
}

/// Submit up to 1,024 signed transactions at once. Their signatures are verified as one batch,
/// so this costs the node less than as many single submissions; each transaction is accepted
/// or refused on its own.
#[utoipa::path(post, path = "/v1/transactions/batch", tag = "transactions",
    request_body = SubmitTransactionsRequest,
    responses((status = 200, description = "A verdict per transaction", body = SubmitTransactionsResponse),
              (status = 400, description = "Malformed JSON or an empty list", body = ErrorBody),
              (status = 413, description = "More than 1,024 transactions, or the body is too large", body = ErrorBody),
              (status = 503, description = "Node busy: nothing was submitted", body = ErrorBody)))]
pub async fn submit_transactions(
    State(ctx): State<NodeContext>,
    Json(request): Json<SubmitTransactionsRequest>,
) -> Result<Json<SubmitTransactionsResponse>, ApiError> {
    let count = request.transactions.len();
    if count == 0 {
        return Err(ApiError::bad_request(
            "empty_batch",
            "`transactions` is empty; send 1 to 1024",
        ));
    }
    if count > MAX_SUBMIT_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{count} transactions; send at most {MAX_SUBMIT_BATCH} per request"),
        ));
    }
    let mut transactions = Vec::with_capacity(count);
    let decoded: Vec<Result<(), ApiError>> = request
        .transactions
        .iter()
        .map(|hex| decode_transaction(hex, &ctx).map(|t| transactions.push(t)))
        .collect();
    let verdicts = if transactions.is_empty() {
        Vec::new()
    } else {
        let gossip = ctx.tx_gossip.as_ref().map(|_| transactions.clone());
        let submitted = transactions.len() as u64;
        let verdicts = ctx
            .execution
            .submit_transactions(transactions)
            .await
            .inspect_err(|_| {
                ctx.metrics.transactions_rejected.inc_by(submitted);
            })?;
        let mut gossip = gossip.into_iter().flatten();
        for verdict in &verdicts {
            let transaction = gossip.next();
            match verdict {
                Ok(hash) => accepted(&ctx, *hash, transaction),
                Err(_) => {
                    ctx.metrics.transactions_rejected.inc();
                }
            }
        }
        verdicts
    };
    let mut verdicts = verdicts.into_iter();
    let results = decoded
        .into_iter()
        .map(|decoded| {
            let verdict = decoded.and_then(|_| match verdicts.next() {
                Some(verdict) => verdict.map_err(ApiError::from),
                None => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the mempool gave fewer verdicts than it was asked for",
                )),
            });
            match verdict {
                Ok(hash) => SubmitResult::Accepted(SubmitTransactionResponse { hash }),
                Err(error) => SubmitResult::Rejected(error.body()),
            }
        })
        .collect();
    Ok(Json(SubmitTransactionsResponse { results }))
}

/// A submitted transaction from its hex, within the node's size limit.
fn decode_transaction(hex: &str, ctx: &NodeContext) -> Result<Transaction, ApiError> {
    let bytes = hex::decode(hex.trim().trim_start_matches("0x")).map_err(|e| {
        ApiError::bad_request(
            "invalid_transaction",
            format!("transaction is not hex: {e}"),
        )
    })?;
    let limit = ctx.config.execution.max_transaction_bytes;
    Transaction::decode(&bytes, limit).map_err(|e| match e {
        codec::DecodeError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "tx_too_large", e.to_string())
        }
        codec::DecodeError::Malformed(_) => ApiError::bad_request(
            "invalid_transaction",
            format!("not a borsh-encoded signed transaction: {e}"),
        ),
    })
}

/// Counts an accepted transaction and queues it for gossip (if this node gossips).
fn accepted(ctx: &NodeContext, hash: Hash, transaction: Option<Transaction>) {
    ctx.metrics.transactions_accepted.inc();
    if let (Some(queue), Some(transaction)) = (&ctx.tx_gossip, transaction) {
        // This node still includes it when it proposes; never hold the reply up.
        if queue.try_send(transaction).is_err() {
            tracing::debug!(%hash, "gossip queue full; not relaying this transaction");
        }
    }
}

/// Where a transaction is.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionResponse {
    /// Its hash.
    pub hash: Hash,
    /// `pending` (in the mempool) or `included`.
    pub status: String,
    /// The height that included it.
    pub height: Option<u64>,
    /// The transaction.
    pub transaction: Transaction,
    /// Its receipt, once included.
    pub receipt: Option<Receipt>,
}

fn parse_hash(text: &str) -> Result<Hash, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request("invalid_hash", format!("bad transaction hash: {e}")))
}

pub(super) fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse().map_err(|e| {
        ApiError::bad_request(
            "invalid_address",
            format!("bad address (want 64 hex characters): {e}"),
        )
    })
}

/// A transaction by hash: pending or included with its receipt.
#[utoipa::path(get, path = "/v1/transactions/{hash}", tag = "transactions",
    params(("hash" = String, Path, description = "Transaction hash, 64 hex characters")),
    responses((status = 200, body = TransactionResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn transaction(
    State(ctx): State<NodeContext>,
    Path(hash): Path<String>,
) -> Result<Json<TransactionResponse>, ApiError> {
    use lamina_primitives::interfaces::execution::TxLookup;
    let hash = parse_hash(&hash)?;
    match ctx.execution.transaction(hash).await? {
        Some(TxLookup::Pending { transaction }) => Ok(Json(TransactionResponse {
            hash,
            status: "pending".into(),
            height: None,
            transaction,
            receipt: None,
        })),
        Some(TxLookup::Included {
            transaction,
            receipt,
        }) => Ok(Json(TransactionResponse {
            hash,
            status: "included".into(),
            height: Some(receipt.height),
            transaction,
            receipt: Some(receipt),
        })),
        None => Err(ApiError::not_found(
            "transaction_not_found",
            match ctx.config.execution.transaction_history {
                0 => format!("transaction {hash} is neither pending nor included"),
                kept => format!(
                    "transaction {hash} is neither pending nor among the newest {kept} \
                     included transactions this node keeps"
                ),
            },
        )),
    }
}

/// Which height to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HeightQuery {
    /// Executed height to read (latest when absent).
    pub height: Option<u64>,
}

/// An account's balance and nonce.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    /// The account.
    pub address: Address,
    /// The executed height read.
    pub height: u64,
    /// Balance.
    pub balance: u64,
    /// Next nonce.
    pub nonce: u64,
}

/// An account at the latest (or a given) executed height; absent accounts read as zero.
#[utoipa::path(get, path = "/v1/accounts/{address}", tag = "state",
    params(("address" = String, Path, description = "Account address, 64 hex characters"), HeightQuery),
    responses((status = 200, body = AccountResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn account(
    State(ctx): State<NodeContext>,
    Path(address): Path<String>,
    Query(query): Query<HeightQuery>,
) -> Result<Json<AccountResponse>, ApiError> {
    let address = parse_address(&address)?;
    let at = ctx.execution.account(address, query.height).await?;
    Ok(Json(AccountResponse {
        address,
        height: at.height,
        balance: at.account.balance,
        nonce: at.account.nonce,
    }))
}

/// An account with its Merkle proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountProofResponse {
    /// The account.
    pub address: Address,
    /// Height whose state root the proof is against.
    pub height: u64,
    /// That state root.
    pub state_root: Hash,
    /// `SHA-256(borsh(StateKey::Account(address)))`.
    pub key_hash: Hash,
    /// The account, or null when it does not exist (the proof then proves absence).
    pub account: Option<Account>,
    /// `borsh(account)` as hex: the leaf's value bytes (null when absent).
    pub value: Option<String>,
    /// The sparse Merkle proof.
    pub proof: StateProof,
}

/// An account (present or absent) with a Merkle proof against a height's state root.
#[utoipa::path(get, path = "/v1/accounts/{address}/proof", tag = "state",
    params(("address" = String, Path, description = "Account address, 64 hex characters"), HeightQuery),
    responses((status = 200, body = AccountProofResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn account_proof(
    State(ctx): State<NodeContext>,
    Path(address): Path<String>,
    Query(query): Query<HeightQuery>,
) -> Result<Json<AccountProofResponse>, ApiError> {
    let address = parse_address(&address)?;
    let proof = ctx.execution.account_proof(address, query.height).await?;
    Ok(Json(AccountProofResponse {
        address,
        height: proof.height,
        state_root: proof.state_root,
        key_hash: proof.key_hash,
        account: proof.account,
        value: proof
            .account
            .map(|account| hex::encode(codec::encode(&account))),
        proof: proof.proof,
    }))
}

/// A blob to make available.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBlobRequest {
    /// Its namespace, 16 hex characters; `6c616d2d65786563` (`lam-exec`) and
    /// `6c616d2d73657474` (`lam-sett`) are the chain's own and refused.
    pub namespace: Namespace,
    /// The data, hex.
    pub data: String,
}

/// A blob accepted into the pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitBlobResponse {
    /// `SHA-256("lamina/blob/v1" ‖ namespace ‖ data)`: find the blob by it in
    /// `/v1/da/blobs/{height}/{namespace}` once a block carries it.
    pub commitment: Hash,
    /// The namespace.
    pub namespace: Namespace,
    /// Data size in bytes.
    pub size: u64,
}

/// Submit a blob of outside data (e.g. a rollup's batch) for the next blocks this node
/// proposes.
#[utoipa::path(post, path = "/v1/da/blobs", tag = "data availability",
    request_body = SubmitBlobRequest,
    responses((status = 202, body = SubmitBlobResponse),
              (status = 400, description = "Malformed JSON or data not hex", body = ErrorBody),
              (status = 413, description = "Blob larger than `max_blob_bytes`", body = ErrorBody),
              (status = 422, description = "Reserved namespace", body = ErrorBody),
              (status = 503, description = "Blob pool full", body = ErrorBody)))]
pub async fn submit_blob(
    State(ctx): State<NodeContext>,
    Json(request): Json<SubmitBlobRequest>,
) -> Result<(StatusCode, Json<SubmitBlobResponse>), ApiError> {
    let data = hex::decode(request.data.trim().trim_start_matches("0x"))
        .map_err(|e| ApiError::bad_request("invalid_blob", format!("data is not hex: {e}")))?;
    let size = data.len() as u64;
    let namespace = request.namespace;
    let blob = Blob { namespace, data };
    let gossip = ctx.network.as_ref().map(|_| codec::encode(&blob));
    let commitment = ctx.da.submit_blob(blob).await?;
    if let (Some(network), Some(encoded)) = (ctx.network.clone(), gossip) {
        // Whichever validator proposes next includes it; this node still does when it
        // proposes, so a failed publish loses nothing and never holds the reply up.
        tokio::spawn(async move {
            if let Err(error) = network.publish(Topic::Blobs, encoded).await {
                tracing::debug!(%commitment, %error, "cannot gossip the blob");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitBlobResponse {
            commitment,
            namespace,
            size,
        }),
    ))
}

/// A DA share with its inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareResponse {
    /// Block height.
    pub height: u64,
    /// Share index (`replicated`: its number; `reed-solomon`: `row × width + col`).
    pub index: u64,
    /// Row in the (extended) square; 0 in `replicated`.
    pub row: u64,
    /// Column; the index in `replicated`.
    pub col: u64,
    /// The share's bytes, hex.
    pub share: String,
    /// The header's `data_root`.
    pub data_root: Hash,
    /// `replicated`: an RFC 9162 inclusion proof among the body's shares. `reed-solomon`:
    /// `{axis, line_proof, root_proof}`, the share within its row, then the row's root
    /// within `data_root`.
    pub proof: DataProof,
}

impl From<ShareWithProof> for ShareResponse {
    fn from(share: ShareWithProof) -> Self {
        ShareResponse {
            height: share.height,
            index: share.index,
            row: share.row,
            col: share.col,
            share: hex::encode(&share.share),
            data_root: share.data_root,
            proof: share.proof,
        }
    }
}

/// One share of a block's data with its proof against the header's `data_root`, by index.
#[utoipa::path(get, path = "/v1/da/shares/{height}/{index}", tag = "data availability",
    params(("height" = u64, Path, description = "Block height"), ("index" = u64, Path, description = "Share index, from 0 (reed-solomon: row × width + col)")),
    responses((status = 200, body = ShareResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 503, description = "Pruned here and too few peers' rows to rebuild it", body = ErrorBody)))]
pub async fn da_share(
    State(ctx): State<NodeContext>,
    Path((height, index)): Path<(u64, u64)>,
) -> Result<Json<ShareResponse>, ApiError> {
    let position = SharePosition::Index(index);
    let share = restoring(&ctx, height, || ctx.da.share(height, position)).await?;
    Ok(Json(share.into()))
}

/// One share of a block's extended square, by row and column, with its proof against the
/// header's `data_root`: what a light client samples.
#[utoipa::path(get, path = "/v1/da/shares/{height}/{row}/{col}", tag = "data availability",
    params(("height" = u64, Path, description = "Block height"),
           ("row" = u64, Path, description = "Row, from 0 (replicated: always 0)"),
           ("col" = u64, Path, description = "Column, from 0")),
    responses((status = 200, body = ShareResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 503, description = "Pruned here and too few peers' rows to rebuild it", body = ErrorBody)))]
pub async fn da_share_cell(
    State(ctx): State<NodeContext>,
    Path((height, row, col)): Path<(u64, u64, u64)>,
) -> Result<Json<ShareResponse>, ApiError> {
    let position = SharePosition::Cell { row, col };
    let share = restoring(&ctx, height, || ctx.da.share(height, position)).await?;
    Ok(Json(share.into()))
}

/// The blobs of one namespace at one height.
#[derive(Debug, Serialize, ToSchema)]
pub struct NamespaceBlobsResponse {
    /// Block height.
    pub height: u64,
    /// The namespace.
    pub namespace: Namespace,
    /// The header's `data_root`.
    pub data_root: Hash,
    /// The blobs, in body order; empty when the block has none of this namespace.
    pub blobs: Vec<BlobEntry>,
    /// `reed-solomon`: the table of contents' shares and each blob's shares, each with its
    /// proof to `data_root` (it proves an empty answer too); `null` in `replicated`.
    pub proof: Option<NamespaceProof>,
}

/// One blob.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlobEntry {
    /// `SHA-256("lamina/blob/v1" ‖ namespace ‖ data)`, as `POST /v1/da/blobs` answered.
    pub commitment: Hash,
    /// The data, hex.
    pub data: String,
}

/// The blobs of a namespace in a block, with their proof against `data_root` (`reed-solomon`
/// scheme). A height without blobs of that namespace answers `200` with none (and, in
/// `reed-solomon`, a proof that there are none); a height without data answers `404`.
#[utoipa::path(get, path = "/v1/da/blobs/{height}/{namespace}", tag = "data availability",
    params(("height" = u64, Path, description = "Block height"),
           ("namespace" = String, Path, description = "Namespace, 16 hex characters")),
    responses((status = 200, body = NamespaceBlobsResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 503, description = "Pruned here and too few peers' rows to rebuild it", body = ErrorBody)))]
pub async fn da_blobs(
    State(ctx): State<NodeContext>,
    Path((height, namespace)): Path<(u64, String)>,
) -> Result<Json<NamespaceBlobsResponse>, ApiError> {
    let namespace = Namespace(
        lamina_primitives::hash::parse_hex_array(&namespace).map_err(|e| {
            ApiError::bad_request(
                "invalid_namespace",
                format!("namespace must be 16 hex characters: {e}"),
            )
        })?,
    );
    let found = restoring(&ctx, height, || ctx.da.namespace(height, namespace)).await?;
    Ok(Json(NamespaceBlobsResponse {
        height: found.height,
        namespace,
        data_root: found.data_root,
        blobs: found
            .blobs
            .into_iter()
            .map(|data| {
                let blob = Blob { namespace, data };
                BlobEntry {
                    commitment: blob.commitment(),
                    data: hex::encode(&blob.data),
                }
            })
            .collect(),
        proof: found.proof,
    }))
}

/// Runs a DA read of `height`; when the node has pruned that height and the read needs
/// more than its own rows, rebuilds the height from its peers' rows (the DA layer then holds
/// the square in memory for a while) and reads again.
async fn restoring<T, F, R>(ctx: &NodeContext, height: u64, read: R) -> Result<T, ApiError>
where
    R: Fn() -> F,
    F: std::future::Future<Output = Result<T, RequestError<DaError>>>,
{
    match read().await {
        Err(RequestError::Layer(DaError::Pruned { .. })) => {
            let gatherer = ctx.network.as_ref().map(NetworkHandle::share_gatherer);
            let (_, again) =
                archive::restore_then(&ctx.da, gatherer.as_ref(), height, read).await?;
            Ok(again?)
        }
        other => Ok(other?),
    }
}

/// The rows of a `reed-solomon` height's extended square this node keeps: every original
/// row while the height is within `[data_availability] retention_window` of the executed
/// tip, only its assigned rows once pruned.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldRowsResponse {
    /// Block height.
    pub height: u64,
    /// The header's `data_root`.
    pub data_root: Hash,
    /// True once the node keeps only its assigned rows of this height.
    pub pruned: bool,
    /// `k`: the extended square is `2k` wide and each kept row is stored as its first `k`
    /// shares (the rest is their extension).
    pub original_width: u64,
    /// Indices of the rows kept, ascending.
    pub rows: Vec<u64>,
}

/// Which rows of a height's extended square this node stores (`reed-solomon` scheme): how
/// storage partitioning shows from outside.
#[utoipa::path(get, path = "/v1/da/held/{height}", tag = "data availability",
    params(("height" = u64, Path, description = "Block height")),
    responses((status = 200, body = HeldRowsResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn da_held(
    State(ctx): State<NodeContext>,
    Path(height): Path<u64>,
) -> Result<Json<HeldRowsResponse>, ApiError> {
    let held = ctx.da.held_shares(height).await?;
    let pruned_through = ctx.da.status().await?.pruned_through;
    Ok(Json(HeldRowsResponse {
        height,
        data_root: held.data_root,
        pruned: height <= pruned_through,
        original_width: held.original_width,
        rows: held.rows.iter().map(|row| row.index).collect(),
    }))
}

/// Every row and column root of a `reed-solomon` block's extended square (`2k` of each), from
/// which a client checks `data_root` and rebuilds the square from any sufficient set of
/// shares (`lamina da rebuild`).
#[utoipa::path(get, path = "/v1/da/roots/{height}", tag = "data availability",
    params(("height" = u64, Path, description = "Block height")),
    responses((status = 200, body = SquareRoots), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn da_roots(
    State(ctx): State<NodeContext>,
    Path(height): Path<u64>,
) -> Result<Json<SquareRoots>, ApiError> {
    Ok(Json(ctx.da.roots(height).await?))
}

/// A bad-encoding proof to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BadEncodingRequest {
    /// The block whose square the proof is about.
    pub height: u64,
    /// The proof (as `lamina da rebuild` prints it).
    pub proof: lamina_da::square::BadEncodingProof,
}

/// A checked bad-encoding proof.
#[derive(Debug, Serialize, ToSchema)]
pub struct BadEncodingResponse {
    /// Always true: an invalid proof is an error.
    pub valid: bool,
    /// The block.
    pub height: u64,
    /// Its committed `data_root`.
    pub data_root: Hash,
    /// `row` or `col`.
    pub axis: lamina_primitives::da::Axis,
    /// The line shown not to be a codeword.
    pub index: u64,
}

/// Check a proof that a committed block's square is badly encoded: its shares, each proven
/// against the block's `data_root`, show one row or column is not a codeword of the
/// chain's codec. Any node can check it with nothing but the header.
#[utoipa::path(post, path = "/v1/da/bad-encoding", tag = "data availability",
    request_body = BadEncodingRequest,
    responses((status = 200, body = BadEncodingResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn check_bad_encoding(
    State(ctx): State<NodeContext>,
    Json(request): Json<BadEncodingRequest>,
) -> Result<Json<BadEncodingResponse>, ApiError> {
    let da = &ctx.config.data_availability;
    if da.kind != lamina_da::DaKind::ReedSolomon {
        return Err(DaError::NoSquare {
            scheme: "replicated".to_string(),
        }
        .into());
    }
    // The header alone: a pruned body need not be rebuilt to check a proof about it.
    let Some(committed) = ctx.consensus.header(request.height).await? else {
        return Err(ApiError::not_found(
            "block_not_found",
            format!("no block at height {}", request.height),
        ));
    };
    let data_root = committed.header.data_root;
    lamina_da::square::BadEncodingCheck::verify(&request.proof, &data_root, da.codec).map_err(
        |error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_bad_encoding_proof",
                format!(
                    "the proof does not show bad encoding of block {}: {error}",
                    request.height
                ),
            )
        },
    )?;
    Ok(Json(BadEncodingResponse {
        valid: true,
        height: request.height,
        data_root,
        axis: request.proof.axis,
        index: request.proof.index,
    }))
}

/// A proposal shown to be badly encoded.
#[derive(Debug, Serialize, ToSchema)]
pub struct BadEncodingFound {
    /// The proposal's height.
    pub height: u64,
    /// Its round.
    pub round: u32,
    /// The validator that signed it.
    pub proposer: Address,
    /// The proposed block's hash.
    pub block_hash: Hash,
    /// The `data_root` its header committed to.
    pub data_root: Hash,
    /// `true`: this node rebuilt the proposal from rows and found the bad line; `false`: a
    /// peer's proof, checked here.
    pub found_here: bool,
    /// The proof: check it with `POST /v1/da/bad-encoding` against a committed block's
    /// root, or with any client against `data_root`.
    pub proof: lamina_da::square::BadEncodingProof,
}

/// The proposals this node refused as badly encoded.
#[derive(Debug, Serialize, ToSchema)]
pub struct BadEncodingFoundList {
    /// The most recent ones (up to 64), oldest first; empty when none was seen.
    pub proposals: Vec<BadEncodingFound>,
}

/// The proposals this node refused as badly encoded since it started, each with the
/// proposer's signed header and the proof (found here while rebuilding the proposal from
/// its validators' rows, or gossiped by a peer and checked here).
#[utoipa::path(get, path = "/v1/da/bad-encoding", tag = "data availability",
    responses((status = 200, body = BadEncodingFoundList)))]
pub async fn bad_encoding_found(State(ctx): State<NodeContext>) -> Json<BadEncodingFoundList> {
    let proposals = ctx
        .bad_encoding
        .list()
        .into_iter()
        .map(|kept| {
            let notice = kept.notice;
            BadEncodingFound {
                height: notice.proposal.height,
                round: notice.proposal.round,
                proposer: notice.proposer,
                block_hash: notice.proposal.block_hash,
                data_root: notice.header.data_root,
                found_here: kept.found_here,
                proof: notice.proof.clone(),
            }
        })
        .collect();
    Json(BadEncodingFoundList { proposals })
}

/// Attested power for one state root.
#[derive(Debug, Serialize, ToSchema)]
pub struct RootPower {
    /// The state root.
    pub state_root: Hash,
    /// Voting power attesting it.
    pub power: u64,
}

/// What the settlement ledger knows of a height.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementHeightResponse {
    /// The height.
    pub height: u64,
    /// `settled` or `pending`.
    pub status: String,
    /// The settled state root.
    pub settled_root: Option<Hash>,
    /// Attested power per distinct root.
    pub attestations: Vec<RootPower>,
    /// Total voting power.
    pub total_power: u64,
}

/// Settlement status of a height.
#[utoipa::path(get, path = "/v1/settlement/heights/{height}", tag = "settlement",
    params(("height" = u64, Path, description = "Block height")),
    responses((status = 200, body = SettlementHeightResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn settlement_height(
    State(ctx): State<NodeContext>,
    Path(height): Path<u64>,
) -> Result<Json<SettlementHeightResponse>, ApiError> {
    let found = ctx.settlement.height(height).await?.ok_or_else(|| {
        let message = match ctx.config.settlement.kind {
            lamina_settlement::SettlementKind::Attested => format!(
                "no attestation for height {height}: it is not executed yet, or its block held \
                 no transactions (such heights need no attestation)"
            ),
            lamina_settlement::SettlementKind::Optimistic => {
                format!("height {height} is not covered by a finalized batch yet")
            }
            lamina_settlement::SettlementKind::Depth => format!(
                "height {height} is not settled yet: it must be executed and {} blocks deep",
                ctx.config.settlement.depth
            ),
        };
        ApiError::not_found("height_not_found", message)
    })?;
    Ok(Json(SettlementHeightResponse {
        height: found.height,
        status: if found.settled_root.is_some() {
            "settled"
        } else {
            "pending"
        }
        .into(),
        settled_root: found.settled_root,
        attestations: found
            .attested_power
            .into_iter()
            .map(|(state_root, power)| RootPower { state_root, power })
            .collect(),
        total_power: found.total_power,
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(ctx): State<NodeContext>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    axum::Json(super::openapi().clone())
}
