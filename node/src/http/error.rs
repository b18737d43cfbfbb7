//! The API's error shape, `{ "error_code": ..., "message": ... }` with the right status, and
//! extractors whose rejections (malformed JSON, wrong types, bad path segments, oversize
//! bodies) come out in that shape instead of axum's plain-text defaults.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_primitives::interfaces::consensus::ConsensusError;
use lamina_primitives::interfaces::da::DaError;
use lamina_primitives::interfaces::execution::{MempoolRejection, QueryError};
use lamina_primitives::interfaces::settlement::SettlementError;
use lamina_primitives::interfaces::{ChannelError, RequestError};
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_address`, `block_not_found`.
    pub error_code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500: a layer's storage failed.
    pub fn storage(err: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage_error",
            err.to_string(),
        )
    }

    /// 404 Not Found.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The JSON body it answers with.
    pub fn body(self) -> ErrorBody {
        ErrorBody {
            error_code: self.code.to_string(),
            message: self.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, axum::Json(self.body())).into_response()
    }
}

impl From<ChannelError> for ApiError {
    fn from(err: ChannelError) -> Self {
        let code = match err {
            ChannelError::Full(_) => "node_busy",
            ChannelError::Closed(_) | ChannelError::NoReply(_) => "node_unavailable",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, err.to_string())
    }
}

impl From<MempoolRejection> for ApiError {
    fn from(err: MempoolRejection) -> Self {
        let status = match err {
            MempoolRejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            MempoolRejection::MempoolFull { .. } | MempoolRejection::StateUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            MempoolRejection::AlreadyPending | MempoolRejection::NonceAlreadyPending { .. } => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, err.code(), format!("transaction rejected: {err}"))
    }
}

impl From<ConsensusError> for ApiError {
    fn from(err: ConsensusError) -> Self {
        ApiError::storage(err)
    }
}

impl From<crate::archive::ArchiveError> for ApiError {
    fn from(err: crate::archive::ArchiveError) -> Self {
        match err {
            crate::archive::ArchiveError::Consensus(err) => err.into(),
            crate::archive::ArchiveError::Da(err) => err.into(),
        }
    }
}

impl From<SettlementError> for ApiError {
    fn from(err: SettlementError) -> Self {
        match err {
            SettlementError::InvalidMessage(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_settlement_message",
                err.to_string(),
            ),
            SettlementError::Unsupported { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "unsupported_in_settlement_mode",
                err.to_string(),
            ),
            SettlementError::PoolFull(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "settlement_pool_full",
                err.to_string(),
            ),
            SettlementError::OutOfOrder { .. } | SettlementError::Storage(_) => {
                ApiError::storage(err)
            }
        }
    }
}

impl From<DaError> for ApiError {
    fn from(err: DaError) -> Self {
        match err {
            DaError::HeightNotFound(_) => ApiError::not_found("height_not_found", err.to_string()),
            DaError::ShareOutOfRange { .. } | DaError::CellOutOfRange { .. } => {
                ApiError::not_found("share_not_found", err.to_string())
            }
            DaError::Withheld { .. } => ApiError::not_found("share_withheld", err.to_string()),
            DaError::NoSquare { .. } => {
                ApiError::new(StatusCode::CONFLICT, "no_square", err.to_string())
            }
            DaError::ReservedNamespace(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reserved_namespace",
                err.to_string(),
            ),
            DaError::BlobTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "blob_too_large",
                err.to_string(),
            ),
            DaError::PoolFull { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "blob_pool_full",
                err.to_string(),
            ),
            // Old data this node no longer keeps whole, and its peers did not give enough
            // of it back in time: it may come back once more peers are reachable.
            DaError::Pruned { .. } | DaError::NotEnoughShares { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "data_unavailable",
                err.to_string(),
            ),
            // A committed square rebuilt from peers' rows that is no codeword: it cannot be
            // served as data, and `lamina da rebuild` gives the proof.
            DaError::BadEncoding { .. } => {
                ApiError::new(StatusCode::CONFLICT, "bad_encoding", err.to_string())
            }
            // Peers' shares are checked by the node, never by an HTTP request: reaching
            // here is the node's own failure.
            DaError::RootMismatch(_)
            | DaError::BodyTooLarge { .. }
            | DaError::InvalidShares(_)
            | DaError::Storage(_) => ApiError::storage(err),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::HeightNotExecuted { .. } => {
                ApiError::not_found("height_not_found", err.to_string())
            }
            QueryError::HeightPruned { .. } => {
                ApiError::new(StatusCode::GONE, "height_pruned", err.to_string())
            }
            QueryError::Storage(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                err.to_string(),
            ),
        }
    }
}

impl<E: Into<ApiError>> From<RequestError<E>> for ApiError {
    fn from(err: RequestError<E>) -> Self {
        match err {
            RequestError::Channel(err) => err.into(),
            RequestError::Layer(err) => err.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "invalid_body",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

/// `axum::Json` with JSON errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
