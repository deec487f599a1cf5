//! Node errors as S3 errors: the one place they become S3 codes and statuses.

use s3s::{S3Error, S3ErrorCode};

use crate::cluster::ClusterError;
use crate::node::NodeError;

pub(crate) fn s3_error(e: NodeError) -> S3Error {
    let (code, message) = match &e {
        NodeError::NotFound => (S3ErrorCode::NoSuchKey, "The specified key does not exist.".to_owned()),
        NodeError::BadName(e) => (S3ErrorCode::KeyTooLongError, format!("invalid key: {e}")),
        NodeError::TooLarge { .. } => (S3ErrorCode::EntityTooLarge, e.to_string()),
        NodeError::Body(_) => (S3ErrorCode::IncompleteBody, e.to_string()),
        NodeError::Invalid(m) => (S3ErrorCode::InvalidArgument, m.clone()),
        NodeError::Cluster(
            ClusterError::Unavailable { .. }
            | ClusterError::ChunkUnavailable(_)
            | ClusterError::NotDurable { .. }
            | ClusterError::Replication { .. },
        ) => (S3ErrorCode::ServiceUnavailable, e.to_string()),
        NodeError::Integrity { .. }
        | NodeError::BadMetadata(_)
        | NodeError::Storage(_)
        | NodeError::Cluster(ClusterError::Storage(_)) => {
            log::error!("s3: {e}");
            (S3ErrorCode::InternalError, e.to_string())
        }
    };
    S3Error::with_message(code, message)
}

/// An error reading a request body, as S3 names it.
pub(crate) fn body_error(e: &dyn std::error::Error) -> S3Error {
    let text = e.to_string();
    if text.contains("Sha256Mismatch") {
        let mut err = S3Error::with_message(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        err.set_status_code(http::StatusCode::BAD_REQUEST);
        err
    } else if text.contains("SignatureMismatch") {
        S3Error::with_message(
            S3ErrorCode::SignatureDoesNotMatch,
            format!("a chunk's signature does not match: {text}"),
        )
    } else {
        S3Error::with_message(S3ErrorCode::IncompleteBody, format!("reading the body failed: {text}"))
    }
}
