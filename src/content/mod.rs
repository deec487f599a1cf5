//! The content model: ids, chunking and manifests. Pure: no I/O, no clocks.

pub mod chunker;
pub mod ids;
pub mod manifest;
pub mod name;

pub use ids::{ChunkId, FileId, NodeId, ParseIdError};
pub use manifest::{ChunkRef, Manifest};
pub use name::{FileName, NameError, content_type_for};
