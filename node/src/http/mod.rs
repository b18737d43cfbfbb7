//! The JSON HTTP API (axum). Every route is declared once, with its OpenAPI description, in
//! [`api_router`]; `/v1/openapi.json` serves the description generated from those handlers.

mod error;
mod handlers;
mod settlement;

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorBody};

use crate::node::NodeContext;

#[derive(OpenApi)]
#[openapi(info(
    title = "Lamina node API",
    description = "Blocks, transactions, accounts with Merkle proofs, DA shares and settlement \
                   status of a Lamina node. Errors are `{error_code, message}` JSON."
))]
struct ApiDoc;

/// Every documented route, without state.
pub fn api_router() -> OpenApiRouter<NodeContext> {
    small_body_routes().merge(blob_routes())
}

/// The routes whose requests fit in `[http] max_body_bytes`.
fn small_body_routes() -> OpenApiRouter<NodeContext> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::status))
        .routes(routes!(handlers::latest_block))
        .routes(routes!(handlers::block_at))
        .routes(routes!(handlers::submit_transaction))
        .routes(routes!(handlers::submit_transactions))
        .routes(routes!(handlers::transaction))
        .routes(routes!(handlers::account))
        .routes(routes!(handlers::account_proof))
        .routes(routes!(handlers::da_share))
        .routes(routes!(handlers::da_share_cell))
        .routes(routes!(handlers::da_blobs))
        .routes(routes!(handlers::da_roots))
        .routes(routes!(handlers::da_held))
        .routes(routes!(handlers::settlement_height))
        .routes(routes!(settlement::batches))
        .routes(routes!(settlement::batch))
        .routes(routes!(settlement::ledger_account))
        .routes(routes!(settlement::submit_message))
        .routes(routes!(settlement::withdrawal_proof))
        .routes(routes!(handlers::evidence))
        .routes(routes!(handlers::peers))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::openapi_json))
}

/// `POST /v1/da/blobs` and `POST /v1/da/bad-encoding`, whose bodies are bounded by
/// `[data_availability] max_blob_bytes` instead (hex doubles the data, plus room for the
/// JSON around it; a bad-encoding proof holds at most one line of shares and its proofs).
fn blob_routes() -> OpenApiRouter<NodeContext> {
    OpenApiRouter::new()
        .routes(routes!(handlers::submit_blob))
        .routes(routes!(
            handlers::check_bad_encoding,
            handlers::bad_encoding_found
        ))
}

/// Body limit of `POST /v1/da/blobs` for blobs of at most `max_blob_bytes`.
fn blob_body_limit(max_blob_bytes: u64) -> usize {
    usize::try_from(max_blob_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .saturating_add(4096)
}

/// The OpenAPI description of [`api_router`].
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| api_router().into_openapi())
}

/// The full router with limits, timeouts and JSON fallbacks.
pub fn router(context: NodeContext) -> Router {
    let max_body = context.config.http.max_body_bytes;
    let timeout = Duration::from_millis(context.config.http.request_timeout_ms);
    let blob_body = blob_body_limit(context.config.data_availability.max_blob_bytes);
    let (small, _) = small_body_routes().split_for_parts();
    let (blobs, _) = blob_routes().split_for_parts();
    small
        .layer(DefaultBodyLimit::max(max_body))
        .merge(blobs.layer(DefaultBodyLimit::max(blob_body)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, time_limit))
        .with_state(context)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route; see /v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}
