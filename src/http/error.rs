//! The one place errors become HTTP statuses. Every error body is `{"error": "..."}`.

use tide::{Response, StatusCode};

use crate::cluster::ClusterError;
use crate::content::{NameError, ParseIdError};
use crate::node::NodeError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("range not satisfiable: the content is {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BadRequest,
            ApiError::Unauthorized(_) => StatusCode::Unauthorized,
            ApiError::NotFound(_) => StatusCode::NotFound,
            ApiError::Conflict(_) => StatusCode::Conflict,
            ApiError::TooLarge(_) => StatusCode::PayloadTooLarge,
            ApiError::PreconditionFailed(_) => StatusCode::PreconditionFailed,
            ApiError::TooManyRequests { .. } => StatusCode::TooManyRequests,
            ApiError::Forbidden(_) => StatusCode::Forbidden,
            ApiError::UnsupportedMediaType(_) => StatusCode::UnsupportedMediaType,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RequestedRangeNotSatisfiable,
            ApiError::Unavailable(_) => StatusCode::ServiceUnavailable,
            ApiError::InsufficientStorage(_) => StatusCode::InsufficientStorage,
            ApiError::Internal(_) => StatusCode::InternalServerError,
        }
    }

    pub fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            log::error!("{self}");
        }
        let mut res = json_error(status, &self.to_string());
        match self {
            ApiError::RangeNotSatisfiable { size } => {
                res.insert_header("Content-Range", format!("bytes */{size}"))
            }
            ApiError::TooManyRequests { retry_after_secs, .. } => {
                res.insert_header("Retry-After", retry_after_secs.to_string())
            }
            _ => {}
        }
        if status == StatusCode::Unauthorized {
            res.insert_header("WWW-Authenticate", "Bearer");
        }
        res
    }
}

pub fn json_error(status: StatusCode, message: &str) -> Response {
    let mut res = Response::new(status);
    res.set_body(serde_json::json!({ "error": message }));
    res
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::BadName(e) => ApiError::BadRequest(format!("invalid name: {e}")),
            NodeError::Invalid(e) => ApiError::BadRequest(e),
            NodeError::Busy(e) => ApiError::Unavailable(e),
            NodeError::Precondition(e) => ApiError::PreconditionFailed(e),
            NodeError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            NodeError::NotFound => ApiError::NotFound("no such file".into()),
            NodeError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            NodeError::Body(e) => ApiError::BadRequest(format!("reading the request body failed: {e}")),
            NodeError::Integrity { .. } | NodeError::BadMetadata(_) => ApiError::Internal(e.to_string()),
            NodeError::Storage(e) => e.into(),
            NodeError::Cluster(
                e @ (ClusterError::Unavailable { .. }
                | ClusterError::ChunkUnavailable(_)
                | ClusterError::NotDurable { .. }
                | ClusterError::Replication { .. }),
            ) => ApiError::Unavailable(e.to_string()),
            NodeError::Cluster(ClusterError::Storage(e)) => e.into(),
            NodeError::Cluster(ClusterError::UnknownNode(_)) => ApiError::NotFound(e.to_string()),
            NodeError::Cluster(ClusterError::Lifecycle(_)) => ApiError::Conflict(e.to_string()),
            NodeError::Cluster(ClusterError::Removed) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoSpace(_) => ApiError::InsufficientStorage(e.to_string()),
            StorageError::Recovering(_) | StorageError::Closed | StorageError::WriterGone => {
                ApiError::Unavailable(e.to_string())
            }
            StorageError::StaleCursor(m) => ApiError::BadRequest(m),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::BadRequest(format!("invalid name: {e}"))
    }
}

impl From<ParseIdError> for ApiError {
    fn from(e: ParseIdError) -> Self {
        ApiError::BadRequest(format!("invalid content id: {e}"))
    }
}
