//! Who may do what: secret keys for SigV4 (`S3Auth`), bucket ownership and grants
//! (`S3Access`), and virtual-host bucket names (`S3Host`).

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::host::{S3Host, VirtualHost};
use s3s::{S3Result, s3_error};

use super::errors::s3_error;
use crate::node::Node;
use crate::node::registry::{AccessKey, Grant};

pub(crate) struct Auth(pub Arc<Node>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.access_key(access_key).await.map_err(s3_error)? {
            Some(key) => Ok(SecretKey::from(key.secret_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// Operations that change a bucket or its objects.
fn writes(op: &str) -> bool {
    ["Put", "Delete", "Create", "Complete", "Abort", "Upload", "Copy", "Restore"]
        .iter()
        .any(|p| op.starts_with(p))
}

pub(crate) struct Access(pub Arc<Node>);

/// The key a request was signed with.
pub(crate) async fn caller(node: &Node, access_key: &str) -> S3Result<AccessKey> {
    node.access_key(access_key).await.map_err(s3_error)?.ok_or_else(|| s3_error!(InvalidAccessKeyId))
}

/// Whether `key` may read (or, with `write`, change) `bucket`. A bucket that does not exist
/// passes: the operation answers `NoSuchBucket`.
pub(crate) async fn check_bucket(node: &Node, key: &AccessKey, bucket: &str, write: bool) -> S3Result<()> {
    let Some(b) = node.bucket(bucket).await.map_err(s3_error)? else { return Ok(()) };
    match b.access(key) {
        Some(Grant::ReadWrite) => Ok(()),
        Some(Grant::Read) if !write => Ok(()),
        _ => Err(s3_error!(AccessDenied, "Access Denied")),
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Anonymous access is not allowed: sign the request."));
        };
        // SigV2 is weaker (no clock check) and no current client needs it.
        let v2_query = cx.uri().query().is_some_and(|q| {
            q.split('&').any(|kv| kv.starts_with("Signature=") || kv.starts_with("AWSAccessKeyId="))
        });
        if cx.headers().get("authorization").is_some_and(|v| v.as_bytes().starts_with(b"AWS ")) || v2_query {
            return Err(s3_error!(AccessDenied, "Signature Version 2 is not supported: use SigV4."));
        }
        // Presigned URLs live at most seven days, as on AWS.
        if let Some(expires) = cx.uri().query().and_then(|q| {
            q.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Expires=")).and_then(|v| v.parse::<u64>().ok())
        }) && expires > 7 * 24 * 3600
        {
            return Err(s3_error!(
                AuthorizationQueryParametersError,
                "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds"
            ));
        }
        let key = caller(&self.0, &credentials.access_key).await?;
        let op = cx.s3_op().name();
        match cx.s3_path().get_bucket_name() {
            Some(bucket) if op != "CreateBucket" => check_bucket(&self.0, &key, bucket, writes(op)).await,
            _ => Ok(()),
        }
    }
}

/// Path-style always; `bucket.DOMAIN` when a domain is set.
pub(crate) struct Host(pub Option<String>);

impl S3Host for Host {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = host.split(':').next().unwrap_or(host);
        if let Some(domain) = &self.0
            && let Some(bucket) = name.strip_suffix(domain.as_str()).and_then(|b| b.strip_suffix('.'))
            && !bucket.is_empty()
        {
            return Ok(VirtualHost::new(domain.as_str()).with_bucket(bucket));
        }
        Ok(VirtualHost::new(host))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn write_operations_are_told_from_reads() {
        for op in [
            "PutObject",
            "DeleteObjects",
            "CreateMultipartUpload",
            "CompleteMultipartUpload",
            "UploadPartCopy",
            "CopyObject",
        ] {
            assert!(super::writes(op), "{op}");
        }
        for op in ["GetObject", "HeadObject", "ListObjectsV2", "ListParts", "HeadBucket"] {
            assert!(!super::writes(op), "{op}");
        }
    }
}
