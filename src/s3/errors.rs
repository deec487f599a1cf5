//! Node errors as S3 errors: the one place they become S3 codes and statuses.

use s3s::{S3Error, S3ErrorCode};

use crate::cluster::ClusterError;
use crate::node::NodeError;
use crate::storage::StorageError;

pub(crate) fn s3_error(e: NodeError) -> S3Error {
    let (code, message) = match &e {
        // S3 has no code for a full disk; MinIO's name and 507, as clients of it know them.
        NodeError::Storage(StorageError::NoSpace(_))
        | NodeError::Cluster(ClusterError::Storage(StorageError::NoSpace(_))) => {
            let mut err =
                S3Error::with_message(S3ErrorCode::Custom("XMinioStorageFull".into()), e.to_string());
            err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            return err;
        }
        NodeError::Storage(StorageError::Recovering(_) | StorageError::Closed | StorageError::WriterGone)
        | NodeError::Cluster(ClusterError::Storage(
            StorageError::Recovering(_) | StorageError::Closed | StorageError::WriterGone,
        )) => (S3ErrorCode::ServiceUnavailable, e.to_string()),
        NodeError::NotFound => (S3ErrorCode::NoSuchKey, "The specified key does not exist.".to_owned()),
        NodeError::BadName(e) => (S3ErrorCode::KeyTooLongError, format!("invalid key: {e}")),
        NodeError::TooLarge { .. } => (S3ErrorCode::EntityTooLarge, e.to_string()),
        NodeError::Body(_) => (S3ErrorCode::IncompleteBody, e.to_string()),
        NodeError::Invalid(m) => (S3ErrorCode::InvalidArgument, m.clone()),
        NodeError::Busy(m) => (S3ErrorCode::SlowDown, m.clone()),
        NodeError::Precondition(m) => (S3ErrorCode::PreconditionFailed, m.clone()),
        NodeError::ShuttingDown => (S3ErrorCode::ServiceUnavailable, e.to_string()),
        NodeError::Cluster(
            ClusterError::Unavailable { .. }
            | ClusterError::ChunkUnavailable(_)
            | ClusterError::NotDurable { .. }
            | ClusterError::Replication { .. }
            | ClusterError::Removed,
        ) => (S3ErrorCode::ServiceUnavailable, e.to_string()),
        // Node administration is not an S3 operation; listed so a new kind is placed here.
        NodeError::Cluster(ClusterError::UnknownNode(_) | ClusterError::Lifecycle(_)) => {
            (S3ErrorCode::InvalidRequest, e.to_string())
        }
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

/// Adds what an S3 error document lacks: a `Message` (the code's standard text when none was
/// given), the `Resource` and the `RequestId`.
pub(crate) fn complete_error_xml(body: &[u8], resource: &str, request_id: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else { return body.to_vec() };
    let Some(end) = text.rfind("</Error>") else { return body.to_vec() };
    let mut extra = String::new();
    if !text.contains("<Message>") {
        let code = between(text, "<Code>", "</Code>").unwrap_or("");
        extra.push_str(&format!("<Message>{}</Message>", escape(standard_message(code))));
    }
    if !text.contains("<Resource>") {
        extra.push_str(&format!("<Resource>{}</Resource>", escape(resource)));
    }
    if !text.contains("<RequestId>") {
        extra.push_str(&format!("<RequestId>{}</RequestId>", escape(request_id)));
    }
    format!("{}{extra}{}", &text[..end], &text[end..]).into_bytes()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The message AWS gives with a code, for errors raised without one.
fn standard_message(code: &str) -> &str {
    match code {
        "AccessDenied" => "Access Denied",
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        }
        "InvalidAccessKeyId" => "The AWS Access Key Id you provided does not exist in our records.",
        "InvalidBucketName" => "The specified bucket is not valid.",
        "KeyTooLongError" => "Your key is too long.",
        "NoSuchBucket" => "The specified bucket does not exist.",
        "NoSuchKey" => "The specified key does not exist.",
        "MalformedXML" => {
            "The XML you provided was not well-formed or did not validate against our published schema."
        }
        "InvalidArgument" => "Invalid Argument",
        "MethodNotAllowed" => "The specified method is not allowed against this resource.",
        "NotImplemented" => "A header you provided implies functionality that is not implemented.",
        "RequestTimeTooSkewed" => {
            "The difference between the request time and the current time is too large."
        }
        "InvalidRange" => "The requested range is not satisfiable",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_documents_get_message_resource_and_request_id() {
        let body =
            br#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code></Error>"#;
        let done = String::from_utf8(super::complete_error_xml(body, "/b/k<1>", "REQ1")).unwrap();
        assert!(done.contains("<Message>The request signature"), "{done}");
        assert!(
            done.contains("<Resource>/b/k&lt;1&gt;</Resource><RequestId>REQ1</RequestId></Error>"),
            "{done}"
        );
        let given = br#"<Error><Code>NoSuchKey</Code><Message>m</Message><RequestId>X</RequestId></Error>"#;
        let done = String::from_utf8(super::complete_error_xml(given, "/b/k", "Y")).unwrap();
        assert_eq!(
            done,
            "<Error><Code>NoSuchKey</Code><Message>m</Message><RequestId>X</RequestId><Resource>/b/k</Resource></Error>"
        );
    }
}
