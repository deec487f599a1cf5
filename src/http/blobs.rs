//! `/api/v1/blobs/{sha256}`: content by its id.

use tide::Response;

use super::serve_content::{self, Presentation};
use super::{ApiError, Req};
use crate::content::FileId;

pub async fn get(req: Req) -> Result<Response, ApiError> {
    let id: FileId = req.param("id").unwrap_or_default().parse()?;
    let manifest = req.state().node.find_blob(id).await?;
    let how = Presentation {
        content_type: "application/octet-stream".into(),
        disposition: None,
        modified_ms: None,
    };
    serve_content::respond(&req, &manifest, how).await
}
