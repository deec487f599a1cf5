//! A file's name: the user's key, validated once at the edge.

use std::fmt;

/// An S3 key may have 1024 bytes, and its name is `bucket/key` with a bucket of up to 63.
pub const MAX_NAME_BYTES: usize = 1024 + 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("name contains a control character")]
    ControlCharacter,
}

/// A valid name: 1..=1088 bytes of UTF-8 without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last path segment, for `Content-Disposition`.
    pub fn base(&self) -> &str {
        self.0.rsplit('/').find(|s| !s.is_empty()).unwrap_or(&self.0)
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Content type to store: what the client said, else a guess from the name.
pub fn content_type_for(given: Option<&str>, name: &FileName) -> String {
    match given.map(str::trim) {
        Some(t) if !t.is_empty() && t != "application/octet-stream" && !t.starts_with("multipart/") => {
            t.to_owned()
        }
        _ => mime_guess::from_path(name.as_str()).first_or_octet_stream().essence_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert_eq!(FileName::new(""), Err(NameError::Empty));
        assert_eq!(FileName::new("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(FileName::new("x".repeat(1089)), Err(NameError::TooLong));
        assert!(FileName::new("x".repeat(1088)).is_ok());
        assert_eq!(FileName::new("dir/ü.txt").unwrap().base(), "ü.txt");
    }
}
