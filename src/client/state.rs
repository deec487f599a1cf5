//! Resumable uploads the client started, remembered across runs:
//! `$XDG_STATE_HOME/diststore/uploads.json` (or `~/.local/state/diststore/uploads.json`),
//! a map from (node, name, content id) to the upload's URL. Keyed by the content's SHA-256, so
//! a file changed since never resumes a stale upload.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub struct UploadState {
    path: Option<PathBuf>,
    /// Threads of one run update the file one at a time.
    lock: Mutex<()>,
}

fn key(node: &str, name: &str, id: &str) -> String {
    format!("{node} {id} {name}")
}

impl UploadState {
    pub fn open() -> UploadState {
        let dir = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
        UploadState { path: dir.map(|d| d.join("diststore").join("uploads.json")), lock: Mutex::new(()) }
    }

    fn load(&self) -> BTreeMap<String, String> {
        self.path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Writes a new file and moves it over the old one, so a kill leaves one or the other.
    fn save(&self, map: &BTreeMap<String, String>) {
        let Some(path) = &self.path else { return };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec_pretty(map).unwrap_or_default())?;
            std::fs::rename(&tmp, path)
        };
        // Without the state file an interrupted upload starts over next time; not an error.
        if let Err(e) = write() {
            eprintln!("diststore: warning: cannot save upload state in {}: {e}", path.display());
        }
    }

    pub fn get(&self, node: &str, name: &str, id: &str) -> Option<String> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.load().get(&key(node, name, id)).cloned()
    }

    pub fn set(&self, node: &str, name: &str, id: &str, url: Option<&str>) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = self.load();
        match url {
            Some(url) => map.insert(key(node, name, id), url.to_owned()),
            None => map.remove(&key(node, name, id)),
        };
        self.save(&map);
    }
}
