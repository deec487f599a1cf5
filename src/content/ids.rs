//! Identities as newtypes: a chunk id, a file id and a node id are never interchangeable,
//! even though the first two are both SHA-256 digests.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A hex string was not a 32-byte id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a 64-digit hex SHA-256 id")]
pub struct ParseIdError;

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &hex::encode(&self.0[..6]))
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let mut bytes = [0u8; 32];
                if s.len() != 64 {
                    return Err(ParseIdError);
                }
                hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseIdError)?;
                Ok(Self(bytes))
            }
        }
    };
}

digest_id!(
    /// SHA-256 of a chunk's plaintext.
    ChunkId
);
digest_id!(
    /// SHA-256 of a whole file's plaintext: what `sha256sum` prints for a download.
    FileId
);

impl ChunkId {
    pub fn of(plaintext: &[u8]) -> Self {
        Self(Sha256::digest(plaintext).into())
    }
}

impl FileId {
    /// The id of the empty file.
    pub fn empty() -> Self {
        Self(Sha256::digest([]).into())
    }
}

/// A node's identity in a cluster: random, created once, kept in the data directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 16]);

impl NodeId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &hex::encode(&self.0[..4]))
    }
}

impl FromStr for NodeId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let mut bytes = [0u8; 16];
        if s.len() != 32 {
            return Err(ParseIdError);
        }
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseIdError)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = ChunkId::of(b"abc");
        assert_eq!(id.to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(id.to_string().parse::<ChunkId>(), Ok(id));
        assert_eq!("zz".parse::<FileId>(), Err(ParseIdError));
        assert_eq!("g".repeat(64).parse::<FileId>(), Err(ParseIdError));
        assert_eq!(
            FileId::empty().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
