//! Cluster metadata of the S3 endpoint: access keys and buckets.
//!
//! Each is a small JSON file under the reserved `.diststore/` prefix, so it is what every
//! file is: replicated to every node with the names, ordered by the same stamps, sealed at rest
//! under the data key (a secret key is never on disk in the clear), and there after a restart.
//! The native API and the UI neither list nor touch that prefix. Reads are cached (found or
//! not) until the next change to that prefix here or from a peer ([`Events::system_changes`]),
//! so an S3 request costs no database read for its key and bucket.
//!
//! [`Events::system_changes`]: crate::events::Events::system_changes

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Attrs, Node, NodeError, Result};
use crate::clock::unix_ms;
use crate::content::FileName;
use crate::storage::ListQuery;

/// Names under this prefix are the node's own metadata.
pub const SYSTEM_PREFIX: &str = crate::storage::HIDDEN_PREFIX;
const KEYS: &str = ".diststore/keys/";
const BUCKETS: &str = ".diststore/buckets/";
/// The share links' revocation epoch: links carry the epoch they were made in, and only those
/// of the current one open. Revoking bumps it; concurrent revocations on two nodes write the
/// same next value, and the record replicates like any name.
const SHARES: &str = ".diststore/shares";
/// Largest metadata file read back (a bucket's grants stay far below it).
const MAX_RECORD: u64 = 1 << 20;
/// Records kept in the cache at most (keys, buckets and upload records in use).
const MAX_CACHED: usize = 10_000;

/// Whether a name belongs to the node's own metadata.
pub fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKey {
    pub name: String,
    pub access_key: String,
    pub secret_key: String,
    /// The root key sees and may do everything.
    #[serde(default)]
    pub root: bool,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    Read,
    ReadWrite,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// The access key that created it.
    pub owner: String,
    pub created_ms: u64,
    /// Other keys' access.
    #[serde(default)]
    pub grants: Vec<(String, Grant)>,
}

impl Bucket {
    /// What `key` may do here: the owner and the root key everything.
    pub fn access(&self, key: &AccessKey) -> Option<Grant> {
        if key.root || key.access_key == self.owner {
            return Some(Grant::ReadWrite);
        }
        self.grants.iter().find(|(k, _)| *k == key.access_key).map(|(_, g)| *g)
    }
}

/// A record's bytes (`None`: no such record) as read while the change count was this.
type Cached = (u64, Option<Arc<Vec<u8>>>);

/// Decrypted records by name, with the change count they were read under.
#[derive(Default)]
pub struct Registry {
    cache: Mutex<HashMap<String, Cached>>,
}

impl Node {
    /// A metadata record, read through the cache.
    pub async fn system_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        // Taken before reading: a change published meanwhile makes this entry stale at once.
        let generation = self.events.system_changes();
        let cached = {
            let cache = self.registry.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(name).filter(|(g, _)| *g == generation).map(|(_, b)| b.clone())
        };
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes = self.read_system(name).await?.map(Arc::new);
                let mut cache = self.registry.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > MAX_CACHED {
                    cache.clear();
                }
                cache.insert(name.to_owned(), (generation, bytes.clone()));
                bytes
            }
        };
        match bytes {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::BadMetadata(format!("{name}: {e}"))),
            None => Ok(None),
        }
    }

    async fn read_system(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = FileName::new(name)?;
        let found = match self.find(&name).await {
            Ok(found) => found,
            Err(NodeError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if found.manifest.size > MAX_RECORD {
            return Err(NodeError::BadMetadata(format!("{name} is too large")));
        }
        Ok(Some(self.read_all(&found.manifest).await?))
    }

    /// Stores a metadata record (a JSON file under the reserved prefix).
    pub async fn put_system_json<T: Serialize>(self: &Arc<Self>, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("metadata serializes");
        self.put_bytes(FileName::new(name)?, &bytes, Attrs::typed("application/json".into())).await?;
        Ok(())
    }

    /// Names under the reserved prefix (which [`Node::list`] leaves out).
    pub async fn list_system(&self, query: ListQuery) -> Result<crate::storage::ListPage> {
        Ok(self.store.list(query).await?)
    }

    /// Every record under `prefix`, in name order.
    async fn system_records<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let query = ListQuery {
                prefix: prefix.to_owned(),
                after: after.clone(),
                limit: 1000,
                ..Default::default()
            };
            let page = self.store.list(query).await?;
            for entry in &page.entries {
                if let Some(record) = self.system_json(&entry.name).await? {
                    out.push(record);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    pub async fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>> {
        if !valid_key_id(access_key) {
            return Ok(None);
        }
        self.system_json(&format!("{KEYS}{access_key}")).await
    }

    pub async fn access_keys(&self) -> Result<Vec<AccessKey>> {
        self.system_records(KEYS).await
    }

    /// Stores a key, replacing one with the same access key.
    pub async fn put_access_key(self: &Arc<Self>, key: &AccessKey) -> Result<()> {
        if !valid_key_id(&key.access_key) {
            return Err(NodeError::Invalid("an access key is 3 to 128 letters, digits, '-' or '_'".into()));
        }
        self.put_system_json(&format!("{KEYS}{}", key.access_key), key).await
    }

    pub async fn delete_access_key(&self, access_key: &str) -> Result<()> {
        if !valid_key_id(access_key) {
            return Err(NodeError::NotFound);
        }
        self.delete(&FileName::new(format!("{KEYS}{access_key}"))?).await
    }

    /// A new key with generated values where none are given.
    pub fn new_access_key(name: String, access_key: Option<String>, secret_key: Option<String>) -> AccessKey {
        AccessKey {
            name,
            access_key: access_key.unwrap_or_else(|| format!("DS{}", random_text(18).to_uppercase())),
            secret_key: secret_key.unwrap_or_else(|| random_text(40)),
            root: false,
            created_ms: unix_ms(),
        }
    }

    pub async fn bucket(&self, name: &str) -> Result<Option<Bucket>> {
        self.system_json(&format!("{BUCKETS}{name}")).await
    }

    pub async fn buckets(&self) -> Result<Vec<Bucket>> {
        self.system_records(BUCKETS).await
    }

    pub async fn put_bucket(self: &Arc<Self>, bucket: &Bucket) -> Result<()> {
        self.put_system_json(&format!("{BUCKETS}{}", bucket.name), bucket).await
    }

    pub async fn delete_bucket_record(&self, name: &str) -> Result<()> {
        self.delete(&FileName::new(format!("{BUCKETS}{name}"))?).await
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct ShareEpoch {
    epoch: u64,
}

impl Node {
    /// The epoch share links must carry to open.
    pub async fn share_epoch(&self) -> Result<u64> {
        Ok(self.system_json::<ShareEpoch>(SHARES).await?.unwrap_or_default().epoch)
    }

    /// Revokes every share link made so far, on every node. Returns the new epoch.
    pub async fn revoke_shares(self: &Arc<Self>) -> Result<u64> {
        let epoch = self.share_epoch().await? + 1;
        self.put_system_json(SHARES, &ShareEpoch { epoch }).await?;
        Ok(epoch)
    }

    /// HMAC-SHA256 of `parts` under the cluster's share link key.
    pub fn share_mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        crate::crypto::peer_mac(&self.keys.share, parts)
    }
}

/// Access keys name files: keep them to a safe alphabet.
fn valid_key_id(id: &str) -> bool {
    (3..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `len` random characters from [a-z0-9].
pub fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; len];
    getrandom::fill(&mut raw).expect("the OS random source works");
    // 252 = 7 * 36: reject the top values so every character is equally likely.
    let mut out = String::with_capacity(len);
    let mut more = [0u8; 1];
    for mut b in raw {
        while b >= 252 {
            getrandom::fill(&mut more).expect("the OS random source works");
            b = more[0];
        }
        out.push(ALPHABET[usize::from(b % 36)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_key_ids() {
        let key = |ak: &str, root| AccessKey {
            name: "k".into(),
            access_key: ak.into(),
            secret_key: "s".into(),
            root,
            created_ms: 0,
        };
        let b = Bucket {
            name: "b".into(),
            owner: "OWNER".into(),
            created_ms: 0,
            grants: vec![("READER".into(), Grant::Read)],
        };
        assert_eq!(b.access(&key("OWNER", false)), Some(Grant::ReadWrite));
        assert_eq!(b.access(&key("READER", false)), Some(Grant::Read));
        assert_eq!(b.access(&key("OTHER", false)), None);
        assert_eq!(b.access(&key("ROOT", true)), Some(Grant::ReadWrite));
        assert!(valid_key_id("DSABC123"));
        assert!(!valid_key_id("../x") && !valid_key_id("ab"));
        let t = random_text(40);
        assert_eq!(t.len(), 40);
        assert!(t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }
}
